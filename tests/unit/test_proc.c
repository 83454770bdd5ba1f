/*
 * test_proc — the one spawn, wait and capture: exit codes, signals, exec and
 * chdir failures, streams, the capture bound, stdin input; environment lists;
 * the run-line splitting rule.
 */
#include "unit.h"

#include "log.h"
#include "proc.h"
#include "sig.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>

/* ---- proc_split_argv ---- */

static void
expect_words(const char *line, const char *const *want)
{
	const char *why = NULL;
	char **got = proc_split_argv(line, &why);
	if (!got)
		fail_msg("split of [%s] failed: %s", line, why);
	size_t i = 0;
	for (; want[i]; i++) {
		if (!got[i])
			fail_msg("split of [%s]: missing word %zu [%s]", line, i, want[i]);
		assert_string_equal(got[i], want[i]);
	}
	if (got[i])
		fail_msg("split of [%s]: extra word [%s]", line, got[i]);
	proc_argv_free(got);
}

static void
expect_error(const char *line, const char *why_part)
{
	const char *why = NULL;
	char **got = proc_split_argv(line, &why);
	if (got)
		fail_msg("split of [%s] should have failed, got [%s]...", line, got[0]);
	assert_non_null(why);
	if (!strstr(why, why_part))
		fail_msg("split of [%s]: error [%s] lacks [%s]", line, why, why_part);
}

static void
test_split_plain(void **state)
{
	expect_words("python3 manage.py migrate --noinput",
	             (const char *[]){"python3", "manage.py", "migrate", "--noinput", NULL});
	expect_words("  a\t b \n c  ", (const char *[]){"a", "b", "c", NULL});
	expect_words("alembic", (const char *[]){"alembic", NULL});
	/* Nothing is expanded or globbed. */
	expect_words("ls *.py ~/x a#b x=1", (const char *[]){"ls", "*.py", "~/x", "a#b", "x=1", NULL});
}

static void
test_split_quotes(void **state)
{
	expect_words("/bin/sh -c 'echo \"$HOME\" | wc; x'",
	             (const char *[]){"/bin/sh", "-c", "echo \"$HOME\" | wc; x", NULL});
	expect_words("'a b'c\"d e\"f", (const char *[]){"a bcd ef", NULL});
	/* In single quotes a backslash is just a backslash. */
	expect_words("'a\\b' 'it'\\''s'", (const char *[]){"a\\b", "it's", NULL});
	/* In double quotes only \" and \\ are escapes. */
	expect_words("\"say \\\"hi\\\" \\\\ \\n $x |;\"", (const char *[]){"say \"hi\" \\ \\n $x |;", NULL});
	/* Empty quoted words are words. */
	expect_words("cmd '' \"\" x", (const char *[]){"cmd", "", "", "x", NULL});
	expect_words("''", (const char *[]){"", NULL});
}

static void
test_split_escapes(void **state)
{
	expect_words("a\\ b c\\\"d \\'e\\' \\$HOME \\|", (const char *[]){"a b", "c\"d", "'e'", "$HOME", "|", NULL});
	expect_words("one \\\n two", (const char *[]){"one", "two", NULL});
	expect_words("x\\\\y", (const char *[]){"x\\y", NULL});
}

static void
test_split_errors(void **state)
{
	expect_error("", "empty command");
	expect_error("   \t\n ", "empty command");
	expect_error(NULL, "empty command");
	expect_error("'unterminated", "unterminated single quote");
	expect_error("a \"b c", "unterminated double quote");
	expect_error("a \"b\\\"", "unterminated double quote");
	expect_error("a\\", "trailing backslash");
	const char *ops[] = {
		"make && make install", "a || b", "a | b", "a; b", "a;", "a > out", "a >> out", "a < in",
		"a 2>err", "a &", "(a)", "echo `date`", "echo $HOME", "echo ${X}", "echo $(date)", "a # comment",
	};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		expect_error(ops[i], "shell syntax is not supported: write run = /bin/sh -c '");
}

/* ---- environment lists ---- */

