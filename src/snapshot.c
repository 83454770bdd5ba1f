/*
 * snapshot — see snapshot.h.
 *
 * Both directions stream: bytes pass once through a 1 MiB buffer on their way
 * between the file and libarchive, and the digest is updated on that same
 * buffer, so neither a write nor a restore reads the archive twice.  Memory
 * stays flat whatever the size of PGDATA (zstd runs single-threaded: its
 * multi-threaded mode buffers several jobs of 4 windows each).
 */
#include "snapshot.h"
#include "fingerprint.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Above this many entries an archive is not a PGDATA. */
#define SNAP_MAX_ENTRIES 50000000ULL

const char *
snap_suffix(enum cfg_compression comp)
{
	switch (comp) {
	case CFG_COMP_ZSTD: return ".tar.zst";
	case CFG_COMP_GZIP: return ".tar.gz";
	case CFG_COMP_NONE: return ".tar";
	}
	return ".tar";
}

static void
digest_hex(EVP_MD_CTX *md, char out[65])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (EVP_DigestFinal_ex(md, d, &len) != 1 || len != 32) {
		out[0] = '\0';
		return;
	}
	hex_encode(d, 32, out);
}

static EVP_MD_CTX *
digest_new(void)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		fputs("pgstash: error: could not initialise SHA-256\n", stderr);
		abort();
	}
	return md;
}

int
snap_digest_file(const char *path, char out[65], uint64_t *bytes)
{
	return fp_sha256_file(path, out, bytes);
}

/* A path or link target that stays below its directory: relative, no ".." component. */
static bool
rel_path_ok(const char *p)
{
	if (!p || !*p || p[0] == '/')
		return false;
	const char *s = p;
	while (*s) {
		const char *slash = strchr(s, '/');
		size_t len = slash ? (size_t)(slash - s) : strlen(s);
		if (len == 2 && s[0] == '.' && s[1] == '.')
			return false;
		if (!slash)
			break;
		s = slash + 1;
	}
	return true;
}

/* ------------------------------------------------------------------ write */

struct wctx {
	int fd;
	const char *name;
	EVP_MD_CTX *md;
	uint64_t bytes;
};

static la_ssize_t
w_write(struct archive *a, void *data, const void *buf, size_t n)
{
	struct wctx *w = data;
	const char *p = buf;
	size_t left = n;
	while (left > 0) {
		ssize_t k = write(w->fd, p, left);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			archive_set_error(a, errno, "could not write \"%s\": %s", w->name, strerror(errno));
			return -1;
		}
		p += k;
		left -= (size_t)k;
	}
	EVP_DigestUpdate(w->md, buf, n);
	w->bytes += n;
	return (la_ssize_t)n;
}

struct walk {
	struct archive *a;
	struct archive_entry *e;
	char *buf;
	const char *pgdata;
	struct snap_stats *st;
};

static int
cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Top-level names never written: a restored cluster must not inherit them. */
static bool
skip_top(const char *name)
{
	return strcmp(name, "postmaster.pid") == 0 || strcmp(name, "postmaster.opts") == 0 ||
	       strncmp(name, "pgstash.", 8) == 0;
}

/*
 * True when `dir` holds nothing but pgstash's own top-level files: the
 * bootstrap marks PGDATA as its own before restoring into it, so that an
 * interrupted restore is recognised and wiped on the next start.
 */
static bool
only_markers(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return false;
	bool ok = true;
	struct dirent *de;
	while (ok && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 && strncmp(de->d_name, "pgstash.", 8) != 0)
			ok = false;
	}
	closedir(d);
	return ok;
}

/* Top-level directories written empty: statistics temp files and server logs. */
static bool
empty_top(const char *name)
{
	return strcmp(name, "pg_stat_tmp") == 0 || strcmp(name, "log") == 0 || strcmp(name, "pg_log") == 0;
}

static int
arch_fail(struct walk *w, const char *what, const char *rel)
{
	log_warning("could not write snapshot entry \"%s/%s\" (%s): %s", w->pgdata, rel, what,
	            archive_error_string(w->a) ? archive_error_string(w->a) : "unknown error");
	return -1;
}

