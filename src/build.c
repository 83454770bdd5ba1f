/*
 * build — see build.h.
 */
#include "build.h"
#include "docker.h"
#include "fingerprint.h"
#include "log.h"
#include "marker.h"
#include "pgbin.h"
#include "proc.h"
#include "sig.h"
#include "steps.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void
build_init(struct build *bd, const struct cfg *cfg, const struct pgbin *pg, const char *key)
{
	memset(bd, 0, sizeof(*bd));
	bd->cfg = cfg;
	bd->pg = pg;
	bd->key = key;
	bd->wal_reset.logfd = -1;
}

void
build_abort(struct build *bd)
{
	if (bd->srv.pid > 0)
		srv_stop(&bd->srv);
	build_wait_wal_reset(bd);
}

int
build_wait_wal_reset(struct build *bd)
{
	if (bd->wal_reset.pid > 0) {
		double asked = log_now();
		bd->wal_reset_failed = srv_tool_wait(&bd->wal_reset) != 0;
		/* When pg_resetwal itself ended is not known here: what it cost is the wait. */
		if (!bd->wal_reset_failed)
			log_debug("build WAL discarded (waited %.3f s for pg_resetwal)", log_now() - asked);
	}
	return bd->wal_reset_failed ? -1 : 0;
}

void
build_free(struct build *bd)
{
	free(bd->self_container);
	bd->self_container = NULL;
}

/* ---------- container steps ---------- */

/* Runs the container and says how it ended.  0 when it exited 0. */
static int
run_container(const struct cfg_step *step, struct docker *d, const struct docker_run_opts *o)
{
	double t0 = log_now();
	log_info("step %s: running \"%s\" in a container of image \"%s\"", step->name, step->run, step->image);
	int code = 0;
	if (docker_run(d, o, &code) != 0) {
		if (sig_received)
			log_error("step %s stopped after %.1f s: pgstash received signal %d", step->name, log_now() - t0,
			          (int)sig_received);
		else
			log_error("step %s: the container could not be run", step->name);
		return -1;
	}
	if (code != 0) {
		log_error("step %s failed: the container exited with status %d after %.1f s", step->name, code,
		          log_now() - t0);
		return -1;
	}
	log_info("step %s finished in %.1f s", step->name, log_now() - t0);
	return 0;
}

static int
run_container_step(struct build *bd, const struct cfg_step *step)
{
	const struct cfg *cfg = bd->cfg;
	struct docker d;
	char **argv = NULL;
	struct strlist env = {0};
	const char *why;

	if (!bd->self_container && docker_self_container_id(&bd->self_container) != 0) {
		log_error("step \"%s\": could not find this container's id, which the step needs to reach the temporary "
		          "server (is pgstash running in a container?)",
		          step->name);
		return -1;
	}
	argv = proc_split_argv(step->run, &why);
	if (!argv) {
		log_error("step \"%s\": bad run command: %s", step->name, why);
		return -1;
	}
	if (docker_open(&d, cfg->docker_socket) != 0) {
		proc_argv_free(argv);
		return -1;
	}
	const char *db = step->database ? step->database : (cfg->db_name ? cfg->db_name : cfg->db_user);
	srv_container_env(&bd->srv, cfg, db, &env);
	for (size_t i = 0; i < step->env.n; i++)
		proc_env_put(&env, step->env.v[i]);
	char *net = xasprintf("container:%s", bd->self_container);
	char *prefix = xasprintf("[step %s] ", step->name);
	struct docker_run_opts o = {
		.image = step->image,
		.argv = argv,
		.env = env.v,
		.network_mode = net,
		.step = step->name,
		.owner = bd->self_container,
		.log_prefix = prefix,
		.timeout_s = (double)(step->timeout ? step->timeout : cfg->step_timeout),
	};
	int rc = run_container(step, &d, &o);
	free(prefix);
	free(net);
	sl_free(&env);
	proc_argv_free(argv);
	docker_close(&d);
	return rc;
}

int
build_resolve_images(struct cfg *cfg)
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
 * On the first container step: learns this container's id and removes the
 * step containers a killed predecessor of this sidecar left behind.  0 or -1
 * (logged).
 */
static int
sweep_leftover_containers(struct build *bd, struct docker *d, const struct cfg_step *st)
{
	if (!bd->self_container && docker_self_container_id(&bd->self_container) != 0) {
		log_error("step \"%s\" runs in a container, which must join this container's network, but pgstash "
		          "could not find its own container id (is it running in a container?)",
		          st->name);
		return -1;
	}
	char *label = xasprintf("%s=%s", DOCKER_LABEL_OWNER, bd->self_container);
	int n = docker_remove_labelled(d, label);
	if (n > 0)
		log_info("removed %d step container%s left by an earlier, interrupted start", n, n == 1 ? "" : "s");
	free(label);
	return 0;
}

