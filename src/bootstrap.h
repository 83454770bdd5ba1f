/*
 * bootstrap — the main job, as a list of named steps: as root hand the
 * directories to postgres and drop to it (privs), compute the key, claim
 * PGDATA (pgdata), fill it unless it already holds the key's cluster
 * (acquire), apply the per-start settings, mark it, then exec postgres.  Also
 * the healthcheck, which reads the state file bootstrap writes.
 *
 * Not for: exit codes (main maps the outcomes below), how PGDATA is filled
 * (acquire, build), whether it may be touched and its rollback (pgdata).
 */
#ifndef PGSTASH_BOOTSTRAP_H
#define PGSTASH_BOOTSTRAP_H

#include <stdbool.h>

struct cfg;
struct fp_result;
struct pgbin;

/* Name of the state file in cfg->socket_dir that the healthcheck reads. */
#define BOOT_STATE "pgstash.state"

/* How a bootstrap (or the key computation) ended; main maps each to an exit code. */
enum boot_outcome {
	BOOT_OK,
	BOOT_FAILED,         /* a runtime failure (logged) */
	BOOT_BAD_CONFIG,     /* a configuration error found late: secrets, migration files (logged) */
	BOOT_STEP_FAILED,    /* a migration step or an initdb.d script failed (logged) */
	BOOT_EXEC_DENIED,    /* postgres could not be executed (logged) */
	BOOT_EXEC_NOT_FOUND, /* postgres is not there (logged) */
	BOOT_INTERRUPTED,    /* a signal arrived: sig_received names it */
};

/*
 * The cache key: finds the server binaries (into *pg), resolves the image
 * IDs the key needs, and fingerprints (into *fp), in *seconds.  BOOT_OK,
 * BOOT_FAILED (no server binaries, no image ID) or BOOT_BAD_CONFIG (the
 * migration files).  *pg and *fp are zeroed first; free them with pgbin_free
 * and fp_result_free on every path.
 */
enum boot_outcome boot_key(struct cfg *cfg, struct pgbin *pg, struct fp_result *fp, double *seconds);

/*
 * Bootstraps PGDATA.  With exec_postgres, execs postgres with pg_argv (the
 * words after "postgres"/"run") and returns only on failure; else BOOT_OK
 * leaves a prepared PGDATA and no server.
 */
enum boot_outcome boot_main(struct cfg *cfg, bool exec_postgres, int pg_argc, char **pg_argv);

/*
 * Exit code for `pgstash healthcheck`: 0 only when bootstrap has finished and
 * the final server answers; 1 otherwise (the reason on stderr).
 */
int boot_healthcheck(const struct cfg *cfg);

#endif