static int
write_file_data(struct walk *w, int dfd, const char *name, const char *rel, uint64_t size)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		log_warning("could not open \"%s/%s\": %s", w->pgdata, rel, strerror(errno));
		return -1;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	uint64_t done = 0;
	int rc = -1;
	while (done < size) {
		size_t want = size - done < SNAP_BUF_SIZE ? (size_t)(size - done) : SNAP_BUF_SIZE;
		ssize_t n = read(fd, w->buf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_warning("could not read \"%s/%s\": %s", w->pgdata, rel, strerror(errno));
			goto cleanup;
		}
		if (n == 0) {
			/* The header already promised `size` bytes; a cluster that was shut down does not shrink. */
			log_warning("file \"%s/%s\" shrank while being archived: is the server still running?",
			            w->pgdata, rel);
			goto cleanup;
		}
		if (archive_write_data(w->a, w->buf, (size_t)n) != n) {
			arch_fail(w, "data", rel);
			goto cleanup;
		}
		done += (uint64_t)n;
	}
	rc = 0;
cleanup:
	close(fd);
	return rc;
}

static int walk_dir(struct walk *w, int parent_fd, const char *name, const char *rel, bool top);

static int
write_one(struct walk *w, int dfd, const char *name, const char *rel, bool top)
{
	struct stat sb;
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
		log_warning("could not stat \"%s/%s\": %s", w->pgdata, rel, strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode) && !S_ISLNK(sb.st_mode)) {
		log_debug("leaving special file \"%s/%s\" out of the snapshot", w->pgdata, rel);
		return 0;
	}

	struct archive_entry *e = w->e;
	archive_entry_clear(e);
	archive_entry_set_pathname(e, rel);
	archive_entry_set_mode(e, sb.st_mode);
	archive_entry_set_mtime(e, sb.st_mtim.tv_sec, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_size(e, S_ISREG(sb.st_mode) ? sb.st_size : 0);
	if (S_ISLNK(sb.st_mode)) {
		/*
		 * A cluster holds symlinks only for tablespaces and a separate WAL
		 * directory, both outside PGDATA.  Snapshots hold none at all, which
		 * is what lets the restore go without per-component symlink checks.
		 */
		log_warning("cannot snapshot \"%s\": \"%s\" is a symbolic link (tablespaces and a separate WAL directory "
		            "are not cached)",
		            w->pgdata, rel);
		return -1;
	}
	int r = archive_write_header(w->a, e);
	if (r != ARCHIVE_OK)
		return arch_fail(w, "header", rel);

	if (S_ISREG(sb.st_mode)) {
		w->st->files++;
		w->st->pgdata_bytes += (uint64_t)sb.st_size;
		if (sb.st_size > 0 && write_file_data(w, dfd, name, rel, (uint64_t)sb.st_size) != 0)
			return -1;
	} else if (S_ISDIR(sb.st_mode) && !(top && empty_top(name))) {
		return walk_dir(w, dfd, name, rel, false);
	}
	return 0;
}

/* Writes the entries below directory `name` of parent_fd (rel "" at the top), sorted bytewise. */
static int
walk_dir(struct walk *w, int parent_fd, const char *name, const char *rel, bool top)
{
	int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		log_warning("could not open directory \"%s%s%s\": %s", w->pgdata, *rel ? "/" : "", rel,
		            strerror(errno));
		return -1;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		log_warning("could not open directory \"%s%s%s\": %s", w->pgdata, *rel ? "/" : "", rel,
		            strerror(errno));
		close(fd);
		return -1;
	}
	struct strlist names = {0};
	struct dirent *de;
	int rc = -1;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (top && skip_top(de->d_name))
			continue;
		sl_add(&names, de->d_name);
	}
	if (errno != 0) {
		log_warning("could not read directory \"%s%s%s\": %s", w->pgdata, *rel ? "/" : "", rel,
		            strerror(errno));
		goto cleanup;
	}
	if (names.n > 1)
		qsort(names.v, names.n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < names.n; i++) {
		/* docker stop during a snapshot: give up now, the caller removes the temp file. */
		sig_drain();
		if (sig_received) {
			log_warning("snapshot of \"%s\" interrupted by signal %d", w->pgdata, (int)sig_received);
			goto cleanup;
		}
		char *sub = *rel ? xasprintf("%s/%s", rel, names.v[i]) : xstrdup(names.v[i]);
		int r = write_one(w, dirfd(d), names.v[i], sub, top);
		free(sub);
		if (r != 0)
			goto cleanup;
	}
	rc = 0;
