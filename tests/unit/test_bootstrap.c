/*
 * Unit tests for boot_healthcheck: every "not ready" case (no state file,
 * still starting, a dead server pid, a live pid with nothing on the socket)
 * and the one "ready" case, against a real PostgreSQL started here as the
 * `postgres` user on a unix socket in a private temp dir, and stopped on
 * every path (the teardown, and a parent-death signal should we crash).
 */
#include "unit.h"

#include "bootstrap.h"
#include "durable.h"
#include "config.h"
#include "log.h"

#include <libpq-fe.h>
#include <pwd.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>

#define PG_BINDIR "/usr/lib/postgresql/15/bin"
#define PG_PORT "54329"

static char *tmp;
static struct cfg cfg;
static pid_t server_pid; /* the postmaster we started, 0 when none */

static int
setup(void **state)
{
	(void)state;
	tmp = unit_tmpdir();
	memset(&cfg, 0, sizeof(cfg));
	cfg.socket_dir = tmp;
	cfg.pgdata = tmp; /* no postmaster.pid here: PGHOST/PGPORT or the defaults decide */
	cfg.db_user = "postgres";
	unsetenv("PGHOST");
	unsetenv("PGPORT");
	unsetenv("PGUSER");
	server_pid = 0;
	return 0;
}

/* Fast shutdown, then immediate, then SIGKILL: the server never outlives the test. */
static void
stop_server(void)
{
	if (server_pid <= 0)
		return;
	const int sigs[] = {SIGINT, SIGQUIT, SIGKILL};
	for (size_t i = 0; i < 3; i++) {
		kill(server_pid, sigs[i]);
		for (int t = 0; t < 300; t++) {
			if (waitpid(server_pid, NULL, WNOHANG) == server_pid) {
				server_pid = 0;
				return;
			}
			usleep(50 * 1000);
		}
	}
	fprintf(stderr, "postmaster %ld did not stop\n", (long)server_pid);
	server_pid = 0;
}

static int
teardown(void **state)
{
	(void)state;
	stop_server();
	unsetenv("PGHOST");
	unsetenv("PGPORT");
	unsetenv("PGUSER");
	rm_rf(tmp);
	free(tmp);
	return 0;
}

static void
write_state(const char *text)
{
	char *p = path_join(tmp, BOOT_STATE);
	assert_int_equal(durable_write_file(p, text, strlen(text), 0644, false), 0);
	free(p);
}

/* boot_healthcheck with stderr captured. */
static int
check(char **err)
{
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = boot_healthcheck(&cfg);
	char *e = unit_stderr_end(&cap);
	if (err)
		*err = e;
	else
		free(e);
	return rc;
}

static void
expect_not_ready(const char *needle)
{
	char *err;
	int rc = check(&err);
	if (rc != 1)
		fail_msg("healthcheck returned %d, want 1; stderr: %s", rc, err);
	unit_expect_contains(err, needle);
	free(err);
}

/* ---- not ready ---- */

static void
test_no_state_file(void **state)
{
	(void)state;
	expect_not_ready("no state file \"");
	expect_not_ready("/" BOOT_STATE "\"");
}

static void
test_starting(void **state)
{
	(void)state;
	char *text = xasprintf("starting %ld\n", (long)getpid());
	write_state(text);
	free(text);
	expect_not_ready("bootstrap is under way");
	expect_not_ready("/" BOOT_STATE "\" says so");
	text = xasprintf("failed %ld\n", (long)getpid());
	write_state(text);
	free(text);
	expect_not_ready("the last bootstrap failed");

	write_state("");
	expect_not_ready("nothing readable");
	write_state("ready\n");
	expect_not_ready("not ready");
	write_state("ready notapid\n");
	expect_not_ready("not ready");
	write_state("READY 1\n");
	expect_not_ready("not ready");
}

static void
test_ready_dead_pid(void **state)
{
	(void)state;
	pid_t pid = unit_dead_pid();
	char *text = xasprintf("ready %ld\n", (long)pid);
	write_state(text);
	expect_not_ready("is not running");
	char *want = xasprintf("(pid %ld)", (long)pid);
	expect_not_ready(want);
	free(want);
	free(text);
}

static void
test_ready_no_server(void **state)
{
	(void)state;
	char *text = xasprintf("ready %ld\n", (long)getpid());
	write_state(text);
	free(text);
	/* Through PGHOST/PGPORT... */
	setenv("PGHOST", tmp, 1);
	setenv("PGPORT", PG_PORT, 1);
	expect_not_ready("does not accept connections");
	/* ...and through the configured socket dir and the default port. */
	unsetenv("PGHOST");
	unsetenv("PGPORT");
	expect_not_ready("does not accept connections");
}

