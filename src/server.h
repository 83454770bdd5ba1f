/*
 * server — the PostgreSQL cluster during bootstrap: initdb, a temporary
 * server on a private unix socket (started as our direct child, so signals
 * and exit status stay ours), the official image's role/database setup and
 * /docker-entrypoint-initdb.d scripts, and the per-start settings that must
 * not come from a snapshot (pg_hba.conf, the current password).
 *
 * The temporary server is never where a client or a readiness probe looks
 * for the real one: its socket is in a private 0700 directory, and when
 * container steps need TCP it listens on 127.0.0.1 on a private port the
 * kernel picked, where only a one-time password (SCRAM) is accepted.
 *
 * Every function here runs as the cluster's owner: postgres and initdb
 * refuse root, so the front end drops privileges before bootstrapping.
 *
 * Not for: deciding when to build (the front end), the snapshot, the
 * final server (pgstash execs it and is gone).
 */
#ifndef PGSTASH_SERVER_H
#define PGSTASH_SERVER_H

#include "proc.h"

#include <stdbool.h>
#include <sys/types.h>

struct cfg;
struct pgbin;
struct strlist;

/* The temporary server's port when it has only its socket: the directory is private. */
#define SRV_PORT 5432

/* A temporary server; zero-initialise.  Owns its strings. */
struct srv {
	pid_t pid;       /* the postmaster (also its process group), 0 when not running */
	char *sockdir;   /* private mkdtemp directory: the socket and server.log */
	int port;        /* SRV_PORT, or with `tcp` a private one (never 5432 nor $PGPORT) */
	bool tcp;        /* also listening on 127.0.0.1 (for container steps) */
	bool durable;    /* fsync on: a migration in place, whose cluster is never thrown away */
	char *user;      /* the role clients connect as (cfg->db_user) */
	char *bindir;    /* for psql */
	char *pgdata;
	char *logfile;   /* sockdir/server.log */
	char *hba;       /* sockdir/pg_hba.conf: the temporary server's own, never PGDATA's */
	/*
	 * With `tcp`: the one-time password of `user` (secret, zeroed when
	 * freed), the SCRAM verifier it is stored as, and what the role had
	 * before (NULL: no password), put back by srv_stop.
	 */
	char *password;
	char *verifier;
	char *old_verifier;
};

/*
 * Returns the initdb argv (NULL-terminated, free with proc_argv_free):
 * initdb -D PGDATA --username=USER --encoding=UTF8 --locale=C.UTF-8
 * --auth-local=trust --auth-host=trust --no-sync, then the words of
 * POSTGRES_INITDB_ARGS (split by proc_split_argv, which honours quotes as the
 * official image's eval does), then --waldir when set.  NULL when the args
 * can't be split (logged).  Never holds the password.
 */
char **srv_initdb_argv(const struct cfg *cfg, const struct pgbin *pg);
/*
 * Runs initdb into cfg->pgdata.  Quiet unless it fails (then the tail of its
 * output is printed) or the log level is debug.  0 or -1 (logged).
 */
int srv_initdb(const struct cfg *cfg, const struct pgbin *pg);

/* A cluster tool running in the background (srv_reset_wal_start); all zero but logfd -1 when none. */
struct srv_tool {
	pid_t pid;
	const char *what;
	bool forward_signals; /* a terminating signal pgstash gets is passed on to it */
	char *dir, *logpath; /* its private log (not at debug level, where it writes to stderr) */
	int logfd;
	double t0;
};

/*
 * After the build's clean shutdown: starts `pg_resetwal`, which replaces the
 * WAL the build wrote (initdb's and the migrations', several MB that compress
 * poorly and that a cleanly shut-down cluster never reads again) with one
 * empty segment, as pg_upgrade does.  Snapshots shrink by about a third.  It
 * changes only srv_reset_wal_paths (relative to PGDATA), so a snapshot of
 * the rest may run beside it (snap_late).  0 (*t runs: srv_tool_wait), or -1
 * (logged).  A signal is not passed on to it: it always ends its work.
 */
int srv_reset_wal_start(const struct cfg *cfg, const struct pgbin *pg, struct srv_tool *t);
extern const char *const srv_reset_wal_paths[];
/*
 * Waits for the tool in *t and clears *t.  0 when it succeeded; -1 when it
 * failed (logged with the tail of its output), when a terminating signal
 * came meanwhile (logged), or when none ran.
 */
int srv_tool_wait(struct srv_tool *t);

/*
 * Removes this user's private directories (sockets, tool logs) that a
 * pgstash killed with -9 left in $TMPDIR: their names carry the pid, and
 * only those of pids that no longer exist go.
 */
void srv_sweep_stale_dirs(void);

/*
 * Starts a temporary server on PGDATA: unix socket in a fresh private
 * directory (trusted: only the cluster's owner can reach it), durability off
 * (the build is thrown away unless it ends in a clean shutdown) unless
 * `durable` (a migration in place: the cluster holds a user's data), its own
 * pg_hba.conf.  With `tcp` it also listens on 127.0.0.1 on a private port,
 * where only SCRAM with a fresh one-time password of cfg->db_user is
 * accepted (srv_container_env hands it out).  Returns once it accepts
 * connections: 0, or -1 (logged, with the server log's tail; nothing is left
 * running).  On success the caller must srv_stop(s).
 */
int srv_start_temp(struct srv *s, const struct cfg *cfg, const struct pgbin *pg, bool tcp, bool durable);
/*
 * Puts back the role's password the one-time one replaced (so neither the
 * snapshot nor the final server knows it), then a fast shutdown, waits for a
 * clean exit (60 s, then SIGQUIT), removes the private directory and frees
 * the strings.  0 when the server shut down cleanly with the password put
 * back (or was never started), -1 otherwise (logged).  Safe to call twice
 * and on a zeroed srv.
 */