/* Before initdb: every step image must exist, and leftover containers go.  0 or -1 (logged). */
static int
check_images(struct build *bd)
{
	const struct cfg *cfg = bd->cfg;
	struct docker d;
	bool opened = false;
	int rc = 0;
	for (size_t i = 0; i < cfg->n_steps && rc == 0; i++) {
		const struct cfg_step *st = &cfg->steps[i];
		if (!st->image)
			continue;
		if (!opened) {
			if (docker_open(&d, cfg->docker_socket) != 0)
				return -1;
			opened = true;
			if (sweep_leftover_containers(bd, &d, st) != 0) {
				rc = -1;
				break;
			}
		}
		char *id = NULL;
		if (docker_image_id(&d, st->image, &id) != 0)
			rc = -1;
		free(id);
	}
	if (opened)
		docker_close(&d);
	return rc;
}

/* ---------- initdb ---------- */

/* Renames every entry of `sub` into `dir`.  0, or -1 (logged). */
static int
move_entries_up(const char *sub, const char *dir)
{
	DIR *d = opendir(sub);
	if (!d) {
		log_error("could not open directory \"%s\": %s", sub, strerror(errno));
		return -1;
	}
	struct dirent *de;
	int rc = 0;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *from = path_join(sub, de->d_name);
		char *to = path_join(dir, de->d_name);
		if (rename(from, to) != 0) {
			log_error("could not rename \"%s\" to \"%s\": %s", from, to, strerror(errno));
			rc = -1;
		}
		free(from);
		free(to);
	}
	closedir(d);
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
initdb_in_place(struct build *bd)
{
	const struct cfg *cfg = bd->cfg;
	char *text = xasprintf("building %s", bd->key);
	int rc = mark_write(cfg->pgdata, text, false);
	free(text);
	if (rc != 0)
		return -1;
	char *sub = path_join(cfg->pgdata, "pgstash.initdb");
	struct cfg at = *cfg;
	at.pgdata = sub;
	rc = -1;
	if (srv_initdb(&at, bd->pg) != 0 || move_entries_up(sub, cfg->pgdata) != 0)
		goto cleanup;
	if (rmdir(sub) != 0) {
		log_error("could not remove directory \"%s\": %s", sub, strerror(errno));
		goto cleanup;
	}
	/* What initdb does to its target: the server refuses a group- or world-accessible PGDATA. */
	if (chmod(cfg->pgdata, 0700) != 0) {
		log_error("could not change mode of \"%s\": %s", cfg->pgdata, strerror(errno));
		goto cleanup;
	}
	rc = 0;
cleanup:
	free(sub);
	return rc;
}

/* ---------- a layer ---------- */

/* Whether a step of `layer` runs in a container: the temporary server then listens on TCP too. */
static bool
layer_has_containers(const struct cfg *cfg, enum cfg_layer layer)
{
	for (size_t i = 0; i < cfg->n_steps; i++)
		if (cfg->steps[i].image && cfg->steps[i].layer == layer)
			return true;
	return false;
}

/* The database a step migrates. */
static const char *
step_db(const struct cfg *cfg, const struct cfg_step *st)
{
	return st->database ? st->database : (cfg->db_name ? cfg->db_name : cfg->db_user);
}

/* Whether `st` must wait for one of the `n` steps of the batch: the same database, or after = one of them. */
static bool
waits_for(const struct cfg *cfg, const struct cfg_step *st, const struct cfg_step *const *batch, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(step_db(cfg, st), step_db(cfg, batch[i])) == 0 || sl_contains(&st->after, batch[i]->name))
			return true;
	}
	return false;
}

/* Runs a batch of command steps at once (one: as always).  0 or -1. */
static int
run_batch(struct build *bd, const struct cfg_step *const *batch, size_t n)
{
	if (n > 1) {
		struct strbuf names = {0};
		for (size_t i = 0; i < n; i++)
			sb_appendf(&names, "%s%s", i ? ", " : "", batch[i]->name);
		log_info("running steps %s at once (different databases)", sb_str(&names));
		sb_free(&names);
	}
	return step_run_commands(batch, n, bd->cfg, &bd->srv);
}

