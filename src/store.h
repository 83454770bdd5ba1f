/*
 * store — the local cache volume (README "Cache layout"; the entry format is
 * entry.h's):
 *
 *   <cache_dir>/pgstash-v1/<key>.tar.zst   the snapshot (.tar.gz, .tar)
 *   <cache_dir>/pgstash-v1/<key>.meta      its meta (entry.h)
 *   <cache_dir>/pgstash-v1/.tmp/           in-progress writes
 *   <cache_dir>/pgstash-v1/.locks/         <key>.lock flock files; meta.lock
 *
 * An entry exists when its meta parses and the archive it names is present.
 * Publishing writes archive and meta under .tmp/, fsyncs both, then renames
 * the archive into place and the meta after it (fsyncing the directory after
 * each): a reader never sees a meta without its complete archive, and ignores
 * archives without meta.  Every change of a meta (publish, touch, remove)
 * happens under the short-held exclusive .locks/meta.lock, so two publishers
 * of one key cannot pair one's archive with the other's meta; the first
 * complete entry wins.
 *
 * Temp files are named .tmp/<key>-<random><suffix> and their writer holds an
 * exclusive flock on them until they are renamed or removed
 * (durable_tmp_create); store_open removes only temp files it can lock, so a
 * live writer in another container sharing the volume keeps its file.
 *
 * Key locks: builders hold <key>.lock exclusive, restorers shared, prune tries
 * exclusive without waiting and skips what is busy.  Lock files are removed
 * only by prune, under the exclusive lock; a locker re-checks after locking
 * that the file it holds is still the one at the path.
 *
 * Not for: deciding when to build, restore or prune (the front end does);
 * the archive format (snapshot.h); the meta format (entry.h); printing
 * listings (cli.h).
 */
#ifndef PGSTASH_STORE_H
#define PGSTASH_STORE_H

#include "entry.h"
#include "sign.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

struct snap_early;
struct snap_late;
struct store_draft;
struct snap_stats;
struct strlist;

struct store {
	char *dir;      /* <cache_dir>/pgstash-v1; owned */
	char *tmp_dir;  /* <dir>/.tmp; owned */
	char *lock_dir; /* <dir>/.locks; owned */
	/* The three directories, opened O_DIRECTORY|O_NOFOLLOW: every change in them is made relative to these. */
	int dir_fd, tmp_fd, lock_fd;
	bool grouped;     /* cache_group set: shared with the members of `group` */
	gid_t group;
	mode_t dir_mode;  /* 0700, or 0750 when grouped */
	mode_t file_mode; /* 0600, or 0640 when grouped */
	bool usable;    /* false: no caching at all (dirs missing and not creatable, read-only...) */
	const struct sign_keys *sign; /* set by the caller after store_open; NULL: nothing signed or required */
	bool read_only; /* store_open_read_only: nothing is written, locked, touched or removed */
};

/*
 * Opens (creating as needed) the store under `cache_dir` and removes stale
 * temp files.  `group` (cfg->cache_gid, or (gid_t)-1 for none) is the group
 * the cache is shared with: its directories are then 0750 and its files 0640
 * in that group; otherwise 0700 and 0600.  Each store directory is opened
 * O_DIRECTORY|O_NOFOLLOW and must be owned by the effective user (in group
 * mode: or be in `group`) and writable by nobody else (in group mode: not by
 * others); one of ours with wider modes is narrowed.  Returns 0 with
 * st->usable; when the cache cannot be used (missing and not creatable, not a
 * directory, a symbolic link, another's, read-only...) logs a warning and
 * returns -1 with st->usable false: callers go on without caching.  Either
 * way st must be closed with store_close.
 */
int store_open(struct store *st, const char *cache_dir, gid_t group);
void store_close(struct store *st);
/*
 * As store_open for cache_mode = read-only: creates nothing, sweeps nothing,
 * needs only read access (a read-only mount works).  Then store_lock takes no
 * lock (shared: STORE_LOCKED with *fd_out -1; exclusive: STORE_LOCK_ERROR),
 * and publish, import, touch, remove and prune change nothing (publish and
 * import return -1).
 */
int store_open_read_only(struct store *st, const char *cache_dir);

/*
 * Finds entry `key`.  1: found, *out filled (free with entry_meta_free);
 * 0: no entry (also: store unusable; a bad meta is warned about and its entry
 * removed); -1: error (logged).  The caller holds the key lock (shared or
 * exclusive) from lookup through restore.
 */
int store_lookup(struct store *st, const char *key, struct entry_meta *out);

/*
 * Locks `key`: exclusive for building, shared for reading.  Waits up to
 * timeout_s seconds (0: one try, < 0: no limit), polling every 100 ms,
 * logging progress every 10 s, and giving up when a terminating signal
 * arrives.  STORE_LOCKED: *fd_out holds the lock (release with
 * store_unlock); STORE_LOCK_BUSY: another holds it past timeout_s (at once
 * when 0); STORE_LOCK_ERROR: error or signal (logged).  A process must not
 * take the same key's lock twice: flock locks of separate opens conflict even
 * within one process.
 */
enum store_lock_result {
	STORE_LOCK_ERROR = -1,
	STORE_LOCKED = 0,
	STORE_LOCK_BUSY = 1,
};
enum store_lock_result store_lock(struct store *st, const char *key, bool exclusive, long timeout_s, int *fd_out);
/* Releases and closes a lock from store_lock; fd < 0 is fine. */
void store_unlock(int fd);

