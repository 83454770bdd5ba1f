/*
 * privs_int.h — privs' ownership helpers, exposed for tests only.
 */
#ifndef PGSTASH_PRIVS_INT_H
#define PGSTASH_PRIVS_INT_H

#include <stdbool.h>
#include <sys/types.h>

/*
 * Gives `path` and everything below it on the same file system (symlinks not
 * followed, as lchown) to uid:gid; entries that vanish meanwhile are skipped.
 * 0, or -1 (a failed chown is logged).  A missing `path` is 0.
 */
int privs_chown_tree(const char *path, uid_t uid, gid_t gid);

/*
 * Creates `dir` (with parents), gives it (with `recursive`, its whole tree)
 * to uid:gid and sets `mode`.  0, or -1 (logged).
 */
int privs_prepare_dir(const char *dir, mode_t mode, uid_t uid, gid_t gid, bool recursive);

#endif
