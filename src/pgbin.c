/*
 * pgbin — see pgbin.h.  The binary itself is the only reliable source of
 * its version: Debian keeps several majors side by side and PG_VERSION
 * files belong to data directories, not installations.  What
 * `postgres --version` prints is a string compiled into the binary, so it
 * is read from there first (pgbin_version_in_binary); running it is the fallback.
 */
#include "pgbin.h"
#include "pgbin_int.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#include <ctype.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The most of a version or bindir answer we read. */
#define PGBIN_CAPTURE_MAX 65536

/* Runs argv (searched in PATH), returns its stdout (malloc'ed) when it exits 0, else NULL. */
static char *
capture(char *const argv[])
{
	struct strbuf out = {0};
	struct proc_opts o = {.argv = argv, .search_path = true, .report_start_error = true};
	struct proc_capture c = {.max = PGBIN_CAPTURE_MAX, .timeout_s = -1, .output = &out};
	if (proc_capture(&o, &c) != PROC_EXITED || !proc_exited_ok(c.status)) {
		sb_free(&out);
		return NULL;
	}
	return sb_take(&out);
}

/*
 * `postgres --version` prints PG_BACKEND_VERSIONSTR, the literal
 * "postgres (PostgreSQL) " PG_VERSION "\n" in the binary (PostgreSQL's
 * c.h and port.h, every release).  Reading it from .rodata costs ~0.2 ms;
 * running the binary costs an exec and the dynamic linking of a dozen
 * libraries (10-15 ms here), on every start.
 */
#define VERSION_TEXT "postgres (PostgreSQL) "
#define VERSION_TEXT_LEN (sizeof(VERSION_TEXT) - 1)
/* The literal is shorter than this; what follows it in the file is not read. */
#define VERSION_TEXT_MAX 128
#define SCAN_CHUNK (1024 * 1024)
/* A postgres binary is ~10 MB; a larger file is not scanned. */
#define SCAN_MAX_BYTES ((off_t)256 * 1024 * 1024)

/*
 * Parses the text at `at` (up to `len` bytes, ending at a newline or NUL)
 * into *version and *major the first time; later ones must agree.  -1 when one
 * does not parse or disagrees.
 */
static int
scan_match(const char *at, size_t len, char **version, int *major)
{
	char text[VERSION_TEXT_MAX + 1];
	if (len > VERSION_TEXT_MAX)
		len = VERSION_TEXT_MAX;
	memcpy(text, at, len);
	text[len] = '\0';
	text[strcspn(text, "\n")] = '\0';
	char *v = NULL;
	int m = 0;
	if (pgbin_parse_version(text, &v, &m) != 0)
		return -1;
	if (*version && (strcmp(*version, v) != 0 || *major != m)) {
		free(v);
		return -1;
	}
	if (*version)
		free(v);
	else {
		*version = v;
		*major = m;
	}
	return 0;
}

/*
 * The bytes of the ELF file's .rodata section, where string literals are:
 * 1.7 of postgres's 8.9 MB, and no code or data that could look like the
 * text.  false when fd is not a 64-bit ELF file of this machine's byte
 * order with such a section inside the file.
 */
static bool
rodata_section(int fd, off_t file_size, off_t *start, off_t *len)
{
	Elf64_Ehdr eh;
	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_ident[EI_DATA] != (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB) ||
	    eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 || eh.e_shnum > 4096 ||
	    eh.e_shstrndx >= eh.e_shnum)
		return false;
	bool found = false;
	Elf64_Shdr *sh = xcalloc(eh.e_shnum, sizeof(*sh));
	char *names = NULL;
	size_t sh_bytes = eh.e_shnum * sizeof(*sh);
	if (pread(fd, sh, sh_bytes, (off_t)eh.e_shoff) != (ssize_t)sh_bytes)
		goto out;
	const Elf64_Shdr *strtab = &sh[eh.e_shstrndx];
	if (strtab->sh_size == 0 || strtab->sh_size > 1024 * 1024)
		goto out;
	names = xmalloc(strtab->sh_size + 1);
	if (pread(fd, names, strtab->sh_size, (off_t)strtab->sh_offset) != (ssize_t)strtab->sh_size)
		goto out;
	names[strtab->sh_size] = '\0';
	for (size_t i = 0; i < eh.e_shnum && !found; i++) {
		if (sh[i].sh_name >= strtab->sh_size || strcmp(names + sh[i].sh_name, ".rodata") != 0 ||
		    sh[i].sh_type != SHT_PROGBITS || sh[i].sh_offset > (uint64_t)file_size ||
		    sh[i].sh_size > (uint64_t)file_size - sh[i].sh_offset)
			continue;
		*start = (off_t)sh[i].sh_offset;
		*len = (off_t)sh[i].sh_size;
		found = true;
	}