/*
 * Snapshots `pgdata` (cleanly shut down) into a new entry meta->key.  The
 * caller fills key, parent, layer, manifest, pg_version and build_seconds;
 * publish fills the rest (archive_sha256/bytes, pgdata_bytes, created,
 * last_used, compression, archive, and the signature when st->sign has a
 * signing key).  The caller should hold the key lock exclusive.  0 stored;
 * 1 not stored: a complete entry for the key appeared meanwhile (a builder
 * that gave up waiting for the lock), it is kept, ours dropped, and *meta
 * refilled from it (logged); -1 (logged as a warning, temp files removed:
 * go on without caching; not logged when late->ready refused, which says
 * why itself).  `late` as snap_write's.  `draft` (NULL or fd -1: none) is
 * finished instead of a new temp file, and emptied.  *sst optional.
 */
int store_publish(struct store *st, const char *pgdata, struct entry_meta *meta, enum cfg_compression comp,
                  int level, const struct snap_late *late, struct store_draft *draft, struct snap_stats *sst);

/*
 * An entry's archive begun while its build still runs (snap_early_start
 * into the store's temp file, the same one store_publish would create).
 * store_publish with the draft finishes it (snap_write_after) and takes
 * it over; store_draft_drop stops and removes one that is not published.
 */
struct store_draft {
	int fd;     /* -1: none */
	char *path; /* the temp file */
	struct snap_early *early;
};
/* 0, or -1 (logged as a warning; d->fd stays -1: the snapshot is written after the build as usual). */
int store_draft_begin(struct store *st, const char *key, const char *pgdata, enum cfg_compression comp, int level,
                      const struct strlist *oids, struct timespec since, struct store_draft *d);
void store_draft_drop(struct store *st, struct store_draft *d);

/*
 * Whether entry `m` may be used at all, before anything of it is extracted:
 * its key is the SHA-256 of its manifest (the key is not a free label), and
 * when st->sign requires signatures it is signed by a trusted key.  true, or
 * false with why filled (naming the signer).
 */
bool store_acceptable(const struct store *st, const struct entry_meta *m, char *why, size_t why_len);

/*
 * Restores entry `meta` into the empty or absent `pgdata` (see snap_restore
 * for uid/gid, pg_major and conf_sample) and marks it used.  When the archive is bad
 * (damaged, wrong digest, refused, wrong major) the entry is removed with a
 * warning; so is an entry that is not store_acceptable (checked first:
 * nothing of it is extracted).  0, or -1 (pgdata left empty).  *sst optional.
 */
int store_restore(struct store *st, struct entry_meta *meta, const char *pgdata, uid_t uid, gid_t gid,
                  int pg_major, const char *conf_sample, struct snap_stats *sst);

/*
 * Moves a downloaded entry (temp files under st->tmp_dir, e.g. from
 * remote_get) into the store by rename, as store_publish does; an entry that
 * appeared meanwhile is kept.  Both temp files are gone afterwards on every
 * path.  0 or -1 (warning).
 */
int store_import(struct store *st, const char *key, const char *archive_tmp, const char *meta_tmp);
/* Removes entry `key` (meta first, then its archives).  0 (also when absent) or -1 (logged). */
int store_remove(struct store *st, const char *key);
/* Sets the entry's last_used to now.  0, or -1 when there is no such entry or on error (logged). */
int store_touch(struct store *st, const char *key);

/*
 * All entries, sorted by key; bad metas are skipped with a warning.  *out is
 * a malloc'ed array of *n metas: free with store_list_free.  0 or -1.
 */
int store_list(struct store *st, struct entry_meta **out, size_t *n);
void store_list_free(struct entry_meta *v, size_t n);

/* Sorted keys of every "<key>.meta" in the store directory (appended to *keys).  0 or -1 (logged). */
int store_keys(struct store *st, struct strlist *keys);

/* qsort order of entry_metas: most recently used first, then by key. */
int store_cmp_recent_first(const void *a, const void *b);

/*
 * Recomputes the digest of entry `key`'s archive under its shared lock and
 * compares it and the size with the meta; checks store_acceptable too.  0, or -1 with why filled (no
 * such entry, bad meta, locked for too long, mismatch).  Nothing is removed.
 */
int store_check(struct store *st, const char *key, char *why, size_t why_len);

/*
 * `pgstash prune`: removes least recently used entries until at most
 * max_entries remain and their archives total at most max_bytes (0: no
 * limit).  Skips keep_key (NULL: none) and entries locked by others.  Also
 * removes orphans (archives without meta, metas that do not parse or lack
 * their archive) unless dry_run.  Reports each removal ("removed KEY ..." or,
 * with dry_run, "would remove KEY ...") on `out`, or through log_info when
 * out is NULL.  Returns the number of entries removed (or that would be), -1
 * on error.
 */
int store_prune(struct store *st, uint64_t max_bytes, long max_entries, bool dry_run, const char *keep_key,
                FILE *out);

/* The path of `key`'s meta file in the store (malloc'ed), as remote_put uploads it. */
char *store_meta_file(const struct store *st, const char *key);
/* Where a download for store_import goes: the store's temp directory, on its file system. */
const char *store_download_dir(const struct store *st);

#endif
