/*
 * snapshot_int.h — snapshot's steps that the unit tests (and bench drivers)
 * reach; not an API.
 */
#ifndef PGSTASH_SNAPSHOT_INT_H
#define PGSTASH_SNAPSHOT_INT_H

#include "snapshot.h"

#include <stdint.h>

/*
 * Levels up to SNAP_ZSTD_WORKERS_MAX_LEVEL run SNAP_ZSTD_WORKERS zstd worker
 * threads (bench/README.md, "Snapshot write").
 */
#define SNAP_ZSTD_WORKERS 2
#define SNAP_ZSTD_WORKERS_MAX_LEVEL 1

/* How snap_write runs zstd. */
struct snap_zstd {
	int level;   /* compression level, 1-19 */
	int workers; /* zstd worker threads; 0: compression in the calling thread */
};

/* The level and workers for the configured level (0: none configured).  Pure. */
struct snap_zstd snap_zstd_choice(int configured_level);

/*
 * snap_write with zstd run as `z` says (comp CFG_COMP_ZSTD), or with `z.level`
 * (0: the codec's default) for the other compressions.
 */
int snap_write_with(const char *pgdata, int out_fd, const char *out_name, enum cfg_compression comp,
                    struct snap_zstd z, const struct snap_late *late, struct snap_stats *st);

/* Writer threads of a restore (1 to 4); 0, the default: one per CPU, at least 2.  For tests. */
extern int snap_restore_writers;

#endif