out:
	free(names);
	free(sh);
	return found;
}

/*
 * The version as `postgres --version` would say it, read from the .rodata
 * of the ELF file at `path`: 0 when the literal is there and every
 * occurrence of it says the same version, else -1 (nothing logged: the
 * caller runs the binary).
 * Only an ELF file is read (a script runs something else), and started as
 * root, only a regular file owned by root that no one else can write and
 * everyone may read and run: pg_bindir may come from a config, and what is
 * read here is logged and keyed.  Without /proc, nothing is read.
 */
int
pgbin_version_in_binary(const char *path, char **version, int *major)
{
	*version = NULL;
	/* Looked at before it is opened for reading: opening a device can act on it. */
	int path_fd = open(path, O_PATH | O_CLOEXEC);
	if (path_fd < 0)
		return -1;
	struct stat st;
	bool ok = fstat(path_fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= SCAN_MAX_BYTES &&
	          /* As root: installed by root, and what the postgres user would run (it runs the fallback). */
	          (geteuid() != 0 || (st.st_uid == 0 && !(st.st_mode & (S_IWGRP | S_IWOTH)) &&
	                              (st.st_mode & (S_IROTH | S_IXOTH)) == (S_IROTH | S_IXOTH)));
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", path_fd);
	int fd = ok ? open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) : -1;
	close(path_fd);
	if (fd < 0)
		return -1;
	/* Only a compiled program: a wrapper script may hold the text for another reason. */
	off_t pos, end;
	if (!rodata_section(fd, st.st_size, &pos, &end)) {
		close(fd);
		return -1;
	}
	end += pos;
	char *buf = xmalloc(SCAN_CHUNK + VERSION_TEXT_MAX);
	size_t have = 0;
	bool eof = false, bad = false;
	while (!eof && !bad) {
		size_t want = end - pos < SCAN_CHUNK ? (size_t)(end - pos) : SCAN_CHUNK;
		ssize_t n = want ? pread(fd, buf + have, want, pos) : 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			bad = true;
			break;
		}
		pos += n;
		eof = n == 0 || pos == end;
		have += (size_t)n;
		/* Where the next round starts: a match whose text may go on in the next chunk, else a needle's tail. */
		size_t keep_from = have > VERSION_TEXT_LEN ? have - (VERSION_TEXT_LEN - 1) : 0;
		for (size_t from = 0; from < have;) {
			const char *p = memmem(buf + from, have - from, VERSION_TEXT, VERSION_TEXT_LEN);
			if (!p)
				break;
			size_t at = (size_t)(p - buf);
			if (!eof && have - at < VERSION_TEXT_MAX) {
				keep_from = at;
				break;
			}
			if (scan_match(p, have - at, version, major) != 0) {
				bad = true;
				break;
			}
			from = at + VERSION_TEXT_LEN;
		}
		memmove(buf, buf + keep_from, have - keep_from);
		have -= keep_from;
	}
	free(buf);
	close(fd);
	if (bad || !*version) {
		free(*version);
		*version = NULL;
		return -1;
	}
	return 0;
}

static bool
is_executable(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int
pgbin_parse_version(const char *text, char **version, int *major)
{
	/* "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" or "... 16beta2" */
	const char *p = strstr(text, "(PostgreSQL) ");
	if (!p)
		return -1;
	p += strlen("(PostgreSQL) ");
	if (!isdigit((unsigned char)*p))
		return -1;
	const char *e = p;
	while (*e && !isspace((unsigned char)*e))
		e++;
	char *v = xmalloc((size_t)(e - p) + 1);
	memcpy(v, p, (size_t)(e - p));
	v[e - p] = '\0';
	long m = strtol(v, NULL, 10);
	if (m <= 0 || m > 1000) {
		free(v);
		return -1;
	}
	*version = v;
	*major = (int)m;
	return 0;
}

static char *
find_in_path(const char *prog)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char *copy = xstrdup(path);
	char *save = NULL;
	char *found = NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char *cand = path_join(*dir ? dir : ".", prog);
		if (is_executable(cand)) {
			found = xstrdup(*dir ? dir : ".");
			free(cand);
			break;
		}
		free(cand);
	}
	free(copy);
	return found;
}

