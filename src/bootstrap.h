/*
 * bootstrap — the main job: key → reuse / hit (restore) / miss (lock, initdb,
 * migrate, snapshot, publish) → per-start settings → ready → exec postgres.
 *
 * It owns process-level rollback: whatever it wrote into PGDATA during a
 * failed or interrupted bootstrap is wiped in one place (as initdb's
 * cleanup_directories_atexit), and a PGDATA it did not create is never
 * touched.
 */
#ifndef PGSTASH_BOOTSTRAP_H
#define PGSTASH_BOOTSTRAP_H

#include "config.h"

#include <stdbool.h>

/* Name of the state file in cfg->socket_dir that the healthcheck reads. */
#define BOOT_STATE "pgstash.state"

/*
 * Bootstraps PGDATA.  With exec_postgres, execs postgres with pg_argv (the
 * words after "postgres"/"run") and returns only on failure.  Returns an exit
 * code: 0 ok (prepare), 1 runtime failure, 3 a step failed, 126/127 exec
 * failures, 128+N interrupted by signal N.
 */
int boot_main(struct cfg *cfg, bool exec_postgres, int pg_argc, char **pg_argv);

/*
 * For steps with image_id = yes: asks the Docker Engine for the image's ID,
 * which then enters the key.  0, or -1 (logged) when the engine or the image
 * is missing.
 */
int boot_resolve_images(struct cfg *cfg);

/*
 * Exit code for `pgstash healthcheck`: 0 only when bootstrap has finished and
 * the final server answers; 1 otherwise (the reason on stderr).
 */
int boot_healthcheck(const struct cfg *cfg);

#endif
