/*
 * Unit tests for pgdata: the claim decision as a pure function over every
 * kind of PGDATA (empty, ours with each marker, foreign cluster, foreign
 * files, in use), then pgdata_claim and pgdata_rollback against real temp
 * directories: what is reused, what is wiped, what is never touched.
 */
#include "unit.h"

#include "config.h"
#include "digest.h"
#include "log.h"
#include "marker.h"
#include "pgdata.h"
#include "pgdata_int.h"

#include <signal.h>

#define KEY "1111111111111111111111111111111111111111111111111111111111111111"
#define OTHER "2222222222222222222222222222222222222222222222222222222222222222"
#define BOOT "00000000-0000-0000-0000-000000000001"
#define BOOT2 "00000000-0000-0000-0000-000000000002"

static char *tmp;
static char *dir;
static struct cfg cfg;
static struct pgdata pd;

static int
setup(void **state)
{
	(void)state;
	tmp = unit_tmpdir();
	dir = path_join(tmp, "data");
	memset(&cfg, 0, sizeof(cfg));
	cfg.pgdata = dir;
	cfg.lock_timeout = 5;
	pgdata_init(&pd, &cfg);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	pgdata_release(&pd);
	rm_rf(tmp);
	free(dir);
	free(tmp);
	return 0;
}

/* ---- the decision ---- */

static enum pgdata_verdict
decide(const char *marker, bool pg_version, bool empty, const char *boot_id)
{
	struct pgdata_facts f = {
		.key = KEY, .marker = marker, .has_pg_version = pg_version, .boot_id = boot_id, .empty = empty};
	return pgdata_decide(&f);
}

static void
test_decide(void **state)
{
	(void)state;
	/* No marker: empty is ours, anything else is not. */
	assert_int_equal(decide(NULL, false, true, BOOT), PGDATA_TAKE_EMPTY);
	assert_int_equal(decide(NULL, true, false, BOOT), PGDATA_FOREIGN_CLUSTER);
	assert_int_equal(decide(NULL, false, false, BOOT), PGDATA_FOREIGN_FILES);
	/* This key's cluster. */
	assert_int_equal(decide(KEY, true, false, BOOT), PGDATA_REUSE);
	assert_int_equal(decide("unsynced " KEY " " BOOT, true, false, BOOT), PGDATA_REUSE_UNSYNCED);
	assert_int_equal(decide("unsynced " KEY " " BOOT, true, false, BOOT2), PGDATA_REDO_REBOOTED);
	assert_int_equal(decide("unsynced " KEY " " BOOT, true, false, NULL), PGDATA_REDO_REBOOTED);
	/* This key's marker without a cluster is not reused. */
	assert_int_equal(decide(KEY, false, false, BOOT), PGDATA_REPLACE);
	assert_int_equal(decide("unsynced " KEY " " BOOT, false, false, BOOT), PGDATA_REPLACE);
	/* Unfinished starts. */
	assert_int_equal(decide("building " KEY, false, false, BOOT), PGDATA_REDO_UNFINISHED);
	assert_int_equal(decide("restoring " KEY, true, false, BOOT), PGDATA_REDO_UNFINISHED);
	assert_int_equal(decide("", false, false, BOOT), PGDATA_REDO_UNFINISHED);
	assert_int_equal(decide("unsynced garbage", true, false, BOOT), PGDATA_REDO_UNFINISHED);
	/* Another key's cluster, synced or not. */
	assert_int_equal(decide(OTHER, true, false, BOOT), PGDATA_REPLACE);
	assert_int_equal(decide("unsynced " OTHER " " BOOT, true, false, BOOT), PGDATA_REPLACE);
	/* A live server wins over everything. */
	struct pgdata_facts f = {.key = KEY, .server_running = true, .marker = KEY, .has_pg_version = true};
	assert_int_equal(pgdata_decide(&f), PGDATA_IN_USE);
	f.marker = NULL;
	f.empty = true;
	assert_int_equal(pgdata_decide(&f), PGDATA_IN_USE);
}

