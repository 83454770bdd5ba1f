/*
 * Unit tests for build: a fresh layer on a real PostgreSQL (marker first,
 * initdb moved up into PGDATA, the step run, a clean shutdown), a layer on
 * top of it, a failing step (BUILD_STEP_FAILED, the temporary server left
 * for build_abort to stop), and image resolution with no container steps
 * (no Docker Engine needed).  As root the test runs as the postgres user.
 */
#include "unit.h"

#include "build.h"
#include "config.h"
#include "log.h"
#include "marker.h"
#include "pgbin.h"
#include "sig.h"

#define KEY "3333333333333333333333333333333333333333333333333333333333333333"

static char *tmp;
static struct cfg cfg;
static struct cfg_step steps[2];
static struct pgbin pg;
static struct build bd;

static int
setup(void **state)
{
	(void)state;
	tmp = unit_tmpdir();
	cfg_defaults(&cfg);
	free(cfg.pgdata);
	cfg.pgdata = path_join(tmp, "data");
	free(cfg.initdb_d);
	cfg.initdb_d = path_join(tmp, "initdb.d");
	free(cfg.socket_dir);
	cfg.socket_dir = xstrdup(tmp);
	cfg.db_name = xstrdup("postgres"); /* as cfg_validate fills it in */
	memset(steps, 0, sizeof(steps));
	steps[0].name = "schema";
	steps[0].layer = CFG_LAYER_SCHEMA;
	steps[0].run = "psql -v ON_ERROR_STOP=1 -c 'create table t (i int)'";
	steps[1].name = "seed";
	steps[1].layer = CFG_LAYER_FIXTURES;
	steps[1].run = "psql -v ON_ERROR_STOP=1 -c 'insert into t values (1)'";
	cfg.steps = steps;
	cfg.n_steps = 2;
	assert_int_equal(mkdir_p(cfg.pgdata, 0700), 0);
	build_init(&bd, &cfg, &pg, KEY);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	build_abort(&bd);
	build_free(&bd);
	cfg.steps = NULL;
	cfg.n_steps = 0;
	cfg_free(&cfg);
	rm_rf(tmp);
	free(tmp);
	return 0;
}

static void
need_server(void)
{
	if (!pg.bindir) {
		fprintf(stderr, "skipped: no PostgreSQL server binaries\n");
		skip();
	}
}

static void
test_resolve_images_without_containers(void **state)
{
	(void)state;
	/* No step with image_id = yes: the engine is never asked. */
	free(cfg.docker_socket);
	cfg.docker_socket = path_join(tmp, "no-docker.sock");
	assert_int_equal(build_resolve_images(&cfg), 0);
	assert_null(steps[0].resolved_image_id);
}

static void
test_fresh_then_fixtures(void **state)
{
	(void)state;
	need_server();
	double seconds = -1;
	assert_int_equal(build_layer(&bd, CFG_LAYER_SCHEMA, true, false, &seconds), BUILD_OK);
	assert_true(seconds >= 0);
	/* The marker went first and stays "building" (the caller marks it done). */
	char *m = mark_read(cfg.pgdata);
	assert_string_equal(m, "building " KEY);
	free(m);
	assert_true(unit_exists(cfg.pgdata, "PG_VERSION"));
	assert_false(unit_exists(cfg.pgdata, "pgstash.initdb"));
	assert_false(unit_exists(cfg.pgdata, "postmaster.pid"));
	assert_int_equal(bd.srv.pid, 0);
	struct stat st;
	assert_int_equal(stat(cfg.pgdata, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);

	/* The fixtures layer on it: no initdb, its own step. */
	assert_int_equal(build_layer(&bd, CFG_LAYER_FIXTURES, false, true, &seconds), BUILD_OK);
	assert_false(unit_exists(cfg.pgdata, "postmaster.pid"));
}

static void
test_step_fails(void **state)
{
	(void)state;
	need_server();
	steps[0].run = "psql -v ON_ERROR_STOP=1 -c 'select nosuchcolumn'";
	double seconds = -1;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	enum build_result r = build_layer(&bd, CFG_LAYER_SCHEMA, true, true, &seconds);
	char *err = unit_stderr_end(&cap);
	if (r != BUILD_STEP_FAILED)
		fail_msg("build_layer returned %d; stderr:\n%s", (int)r, err);
	free(err);
	assert_true(seconds < 0);
	/* The temporary server still runs: stopping it is the caller's rollback. */
	assert_true(bd.srv.pid > 0);
	build_abort(&bd);
	assert_int_equal(bd.srv.pid, 0);
	assert_false(unit_exists(cfg.pgdata, "postmaster.pid"));
}

int
main(void)
{
	if (unit_drop_root() != 0 || sig_init() != 0)
		return 1;
	log_min_level = LOG_ERROR;
	if (pgbin_find(NULL, &pg) != 0)
		memset(&pg, 0, sizeof(pg));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_resolve_images_without_containers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fresh_then_fixtures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_step_fails, setup, teardown),
	};
	int failed = cmocka_run_group_tests_name("build", tests, NULL, NULL);
	pgbin_free(&pg);
	return failed;
}
