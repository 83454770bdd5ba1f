/*
 * acquire_int.h — acquire's pure decisions, exposed for tests only.
 */
#ifndef PGSTASH_ACQUIRE_INT_H
#define PGSTASH_ACQUIRE_INT_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

struct fp_result;
struct entry_meta;

/* One layer a miss brings PGDATA to, bottom first. */
struct layer_plan {
	enum cfg_layer layer;
	const char *key;
	const char *parent;   /* the key the layer is built on; NULL for the bottom one */
	const char *manifest;
	bool try_key;         /* restore `key` itself first when cached (the schema layer under fixtures) */
	bool lock;            /* build it under an exclusive lock on `key` (after the full key's: no deadlock) */
	bool last;            /* the start ends on it: the clones are made */
};

/* The layers of fp, bottom first: 1 (schema) or 2 (schema, fixtures). */
size_t acquire_plan(const struct fp_result *fp, struct layer_plan plan[2]);

/* Where a layer's build starts. */
enum layer_start {
	LAYER_FRESH,      /* initdb, databases, initdb.d, then the steps */
	LAYER_ON_PREFIX,  /* a cached entry this manifest extends, restored */
	LAYER_ON_SCHEMA,  /* the schema layer already in PGDATA (fixtures) */
};

enum layer_start acquire_layer_start(enum cfg_layer layer, bool prefix_restored);

/* Whether a step of `layer` has incremental = yes: only then is a prefix looked for. */
bool acquire_wants_prefix(const struct cfg *cfg, enum cfg_layer layer);

/*
 * Of the entries of `layer`, the one `manifest` extends the most
 * (fp_prefix_score), into *best; its score, or -1 when none qualifies.
 */
long acquire_pick_prefix(const struct entry_meta *all, size_t n, enum cfg_layer layer, const char *manifest,
                         const struct cfg *cfg, size_t *best);

#endif
