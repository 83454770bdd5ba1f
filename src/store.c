/*
 * store — see store.h for the layout, the publish protocol and the meta format.
 *
 * Concurrency model in one place: key locks (<key>.lock) order builders,
 * readers and prune; the meta lock (meta.lock, held for milliseconds) makes
 * every change to the set of visible entries atomic with respect to every
 * other such change; temp files are flocked by their writer so a stale-file
 * sweep in another container cannot take a live one.
 */
#include "store.h"
#include "digest.h"
#include "durable.h"
#include "entry.h"
#include "log.h"
#include "sig.h"
#include "snapshot.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How long meta.lock or a verify's shared lock may be waited for: they are held only briefly. */
#define SHORT_LOCK_TIMEOUT 60

static char *
lock_path(const struct store *st, const char *key)
{
	return xasprintf("%s/%s.lock", st->lock_dir, key);
}

/* The last component of a path of ours: what *at() calls take relative to the directory's fd. */
static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Gives a file of ours the store's mode (and group).  0, or -1 with errno set. */
static int
seal_file(const struct store *st, int fd)
{
	if (st->grouped && fchown(fd, (uid_t)-1, st->group) != 0)
		return -1;
	return fchmod(fd, st->file_mode);
}

/* fsync of one of the store's directories; EINVAL (a file system without it) is fine.  0 or -1. */
static int
sync_dir(int fd, const char *path)
{
	if (fsync(fd) != 0 && errno != EINVAL) {
		log_warning("could not fsync directory \"%s\": %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

void
store_list_free(struct entry_meta *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		entry_meta_free(&v[i]);
	free(v);
}

/* ------------------------------------------------------------- meta files */

/*
 * Reads the meta of `key` into *m.  1: parsed (m->archive set); 0: no meta;
 * -1: bad content, -2: unreadable; why filled for both.
 */
static int
meta_read(const struct store *st, const char *key, struct entry_meta *m, char *why, size_t why_len)
{
	char *path = entry_meta_path(st->dir, key);
	char reason[200];
	size_t len = 0;
	int line, rc = -1;

	memset(m, 0, sizeof(*m));
	char *text = read_small_file(path, SMALL_FILE_MAX, &len);
	if (!text) {
		if (errno == ENOENT) {
			rc = 0;
		} else {
			int e = errno;
			snprintf(why, why_len, "could not read \"%s\": %s", path, read_small_file_error(e));
			/* Planted rather than unreadable: a bad entry, removed and rebuilt. */
			rc = e == ELOOP || e == EINVAL || e == EFBIG ? -1 : -2;
		}
		goto cleanup;
	}
	switch (entry_meta_parse(text, len, ENTRY_F_REQUIRED, m, &line, reason, sizeof(reason))) {
	case ENTRY_PARSE_OK:
		break;
	case ENTRY_PARSE_SYNTAX:
		snprintf(why, why_len, "\"%s\" line %d: %s", path, line, reason);
		goto cleanup;
	case ENTRY_PARSE_BINARY:
		snprintf(why, why_len, "\"%s\": %s", path, reason);
		goto cleanup;
	case ENTRY_PARSE_MISSING:
		snprintf(why, why_len, "\"%s\" lacks required fields", path);
		goto cleanup;
	}
	if (strcmp(m->key, key) != 0) {
		snprintf(why, why_len, "\"%s\" names another key", path);
		goto cleanup;
	}
	m->archive = entry_archive_path(st->dir, key, m->compression);
	rc = 1;
cleanup:
	if (rc != 1)
		entry_meta_free(m);
	free(text);
	free(path);
	return rc;
}

/* ---------------------------------------------------------------- locking */

struct lock_wait {
	const char *path;
	const char *key; /* NULL: not a key lock */
};

static void
lock_report(void *arg, double waited, bool first)
{
	const struct lock_wait *w = arg;
	if (first)
		return;
	if (w->key)
		log_info("waiting for another pgstash building %.12s… (%.0f s)", w->key, waited);
	else
		log_info("waiting for lock \"%s\" (%.0f s)", w->path, waited);
}

/*
 * Opens lock file `path` in .locks/ (created with the store's file mode, so
 * others cannot open, let alone flock it); a lock file of ours with a wider
 * mode (an older pgstash made them 0644) is narrowed.  fd or -1 (warned).
 */
static int
lock_file_open(const struct store *st, const char *path)
{
	int fd = openat(st->lock_fd, base_name(path), O_RDONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
	                st->file_mode);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) != 0) {
		log_warning("could not open lock file \"%s\": %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		log_warning("lock file \"%s\" is not a regular file", path);
		close(fd);
		return -1;
	}
	if (sb.st_uid == geteuid() && ((sb.st_mode & 07777) != st->file_mode || (st->grouped && sb.st_gid != st->group)))
		seal_file(st, fd);
	return fd;
}

static enum store_lock_result
lock_file_wait(const struct store *st, const char *path, bool exclusive, long timeout_s, const char *key,
               int *fd_out)
{
	struct lock_wait w = {.path = path, .key = key};

	*fd_out = -1;
	for (;;) {
		int fd = lock_file_open(st, path);
		if (fd < 0)
			return STORE_LOCK_ERROR;
		switch (durable_flock_wait(fd, exclusive ? LOCK_EX : LOCK_SH, timeout_s, 100, lock_report, &w)) {
		case DURABLE_WAIT_LOCKED:
			break;
		case DURABLE_WAIT_TIMEOUT:
			close(fd);
			return STORE_LOCK_BUSY;
		case DURABLE_WAIT_SIGNAL:
			log_warning("stopped waiting for lock \"%s\": signal %d received", path, (int)sig_received);
			close(fd);
			return STORE_LOCK_ERROR;
		case DURABLE_WAIT_ERROR:
			log_warning("could not lock \"%s\": %s", path, strerror(errno));
			close(fd);
			return STORE_LOCK_ERROR;
		}
		/* Prune may have removed the file between our open and flock: then lock the new one. */
		struct stat a, b;
		if (fstat(fd, &a) == 0 && fstatat(st->lock_fd, base_name(path), &b, AT_SYMLINK_NOFOLLOW) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			*fd_out = fd;
			return STORE_LOCKED;
		}
		close(fd);
	}
}

void
store_unlock(int fd)
{
	if (fd < 0)
		return;
	flock(fd, LOCK_UN);
	close(fd);
}

enum store_lock_result
store_lock(struct store *st, const char *key, bool exclusive, long timeout_s, int *fd_out)
{
	*fd_out = -1;
	if (!st->usable) {
		log_warning("cache is not usable: cannot lock %.12s…", key ? key : "");
		return STORE_LOCK_ERROR;
	}
	if (!entry_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		return STORE_LOCK_ERROR;
	}
	if (st->read_only) {
		/* Creating a lock file is a write; a reader alone cannot hold up a builder anyway. */
		if (exclusive)
			log_error("read-only cache: cannot lock %.12s… for writing", key);
		return exclusive ? STORE_LOCK_ERROR : STORE_LOCKED;
	}
	char *path = lock_path(st, key);
	enum store_lock_result rc = lock_file_wait(st, path, exclusive, timeout_s, key, fd_out);
	free(path);
	return rc;
}

static int
meta_lock(struct store *st, int *fd_out)
{
	char *path = path_join(st->lock_dir, "meta.lock");
	enum store_lock_result rc = lock_file_wait(st, path, true, SHORT_LOCK_TIMEOUT, NULL, fd_out);
	if (rc == STORE_LOCK_BUSY)
		log_warning("lock \"%s\" is held for more than %d s; giving up", path, SHORT_LOCK_TIMEOUT);
	free(path);
	return rc == STORE_LOCKED ? 0 : -1;
}

/* -------------------------------------------------------------- temp files */

/* Removes temp files no live writer holds. */
static void
sweep_tmp(struct store *st)
{
	int dfd = dup(st->tmp_fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	rewinddir(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) {
			/* A link is removed itself (never what it points at); a directory with what it holds. */
			if (errno == ELOOP || errno == EISDIR) {
				char *p = path_join(st->tmp_dir, de->d_name);
				rm_rf_at(dirfd(d), de->d_name, p);
				free(p);
			}
			continue;
		}
		struct stat sb;
		if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			close(fd);
			char *p = path_join(st->tmp_dir, de->d_name);
			rm_rf_at(dirfd(d), de->d_name, p);
			free(p);
			continue;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			log_debug("removing stale temp file \"%s/%s\"", st->tmp_dir, de->d_name);
			unlinkat(dirfd(d), de->d_name, 0);
		} else {
			log_debug("temp file \"%s/%s\" is being written by another pgstash", st->tmp_dir, de->d_name);
		}
		close(fd);
	}
	closedir(d);
}