static void
test_process_alive(void **state)
{
	(void)state;
	assert_true(pgdata_process_alive((long)getpid()));
	assert_false(pgdata_process_alive((long)unit_dead_pid()));
	/* An exited child not yet reaped is a zombie: not alive. */
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	for (int i = 0; i < 200 && pgdata_process_alive((long)pid); i++)
		usleep(10 * 1000);
	assert_false(pgdata_process_alive((long)pid));
	assert_int_equal(waitpid(pid, NULL, 0), pid);
}

/* ---- against real directories ---- */

static void
put_marker(const char *line)
{
	assert_int_equal(mkdir_p(dir, 0700), 0);
	assert_int_equal(mark_write(dir, line, false), 0);
}

static void
put_cluster(void)
{
	unit_write(dir, "PG_VERSION", "15\n");
	unit_write(dir, "base/1/1259", "x");
}

static enum pgdata_claim
claim(char **err)
{
	struct unit_capture cap;
	log_min_level = LOG_INFO;
	unit_stderr_begin(&cap);
	enum pgdata_claim c = pgdata_claim(&pd, KEY, "pgstash-manifest 1\n");
	char *e = unit_stderr_end(&cap);
	log_min_level = LOG_ERROR;
	if (err)
		*err = e;
	else
		free(e);
	return c;
}

static void
test_claim_missing_and_empty(void **state)
{
	(void)state;
	assert_int_equal(claim(NULL), PGDATA_CLAIM_EMPTY);
	assert_true(pd.ours);
	assert_false(pd.durable);
	struct stat st;
	assert_int_equal(stat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	/* Claimed: the lock is held for the rest of the start. */
	assert_true(pd.lock >= 0);
	pgdata_release(&pd);
	assert_int_equal(pd.lock, -1);

	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(NULL), PGDATA_CLAIM_EMPTY);
	assert_true(pd.ours);
}

static void
test_claim_reuse(void **state)
{
	(void)state;
	put_marker(KEY);
	put_cluster();
	assert_int_equal(claim(NULL), PGDATA_CLAIM_REUSE);
	assert_true(pd.durable);
	assert_false(pd.ours);
	assert_true(unit_exists(dir, "base/1/1259"));
}

static void
test_claim_unsynced(void **state)
{
	(void)state;
	char now[MARK_BOOT_ID_LEN + 1];
	if (mark_boot_id(now) != 0)
		skip();
	char *line = xasprintf("unsynced %s %s", KEY, now);
	put_marker(line);
	free(line);
	put_cluster();
	char *err;
	assert_int_equal(claim(&err), PGDATA_CLAIM_REUSE);
	unit_expect_contains(err, "not confirmed on disk yet");
	free(err);
	assert_false(pd.durable);
	assert_true(unit_exists(dir, "PG_VERSION"));
	pgdata_release(&pd);

	/* Written under another kernel: started over. */
	put_marker("unsynced " KEY " " BOOT);
	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(&err), PGDATA_CLAIM_EMPTY);
	unit_expect_contains(err, "the host has restarted since (boot id 00000000, now ");
	free(err);
	assert_true(pd.ours);
	assert_true(dir_is_empty(dir));
}

static void
test_claim_wipes_ours(void **state)
{
	(void)state;
	static const struct {
		const char *marker;
		const char *says;
	} cases[] = {
		{"building " KEY, "holds an unfinished bootstrap: starting it over"},
		{"restoring " OTHER, "holds an unfinished bootstrap: starting it over"},
		{OTHER, "holds the cluster of key 222222222222, which has run as a database; this start's key is "
		        "111111111111 (what changed is unknown: PGDATA records no manifest for it): replacing it"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		put_marker(cases[i].marker);
		put_cluster();
		pgdata_init(&pd, &cfg);
		char *err;
		assert_int_equal(claim(&err), PGDATA_CLAIM_EMPTY);
		unit_expect_contains(err, cases[i].says);
		free(err);
		assert_true(pd.ours);
		assert_true(dir_is_empty(dir));
		pgdata_release(&pd);
	}
}

static void
test_claim_refuses_foreign(void **state)
{
	(void)state;
	put_cluster();
	char *err;
	assert_int_equal(claim(&err), PGDATA_CLAIM_REFUSED);
	unit_expect_contains(err, "holds a database cluster that pgstash did not create");
	free(err);
	assert_false(pd.ours);
	assert_true(unit_exists(dir, "PG_VERSION"));
	pgdata_release(&pd);

	char *pv = path_join(dir, "PG_VERSION");
	assert_int_equal(unlink(pv), 0);
	free(pv);
	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(&err), PGDATA_CLAIM_REFUSED);
	unit_expect_contains(err, "is not empty and holds no database cluster");
	free(err);
	assert_true(unit_exists(dir, "base/1/1259"));
}