cleanup:
	sl_free(&names);
	closedir(d);
	return rc;
}

int
snap_write(const char *pgdata, int out_fd, const char *out_name, enum cfg_compression comp, int level,
           struct snap_stats *st)
{
	double t0 = log_now();
	struct wctx wc = {.fd = out_fd, .name = out_name, .md = digest_new()};
	struct walk w = {.pgdata = pgdata, .st = st};
	int rc = -1;
	char lvl[16];

	memset(st, 0, sizeof(*st));
	w.a = archive_write_new();
	w.e = archive_entry_new();
	w.buf = xmalloc(SNAP_BUF_SIZE);
	if (!w.a || !w.e) {
		log_warning("could not allocate an archive writer");
		goto cleanup;
	}
	int r = archive_write_set_format_pax_restricted(w.a);
	if (r == ARCHIVE_OK) {
		switch (comp) {
		case CFG_COMP_ZSTD:
			r = archive_write_add_filter_zstd(w.a);
			if (level == 0)
				level = SNAP_ZSTD_DEFAULT_LEVEL;
			break;
		case CFG_COMP_GZIP:
			r = archive_write_add_filter_gzip(w.a);
			break;
		case CFG_COMP_NONE:
			r = archive_write_add_filter_none(w.a);
			break;
		}
	}
	if (r == ARCHIVE_OK && level > 0 && comp != CFG_COMP_NONE) {
		snprintf(lvl, sizeof(lvl), "%d", level);
		r = archive_write_set_filter_option(w.a, NULL, "compression-level", lvl);
	}
	/* Whole 1 MiB writes, and no padding of the last block beyond the tar trailer. */
	if (r == ARCHIVE_OK)
		r = archive_write_set_bytes_per_block(w.a, SNAP_BUF_SIZE);
	if (r == ARCHIVE_OK)
		r = archive_write_set_bytes_in_last_block(w.a, 1);
	if (r == ARCHIVE_OK)
		r = archive_write_open(w.a, &wc, NULL, w_write, NULL);
	if (r != ARCHIVE_OK) {
		log_warning("could not set up the snapshot writer for \"%s\": %s", out_name,
		            archive_error_string(w.a) ? archive_error_string(w.a) : "unknown error");
		goto cleanup;
	}

	if (walk_dir(&w, AT_FDCWD, pgdata, "", true) != 0)
		goto cleanup;
	if (archive_write_close(w.a) != ARCHIVE_OK) {
		log_warning("could not finish snapshot \"%s\": %s", out_name,
		            archive_error_string(w.a) ? archive_error_string(w.a) : "unknown error");
		goto cleanup;
	}
	digest_hex(wc.md, st->sha256);
	st->archive_bytes = wc.bytes;
	st->seconds = log_now() - t0;
	rc = 0;
cleanup:
	if (w.a)
		archive_write_free(w.a);
	archive_entry_free(w.e);
	free(w.buf);
	EVP_MD_CTX_free(wc.md);
	return rc;
}

/* ---------------------------------------------------------------- restore */

struct rctx {
	int fd;
	const char *name;
	EVP_MD_CTX *md;
	unsigned char *buf;
	uint64_t bytes;
};

static la_ssize_t
r_read(struct archive *a, void *data, const void **out)
{
	struct rctx *r = data;
	for (;;) {
		ssize_t n = read(r->fd, r->buf, SNAP_BUF_SIZE);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			archive_set_error(a, errno, "could not read \"%s\": %s", r->name, strerror(errno));
			return -1;
		}
		EVP_DigestUpdate(r->md, r->buf, (size_t)n);
		r->bytes += (uint64_t)n;
		*out = r->buf;
		return n;
	}
}

