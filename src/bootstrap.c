/*
 * bootstrap — see bootstrap.h.
 *
 * Order of a start (README "How a start goes"):
 *   1. as root: own PGDATA, the socket dir and the cache, then drop to postgres
 *   2. key; PGDATA already holding this key's cluster → reuse it as is;
 *      another key's finished cluster → on_change: replaced (with a warning
 *      naming what changed), migrated in place, or refused
 *   3. hit: restore under a shared lock (a builder of the same key holds it
 *      exclusively, so a reader waits for the build to finish)
 *   4. miss: exclusive lock, look again, initdb, temporary server, databases,
 *      initdb.d, steps, fast shutdown, snapshot + publish, prune
 *   5. per-start settings (password, pg_hba), marker, "ready", exec postgres
 *
 * Durability (marker.h): nothing a restore or a build writes is fsynced.  A
 * finished start marks PGDATA "unsynced KEY BOOT_ID" and leaves a background
 * process to syncfs and mark it KEY; a crash of the host before that makes
 * the next start rebuild.  The start never waits for the disk, except when
 * it comes right after another one on the same PGDATA, whose syncer it waits
 * for (the PGDATA lock).
 */
#include "bootstrap.h"
#include "acquire.h"
#include "build.h"
#include "config.h"
#include "docker.h"
#include "durable.h"
#include "fingerprint.h"
#include "log.h"
#include "marker.h"
#include "pgbin.h"
#include "pgdata.h"
#include "privs.h"
#include "proc.h"
#include "server.h"
#include "sig.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct boot {
	struct cfg *cfg;
	bool exec_pg;
	struct pgbin pg;
	struct fp_result fp;
	struct pgdata pd;
	struct acquire acq;
	struct srv_single single; /* the password's session, started ahead of a restore or build */
};

/* ---------- small helpers ---------- */

static char *
state_path(const struct cfg *cfg)
{
	return path_join(cfg->socket_dir, BOOT_STATE);
}

static void
write_state(const struct cfg *cfg, const char *state)
{
	/* The socket directory is postgres' to write: root (a failed privilege drop) writes nothing there. */
	if (geteuid() == 0) {
		log_debug("not writing the state \"%s\" as root", state);
		return;
	}
	char *p = state_path(cfg);
	char *text = xasprintf("%s %ld\n", state, (long)getpid());
	/* Not fatal: without it only the healthcheck is blind. */
	if (durable_write_file(p, text, strlen(text), 0644, false) != 0)
		log_warning("the healthcheck will not see the state: could not write \"%s\"", p);
	free(text);
	free(p);
}

/* Reads pending signals first: long library calls (snapshot, prune) do not. */
static bool
interrupted(void)
{
	sig_drain();
	return sig_received != 0;
}

/*
 * Whether stderr is a pipe or a socket.  The background syncer of `prepare`
 * then logs nowhere: whoever reads the other end (`out=$(pgstash prepare
 * 2>&1)`, a CI log collector) would otherwise wait for it to end, as if
 * prepare still ran.  Under `run` postgres holds stderr open anyway.
 */