/* A pgstash.key that is not pgstash's (a `pgstash keygen` key of that name) is no marker: nothing is wiped. */
static void
test_claim_refuses_a_key_file_named_like_the_marker(void **state)
{
	(void)state;
	unit_write(dir, MARK_FILE, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n");
	unit_write(dir, "pgstash.pub", "-----BEGIN PUBLIC KEY-----\n");
	char *err;
	assert_int_equal(claim(&err), PGDATA_CLAIM_REFUSED);
	unit_expect_contains(err, "is not empty and holds no database cluster");
	free(err);
	assert_false(pd.ours);
	assert_true(unit_exists(dir, MARK_FILE));
	assert_true(unit_exists(dir, "pgstash.pub"));
}

static void
test_claim_refuses_in_use(void **state)
{
	(void)state;
	put_marker(OTHER);
	put_cluster();
	fflush(stdout);
	fflush(stderr);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		pause();
		_exit(0);
	}
	char *pidtext = xasprintf("%ld\n%s\n", (long)child, dir);
	unit_write(dir, "postmaster.pid", pidtext);
	free(pidtext);
	char *err;
	enum pgdata_claim c = claim(&err);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	assert_int_equal(c, PGDATA_CLAIM_REFUSED);
	unit_expect_contains(err, "is in use by a running server (pid");
	free(err);
	assert_false(pd.ours);
	assert_true(unit_exists(dir, "PG_VERSION"));
	pgdata_release(&pd);

	/* The same pid file naming us (a restarted container's pid 1), or a dead pid: not in use. */
	pidtext = xasprintf("%ld\n", (long)getpid());
	unit_write(dir, "postmaster.pid", pidtext);
	free(pidtext);
	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(NULL), PGDATA_CLAIM_EMPTY);
	pgdata_release(&pd);

	put_marker(KEY);
	put_cluster();
	pidtext = xasprintf("%ld\n", (long)unit_dead_pid());
	unit_write(dir, "postmaster.pid", pidtext);
	free(pidtext);
	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(NULL), PGDATA_CLAIM_REUSE);
}

static void
test_claim_not_a_directory(void **state)
{
	(void)state;
	unit_write(tmp, "data", "a file");
	char *err;
	assert_int_equal(claim(&err), PGDATA_CLAIM_REFUSED);
	unit_expect_contains(err, "is not a directory");
	free(err);
	assert_false(pd.ours);
}

/* ---- rollback ---- */

static void
test_rollback(void **state)
{
	(void)state;
	char *wal = path_join(tmp, "wal");
	cfg.initdb_waldir = wal;
	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(NULL), PGDATA_CLAIM_EMPTY);

	/* Ours and done: kept. */
	put_cluster();
	unit_write(wal, "000000010000000000000001", "w");
	pd.done = true;
	pgdata_rollback(&pd);
	assert_true(unit_exists(dir, "PG_VERSION"));

	/* Ours, not done: PGDATA and the WAL directory emptied, both kept. */
	pd.done = false;
	pgdata_rollback(&pd);
	assert_true(dir_is_empty(dir));
	assert_true(dir_is_empty(wal));
	assert_true(unit_exists(tmp, "data"));
	pgdata_release(&pd);

	/* Not ours (a foreign cluster was refused): never touched. */
	put_cluster();
	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(NULL), PGDATA_CLAIM_REFUSED);
	pgdata_rollback(&pd);
	assert_true(unit_exists(dir, "PG_VERSION"));

	/* Reused as it is: not ours either. */
	pgdata_release(&pd);
	put_marker(KEY);
	pgdata_init(&pd, &cfg);
	assert_int_equal(claim(NULL), PGDATA_CLAIM_REUSE);
	pgdata_rollback(&pd);
	assert_true(unit_exists(dir, "PG_VERSION"));
	cfg.initdb_waldir = NULL;
	free(wal);
}

