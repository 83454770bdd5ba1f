/*
 * bootstrap — see bootstrap.h.
 *
 * Order of a start (DESIGN.md "The job"):
 *   1. as root: own PGDATA, the socket dir and the cache, then drop to postgres
 *   2. key; PGDATA already holding this key's cluster → reuse it as is
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
#include "docker.h"
#include "fingerprint.h"
#include "log.h"
#include "marker.h"
#include "pgbin.h"
#include "remote.h"
#include "server.h"
#include "sig.h"
#include "snapshot.h"
#include "steps.h"
#include "store.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
	BOOT_OK = 0,
	BOOT_RUNTIME = 1,
	BOOT_STEP = 3,
};

struct boot {
	struct cfg *cfg;
	struct pgbin pg;
	struct fp_result fp;
	struct store store;
	bool store_open;
	int lock_fd;
	struct srv srv;
	/* Set once PGDATA is known to be ours to wipe (empty, or a pgstash marker). */
	bool pgdata_ours;
	/* Set when PGDATA holds a complete cluster for fp.key: nothing to roll back. */
	bool pgdata_done;
	/* Set when it was found complete and on disk (the marker says KEY): nothing to sync. */
	bool pgdata_durable;
	/* mark_lock's flock on PGDATA, -1 when not held; closed, never unlocked (the syncer shares it). */
	int pgdata_lock;
	uid_t uid;
	gid_t gid;
	char *self_container;
	/* Fleet single-flight on the remote: our lease on fp.key, released in boot_free. */
	char *lease_owner;
	bool leased;
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
	char *p = state_path(cfg);
	char *text = xasprintf("%s %ld\n", state, (long)getpid());
	/* Not fatal: without it only the healthcheck is blind. */
	if (write_file_atomic(p, text, strlen(text), 0644, false) != 0)
		log_warning("the healthcheck will not see the state: could not write \"%s\"", p);
	free(text);
	free(p);
}

static int
write_marker(const struct cfg *cfg, const char *line)
{
	return mark_write(cfg->pgdata, line, false);
}

static bool
file_exists(const char *dir, const char *name)
{
	char *p = path_join(dir, name);
	bool ok = access(p, F_OK) == 0;
	free(p);
	return ok;
}

/* Reads pending signals first: long library calls (snapshot, prune) do not. */
static bool
interrupted(void)
{
	sig_drain();
	return sig_received != 0;
}

static int
exit_for_signal(void)
{
	return sig_received ? 128 + sig_received : BOOT_RUNTIME;
}