static const char *
env_get(const struct strlist *env, const char *name)
{
	size_t n = strlen(name);
	const char *found = NULL;
	for (size_t i = 0; i < env->n; i++) {
		if (strncmp(env->v[i], name, n) == 0 && env->v[i][n] == '=') {
			assert_null(found); /* one entry per name */
			found = env->v[i] + n + 1;
		}
	}
	return found;
}

static void
test_env_lists(void **state)
{
	struct strlist env = {0};
	setenv("PROC_TEST_VAR", "from-us", 1);
	proc_env_inherit(&env);
	assert_string_equal(env_get(&env, "PROC_TEST_VAR"), "from-us");
	size_t n = env.n;
	proc_env_put(&env, "PROC_TEST_VAR=replaced");
	assert_int_equal(env.n, n);
	assert_string_equal(env_get(&env, "PROC_TEST_VAR"), "replaced");
	proc_env_set(&env, "PROC_TEST_NEW", "a=b");
	assert_int_equal(env.n, n + 1);
	assert_string_equal(env_get(&env, "PROC_TEST_NEW"), "a=b");
	/* A name that is a prefix of another is another name. */
	proc_env_set(&env, "PROC_TEST", "short");
	assert_string_equal(env_get(&env, "PROC_TEST_VAR"), "replaced");
	assert_string_equal(env_get(&env, "PROC_TEST"), "short");
	assert_null(env.v[env.n]);
	sl_free(&env);
	unsetenv("PROC_TEST_VAR");
}

/* ---- spawn, wait, capture ---- */

/* Runs /bin/sh -c `script` (with `env` when set), its output captured; returns the wait result. */
static enum proc_wait_result
run_sh(const char *script, char *const *env, struct strbuf *out, int *status, size_t max)
{
	char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
	struct proc_opts o = {.argv = argv, .envp = env, .own_group = true};
	struct proc_capture c = {.max = max, .with_stderr = true, .timeout_s = 10, .output = out};
	enum proc_wait_result r = proc_capture(&o, &c);
	*status = c.status;
	return r;
}

static void
test_exit_codes_and_signals(void **state)
{
	struct strbuf out = {0};
	int status;
	char how[64];
	assert_int_equal(run_sh("exit 0", NULL, &out, &status, 100), PROC_EXITED);
	assert_true(proc_exited_ok(status));
	assert_int_equal(run_sh("exit 3", NULL, &out, &status, 100), PROC_EXITED);
	assert_false(proc_exited_ok(status));
	assert_string_equal(proc_describe_status(status, how, sizeof(how)), "exit status 3");
	assert_int_equal(run_sh("kill -KILL $$", NULL, &out, &status, 100), PROC_EXITED);
	assert_true(WIFSIGNALED(status));
	assert_string_equal(proc_describe_status(status, how, sizeof(how)), "killed by signal 9 (Killed)");
	sb_free(&out);
}

/*
 * Started as root, no child runs as root (a config names what we start):
 * it is the postgres user, or nobody, with that user's group alone, and
 * cannot become root again.
 */
static void
test_child_never_root(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "skipped: needs root\n");
		skip();
	}
	uid_t uid;
	gid_t gid;
	proc_unprivileged_ids(&uid, &gid);
	assert_true(uid != 0 && gid != 0);
	struct strbuf out = {0};
	int status;
	assert_int_equal(run_sh("echo $(id -u) $(id -g) $(id -G)", NULL, &out, &status, 1000), PROC_EXITED);
	char *want = xasprintf("%ld %ld %ld\n", (long)uid, (long)gid, (long)gid);
	assert_string_equal(sb_str(&out), want);
	free(want);
	sb_free(&out);

	/* Nor does it keep root's HOME, USER and LOGNAME, from our environment or the caller's list. */
	struct passwd *pw = getpwuid(uid);
	const char *name = pw ? pw->pw_name : "nobody";
	want = xasprintf("%s %s %s|kept\n", pw && *pw->pw_dir ? pw->pw_dir : "/", name, name);
	setenv("HOME", "/root", 1);
	setenv("USER", "root", 1);
	setenv("LOGNAME", "root", 1);
	setenv("TEST_KEPT_VAR", "kept", 1);
	assert_int_equal(run_sh("echo $HOME $USER $LOGNAME\\|$TEST_KEPT_VAR", NULL, &out, &status, 1000),
	                 PROC_EXITED);
	assert_string_equal(sb_str(&out), want);
	sb_free(&out);
	struct strlist env = {0};
	proc_env_set(&env, "HOME", "/root");
	proc_env_set(&env, "USER", "root");
	proc_env_set(&env, "TEST_KEPT_VAR", "kept");
	assert_int_equal(run_sh("echo $HOME $USER $LOGNAME\\|$TEST_KEPT_VAR", env.v, &out, &status, 1000),
	                 PROC_EXITED);
	assert_string_equal(sb_str(&out), want);
	sb_free(&out);
	sl_free(&env);
	free(want);
	unsetenv("TEST_KEPT_VAR");
}

