/*
 * snapshot — a cleanly shut down PGDATA as one compressed tar stream, and
 * back.  Writing walks the directory in a fixed, sorted order (the paths a
 * concurrent pg_resetwal rewrites last: struct snap_late) and leaves out
 * what a restored cluster must not inherit (postmaster.pid and .opts, the
 * contents of pg_stat_tmp, server logs, pgstash's own marker files) or
 * that every server start removes (relcache init files); the
 * archive's SHA-256 is computed while it is written.  Restoring streams the
 * archive into an empty directory (libarchive parses, a small pool of writer
 * threads creates the files), refuses anything a PGDATA never holds
 * (symlinks, devices, fifos, hard links, paths leaving the directory, names
 * that collide), and verifies the digest on the same single pass over the
 * bytes.
 *
 * Not for: where archives live, locking, meta data (see store.h).
 */
#ifndef PGSTASH_SNAPSHOT_H
#define PGSTASH_SNAPSHOT_H

/* For enum cfg_compression: an enum cannot be forward-declared in C. */
#include "config.h"

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct strlist;

/* Buffer size of every read and write of archive and file bytes. */
#define SNAP_BUF_SIZE (1024 * 1024)
/* Restore refuses an entry larger than this, or archives expanding to more than SNAP_MAX_TOTAL. */
#define SNAP_MAX_ENTRY_BYTES (64ULL << 30)
#define SNAP_MAX_TOTAL_BYTES (1ULL << 40)
/*
 * How far past the size its meta declares (pgdata_bytes) an archive may
 * expand.  snap_write's pgdata_bytes is exactly what a restore adds up, so
 * the margin only absorbs rounding of a future format, never a bomb.
 */
#define SNAP_EXPAND_MARGIN(bytes) ((bytes) / 64 + (1ULL << 20))
/* Default zstd level when the configured level is 0. */
#define SNAP_ZSTD_DEFAULT_LEVEL 1

/* snap_write's return value when late->ready refused. */
#define SNAP_NOT_READY (-3)
/* Restore's return values below 0. */
#define SNAP_BAD_ARCHIVE (-1) /* the archive is at fault: corrupt, wrong digest, hostile, wrong version */
#define SNAP_FAILED (-2)      /* something else: a signal, the target directory, the local disk */

struct snap_stats {
	uint64_t archive_bytes; /* bytes of the compressed archive written or read */
	uint64_t pgdata_bytes;  /* sum of the regular files' sizes */
	uint64_t files;         /* regular files */
	char sha256[65];        /* lowercase hex digest of the archive bytes */
	double seconds;         /* wall time of the operation */
};

/*
 * Paths below PGDATA (relative, as the archive names them) that a snapshot
 * writes last, once ready(arg) returns 0; any other value abandons the
 * snapshot.  What `pg_resetwal` rewrites, so that it runs beside the write.
 */
struct snap_late {
	const char *const *paths; /* NULL-terminated */
	int (*ready)(void *arg);
	void *arg;
};

/*
 * Writes PGDATA `pgdata` (cleanly shut down) as a pax-restricted tar through
 * `comp` at `level` (0: the codec's default; zstd's is 1) to `out_fd`, from
 * its current position.  zstd at level 1 runs 2 worker threads, other levels
 * in the calling thread.  Peak memory follows zstd's window: levels up to 9 stay
 * under 30 MB, level 1 with its workers 28–32 MB (30 MB on compressible data,
 * 31.6 MiB on incompressible bytes, measured); 12 takes about 65 MB and
 * 19 about 100 MB (restoring any level stays under 20 MB).  `out_name` names
 * the output in messages.  The fd is
 * neither fsynced nor closed.  Owners are written as 0 without names; modes kept.
 * A symlink that a restore would refuse (absolute or leaving PGDATA: a
 * tablespace, a pg_wal elsewhere) makes the snapshot fail rather than produce
 * an entry that cannot be restored whole.
 * `late` (NULL: none) names paths another process is still rewriting: they
 * are left out of the walk and written last, after late->ready returned 0
 * (not called when the write fails before).
 * 0; SNAP_NOT_READY when late->ready refused (nothing logged here: ready
 * says why); -1 otherwise (logged as a warning: callers go on without
 * caching).  *st filled on success.
 */
