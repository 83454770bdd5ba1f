/*
 * test_steps — command steps (the run-line splitting rule is test_proc's): output
 * prefixing, exit statuses, exec failures, environment, working directory,
 * timeout, leftover processes and signal forwarding.
 */
#include "unit.h"

#include "config.h"
#include "log.h"
#include "server.h"
#include "sig.h"
#include "steps.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

/* ---- step_run_command ---- */

struct fixture {
	char *dir;
	struct cfg cfg;
	struct cfg_step step;
	struct srv srv;
};

static int
setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	f->dir = unit_tmpdir();
	f->cfg.db_user = "postgres";
	f->cfg.db_name = "app";
	f->step.name = "demo";
	f->step.root = f->dir;
	f->srv.sockdir = "/tmp/fake-sock";
	f->srv.port = 5432;
	f->srv.user = "postgres";
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	rm_rf(f->dir);
	free(f->dir);
	sl_free(&f->step.env);
	free(f);
	sig_received = 0;
	return 0;
}

/* Runs the step with stderr captured; returns its result, *out the captured text. */
static int
run_captured(struct fixture *f, const char *run, char **out)
{
	char *path = path_join(f->dir, "stderr.txt");
	fflush(stderr);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
	f->step.run = (char *)run;
	int rc = step_run_command(&f->step, &f->cfg, &f->srv);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	*out = read_file(path, NULL);
	assert_non_null(*out);
	if (strlen(*out) < 8192)
		fprintf(stderr, "%s", *out); /* keep it visible in the test log */
	free(path);
	return rc;
}

static void
test_run_output_prefixed(void **state)
{
	struct fixture *f = *state;
	char *out;
	assert_int_equal(run_captured(f, "/bin/sh -c 'echo hello; echo to-stderr >&2; printf partial'", &out), 0);
	unit_expect_contains(out, "[step demo] hello\n");
	unit_expect_contains(out, "[step demo] to-stderr\n");
	unit_expect_contains(out, "[step demo] partial\n");
	unit_expect_contains(out, "step demo finished in ");
	free(out);
}

static void
test_run_long_line(void **state)
{
	struct fixture *f = *state;
	char *out;
	assert_int_equal(run_captured(f, "/bin/sh -c 'head -c 40000 /dev/zero | tr \"\\000\" x; echo; echo after'", &out), 0);
	size_t xs = 0, prefixes = 0;
	for (const char *p = out; (p = strstr(p, "[step demo] ")) != NULL; p++) {
		prefixes++;
		for (const char *q = p + strlen("[step demo] "); *q == 'x'; q++)
			xs++;
	}
	assert_int_equal(xs, 40000);
	/* 16384 + 16384 + 7232, then "after" */
	assert_int_equal(prefixes, 4);
	unit_expect_contains(out, "[step demo] after\n");
	free(out);
}

static void
test_run_exit_status(void **state)
{
	struct fixture *f = *state;
	char *out;
	assert_int_equal(run_captured(f, "/bin/sh -c 'echo failing; exit 2'", &out), -1);
	unit_expect_contains(out, "[step demo] failing\n");
	unit_expect_contains(out, "step demo failed: exit status 2 after ");
	free(out);
	assert_int_equal(run_captured(f, "/bin/sh -c 'kill -KILL $$'", &out), -1);
	unit_expect_contains(out, "step demo failed: killed by signal 9");
	free(out);
}

static void
test_run_missing_program(void **state)
{
	struct fixture *f = *state;
	char *out;
	assert_int_equal(run_captured(f, "definitely-not-a-program-pgstash --x", &out), -1);
	unit_expect_contains(out, "could not execute \"definitely-not-a-program-pgstash\": No such file or directory");
	free(out);
	unit_write(f->dir, "noexec.sh", "#!/bin/sh\necho hi\n");
	char *script = path_join(f->dir, "noexec.sh");
	assert_int_equal(run_captured(f, script, &out), -1);
	unit_expect_contains(out, "Permission denied");
	free(out);
	free(script);
}

static void
test_run_bad_root_and_syntax(void **state)
{
	struct fixture *f = *state;
	char *out;
	f->step.root = "/nonexistent/pgstash-root";
	assert_int_equal(run_captured(f, "true", &out), -1);
	unit_expect_contains(out, "could not change directory to \"/nonexistent/pgstash-root\"");
	free(out);
	f->step.root = f->dir;
	assert_int_equal(run_captured(f, "make && make install", &out), -1);
	unit_expect_contains(out, "shell syntax is not supported");
	free(out);
}

