/*
 * snapshot — see snapshot.h.
 *
 * Both directions stream: bytes pass once through a 1 MiB buffer on their way
 * between the file and libarchive, and the digest is updated on that same
 * buffer, so neither a write nor a restore reads the archive twice.  Memory
 * stays flat whatever the size of PGDATA.  zstd runs at level 1 (level 3
 * made a dj-200 snapshot 0.04 s slower of 0.16, for 5 % fewer bytes: a
 * prefix build waits for it) in 2 worker threads (snap_zstd_choice), at
 * every size: the calling thread reads the files, which is most of the rest
 * (a schema-heavy 92 MB cluster: 0.16-0.19 s in the thread, 0.13 s with the
 * workers; bench/README.md).  The worker mode buffers several jobs of 4
 * windows each: at level 1 about 11 MB more, at level 3 about 45 MB more,
 * past the 32 MB budget, so other levels run in the thread.
 * The bytes of a multi-threaded frame depend on the level, not on the number
 * of workers (an archive written during the steps puts the databases written
 * then first, so its bytes also depend on the timing; nothing compares
 * digests across builds).  The workers
 * inherit the calling thread's signal mask, which blocks the signals sig.c
 * reads from its signalfd.
 *
 * A snapshot can begin while the build's steps still run (snap_early): a
 * thread writes the databases no step works on, and the walk after the
 * steps leaves them out, once it has found every file it recorded unchanged.
 * The thread never reads signals (the walk in it checks its stop flag):
 * sig.c's signalfd is the calling thread's.
 */
#include "snapshot.h"
#include "snapshot_int.h"
#include "digest.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Above this many entries an archive is not a PGDATA. */
#define SNAP_MAX_ENTRIES 50000000ULL

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
	struct digest *md;
	uint64_t bytes;
	bool abandoned; /* the write failed: nothing more reaches the fd */
};

static la_ssize_t
w_write(struct archive *a, void *data, const void *buf, size_t n)
{
	struct wctx *w = data;
	const char *p = buf;
	size_t left = n;
	if (w->abandoned) {
		archive_set_error(a, ECANCELED, "snapshot \"%s\" abandoned", w->name);
		return -1;
	}
	while (left > 0) {
		ssize_t k = write(w->fd, p, left);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			archive_set_error(a, errno, "could not write \"%s\": %s", w->name, strerror(errno));
			w->abandoned = true;
			return -1;
		}
		p += k;
		left -= (size_t)k;
	}
	digest_update(w->md, buf, n);
	w->bytes += n;
	return (la_ssize_t)n;
}

struct walk {
	struct archive *a;
	struct archive_entry *e;
	char *buf;
	const char *pgdata;
	struct snap_stats *st;
	const struct snap_late *late; /* NULL: every path in walk order */
	struct snap_early *early;     /* set in the early thread: what is written is recorded */
	const struct strlist *skip;   /* paths written early: left out of this walk */
};

/* What the early thread saw of an entry it wrote: any change since shows in one of these. */
struct early_seen {
	char *rel;
	dev_t dev;
	ino_t ino;
	off_t size;
	mode_t mode;
	struct timespec mtim, ctim;
};

/*
 * A snapshot begun while the build's steps run (snapshot.h).  The thread
 * owns everything here until it is joined; then the calling thread does.
 */
struct snap_early {
	char *pgdata, *out_name;
	int out_fd;
	off_t start; /* out_fd's position at the start: a write again truncates to it */
	enum cfg_compression comp;
	int level;
	struct timespec since;
	struct strlist oids;    /* the database directories asked for */
	struct strlist written; /* "base/OID" written (the walk after skips them) */
	struct early_seen *seen;
	size_t nseen, capseen;
	bool touched;           /* an entry changed after `since`: the thread gave up */
	atomic_bool stop;
	atomic_bool done;      /* the thread has ended */
	double clock_offset;   /* CLOCK_REALTIME - CLOCK_MONOTONIC at the start: a step of the clock shows */
	pthread_t thread;
	bool thread_started;
	int rc; /* the thread's: 0 done, -1 failed or gave up */
	struct walk w;
	struct wctx wc;
	struct snap_stats st;
};