/* Reads what libarchive left after the tar trailer, so the digest covers the whole file. */
static int
r_drain(struct rctx *r)
{
	for (;;) {
		ssize_t n = read(r->fd, r->buf, SNAP_BUF_SIZE);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_warning("could not read \"%s\": %s", r->name, strerror(errno));
			return -1;
		}
		if (n == 0)
			return 0;
		EVP_DigestUpdate(r->md, r->buf, (size_t)n);
		r->bytes += (uint64_t)n;
	}
}

/* NULL when `e` may be extracted, else why not. */
static const char *
entry_refusal(struct archive_entry *e)
{
	const char *path = archive_entry_pathname(e);
	if (!path || !*path)
		return "entry without a path";
	if (path[0] == '/')
		return "absolute path";
	if (!rel_path_ok(path))
		return "path with a \"..\" component";
	if (archive_entry_hardlink(e))
		return "hard link";
	switch (archive_entry_filetype(e)) {
	case AE_IFREG:
	case AE_IFDIR:
		break;
	case AE_IFLNK:
		/* pgstash never writes one (snap_write refuses them): see the restore flags. */
		return "symbolic link";
	default:
		return "entry type other than file or directory";
	}
	if (archive_entry_size_is_set(e) &&
	    (archive_entry_size(e) < 0 || (uint64_t)archive_entry_size(e) > SNAP_MAX_ENTRY_BYTES))
		return "entry size out of range";
	return NULL;
}

/* True when a disk write failure is the local system's and not the archive's. */
static bool
local_errno(int e)
{
	return e == ENOSPC || e == EDQUOT || e == EROFS || e == EIO || e == ENOMEM || e == EMFILE ||
	       e == ENFILE;
}

static int
check_pg_version(const char *pgdata, int expected_major)
{
	char *path = path_join(pgdata, "PG_VERSION");
	char *text = read_file(path, NULL);
	int rc = -1;
	if (!text) {
		log_warning("snapshot holds no readable PG_VERSION (\"%s\": %s)", path, strerror(errno));
		goto cleanup;
	}
	text[strcspn(text, "\r\n")] = '\0';
	long major;
	const char *why;
	if (parse_long(text, 1, 1000, &major, &why) != 0) {
		log_warning("snapshot PG_VERSION \"%s\" is not a major version: %s", text, why);
		goto cleanup;
	}
	if (expected_major > 0 && major != expected_major) {
		log_warning("snapshot was made by PostgreSQL %ld, this server is %d", major, expected_major);
		goto cleanup;
	}
	rc = 0;
cleanup:
	free(text);
	free(path);
	return rc;
}