static bool
stderr_is_a_pipe(void)
{
	struct stat st;
	return fstat(STDERR_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

/* ---------- the steps of a start ---------- */

enum boot_outcome
boot_key(struct cfg *cfg, struct pgbin *pg, struct fp_result *fp, double *seconds)
{
	memset(pg, 0, sizeof(*pg));
	memset(fp, 0, sizeof(*fp));
	if (pgbin_find(cfg->pg_bindir, pg) != 0)
		return BOOT_FAILED;
	if (build_resolve_images(cfg) != 0)
		return BOOT_FAILED;
	double t = log_now();
	if (fp_compute(cfg, pg->major, NULL, fp) != 0)
		return BOOT_BAD_CONFIG;
	*seconds = log_now() - t;
	return BOOT_OK;
}

/* Where the official image, and ours (Dockerfile), have Debian's libnss-wrapper. */
#define NSS_WRAPPER_LIB "/usr/lib/libnss_wrapper.so"

/* A private temp file (0600) in `dir` holding `text`; its path (malloc'ed), or NULL. */
static char *
temp_file_with(const char *dir, const char *stem, const char *text)
{
	char *path = xasprintf("%s/pgstash-%s-XXXXXX", dir, stem);
	int fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		free(path);
		return NULL;
	}
	size_t len = strlen(text);
	bool ok = durable_write_all(fd, text, len) == 0;
	if (close(fd) != 0 || !ok) {
		unlink(path);
		free(path);
		return NULL;
	}
	return path;
}

/*
 * `docker run --user UID:GID` with a uid that has no passwd entry: initdb
 * ("could not look up effective user ID") and postgres --single want a name
 * for it.  As the official image does, a passwd and a group file naming it
 * "postgres" (after the system's own entries) are handed to libnss-wrapper,
 * preloaded into every child from here on: initdb, the servers, the steps.
 * Nothing to do when the uid is known or the library is absent.
 */
static void
nss_wrap_unknown_user(const struct cfg *cfg)
{
	uid_t uid = geteuid();
	gid_t gid = getegid();
	if (getpwuid(uid) != NULL || access(NSS_WRAPPER_LIB, R_OK) != 0)
		return;
	char *sys_pw = read_small_file("/etc/passwd", SMALL_FILE_MAX, NULL);
	char *sys_gr = read_small_file("/etc/group", SMALL_FILE_MAX, NULL);
	char *pw = xasprintf("%s%spostgres:x:%ld:%ld:PostgreSQL:%s:/bin/false\n", sys_pw ? sys_pw : "",
	                     sys_pw && *sys_pw && sys_pw[strlen(sys_pw) - 1] != '\n' ? "\n" : "", (long)uid, (long)gid,
	                     cfg->pgdata);
	char *gr = xasprintf("%s%spostgres:x:%ld:\n", sys_gr ? sys_gr : "",
	                     sys_gr && *sys_gr && sys_gr[strlen(sys_gr) - 1] != '\n' ? "\n" : "", (long)gid);
	/* /tmp, or under --read-only without a tmpfs there, the socket directory (3777 in the image). */
	const char *dirs[] = {"/tmp", cfg->socket_dir};
	char *pw_path = NULL, *gr_path = NULL;
	for (size_t i = 0; i < 2 && !(pw_path && gr_path); i++) {
		free(pw_path);
		free(gr_path);
		pw_path = temp_file_with(dirs[i], "passwd", pw);
		gr_path = temp_file_with(dirs[i], "group", gr);
		if (!(pw_path && gr_path)) {
			if (pw_path)
				unlink(pw_path);
			if (gr_path)
				unlink(gr_path);
		}
	}
	if (pw_path && gr_path) {
		setenv("NSS_WRAPPER_PASSWD", pw_path, 1);
		setenv("NSS_WRAPPER_GROUP", gr_path, 1);
		setenv("LD_PRELOAD", NSS_WRAPPER_LIB, 1);
		log_info("uid %ld has no passwd entry: initdb and postgres see it as \"postgres\" through nss_wrapper",
		         (long)uid);
	} else
		log_warning("uid %ld has no passwd entry, and no file for nss_wrapper could be written: initdb will fail",
		            (long)uid);
	free(pw_path);
	free(gr_path);
	free(pw);
	free(gr);
	free(sys_pw);
	free(sys_gr);
}

/* As root: give postgres its directories and become it; then the state file, and the key. */
static enum boot_outcome
set_up(struct boot *b)
{
	struct cfg *cfg = b->cfg;
	if (geteuid() == 0 && privs_drop(cfg) != 0)
		return BOOT_FAILED;
	nss_wrap_unknown_user(cfg);
	if (mkdir_p(cfg->socket_dir, srv_socket_dir_mode(cfg) & 0777) != 0)
		log_warning("the healthcheck will not work without the socket directory \"%s\"", cfg->socket_dir);
	write_state(cfg, "starting");
	srv_sweep_stale_dirs();
	double seconds = 0;
	enum boot_outcome rc = boot_key(cfg, &b->pg, &b->fp, &seconds);
	if (rc == BOOT_OK)
		log_info("key %s (%llu files, %.2f s)", b->fp.key, (unsigned long long)b->fp.files, seconds);
	return rc;
}

static enum boot_outcome
outcome_of(enum acquire_result r)
{
	switch (r) {
	case ACQ_OK:
		return BOOT_OK;
	case ACQ_FAILED:
		return BOOT_FAILED;
	case ACQ_STEP_FAILED:
		return BOOT_STEP_FAILED;
	case ACQ_INTERRUPTED:
		return BOOT_INTERRUPTED;
	}
	return BOOT_FAILED;
}

/*
 * on_change = migrate: the last layer's steps on the cluster PGDATA holds,
 * whose manifest this key's extends; the migration tools apply only what is
 * missing.  Nothing is cached (the cluster holds the user's data), and
 * PGDATA is not ours to wipe: a failed migration leaves it with its old
 * marker, and the next start tries again.  Durable throughout: the
 * temporary server keeps fsync on, and PGDATA is synced before its marker
 * names the new key, so a host crash never leaves an "unsynced" marker that
 * a later start would take as a cluster to rebuild.
 */
static enum boot_outcome
migrate_in_place(struct boot *b)
{
	enum cfg_layer layer = b->fp.has_fixtures ? CFG_LAYER_FIXTURES : CFG_LAYER_SCHEMA;
	double seconds = 0;
	b->acq.build.in_place = true;
	switch (build_layer(&b->acq.build, layer, false, true, &seconds)) {
	case BUILD_OK:
		if (build_wait_wal_reset(&b->acq.build) != 0 || mark_sync(b->cfg->pgdata) != 0 ||
		    mark_write(b->cfg->pgdata, b->fp.key, true) != 0)
			return BOOT_FAILED;
		b->pd.durable = true;
		log_info("migrated PGDATA in place to %.12s in %.1f s (not cached: it holds this database's data)",
		         b->fp.key, seconds);
		return BOOT_OK;
	case BUILD_FAILED:
		return sig_received ? BOOT_INTERRUPTED : BOOT_FAILED;
	case BUILD_STEP_FAILED:
		return sig_received ? BOOT_INTERRUPTED : BOOT_STEP_FAILED;
	}
	return BOOT_FAILED;
}

/* PGDATA claimed, then holding the key's cluster: reused as it is, migrated in place, or acquired. */
static enum boot_outcome
fill_pgdata(struct boot *b)
{
	switch (pgdata_claim(&b->pd, b->fp.key, b->fp.manifest)) {
	case PGDATA_CLAIM_REFUSED:
		return BOOT_FAILED;
	case PGDATA_CLAIM_CHANGED:
		/* on_change = refuse: a policy said no, as a configuration would (exit 2). */
		return BOOT_BAD_CONFIG;
	case PGDATA_CLAIM_REUSE:
		log_info("PGDATA already holds the cluster of %.12s: nothing to restore or migrate", b->fp.key);
		b->pd.done = true;
		return BOOT_OK;
	case PGDATA_CLAIM_MIGRATE:
		return migrate_in_place(b);
	case PGDATA_CLAIM_EMPTY:
		break;
	}
	/* The password's single-user postgres loads while PGDATA fills (a hit's restore: ~10 ms off a start). */
	srv_single_start(&b->single, b->cfg, &b->pg);
	return outcome_of(acquire_run(&b->acq));
}

/*
 * Warns about superuser roles other than the configured user in a restored
 * entry: whoever wrote the cache may have planted one (a signed entry was
 * made by a trusted builder: then a migration did).
 */
static void
warn_superusers(const struct boot *b, const struct strlist *su)
{
	if (su->n == 0)
		return;
	struct strbuf names = {0};
	for (size_t i = 0; i < su->n; i++) {
		sb_append(&names, i ? ", \"" : "\"");
		/* A role name is anybody's text: no control characters into the log. */
		for (const char *c = su->v[i]; *c; c++)
			sb_appendc(&names, (unsigned char)*c < 0x20 || *c == 0x7f ? '?' : *c);
		sb_appendc(&names, '"');
	}
	log_warning("the cluster restored from cache entry %.12s… has superuser role%s other than \"%s\": %s; "
	            "if no migration creates %s, the cache was tampered with (trusted_keys refuses entries your "
	            "builders did not sign)",
	            b->fp.key, su->n > 1 ? "s" : "", b->cfg->db_user, sb_str(&names), su->n > 1 ? "them" : "it");
	sb_free(&names);
}

/*
 * A PGDATA on disk must stay so across the per-start changes: postgres
 * fsyncs the password, pg_hba.conf is fsynced, and the marker stays KEY.
 * Any other is marked "unsynced" and synced in the background: a host crash
 * before that means a rebuild, so the password step skips fsync.
 */
static enum boot_outcome
finish_pgdata(struct boot *b)
{
	const struct cfg *cfg = b->cfg;
	if (interrupted())
		return BOOT_INTERRUPTED;
	struct strlist su = {0};
	int r = srv_apply_per_start(cfg, &b->pg, b->pd.durable, b->acq.restored_hit ? &su : NULL, &b->single);
	warn_superusers(b, &su);
	sl_free(&su);
	if (r != 0 || interrupted())
		return interrupted() ? BOOT_INTERRUPTED : BOOT_FAILED;
	/* Before the marker: what a later start with another key compares with (on_change). */
	if (pgdata_record_manifest(&b->pd, b->fp.manifest) != 0)
		log_warning("a later start with a changed key will not be able to say what changed, nor migrate");
	if (!b->pd.durable &&
	    mark_finish(cfg->pgdata, b->fp.key, b->pd.lock, b->exec_pg || !stderr_is_a_pipe(), b->exec_pg) != 0)
		return BOOT_FAILED;
	b->pd.done = true;
	return BOOT_OK;
}

/* ---------- exec ---------- */

static enum boot_outcome
exec_postgres(struct boot *b, int pg_argc, char **pg_argv)
{
	const struct cfg *cfg = b->cfg;
	char *postgres = pgbin_path(&b->pg, "postgres");
	char **argv = xcalloc((size_t)pg_argc + 6, sizeof(char *));
	int n = 0;
	argv[n++] = postgres;
	argv[n++] = "-D";
	argv[n++] = cfg->pgdata;
	char *sockopt = xasprintf("unix_socket_directories=%s", cfg->socket_dir);
	argv[n++] = "-c";
	argv[n++] = sockopt;
	for (int i = 0; i < pg_argc; i++)
		argv[n++] = pg_argv[i];
	argv[n] = NULL;

	/* The server SQL users drive (COPY ... TO PROGRAM, /proc/self/environ) holds none of our secrets. */
	struct strlist env = {0};
	proc_env_inherit_public(&env);
	proc_env_set(&env, "PGDATA", cfg->pgdata);
	write_state(cfg, "ready");
	log_info("starting postgres (pid %ld)", (long)getpid());
	/*
	 * The official image's log has this line twice: its temporary server's,
	 * then the final server's.  Testcontainers (Java, Go) wait for the second,
	 * so every path says it exactly once before the final server, which says
	 * it again once it accepts connections.  Our temporary server logs to a
	 * file, never here, so there is no third.
	 */
	log_info_always("PGDATA is ready; the final server starts now (for clients that count the official "
	                "image's two lines: database system is ready to accept connections)");
	fflush(stdout);
	fflush(stderr);
	/* The broker holds the Docker socket's group: gone, and reaped, before postgres is us. */
	docker_broker_stop();
	/* From here postgres is this process: it gets docker stop's signal itself. */
	sig_child_reset();
	execve(postgres, argv, env.v);
	int e = errno;
	sl_free(&env);
	log_error("could not execute \"%s\": %s", postgres, strerror(e));
	write_state(cfg, "failed");
	free(sockopt);
	free(argv);
	free(postgres);
	return e == ENOENT ? BOOT_EXEC_NOT_FOUND : BOOT_EXEC_DENIED;
}

/* ---------- main ---------- */

static void
boot_init(struct boot *b, struct cfg *cfg, bool exec_pg)
{
	memset(b, 0, sizeof(*b));
	b->cfg = cfg;
	b->exec_pg = exec_pg;
	pgdata_init(&b->pd, cfg);
	acquire_init(&b->acq, cfg, &b->pg, &b->fp);
}

static void
boot_free(struct boot *b)
{
	srv_single_cancel(&b->single);
	acquire_free(&b->acq);
	pgdata_release(&b->pd);
	fp_result_free(&b->fp);
	pgbin_free(&b->pg);
}

/* The one rollback of a failed start: the temporary server stopped, PGDATA wiped when ours. */
static enum boot_outcome
fail(struct boot *b, enum boot_outcome rc)
{
	acquire_abort(&b->acq);
	pgdata_rollback(&b->pd);
	if (sig_received)
		rc = BOOT_INTERRUPTED;
	write_state(b->cfg, "failed");
	boot_free(b);
	return rc;
}

enum boot_outcome
boot_main(struct cfg *cfg, bool exec_pg, int pg_argc, char **pg_argv)
{
	double t0 = log_now();
	if (sig_init() != 0)
		return BOOT_FAILED;
	if (srv_check_auth(cfg) != 0)
		return BOOT_BAD_CONFIG;

	struct boot b;
	boot_init(&b, cfg, exec_pg);
	enum boot_outcome rc = set_up(&b);
	if (rc == BOOT_OK)
		rc = fill_pgdata(&b);
	if (rc == BOOT_OK)
		rc = finish_pgdata(&b);
	if (rc == BOOT_FAILED && b.acq.restored_hit && !interrupted()) {
		/* A cluster that does not start is a bad entry: once, it is replaced by a build. */
		log_warning("the cluster restored from cache entry %.12s… does not start: removing the entry and building "
		            "instead",
		            b.fp.key);
		rc = outcome_of(acquire_rebuild(&b.acq));
		if (rc == BOOT_OK)
			rc = finish_pgdata(&b);
	}
	if (rc != BOOT_OK)
		return fail(&b, rc);
	log_info("bootstrap done in %.2f s", log_now() - t0);

	acquire_finish(&b.acq);
	if (!exec_pg) {
		write_state(cfg, "prepared");
		boot_free(&b);
		return BOOT_OK;
	}
	rc = exec_postgres(&b, pg_argc, pg_argv);
	boot_free(&b);
	return rc;
}

/*
 * PGDATA/postmaster.pid's pid (line 1), port (line 4) and first socket
 * directory (line 5).  false when there is no such file.
 */
static bool
read_postmaster_pid(const char *pgdata, long *pid, char *port, size_t port_cap, char *sock, size_t sock_cap)
{
	if (!pgdata)
		return false;
	char *pidpath = path_join(pgdata, "postmaster.pid");
	char *pm = read_file(pidpath, NULL);
	free(pidpath);
	if (!pm)
		return false;
	char *save = NULL;
	int n = 0;
	for (char *line = strtok_r(pm, "\n", &save); line && n < 5; line = strtok_r(NULL, "\n", &save), n++) {
		if (n == 0)
			*pid = strtol(line, NULL, 10);
		else if (n == 3)
			snprintf(port, port_cap, "%s", line);
		else if (n == 4)
			snprintf(sock, sock_cap, "%s", line);
	}
	free(pm);
	return true;
}

int
boot_healthcheck(const struct cfg *cfg)
{
	char *p = state_path(cfg);
	char *text = read_small_file(p, SMALL_FILE_MAX, NULL);
	if (!text) {
		fprintf(stderr, "pgstash: not ready: no state file \"%s\" (bootstrap not started?)\n", p);
		free(p);
		return 1;
	}
	char state[32] = "";
	long pid = 0;
	int ok = sscanf(text, "%31s %ld", state, &pid);
	free(text);
	if (ok != 2 || strcmp(state, "ready") != 0) {
		const char *says = ok < 1                          ? "nothing readable"
		                   : strcmp(state, "failed") == 0   ? "the last bootstrap failed"
		                   : strcmp(state, "starting") == 0 ? "bootstrap is under way"
		                                                    : state;
		fprintf(stderr, "pgstash: not ready: %s (\"%s\" says so, pid %ld)\n", says, p, pid);
		free(p);
		return 1;
	}
	free(p);
	if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
		fprintf(stderr, "pgstash: not ready: the server (pid %ld) is not running\n", pid);
		return 1;
	}
	/*
	 * Where the server listens: PGHOST/PGPORT when set, else what the
	 * postmaster itself wrote in postmaster.pid (line 4 the port, line 5 the
	 * first socket directory), so `pgstash -p 5433` is found too.
	 */
	const char *host = getenv("PGHOST");
	const char *port = getenv("PGPORT");
	char pm_port[16] = "", pm_sock[1024] = "";
	long pm_pid = 0;
	if (read_postmaster_pid(cfg->pgdata, &pm_pid, pm_port, sizeof(pm_port), pm_sock, sizeof(pm_sock))) {
		if (pm_pid != pid) {
			fprintf(stderr, "pgstash: not ready: PGDATA's postmaster (pid %ld) is not the final server (pid %ld)\n",
			        pm_pid, pid);
			return 1;
		}
	}
	if (!host || !*host)
		host = *pm_sock ? pm_sock : cfg->socket_dir;
	if (!port || !*port)
		port = *pm_port ? pm_port : "5432";
	const char *user = getenv("PGUSER");
	/* A user that exists: pinging as "root" fills the server log with FATAL lines. */
	const char *keys[] = {"host", "port", "dbname", "user", "connect_timeout", "fallback_application_name", NULL};
	const char *vals[] = {host, port, "postgres", user && *user ? user : cfg->db_user, "3", "pgstash-healthcheck",
	                      NULL};
	PGPing r = PQpingParams(keys, vals, 0);
	if (r != PQPING_OK) {
		fprintf(stderr, "pgstash: not ready: the server does not accept connections yet\n");
		return 1;
	}
	return 0;
}