static bool
ts_equal(struct timespec a, struct timespec b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/*
 * Records an entry the early thread is about to write; -1 (the thread gives
 * up) when it changed since the temporary server started, for then its bytes
 * may be changing while they are read.
 */
static int
early_record(struct snap_early *e, const char *rel, const struct stat *sb)
{
	if (!ts_before(sb->st_ctim, e->since)) {
		e->touched = true;
		return -1;
	}
	if (e->nseen == e->capseen) {
		e->capseen = e->capseen ? 2 * e->capseen : 256;
		e->seen = xrealloc(e->seen, e->capseen * sizeof(*e->seen));
	}
	e->seen[e->nseen++] = (struct early_seen){.rel = xstrdup(rel), .dev = sb->st_dev, .ino = sb->st_ino,
	                                          .size = sb->st_size, .mode = sb->st_mode, .mtim = sb->st_mtim,
	                                          .ctim = sb->st_ctim};
	return 0;
}

static bool
early_stopped(struct snap_early *e)
{
	return atomic_load(&e->stop);
}

/* docker stop during a snapshot: give up now, the caller removes the temp file. */
static bool
walk_interrupted(const struct walk *w)
{
	sig_drain();
	if (!sig_received)
		return false;
	log_warning("snapshot of \"%s\" interrupted by signal %d", w->pgdata, (int)sig_received);
	return true;
}

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

/*
 * Names left out at every level: the relcache init files, which every
 * server start removes (as pg_basebackup leaves them out), so that a
 * database nobody connects to stays untouched by the temporary server's
 * start (snap_early).
 */
static bool
skip_any(const char *name)
{
	return strncmp(name, "pg_internal.init", 16) == 0;
}

/* Top-level directories written empty: statistics temp files and server logs. */
static bool
empty_top(const char *name)
{
	return strcmp(name, "pg_stat_tmp") == 0 || strcmp(name, "log") == 0 || strcmp(name, "pg_log") == 0;
}

/*
 * How the walk reports what stops it: a warning, but in the early thread,
 * whose failure only means the snapshot is written again after the steps
 * (which then says what is wrong, if anything still is), a debug line.
 */
static enum log_level
walk_level(const struct walk *w)
{
	return w->early ? LOG_DEBUG : LOG_WARNING;
}

static int
arch_fail(struct walk *w, const char *what, const char *rel)
{
	log_at(walk_level(w), "could not write snapshot entry \"%s/%s\" (%s): %s", w->pgdata, rel, what,
	            archive_error_string(w->a) ? archive_error_string(w->a) : "unknown error");
	return -1;
}

static int
write_file_data(struct walk *w, int dfd, const char *name, const char *rel, uint64_t size)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		log_at(walk_level(w), "could not open \"%s/%s\": %s", w->pgdata, rel, strerror(errno));
		return -1;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	uint64_t done = 0;
	int rc = -1;
	while (done < size) {
		/* A build that failed stops the early thread within a buffer, not at the end of a 1 GiB table. */
		if (w->early && early_stopped(w->early))
			goto cleanup;
		size_t want = size - done < SNAP_BUF_SIZE ? (size_t)(size - done) : SNAP_BUF_SIZE;
		ssize_t n = read(fd, w->buf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_at(walk_level(w), "could not read \"%s/%s\": %s", w->pgdata, rel, strerror(errno));
			goto cleanup;
		}
		if (n == 0) {
			/* The header already promised `size` bytes; a cluster that was shut down does not shrink. */
			log_at(walk_level(w), "file \"%s/%s\" shrank while being archived: is the server still running?",
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
		log_at(walk_level(w), "could not stat \"%s/%s\": %s", w->pgdata, rel, strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode) && !S_ISLNK(sb.st_mode)) {
		log_debug("leaving special file \"%s/%s\" out of the snapshot", w->pgdata, rel);
		return 0;
	}
	if (w->early && early_record(w->early, rel, &sb) != 0)
		return -1;

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
		log_at(walk_level(w), "cannot snapshot \"%s\": \"%s\" is a symbolic link (tablespaces and a separate WAL directory "
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
		log_at(walk_level(w), "could not open directory \"%s%s%s\": %s", w->pgdata, *rel ? "/" : "", rel,
		            strerror(errno));
		return -1;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		log_at(walk_level(w), "could not open directory \"%s%s%s\": %s", w->pgdata, *rel ? "/" : "", rel,
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
		if ((top && skip_top(de->d_name)) || skip_any(de->d_name))
			continue;
		sl_add(&names, de->d_name);
	}
	if (errno != 0) {
		log_at(walk_level(w), "could not read directory \"%s%s%s\": %s", w->pgdata, *rel ? "/" : "", rel,
		            strerror(errno));
		goto cleanup;
	}
	if (names.n > 1)
		qsort(names.v, names.n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < names.n; i++) {
		if (w->early ? early_stopped(w->early) : walk_interrupted(w))
			goto cleanup;
		char *sub = *rel ? xasprintf("%s/%s", rel, names.v[i]) : xstrdup(names.v[i]);
		if ((w->late && str_in(w->late->paths, sub)) || (w->skip && sl_contains(w->skip, sub))) {
			free(sub);
			continue;
		}
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

/* After the walk: waits for late->ready, then writes the late paths.  0, SNAP_NOT_READY or -1 (logged). */
static int
write_late(struct walk *w)
{
	double t0 = log_now();
	if (w->late->ready(w->late->arg) != 0)
		return SNAP_NOT_READY;
	log_debug("snapshot of \"%s\": waited %.3f s for its last files", w->pgdata, log_now() - t0);
	for (const char *const *p = w->late->paths; *p; p++) {
		const char *slash = strrchr(*p, '/');
		char *dir = slash ? xasprintf("%s/%.*s", w->pgdata, (int)(slash - *p), *p) : NULL;
		int r = -1;
		int dfd = open(dir ? dir : w->pgdata, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			log_warning("could not open directory \"%s\": %s", dir ? dir : w->pgdata, strerror(errno));
		else
			r = write_one(w, dfd, slash ? slash + 1 : *p, *p, !slash);
		if (dfd >= 0)
			close(dfd);
		free(dir);
		if (r != 0)
			return -1;
	}
	return 0;
}

struct snap_zstd
snap_zstd_choice(int configured_level)
{
	struct snap_zstd z = {.level = configured_level ? configured_level : SNAP_ZSTD_DEFAULT_LEVEL, .workers = 0};
	if (z.level <= SNAP_ZSTD_WORKERS_MAX_LEVEL)
		z.workers = SNAP_ZSTD_WORKERS;
	return z;
}

/* Sets up w->a to write `comp` as `z` says into wc; 0, or -1 (logged). */
static int
open_writer(struct walk *w, struct wctx *wc, enum cfg_compression comp, struct snap_zstd z)
{
	char opt[16];
	int r = archive_write_set_format_pax_restricted(w->a);
	if (r == ARCHIVE_OK) {
		switch (comp) {
		case CFG_COMP_ZSTD:
			r = archive_write_add_filter_zstd(w->a);
			if (z.level == 0)
				z.level = SNAP_ZSTD_DEFAULT_LEVEL;
			break;
		case CFG_COMP_GZIP:
			r = archive_write_add_filter_gzip(w->a);
			break;
		case CFG_COMP_NONE:
			r = archive_write_add_filter_none(w->a);
			break;
		}
	}
	if (r == ARCHIVE_OK && z.level > 0 && comp != CFG_COMP_NONE) {
		snprintf(opt, sizeof(opt), "%d", z.level);
		r = archive_write_set_filter_option(w->a, NULL, "compression-level", opt);
	}
	if (r == ARCHIVE_OK && z.workers > 0 && comp == CFG_COMP_ZSTD) {
		snprintf(opt, sizeof(opt), "%d", z.workers);
		r = archive_write_set_filter_option(w->a, "zstd", "threads", opt);
	}
	/* Whole 1 MiB writes, and no padding of the last block beyond the tar trailer. */
	if (r == ARCHIVE_OK)
		r = archive_write_set_bytes_per_block(w->a, SNAP_BUF_SIZE);
	if (r == ARCHIVE_OK)
		r = archive_write_set_bytes_in_last_block(w->a, 1);
	if (r == ARCHIVE_OK)
		r = archive_write_open(w->a, wc, NULL, w_write, NULL);
	if (r != ARCHIVE_OK) {
		log_warning("could not set up the snapshot writer for \"%s\": %s", wc->name,
		            archive_error_string(w->a) ? archive_error_string(w->a) : "unknown error");
		return -1;
	}
	return 0;
}

/*
 * Ends a writer whose walk did not finish: libarchive's free skips the close
 * once a header write failed (its fatal state), and the close is what frees
 * its 1 MiB block buffer, so it is closed here with nothing more written.
 */
static void
writer_discard(struct walk *w, struct wctx *wc)
{
	if (!w->a)
		return;
	wc->abandoned = true;
	archive_write_close(w->a);
	archive_write_free(w->a);
	w->a = NULL;
}

/*
 * The part of a write after the writer is open: the walk (leaving out
 * w->skip), the late paths, the close and the digest.  Frees the writer.
 */
static int
write_rest(struct walk *w, struct wctx *wc, const char *out_name, double t0)
{
	int rc = -1;
	if (walk_dir(w, AT_FDCWD, w->pgdata, "", true) != 0)
		goto cleanup;
	int late_rc = w->late ? write_late(w) : 0;
	if (late_rc != 0) {
		rc = late_rc;
		goto cleanup;
	}
	if (archive_write_close(w->a) != ARCHIVE_OK) {
		log_warning("could not finish snapshot \"%s\": %s", out_name,
		            archive_error_string(w->a) ? archive_error_string(w->a) : "unknown error");
		goto cleanup;
	}
	archive_write_free(w->a);
	w->a = NULL;
	digest_final(wc->md, w->st->sha256);
	w->st->archive_bytes = wc->bytes;
	w->st->seconds = log_now() - t0;
	rc = 0;
cleanup:
	writer_discard(w, wc);
	return rc;
}

int
snap_write_with(const char *pgdata, int out_fd, const char *out_name, enum cfg_compression comp,
                struct snap_zstd z, const struct snap_late *late, struct snap_stats *st)
{
	double t0 = log_now();
	struct wctx wc = {.fd = out_fd, .name = out_name, .md = digest_new()};
	struct walk w = {.pgdata = pgdata, .st = st, .late = late};
	int rc = -1;

	memset(st, 0, sizeof(*st));
	w.a = archive_write_new();
	w.e = archive_entry_new();
	w.buf = xmalloc(SNAP_BUF_SIZE);
	if (!w.a || !w.e) {
		log_warning("could not allocate an archive writer");
		goto cleanup;
	}
	if (open_writer(&w, &wc, comp, z) != 0)
		goto cleanup;
	rc = write_rest(&w, &wc, out_name, t0);
cleanup:
	writer_discard(&w, &wc);
	archive_entry_free(w.e);
	free(w.buf);
	digest_free(wc.md);
	return rc;
}

static struct snap_zstd
zstd_for(enum cfg_compression comp, int level)
{
	struct snap_zstd z = {.level = level, .workers = 0};
	return comp == CFG_COMP_ZSTD ? snap_zstd_choice(level) : z;
}

static void
log_written(const char *pgdata, enum cfg_compression comp, struct snap_zstd z, const struct snap_stats *st)
{
	if (comp == CFG_COMP_ZSTD)
		log_debug("snapshot of \"%s\": %.0f MB into %.1f MB in %.2f s (%.0f MB/s), zstd level %d, %d worker%s",
		          pgdata, (double)st->pgdata_bytes / 1e6, (double)st->archive_bytes / 1e6, st->seconds,
		          st->seconds > 0 ? (double)st->pgdata_bytes / 1e6 / st->seconds : 0.0, z.level, z.workers,
		          z.workers == 1 ? "" : "s");
}

int
snap_write(const char *pgdata, int out_fd, const char *out_name, enum cfg_compression comp, int level,
           const struct snap_late *late, struct snap_stats *st)
{
	struct snap_zstd z = zstd_for(comp, level);
	int rc = snap_write_with(pgdata, out_fd, out_name, comp, z, late, st);
	if (rc == 0)
		log_written(pgdata, comp, z, st);
	return rc;
}

/* ------------------------------------------------------------ early write */

/*
 * Whether database directory base/`name` and every entry in it changed
 * before `since` (a directory's times move when an entry is added, removed
 * or renamed).  A subdirectory makes it false: a database has none.
 */
static bool
dir_untouched(int base_fd, const char *name, struct timespec since)
{
	int fd = openat(base_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return false;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return false;
	}
	struct stat sb;
	/* A ctime of whole seconds: a file system that rounds times, where a later change can look older. */
	bool ok = fstat(fd, &sb) == 0 && ts_before(sb.st_ctim, since) && sb.st_ctim.tv_nsec != 0;
	struct dirent *de;
	while (ok && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ok = fstatat(fd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode) &&
		     ts_before(sb.st_ctim, since);
	}
	closedir(d);
	return ok;
}

static void *
early_main(void *arg)
{
	struct snap_early *e = arg;
	double t0 = log_now();
	e->rc = -1;
	int base_fd = -1;
	if (open_writer(&e->w, &e->wc, e->comp, zstd_for(e->comp, e->level)) != 0)
		goto out;
	char *base = xasprintf("%s/base", e->pgdata);
	base_fd = open(base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	free(base);
	if (base_fd < 0)
		goto out;
	for (size_t i = 0; i < e->oids.n && !early_stopped(e); i++) {
		/* One the steps changed already is left to the walk after them. */
		if (!dir_untouched(base_fd, e->oids.v[i], e->since))
			continue;
		char *rel = xasprintf("base/%s", e->oids.v[i]);
		int r = write_one(&e->w, base_fd, e->oids.v[i], rel, false);
		if (r == 0)
			sl_add_owned(&e->written, rel);
		else
			free(rel);
		if (r != 0)
			goto out;
	}
	e->rc = early_stopped(e) ? -1 : 0;
out:
	if (base_fd >= 0)
		close(base_fd);
	/* Said as it happens: the steps may run for minutes more. */
	if (e->rc == 0 && e->written.n > 0)
		log_debug("snapshot of \"%s\": %zu database director%s (%.0f MB) written during the steps in %.2f s",
		          e->pgdata, e->written.n, e->written.n == 1 ? "y" : "ies", (double)e->st.pgdata_bytes / 1e6,
		          log_now() - t0);
	atomic_store(&e->done, true);
	return NULL;
}

static double
ts_seconds(struct timespec t)
{
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/*
 * CLOCK_REALTIME - CLOCK_MONOTONIC: both are slewed alike, so only a step
 * of the wall clock moves it.  Read between two monotonic readings, the
 * closest of a few tries: a thread preempted between two reads (a busy
 * machine) would otherwise see a step of its own delay.
 */
static double
clock_offset(void)
{
	double best = 0, best_gap = 1e9;
	for (int i = 0; i < 8 && best_gap > 20e-6; i++) {
		struct timespec m1, r, m2;
		clock_gettime(CLOCK_MONOTONIC, &m1);
		clock_gettime(CLOCK_REALTIME, &r);
		clock_gettime(CLOCK_MONOTONIC, &m2);
		double gap = ts_seconds(m2) - ts_seconds(m1);
		if (gap < best_gap) {
			best_gap = gap;
			best = ts_seconds(r) - (ts_seconds(m1) + ts_seconds(m2)) / 2;
		}
	}
	return best;
}

struct snap_early *
snap_early_start(const char *pgdata, int out_fd, const char *out_name, enum cfg_compression comp, int level,
                 const struct strlist *oids, struct timespec since)
{
	struct snap_early *e = xcalloc(1, sizeof(*e));
	e->pgdata = xstrdup(pgdata);
	e->out_name = xstrdup(out_name);
	e->out_fd = out_fd;
	e->comp = comp;
	e->level = level;
	e->since = since;
	e->rc = -1;
	atomic_init(&e->stop, false);
	atomic_init(&e->done, false);
	e->clock_offset = clock_offset();
	for (size_t i = 0; i < oids->n; i++)
		sl_add(&e->oids, oids->v[i]);
	if (e->oids.n > 1)
		qsort(e->oids.v, e->oids.n, sizeof(char *), cmp_str);
	e->start = lseek(out_fd, 0, SEEK_CUR);
	e->wc = (struct wctx){.fd = out_fd, .name = e->out_name, .md = digest_new()};
	e->w = (struct walk){.pgdata = e->pgdata, .st = &e->st, .early = e};
	e->w.a = archive_write_new();
	e->w.e = archive_entry_new();
	e->w.buf = xmalloc(SNAP_BUF_SIZE);
	if (e->start >= 0 && e->w.a && e->w.e && pthread_create(&e->thread, NULL, early_main, e) == 0)
		e->thread_started = true;
	return e;
}

/* Joins the thread: from here the calling thread owns e. */
static void
early_join(struct snap_early *e)
{
	if (e->thread_started) {
		pthread_join(e->thread, NULL);
		e->thread_started = false;
	}
}

/* Whether every entry the thread wrote is still as it was then; why says which is not. */
static bool
early_unchanged(const struct snap_early *e, char *why, size_t why_len)
{
	/* A step of the wall clock can stamp a later change with an older time. */
	double step = clock_offset() - e->clock_offset;
	if (step > 0.01 || step < -0.01) {
		snprintf(why, why_len, "the system clock was set by %+.3f s meanwhile", step);
		return false;
	}
	int pfd = open(e->pgdata, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0) {
		snprintf(why, why_len, "PGDATA: %s", strerror(errno));
		return false;
	}
	bool same = true;
	for (size_t i = 0; same && i < e->nseen; i++) {
		const struct early_seen *s = &e->seen[i];
		struct stat sb;
		same = fstatat(pfd, s->rel, &sb, AT_SYMLINK_NOFOLLOW) == 0 && sb.st_dev == s->dev &&
		       sb.st_ino == s->ino && sb.st_size == s->size && sb.st_mode == s->mode &&
		       ts_equal(sb.st_mtim, s->mtim) && ts_equal(sb.st_ctim, s->ctim);
		if (!same)
			snprintf(why, why_len, "\"%s\" changed during the steps", s->rel);
	}
	close(pfd);
	return same;
}

void
snap_early_drop(struct snap_early *e)
{
	if (!e)
		return;
	atomic_store(&e->stop, true);
	early_join(e);
	writer_discard(&e->w, &e->wc);
	archive_entry_free(e->w.e);
	free(e->w.buf);
	digest_free(e->wc.md);
	for (size_t i = 0; i < e->nseen; i++)
		free(e->seen[i].rel);
	free(e->seen);
	sl_free(&e->oids);
	sl_free(&e->written);
	free(e->pgdata);
	free(e->out_name);
	free(e);
}

int
snap_write_after(struct snap_early *e, const struct snap_late *late, struct snap_stats *st)
{
	double t0 = log_now();
	/* docker stop while the thread still writes a large database: stop it, as the walk would stop. */
	while (e->thread_started && !atomic_load(&e->done)) {
		if (walk_interrupted(&e->w)) {
			snap_early_drop(e);
			return -1;
		}
		nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
	}
	early_join(e);
	char why[PATH_MAX + 64] = "nothing was written";
	int rc;
	if (e->rc == 0 && e->written.n > 0 && early_unchanged(e, why, sizeof(why))) {
		*st = e->st;
		e->w.st = st;
		e->w.early = NULL;
		e->w.skip = &e->written;
		e->w.late = late;
		rc = write_rest(&e->w, &e->wc, e->out_name, t0);
		if (rc == 0)
			log_written(e->pgdata, e->comp, zstd_for(e->comp, e->level), st);
	} else {
		if (e->rc != 0)
			snprintf(why, sizeof(why), "%s",
			         e->touched ? "an entry changed during the steps"
			                    : "the thread could not write them: see the lines above");
		log_debug("snapshot of \"%s\": written in full after the steps (%s)", e->pgdata, why);
		writer_discard(&e->w, &e->wc);
		if (ftruncate(e->out_fd, e->start) != 0 || lseek(e->out_fd, e->start, SEEK_SET) != e->start) {
			log_warning("could not truncate \"%s\": %s", e->out_name, strerror(errno));
			rc = -1;
		} else {
			rc = snap_write(e->pgdata, e->out_fd, e->out_name, e->comp, e->level, late, st);
		}
	}
	snap_early_drop(e);
	return rc;
}

/* ---------------------------------------------------------------- restore */

/*
 * The restore does not go through archive_write_disk: for a PGDATA of
 * thousands of small files its per-entry work (umask twice, fcntl, lseek,
 * stat, ownership and time calls, 4 KiB-sliced sparse writes) made it about
 * twice the system calls of GNU tar, and creating files is what a hit spends
 * its time on.  libarchive still parses the stream; the files are written
 * here:
 *
 * - the reading thread (the caller) parses entries, refuses what a PGDATA
 *   never holds, creates directories, and hands each small file whole to a
 *   pool of writer threads (openat O_EXCL|O_NOFOLLOW, one write, close);
 *   creating files is the expensive part and runs in parallel on every file
 *   system measured (bench/README.md);
 * - a file above SNAP_SMALL_FILE is created by the reading thread, extended
 *   to its size, and its data goes block by block to a writer thread of
 *   its own, so that decompression and writing overlap for large files too
 *   (a data-heavy cluster is mostly large files).  One thread: writes to
 *   one file take its inode's lock, and a second writer spun on it (11 %
 *   of a 100 MB hit's CPU, perf);
 *   all-zero pieces of SNAP_HOLE bytes are not queued and stay holes (the
 *   one WAL segment of a snapshot is 16 MiB of zeros after pg_resetwal);
 * - the queue holds at most SNAP_QUEUE_BYTES of file data, so memory stays
 *   flat whatever the size of PGDATA;
 * - directory modes other than 0700 are applied at the end, when no more
 *   entries go into them.
 *
 * Safety does not depend on libarchive's checks any more: paths are
 * lexically confined (relative, no ".."), no entry can be a symlink, hard
 * link or device, the target starts empty but for pgstash's regular marker
 * files, and every file is created with O_EXCL|O_NOFOLLOW relative to a
 * descriptor of PGDATA, so nothing is written outside it or through a link.
 */

/* Files up to this size go to the writer threads whole. */
#define SNAP_SMALL_FILE (256 * 1024)
/* File data waiting in the small files' queue, and in the large files' blocks' queue, at most. */
#define SNAP_QUEUE_BYTES (4 * 1024 * 1024)
#define SNAP_BIG_QUEUE_BYTES (2 * 1024 * 1024)
#define SNAP_QUEUE_JOBS 4096
/*
 * Large files' blocks waiting, at most: each holds its file open, and an
 * archive of many large files of nearly only zeros (one small block each)
 * would otherwise keep thousands open.
 */
#define SNAP_BIG_QUEUE_JOBS 64
#define SNAP_MAX_WRITERS 4
/* A writer takes up to this many queued files (and about this much data) at once. */
#define SNAP_BATCH 16
#define SNAP_BATCH_BYTES (512 * 1024)
/* Large files: all-zero pieces of (up to) this size, on its boundaries, are not written. */
#define SNAP_HOLE (64 * 1024)
/* Pending signals are read every this many entries, and data blocks of a large file. */
#define SNAP_SIG_EVERY 64

/*
 * A large file being written: the reading thread creates it and queues its
 * blocks, the writers write them at their offsets.  Whoever drops the last
 * reference closes it.
 */
struct bigfile {
	int fd;
	char *path;
	atomic_int refs;
};

/* A small file, written whole (big NULL), or a block of a large file at `off`. */
struct wjob {
	char *path;
	unsigned char *data;
	size_t len;
	mode_t mode;
	struct bigfile *big;
	uint64_t off;
};

struct wpool {
	pthread_mutex_t mu;
	pthread_cond_t can_take, can_put;
	struct wjob *ring;
	size_t head, n;   /* queued jobs: ring[head .. head+n) mod SNAP_QUEUE_JOBS */
	size_t bytes;     /* their data */
	int idle;         /* writers waiting for a job */
	bool full;        /* the reading thread waits for room */
	bool closing;     /* no more jobs: writers exit when the queue is empty */
	bool failed;      /* a writer failed: everybody stops */
	int err;          /* its errno */
	char *err_path;   /* and the file */
	/* read-only while the writers run */
	size_t max_bytes; /* of data in the queue */
	size_t max_jobs;  /* in the queue, up to SNAP_QUEUE_JOBS */
	int dirfd;
	mode_t umask;
	bool chown;
	uid_t uid;
	gid_t gid;
	pthread_t th[SNAP_MAX_WRITERS];
	int nth;
};

/* A directory whose final mode is not the 0700 it was created with. */
struct dirmode {
	char *path;
	mode_t mode;
};

/*
 * The archive file as libarchive reads it, digested on the way.  A thread of
 * its own hashes each buffer while libarchive decompresses the next: on a
 * hit the reading thread is the busiest (zstd, then SHA-256 of the archive,
 * ~0.015 s of ~0.07 s for a 100 MB cluster).  The buffers are used in turn;
 * one is refilled only once it is hashed, and never the one libarchive
 * was given last (it may still read it).
 */
#define RCTX_BUFS 4
#define RCTX_BUF_SIZE (512 * 1024)

struct rctx {
	int fd;
	const char *name;
	struct digest *md;
	unsigned char *bufs[RCTX_BUFS];
	size_t lens[RCTX_BUFS];
	uint64_t bytes;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t posted, hashed; /* buffers filled, and hashed, so far */
	bool closing;            /* no more buffers: the thread ends once it has hashed them */
	bool threaded;           /* the thread runs; else buffers are hashed as they are read */
	pthread_t thread;
};

static void *
digest_main(void *arg)
{
	struct rctx *r = arg;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (r->hashed == r->posted && !r->closing)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->hashed == r->posted)
			break;
		size_t slot = r->hashed % RCTX_BUFS;
		pthread_mutex_unlock(&r->mu);
		digest_update(r->md, r->bufs[slot], r->lens[slot]);
		pthread_mutex_lock(&r->mu);
		r->hashed++;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/*
 * Starts a restore's helper thread with every signal blocked: the reading
 * thread handles them (sig_drain).  pthread_create's result.
 */
static int
start_unsignalled(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return e;
}

static void
rctx_start(struct rctx *r)
{
	for (int i = 0; i < RCTX_BUFS; i++)
		r->bufs[i] = xmalloc(RCTX_BUF_SIZE);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->threaded = start_unsignalled(&r->thread, digest_main, r) == 0;
}

/* Reads the next buffer of the file: its bytes (0 at the end) with *out set, or -1 with errno. */
static ssize_t
rctx_next(struct rctx *r, const unsigned char **out)
{
	size_t slot = r->posted % RCTX_BUFS;
	if (r->threaded) {
		pthread_mutex_lock(&r->mu);
		while (r->posted - r->hashed >= RCTX_BUFS)
			pthread_cond_wait(&r->cv, &r->mu);
		pthread_mutex_unlock(&r->mu);
	}
	ssize_t n;
	do
		n = read(r->fd, r->bufs[slot], RCTX_BUF_SIZE);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n;
	r->bytes += (uint64_t)n;
	*out = r->bufs[slot];
	if (!r->threaded) {
		digest_update(r->md, r->bufs[slot], (size_t)n);
		return n;
	}
	pthread_mutex_lock(&r->mu);
	r->lens[slot] = (size_t)n;
	r->posted++;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* Waits for the thread to hash what it was given and ends it.  Idempotent. */
static void
rctx_stop(struct rctx *r)
{
	if (!r->threaded)
		return;
	pthread_mutex_lock(&r->mu);
	r->closing = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	r->threaded = false;
}

static void
rctx_free(struct rctx *r)
{
	rctx_stop(r);
	if (r->bufs[0]) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
	}
	for (int i = 0; i < RCTX_BUFS; i++)
		free(r->bufs[i]);
	if (r->fd >= 0)
		close(r->fd);
	digest_free(r->md);
}

static la_ssize_t
r_read(struct archive *a, void *data, const void **out)
{
	struct rctx *r = data;
	const unsigned char *buf = NULL;
	ssize_t n = rctx_next(r, &buf);
	if (n < 0) {
		archive_set_error(a, errno, "could not read \"%s\": %s", r->name, strerror(errno));
		return -1;
	}
	*out = buf;
	return n;
}

/* Reads what libarchive left after the tar trailer, so the digest covers the whole file; then ends the thread. */
static int
r_drain(struct rctx *r)
{
	for (;;) {
		const unsigned char *buf;
		ssize_t n = rctx_next(r, &buf);
		if (n < 0) {
			log_warning("could not read \"%s\": %s", r->name, strerror(errno));
			rctx_stop(r);
			return -1;
		}
		if (n == 0) {
			rctx_stop(r);
			return 0;
		}
	}
}

/*
 * The top-level names of a PostgreSQL cluster (PostgreSQL 10 and later, and
 * the older pg_xlog and pg_clog), as snap_write writes them.  An allowlist:
 * whoever writes the cache must not add a file postgres would act on
 * (recovery.signal, standby.signal, backup_label, tablespace_map,
 * recovery.conf) or anything else that is not a cluster's (a library for a
 * preload setting, a trust-all hba file).
 */
static const char *const cluster_tops[] = {
	"PG_VERSION", "base", "global", "pg_commit_ts", "pg_dynshmem", "pg_logical", "pg_multixact", "pg_notify",
	"pg_replslot", "pg_serial", "pg_snapshots", "pg_stat", "pg_stat_tmp", "pg_subtrans", "pg_tblspc",
	"pg_twophase", "pg_wal", "pg_xact", "pg_xlog", "pg_clog", "postgresql.conf", "postgresql.auto.conf",
	"pg_hba.conf", "pg_ident.conf", "log", "pg_log", "current_logfiles", NULL,
};

/* NULL when `path` (relative, no "..") is a cluster's, else why not. */
static const char *
path_refusal(const char *path)
{
	while (path[0] == '.' && (path[1] == '/' || path[1] == '\0'))
		path += path[1] ? 2 : 1;
	while (*path == '/')
		path++;
	if (!*path)
		return NULL; /* PGDATA itself */
	size_t len = strcspn(path, "/");
	bool below = path[len] == '/' && path[len + 1] != '\0';
	for (size_t i = 0; cluster_tops[i]; i++) {
		if (strlen(cluster_tops[i]) != len || strncmp(path, cluster_tops[i], len) != 0)
			continue;
		/* Tablespaces are links in pg_tblspc: a snapshot never holds one. */
		if (below && strcmp(cluster_tops[i], "pg_tblspc") == 0)
			return "tablespace in pg_tblspc";
		return NULL;
	}
	return "not part of a PostgreSQL cluster";
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
	const char *why = path_refusal(path);
	if (why)
		return why;
	if (archive_entry_hardlink(e))
		return "hard link";
	switch (archive_entry_filetype(e)) {
	case AE_IFREG:
	case AE_IFDIR:
		break;
	case AE_IFLNK:
		/* pgstash never writes one (snap_write refuses them). */
		return "symbolic link";
	default:
		return "entry type other than file or directory";
	}
	if (archive_entry_size_is_set(e) &&
	    (archive_entry_size(e) < 0 || (uint64_t)archive_entry_size(e) > SNAP_MAX_ENTRY_BYTES))
		return "entry size out of range";
	return NULL;
}

/*
 * The entry's path as written below PGDATA: "./" prefixes, repeated and
 * trailing slashes and "." components dropped.  NULL when nothing is left
 * (the archive's "./" entry: PGDATA itself).  Caller frees.
 */
static char *
clean_path(const char *path)
{
	size_t n = strlen(path);
	char *out = xmalloc(n + 1);
	size_t o = 0;
	const char *s = path;
	while (*s) {
		const char *slash = strchr(s, '/');
		size_t len = slash ? (size_t)(slash - s) : strlen(s);
		if (len > 0 && !(len == 1 && s[0] == '.')) {
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, s, len);
			o += len;
		}
		s += len + (slash ? 1 : 0);
	}
	out[o] = '\0';
	if (o == 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* True when a disk write failure is the local system's and not the archive's. */
static bool
local_errno(int e)
{
	return e == ENOSPC || e == EDQUOT || e == EROFS || e == EIO || e == ENOMEM || e == EMFILE ||
	       e == ENFILE || e == EFBIG || e == EINTR;
}

static int
write_all(int fd, const unsigned char *p, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t k = pwrite(fd, p, len, off);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (k == 0) {
			errno = EIO;
			return -1;
		}
		p += k;
		len -= (size_t)k;
		off += k;
	}
	return 0;
}

/* Creates the file `path` below dirfd with `mode`; -1 with errno. */
static int
create_file(const struct wpool *p, const char *path, mode_t mode)
{
	int fd = openat(p->dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	/* Only when the umask took bits the archive asked for, or for another owner. */
	if (((mode & p->umask) != 0 && fchmod(fd, mode) != 0) || (p->chown && fchown(fd, p->uid, p->gid) != 0)) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void
pool_fail(struct wpool *p, int err, const char *path)
{
	pthread_mutex_lock(&p->mu);
	if (!p->failed) {
		p->failed = true;
		p->err = err;
		p->err_path = xstrdup(path);
	}
	pthread_cond_broadcast(&p->can_put);
	pthread_cond_broadcast(&p->can_take);
	pthread_mutex_unlock(&p->mu);
}

/* Drops a reference to f; the last one closes it (a failing close fails the pool). */
static void
bigfile_release(struct wpool *p, struct bigfile *f)
{
	if (atomic_fetch_sub(&f->refs, 1) != 1)
		return;
	if (close(f->fd) != 0)
		pool_fail(p, errno, f->path);
	free(f->path);
	free(f);
}

/* What a job holds, given back. */
static void
job_free(struct wpool *p, struct wjob *j)
{
	free(j->path);
	free(j->data);
	if (j->big)
		bigfile_release(p, j->big);
}

/* One small file written whole, or one block of a large file.  0, or an errno value. */
static int
write_job(const struct wpool *p, const struct wjob *j)
{
	if (j->big)
		return write_all(j->big->fd, j->data, j->len, (off_t)j->off) == 0 ? 0 : errno;
	int fd = create_file(p, j->path, j->mode);
	if (fd < 0)
		return errno;
	int err = 0;
	if (j->len > 0 && write_all(fd, j->data, j->len, 0) != 0)
		err = errno;
	if (close(fd) != 0 && !err)
		err = errno;
	return err;
}

static void *
writer_main(void *arg)
{
	struct wpool *p = arg;
	struct wjob batch[SNAP_BATCH];
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (p->n == 0 && !p->closing && !p->failed) {
			p->idle++;
			pthread_cond_wait(&p->can_take, &p->mu);
			p->idle--;
		}
		if (p->failed || p->n == 0) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		/*
		 * A share of the queue at a time, so that the threads do not take
		 * the lock once per file; at least one job, and little data.
		 */
		size_t take = p->n / (size_t)(p->nth + 1);
		if (take < 1)
			take = 1;
		if (take > SNAP_BATCH)
			take = SNAP_BATCH;
		size_t k = 0, bytes = 0;
		while (k < take && (k == 0 || bytes + p->ring[p->head].len <= SNAP_BATCH_BYTES)) {
			batch[k] = p->ring[p->head];
			bytes += batch[k].len;
			p->head = (p->head + 1) % SNAP_QUEUE_JOBS;
			p->n--;
			p->bytes -= batch[k].len;
			k++;
		}
		/* Wake-ups only for a thread that waits: a futex call per file otherwise. */
		if (p->full) {
			p->full = false;
			pthread_cond_signal(&p->can_put);
		}
		pthread_mutex_unlock(&p->mu);

		for (size_t i = 0; i < k; i++) {
			int err = write_job(p, &batch[i]);
			if (err) {
				pool_fail(p, err, batch[i].big ? batch[i].big->path : batch[i].path);
				for (size_t r = i; r < k; r++)
					job_free(p, &batch[r]);
				return NULL;
			}
			job_free(p, &batch[i]);
		}
	}
}

/* Queues a job for the writers, waiting for room.  Takes what j holds.  -1 when the pool failed. */
static int
pool_put(struct wpool *p, struct wjob j)
{
	pthread_mutex_lock(&p->mu);
	while (!p->failed && (p->n == p->max_jobs || (p->n > 0 && p->bytes + j.len > p->max_bytes))) {
		p->full = true;
		pthread_cond_wait(&p->can_put, &p->mu);
	}
	if (p->failed) {
		pthread_mutex_unlock(&p->mu);
		job_free(p, &j);
		return -1;
	}
	p->ring[(p->head + p->n) % SNAP_QUEUE_JOBS] = j;
	p->n++;
	p->bytes += j.len;
	if (p->idle > 0)
		pthread_cond_signal(&p->can_take);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

static bool
pool_failed(struct wpool *p)
{
	pthread_mutex_lock(&p->mu);
	bool f = p->failed;
	pthread_mutex_unlock(&p->mu);
	return f;
}

/*
 * How many writer threads: one per CPU, 2 to SNAP_MAX_WRITERS (file creation
 * waits on the file system more than it computes: two overlap even on one CPU).
 */
int snap_restore_writers;

static int
writer_count(void)
{
	if (snap_restore_writers > 0)
		return snap_restore_writers > SNAP_MAX_WRITERS ? SNAP_MAX_WRITERS : snap_restore_writers;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 2)
		n = 2;
	return n > SNAP_MAX_WRITERS ? SNAP_MAX_WRITERS : (int)n;
}

/* Starts `want` writers (at least one, or -1, logged) with room for max_jobs jobs of max_bytes in all. */
static int
pool_start(struct wpool *p, int want, size_t max_jobs, size_t max_bytes)
{
	p->max_jobs = max_jobs;
	p->max_bytes = max_bytes;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->can_take, NULL);
	pthread_cond_init(&p->can_put, NULL);
	p->ring = xcalloc(SNAP_QUEUE_JOBS, sizeof(*p->ring));
	for (int i = 0; i < want; i++) {
		int e = start_unsignalled(&p->th[p->nth], writer_main, p);
		if (e != 0) {
			if (p->nth == 0) {
				log_warning("could not start a writer thread: %s", strerror(e));
				return -1;
			}
			break;
		}
		p->nth++;
	}
	return 0;
}

/* Lets the writers finish the queue (or drop it when `abandon`), joins them. */
static void
pool_stop(struct wpool *p, bool abandon)
{
	if (!p->ring)
		return;
	pthread_mutex_lock(&p->mu);
	p->closing = true;
	if (abandon)
		p->failed = true;
	pthread_cond_broadcast(&p->can_take);
	pthread_cond_broadcast(&p->can_put);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nth; i++)
		pthread_join(p->th[i], NULL);
	p->nth = 0;
	for (; p->n > 0; p->n--) {
		job_free(p, &p->ring[p->head]);
		p->head = (p->head + 1) % SNAP_QUEUE_JOBS;
	}
	free(p->ring);
	p->ring = NULL;
	pthread_cond_destroy(&p->can_take);
	pthread_cond_destroy(&p->can_put);
	pthread_mutex_destroy(&p->mu);
}

/*
 * Creates every missing directory leading to `path` (not path itself), below
 * dirfd.  `made` caches the last parent known to exist.  -1 with errno.
 */
static int
make_parents(const struct wpool *p, const char *path, struct strbuf *made)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return 0;
	size_t plen = (size_t)(slash - path);
	if (made->len == plen && memcmp(made->buf, path, plen) == 0)
		return 0;
	char *dir = xmalloc(plen + 1);
	memcpy(dir, path, plen);
	dir[plen] = '\0';
	for (char *s = dir;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdirat(p->dirfd, dir, 0700) == 0) {
				if (p->chown && fchownat(p->dirfd, dir, p->uid, p->gid, AT_SYMLINK_NOFOLLOW) != 0)
					goto fail;
			} else if (errno != EEXIST)
				goto fail;
			*s = c;
			if (c == '\0')
				break;
		}
	}
	made->len = 0;
	sb_appendn(made, dir, plen);
	free(dir);
	return 0;
fail:;
	int e = errno;
	free(dir);
	errno = e;
	return -1;
}

/* Whether a signal came (read now): logged once, the restore then ends as SNAP_FAILED. */
static bool
interrupted(const char *archive_path)
{
	sig_drain();
	if (!sig_received)
		return false;
	log_warning("restore of \"%s\" interrupted by signal %d", archive_path, (int)sig_received);
	return true;
}

/*
 * The next data block of the current entry, of `size` bytes in all: 1 with
 * *buf, *len, *off set and *end moved past the block; 0 at its end; -1 when
 * the archive is damaged or the block lies beyond the size or before *end,
 * where the previous block ended (logged).  Blocks only go forward: a sparse
 * map may list a range twice (libarchive takes it as written), and a later
 * block over the file's first bytes would undo what was checked of them.
 */
static int
next_block(struct archive *ar, const char *archive_path, const char *path, uint64_t size, const void **buf,
           size_t *len, la_int64_t *off, uint64_t *end)
{
	int r = archive_read_data_block(ar, buf, len, off);
	if (r == ARCHIVE_EOF)
		return 0;
	if (r != ARCHIVE_OK) {
		log_warning("snapshot \"%s\" is damaged at \"%s\": %s", archive_path, path,
		            archive_error_string(ar) ? archive_error_string(ar) : "unknown error");
		return -1;
	}
	if (*off < 0 || (uint64_t)*off + *len > size) {
		log_warning("snapshot \"%s\" refused: entry \"%s\" holds more data than its size", archive_path, path);
		return -1;
	}
	if ((uint64_t)*off < *end) {
		log_warning("snapshot \"%s\" refused: entry \"%s\" holds data twice for one range", archive_path, path);
		return -1;
	}
	*end = (uint64_t)*off + *len;
	return 1;
}

/*
 * The first bytes of every ELF file.  No file of a cluster is one, and a
 * library anywhere below PGDATA could be loaded by the final server whatever
 * its name, through what no conf check sees: a setting in the catalogs
 * (ALTER ROLE ... SET session_preload_libraries = 'base/x'), a C function's
 * library.  The loader takes nothing else, so a restore refuses an ELF file.
 */
static const unsigned char elf_magic[4] = {0x7f, 'E', 'L', 'F'};

/* Copies what a block (`len` bytes at `off`) holds of a file's first bytes into head. */
static void
note_head(unsigned char head[sizeof(elf_magic)], la_int64_t off, const void *buf, size_t len)
{
	for (size_t i = 0; (uint64_t)off + i < sizeof(elf_magic) && i < len; i++)
		head[off + i] = ((const unsigned char *)buf)[i];
}

/* Whether a file starting with `head` is a library (logged: the restore refuses it). */
static bool
library_refused(const unsigned char *head, uint64_t size, const char *archive_path, const char *path)
{
	if (size < sizeof(elf_magic) || memcmp(head, elf_magic, sizeof(elf_magic)) != 0)
		return false;
	log_warning("snapshot \"%s\" refused: entry \"%s\" is a shared library (ELF), which no cluster holds",
	            archive_path, path);
	return true;
}

/*
 * A large file: created and extended here, its data queued for the writers
 * a block at a time, all-zero pieces left as holes.  0, SNAP_BAD_ARCHIVE or
 * SNAP_FAILED (logged; a writer's failure is reported by the caller).
 */
static int
stream_file(struct archive *ar, const struct wpool *p, struct wpool *big, const char *archive_path, const char *path,
            mode_t mode, uint64_t size)
{
	int fd = create_file(p, path, mode);
	if (fd < 0) {
		int e = errno;
		log_warning("could not create \"%s\": %s", path, strerror(e));
		return local_errno(e) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
	}
	/* The holes need the size set; the blocks then fill the data in. */
	if (ftruncate(fd, (off_t)size) != 0) {
		int e = errno;
		log_warning("could not extend \"%s\": %s", path, strerror(e));
		close(fd);
		return local_errno(e) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
	}
	struct bigfile *f = xmalloc(sizeof(*f));
	f->fd = fd;
	f->path = xstrdup(path);
	atomic_init(&f->refs, 1); /* this thread's, until the last block is queued */
	unsigned char head[sizeof(elf_magic)] = {0}; /* a hole reads as zeros */
	uint64_t end = 0;
	int rc = 0;
	for (unsigned long blocks = 0; rc == 0; blocks++) {
		/* A large file is many blocks: `docker stop` must not wait for its end. */
		if (blocks % SNAP_SIG_EVERY == 0 && interrupted(archive_path)) {
			rc = SNAP_FAILED;
			break;
		}
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = next_block(ar, archive_path, path, size, &buf, &len, &off, &end);
		if (r == 0)
			break;
		if (r < 0) {
			rc = SNAP_BAD_ARCHIVE;
			break;
		}
		note_head(head, off, buf, len);
		/*
		 * Queue runs of pieces that are not all zeros.  The file is already
		 * its full size, so skipped zeros read back as zeros; pieces follow
		 * the file's 64 KiB blocks whatever the sizes of libarchive's blocks.
		 * libarchive reuses its buffer: a run is copied.
		 */
		const unsigned char *b = buf;
		size_t i = 0, run = 0;
		while (rc == 0 && i <= len) {
			bool hole = false;
			size_t piece = 0;
			if (i < len) {
				uint64_t at = (uint64_t)off + i;
				piece = SNAP_HOLE - (size_t)(at % SNAP_HOLE);
				if (piece > len - i)
					piece = len - i;
				hole = b[i] == 0 && (piece == 1 || memcmp(b + i, b + i + 1, piece - 1) == 0);
			}
			if ((hole || i == len) && i > run) {
				unsigned char *copy = xmalloc(i - run);
				memcpy(copy, b + run, i - run);
				atomic_fetch_add(&f->refs, 1);
				struct wjob j = {.data = copy, .len = i - run, .big = f, .off = (uint64_t)off + run};
				if (pool_put(big, j) != 0)
					rc = SNAP_FAILED;
			}
			if (hole || i == len)
				run = i + piece;
			if (i == len)
				break;
			i += piece;
		}
	}
	/* Its blocks may be written already: the refusal empties PGDATA as any other does. */
	if (rc == 0 && library_refused(head, size, archive_path, path))
		rc = SNAP_BAD_ARCHIVE;
	bigfile_release(big, f);
	return rc;
}

/* A small file read whole from the archive.  NULL (logged) when the archive is damaged. */
static unsigned char *
read_small(struct archive *ar, const char *archive_path, const char *path, size_t size)
{
	unsigned char *data = size ? xmalloc(size) : NULL;
	uint64_t filled = 0;
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		uint64_t gap = filled;
		int r = next_block(ar, archive_path, path, size, &buf, &len, &off, &filled);
		if (r == 0)
			break;
		if (r < 0) {
			free(data);
			return NULL;
		}
		/* Sparse entries come with gaps: they read as zeros. */
		if ((uint64_t)off > gap)
			memset(data + gap, 0, (size_t)off - gap);
		if (len)
			memcpy(data + off, buf, len);
	}
	if (filled < size)
		memset(data + filled, 0, size - filled);
	return data ? data : xmalloc(1);
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

/* One entry (already checked by entry_refusal).  0, SNAP_BAD_ARCHIVE or SNAP_FAILED (logged). */
static int
extract_entry(struct archive *ar, struct archive_entry *e, struct wpool *p, struct wpool *big, const char *archive_path,
              struct strbuf *made, struct dirmode **dirs, size_t *ndirs, struct snap_stats *st)
{
	char *path = clean_path(archive_entry_pathname(e));
	mode_t perm = archive_entry_perm(e) & 0777;
	if (path && skip_top(path)) {
		/* The markers already in PGDATA, or postmaster.pid: snap_write never writes them. */
		log_warning("snapshot \"%s\" refused: entry \"%s\": a name pgstash never writes", archive_path, path);
		free(path);
		return SNAP_BAD_ARCHIVE;
	}
	if (archive_entry_filetype(e) == AE_IFDIR) {
		if (!path)
			return 0; /* "./": PGDATA itself, made 0700 at the end */
		int rc = 0;
		if (make_parents(p, path, made) != 0 || (mkdirat(p->dirfd, path, 0700) != 0 && errno != EEXIST)) {
			int e2 = errno;
			log_warning("could not create directory \"%s\": %s", path, strerror(e2));
			rc = local_errno(e2) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
		} else if ((perm | 0700) != 0700 || p->chown) {
			*dirs = xrealloc(*dirs, (*ndirs + 1) * sizeof(**dirs));
			(*dirs)[(*ndirs)++] = (struct dirmode){.path = path, .mode = perm | 0700};
			path = NULL;
		}
		free(path);
		return rc;
	}
	if (!path) {
		log_warning("snapshot \"%s\" refused: a file entry names the directory itself", archive_path);
		return SNAP_BAD_ARCHIVE;
	}
	uint64_t size = archive_entry_size_is_set(e) ? (uint64_t)archive_entry_size(e) : 0;
	/*
	 * No file of a cluster is executable: an entry's never is, whatever its
	 * mode says (an extension may run a file it is pointed at, a setting in
	 * the catalogs may point it at one).
	 */
	mode_t mode = (perm & 0666) | 0600;
	st->files++;
	st->pgdata_bytes += size;
	if (make_parents(p, path, made) != 0) {
		int e2 = errno;
		log_warning("could not create the directories of \"%s\": %s", path, strerror(e2));
		free(path);
		return local_errno(e2) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
	}
	if (size > SNAP_SMALL_FILE) {
		int rc = stream_file(ar, p, big, archive_path, path, mode, size);
		free(path);
		return rc;
	}
	unsigned char *data = read_small(ar, archive_path, path, (size_t)size);
	if (!data || library_refused(data, size, archive_path, path)) {
		free(data);
		free(path);
		return SNAP_BAD_ARCHIVE;
	}
	if (pool_put(p, (struct wjob){.path = path, .data = data, .len = (size_t)size, .mode = mode}) != 0)
		return SNAP_BAD_ARCHIVE; /* the writer's failure is reported by the caller */
	return 0;
}

/* One restore's state, shared by its steps. */
struct restore {
	const char *archive_path;
	const char *pgdata;
	const char *conf_sample;  /* this machine's postgresql.conf.sample, NULL when none was found */
	uid_t uid;
	gid_t gid;
	bool as_owner;            /* chown what is created to uid:gid */
	struct snap_stats st;
	struct rctx in;           /* the archive file, digested as libarchive reads it */
	struct archive *ar;
	struct wpool pool;        /* the small files' writers */
	struct wpool big;         /* the one writer of large files' blocks */
	struct strbuf made;       /* directories made so far (extract_entry's bookkeeping) */
	struct dirmode *dirs;     /* deferred directory modes, set once every file is written */
	size_t ndirs;
	uint64_t entries, total;
	uint64_t expected;        /* the meta's pgdata_bytes, 0 when unknown */
	uint64_t cap;             /* expected + SNAP_EXPAND_MARGIN: past it the archive is a bomb */
	uint64_t free_bytes;      /* free space of PGDATA's file system at the start */
	bool to_writers;          /* reading stopped at the end or after handing out an entry: join the writers */
};

/* PGDATA must be absent (created 0700) or hold nothing but markers.  0, or -1 (logged). */
static int
claim_target(const char *pgdata)
{
	struct stat sb;
	if (stat(pgdata, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode)) {
			log_warning("cannot restore into \"%s\": not a directory", pgdata);
			return -1;
		}
		if (!only_markers(pgdata)) {
			log_warning("cannot restore into \"%s\": directory is not empty", pgdata);
			return -1;
		}
	} else if (errno != ENOENT || mkdir_p(pgdata, 0700) != 0) {
		log_warning("cannot restore into \"%s\": %s", pgdata, strerror(errno));
		return -1;
	}
	return 0;
}

/* Opens the archive, the target directory and the reader.  0, or SNAP_FAILED / SNAP_BAD_ARCHIVE (logged). */
static int
open_restore(struct restore *r)
{
	r->in.fd = open(r->archive_path, O_RDONLY | O_CLOEXEC);
	if (r->in.fd < 0) {
		log_warning("could not open snapshot \"%s\": %s", r->archive_path, strerror(errno));
		return SNAP_FAILED;
	}
	posix_fadvise(r->in.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	r->in.md = digest_new();
	rctx_start(&r->in);

	r->pool.dirfd = open(r->pgdata, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (r->pool.dirfd < 0) {
		log_warning("could not open \"%s\": %s", r->pgdata, strerror(errno));
		return SNAP_FAILED;
	}
	r->pool.umask = umask(077);
	umask(r->pool.umask);
	r->pool.chown = r->as_owner;
	r->pool.uid = r->uid;
	r->pool.gid = r->gid;

	r->ar = archive_read_new();
	if (!r->ar) {
		log_warning("could not allocate an archive reader");
		return SNAP_FAILED;
	}
	archive_read_support_format_tar(r->ar);
	archive_read_support_filter_zstd(r->ar);
	archive_read_support_filter_gzip(r->ar);
	if (archive_read_open(r->ar, &r->in, NULL, r_read, NULL) != ARCHIVE_OK) {
		log_warning("could not read snapshot \"%s\": %s", r->archive_path, archive_error_string(r->ar));
		return SNAP_BAD_ARCHIVE;
	}
	return pool_start(&r->pool, writer_count(), SNAP_QUEUE_JOBS, SNAP_QUEUE_BYTES) == 0 &&
	               pool_start(&r->big, 1, SNAP_BIG_QUEUE_JOBS, SNAP_BIG_QUEUE_BYTES) == 0
	           ? 0
	           : SNAP_FAILED;
}

/* Why entry e must not be restored (with the running limits), or NULL. */
static const char *
entry_limit(struct restore *r, struct archive_entry *e)
{
	const char *why = entry_refusal(e);
	if (!why && ++r->entries > SNAP_MAX_ENTRIES)
		why = "too many entries";
	if (!why && archive_entry_size_is_set(e)) {
		r->total += (uint64_t)archive_entry_size(e);
		if (r->total > SNAP_MAX_TOTAL_BYTES)
			why = "archive expands beyond the size limit";
	}
	return why;
}

/*
 * Whether the files declared so far (r->total, before the current one's bytes
 * are written) still fit: within what the meta declares (else a bomb: the
 * archive is bad) and within the free space (else the local disk is too
 * small: not the entry's fault).  0, SNAP_BAD_ARCHIVE or SNAP_FAILED (logged).
 */
static int
check_room(const struct restore *r)
{
	char a[32], b[32];
	if (r->total > r->cap) {
		log_warning("snapshot \"%s\" refused: it expands past the size its meta declares (files of more than %s, "
		            "pgdata_bytes says %s)",
		            r->archive_path, log_bytes(a, r->total), log_bytes(b, r->expected));
		return SNAP_BAD_ARCHIVE;
	}
	if (r->total > r->free_bytes) {
		log_warning("snapshot \"%s\" does not fit in \"%s\": its files need more than the %s free there",
		            r->archive_path, r->pgdata, log_bytes(a, r->free_bytes));
		return SNAP_FAILED;
	}
	return 0;
}

/* Reads every entry and hands it to the writers.  0, or SNAP_FAILED / SNAP_BAD_ARCHIVE (logged). */
static int
read_entries(struct restore *r)
{
	struct archive_entry *e;
	for (;;) {
		if (r->entries % SNAP_SIG_EVERY == 0 && interrupted(r->archive_path))
			return SNAP_FAILED;
		int h = archive_read_next_header(r->ar, &e);
		if (h == ARCHIVE_EOF) {
			r->to_writers = true;
			return 0;
		}
		if (h != ARCHIVE_OK) {
			log_warning("snapshot \"%s\" is damaged: %s", r->archive_path,
			            archive_error_string(r->ar) ? archive_error_string(r->ar) : "unknown error");
			return h == ARCHIVE_FATAL && archive_errno(r->ar) > 0 && local_errno(archive_errno(r->ar))
			               ? SNAP_FAILED
			               : SNAP_BAD_ARCHIVE;
		}
		const char *why = entry_limit(r, e);
		if (why) {
			log_warning("snapshot \"%s\" refused: entry \"%s\": %s", r->archive_path,
			            archive_entry_pathname(e) ? archive_entry_pathname(e) : "", why);
			return SNAP_BAD_ARCHIVE;
		}
		int room = check_room(r);
		if (room != 0)
			return room;
		int rc = extract_entry(r->ar, e, &r->pool, &r->big, r->archive_path, &r->made, &r->dirs, &r->ndirs, &r->st);
		if (rc != 0 || pool_failed(&r->pool) || pool_failed(&r->big)) {
			r->to_writers = true;
			return rc;
		}
	}
}

/* Waits for every queued file (or the first writer failure), so nothing below races a writer. */
static int
finish_writers(struct restore *r, int rc)
{
	pool_stop(&r->pool, rc != 0);
	pool_stop(&r->big, rc != 0);
	const struct wpool *failed = r->pool.err_path ? &r->pool : r->big.err_path ? &r->big : NULL;
	if (failed) {
		log_warning("could not write \"%s/%s\": %s", r->pgdata, failed->err_path, strerror(failed->err));
		rc = local_errno(failed->err) ? SNAP_FAILED : SNAP_BAD_ARCHIVE;
	}
	return rc;
}

/* The deferred fixups (as libarchive's): directory modes and owners, once their files are in.  0 or -1. */
static int
apply_dir_modes(struct restore *r)
{
	for (size_t i = 0; i < r->ndirs; i++) {
		if (fchmodat(r->pool.dirfd, r->dirs[i].path, r->dirs[i].mode, 0) != 0 ||
		    (r->as_owner && fchownat(r->pool.dirfd, r->dirs[i].path, r->uid, r->gid, AT_SYMLINK_NOFOLLOW) != 0)) {
			log_warning("could not set the mode of \"%s/%s\": %s", r->pgdata, r->dirs[i].path, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/*
 * Whether a conf file may set `name` (lowercase): not when the setting runs
 * code, loads a library, names a file or directory postgres reads or writes,
 * or includes another file.  A denylist by pattern, not an allowlist of
 * settings: builds legitimately tune anything else (ALTER SYSTEM in a
 * migration), the list of settings grows with every major version, and the
 * dangerous ones follow these names (*_command, *_library, *_libraries,
 * *file, *_filename, *_path, *dir, *_directory, *_directories, include*),
 * plus the one that does not (jit_provider loads a library).  The short
 * suffixes are for the names that drop the underscore or the word's end:
 * krb_server_keyfile, ssl_crl_dir, log_filename (a "../" in it writes the
 * server's log anywhere its user may write) and Debian's extension_destdir
 * (a relative one puts a directory of PGDATA before every library and
 * extension script the server loads).  An extension's setting (a dotted
 * name, which the server takes whether or not the module exists) is its
 * module's own, named by no rule: it is also refused when it ends in
 * "command", "init", "proc", "script", "options", "location" or "path"
 * (basebackup_to_shell.command; plperl.on_init and on_plperlu_init: Perl
 * each interpreter runs first; pltcl.start_proc; pgsodium.getkey_script, run
 * at start; pljava.vmoptions, where -XX:OnError runs a command;
 * pljava.libjvm_location; postgis.gdal_datapath).
 */
static bool
setting_refused(const char *name)
{
	static const char *const suffixes[] = {"_command",  "_library", "_libraries", "file",         "_filename",
	                                       "_path",     "dir",      "_directory", "_directories", NULL};
	static const char *const module_suffixes[] = {"command", "init", "proc", "script", "options", "location", "path",
	                                              NULL};
	if (strncmp(name, "include", 7) == 0 || strcmp(name, "jit_provider") == 0 || str_ends_in(suffixes, name))
		return true;
	return strchr(name, '.') && str_ends_in(module_suffixes, name);
}

/*
 * Where the final server listens: this machine's, never an entry's.  A
 * forged listen_addresses = '*' would open a server whose pg_hba.conf
 * trusts every host (POSTGRES_HOST_AUTH_METHOD=trust, meant for a host's
 * loopback) to the network, and another port would move it from where the
 * clients look.  initdb copies such a line from the sample verbatim (the
 * image's listen_addresses = '*'), so postgresql.conf may hold a line that
 * this machine's postgresql.conf.sample holds, and postgresql.auto.conf
 * none.
 */
static const char *const listen_settings[] = {"listen_addresses", "port", NULL};

/* Whether `line` of a restored `name` (setting one of listen_settings) is a line of the sample. */
static bool
listen_line_allowed(const struct restore *r, const char *name, const char *line)
{
	if (strcmp(name, "postgresql.conf") != 0 || !r->conf_sample)
		return false;
	int fd = open(r->conf_sample, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!f) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	char setting[128];
	bool known, found = false;
	struct strbuf sample_line = {0};
	while (!found && conf_next_setting(f, setting, sizeof(setting), &known, &sample_line))
		found = known && str_in(listen_settings, setting) && strcmp(sb_str(&sample_line), line) == 0;
	fclose(f);
	sb_free(&sample_line);
	return found;
}

/* Checks a restored conf file's settings (setting_refused, listen_settings).  0, or -1 (warned). */
static int
check_conf(const struct restore *r, const char *name)
{
	int fd = openat(r->pool.dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : (log_warning("snapshot \"%s\": cannot read %s: %s", r->archive_path, name,
		                                          strerror(errno)),
		                              -1);
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -1;
	}
	int rc = 0, lineno = 0;
	char setting[128];
	bool known;
	struct strbuf line = {0};
	while (rc == 0 && conf_next_setting(f, setting, sizeof(setting), &known, &line)) {
		lineno++;
		if (!known) {
			log_warning("snapshot \"%s\" refused: %s line %d cannot be checked (too long, a NUL byte, or a read error)",
			            r->archive_path, name, lineno);
			rc = -1;
		} else if (setting_refused(setting)) {
			log_warning("snapshot \"%s\" refused: %s line %d sets %s (runs code or moves trust)", r->archive_path,
			            name, lineno, setting);
			rc = -1;
		} else if (str_in(listen_settings, setting) && !listen_line_allowed(r, name, sb_str(&line))) {
			log_warning("snapshot \"%s\" refused: %s line %d sets %s, which %s does not (where the final "
			            "server listens is this machine's)",
			            r->archive_path, name, lineno, setting, r->conf_sample ? r->conf_sample : "no sample found here");
			rc = -1;
		}
	}
	fclose(f);
	sb_free(&line);
	return rc;
}

/* The whole file's digest, the server version, PGDATA's own mode.  0, or SNAP_* (logged). */
static int
check_restored(struct restore *r, const char *expected_sha256, int expected_pg_major)
{
	if (r_drain(&r->in) != 0)
		return SNAP_FAILED;
	digest_final(r->in.md, r->st.sha256);
	if (expected_sha256 && strcasecmp(expected_sha256, r->st.sha256) != 0) {
		log_warning("snapshot \"%s\" is damaged: SHA-256 is %s, expected %s", r->archive_path, r->st.sha256,
		            expected_sha256);
		return SNAP_BAD_ARCHIVE;
	}
	if (check_pg_version(r->pgdata, expected_pg_major) != 0 || check_conf(r, "postgresql.auto.conf") != 0 ||
	    check_conf(r, "postgresql.conf") != 0)
		return SNAP_BAD_ARCHIVE;
	if (fchmod(r->pool.dirfd, 0700) != 0 || (r->as_owner && fchown(r->pool.dirfd, r->uid, r->gid) != 0)) {
		log_warning("could not set the mode or owner of \"%s\": %s", r->pgdata, strerror(errno));
		return SNAP_FAILED;
	}
	return 0;
}

static void
restore_free(struct restore *r)
{
	pool_stop(&r->pool, true);
	pool_stop(&r->big, true);
	free(r->pool.err_path);
	free(r->big.err_path);
	if (r->ar)
		archive_read_free(r->ar);
	if (r->pool.dirfd >= 0)
		close(r->pool.dirfd);
	rctx_free(&r->in);
	for (size_t i = 0; i < r->ndirs; i++)
		free(r->dirs[i].path);
	free(r->dirs);
	sb_free(&r->made);
}

int
snap_restore(const char *archive_path, const char *expected_sha256, const char *pgdata, uid_t uid, gid_t gid,
             int expected_pg_major, const char *conf_sample, uint64_t expected_bytes, struct snap_stats *st_out)
{
	double t0 = log_now();
	struct restore r = {.archive_path = archive_path, .pgdata = pgdata, .conf_sample = conf_sample, .uid = uid,
	                    .gid = gid,
	                    .as_owner = geteuid() == 0 && uid != (uid_t)-1, .in = {.fd = -1, .name = archive_path},
	                    .pool = {.dirfd = -1}, .big = {.dirfd = -1}};
	int rc = SNAP_FAILED;
	bool wipe = false;

	if (claim_target(pgdata) != 0)
		goto cleanup;
	/* From here on the directory is ours: any failure leaves it empty. */
	wipe = true;
	r.expected = expected_bytes;
	r.cap = expected_bytes ? expected_bytes + SNAP_EXPAND_MARGIN(expected_bytes) : UINT64_MAX;
	if (expected_bytes > SNAP_MAX_TOTAL_BYTES) {
		log_warning("snapshot \"%s\" refused: its meta declares %" PRIu64 " bytes, beyond the size limit",
		            archive_path, expected_bytes);
		rc = SNAP_BAD_ARCHIVE;
		goto cleanup;
	}
	struct statvfs vfs;
	r.free_bytes = statvfs(pgdata, &vfs) == 0 ? (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize : UINT64_MAX;
	/* What the meta declares is known before a byte is written: a cluster that cannot fit is not tried. */
	r.total = expected_bytes;
	rc = check_room(&r);
	r.total = 0;
	if (rc == 0)
		rc = open_restore(&r);
	if (rc == 0)
		rc = read_entries(&r);
	if (r.to_writers)
		rc = finish_writers(&r, rc);
	if (rc != 0)
		goto cleanup;
	rc = apply_dir_modes(&r) == 0 ? check_restored(&r, expected_sha256, expected_pg_major) : SNAP_FAILED;
cleanup:
	restore_free(&r);
	r.st.archive_bytes = r.in.bytes;
	r.st.seconds = log_now() - t0;
	if (rc != 0 && wipe)
		empty_dir(pgdata);
	if (st_out)
		*st_out = r.st;
	return rc;
}