int
snap_restore(const char *archive_path, const char *expected_sha256, const char *pgdata, uid_t uid, gid_t gid,
             int expected_pg_major, struct snap_stats *st_out)
{
	double t0 = log_now();
	struct snap_stats st = {0};
	struct rctx rc_in = {.fd = -1, .name = archive_path};
	struct archive *ar = NULL, *aw = NULL;
	struct archive_entry *e;
	int old_cwd = -1, pg_fd = -1;
	bool in_pgdata = false, wipe = false;
	bool as_owner = geteuid() == 0 && uid != (uid_t)-1;
	int rc = SNAP_FAILED;
	uint64_t entries = 0, total = 0;

	struct stat sb;
	if (stat(pgdata, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode)) {
			log_warning("cannot restore into \"%s\": not a directory", pgdata);
			goto cleanup;
		}
		if (!only_markers(pgdata)) {
			log_warning("cannot restore into \"%s\": directory is not empty", pgdata);
			goto cleanup;
		}
	} else if (errno != ENOENT || mkdir_p(pgdata, 0700) != 0) {
		log_warning("cannot restore into \"%s\": %s", pgdata, strerror(errno));
		goto cleanup;
	}
	/* From here on the directory is ours: any failure leaves it empty. */
	wipe = true;

	rc_in.fd = open(archive_path, O_RDONLY | O_CLOEXEC);
	if (rc_in.fd < 0) {
		log_warning("could not open snapshot \"%s\": %s", archive_path, strerror(errno));
		goto cleanup;
	}
	posix_fadvise(rc_in.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	rc_in.md = digest_new();
	rc_in.buf = xmalloc(SNAP_BUF_SIZE);

	ar = archive_read_new();
	aw = archive_write_disk_new();
	if (!ar || !aw) {
		log_warning("could not allocate an archive reader");
		goto cleanup;
	}
	archive_read_support_format_tar(ar);
	archive_read_support_filter_zstd(ar);
	archive_read_support_filter_gzip(ar);
	/*
	 * No SECURE_SYMLINKS: it lstat()s every component of every path, which
	 * made extraction 2-3x slower (bench/README.md), and it guards against
	 * writing through a symlink that an earlier entry created.  Here no entry
	 * may be a symlink (entry_refusal) and PGDATA starts empty but for our
	 * marker file, so no path component can be one.  NODOTDOT and
	 * NOABSOLUTEPATHS stay: they are lexical and cost nothing.
	 * SPARSE: the one WAL segment of a snapshot is 16 MB of zeros after
	 * pg_resetwal; holes save writing them (postgres reads holes as zeros and
	 * fills them as it writes).
	 */
	int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS |
	            ARCHIVE_EXTRACT_SPARSE;
	if (as_owner)
		flags |= ARCHIVE_EXTRACT_OWNER;
	archive_write_disk_set_options(aw, flags);
	archive_write_disk_set_standard_lookup(aw);

	/*
	 * Entries are relative to PGDATA and NOABSOLUTEPATHS refuses an absolute
	 * prefix, so extract from inside it, as bsdtar -C does; the process is
	 * single-threaded and cwd is restored on every path out.
	 */
	old_cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	pg_fd = open(pgdata, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (old_cwd < 0 || pg_fd < 0 || fchdir(pg_fd) != 0) {
		log_warning("could not enter \"%s\": %s", pgdata, strerror(errno));
		goto cleanup;
	}
	in_pgdata = true;

	if (archive_read_open(ar, &rc_in, NULL, r_read, NULL) != ARCHIVE_OK) {
		log_warning("could not read snapshot \"%s\": %s", archive_path, archive_error_string(ar));
		rc = SNAP_BAD_ARCHIVE;
		goto cleanup;
	}
	for (;;) {
		sig_drain();
		if (sig_received) {
			log_warning("restore of \"%s\" interrupted by signal %d", archive_path, (int)sig_received);
			rc = SNAP_FAILED;
			goto cleanup;
		}
		int r = archive_read_next_header(ar, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK) {
			log_warning("snapshot \"%s\" is damaged: %s", archive_path,
			            archive_error_string(ar) ? archive_error_string(ar) : "unknown error");
			rc = r == ARCHIVE_FATAL && archive_errno(ar) > 0 && local_errno(archive_errno(ar))
			             ? SNAP_FAILED
			             : SNAP_BAD_ARCHIVE;
			goto cleanup;
		}
		const char *why = entry_refusal(e);
		if (!why && ++entries > SNAP_MAX_ENTRIES)
			why = "too many entries";
		if (!why && archive_entry_size_is_set(e)) {
			total += (uint64_t)archive_entry_size(e);
			if (total > SNAP_MAX_TOTAL_BYTES)
				why = "archive expands beyond the size limit";
		}
		if (why) {
			log_warning("snapshot \"%s\" refused: entry \"%s\": %s", archive_path,
			            archive_entry_pathname(e) ? archive_entry_pathname(e) : "", why);
			rc = SNAP_BAD_ARCHIVE;
			goto cleanup;
		}
		/* The archive says nothing about owners worth keeping; no set-id bits in a PGDATA. */
		archive_entry_set_uname(e, NULL);
		archive_entry_set_gname(e, NULL);
		archive_entry_set_uid(e, as_owner ? uid : geteuid());
		archive_entry_set_gid(e, as_owner ? gid : getegid());
		archive_entry_set_perm(e, archive_entry_perm(e) & 01777);

		r = archive_write_header(aw, e);
		if (r != ARCHIVE_OK) {
			log_warning("could not extract \"%s\" from \"%s\": %s", archive_entry_pathname(e), archive_path,
			            archive_error_string(aw) ? archive_error_string(aw) : "unknown error");
			rc = local_errno(archive_errno(aw)) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
			goto cleanup;
		}
		if (archive_entry_filetype(e) == AE_IFREG) {
			uint64_t size = archive_entry_size_is_set(e) ? (uint64_t)archive_entry_size(e) : 0;
			const void *buf;
			size_t len;
			la_int64_t off;
			st.files++;
			for (;;) {
				r = archive_read_data_block(ar, &buf, &len, &off);
				if (r == ARCHIVE_EOF)
					break;
				if (r != ARCHIVE_OK) {
					log_warning("snapshot \"%s\" is damaged at \"%s\": %s", archive_path,
					            archive_entry_pathname(e),
					            archive_error_string(ar) ? archive_error_string(ar) : "unknown error");
					rc = SNAP_BAD_ARCHIVE;
					goto cleanup;
				}
				if (off < 0 || (uint64_t)off + len > size) {
					log_warning("snapshot \"%s\" refused: entry \"%s\" holds more data than its size",
					            archive_path, archive_entry_pathname(e));
					rc = SNAP_BAD_ARCHIVE;
					goto cleanup;
				}
				if (archive_write_data_block(aw, buf, len, off) != ARCHIVE_OK) {
					log_warning("could not write \"%s/%s\": %s", pgdata, archive_entry_pathname(e),
					            archive_error_string(aw) ? archive_error_string(aw) : "unknown error");
					rc = local_errno(archive_errno(aw)) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
					goto cleanup;
				}
			}
			st.pgdata_bytes += size;
		}
		r = archive_write_finish_entry(aw);
		if (r != ARCHIVE_OK) {
			log_warning("could not finish \"%s/%s\": %s", pgdata, archive_entry_pathname(e),
			            archive_error_string(aw) ? archive_error_string(aw) : "unknown error");
			rc = local_errno(archive_errno(aw)) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
			goto cleanup;
		}
	}
	/* Applies the deferred directory modes; relative names, so still from inside PGDATA. */
	if (archive_write_close(aw) != ARCHIVE_OK) {
		log_warning("could not finish restoring into \"%s\": %s", pgdata,
		            archive_error_string(aw) ? archive_error_string(aw) : "unknown error");
		rc = local_errno(archive_errno(aw)) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
		goto cleanup;
	}
	if (r_drain(&rc_in) != 0)
		goto cleanup;
	digest_hex(rc_in.md, st.sha256);
	EVP_MD_CTX_free(rc_in.md);
	rc_in.md = NULL;
	if (expected_sha256 && strcasecmp(expected_sha256, st.sha256) != 0) {
		log_warning("snapshot \"%s\" is damaged: SHA-256 is %s, expected %s", archive_path, st.sha256,
		            expected_sha256);
		rc = SNAP_BAD_ARCHIVE;
		goto cleanup;
	}
	if (fchdir(old_cwd) != 0) {
		log_warning("could not return to the working directory: %s", strerror(errno));
		goto cleanup;
	}
	in_pgdata = false;
	if (check_pg_version(pgdata, expected_pg_major) != 0) {
		rc = SNAP_BAD_ARCHIVE;
		goto cleanup;
	}
	if (fchmod(pg_fd, 0700) != 0 || (as_owner && fchown(pg_fd, uid, gid) != 0)) {
		log_warning("could not set the mode or owner of \"%s\": %s", pgdata, strerror(errno));
		goto cleanup;
	}
	rc = 0;
cleanup:
	st.archive_bytes = rc_in.bytes;
	st.seconds = log_now() - t0;
	if (ar)
		archive_read_free(ar);
	if (aw)
		archive_write_free(aw);
	if (in_pgdata && fchdir(old_cwd) != 0)
		log_error("could not return to the working directory: %s", strerror(errno));
	if (rc != 0 && wipe)
		empty_dir(pgdata);
	if (old_cwd >= 0)
		close(old_cwd);
	if (pg_fd >= 0)
		close(pg_fd);
	if (rc_in.fd >= 0)
		close(rc_in.fd);
	EVP_MD_CTX_free(rc_in.md);
	free(rc_in.buf);
	if (st_out)
		*st_out = st;
	return rc;
}