/* ---- on_change: another key's finished cluster ---- */

#define OLD_M "pgstash-manifest 1\npostgres 15 x86_64\nstep app layer=schema run=x image=- database=app env=-\n" \
	"file app 0001.sql sha256=aa\n"
#define NEW_M OLD_M "file app 0002.sql sha256=bb\n"
#define EDITED_M "pgstash-manifest 1\npostgres 15 x86_64\nstep app layer=schema run=x image=- database=app env=-\n" \
	"file app 0001.sql sha256=cc\n"

static struct cfg_step app_step = {.name = "app", .incremental = true};

static void
test_on_change_policy(void **state)
{
	(void)state;
	struct cfg c = {.steps = &app_step, .n_steps = 1};
	c.on_change = CFG_ON_CHANGE_REPLACE;
	assert_int_equal(pgdata_on_change(&c, OLD_M, NEW_M), PGDATA_CHANGE_REPLACE);
	c.on_change = CFG_ON_CHANGE_REFUSE;
	assert_int_equal(pgdata_on_change(&c, OLD_M, NEW_M), PGDATA_CHANGE_REFUSE);
	assert_int_equal(pgdata_on_change(&c, NULL, NEW_M), PGDATA_CHANGE_REFUSE);
	c.on_change = CFG_ON_CHANGE_MIGRATE;
	/* A prefix (an incremental step gained a file), or the same manifest (a migrate cut short). */
	assert_int_equal(pgdata_on_change(&c, OLD_M, NEW_M), PGDATA_CHANGE_MIGRATE);
	assert_int_equal(pgdata_on_change(&c, NEW_M, NEW_M), PGDATA_CHANGE_MIGRATE);
	/* Not one: an edited or removed file, no record, a step that is not incremental. */
	assert_int_equal(pgdata_on_change(&c, OLD_M, EDITED_M), PGDATA_CHANGE_FALLBACK);
	assert_int_equal(pgdata_on_change(&c, NEW_M, OLD_M), PGDATA_CHANGE_FALLBACK);
	assert_int_equal(pgdata_on_change(&c, NULL, NEW_M), PGDATA_CHANGE_FALLBACK);
	app_step.incremental = false;
	assert_int_equal(pgdata_on_change(&c, OLD_M, NEW_M), PGDATA_CHANGE_FALLBACK);
	app_step.incremental = true;
}

/* PGDATA with the finished cluster of OLD_M, recorded as pgdata_record_manifest does; its key into old_key. */
static void
put_old_cluster(const char *recorded, char old_key[DIGEST_HEX_SIZE])
{
	digest_hex(OLD_M, strlen(OLD_M), old_key);
	put_marker(old_key);
	put_cluster();
	if (recorded)
		unit_write(dir, PGDATA_MANIFEST_FILE, recorded);
}

static enum pgdata_claim
claim_new(enum cfg_on_change policy, const char *manifest, char **err)
{
	char key[DIGEST_HEX_SIZE];
	digest_hex(manifest, strlen(manifest), key);
	cfg.on_change = policy;
	cfg.steps = &app_step;
	cfg.n_steps = 1;
	pgdata_release(&pd);
	pgdata_init(&pd, &cfg);
	struct unit_capture cap;
	log_min_level = LOG_INFO;
	unit_stderr_begin(&cap);
	enum pgdata_claim c = pgdata_claim(&pd, key, manifest);
	*err = unit_stderr_end(&cap);
	log_min_level = LOG_ERROR;
	return c;
}

