/*
 * acquire — fills a claimed, empty PGDATA with the key's cluster, the
 * cheapest way there is: a local hit (restore under a shared lock), a build
 * finished by another pgstash while we waited, the shared remote (download,
 * or the fleet lease and build, or wait for another runner's build), else
 * layer by layer: the schema layer restored or built (from the best cached
 * prefix when a step is incremental), then the fixtures layer on it; each
 * built layer is published, the cache pruned.
 *
 * Not for: running initdb and the steps (build), whether PGDATA may be
 * written and its rollback (pgdata), the cache's format (store).
 */
#ifndef PGSTASH_ACQUIRE_H
#define PGSTASH_ACQUIRE_H

#include "build.h"
#include "store.h"

#include <stdbool.h>

struct cfg;
struct fp_result;
struct pgbin;

struct acquire {
	const struct cfg *cfg;
	const struct pgbin *pg;
	const struct fp_result *fp;
	struct store store;
	bool store_open;
	struct sign_keys sign; /* [trust]'s keys, loaded by acquire_run */
	bool lock_gave_up;     /* a hit's shared lock timed out: the miss does not wait a second time */
	bool restored_hit;     /* PGDATA holds fp->key's entry as restored (local, waited for, or remote): no build */
	bool fresh;            /* acquire_rebuild: no cached entry is restored, not even a prefix or a layer */
	int lock_fd;       /* the exclusive build lock on fp->key, -1 when not held */
	struct build build;
	/* The layer's archive, begun while its steps run (build.h steps_starting); fd -1: none. */
	struct store_draft draft;
	const char *layer_key; /* the key of the layer being built, for the draft; not owned */
	/* Fleet single-flight on the remote: our lease on fp->key, released in acquire_free. */
	char *lease_owner;
	bool leased;
};

enum acquire_result {
	ACQ_OK,
	ACQ_FAILED,        /* a runtime failure (logged) */
	ACQ_STEP_FAILED,   /* a step or an initdb.d script failed (logged) */
	ACQ_INTERRUPTED,   /* a signal arrived (sig_received) */
};

void acquire_init(struct acquire *acq, const struct cfg *cfg, const struct pgbin *pg, const struct fp_result *fp);

/* Opens the cache and brings PGDATA (claimed and empty) to fp->key's cluster. */
enum acquire_result acquire_run(struct acquire *acq);

/*
 * After acquire_run restored fp->key's entry (restored_hit) and that cluster
 * did not start (the per-start step failed): the entry is bad.  Empties
 * PGDATA, removes the entry from the local cache (under the key's exclusive
 * lock, when it can be had) and builds the key from scratch, using no cached
 * entry, publishing what it builds so that it replaces the bad one.  Meant to
 * be called once per start.
 */
enum acquire_result acquire_rebuild(struct acquire *acq);

/* After a failure: stops the temporary server when one still runs. */
void acquire_abort(struct acquire *acq);

/* After a success: drops the build lock and closes the cache (the lease stays until acquire_free). */
void acquire_finish(struct acquire *acq);

/* Releases the lease and the lock, closes the cache; frees what acq owns. */
void acquire_free(struct acquire *acq);

#endif