/*
 * What `pg_config --bindir` would print, without running it (an exec, ~6 ms
 * of every start in the image, whose PATH holds the server's bin directory
 * first): PostgreSQL's pg_config prints the directory it was run from,
 * symbolic links resolved, so when the first pg_config on PATH resolves to a
 * directory with an executable postgres, that directory is the answer.
 * NULL otherwise, and pg_config is run: Debian's /usr/bin/pg_config, for
 * one, is a script that asks an installed version's.
 */
static char *
pg_config_own_dir(void)
{
	char *dir = find_in_path("pg_config");
	if (!dir)
		return NULL;
	char *prog = path_join(dir, "pg_config");
	char *real = realpath(prog, NULL);
	free(prog);
	free(dir);
	char *slash = real ? strrchr(real, '/') : NULL;
	bool found = false;
	if (slash) {
		slash[slash == real] = '\0'; /* "/pg_config" is in "/" */
		char *postgres = path_join(real, "postgres");
		found = is_executable(postgres);
		free(postgres);
	}
	if (!found) {
		free(real);
		return NULL;
	}
	return real;
}

int
pgbin_find(const char *configured, struct pgbin *pg)
{
	memset(pg, 0, sizeof(*pg));
	char *dir = NULL;
	const char *how;

	if (configured && *configured) {
		dir = xstrdup(configured);
		how = "pg_bindir";
	} else if ((dir = pg_config_own_dir()) != NULL) {
		how = "the directory of pg_config";
	} else {
		char *argv[] = {"pg_config", "--bindir", NULL};
		char *out = capture(argv);
		if (out) {
			out[strcspn(out, "\r\n")] = '\0';
			char *cand = path_join(out, "postgres");
			if (*out && is_executable(cand))
				dir = xstrdup(out);
			free(cand);
			free(out);
		}
		how = "pg_config --bindir";
		if (!dir) {
			dir = find_in_path("postgres");
			how = "PATH";
		}
		if (!dir) {
			log_error("could not find the PostgreSQL server binaries: set pg_bindir (PGSTASH_PG_BINDIR), "
			          "install pg_config, or put the directory of \"postgres\" on PATH");
			return -1;
		}
	}
	char *postgres = path_join(dir, "postgres");
	if (!is_executable(postgres)) {
		log_error("no executable \"postgres\" in \"%s\" (from %s)", dir, how);
		free(postgres);
		free(dir);
		return -1;
	}
	char *out = NULL;
	if (pgbin_version_in_binary(postgres, &pg->version, &pg->major) != 0) {
		char *argv[] = {postgres, "--version", NULL};
		out = capture(argv);
	}
	if (!pg->version && (!out || pgbin_parse_version(out, &pg->version, &pg->major) != 0)) {
		log_error("could not read the version of \"%s\" (\"postgres --version\" failed or said something unexpected)",
		          postgres);
		free(out);
		free(postgres);
		free(dir);
		return -1;
	}
	log_debug("using PostgreSQL %s in \"%s\" (from %s)", pg->version, dir, how);
	free(out);
	free(postgres);
	pg->bindir = dir;
	return 0;
}

char *
pgbin_path(const struct pgbin *pg, const char *prog)
{
	return path_join(pg->bindir, prog);
}

char *
pgbin_conf_sample(const struct pgbin *pg)
{
	/* Debian's (and the image's), then a source build's: share/postgresql unless the prefix names it. */
	char *cands[] = {xasprintf("%s/../../../../share/postgresql/%d/postgresql.conf.sample", pg->bindir, pg->major),
	                 xasprintf("%s/../share/postgresql/postgresql.conf.sample", pg->bindir),
	                 xasprintf("%s/../share/postgresql.conf.sample", pg->bindir)};
	char *found = NULL;
	for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
		struct stat st;
		if (!found && stat(cands[i], &st) == 0 && S_ISREG(st.st_mode))
			found = cands[i];
		else
			free(cands[i]);
	}
	if (found)
		return found;
	/* Elsewhere: where initdb looks, as pg_config beside it says (an exec, ~6 ms). */
	char *pg_config = pgbin_path(pg, "pg_config");
	char *argv[] = {pg_config, "--sharedir", NULL};
	char *out = is_executable(pg_config) ? capture(argv) : NULL;
	free(pg_config);
	if (out) {
		out[strcspn(out, "\r\n")] = '\0';
		found = path_join(out, "postgresql.conf.sample");
		free(out);
		struct stat st;
		if (stat(found, &st) != 0 || !S_ISREG(st.st_mode)) {
			free(found);
			found = NULL;
		}
	}
	return found;
}

void
pgbin_free(struct pgbin *pg)
{
	free(pg->bindir);
	free(pg->version);
	pg->bindir = pg->version = NULL;
}