static void
test_claim_changed_replace_warns_what_changed(void **state)
{
	(void)state;
	char old_key[DIGEST_HEX_SIZE], *err;
	put_old_cluster(OLD_M, old_key);
	assert_int_equal(claim_new(CFG_ON_CHANGE_REPLACE, NEW_M, &err), PGDATA_CLAIM_EMPTY);
	unit_expect_contains(err, "warning: PGDATA holds the cluster of key");
	unit_expect_contains(err, "which has run as a database");
	unit_expect_contains(err, "added: migration file app 0002.sql");
	unit_expect_contains(err, "replacing it, its data is lost");
	free(err);
	assert_true(pd.ours);
	assert_true(dir_is_empty(dir));

	/* A record that is not the marker's key's manifest (planted, torn) is no record. */
	put_old_cluster("pgstash-manifest 1\nsomething else\n", old_key);
	assert_int_equal(claim_new(CFG_ON_CHANGE_REPLACE, NEW_M, &err), PGDATA_CLAIM_EMPTY);
	unit_expect_contains(err, "what changed is unknown");
	free(err);
}

static void
test_claim_changed_refuse_leaves_it(void **state)
{
	(void)state;
	char old_key[DIGEST_HEX_SIZE], *err;
	put_old_cluster(OLD_M, old_key);
	assert_int_equal(claim_new(CFG_ON_CHANGE_REFUSE, EDITED_M, &err), PGDATA_CLAIM_CHANGED);
	unit_expect_contains(err, "error: PGDATA");
	unit_expect_contains(err, "changed: migration file app 0001.sql");
	unit_expect_contains(err, "on_change = refuse: leaving it untouched");
	free(err);
	assert_false(pd.ours);
	assert_true(unit_exists(dir, "PG_VERSION"));
	pgdata_rollback(&pd);
	assert_true(unit_exists(dir, "PG_VERSION"));
}

static void
test_claim_changed_migrate(void **state)
{
	(void)state;
	char old_key[DIGEST_HEX_SIZE], *err;
	put_old_cluster(OLD_M, old_key);
	assert_int_equal(claim_new(CFG_ON_CHANGE_MIGRATE, NEW_M, &err), PGDATA_CLAIM_MIGRATE);
	unit_expect_contains(err, "migrating it in place, its data kept");
	free(err);
	/* Kept, and not ours: a failed migration is never wiped. */
	assert_false(pd.ours);
	pgdata_rollback(&pd);
	assert_true(unit_exists(dir, "base/1/1259"));
	char *marker = mark_read(dir);
	assert_string_equal(marker, old_key);
	free(marker);

	/* Not a prefix: replaced, with a warning saying why. */
	assert_int_equal(claim_new(CFG_ON_CHANGE_MIGRATE, EDITED_M, &err), PGDATA_CLAIM_EMPTY);
	unit_expect_contains(err, "on_change = migrate cannot apply");
	unit_expect_contains(err, "changed: migration file app 0001.sql");
	free(err);
	assert_true(dir_is_empty(dir));
}

static void
test_record_manifest(void **state)
{
	(void)state;
	assert_int_equal(claim(NULL), PGDATA_CLAIM_EMPTY);
	assert_int_equal(pgdata_record_manifest(&pd, OLD_M), 0);
	char *text = unit_read(dir, PGDATA_MANIFEST_FILE);
	assert_string_equal(text, OLD_M);
	free(text);
	char k[DIGEST_HEX_SIZE];
	digest_hex(OLD_M, strlen(OLD_M), k);
	char *back = pgdata_read_manifest(dir, k, KEY);
	assert_non_null(back);
	assert_string_equal(back, OLD_M);
	free(back);
	/* Neither the marker's key nor the start's: not trusted. */
	assert_null(pgdata_read_manifest(dir, KEY, OTHER));
}

int
main(void)
{
	log_min_level = LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_process_alive),
		cmocka_unit_test_setup_teardown(test_claim_missing_and_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_unsynced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_wipes_ours, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_refuses_foreign, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_refuses_a_key_file_named_like_the_marker, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_refuses_in_use, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_not_a_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
		cmocka_unit_test(test_on_change_policy),
		cmocka_unit_test_setup_teardown(test_claim_changed_replace_warns_what_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_changed_refuse_leaves_it, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_changed_migrate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_manifest, setup, teardown),
	};
	return cmocka_run_group_tests_name("pgdata", tests, NULL, NULL);
}