static void
test_capture_bound_and_env(void **state)
{
	struct strbuf out = {0};
	int status;
	/* stdout and stderr both, then the rest dropped at the bound; the child still runs to its end. */
	assert_int_equal(run_sh("echo out; echo err >&2; head -c 100000 /dev/zero | tr '\\0' x; exit 4", NULL, &out,
	                        &status, 10),
	                 PROC_EXITED);
	assert_int_equal(WEXITSTATUS(status), 4);
	assert_int_equal(out.len, 10);
	assert_memory_equal(out.buf, "out\nerr\nxx", 10);
	sb_free(&out);

	struct strlist env = {0};
	proc_env_set(&env, "ONLY", "this one");
	assert_int_equal(run_sh("echo \"$ONLY|${SHELL-unset}\"", env.v, &out, &status, 1000), PROC_EXITED);
	assert_string_equal(sb_str(&out), "this one|unset\n");
	sb_free(&out);
	sl_free(&env);
}

static void
test_capture_input(void **state)
{
	struct strbuf out = {0};
	char *argv[] = {"cat", NULL};
	struct proc_opts o = {.argv = argv, .search_path = true};
	struct proc_capture c = {.input = "to stdin\n", .input_len = 9, .max = 100, .timeout_s = -1, .output = &out};
	assert_int_equal(proc_capture(&o, &c), PROC_EXITED);
	assert_true(proc_exited_ok(c.status));
	assert_false(c.input_short);
	assert_string_equal(sb_str(&out), "to stdin\n");
	sb_free(&out);

	/* Without input stdin is /dev/null. */
	struct proc_capture d = {.max = 100, .timeout_s = -1, .output = &out};
	assert_int_equal(proc_capture(&o, &d), PROC_EXITED);
	assert_int_equal(out.len, 0);
	sb_free(&out);
}

static void
test_start_errors(void **state)
{
	struct proc p;
	char *missing[] = {"/nonexistent/prog", NULL};
	struct proc_opts o = {.argv = missing, .report_start_error = true};
	assert_int_equal(proc_spawn(&o, &p), PROC_EXEC_FAILED);
	assert_int_equal(p.err, ENOENT);
	assert_int_equal(p.pid, 0);

	/* A PATH the child can search whoever it runs as (as root: proc_unprivileged_ids' user, not root). */
	char *env[] = {"PATH=/usr/bin:/bin", NULL};
	char *not_in_path[] = {"pgstash-no-such-program", NULL};
	o.argv = not_in_path;
	o.envp = env;
	o.search_path = true;
	assert_int_equal(proc_spawn(&o, &p), PROC_EXEC_FAILED);
	assert_int_equal(p.err, ENOENT);

	char *sh[] = {"/bin/sh", "-c", "exit 0", NULL};
	o.argv = sh;
	o.cwd = "/nonexistent/dir";
	assert_int_equal(proc_spawn(&o, &p), PROC_CHDIR_FAILED);
	assert_int_equal(p.err, ENOENT);

	/* Without report_start_error the child says it and ends with 127, as a shell. */
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	struct proc_opts q = {.argv = missing};
	assert_int_equal(proc_spawn(&q, &p), PROC_SPAWNED);
	int status;
	assert_int_equal(proc_wait(p.pid, &status, 10, 0), PROC_EXITED);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(WEXITSTATUS(status), 127);
	if (!strstr(err, "could not execute \"/nonexistent/prog\": No such file or directory"))
		fail_msg("stderr: [%s]", err);
	free(err);
}