/* ---- a real server ---- */

/* In a child about to exec a server program: become `pw` (when root), send output to `logf`. */
static void
child_prepare(const struct passwd *pw, const char *logf)
{
	if (pw && (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
		_exit(125);
	int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		_exit(125);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull >= 0)
		dup2(devnull, STDIN_FILENO);
}

static void
dump_log(const char *logf)
{
	char *log = read_file(logf, NULL);
	fprintf(stderr, "---- %s ----\n%s\n----\n", logf, log ? log : "(none)");
	free(log);
}

static bool
server_answers(const char *port)
{
	const char *keys[] = {"host", "port", "dbname", "user", "connect_timeout", NULL};
	const char *vals[] = {tmp, port, "postgres", "postgres", "2", NULL};
	return PQpingParams(keys, vals, 0) == PQPING_OK;
}

static void
test_ready_real_server(void **state)
{
	(void)state;
	if (access(PG_BINDIR "/initdb", X_OK) != 0 || access(PG_BINDIR "/postgres", X_OK) != 0) {
		fprintf(stderr, "skipped: no PostgreSQL server binaries in %s\n", PG_BINDIR);
		skip();
	}
	const struct passwd *pw = NULL;
	if (geteuid() == 0) {
		pw = getpwnam("postgres");
		if (!pw) {
			fprintf(stderr, "skipped: running as root and there is no postgres user\n");
			skip();
		}
		assert_int_equal(chown(tmp, pw->pw_uid, pw->pw_gid), 0);
	}
	char *data = path_join(tmp, "data");
	/* The healthcheck reads the postmaster's own pid, port and socket from PGDATA/postmaster.pid. */
	cfg.pgdata = data;
	char *logf = path_join(tmp, "server.log");

	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_prepare(pw, logf);
		execl(PG_BINDIR "/initdb", PG_BINDIR "/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
		      "--locale=C", "--no-sync", (char *)NULL);
		_exit(127);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		dump_log(logf);
		fail_msg("initdb failed (status %d)", status);
	}

	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_prepare(pw, logf);
		/* After the uid change, which clears it: postgres dies with us if we crash. */
		prctl(PR_SET_PDEATHSIG, SIGQUIT);
		if (getppid() != parent)
			_exit(125);
		execl(PG_BINDIR "/postgres", PG_BINDIR "/postgres", "-D", data, "-k", tmp, "-p", PG_PORT, "-c", "listen_addresses=",
		      "-c", "fsync=off", "-c", "max_connections=10", "-c", "shared_buffers=8MB", (char *)NULL);
		_exit(127);
	}
	server_pid = pid;

	/* A ready state before the server answers: still not ready. */
	char *text = xasprintf("ready %ld\n", (long)server_pid);
	write_state(text);
	setenv("PGHOST", tmp, 1);
	setenv("PGPORT", PG_PORT, 1);

	bool up = false;
	for (int i = 0; i < 600 && !up; i++) {
		if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
			server_pid = 0;
			dump_log(logf);
			fail_msg("postgres exited during start (status %d)", status);
		}
		up = server_answers(PG_PORT);
		if (!up)
			usleep(50 * 1000);
	}
	if (!up) {
		dump_log(logf);
		fail_msg("postgres did not accept connections within 30 s");
	}

	char *err;
	int rc = check(&err);
	if (rc != 0) {
		dump_log(logf);
		fail_msg("healthcheck on a running server returned %d: %s", rc, err);
	}
	assert_string_equal(err, "");
	free(err);

	/* The same through the configured socket dir, with only the port from the environment. */
	unsetenv("PGHOST");
	assert_int_equal(check(NULL), 0);
	setenv("PGHOST", tmp, 1);

	/* The server answers but bootstrap has not said ready: not ready. */
	char *starting = xasprintf("starting %ld\n", (long)server_pid);
	write_state(starting);
	expect_not_ready("bootstrap is under way");
	write_state(text);
	assert_int_equal(check(NULL), 0);

	/* Another port: nobody there. */
	setenv("PGPORT", "1", 1);
	expect_not_ready("does not accept connections");
	setenv("PGPORT", PG_PORT, 1);

	/* Stopped: its pid is gone and the healthcheck says so. */
	pid_t was = server_pid;
	stop_server();
	assert_int_equal(server_pid, 0);
	assert_int_equal(kill(was, 0), -1);
	expect_not_ready("is not running");

	free(text);
	free(starting);
	free(data);
	free(logf);
}

int
main(void)
{
	log_min_level = LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_state_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_starting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ready_dead_pid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ready_no_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ready_real_server, setup, teardown),
	};
	return cmocka_run_group_tests_name("bootstrap", tests, NULL, NULL);
}