/* ------------------------------------------------------------- open/close */

/*
 * Whether the directory open as fd may hold our cache: ours (in group mode:
 * or in the group) and writable by nobody else.  One of ours gets the
 * store's mode and group.  0, or -1 with why filled.
 */
static int
store_dir_check(const struct store *st, int fd, char *why, size_t why_len)
{
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		snprintf(why, why_len, "%s", strerror(errno));
		return -1;
	}
	bool ours = sb.st_uid == geteuid();
	if (ours && ((sb.st_mode & 07777) != st->dir_mode || (st->grouped && sb.st_gid != st->group))) {
		if ((st->grouped && fchown(fd, (uid_t)-1, st->group) != 0) || fchmod(fd, st->dir_mode) != 0) {
			snprintf(why, why_len, "could not set its mode: %s", strerror(errno));
			return -1;
		}
		sb.st_mode = (sb.st_mode & ~(mode_t)07777) | st->dir_mode;
	}
	if (!ours && !(st->grouped && sb.st_gid == st->group)) {
		snprintf(why, why_len, "it belongs to uid %ld, not to uid %ld", (long)sb.st_uid, (long)geteuid());
		return -1;
	}
	if ((sb.st_mode & S_IWOTH) || (!st->grouped && (sb.st_mode & S_IWGRP))) {
		snprintf(why, why_len, "it is writable by %s (mode %04o)", (sb.st_mode & S_IWOTH) ? "others" : "its group",
		         (unsigned)(sb.st_mode & 07777));
		return -1;
	}
	return 0;
}