/* The first 12 characters of a key, for messages; several may appear in one call. */
static const char *
short_key(const char *key)
{
	static char bufs[4][16];
	static unsigned next;
	char *buf = bufs[next++ % 4];
	snprintf(buf, 16, "%.12s", key);
	return buf;
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

/* ---------- privileges (as the official image's gosu step) ---------- */

static uid_t chown_uid;
static gid_t chown_gid;

static int
chown_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)ftw;
	/* Gone between readdir and stat or lchown: the temp file of a background syncer's marker. */
	if (type == FTW_NS)
		return 0;
	if ((sb->st_uid != chown_uid || sb->st_gid != chown_gid) && lchown(path, chown_uid, chown_gid) != 0 &&
	    errno != ENOENT) {
		log_error("could not change owner of \"%s\": %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int
chown_tree(const char *path, uid_t uid, gid_t gid)
{
	chown_uid = uid;
	chown_gid = gid;
	if (nftw(path, chown_one, 32, FTW_PHYS | FTW_MOUNT) != 0 && errno != ENOENT)
		return -1;
	return 0;
}

static int
prepare_dir_as_root(const char *dir, mode_t mode, uid_t uid, gid_t gid, bool recursive)
{
	if (mkdir_p(dir, mode) != 0)
		return -1;
	if (recursive ? chown_tree(dir, uid, gid) != 0 : chown(dir, uid, gid) != 0) {
		if (!recursive)
			log_error("could not change owner of \"%s\": %s", dir, strerror(errno));
		return -1;
	}
	if (chmod(dir, mode) != 0) {
		log_error("could not change mode of \"%s\": %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Started as root: give the postgres user what it must write, then become it
 * for good (setgroups, setgid, setuid, in that order), before initdb, the
 * steps and the exec.  postgres refuses to run as root anyway.
 */
static int
drop_privileges(struct boot *b)
{
	const struct cfg *cfg = b->cfg;
	struct passwd *pw = getpwnam("postgres");
	if (!pw) {
		log_error("started as root, but there is no \"postgres\" user to run the server as");
		return -1;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	char *home = xstrdup(pw->pw_dir);

	int rc = -1;
	if (prepare_dir_as_root(cfg->pgdata, 0700, uid, gid, true) != 0)
		goto cleanup;
	if (prepare_dir_as_root(cfg->socket_dir, 03775, uid, gid, false) != 0)
		goto cleanup;
	if (cfg->initdb_waldir && prepare_dir_as_root(cfg->initdb_waldir, 0700, uid, gid, true) != 0)
		goto cleanup;
	/* The cache is not essential: trouble there only costs the caching. */
	if (mkdir_p(cfg->cache_dir, 0755) == 0) {
		if (chown(cfg->cache_dir, uid, gid) != 0)
			log_warning("could not change owner of \"%s\": %s", cfg->cache_dir, strerror(errno));
		char *v1 = path_join(cfg->cache_dir, "pgstash-v1");
		if (access(v1, F_OK) == 0)
			chown_tree(v1, uid, gid);
		free(v1);
	}

	/* Container steps need the Docker socket: join its group, nothing more. */
	gid_t groups[2];
	int ngroups = 0;
	groups[ngroups++] = gid;
	bool wants_docker = false;
	for (size_t i = 0; i < cfg->n_steps; i++)
		wants_docker = wants_docker || cfg->steps[i].image;
	struct stat sst;
	if (wants_docker && stat(cfg->docker_socket, &sst) == 0 && sst.st_gid != gid)
		groups[ngroups++] = sst.st_gid;

	if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		log_error("could not switch to user \"postgres\": %s", strerror(errno));
		goto cleanup;
	}
	if (setuid(0) == 0) {
		log_error("dropped privileges but could become root again: refusing to go on");
		goto cleanup;
	}
	/* Owned by postgres now, but behind a directory postgres cannot search (a cache under /root): an error, not a quiet loss of the caching asked for. */
	if (access(cfg->cache_dir, W_OK | X_OK) != 0 && errno == EACCES) {
		log_error("cache directory \"%s\" is not reachable for the postgres user that pgstash runs as when started as root: %s; "
		          "use a directory postgres can reach (e.g. /var/cache/pgstash) or make its parents searchable (chmod o+x)",
		          cfg->cache_dir, strerror(errno));
		goto cleanup;
	}
	setenv("HOME", home, 1);
	setenv("USER", "postgres", 1);
	setenv("LOGNAME", "postgres", 1);
	log_debug("running as postgres (uid %ld, gid %ld)", (long)uid, (long)gid);
	rc = 0;
cleanup:
	free(home);
	return rc;
}

/* ---------- PGDATA ---------- */

/* A process that exists and is not a zombie waiting to be reaped (a killed postmaster is one for a while). */
static bool
process_alive(pid_t pid)
{
	if (kill(pid, 0) != 0 && errno != EPERM)
		return false;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	char *stat = read_file(path, NULL);
	if (!stat)
		return true;
	/* "pid (comm) S ...": the state follows the last ')'. */
	const char *close = strrchr(stat, ')');
	bool zombie = close && close[1] == ' ' && close[2] == 'Z';
	free(stat);
	return !zombie;
}

/*
 * Decides what PGDATA is: 1 = already holds this key's cluster (reuse),
 * 0 = empty and ours now, -1 = not ours to touch or unusable (logged).
 */
static int
claim_pgdata(struct boot *b)
{
	const struct cfg *cfg = b->cfg;
	struct stat st;

	if (stat(cfg->pgdata, &st) != 0) {
		if (errno != ENOENT) {
			log_error("could not access PGDATA \"%s\": %s", cfg->pgdata, strerror(errno));
			return -1;
		}
		if (mkdir_p(cfg->pgdata, 0700) != 0)
			return -1;
	} else if (!S_ISDIR(st.st_mode)) {
		log_error("PGDATA \"%s\" is not a directory", cfg->pgdata);
		return -1;
	} else if (access(cfg->pgdata, W_OK) != 0) {
		log_error("PGDATA \"%s\" is not writable by this user (uid %ld): %s", cfg->pgdata, (long)getuid(),
		          strerror(errno));
		return -1;
	}

	/*
	 * From here on nobody else changes PGDATA: the background syncer of an
	 * earlier start still at work (tens of milliseconds, usually), or a
	 * second start on the same PGDATA, finishes first.
	 */
	int lr = mark_lock(cfg->pgdata, cfg->lock_timeout, &b->pgdata_lock);
	if (lr != 0) {
		if (lr == 1)
			log_error("PGDATA \"%s\" is locked by another pgstash process for more than %ld s", cfg->pgdata,
			          cfg->lock_timeout);
		return -1;
	}

	/* A live server on this PGDATA: neither reuse nor wipe under it. */
	char *pidpath = path_join(cfg->pgdata, "postmaster.pid");
	char *pidtext = read_file(pidpath, NULL);
	free(pidpath);
	if (pidtext) {
		long pm = strtol(pidtext, NULL, 10);
		free(pidtext);
		/* In a restarted container the stale pid is often 1: ours now, as postgres does it. */
		if (pm > 0 && pm != (long)getpid() && pm != (long)getppid() && process_alive((pid_t)pm)) {
			log_error("PGDATA \"%s\" is in use by a running server (pid %ld, from postmaster.pid)", cfg->pgdata, pm);
			return -1;
		}
	}

	char *marker = mark_read(cfg->pgdata);
	if (marker) {
		char key[MARK_KEY_MAX + 1], boot[MARK_BOOT_ID_LEN + 1], now[MARK_BOOT_ID_LEN + 1];
		bool unsynced = mark_parse_unsynced(marker, key, boot);
		const char *named = unsynced ? key : marker;
		/*
		 * This key's cluster: reuse it, also after an unclean stop (postgres
		 * recovers it; the stale postmaster.pid is its own business).  One
		 * not yet confirmed on disk only under the kernel that wrote it: the
		 * page cache then still holds every write.  Its sync is left to the
		 * marker this start writes at its end.
		 */
		if (strcmp(named, b->fp.key) == 0 && file_exists(cfg->pgdata, "PG_VERSION")) {
			if (!unsynced) {
				free(marker);
				b->pgdata_durable = true;
				return 1;
			}
			if (mark_boot_id(now) == 0 && strcmp(now, boot) == 0) {
				log_info("PGDATA's cluster of %s is not confirmed on disk yet, but the host has not restarted since "
				         "it was written: reusing it",
				         short_key(key));
				free(marker);
				return 1;
			}
			log_info("PGDATA's cluster of %s was never confirmed on disk and the host has restarted since (boot id "
			         "%.8s, now %.8s): it may be incomplete, starting it over",
			         short_key(key), boot, mark_boot_id(now) == 0 ? now : "unknown");
		} else if (!unsynced && (strncmp(marker, "building ", 9) == 0 || strncmp(marker, "restoring ", 10) == 0 ||
		                         strncmp(marker, "unsynced", 8) == 0 || !*marker))
			log_info("PGDATA holds an unfinished bootstrap: starting it over");
		else
			log_info("PGDATA holds the cluster of key %s: replacing it with %s", short_key(named),
			         short_key(b->fp.key));
		free(marker);
		b->pgdata_ours = true;
		if (empty_dir(cfg->pgdata) != 0)
			return -1;
		return 0;
	}
	if (!dir_is_empty(cfg->pgdata)) {
		if (file_exists(cfg->pgdata, "PG_VERSION"))
			log_error("PGDATA \"%s\" holds a database cluster that pgstash did not create: refusing to touch it "
			          "(use an empty directory or volume, or remove it yourself)",
			          cfg->pgdata);
		else
			log_error("PGDATA \"%s\" is not empty and holds no database cluster: refusing to touch it", cfg->pgdata);
		return -1;
	}
	b->pgdata_ours = true;
	return 0;
}

/* The one place that rolls PGDATA back: only what pgstash itself created. */
static void
rollback(struct boot *b)
{
	if (b->srv.pid > 0)
		srv_stop(&b->srv);
	if (b->pgdata_ours && !b->pgdata_done) {
		log_info("removing the unfinished cluster from PGDATA \"%s\"", b->cfg->pgdata);
		empty_dir(b->cfg->pgdata);
		if (b->cfg->initdb_waldir)
			empty_dir(b->cfg->initdb_waldir);
	}
}

/* ---------- the build ---------- */

static int
run_container_step(struct boot *b, const struct cfg_step *step)
{
	const struct cfg *cfg = b->cfg;
	struct docker d;
	int rc = -1;
	char **argv = NULL;
	struct strlist env = {0};
	const char *why;

	if (!b->self_container && docker_self_container_id(&b->self_container) != 0) {
		log_error("step \"%s\": could not find this container's id, which the step needs to reach the temporary "
		          "server (is pgstash running in a container?)",
		          step->name);
		return -1;
	}
	argv = step_split_argv(step->run, &why);
	if (!argv) {
		log_error("step \"%s\": bad run command: %s", step->name, why);
		return -1;
	}
	if (docker_open(&d, cfg->docker_socket) != 0) {
		step_argv_free(argv);
		return -1;
	}
	const char *db = step->database ? step->database : (cfg->db_name ? cfg->db_name : cfg->db_user);
	srv_client_env(&b->srv, cfg, db, &env);
	for (size_t i = 0; i < step->env.n; i++)
		srv_env_put(&env, step->env.v[i]);
	char *net = xasprintf("container:%s", b->self_container);
	char *prefix = xasprintf("[step %s] ", step->name);
	struct docker_run_opts o = {
		.image = step->image,
		.argv = argv,
		.env = env.v,
		.network_mode = net,
		.step = step->name,
		.owner = b->self_container,
		.log_prefix = prefix,
		.timeout_s = (double)(step->timeout ? step->timeout : cfg->step_timeout),
	};
	double t0 = log_now();
	log_info("step %s: running \"%s\" in a container of image \"%s\"", step->name, step->run, step->image);
	int code = 0;
	if (docker_run(&d, &o, &code) != 0) {
		if (sig_received)
			log_error("step %s stopped after %.1f s: pgstash received signal %d", step->name, log_now() - t0,
			          (int)sig_received);
		else
			log_error("step %s: the container could not be run", step->name);
	}
	else if (code != 0)
		log_error("step %s failed: the container exited with status %d after %.1f s", step->name, code,
		          log_now() - t0);
	else {
		log_info("step %s finished in %.1f s", step->name, log_now() - t0);
		rc = 0;
	}
	free(prefix);
	free(net);
	sl_free(&env);
	step_argv_free(argv);
	docker_close(&d);
	return rc;
}

int
boot_resolve_images(struct cfg *cfg)
{
	struct docker d;
	bool opened = false;
	int rc = 0;
	for (size_t i = 0; i < cfg->n_steps && rc == 0; i++) {
		struct cfg_step *st = &cfg->steps[i];
		if (!st->image || !st->image_id)
			continue;
		if (!opened) {
			if (docker_open(&d, cfg->docker_socket) != 0)
				return -1;
			opened = true;
		}
		free(st->resolved_image_id);
		st->resolved_image_id = NULL;
		int r = docker_image_id(&d, st->image, &st->resolved_image_id);
		if (r != 0) {
			log_error("step \"%s\": image_id = yes, but the ID of image \"%s\" is unknown", st->name, st->image);
			rc = -1;
		}
	}
	if (opened)
		docker_close(&d);
	return rc;
}

/*
 * Before initdb: every step image must exist, and containers a killed
 * predecessor of this sidecar left behind are removed.  0 or -1 (logged).
 */
static int
check_images(struct boot *b)
{
	const struct cfg *cfg = b->cfg;
	struct docker d;
	bool opened = false;
	int rc = 0;
	for (size_t i = 0; i < cfg->n_steps; i++) {
		const struct cfg_step *st = &cfg->steps[i];
		if (!st->image)
			continue;
		if (!opened) {
			if (docker_open(&d, cfg->docker_socket) != 0)
				return -1;
			opened = true;
			if (!b->self_container && docker_self_container_id(&b->self_container) != 0) {
				log_error("step \"%s\" runs in a container, which must join this container's network, but pgstash "
				          "could not find its own container id (is it running in a container?)",
				          st->name);
				rc = -1;
				break;
			}
			char *label = xasprintf("%s=%s", DOCKER_LABEL_OWNER, b->self_container);
			int n = docker_remove_labelled(&d, label);
			if (n > 0)
				log_info("removed %d step container%s left by an earlier, interrupted start", n, n == 1 ? "" : "s");
			free(label);
		}
		char *id = NULL;
		int r = docker_image_id(&d, st->image, &id);
		free(id);
		if (r != 0) {
			rc = -1;
			break;
		}
	}
	if (opened)
		docker_close(&d);
	return rc;
}

/*
 * initdb needs an empty directory, and PGDATA must carry pgstash's marker
 * before anything else lands in it: a kill -9 during initdb would otherwise
 * leave a cluster without a marker, which no later start may touch.  So the
 * marker goes first, initdb runs into PGDATA/pgstash.initdb, and its entries
 * are renamed up (cheap: two dozen names on one file system).
 */
static int
initdb_in_place(struct boot *b)
{
	const struct cfg *cfg = b->cfg;
	char *text = xasprintf("building %s", b->fp.key);
	int rc = write_marker(cfg, text);
	free(text);
	if (rc != 0)
		return -1;
	char *sub = path_join(cfg->pgdata, "pgstash.initdb");
	struct cfg at = *cfg;
	at.pgdata = sub;
	rc = -1;
	if (srv_initdb(&at, &b->pg) != 0)
		goto cleanup;
	DIR *d = opendir(sub);
	if (!d) {
		log_error("could not open directory \"%s\": %s", sub, strerror(errno));
		goto cleanup;
	}
	struct dirent *de;
	rc = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *from = path_join(sub, de->d_name);
		char *to = path_join(cfg->pgdata, de->d_name);
		if (rename(from, to) != 0) {
			log_error("could not rename \"%s\" to \"%s\": %s", from, to, strerror(errno));
			rc = -1;
		}
		free(from);
		free(to);
		if (rc != 0)
			break;
	}
	closedir(d);
	if (rc == 0 && rmdir(sub) != 0) {
		log_error("could not remove directory \"%s\": %s", sub, strerror(errno));
		rc = -1;
	}
	/* What initdb does to its target: the server refuses a group- or world-accessible PGDATA. */
	if (rc == 0 && chmod(cfg->pgdata, 0700) != 0) {
		log_error("could not change mode of \"%s\": %s", cfg->pgdata, strerror(errno));
		rc = -1;
	}
cleanup:
	free(sub);
	return rc;
}

/*
 * Runs the steps of one layer on PGDATA and leaves a cleanly shut-down
 * cluster.  `fresh`: initdb, the databases and initdb.d first (otherwise
 * PGDATA holds a restored snapshot to build on).  `last`: the clones are made
 * once the steps are done.  Returns BOOT_OK, BOOT_STEP (a step or initdb.d
 * script failed) or BOOT_RUNTIME.
 */
static int
build_layer(struct boot *b, enum cfg_layer layer, bool fresh, bool last, double *seconds)
{
	const struct cfg *cfg = b->cfg;
	double t0 = log_now();
	bool tcp = false;
	for (size_t i = 0; i < cfg->n_steps; i++)
		tcp = tcp || (cfg->steps[i].image && cfg->steps[i].layer == layer);
	if (tcp && check_images(b) != 0)
		return BOOT_RUNTIME;

	if (fresh && initdb_in_place(b) != 0)
		return BOOT_RUNTIME;
	if (sig_received)
		return BOOT_RUNTIME;
	if (srv_start_temp(&b->srv, cfg, &b->pg, tcp) != 0)
		return BOOT_RUNTIME;
	if (fresh) {
		if (srv_setup_databases(&b->srv, cfg) != 0)
			return BOOT_RUNTIME;
		if (srv_run_initdb_d(&b->srv, cfg) != 0)
			return sig_received ? BOOT_RUNTIME : BOOT_STEP;
	}
	for (size_t i = 0; i < cfg->n_steps; i++) {
		if (sig_received)
			return BOOT_RUNTIME;
		const struct cfg_step *step = &cfg->steps[i];
		if (step->layer != layer)
			continue;
		int r = step->image ? run_container_step(b, step) : step_run_command(step, cfg, &b->srv);
		if (r != 0)
			return sig_received ? BOOT_RUNTIME : BOOT_STEP;
	}
	if (last && srv_create_clones(&b->srv, cfg) != 0)
		return BOOT_RUNTIME;
	if (srv_stop(&b->srv) != 0)
		return BOOT_RUNTIME;
	if (srv_reset_wal(cfg, &b->pg) != 0)
		return BOOT_RUNTIME;
	*seconds = log_now() - t0;
	return BOOT_OK;
}

/* ---------- hit / miss ---------- */

/*
 * Restores `meta` into PGDATA (marked as pgstash's first).  0 restored; -1
 * failed (PGDATA left empty, a bad entry removed by the store).  `what`
 * names the restore in the summary line ("cache hit", "schema layer"...).
 */
static int
restore(struct boot *b, struct store_meta *meta, const char *what)
{
	struct snap_stats st;
	char *text = xasprintf("restoring %s", b->fp.key);
	int rc = write_marker(b->cfg, text);
	free(text);
	if (rc != 0)
		return -1;
	if (store_restore(&b->store, meta, b->cfg->pgdata, (uid_t)-1, (gid_t)-1, b->pg.major, &st) != 0) {
		empty_dir(b->cfg->pgdata);
		return -1;
	}
	char size[32];
	log_info("%s %s: restored %s in %.2f s (building it took %.1f s)", what, short_key(meta->key),
	         log_bytes(size, st.archive_bytes), st.seconds, meta->build_seconds);
	return 0;
}

/*
 * Looks the key up and restores it under a shared lock.  1 restored, 0 not in
 * the cache (or the entry was bad and removed), -1 interrupted.
 */
static int
try_hit(struct boot *b)
{
	struct store_meta meta;
	int found = store_lookup(&b->store, b->fp.key, &meta);
	if (found != 1)
		return 0;
	int fd = -1;
	int lr = store_lock(&b->store, b->fp.key, false, b->cfg->lock_timeout, &fd);
	int rc = 0;
	if (lr == 0) {
		/* The entry may have been pruned while we waited. */
		struct store_meta again;
		if (store_lookup(&b->store, b->fp.key, &again) == 1) {
			rc = restore(b, &again, "cache hit") == 0 ? 1 : 0;
			store_meta_free(&again);
		}
		store_unlock(fd);
	} else if (lr == 1)
		log_warning("gave up waiting for the lock on %s after %ld s: building without it", short_key(b->fp.key),
		            b->cfg->lock_timeout);
	store_meta_free(&meta);
	if (sig_received)
		return -1;
	return rc;
}

static bool
cache_usable(const struct boot *b)
{
	return b->store_open && b->store.usable;
}

/*
 * Prefix reuse: restores the cached entry of `layer` that `manifest` extends
 * the most (fp_prefix_score), when a step of the layer has incremental = yes.
 * Returns true when PGDATA now holds it.  One pass over the entries.
 */
static bool
restore_prefix(struct boot *b, enum cfg_layer layer, const char *manifest, char *from, size_t from_cap)
{
	const struct cfg *cfg = b->cfg;
	bool wanted = false;
	for (size_t i = 0; i < cfg->n_steps; i++)
		wanted = wanted || (cfg->steps[i].layer == layer && cfg->steps[i].incremental);
	if (!wanted || !cache_usable(b))
		return false;
	struct store_meta *all = NULL;
	size_t n = 0;
	if (store_list(&b->store, &all, &n) != 0)
		return false;
	long best_score = -1;
	size_t best = 0;
	for (size_t i = 0; i < n; i++) {
		if (all[i].layer != layer || !all[i].manifest)
			continue;
		long sc = fp_prefix_score(all[i].manifest, manifest, cfg);
		if (sc > best_score) {
			best_score = sc;
			best = i;
		}
	}
	bool ok = false;
	if (best_score >= 0) {
		int fd = -1;
		char key[65];
		snprintf(key, sizeof(key), "%s", all[best].key);
		if (store_lock(&b->store, key, false, cfg->lock_timeout, &fd) == 0) {
			struct store_meta meta;
			if (store_lookup(&b->store, key, &meta) == 1) {
				ok = restore(b, &meta, "prefix") == 0;
				store_meta_free(&meta);
			}
			store_unlock(fd);
		}
		if (ok) {
			snprintf(from, from_cap, "%s", key);
			log_info("starting from cached entry %s (%ld migration files already applied)", short_key(key),
			         best_score);
		}
	}
	store_list_free(all, n);
	return ok;
}

/*
 * Publishes PGDATA (cleanly shut down) as `key`.  Not fatal: a cache that
 * cannot take it only costs the caching.  Returns the archive size, 0 when
 * not cached.
 */
static uint64_t
publish(struct boot *b, const char *key, const char *parent, enum cfg_layer layer, const char *manifest,
        double seconds)
{
	const struct cfg *cfg = b->cfg;
	if (!cache_usable(b))
		return 0;
	struct store_meta meta;
	memset(&meta, 0, sizeof(meta));
	snprintf(meta.key, sizeof(meta.key), "%s", key);
	if (parent)
		snprintf(meta.parent, sizeof(meta.parent), "%s", parent);
	meta.layer = layer;
	meta.manifest = xstrdup(manifest);
	snprintf(meta.pg_version, sizeof(meta.pg_version), "%s", b->pg.version);
	meta.build_seconds = seconds;
	struct snap_stats st;
	double t = log_now();
	uint64_t bytes = 0;
	if (store_publish(&b->store, cfg->pgdata, &meta, cfg->compression, cfg->compression_level, &st) == 0) {
		char a[32], p[32];
		log_info("snapshot %s written in %.2f s (%s from %s of PGDATA)", short_key(key), log_now() - t,
		         log_bytes(a, st.archive_bytes), log_bytes(p, st.pgdata_bytes));
		bytes = st.archive_bytes ? st.archive_bytes : 1;
		/* Before the lease goes: waiters on other runners give up when it disappears. */
		if (remote_enabled(&cfg->remote) && strcmp(key, b->fp.key) == 0 && meta.archive) {
			char *mp = xasprintf("%s/%s.meta", b->store.dir, key);
			double tu = log_now();
			if (remote_put(&cfg->remote, key, meta.archive, mp) == 0)
				log_info("uploaded %s to the remote in %.2f s", short_key(key), log_now() - tu);
			free(mp);
		}
	}
	store_meta_free(&meta);
	return bytes;
}

/*
 * Brings PGDATA to `layer` under `key`: restores the key itself when asked
 * (the schema layer below fixtures), else starts from a prefix entry or from
 * scratch (schema) / from the schema layer already in PGDATA (fixtures), runs
 * the layer's steps and publishes.  Returns a BOOT_ code.
 */
static int
obtain_layer(struct boot *b, enum cfg_layer layer, const char *key, const char *parent, const char *manifest,
             bool try_key, bool last)
{
	if (try_key && cache_usable(b)) {
		struct store_meta meta;
		if (store_lookup(&b->store, key, &meta) == 1) {
			int r = restore(b, &meta, "schema layer");
			store_meta_free(&meta);
			if (r == 0)
				return BOOT_OK;
			if (sig_received)
				return exit_for_signal();
		}
	}
	char from[65] = "";
	bool fresh;
	if (layer == CFG_LAYER_SCHEMA)
		fresh = !restore_prefix(b, layer, manifest, from, sizeof(from));
	else
		fresh = false;
	if (sig_received)
		return exit_for_signal();
	if (fresh)
		log_info("cache miss %s: building (initdb + %s steps)", short_key(key), cfg_layer_name(layer));
	else
		log_info("cache miss %s: running the %s steps on %s", short_key(key), cfg_layer_name(layer),
		         *from ? short_key(from) : "the schema layer");
	double seconds = 0;
	int rc = build_layer(b, layer, fresh, last, &seconds);
	if (rc != BOOT_OK)
		return sig_received ? exit_for_signal() : rc;
	uint64_t bytes = publish(b, key, parent, layer, manifest, seconds);
	if (interrupted())
		return exit_for_signal();
	char a[32];
	const char *what = layer == CFG_LAYER_FIXTURES ? "fixtures loaded" : "migrated";
	if (*from)
		log_info("cache miss %s: started from %s, %s in %.1f s, %s%s", short_key(key), short_key(from), what, seconds,
		         bytes ? "cached " : "not cached", bytes ? log_bytes(a, bytes) : "");
	else
		log_info("cache miss %s: %s in %.1f s, %s%s", short_key(key), what, seconds, bytes ? "cached " : "not cached",
		         bytes ? log_bytes(a, bytes) : "");
	return BOOT_OK;
}

/*
 * The shared remote, on a local miss: download the entry (digest checked
 * while downloading), import it into the local cache and restore it; or take
 * the fleet lease and build; or wait for another runner's build.  1 restored,
 * 0 build locally, -1 interrupted.
 */
static int
try_remote(struct boot *b)
{
	const struct remote_cfg *rc = &b->cfg->remote;
	if (!remote_enabled(rc) || !cache_usable(b))
		return 0;
	if (!b->lease_owner) {
		char host[256] = "";
		gethostname(host, sizeof(host) - 1);
		b->lease_owner = xasprintf("%s:%ld", *host ? host : "pgstash", (long)getpid());
	}
	for (int round = 0; round < 2; round++) {
		char *a = NULL, *m = NULL;
		int g = remote_get(rc, b->fp.key, b->store.tmp_dir, &a, &m);
		if (g == 0) {
			int ok = 0;
			struct store_meta meta;
			if (store_import(&b->store, b->fp.key, a, m) == 0 && store_lookup(&b->store, b->fp.key, &meta) == 1) {
				ok = restore(b, &meta, "remote hit") == 0;
				store_meta_free(&meta);
			}
			free(a);
			free(m);
			return sig_received ? -1 : ok;
		}
		if (sig_received)
			return -1;
		if (g < 0 || round == 1)
			return 0;
		int l = remote_lease(rc, b->fp.key, b->lease_owner, b->cfg->lock_timeout);
		if (l == 0) {
			b->leased = true;
			return 0;
		}
		if (l < 0)
			return sig_received ? -1 : 0;
		log_info("another runner is building %s: waiting for it on the remote", short_key(b->fp.key));
		int w = remote_wait_for(rc, b->fp.key, b->cfg->lock_timeout);
		if (w < 0)
			return -1;
		if (w == 1) {
			b->leased = remote_lease(rc, b->fp.key, b->lease_owner, b->cfg->lock_timeout) == 0;
			return 0;
		}
	}
	return 0;
}

static int
miss(struct boot *b)
{
	const struct cfg *cfg = b->cfg;
	int rc;

	if (cache_usable(b)) {
		int lr = store_lock(&b->store, b->fp.key, true, cfg->lock_timeout, &b->lock_fd);
		if (lr == 1)
			log_warning("gave up waiting for another builder of %s after %ld s: building too",
			            short_key(b->fp.key), cfg->lock_timeout);
		else if (lr < 0 || sig_received)
			return sig_received ? exit_for_signal() : BOOT_RUNTIME;
		/* Whoever held the lock may have published the key meanwhile. */
		if (lr == 0) {
			struct store_meta meta;
			if (store_lookup(&b->store, b->fp.key, &meta) == 1) {
				log_info("another pgstash built %s while we waited", short_key(b->fp.key));
				int r = restore(b, &meta, "cache hit");
				store_meta_free(&meta);
				if (r == 0)
					return BOOT_OK;
				if (sig_received)
					return exit_for_signal();
			}
		}
	}

	int rr = try_remote(b);
	if (rr == 1)
		return BOOT_OK;
	if (rr < 0)
		return exit_for_signal();

	if (!b->fp.has_fixtures) {
		rc = obtain_layer(b, CFG_LAYER_SCHEMA, b->fp.key, NULL, b->fp.manifest, false, true);
	} else {
		/* Lock order is always full key, then schema key: two builders cannot deadlock. */
		int sfd = -1;
		if (cache_usable(b) && store_lock(&b->store, b->fp.schema_key, true, cfg->lock_timeout, &sfd) < 0)
			return sig_received ? exit_for_signal() : BOOT_RUNTIME;
		rc = obtain_layer(b, CFG_LAYER_SCHEMA, b->fp.schema_key, NULL, b->fp.schema_manifest, true, false);
		if (sfd >= 0)
			store_unlock(sfd);
		if (rc == BOOT_OK)
			rc = obtain_layer(b, CFG_LAYER_FIXTURES, b->fp.key, b->fp.schema_key, b->fp.manifest, false, true);
	}
	if (rc == BOOT_OK && cache_usable(b))
		store_prune(&b->store, cfg->max_bytes, cfg->max_entries, false, b->fp.key, NULL);
	return rc;
}

/* ---------- exec ---------- */

static int
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

	setenv("PGDATA", cfg->pgdata, 1);
	write_state(cfg, "ready");
	log_info("starting postgres (pid %ld)", (long)getpid());
	fflush(stdout);
	fflush(stderr);
	/* From here postgres is this process: it gets docker stop's signal itself. */
	sig_child_reset();
	execv(postgres, argv);
	int e = errno;
	log_error("could not execute \"%s\": %s", postgres, strerror(e));
	write_state(cfg, "failed");
	free(sockopt);
	free(argv);
	free(postgres);
	return e == ENOENT ? 127 : 126;
}

/* ---------- main ---------- */

static void
boot_free(struct boot *b)
{
	if (b->leased) {
		remote_lease_release(&b->cfg->remote, b->fp.key, b->lease_owner);
		b->leased = false;
	}
	free(b->lease_owner);
	b->lease_owner = NULL;
	if (b->lock_fd >= 0)
		store_unlock(b->lock_fd);
	/* close, not LOCK_UN: that would unlock the background syncer's share too. */
	if (b->pgdata_lock >= 0)
		close(b->pgdata_lock);
	b->pgdata_lock = -1;
	if (b->store_open)
		store_close(&b->store);
	fp_result_free(&b->fp);
	pgbin_free(&b->pg);
	free(b->self_container);
}

int
boot_main(struct cfg *cfg, bool exec_pg, int pg_argc, char **pg_argv)
{
	struct boot b;
	memset(&b, 0, sizeof(b));
	b.cfg = cfg;
	b.lock_fd = -1;
	b.pgdata_lock = -1;
	int rc = BOOT_RUNTIME;
	double t0 = log_now();

	if (sig_init() != 0)
		return BOOT_RUNTIME;
	if (srv_check_auth(cfg) != 0)
		return 2;
	if (geteuid() == 0 && drop_privileges(&b) != 0)
		goto cleanup;
	if (mkdir_p(cfg->socket_dir, 0775) != 0)
		log_warning("the healthcheck will not work without the socket directory \"%s\"", cfg->socket_dir);
	write_state(cfg, "starting");
	srv_sweep_stale_dirs();

	if (pgbin_find(cfg->pg_bindir, &b.pg) != 0)
		goto cleanup;
	if (boot_resolve_images(cfg) != 0)
		goto cleanup;
	double t = log_now();
	if (fp_compute(cfg, b.pg.major, NULL, &b.fp) != 0) {
		rc = 2;
		goto cleanup;
	}
	log_info("key %s (%llu files, %.2f s)", b.fp.key, (unsigned long long)b.fp.files, log_now() - t);

	int claim = claim_pgdata(&b);
	if (claim < 0)
		goto cleanup;
	if (claim == 1) {
		log_info("PGDATA already holds the cluster of %s: nothing to restore or migrate", short_key(b.fp.key));
		b.pgdata_done = true;
	} else {
		b.store_open = true;
		store_open(&b.store, cfg->cache_dir);
		int hit = b.store.usable ? try_hit(&b) : 0;
		if (hit < 0) {
			rc = exit_for_signal();
			goto cleanup;
		}
		if (hit == 0) {
			rc = miss(&b);
			if (rc != BOOT_OK)
				goto cleanup;
		}
	}
	if (interrupted()) {
		rc = exit_for_signal();
		goto cleanup;
	}
	/*
	 * A PGDATA on disk must stay so across the per-start changes: postgres
	 * fsyncs the password, pg_hba.conf is fsynced, and the marker stays KEY.
	 * Any other is marked "unsynced" and synced in the background: a host
	 * crash before that means a rebuild, so the password step skips fsync.
	 */
	if (srv_apply_per_start(cfg, &b.pg, b.pgdata_durable) != 0 || interrupted()) {
		rc = interrupted() ? exit_for_signal() : BOOT_RUNTIME;
		goto cleanup;
	}
	if (!b.pgdata_durable && mark_finish(cfg->pgdata, b.fp.key, b.pgdata_lock, exec_pg || !stderr_is_a_pipe()) != 0)
		goto cleanup;
	b.pgdata_done = true;
	log_info("bootstrap done in %.2f s", log_now() - t0);
	rc = BOOT_OK;

cleanup:
	if (rc != BOOT_OK) {
		rollback(&b);
		if (sig_received)
			rc = 128 + sig_received;
		write_state(cfg, "failed");
		boot_free(&b);
		return rc;
	}
	if (b.lock_fd >= 0) {
		store_unlock(b.lock_fd);
		b.lock_fd = -1;
	}
	if (b.store_open) {
		store_close(&b.store);
		b.store_open = false;
	}
	if (!exec_pg) {
		write_state(cfg, "prepared");
		boot_free(&b);
		return BOOT_OK;
	}
	rc = exec_postgres(&b, pg_argc, pg_argv);
	boot_free(&b);
	return rc;
}

int
boot_healthcheck(const struct cfg *cfg)
{
	char *p = state_path(cfg);
	char *text = read_file(p, NULL);
	if (!text) {
		fprintf(stderr, "pgstash: not ready: no state file \"%s\" (bootstrap not started?)\n", p);
		free(p);
		return 1;
	}
	free(p);
	char state[32] = "";
	long pid = 0;
	int ok = sscanf(text, "%31s %ld", state, &pid);
	free(text);
	if (ok != 2 || strcmp(state, "ready") != 0) {
		fprintf(stderr, "pgstash: not ready: bootstrap is %s\n", ok >= 1 ? state : "in an unknown state");
		return 1;
	}
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
	char *pm = NULL;
	if (cfg->pgdata) {
		char *pidpath = path_join(cfg->pgdata, "postmaster.pid");
		pm = read_file(pidpath, NULL);
		free(pidpath);
	}
	if (pm) {
		char *save = NULL;
		int n = 0;
		long pm_pid = 0;
		for (char *line = strtok_r(pm, "\n", &save); line && n < 5; line = strtok_r(NULL, "\n", &save), n++) {
			if (n == 0)
				pm_pid = strtol(line, NULL, 10);
			else if (n == 3)
				snprintf(pm_port, sizeof(pm_port), "%s", line);
			else if (n == 4)
				snprintf(pm_sock, sizeof(pm_sock), "%s", line);
		}
		free(pm);
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
