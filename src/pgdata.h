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

/*
 * PGDATA's record of the manifest its cluster was made for (the marker's
 * key is that manifest's digest): what a changed key is compared with.  A
 * pgstash.* name: a snapshot never holds it.
 */
#define PGDATA_MANIFEST_FILE "pgstash.manifest"
/* A manifest has a line per migration file: a monorepo's may pass SMALL_FILE_MAX. */
#define PGDATA_MANIFEST_MAX (32 * 1024 * 1024)

struct pgdata {
	const struct cfg *cfg;   /* on_change, and the steps' incremental flags; not owned */
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
	PGDATA_CLAIM_MIGRATE, /* on_change = migrate: an older cluster this key extends, to migrate in place */
	PGDATA_CLAIM_CHANGED, /* on_change = refuse: another key's cluster, left untouched (logged) */
};

/* Fills pd from cfg's pgdata, initdb_waldir and lock_timeout; nothing held. */
void pgdata_init(struct pgdata *pd, const struct cfg *cfg);

/*
 * Creates PGDATA when missing, takes its lock (mark_lock) for the rest of
 * the start, and decides from postmaster.pid, the marker, PG_VERSION and
 * the boot id what it holds (pgdata_decide); empties it when it is ours but
 * not `key`'s finished cluster.  A finished cluster of another key goes by
 * cfg's on_change, comparing the recorded manifest with `manifest` (this
 * start's, whose digest is `key`): replaced with a warning that names what
 * changed, kept for a migration in place, or refused.  Logs why it reuses,
 * starts over, migrates or refuses.
 */
enum pgdata_claim pgdata_claim(struct pgdata *pd, const char *key, const char *manifest);

/*
 * Records `manifest` as PGDATA's (PGDATA_MANIFEST_FILE), unless it already
 * is; fsynced when pd->durable (PGDATA is on disk and stays so), else left
 * to the marker's sync.  Before the marker names the new key: a recorded
 * manifest whose digest is neither the marker's key nor the start's counts
 * as none.  0, or -1 (logged; the start goes on without it).
 */
int pgdata_record_manifest(struct pgdata *pd, const char *manifest);

/* After a failed start: empties PGDATA (and the WAL directory) when it is ours and not done. */
void pgdata_rollback(struct pgdata *pd);

/* Closes the lock (not LOCK_UN: that would unlock the background syncer's share too). */
void pgdata_release(struct pgdata *pd);

#endif