/* Creates (as needed) and opens `name` under parent, O_DIRECTORY|O_NOFOLLOW, checked.  fd, or -1 (warned). */
static int
store_dir_open(const struct store *st, int parent, const char *name, const char *path)
{
	char why[200];
	if (mkdirat(parent, name, st->dir_mode) != 0 && errno != EEXIST) {
		log_warning("cache directory \"%s\" is not usable: %s: going on without caching", path, strerror(errno));
		return -1;
	}
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		log_warning("cache directory \"%s\" is not usable: %s: going on without caching", path,
		            errno == ELOOP || errno == ENOTDIR ? "it is not a directory (a symbolic link?)" : strerror(errno));
		return -1;
	}
	if (store_dir_check(st, fd, why, sizeof(why)) != 0) {
		log_warning("cache directory \"%s\" is not usable: %s: going on without caching", path, why);
		close(fd);
		return -1;
	}
	return fd;
}

int
store_open(struct store *st, const char *cache_dir, gid_t group)
{
	memset(st, 0, sizeof(*st));
	st->dir_fd = st->tmp_fd = st->lock_fd = -1;
	if (!cache_dir || !*cache_dir) {
		log_warning("no cache directory configured: going on without caching");
		return -1;
	}
	st->grouped = group != (gid_t)-1;
	st->group = group;
	st->dir_mode = st->grouped ? 0750 : 0700;
	st->file_mode = st->grouped ? 0640 : 0600;
	st->dir = path_join(cache_dir, STORE_DIR_NAME);
	st->tmp_dir = path_join(st->dir, ".tmp");
	st->lock_dir = path_join(st->dir, ".locks");
	/* cache_dir itself is the configured path (it may be a link a trusted admin made); below it nothing is followed. */
	if (mkdir_p_quiet(cache_dir, st->dir_mode, NULL) != 0) {
		log_warning("cache directory \"%s\" is not usable: %s: going on without caching", cache_dir,
		            strerror(errno));
		return -1;
	}
	int top = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top < 0) {
		log_warning("cache directory \"%s\" is not usable: %s: going on without caching", cache_dir,
		            strerror(errno));
		return -1;
	}
	st->dir_fd = store_dir_open(st, top, STORE_DIR_NAME, st->dir);
	close(top);
	if (st->dir_fd < 0)
		return -1;
	st->tmp_fd = store_dir_open(st, st->dir_fd, ".tmp", st->tmp_dir);
	if (st->tmp_fd < 0)
		return -1;
	st->lock_fd = store_dir_open(st, st->dir_fd, ".locks", st->lock_dir);
	if (st->lock_fd < 0)
		return -1;
	if (faccessat(st->dir_fd, ".", W_OK | X_OK, AT_EACCESS) != 0) {
		log_warning("cache directory \"%s\" is not usable: %s: going on without caching", st->dir, strerror(errno));
		return -1;
	}
	sweep_tmp(st);
	st->usable = true;
	return 0;
}

int
store_open_read_only(struct store *st, const char *cache_dir)
{
	memset(st, 0, sizeof(*st));
	st->dir_fd = st->tmp_fd = st->lock_fd = -1;
	st->read_only = true;
	if (!cache_dir || !*cache_dir)
		return -1;
	st->dir = path_join(cache_dir, STORE_DIR_NAME);
	st->tmp_dir = path_join(st->dir, ".tmp");
	st->lock_dir = path_join(st->dir, ".locks");
	/*
	 * Missing is an empty cache (a fresh runner may still use the remote);
	 * unreadable is not usable.  Below cache_dir nothing is followed, as in
	 * store_open; the owner is not checked: a read-only cache is someone
	 * else's by design, and what it holds is checked entry by entry.
	 */
	int top = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top >= 0) {
		st->dir_fd = openat(top, STORE_DIR_NAME, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(top);
	}
	if (st->dir_fd < 0 && errno != ENOENT) {
		log_warning("read-only cache \"%s\" is not usable: %s: going on without it", st->dir,
		            errno == ELOOP || errno == ENOTDIR ? "it is not a directory (a symbolic link?)" : strerror(errno));
		return -1;
	}
	st->usable = true;
	return 0;
}

void
store_close(struct store *st)
{
	if (!st)
		return;
	const int fds[] = {st->dir_fd, st->tmp_fd, st->lock_fd};
	for (size_t i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(st->dir);
	free(st->tmp_dir);
	free(st->lock_dir);
	memset(st, 0, sizeof(*st));
	st->dir_fd = st->tmp_fd = st->lock_fd = -1;
}

/* ----------------------------------------------------------------- entries */

/* Removes meta then archives of `key`; the caller holds meta.lock.  0 or -1 (logged). */
static int
remove_entry_files(struct store *st, const char *key)
{
	int rc = 0;
	char *m = entry_meta_path(st->dir, key);
	if (unlinkat(st->dir_fd, base_name(m), 0) != 0 && errno != ENOENT) {
		log_warning("could not remove \"%s\": %s", m, strerror(errno));
		rc = -1;
	}
	free(m);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < 3; i++) {
		char *a = entry_archive_path(st->dir, key, entry_all_compressions[i]);
		if (unlinkat(st->dir_fd, base_name(a), 0) != 0 && errno != ENOENT) {
			log_warning("could not remove \"%s\": %s", a, strerror(errno));
			rc = -1;
		}
		free(a);
	}
	sync_dir(st->dir_fd, st->dir);
	return rc;
}

