/*
 * marker — PGDATA/pgstash.key, pgstash's claim on a PGDATA, and the deferred
 * sync that makes a finished PGDATA durable without holding up the start.
 *
 * The marker is one line:
 *   building KEY, restoring KEY   a bootstrap is under way, or was killed: start over
 *   unsynced KEY BOOT_ID          finished, but maybe only in the page cache.  Good
 *                                 while the kernel that wrote it runs (the same
 *                                 /proc/sys/kernel/random/boot_id, which containers
 *                                 share with the host); after a reboot it may be torn
 *   KEY                           finished and on disk
 *
 * A restore writes without fsync and the build runs with fsync=off: nothing in
 * PGDATA is known to be on disk until a syncfs().  Rather than make every start
 * wait for one (40-100 ms on a hit), the marker says "unsynced" and a
 * background process syncs, then rewrites it to KEY durably.  A host crash
 * before that leaves "unsynced" with an old boot id, and the next start
 * rebuilds; a start under the same kernel trusts the page cache.
 *
 * Whoever changes PGDATA holds mark_lock's flock on the directory: a start from
 * its claim to its end, then the background syncer it hands the lock to (by
 * fork) until the marker is confirmed.  A later start waits for it, briefly,
 * and never races it.
 *
 * Not for: what a marker means for a start (bootstrap decides), the per-start
 * settings (server).
 */
#ifndef PGSTASH_MARKER_H
#define PGSTASH_MARKER_H

#include <stdbool.h>

/* The marker's name in PGDATA. */
#define MARK_FILE "pgstash.key"
/* A boot id: a UUID in its 36-character text form. */
#define MARK_BOOT_ID_LEN 36
/* Longest key an "unsynced" line may name (a key is 64 hex digits). */
#define MARK_KEY_MAX 64

/*
 * The marker's line without its newline (malloc'ed), or NULL when there is
 * none, or none that counts (mark_dir_holding's rule: a pgstash.key that may
 * be someone else's is no marker).  Not logged.
 */
char *mark_read(const char *pgdata);
/*
 * Replaces the marker with `line` and a newline, atomically (temp file and
 * rename); `durable`: fsync of the file and of PGDATA.  0 or -1 (logged).
 */
int mark_write(const char *pgdata, const char *line, bool durable);

/*
 * What a directory holds, as far as whose it is goes, before any marker is
 * read: PGDATA's claim (pgdata) and root's hand-over of PGDATA to postgres
 * (privs) both go by it, so that root never hands over a directory that the
 * claim then refuses to touch.
 */
enum mark_holding {
	MARK_HOLDS_NOTHING,         /* no entries: anyone's to take */
	MARK_HOLDS_MARKER,          /* pgstash's marker: pgstash's, whatever else is there */
	MARK_HOLDS_FOREIGN_CLUSTER, /* no marker, a PG_VERSION: a cluster pgstash did not create */
	MARK_HOLDS_FOREIGN_FILES,   /* no marker, some entries, no cluster */
};
/* The pure rule. */
enum mark_holding mark_holding(bool has_marker, bool has_pg_version, bool empty);
/*
 * The rule on open directory dir_fd (its entries looked at without following
 * a link: PG_VERSION counts as a regular file only).  A marker counts only as
 * one line that parses as one, in a regular file of one link owned by the
 * directory's owner, in a directory no group or other may write to: anything
 * else named pgstash.key (a `pgstash keygen` key, a file planted in a sticky
 * directory) is a foreign file.
 * MARK_HOLDS_FOREIGN_FILES too when it cannot be read (errno set).
 */
enum mark_holding mark_dir_holding(int dir_fd);
/* Logs why PGDATA `dir`, holding FOREIGN_CLUSTER or FOREIGN_FILES, is refused: pgstash never touches it. */
void mark_log_refusal(const char *dir, enum mark_holding h);

/* The running kernel's boot id into `out`: 0, or -1 when unreadable or malformed (not logged). */
int mark_boot_id(char out[MARK_BOOT_ID_LEN + 1]);
/*
 * True when `line` is "unsynced KEY BOOT_ID" (single spaces, nothing after);
 * then copies KEY and BOOT_ID out.
 */
bool mark_parse_unsynced(const char *line, char key[MARK_KEY_MAX + 1], char boot_id[MARK_BOOT_ID_LEN + 1]);

/*
 * Takes the exclusive flock on directory `pgdata`, waiting for its holder (a
 * background syncer, another start) up to timeout_s seconds (< 0: no limit),
 * with a progress line every 10 s.  MARK_LOCKED with *fd_out set
 * (O_CLOEXEC; release it with close(), never LOCK_UN: a syncer may share it),
 * MARK_LOCK_TIMEOUT, or MARK_LOCK_ERROR on a signal or an error (logged).  A
 * file system without flock gives MARK_LOCKED with *fd_out = -1: then
 * mark_finish syncs before it returns.
 */
enum mark_lock_result {
	MARK_LOCK_ERROR = -1,
	MARK_LOCKED = 0,
	MARK_LOCK_TIMEOUT = 1,
};
enum mark_lock_result mark_lock(const char *pgdata, long timeout_s, int *fd_out);

/*
 * syncfs() of the file system holding PGDATA, and of pg_wal's when pg_wal is
 * a link elsewhere (initdb --waldir).  0 or -1 (logged).
 */
int mark_sync(const char *pgdata);

/*
 * Marks PGDATA as holding `key`'s finished cluster.  With lock_fd (from
 * mark_lock), a boot id and a fork: writes "unsynced KEY BOOT_ID" and leaves
 * a detached process (own session, deaf to TERM INT HUP QUIT PIPE, always
 * exits 0: under `run` postgres may reap it) that syncs and then writes KEY
 * durably, unless the marker changed meanwhile.  That process holds the lock
 * until it is done; the caller only closes lock_fd.  Without them: syncs,
 * then writes KEY, before returning.  keep_stderr: the background process
 * logs to our stderr, else to /dev/null.  server_follows (`run`: postgres is
 * exec'd next): the process waits for the server's start before it writes
 * anything back, whatever the size (else only a data-heavy PGDATA does).
 * 0, or -1 (logged) when no marker could be written.
 */
int mark_finish(const char *pgdata, const char *key, int lock_fd, bool keep_stderr, bool server_follows);

#endif
