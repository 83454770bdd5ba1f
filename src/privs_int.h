/*
 * privs_int.h — privs' ownership helpers, exposed for tests only.
 */
#ifndef PGSTASH_PRIVS_INT_H
#define PGSTASH_PRIVS_INT_H

#include "marker.h"

#include <stdbool.h>
#include <sys/types.h>

/*
 * Gives `path` and everything below it on the same file system (symlinks not
 * followed, as lchown) to uid:gid; entries that vanish meanwhile are skipped.
 * 0, or -1 (a failed chown is logged).  A missing `path` is 0.
 */
int privs_chown_tree(const char *path, uid_t uid, gid_t gid);

/* The kinds of directory root hands to postgres; privs.c's table says what each may hold. */
enum privs_dir {
	PRIVS_PGDATA,     /* empty, or pgstash's marker (mark_dir_holding): the whole tree */
	PRIVS_WALDIR,     /* initdb --waldir: empty, or WAL segments and their subdirectories: the whole tree */
	PRIVS_SOCKET_DIR, /* postgres' sockets and pgstash's state: the directory itself */
	PRIVS_CACHE_DIR,  /* cache_dir: the store (pgstash-v1) and lost+found: the directory itself */
};

/* Why privs_may_hand_over said no. */
struct privs_refusal {
	enum mark_holding holding; /* PGDATA: what it holds */
	char name[256];            /* other kinds: the first entry no rule allows; "" when unreadable */
	int err;                   /* with name "": why it could not be read */
};

/*
 * Whether root may hand open directory dir_fd, of `kind`, to uid: when it is
 * already uid's (a socket or cache directory: handing over adds nothing), or
 * holds nothing that neither pgstash nor postgres puts there.  No link is
 * followed.  false with *why filled.
 */
bool privs_may_hand_over(enum privs_dir kind, int dir_fd, uid_t uid, struct privs_refusal *why);

/*
 * Creates `dir` (with parents) and, when privs_may_hand_over allows it, gives
 * it (PGDATA, the WAL directory: its whole tree) to uid:gid and sets `mode`.
 * 0, or -1 (logged; refused: nothing changed).
 */
int privs_prepare_dir(const char *dir, enum privs_dir kind, mode_t mode, uid_t uid, gid_t gid);

#endif
