/*
 * durable — the two file-system protocols that crash safety rests on, done
 * once: replacing a file atomically (temp file beside it created with
 * O_EXCL|O_NOFOLLOW, write, fsync, rename, fsync of the directory: after a
 * crash the old or the new content, never a mix), and waiting for an flock
 * (bounded, a progress line every 10 s, cut short by a terminating signal).
 * Also the flocked temp files of the cache's .tmp/ directory, which a sweep
 * in another container must not take from a live writer.
 *
 * Not for: what a file holds, where the cache keeps it (entry.h, store.h).
 */
#ifndef PGSTASH_DURABLE_H
#define PGSTASH_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Replaces dir_fd/name (dir_fd may be AT_FDCWD, name then any path) with
 * `len` bytes of `data`, mode `mode` (less the umask), through the temp file
 * "<name>.tmp.<6 random characters>" (O_EXCL|O_NOFOLLOW: unguessable, never through a link).  With
 * `durable`, the file is fsynced before the rename and the directory after.
 * `label` names the directory in messages (NULL: name is a path).
 * 0, or -1 (logged as an error; the temp file is removed).
 */
int durable_write_at(int dir_fd, const char *label, const char *name, const char *data, size_t len, mode_t mode,
                     bool durable);
/* durable_write_at for a path. */
int durable_write_file(const char *path, const char *data, size_t len, mode_t mode, bool durable);

/* Writes all `len` bytes (EINTR retried).  0, or -1 with errno set (not logged). */
int durable_write_all(int fd, const void *data, size_t len);

/*
 * Creates dir/<prefix>-<6 random characters><suffix> (O_EXCL|O_NOFOLLOW, mode `mode`),
 * flocked exclusive for as long as the fd is open, and checked
 * after the flock to still be the file at that path (a sweep may have taken
 * and removed it in between: then another name is tried).  Returns the fd
 * (O_CLOEXEC; the path in *path_out, caller frees) or -1 (logged as a warning).
 */
int durable_tmp_create(const char *dir, const char *prefix, const char *suffix, mode_t mode, char **path_out);
/*
 * durable_tmp_create in the directory open as dir_fd (`dir` its path, for
 * *path_out and messages): created with openat O_CREAT|O_EXCL|O_NOFOLLOW, so
 * nothing planted in the directory is followed.  AT_FDCWD: `dir` is opened
 * by path.
 */
int durable_tmp_create_at(int dir_fd, const char *dir, const char *prefix, const char *suffix, mode_t mode,
                          char **path_out);

/* How durable_flock_wait ended. */
enum durable_wait {
	DURABLE_WAIT_LOCKED,  /* the lock is held */
	DURABLE_WAIT_TIMEOUT, /* timeout_s passed (or one try failed with timeout_s 0) */
	DURABLE_WAIT_SIGNAL,  /* a terminating signal arrived (sig_received is set) */
	DURABLE_WAIT_ERROR,   /* flock failed otherwise: errno set, not logged */
};

/*
 * Called while durable_flock_wait waits: once when the first try fails
 * (first true, waited 0), then every 10 s.
 */
typedef void durable_wait_report(void *arg, double waited_s, bool first);

/*
 * flock(fd, op) (LOCK_EX or LOCK_SH), waiting up to timeout_s seconds (0: one
 * try, < 0: no limit).  Naps start at first_nap_ms and double up to 100 ms;
 * report (optional) is called as its type says.  Nothing is logged.
 */
enum durable_wait durable_flock_wait(int fd, int op, long timeout_s, long first_nap_ms, durable_wait_report *report,
                                     void *arg);

/*
 * true when fd is still the file at `path` (same device and inode): a lock
 * taken on a file that was renamed or removed meanwhile locks nothing.
 */
bool durable_same_file(int fd, const char *path);

#endif