int snap_write(const char *pgdata, int out_fd, const char *out_name, enum cfg_compression comp,
               int level, const struct snap_late *late, struct snap_stats *st);

/*
 * A snapshot begun while a build's steps still run, for the databases no
 * step touches: a thread writes base/OID for each of `oids` whose directory
 * and files have not changed since `since` (ctime_mark(), taken before
 * the temporary server started: the server's own writes stamp a ctime at
 * or after it), and records each entry's inode, size, mode, mtime and
 * ctime.  The steps then run beside it.  snap_write_after, once the server
 * has stopped, keeps what the thread wrote only when every recorded entry is
 * unchanged, and writes the rest; otherwise it writes everything again from
 * the start (out_fd truncated to where it was).  So an early write saves
 * the time of the databases written during the steps and never changes what
 * the archive holds: the same entries as snap_write's, the early ones
 * first.  Arguments as snap_write's.  Never NULL; the thread takes the
 * calling thread's signal mask (every signal blocked: sig.c).
 */
struct snap_early;
struct snap_early *snap_early_start(const char *pgdata, int out_fd, const char *out_name, enum cfg_compression comp,
                                    int level, const struct strlist *oids, struct timespec since);
/* Finishes (or redoes) the snapshot `e` began, as snap_write; frees e. */
int snap_write_after(struct snap_early *e, const struct snap_late *late, struct snap_stats *st);
/* Stops the thread and frees e (NULL: nothing); what it wrote to out_fd stays, for the caller to remove. */
void snap_early_drop(struct snap_early *e);

/*
 * Extracts `archive_path` (any of the compressions, detected) into `pgdata`,
 * which must be empty or absent (created 0700).  The archive's SHA-256 must
 * equal `expected_sha256` (NULL: not checked).  Files are owned by uid:gid
 * when running as root and uid != (uid_t)-1, else by the running user.  Modes
 * are the archive's, with u+rw (files) and u+rwx (directories) always, and no
 * set-id or sticky bits; times are not restored.  Large files keep holes
 * where their data is zeros.  Uses up to 4 writer threads, with signals
 * blocked in them; peak memory about 4 MiB of queued file data more.  When
 * expected_pg_major > 0, PG_VERSION must name that major.  The restored
 * conf files may not set what runs code or moves trust, nor where the server
 * listens (listen_addresses, port) except with a line of `conf_sample`, this
 * machine's postgresql.conf.sample (NULL: none), in postgresql.conf.  When
 * expected_bytes > 0 (the meta's pgdata_bytes), files adding up to more than
 * that plus SNAP_EXPAND_MARGIN make the archive bad (a bomb: a small archive
 * that would fill the disk); files adding up to more than the free space of
 * PGDATA's file system (statvfs at the start; expected_bytes alone is
 * compared first, before anything is written) fail the restore as the local
 * disk's fault.  Sizes are the archive's declared ones, checked before a
 * file's bytes are written.  A terminating signal (sig_received) aborts
 * between entries.
 * 0 on success (pgdata mode 0700); on failure pgdata's contents are removed
 * and SNAP_BAD_ARCHIVE or SNAP_FAILED is returned (logged as warnings).  A
 * pgdata that is not empty at the start is left alone: SNAP_FAILED.
 * *st (optional) is filled with what was read, also on failure.
 */
int snap_restore(const char *archive_path, const char *expected_sha256, const char *pgdata, uid_t uid,
                 gid_t gid, int expected_pg_major, const char *conf_sample, uint64_t expected_bytes,
                 struct snap_stats *st);

#endif
