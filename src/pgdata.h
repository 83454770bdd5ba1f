/*
 * pgdata — whose PGDATA is it: claims it for a start (reuse this key's
 * cluster, or take it empty) and rolls it back when the start fails.  The one
 * place that wipes PGDATA, and only what pgstash created (as initdb's
 * cleanup_directories_atexit); a PGDATA it did not create is never touched.
 *
 * Not for: filling PGDATA (acquire, build), the marker's file format and the
 * background sync (marker), the per-start settings (server).
 */
#ifndef PGSTASH_PGDATA_H
#define PGSTASH_PGDATA_H

#include <stdbool.h>

struct cfg;

struct pgdata {
	const char *dir;
	const char *waldir;      /* initdb --waldir, wiped with PGDATA; NULL when none */
	long lock_timeout;
	/* mark_lock's flock on PGDATA, -1 when not held; closed, never unlocked (the syncer shares it). */
	int lock;
	/* Set once PGDATA is known to be ours to wipe (empty, or a pgstash marker). */
	bool ours;
	/* Set when PGDATA holds a complete cluster for the key: nothing to roll back. */
	bool done;
	/* Set when it was found complete and on disk (the marker says KEY): nothing to sync. */
	bool durable;
};

/* What a claim found. */
enum pgdata_claim {
	PGDATA_CLAIM_REUSE,   /* already holds this key's cluster: use it as is */
	PGDATA_CLAIM_EMPTY,   /* empty and ours now */
	PGDATA_CLAIM_REFUSED, /* not ours to touch, in use, or unusable (logged) */
};

/* Fills pd from cfg's pgdata, initdb_waldir and lock_timeout; nothing held. */
void pgdata_init(struct pgdata *pd, const struct cfg *cfg);

/*
 * Creates PGDATA when missing, takes its lock (mark_lock) for the rest of
 * the start, and decides from postmaster.pid, the marker, PG_VERSION and
 * the boot id what it holds (pgdata_decide); empties it when it is ours but
 * not `key`'s finished cluster.  Logs why it reuses, starts over or refuses.
 */
enum pgdata_claim pgdata_claim(struct pgdata *pd, const char *key);

/* After a failed start: empties PGDATA (and the WAL directory) when it is ours and not done. */
void pgdata_rollback(struct pgdata *pd);

/* Closes the lock (not LOCK_UN: that would unlock the background syncer's share too). */
void pgdata_release(struct pgdata *pd);

#endif
