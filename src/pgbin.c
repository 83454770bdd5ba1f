/*
 * pgbin — see pgbin.h.  Asking the binary itself (`postgres --version`) is
 * the only reliable source: Debian keeps several majors side by side and
 * PG_VERSION files belong to data directories, not installations.
 */
#include "pgbin.h"
#include "pgbin_int.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#include <ctype.h>
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

int
pgbin_find(const char *configured, struct pgbin *pg)
{
	memset(pg, 0, sizeof(*pg));
	char *dir = NULL;
	const char *how;

	if (configured && *configured) {
		dir = xstrdup(configured);
		how = "pg_bindir";
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
	char *argv[] = {postgres, "--version", NULL};
	char *out = capture(argv);
	if (!out || pgbin_parse_version(out, &pg->version, &pg->major) != 0) {
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

void
pgbin_free(struct pgbin *pg)
{
	free(pg->bindir);
	free(pg->version);
	pg->bindir = pg->version = NULL;
}
