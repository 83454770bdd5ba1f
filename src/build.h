/*
 * build — makes a layer from scratch or on top of a restored one: initdb in
 * place (marker first), a temporary server, the databases, initdb.d, the
 * layer's steps (commands, or containers through the Docker Engine), the
 * clones, a fast shutdown and a WAL reset (which runs on while the caller
 * snapshots the rest).
 *
 * Not for: deciding what to build or caching it (acquire), PGDATA's
 * ownership and rollback (pgdata).
 */
#ifndef PGSTASH_BUILD_H
#define PGSTASH_BUILD_H

#include "config.h"
#include "server.h"

#include <stdbool.h>
#include <time.h>

struct pgbin;
struct strlist;

struct build {
	const struct cfg *cfg;
	const struct pgbin *pg;
	const char *key;      /* the start's key, for the "building KEY" marker; not owned */
	struct srv srv;       /* the temporary server; pid 0 when none runs */
	char *self_container; /* this container's id, looked up once; owned */
	/*
	 * Prefix reuse: the manifest of the entry PGDATA was restored from, its
	 * key, and this start's manifest; a step whose inputs are the same in
	 * both is skipped.  NULL: every step runs.  Not owned.
	 */
	const char *base_manifest, *base_key, *manifest;
	/* A migration in place (on_change = migrate): the temporary server keeps durability on. */
	bool in_place;
	/*
	 * Called by build_layer once the temporary server is up and the layer's
	 * steps are about to run, with the databases they (and the clones)
	 * work on; NULL: not called.  Not for a migration in place.  acquire
	 * snapshots the other databases meanwhile (snapshot.h, snap_early).
	 */
	void (*steps_starting)(struct build *bd, const struct strlist *busy, void *arg);
	void *steps_starting_arg;
	/* ctime_mark() just before the temporary server started: what it writes has a ctime at or after it. */
	struct timespec server_since;
	/* pg_resetwal, started by build_layer; build_wait_wal_reset ends it. */
	struct srv_tool wal_reset;
	bool wal_reset_failed;
};

enum build_result {
	BUILD_OK,
	BUILD_FAILED,      /* a runtime failure or a signal (logged) */
	BUILD_STEP_FAILED, /* a step or an initdb.d script failed (logged) */
};

void build_init(struct build *bd, const struct cfg *cfg, const struct pgbin *pg, const char *key);

/*
 * Runs the steps of `layer` on PGDATA and leaves a cleanly shut-down
 * cluster.  `fresh`: initdb, the databases and initdb.d first (otherwise
 * PGDATA holds a restored snapshot to build on).  `last`: the clones are made
 * once the steps are done.  *seconds: how long it took, on BUILD_OK.
 * On BUILD_OK `pg_resetwal` still runs: PGDATA is final, and may be
 * snapshotted, except srv_reset_wal_paths; build_wait_wal_reset says when those are.
 */
enum build_result build_layer(struct build *bd, enum cfg_layer layer, bool fresh, bool last, double *seconds);
/*
 * Waits for the WAL reset build_layer left running (at once when none runs).
 * 0, or -1 (logged): it failed, and PGDATA is not a usable cluster.  Asked
 * again, the same answer.
 */
int build_wait_wal_reset(struct build *bd);
/* Stops the temporary server when one still runs (a failed build), and waits for a WAL reset. */
void build_abort(struct build *bd);
void build_free(struct build *bd);

/*
 * For steps with image_id = yes: asks the Docker Engine for the image's ID,
 * which then enters the key.  0, or -1 (logged) when the engine or the image
 * is missing.
 */
int build_resolve_images(struct cfg *cfg);

#endif