int srv_stop(struct srv *s);

/*
 * As the official image: the superuser is cfg->db_user (initdb made it);
 * creates cfg->db_name unless it is "postgres" or exists, then each of
 * cfg->db_extra.  0 or -1 (logged).
 */
int srv_setup_databases(const struct srv *s, const struct cfg *cfg);

/*
 * The OIDs (decimal, as base/ names the databases' directories) of the
 * databases not named in `except`, asked over a connection to database
 * `via`.  0 or -1 (logged).
 */
int srv_database_oids(const struct srv *s, const char *via, const struct strlist *except, struct strlist *oids);

/*
 * Creates cfg's [clones] with CREATE DATABASE ... TEMPLATE (dropping any of
 * the same name first: a prefix snapshot holds clones of an older schema).
 * No client may be connected to the template.  0 or -1 (logged).
 */
int srv_create_clones(const struct srv *s, const struct cfg *cfg);

/*
 * Runs cfg->initdb_d's files in bytewise name order with the official
 * image's rules: *.sh executed (or, when not executable, run by /bin/sh: we
 * can't source into C, so its exported variables don't reach later files),
 * *.sql / *.sql.gz / *.sql.xz / *.sql.zst through psql with ON_ERROR_STOP,
 * anything else ignored.  A missing directory is skipped.  Stops at the
 * first failure: 0 or -1 (logged, naming the file).
 */
int srv_run_initdb_d(const struct srv *s, const struct cfg *cfg);

/*
 * The single-user session of the password, started ahead: postgres is
 * executed and loads its libraries (~10 ms, PG 15) while PGDATA is restored
 * or built, then waits in open() of its configuration file, a FIFO in a
 * private directory, before it reads anything of PGDATA; so it runs no
 * code of a cache entry before the entry is verified and restored.
 * srv_apply_per_start hands it the cluster.  Dies with us (a SIGKILL).
 */
struct srv_single {
	struct proc p; /* p.pid 0: none */
	char *dir;     /* its private directory: the FIFO */
};

/* Starts it when cfg has a password; failing to is not an error (logged with -v). */
void srv_single_start(struct srv_single *s, const struct cfg *cfg, const struct pgbin *pg);
/* Kills and reaps it, removes its directory.  Idempotent. */
void srv_single_cancel(struct srv_single *s);

/*
 * On a stopped cluster, before the final exec, at every start: rewrites
 * pg_hba.conf (srv_hba_text) and sets cfg->db_password in
 * single-user mode when it is set (the password is never in argv, a log or a
 * snapshot).  `durable`: both are on disk when it returns (PGDATA is, and
 * must stay so); otherwise neither is fsynced, nor is the single-user
 * checkpoint: the caller syncs PGDATA after (marker.h).  When `superusers`
 * is not NULL, the same single-user session (no extra start) adds to it the
 * superuser roles other than cfg->db_user (none without a password: then
 * nothing runs, and every role may log in anyway).  `ahead`: a session
 * srv_single_start started, used when it can be (not `durable`), else a new
 * one runs; either way it is gone when this returns (NULL: none).  0 or -1
 * (logged).
 */
int srv_apply_per_start(const struct cfg *cfg, const struct pgbin *pg, bool durable, struct strlist *superusers,
                        struct srv_single *ahead);
/*
 * The official image's refusal: no password and a host auth method other
 * than trust is an error (-1, with its explanation logged); trust logs the
 * official warning.  0 when the server may start.
 */
int srv_check_auth(const struct cfg *cfg);

/*
 * Returns the final server's pg_hba.conf (malloc'ed), as the official
 * image's pg_setup_hba_conf, with METHOD = cfg->host_auth_method or
 * scram-sha-256: `host all all all METHOD` last; before it the socket and
 * loopback lines, which cfg->local_auth decides: trust (the official
 * image's), peer (the socket; loopback METHOD) or password (both METHOD).
 * METHOD trust makes every line trust.  NULL when METHOD is not one line
 * (logged).
 */
char *srv_hba_text(const struct cfg *cfg);

/*
 * The mode of cfg->socket_dir when pgstash makes it or, as root, prepares
 * it: 03775 (as the image's: any local user reaches the socket) when its
 * pg_hba line is trust (local_auth = trust or POSTGRES_HOST_AUTH_METHOD=trust)
 * or peer, which say who may connect; 0750 (the owner and its group) with
 * local_auth = password.
 */
mode_t srv_socket_dir_mode(const struct cfg *cfg);

/*
 * Sets the client environment for the temporary server's socket in `env`
 * (replacing entries of the same names): PGHOST=sockdir PGPORT PGUSER
 * PGDATABASE=dbname and DATABASE_URL
 * (postgresql://user@/db?host=/sockdir&port=PORT).  No PGPASSWORD: the
 * socket is trusted and private to the cluster's owner.
 */
void srv_client_env(const struct srv *s, const struct cfg *cfg, const char *dbname, struct strlist *env);
/*
 * The same for a container step, which shares our network namespace and
 * reaches the temporary server over TCP (srv_start_temp with `tcp`):
 * PGHOST=127.0.0.1, the private PGPORT, PGPASSWORD (the one-time password,
 * never cfg->db_password) and DATABASE_URL with it
 * (postgresql://user:pw@127.0.0.1:PORT/db).
 */
void srv_container_env(const struct srv *s, const struct cfg *cfg, const char *dbname, struct strlist *env);

#endif