static void
test_cwd_pipes_and_timeout(void **state)
{
	char *dir = unit_tmpdir();
	/* Enterable by the child also when we are root (it is not: proc_unprivileged_ids). */
	assert_int_equal(chmod(dir, 0755), 0);
	char *argv[] = {"/bin/sh", "-c", "pwd; read x; echo got $x; sleep 30", NULL};
	struct proc_opts o = {.argv = argv, .cwd = dir, .own_group = true, .in = {PROC_IO_PIPE}, .out = {PROC_IO_PIPE},
	                      .report_start_error = true};
	struct proc p;
	assert_int_equal(proc_spawn(&o, &p), PROC_SPAWNED);
	assert_true(p.in >= 0 && p.out >= 0);
	assert_int_equal(write(p.in, "hi\n", 3), 3);
	char buf[512];
	size_t got = 0;
	while (got < sizeof(buf) - 1 && !memchr(buf, 'g', got)) {
		ssize_t n = read(p.out, buf + got, sizeof(buf) - 1 - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
	int status;
	/* Bounded: it is still sleeping. */
	double t0 = log_now();
	assert_int_equal(proc_wait(p.pid, &status, 0.2, 0), PROC_TIMEOUT);
	assert_true(log_now() - t0 < 5);
	kill(-p.pid, SIGKILL);
	assert_int_equal(proc_wait(p.pid, &status, 10, 0), PROC_EXITED);
	assert_true(WIFSIGNALED(status));
	proc_close(&p);
	assert_int_equal(p.in, -1);
	buf[got] = '\0';
	char *want = xasprintf("%s\n", dir);
	assert_non_null(strstr(buf, want));
	free(want);
	rm_rf(dir);
	free(dir);
}

/* A child started with die_with_us is killed when the process that started it exits; one without is not. */
static void
test_die_with_us(void **state)
{
	(void)state;
	/* The orphan comes back to us to be reaped, whoever PID 1 is. */
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	for (int with = 0; with <= 1; with++) {
		int fds[2];
		assert_int_equal(pipe(fds), 0);
		pid_t mid = fork();
		assert_true(mid >= 0);
		if (mid == 0) {
			char *argv[] = {"/bin/sleep", "30", NULL};
			struct proc_opts o = {.argv = argv, .die_with_us = with, .report_start_error = true};
			struct proc p;
			if (proc_spawn(&o, &p) != PROC_SPAWNED)
				_exit(1);
			ssize_t n = write(fds[1], &p.pid, sizeof(p.pid));
			_exit(n == (ssize_t)sizeof(p.pid) ? 0 : 1);
		}
		close(fds[1]);
		pid_t child = 0;
		assert_int_equal(read(fds[0], &child, sizeof(child)), sizeof(child));
		close(fds[0]);
		int status;
		assert_int_equal(waitpid(mid, &status, 0), mid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		pid_t got = 0;
		for (int i = 0; i < 100 && got == 0; i++) {
			got = waitpid(child, &status, WNOHANG);
			if (got == 0)
				usleep(20 * 1000);
		}
		if (with) {
			assert_int_equal(got, child);
			assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		} else {
			assert_int_equal(got, 0); /* still sleeping two seconds later */
			kill(child, SIGKILL);
			assert_int_equal(waitpid(child, &status, 0), child);
		}
	}
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

/* proc_pipe_write: a reader gone is a short count, not a SIGPIPE; a full non-blocking pipe stops it. */
static void
test_pipe_write(void **state)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(proc_pipe_write(fds[1], "hello", 5), 5);
	char got[8] = {0};
	assert_int_equal(read(fds[0], got, sizeof(got)), 5);
	assert_string_equal(got, "hello");
	close(fds[0]);
	/* With SIGPIPE's default disposition this write would end the test binary. */
	assert_int_equal(proc_pipe_write(fds[1], "gone", 4), 0);
	struct sigaction now;
	sigaction(SIGPIPE, NULL, &now);
	assert_true(now.sa_handler == SIG_DFL); /* put back */
	close(fds[1]);

	assert_int_equal(pipe2(fds, O_NONBLOCK), 0);
	size_t cap = (size_t)fcntl(fds[1], F_GETPIPE_SZ);
	char *big = calloc(1, cap + 4096);
	assert_int_equal(proc_pipe_write(fds[1], big, cap + 4096), cap);
	free(big);
	close(fds[0]);
	close(fds[1]);
}

/* proc_collect: a child spawned earlier gets its input and gives its output, as proc_capture's would. */
static void
test_collect_spawned(void **state)
{
	(void)state;
	char *argv[] = {"/bin/sh", "-c", "cat; echo to-stderr >&2; exit 3", NULL};
	struct proc_opts o = {.argv = argv, .own_group = true, .in = {PROC_IO_PIPE}, .out = {PROC_IO_PIPE},
	                      .report_start_error = true};
	struct proc p;
	assert_int_equal(proc_spawn(&o, &p), PROC_SPAWNED);
	struct strbuf out = {0};
	struct proc_capture c = {.input = "typed\n", .input_len = 6, .max = 1024, .with_stderr = true,
	                         .timeout_s = 10, .output = &out};
	assert_int_equal(proc_collect(&p, &c, true), PROC_EXITED);
	assert_int_equal(c.pid, p.pid);
	assert_false(c.input_short);
	assert_true(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 3);
	assert_string_equal(sb_str(&out), "typed\nto-stderr\n");
	assert_int_equal(p.in, -1);
	assert_int_equal(p.out, -1);
	sb_free(&out);
}

static void
test_env_secret(void **state)
{
	(void)state;
	assert_true(proc_env_secret("POSTGRES_PASSWORD=x"));
	assert_true(proc_env_secret("POSTGRES_PASSWORD_FILE=/run/secrets/pw"));
	assert_true(proc_env_secret("PGPASSWORD=x"));
	assert_true(proc_env_secret("AWS_SECRET_ACCESS_KEY=x"));
	assert_true(proc_env_secret("AWS_SESSION_TOKEN"));
	assert_true(proc_env_secret("PGSTASH_SIGNING_KEY_FILE=k"));
	assert_false(proc_env_secret("POSTGRES_PASSWORDS=x"));
	assert_false(proc_env_secret("POSTGRES_USER=x"));
	assert_false(proc_env_secret("PGHOST=/tmp"));
	assert_false(proc_env_secret("AWS=x"));
	assert_false(proc_env_secret("PATH=/bin"));

	setenv("AWS_ACCESS_KEY_ID", "a", 1);
	setenv("POSTGRES_PASSWORD", "p", 1);
	setenv("PGSTASH_CACHE_DIR", "/c", 1);
	proc_env_drop_credentials();
	assert_null(getenv("AWS_ACCESS_KEY_ID"));
	assert_null(getenv("POSTGRES_PASSWORD"));
	/* Settings are read again by nobody, but they are no credential: ours to keep. */
	assert_string_equal(getenv("PGSTASH_CACHE_DIR"), "/c");
	unsetenv("PGSTASH_CACHE_DIR");
}

int
main(void)
{
	if (sig_init() != 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_env_secret),
		cmocka_unit_test(test_split_plain),
		cmocka_unit_test(test_split_quotes),
		cmocka_unit_test(test_split_escapes),
		cmocka_unit_test(test_split_errors),
		cmocka_unit_test(test_env_lists),
		cmocka_unit_test(test_exit_codes_and_signals),
		cmocka_unit_test(test_child_never_root),
		cmocka_unit_test(test_capture_bound_and_env),
		cmocka_unit_test(test_capture_input),
		cmocka_unit_test(test_start_errors),
		cmocka_unit_test(test_cwd_pipes_and_timeout),
		cmocka_unit_test(test_die_with_us),
		cmocka_unit_test(test_collect_spawned),
		cmocka_unit_test(test_pipe_write),
	};
	return cmocka_run_group_tests_name("proc", tests, NULL, NULL);
}