/* A step whose inputs the restored prefix already has. */
static bool
step_skipped(const struct build *bd, const struct cfg_step *step)
{
	return bd->base_manifest && bd->manifest && fp_step_unchanged(bd->base_manifest, bd->manifest, step->name);
}

/* Tells the steps_starting hook which databases the layer's steps, and the clones, will work on. */
static void
announce_steps(struct build *bd, enum cfg_layer layer, bool last)
{
	const struct cfg *cfg = bd->cfg;
	if (!bd->steps_starting || bd->in_place)
		return;
	struct strlist busy = {0};
	for (size_t i = 0; i < cfg->n_steps; i++) {
		const struct cfg_step *step = &cfg->steps[i];
		if (step->layer == layer && !step_skipped(bd, step) && !sl_contains(&busy, step_db(cfg, step)))
			sl_add(&busy, step_db(cfg, step));
	}
	/* The clones replace their old selves, from a template, over a connection to "postgres". */
	if (busy.n > 0 && last && cfg->clone_count > 0) {
		cfg_clone_names(cfg, &busy);
		sl_add(&busy, "postgres");
		sl_add(&busy, cfg->clone_template ? cfg->clone_template : (cfg->db_name ? cfg->db_name : cfg->db_user));
	}
	if (busy.n > 0)
		bd->steps_starting(bd, &busy, bd->steps_starting_arg);
	sl_free(&busy);
}

/*
 * The steps of `layer` on the running temporary server, in file order,
 * except that consecutive command steps on different databases run at once
 * (unless one names another in `after`): a batch ends at a step that waits
 * for one in it, and at a container step, which runs alone.  A step whose
 * inputs the restored prefix already has is skipped.
 */
static enum build_result
run_steps(struct build *bd, enum cfg_layer layer)
{
	const struct cfg *cfg = bd->cfg;
	const struct cfg_step *batch[64];
	size_t nb = 0;
	for (size_t i = 0; i <= cfg->n_steps; i++) {
		if (sig_received)
			return BUILD_FAILED;
		const struct cfg_step *step = i < cfg->n_steps ? &cfg->steps[i] : NULL;
		if (step && step->layer != layer)
			continue;
		if (step && step_skipped(bd, step)) {
			log_info("step %s: inputs unchanged since %.12s: skipped", step->name, bd->base_key);
			continue;
		}
		bool flush = !step || step->image || nb == sizeof(batch) / sizeof(batch[0]) ||
		             waits_for(cfg, step, batch, nb);
		if (flush && nb > 0) {
			int r = run_batch(bd, batch, nb);
			nb = 0;
			if (r != 0)
				return sig_received ? BUILD_FAILED : BUILD_STEP_FAILED;
		}
		if (!step)
			break;
		if (step->image) {
			if (run_container_step(bd, step) != 0)
				return sig_received ? BUILD_FAILED : BUILD_STEP_FAILED;
			continue;
		}
		batch[nb++] = step;
	}
	return BUILD_OK;
}

enum build_result
build_layer(struct build *bd, enum cfg_layer layer, bool fresh, bool last, double *seconds)
{
	const struct cfg *cfg = bd->cfg;
	double t0 = log_now();
	if (build_wait_wal_reset(bd) != 0)
		return BUILD_FAILED;
	bool tcp = layer_has_containers(cfg, layer);
	if (tcp && check_images(bd) != 0)
		return BUILD_FAILED;
	if (fresh && initdb_in_place(bd) != 0)
		return BUILD_FAILED;
	if (sig_received)
		return BUILD_FAILED;
	if (bd->steps_starting && !bd->in_place)
		bd->server_since = ctime_mark();
	if (srv_start_temp(&bd->srv, cfg, bd->pg, tcp, bd->in_place) != 0)
		return BUILD_FAILED;
	if (fresh) {
		if (srv_setup_databases(&bd->srv, cfg) != 0)
			return BUILD_FAILED;
		if (srv_run_initdb_d(&bd->srv, cfg) != 0)
			return sig_received ? BUILD_FAILED : BUILD_STEP_FAILED;
	}
	announce_steps(bd, layer, last);
	enum build_result r = run_steps(bd, layer);
	if (r != BUILD_OK)
		return r;
	if (last && srv_create_clones(&bd->srv, cfg) != 0)
		return BUILD_FAILED;
	if (srv_stop(&bd->srv) != 0)
		return BUILD_FAILED;
	/* It runs beside the snapshot of everything else (build_wait_wal_reset). */
	if (srv_reset_wal_start(cfg, bd->pg, &bd->wal_reset) != 0)
		return BUILD_FAILED;
	*seconds = log_now() - t0;
	return BUILD_OK;
}