int
store_remove(struct store *st, const char *key)
{
	if (!st->usable)
		return -1;
	if (st->read_only) {
		log_info("read-only cache: entry %.12s… left in place", key);
		return -1;
	}
	if (!entry_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		return -1;
	}
	int lfd;
	if (meta_lock(st, &lfd) != 0)
		return -1;
	int rc = remove_entry_files(st, key);
	store_unlock(lfd);
	return rc;
}

/* 0 when archive m->archive exists with the size meta says, else -1 and why. */
static int
archive_check(const struct store *st, const struct entry_meta *m, char *why, size_t why_len)
{
	struct stat sb;
	if (fstatat(st->dir_fd, base_name(m->archive), &sb, AT_SYMLINK_NOFOLLOW) != 0) {
		snprintf(why, why_len, "archive \"%s\": %s", m->archive, strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != m->archive_bytes) {
		snprintf(why, why_len, "archive \"%s\" is %lld bytes, its meta says %" PRIu64, m->archive,
		         (long long)sb.st_size, m->archive_bytes);
		return -1;
	}
	return 0;
}

int
store_lookup(struct store *st, const char *key, struct entry_meta *out)
{
	char why[512];

	memset(out, 0, sizeof(*out));
	if (!st->usable)
		return 0;
	if (!entry_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		return -1;
	}
	int r = meta_read(st, key, out, why, sizeof(why));
	if (r == 0)
		return 0;
	if (r == -2) {
		log_error("%s", why);
		return -1;
	}
	if (r == 1 && archive_check(st, out, why, sizeof(why)) == 0)
		return 1;
	log_warning("removing bad cache entry %.12s…: %s", key, why);
	entry_meta_free(out);
	store_remove(st, key);
	return 0;
}

/* Writes meta text to a flocked temp file, fsynced; returns its fd and path, or -1. */
static int
meta_tmp_write(struct store *st, const struct entry_meta *m, char **path_out)
{
	char *text = entry_meta_encode(m);
	int fd = durable_tmp_create_at(st->tmp_fd, st->tmp_dir, m->key, ".meta", 0600, path_out);
	if (fd < 0) {
		free(text);
		return -1;
	}
	int rc = 0;
	if (durable_write_all(fd, text, strlen(text)) != 0) {
		log_warning("could not write \"%s\": %s", *path_out, strerror(errno));
		rc = -1;
	}
	if (rc == 0 && seal_file(st, fd) != 0) {
		log_warning("could not set the mode of \"%s\": %s", *path_out, strerror(errno));
		rc = -1;
	}
	if (rc == 0 && fsync(fd) != 0) {
		log_warning("could not fsync \"%s\": %s", *path_out, strerror(errno));
		rc = -1;
	}
	free(text);
	if (rc != 0) {
		unlinkat(st->tmp_fd, base_name(*path_out), 0);
		free(*path_out);
		*path_out = NULL;
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * An entry on its way in: its temp files (flocked by afd/mfd), the meta lock,
 * and how far the renames got, so that one cleanup undoes whatever is left.
 */
struct placing {
	char *arch_tmp, *meta_tmp;     /* owned */
	char *final_arch, *final_meta; /* owned; set by place_entry */
	int afd, mfd, lfd;
	bool arch_placed, meta_placed;
};

/*
 * Under the meta lock (taken here): when a complete entry of `key` exists
 * already, fills *existing and returns 1 (ours is dropped by placing_end);
 * else moves the temp files into place, the way every entry is published —
 * an archive of the key in another compression removed (it would be an
 * orphan), the archive renamed and the directory fsynced, then the meta
 * renamed and fsynced (a reader never sees a meta without its archive).
 * 0, or -1 (warning).
 */
static int
place_entry(struct store *st, struct placing *pl, const char *key, enum cfg_compression comp,
            struct entry_meta *existing)
{
	char why[512];
	if (meta_lock(st, &pl->lfd) != 0)
		return -1;
	if (meta_read(st, key, existing, why, sizeof(why)) == 1 && archive_check(st, existing, why, sizeof(why)) == 0)
		return 1;
	entry_meta_free(existing);
	for (size_t i = 0; i < 3; i++) {
		if (entry_all_compressions[i] == comp)
			continue;
		char *other = entry_archive_path(st->dir, key, entry_all_compressions[i]);
		unlinkat(st->dir_fd, base_name(other), 0);
		free(other);
	}
	pl->final_arch = entry_archive_path(st->dir, key, comp);
	pl->final_meta = entry_meta_path(st->dir, key);
	if (renameat(st->tmp_fd, base_name(pl->arch_tmp), st->dir_fd, base_name(pl->final_arch)) != 0) {
		log_warning("could not rename \"%s\" to \"%s\": %s", pl->arch_tmp, pl->final_arch, strerror(errno));
		return -1;
	}
	pl->arch_placed = true;
	if (sync_dir(st->dir_fd, st->dir) != 0)
		return -1;
	if (renameat(st->tmp_fd, base_name(pl->meta_tmp), st->dir_fd, base_name(pl->final_meta)) != 0) {
		log_warning("could not rename \"%s\" to \"%s\": %s", pl->meta_tmp, pl->final_meta, strerror(errno));
		return -1;
	}
	pl->meta_placed = true;
	return sync_dir(st->dir_fd, st->dir);
}

/* Undoes what a failed placing left (ok false), releases the lock and the temp files. */
static void
placing_end(const struct store *st, struct placing *pl, bool ok)
{
	if (!ok && pl->meta_placed)
		unlinkat(st->dir_fd, base_name(pl->final_meta), 0);
	if (!ok && pl->arch_placed)
		unlinkat(st->dir_fd, base_name(pl->final_arch), 0);
	store_unlock(pl->lfd);
	if (pl->afd >= 0)
		close(pl->afd);
	if (pl->mfd >= 0)
		close(pl->mfd);
	if (pl->arch_tmp && !pl->arch_placed)
		unlinkat(st->tmp_fd, base_name(pl->arch_tmp), 0);
	if (pl->meta_tmp && !pl->meta_placed)
		unlinkat(st->tmp_fd, base_name(pl->meta_tmp), 0);
	free(pl->arch_tmp);
	free(pl->meta_tmp);
	free(pl->final_arch);
	free(pl->final_meta);
}

int
store_publish(struct store *st, const char *pgdata, struct entry_meta *meta, enum cfg_compression comp,
              int level, const struct snap_late *late, struct store_draft *draft, struct snap_stats *sst)
{
	struct snap_stats local;
	struct placing pl = {.afd = -1, .mfd = -1, .lfd = -1};
	int rc = -1;
	bool quiet = false;

	if (!sst)
		sst = &local;
	bool drafted = draft && draft->fd >= 0;
	if (drafted) {
		/* Ours from here: placing_end removes the temp file on failure. */
		pl.afd = draft->fd;
		pl.arch_tmp = draft->path;
		draft->fd = -1;
		draft->path = NULL;
	}
	struct snap_early *early = drafted ? draft->early : NULL;
	if (draft)
		draft->early = NULL;
	if (!st->usable || st->read_only) {
		log_warning("cache is %s: snapshot not stored", st->read_only ? "read-only" : "not usable");
		snap_early_drop(early);
		quiet = true;
		goto cleanup;
	}
	if (!entry_key_valid(meta->key)) {
		log_error("invalid cache key \"%s\"", meta->key);
		snap_early_drop(early);
		quiet = true;
		goto cleanup;
	}
	if (!drafted)
		pl.afd = durable_tmp_create_at(st->tmp_fd, st->tmp_dir, meta->key, entry_suffix(comp), 0600, &pl.arch_tmp);
	if (pl.afd < 0)
		goto cleanup;
	int written = early ? snap_write_after(early, late, sst)
	                    : snap_write(pgdata, pl.afd, pl.arch_tmp, comp, level, late, sst);
	if (written != 0) {
		/* late->ready refused: the start fails, there is no "going on" to announce. */
		quiet = written == SNAP_NOT_READY;
		goto cleanup;
	}
	/* The entry is what must survive a crash: its bytes are on disk before any rename. */
	if (seal_file(st, pl.afd) != 0 || fsync(pl.afd) != 0) {
		log_warning("could not fsync \"%s\": %s", pl.arch_tmp, strerror(errno));
		goto cleanup;
	}
	meta->created = meta->last_used = (int64_t)time(NULL);
	meta->archive_bytes = sst->archive_bytes;
	meta->pgdata_bytes = sst->pgdata_bytes;
	memcpy(meta->archive_sha256, sst->sha256, sizeof(meta->archive_sha256));
	meta->compression = comp;
	if (sign_entry(st->sign, meta) != 0)
		goto cleanup;
	pl.mfd = meta_tmp_write(st, meta, &pl.meta_tmp);
	if (pl.mfd < 0)
		goto cleanup;
	struct entry_meta existing;
	int placed = place_entry(st, &pl, meta->key, comp, &existing);
	if (placed == 1) {
		/* Ours is dropped: the caller must not call it cached. */
		log_info("not cached: an entry for %.12s… was stored meanwhile by another pgstash; keeping that one",
		         meta->key);
		entry_meta_free(meta);
		*meta = existing;
	} else if (placed == 0) {
		free(meta->archive);
		meta->archive = xstrdup(pl.final_arch);
	}
	rc = placed >= 0 ? placed : -1;
cleanup:
	placing_end(st, &pl, rc >= 0);
	if (rc < 0 && !quiet)
		log_warning("could not store cache entry %.12s…: going on without caching", meta->key);
	return rc;
}

int
store_draft_begin(struct store *st, const char *key, const char *pgdata, enum cfg_compression comp, int level,
                  const struct strlist *oids, struct timespec since, struct store_draft *d)
{
	d->fd = -1;
	d->path = NULL;
	d->early = NULL;
	if (!st->usable || st->read_only || !entry_key_valid(key))
		return -1;
	d->fd = durable_tmp_create_at(st->tmp_fd, st->tmp_dir, key, entry_suffix(comp), 0600, &d->path);
	if (d->fd < 0)
		return -1;
	d->early = snap_early_start(pgdata, d->fd, d->path, comp, level, oids, since);
	return 0;
}

void
store_draft_drop(struct store *st, struct store_draft *d)
{
	snap_early_drop(d->early);
	d->early = NULL;
	if (d->fd >= 0) {
		unlinkat(st->tmp_fd, base_name(d->path), 0);
		close(d->fd);
		d->fd = -1;
	}
	free(d->path);
	d->path = NULL;
}

int
store_touch(struct store *st, const char *key)
{
	struct entry_meta m;
	char why[512];
	char *tmp = NULL, *final = NULL;
	int lfd = -1, fd = -1, rc = -1;

	if (!st->usable || st->read_only || !entry_key_valid(key))
		return -1;
	if (meta_lock(st, &lfd) != 0)
		return -1;
	int r = meta_read(st, key, &m, why, sizeof(why));
	if (r != 1) {
		if (r < 0)
			log_warning("could not update cache entry %.12s…: %s", key, why);
		goto cleanup;
	}
	m.last_used = (int64_t)time(NULL);
	fd = meta_tmp_write(st, &m, &tmp);
	if (fd < 0)
		goto cleanup;
	final = entry_meta_path(st->dir, key);
	if (renameat(st->tmp_fd, base_name(tmp), st->dir_fd, base_name(final)) != 0) {
		log_warning("could not rename \"%s\" to \"%s\": %s", tmp, final, strerror(errno));
		unlinkat(st->tmp_fd, base_name(tmp), 0);
		goto cleanup;
	}
	rc = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	store_unlock(lfd);
	entry_meta_free(&m);
	free(tmp);
	free(final);
	return rc;
}

int
store_import(struct store *st, const char *key, const char *archive_tmp, const char *meta_tmp)
{
	struct entry_meta m = {0};
	struct placing pl = {.arch_tmp = xstrdup(archive_tmp), .afd = -1, .mfd = -1, .lfd = -1};
	char *text = NULL;
	int rc = -1;
	struct stat sb;
	char why[512];

	if (!st->usable || st->read_only) {
		log_warning("cache is %s: downloaded entry not stored", st->read_only ? "read-only" : "not usable");
		goto cleanup;
	}
	if (!entry_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		goto cleanup;
	}
	size_t len = 0;
	text = read_small_file(meta_tmp, SMALL_FILE_MAX, &len);
	if (!text) {
		log_warning("could not read \"%s\": %s", meta_tmp, read_small_file_error(errno));
		goto cleanup;
	}
	int line;
	enum entry_parse pr = entry_meta_parse(text, len, ENTRY_F_REQUIRED, &m, &line, why, sizeof(why));
	if (pr != ENTRY_PARSE_OK || strcmp(m.key, key) != 0) {
		log_warning("downloaded meta of %.12s is not valid: %s", key,
		            pr == ENTRY_PARSE_SYNTAX || pr == ENTRY_PARSE_BINARY ? why
		                                                                 : "it lacks fields or names another key");
		goto cleanup;
	}
	pl.afd = openat(st->tmp_fd, base_name(archive_tmp), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (pl.afd < 0 || fstat(pl.afd, &sb) != 0) {
		log_warning("could not open \"%s\": %s", archive_tmp, strerror(errno));
		goto cleanup;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != m.archive_bytes) {
		log_warning("downloaded archive of %.12s is %lld bytes, its meta says %" PRIu64, key,
		            (long long)sb.st_size, m.archive_bytes);
		goto cleanup;
	}
	/* As store_publish: the bytes are on disk before any rename. */
	if (seal_file(st, pl.afd) != 0 || fsync(pl.afd) != 0) {
		log_warning("could not fsync \"%s\": %s", archive_tmp, strerror(errno));
		goto cleanup;
	}
	/* A download is a use: local LRU pruning must not take it first. */
	m.last_used = (int64_t)time(NULL);
	pl.mfd = meta_tmp_write(st, &m, &pl.meta_tmp);
	if (pl.mfd < 0)
		goto cleanup;
	struct entry_meta existing;
	int placed = place_entry(st, &pl, key, m.compression, &existing);
	if (placed == 1) {
		log_info("downloaded entry %.12s not stored: another pgstash stored one meanwhile; keeping that one", key);
		entry_meta_free(&existing);
	}
	rc = placed >= 0 ? 0 : -1;
cleanup:
	placing_end(st, &pl, rc == 0);
	unlinkat(st->tmp_fd, base_name(meta_tmp), 0);
	if (rc != 0)
		log_warning("could not store downloaded entry %.12s: going on without it", key);
	entry_meta_free(&m);
	free(text);
	return rc;
}

bool
store_acceptable(const struct store *st, const struct entry_meta *m, char *why, size_t why_len)
{
	char key[65];
	const char *manifest = m->manifest ? m->manifest : "";
	digest_hex(manifest, strlen(manifest), key);
	if (strcmp(key, m->key) != 0) {
		snprintf(why, why_len, "its key is not the SHA-256 of its manifest (%.12s…)", key);
		return false;
	}
	if (!sign_enforced(st->sign))
		return true;
	double t0 = log_now();
	enum sign_check c = sign_verify(st->sign, m);
	switch (c) {
	case SIGN_TRUSTED:
		/* Its cost is on every hit; bench/ reads this line (issue 14: at most 5 ms). */
		log_debug("signature of %.12s by %.16s verified in %.3f ms", m->key, m->signer,
		          (log_now() - t0) * 1000);
		return true;
	case SIGN_UNSIGNED:
		snprintf(why, why_len, "not trusted: unsigned");
		return false;
	case SIGN_UNKNOWN_SIGNER:
	case SIGN_BAD_SIGNATURE:
		snprintf(why, why_len, "not trusted: %s (signer %.16s)", sign_check_name(c), m->signer);
		return false;
	}
	return false;
}

int
store_restore(struct store *st, struct entry_meta *meta, const char *pgdata, uid_t uid, gid_t gid,
              int pg_major, const char *conf_sample, struct snap_stats *sst)
{
	char why[256];
	if (!st->usable)
		return -1;
	if (!store_acceptable(st, meta, why, sizeof(why))) {
		/* Treated as absent: the build that follows replaces it. */
		log_warning("cache entry %.12s… is refused, %s: %s it and building instead", meta->key, why,
		            st->read_only ? "ignoring" : "removing");
		if (!st->read_only)
			store_remove(st, meta->key);
		return -1;
	}
	if (!meta->archive)
		meta->archive = entry_archive_path(st->dir, meta->key, meta->compression);
	int r = snap_restore(meta->archive, meta->archive_sha256, pgdata, uid, gid, pg_major, conf_sample,
	                     meta->pgdata_bytes, sst);
	if (r == SNAP_BAD_ARCHIVE) {
		log_warning("removing bad cache entry %.12s…", meta->key);
		store_remove(st, meta->key);
		return -1;
	}
	if (r != 0)
		return -1;
	if (store_touch(st, meta->key) == 0)
		meta->last_used = (int64_t)time(NULL);
	return 0;
}

/* ------------------------------------------------------------------ listing */

/* A listing of the store directory through its fd (a dup: closedir closes only that), from the start. */
static DIR *
store_dir_list(const struct store *st)
{
	int fd = dup(st->dir_fd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d && fd >= 0)
		close(fd);
	if (d)
		rewinddir(d);
	return d;
}

static int
cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

int
store_keys(struct store *st, struct strlist *keys)
{
	DIR *d = store_dir_list(st);
	if (!d && st->read_only && st->dir_fd < 0)
		return 0; /* a read-only cache that does not exist is empty */
	if (!d) {
		log_error("could not open directory \"%s\": %s", st->dir, strerror(errno));
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char key[65];
		if (entry_meta_name(de->d_name, key))
			sl_add(keys, key);
	}
	closedir(d);
	if (keys->n > 1)
		qsort(keys->v, keys->n, sizeof(char *), cmp_str);
	return 0;
}

int
store_list(struct store *st, struct entry_meta **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!st->usable)
		return 0;
	struct strlist keys = {0};
	if (store_keys(st, &keys) != 0)
		return -1;
	struct entry_meta *v = xcalloc(keys.n ? keys.n : 1, sizeof(*v));
	size_t k = 0;
	char why[512];
	for (size_t i = 0; i < keys.n; i++) {
		int r = meta_read(st, keys.v[i], &v[k], why, sizeof(why));
		if (r == 0)
			continue; /* removed meanwhile */
		if (r < 0 || archive_check(st, &v[k], why, sizeof(why)) != 0) {
			log_warning("ignoring bad cache entry %.12s…: %s", keys.v[i], why);
			entry_meta_free(&v[k]);
			continue;
		}
		k++;
	}
	sl_free(&keys);
	*out = v;
	*n = k;
	return 0;
}

int
store_cmp_recent_first(const void *x, const void *y)
{
	const struct entry_meta *a = x, *b = y;
	if (a->last_used != b->last_used)
		return a->last_used > b->last_used ? -1 : 1;
	return strcmp(a->key, b->key);
}

static int
cmp_oldest_first(const void *x, const void *y)
{
	return -store_cmp_recent_first(x, y);
}

int
store_check(struct store *st, const char *key, char *why, size_t why_len)
{
	struct entry_meta m = {0};
	char digest[65];
	uint64_t bytes;
	int lfd = -1;
	int rc = -1;

	enum store_lock_result lr = store_lock(st, key, false, SHORT_LOCK_TIMEOUT, &lfd);
	if (lr != STORE_LOCKED) {
		snprintf(why, why_len, "%s",
		         lr == STORE_LOCK_BUSY ? "locked by another pgstash for too long" : "could not lock");
		goto cleanup;
	}
	int r = meta_read(st, key, &m, why, why_len);
	if (r == 0) {
		snprintf(why, why_len, "no such entry");
		goto cleanup;
	}
	if (r < 0)
		goto cleanup;
	if (digest_file(m.archive, NULL, 0, digest, &bytes) != 0) {
		snprintf(why, why_len, "archive \"%s\": %s", m.archive, strerror(errno));
		goto cleanup;
	}
	if (bytes != m.archive_bytes) {
		snprintf(why, why_len, "archive is %" PRIu64 " bytes, its meta says %" PRIu64, bytes, m.archive_bytes);
		goto cleanup;
	}
	if (strcmp(digest, m.archive_sha256) != 0) {
		snprintf(why, why_len, "archive SHA-256 is %s, its meta says %s", digest, m.archive_sha256);
		goto cleanup;
	}
	if (!store_acceptable(st, &m, why, why_len))
		goto cleanup;
	rc = 0;
cleanup:
	store_unlock(lfd);
	entry_meta_free(&m);
	return rc;
}

static void
prune_report(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
prune_report(FILE *out, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (out) {
		fprintf(out, "%s\n", line);
		fflush(out);
	} else {
		log_info("%s", line);
	}
}

/* Removes metas that do not parse or lack their archive, and archives no meta names.  Under meta.lock. */
static void
sweep_orphans(struct store *st, FILE *out)
{
	int lfd;
	if (meta_lock(st, &lfd) != 0)
		return;
	struct strlist keys = {0};
	if (store_keys(st, &keys) == 0) {
		char why[512];
		for (size_t i = 0; i < keys.n; i++) {
			struct entry_meta m;
			int r = meta_read(st, keys.v[i], &m, why, sizeof(why));
			if (r == 1 && archive_check(st, &m, why, sizeof(why)) == 0) {
				entry_meta_free(&m);
				continue;
			}
			entry_meta_free(&m);
			if (r == 0 || r == -2)
				continue;
			if (remove_entry_files(st, keys.v[i]) == 0)
				prune_report(out, "removed bad entry %s: %s", keys.v[i], why);
		}
	}
	DIR *d = store_dir_list(st);
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL) {
		char key[65];
		enum cfg_compression comp;
		if (!entry_archive_name(de->d_name, key, &comp))
			continue;
		struct entry_meta m;
		char why[512];
		int r = meta_read(st, key, &m, why, sizeof(why));
		bool named = r == 1 && m.compression == comp;
		entry_meta_free(&m);
		if (named || r == -2)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			prune_report(out, "removed orphan archive %s", de->d_name);
	}
	if (d)
		closedir(d);
	sl_free(&keys);
	store_unlock(lfd);
}

int
store_prune(struct store *st, uint64_t max_bytes, long max_entries, bool dry_run, const char *keep_key,
            FILE *out)
{
	struct entry_meta *v;
	size_t n;
	int removed = 0;

	if (!st->usable) {
		log_error("cache is not usable");
		return -1;
	}
	if (st->read_only && !dry_run) {
		log_error("cache is read-only (cache_mode): nothing pruned");
		return -1;
	}
	if (!dry_run)
		sweep_orphans(st, out);
	if (store_list(st, &v, &n) != 0)
		return -1;
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_oldest_first);
	uint64_t total = 0;
	size_t left = n;
	for (size_t i = 0; i < n; i++)
		total += v[i].archive_bytes;
#define OVER() ((max_entries > 0 && left > (size_t)max_entries) || (max_bytes > 0 && total > max_bytes))
	for (size_t i = 0; i < n && OVER(); i++) {
		const struct entry_meta *m = &v[i];
		char b[32], u[32];
		if (keep_key && strcmp(m->key, keep_key) == 0)
			continue;
		int lfd;
		enum store_lock_result lr = store_lock(st, m->key, true, 0, &lfd);
		if (lr == STORE_LOCK_BUSY) {
			prune_report(out, "skipped %s: in use", m->key);
			continue;
		}
		if (lr != STORE_LOCKED)
			continue;
		if (dry_run) {
			prune_report(out, "would remove %s (%s, last used %s)", m->key, log_bytes(b, m->archive_bytes),
			             iso_time(u, m->last_used));
		} else {
			if (store_remove(st, m->key) != 0) {
				store_unlock(lfd);
				continue;
			}
			/* Safe under the exclusive lock: lockers re-check the file after flock. */
			char *lp = lock_path(st, m->key);
			unlinkat(st->lock_fd, base_name(lp), 0);
			free(lp);
			prune_report(out, "removed %s (%s, last used %s)", m->key, log_bytes(b, m->archive_bytes),
			             iso_time(u, m->last_used));
		}
		store_unlock(lfd);
		left--;
		total -= m->archive_bytes;
		removed++;
	}
	if (OVER())
		log_info("cache stays above its limits: the remaining entries are in use or kept");
#undef OVER
	store_list_free(v, n);
	return removed;
}

char *
store_meta_file(const struct store *st, const char *key)
{
	return entry_meta_path(st->dir, key);
}

const char *
store_download_dir(const struct store *st)
{
	return st->tmp_dir;
}