static void
test_run_env_and_cwd(void **state)
{
	struct fixture *f = *state;
	char *out;
	sl_add(&f->step.env, "FOO=bar baz");
	sl_add(&f->step.env, "PGUSER=stepuser");
	setenv("STEPS_TEST_INHERITED", "yes", 1);
	setenv("PGSTASH_TEST_SECRET", "pgstash-setting", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "aws-secret", 1);
	setenv("POSTGRES_PASSWORD", "pg-secret", 1);
	setenv("PGDATABASE", "from-parent", 1);
	assert_int_equal(run_captured(f, "/bin/sh -c 'env > env.txt; pwd -P > pwd.txt'", &out), 0);
	free(out);
	unsetenv("STEPS_TEST_INHERITED");
	unsetenv("PGSTASH_TEST_SECRET");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("POSTGRES_PASSWORD");
	unsetenv("PGDATABASE");

	char *envpath = path_join(f->dir, "env.txt");
	char *raw = read_file(envpath, NULL);
	assert_non_null(raw);
	/* A newline first: every entry, the first one too, is then "\nNAME=value\n" (a bare environment may put PGPORT first). */
	char *env = xasprintf("\n%s", raw);
	free(raw);
	unit_expect_contains(env, "\nPGHOST=/tmp/fake-sock\n");
	unit_expect_contains(env, "\nPGPORT=5432\n");
	unit_expect_contains(env, "\nPGUSER=stepuser\n");
	assert_null(strstr(env, "PGPASSWORD="));
	unit_expect_contains(env, "\nPGDATABASE=app\n");
	unit_expect_contains(env, "\nDATABASE_URL=postgresql://postgres@/app?host=/tmp/fake-sock&port=5432\n");
	unit_expect_contains(env, "\nFOO=bar baz\n");
	unit_expect_contains(env, "\nSTEPS_TEST_INHERITED=yes\n");
	/* Inherited, but never a secret or a setting of pgstash's. */
	assert_null(strstr(env, "pgstash-setting"));
	assert_null(strstr(env, "aws-secret"));
	assert_null(strstr(env, "pg-secret"));
	assert_null(strstr(env, "from-parent"));
	/* One entry per name: the step's value replaced the client one. */
	assert_null(strstr(env, "PGUSER=postgres"));

	char *pwdpath = path_join(f->dir, "pwd.txt");
	char *pwd = read_file(pwdpath, NULL);
	char *real = realpath(f->dir, NULL);
	assert_non_null(pwd);
	pwd[strcspn(pwd, "\n")] = '\0';
	assert_string_equal(pwd, real);
	free(real);
	free(pwd);
	free(pwdpath);
	free(env);
	free(envpath);

	/* The step's database, and the password when there is one. */
	f->step.database = "other";
	f->cfg.db_password = "s3cret";
	assert_int_equal(run_captured(f, "/bin/sh -c 'env > env.txt'", &out), 0);
	free(out);
	envpath = path_join(f->dir, "env.txt");
	env = read_file(envpath, NULL);
	unit_expect_contains(env, "\nPGDATABASE=other\n");
	assert_null(strstr(env, "s3cret"));
	assert_null(strstr(env, "postgresql://postgres:s3cret"));
	free(env);
	free(envpath);
	f->step.database = NULL;
	f->cfg.db_password = NULL;
}

/* Reads the pid a step's background process wrote. */
static pid_t
read_pid(const char *dir, const char *name)
{
	char *path = path_join(dir, name);
	char *text = read_file(path, NULL);
	assert_non_null(text);
	long pid = strtol(text, NULL, 10);
	free(text);
	free(path);
	assert_true(pid > 1);
	return (pid_t)pid;
}

/* True once `pid` is gone (or a zombie waiting for its new parent). */
static bool
process_gone(pid_t pid)
{
	for (int i = 0; i < 100; i++) {
		sig_drain(); /* we are a subreaper: orphans come back to us */
		char path[64];
		snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
		char *stat = read_file(path, NULL);
		if (!stat)
			return true;
		char *rp = strrchr(stat, ')');
		bool zombie = rp && rp[1] == ' ' && rp[2] == 'Z';
		free(stat);
		if (zombie)
			return true;
		usleep(20000);
	}
	return false;
}

static void
test_run_timeout(void **state)
{
	struct fixture *f = *state;
	char *out;
	f->step.timeout = 1;
	double t0 = log_now();
	assert_int_equal(run_captured(f, "/bin/sh -c 'sleep 30 & echo $! > bg.pid; sleep 30'", &out), -1);
	double took = log_now() - t0;
	assert_true(took < 5.0);
	unit_expect_contains(out, "step demo failed: timed out after 1 s");
	free(out);
	assert_true(process_gone(read_pid(f->dir, "bg.pid")));
	f->step.timeout = 0;

	/* The config-wide default applies when the step has none. */
	f->cfg.step_timeout = 1;
	assert_int_equal(run_captured(f, "sleep 30", &out), -1);
	unit_expect_contains(out, "timed out after 1 s");
	free(out);
	f->cfg.step_timeout = 0;
}

static void
test_run_leftovers_killed(void **state)
{
	struct fixture *f = *state;
	char *out;
	double t0 = log_now();
	/* The background sleep keeps the output pipe open: the step must still end with its shell. */
	assert_int_equal(run_captured(f, "/bin/sh -c 'sleep 30 & echo $! > bg.pid; echo started'", &out), 0);
	assert_true(log_now() - t0 < 5.0);
	unit_expect_contains(out, "[step demo] started\n");
	free(out);
	assert_true(process_gone(read_pid(f->dir, "bg.pid")));
}

static void
test_run_signal_forwarded(void **state)
{
	struct fixture *f = *state;
	char *out;
	double t0 = log_now();
	/* The step signals us (its parent), as docker stop would. */
	assert_int_equal(run_captured(f, "/bin/sh -c 'echo $$ > child.pid; kill -TERM $PPID; exec sleep 30'", &out), -1);
	assert_true(log_now() - t0 < 5.0);
	assert_int_equal(sig_received, SIGTERM);
	unit_expect_contains(out, "step demo stopped after");
	unit_expect_contains(out, "received signal 15");
	free(out);
	assert_true(process_gone(read_pid(f->dir, "child.pid")));

	/* With a signal already received, no new step starts. */
	assert_int_equal(run_captured(f, "true", &out), -1);
	unit_expect_contains(out, "not started");
	free(out);
}

/* Issue 18: steps at once; the first failure stops the others. */
static void
test_run_many_first_failure_stops_others(void **state)
{
	struct fixture *f = *state;
	struct cfg_step a = f->step, b = f->step, c = f->step;
	a.name = "slow";
	a.run = "/bin/sh -c 'echo up; sleep 30; echo never'";
	b.name = "bad";
	b.run = "/bin/sh -c 'sleep 0.5; echo broken; exit 4'";
	c.name = "quick";
	c.run = "/bin/sh -c 'echo done'";
	const struct cfg_step *steps[] = {&a, &b, &c};
	char *path = path_join(f->dir, "stderr.txt");
	fflush(stderr);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	double t0 = log_now();
	int rc = step_run_commands(steps, 3, &f->cfg, &f->srv);
	double took = log_now() - t0;
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	char *out = read_file(path, NULL);
	fprintf(stderr, "%s", out);
	assert_int_equal(rc, -1);
	assert_true(took < 15.0);
	unit_expect_contains(out, "[step slow] up\n");
	unit_expect_contains(out, "[step bad] broken\n");
	unit_expect_contains(out, "[step quick] done\n");
	unit_expect_contains(out, "step quick finished");
	unit_expect_contains(out, "step bad failed: exit status 4");
	unit_expect_contains(out, "stopping step slow: step bad failed");
	unit_expect_contains(out, "step slow stopped after");
	assert_null(strstr(out, "[step slow] never"));
	free(out);

	/* All succeed: 0, and they overlap (two 1 s sleeps in well under 2 s... allow a busy machine). */
	a.run = "/bin/sh -c 'sleep 1'";
	b.run = "/bin/sh -c 'sleep 1'";
	const struct cfg_step *two[] = {&a, &b};
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	t0 = log_now();
	rc = step_run_commands(two, 2, &f->cfg, &f->srv);
	took = log_now() - t0;
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	assert_int_equal(rc, 0);
	assert_true(took < 1.9);
	free(path);
}

int
main(void)
{
	/*
	 * Steps run as postgres (privs_drop); as root, no child would run as us
	 * (proc_unprivileged_ids) anyway.  Root's PATH (/root/...) is not
	 * postgres' to search: a missing program would be EACCES, not ENOENT.
	 */
	if (geteuid() == 0)
		setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
	if (unit_drop_root() != 0 || sig_init() != 0)
		return 1;
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_run_output_prefixed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_many_first_failure_stops_others, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_exit_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_missing_program, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_bad_root_and_syntax, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_env_and_cwd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_leftovers_killed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_signal_forwarded, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
