/*
 * Unit tests for sig.  sig_init blocks signals for the whole process, so every
 * test runs its body in a forked child and the test process's mask and
 * dispositions stay untouched.  A body reports a failed check by exiting
 * non-zero after printing file:line to stderr (cmocka's asserts would unwind
 * into the runner's copy inside the child).
 */
#include "unit.h"

#include "log.h"
#include "sig.h"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define CHECK(cond)                                                                 \
	do {                                                                            \
		if (!(cond)) {                                                              \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			fflush(stderr);                                                         \
			_exit(1);                                                               \
		}                                                                           \
	} while (0)

/* Runs body() in a forked child with an empty signal mask; fails the test unless it exits 0. */
static void
in_child(void (*body)(void), const char *name)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Known starting point, whatever the runner handed us. */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		alarm(30); /* a hung wait must not hang the suite */
		body();
		fflush(stderr);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("%s: child %s %d", name, WIFEXITED(status) ? "exited with" : "was killed by signal",
		         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

#define RUN_IN_CHILD(body) in_child(body, #body)

/*
 * In a grandchild: die with the child that forked us, so a failed check never
 * leaves a sleeper behind holding the runner's output pipe open.
 */
static void
die_with_parent(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(99);
}

/* Forks a process that runs fn (after sig_child_reset); returns its pid. */
static pid_t
spawn(void (*fn)(void), bool own_group)
{
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		die_with_parent(parent);
		if (own_group)
			setpgid(0, 0);
		sig_child_reset();
		fn();
		_exit(0);
	}
	/* Both sides set the group, so it is in place whichever runs first. */
	if (own_group)
		setpgid(pid, pid);
	return pid;
}

static void
exit_7(void)
{
	_exit(7);
}

static void
exit_0(void)
{
	_exit(0);
}

static void
sleep_long(void)
{
	alarm(60); /* a last resort, should a broken parent leave us behind */
	for (;;)
		pause();
}

/* Waits (at most 5 s) until `pid` has exited, leaving it a zombie for someone else to reap. */
static void
wait_zombie(pid_t pid)
{
	for (int i = 0; i < 500; i++) {
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		CHECK(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0);
		if (si.si_pid == pid)
			return;
		usleep(10 * 1000);
	}
	CHECK(!"child did not exit within 5 s");
}

/* Drains until `pid` is gone (at most 5 s); true when sig_drain reaped it. */
static bool
drained_away(pid_t pid)
{
	for (int i = 0; i < 500; i++) {
		sig_drain();
		siginfo_t si;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == -1 && errno == ECHILD)
			return true;
		usleep(10 * 1000);
	}
	return false;
}

static bool
in_mask(int sig)
{
	sigset_t cur;
	CHECK(sigprocmask(SIG_SETMASK, NULL, &cur) == 0);
	return sigismember(&cur, sig) == 1;
}

/* ---- bodies ---- */

static void
body_init_blocks(void)
{
	CHECK(sig_fd() == -1);
	CHECK(!in_mask(SIGTERM));
	CHECK(sig_init() == 0);
	const int blocked[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD};
	for (size_t i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++)
		CHECK(in_mask(blocked[i]));
	CHECK(!in_mask(SIGUSR1));
	CHECK(!in_mask(SIGALRM));
	int fd = sig_fd();
	CHECK(fd >= 0);
	CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* A second call is harmless and keeps the descriptor. */
	CHECK(sig_init() == 0);
	CHECK(sig_fd() == fd);
	CHECK(sig_received == 0);
	CHECK(sig_drain() == 0);
}

static void
body_drain_records(void)
{
	CHECK(sig_init() == 0);
	CHECK(sig_drain() == 0);
	CHECK(sig_received == 0);
	/* Blocked: the process survives, the signal waits on the signalfd. */
	CHECK(kill(getpid(), SIGTERM) == 0);
	struct pollfd p = {.fd = sig_fd(), .events = POLLIN};
	CHECK(poll(&p, 1, 5000) == 1);
	CHECK(sig_drain() == SIGTERM);
	CHECK(sig_received == SIGTERM);
	/* Drained: nothing left. */
	CHECK(sig_drain() == 0);
	CHECK(sig_received == SIGTERM);
	/* A later signal is returned, but the first one stays the recorded one. */
	CHECK(kill(getpid(), SIGINT) == 0);
	CHECK(sig_drain() == SIGINT);
	CHECK(sig_received == SIGTERM);
	/* SIGCHLD is not a terminating signal. */
	CHECK(kill(getpid(), SIGCHLD) == 0);
	CHECK(sig_drain() == 0);
}

static void
body_wait_status(void)
{
	CHECK(sig_init() == 0);
	pid_t a = spawn(exit_7, false);
	sig_track(a);
	int status = -1;
	double t0 = log_now();
	CHECK(sig_wait_child(a, &status, 10, 0) == 0);
	CHECK(log_now() - t0 < 5);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 7);
	/* Forgotten once reported. */
	CHECK(!sig_child_done(a, &status));
	CHECK(sig_received == 0);

	/* Reaped by a drain before anyone asked: the status is kept for the asker. */
	pid_t b = spawn(exit_0, false);
	sig_track(b);
	wait_zombie(b);
	sig_drain();
	CHECK(waitpid(b, NULL, WNOHANG) == -1 && errno == ECHILD);
	status = -1;
	CHECK(sig_child_done(b, &status));
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* Killed by a signal: the wait(2) form says so. */
	pid_t c = spawn(sleep_long, false);
	sig_track(c);
	CHECK(!sig_child_done(c, &status));
	CHECK(kill(c, SIGKILL) == 0);
	CHECK(sig_wait_child(c, &status, 10, 0) == 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void
body_wait_timeout(void)
{
	CHECK(sig_init() == 0);
	pid_t c = spawn(sleep_long, false);
	sig_track(c);
	int status = -1;
	double t0 = log_now();
	CHECK(sig_wait_child(c, &status, 0.3, 0) == 1);
	double took = log_now() - t0;
	CHECK(took >= 0.29);
	CHECK(took < 3);
	CHECK(status == -1);
	/* Still tracked after a timeout: a later wait gets the status. */
	CHECK(kill(c, SIGTERM) == 0);
	CHECK(sig_wait_child(c, &status, 10, 0) == 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	/* A zero timeout only looks. */
	pid_t d = spawn(sleep_long, false);
	sig_track(d);
	t0 = log_now();
	CHECK(sig_wait_child(d, &status, 0, 0) == 1);
	CHECK(log_now() - t0 < 1);
	kill(d, SIGKILL);
	CHECK(sig_wait_child(d, &status, 10, 0) == 0);
}

static void
exit_3_soon(void)
{
	usleep(5 * 1000);
	_exit(3);
}

static void
body_wait_uninit(void)
{
	/*
	 * No sig_init (as `pgstash key`, whose `postgres --version` lives some
	 * 10 ms): the wait ends about when the child does, not on a 200 ms tick.
	 */
	CHECK(sig_fd() == -1);
	double worst = 0;
	for (int i = 0; i < 10; i++) {
		pid_t c = spawn(exit_3_soon, false);
		sig_track(c);
		int status = -1;
		double t0 = log_now();
		CHECK(sig_wait_child(c, &status, 10, 0) == 0);
		double took = log_now() - t0;
		worst = took > worst ? took : worst;
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 3);
	}
	if (worst >= 0.1)
		fprintf(stderr, "slowest wait %.3f s\n", worst);
	CHECK(worst < 0.1);
	/* A timeout still ends the wait, and a later wait still gets the status. */
	pid_t c = spawn(sleep_long, false);
	sig_track(c);
	int status = -1;
	double t0 = log_now();
	CHECK(sig_wait_child(c, &status, 0.3, 0) == 1);
	double took = log_now() - t0;
	CHECK(took >= 0.29 && took < 3);
	CHECK(kill(c, SIGKILL) == 0);
	CHECK(sig_wait_child(c, &status, 10, 0) == 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* An untracked child that has exited: reaped, never reported, and the wait times out without spinning. */
	pid_t u = spawn(exit_0, false);
	wait_zombie(u);
	t0 = log_now();
	CHECK(sig_wait_child(u, &status, 0.2, 0) == 1);
	CHECK(log_now() - t0 >= 0.19);
	CHECK(waitpid(u, NULL, WNOHANG) == -1 && errno == ECHILD);
}

/* Sends SIGTERM to the parent a moment after starting. */
static void
term_parent_soon(void)
{
	usleep(300 * 1000);
	kill(getppid(), SIGTERM);
}

static void
body_forward(void)
{
	CHECK(sig_init() == 0);
	pid_t leader = spawn(sleep_long, true);
	sig_track(leader);
	/* A second member of the leader's group must get the signal too. */
	fflush(stderr);
	pid_t parent = getpid();
	pid_t member = fork();
	CHECK(member >= 0);
	if (member == 0) {
		die_with_parent(parent);
		setpgid(0, leader);
		sig_child_reset();
		sleep_long();
	}
	setpgid(member, leader);
	sig_track(member);
	CHECK(getpgid(member) == leader);

	pid_t sender = spawn(term_parent_soon, false);
	int status = -1;
	double t0 = log_now();
	CHECK(sig_wait_child(leader, &status, 10, leader) == 0);
	CHECK(log_now() - t0 < 5);
	CHECK(sig_received == SIGTERM);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	CHECK(sig_wait_child(member, &status, 10, 0) == 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	/* The sender was never tracked: reaped all the same. */
	CHECK(drained_away(sender));
}

static void
body_forward_no_group(void)
{
	/* Without fwd_pgid the signal is recorded and the child keeps running. */
	CHECK(sig_init() == 0);
	pid_t c = spawn(sleep_long, false);
	sig_track(c);
	CHECK(kill(getpid(), SIGINT) == 0);
	int status = -1;
	CHECK(sig_wait_child(c, &status, 0.3, 0) == 1);
	CHECK(sig_received == SIGINT);
	CHECK(kill(c, 0) == 0);
	/* sig_forward to a process that leads no group reaches the process itself. */
	CHECK(getpgid(c) != c);
	sig_forward(c, SIGTERM);
	CHECK(sig_wait_child(c, &status, 10, 0) == 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
}

static void
check_reset_mask(void)
{
	const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		if (in_mask(sigs[i]))
			_exit(10 + (int)i);
		struct sigaction sa;
		if (sigaction(sigs[i], NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
			_exit(20 + (int)i);
	}
	_exit(0);
}

static void
body_child_reset(void)
{
	CHECK(sig_init() == 0);
	int sfd = sig_fd();
	fflush(stderr);
	pid_t gc = fork();
	CHECK(gc >= 0);
	if (gc == 0) {
		sig_child_reset();
		/* The signalfd is closed: an exec'd program must not inherit it. */
		if (fcntl(sfd, F_GETFD) != -1 || errno != EBADF)
			_exit(30);
		check_reset_mask();
	}
	sig_track(gc);
	int status = -1;
	CHECK(sig_wait_child(gc, &status, 10, 0) == 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fprintf(stderr, "grandchild status %d\n", status);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Our own mask is unchanged by the child's reset. */
	CHECK(in_mask(SIGTERM));
}

static void
body_child_reset_uninit(void)
{
	/* Never initialised: the child still ends up with nothing blocked. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
	signal(SIGINT, SIG_IGN);
	sig_child_reset();
	check_reset_mask();
}

static void
body_reaps_untracked(void)
{
	CHECK(sig_init() == 0);
	pid_t z = spawn(exit_0, false);
	wait_zombie(z);
	CHECK(sig_drain() == 0);
	CHECK(waitpid(z, NULL, WNOHANG) == -1 && errno == ECHILD);
	CHECK(sig_received == 0);
	/* An untracked pid never reports as done. */
	int status;
	CHECK(!sig_child_done(z, &status));
}

static void
body_slots_reused(void)
{
	/* Many children in a row: slots are reused once their status is taken. */
	CHECK(sig_init() == 0);
	for (int i = 0; i < 100; i++) {
		pid_t c = spawn(exit_7, false);
		sig_track(c);
		int status = -1;
		CHECK(sig_wait_child(c, &status, 10, 0) == 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
	}
}

/* ---- tests ---- */

static void
test_init_blocks(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_init_blocks);
	/* The test process itself was never touched. */
	sigset_t cur;
	sigprocmask(SIG_SETMASK, NULL, &cur);
	assert_int_equal(sigismember(&cur, SIGTERM), 0);
	assert_int_equal(sig_fd(), -1);
}

static void
test_drain_records(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_drain_records);
}

static void
test_wait_status(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_wait_status);
}

static void
test_wait_timeout(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_wait_timeout);
}

static void
test_wait_uninit(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_wait_uninit);
}

static void
test_forward(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_forward);
}

static void
test_forward_no_group(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_forward_no_group);
}

static void
test_child_reset(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_child_reset);
	RUN_IN_CHILD(body_child_reset_uninit);
}

static void
test_reaps_untracked(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_reaps_untracked);
}

static void
test_slots_reused(void **state)
{
	(void)state;
	RUN_IN_CHILD(body_slots_reused);
}

int
main(void)
{
	log_min_level = LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_blocks),
		cmocka_unit_test(test_drain_records),
		cmocka_unit_test(test_wait_status),
		cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_wait_uninit),
		cmocka_unit_test(test_forward),
		cmocka_unit_test(test_forward_no_group),
		cmocka_unit_test(test_child_reset),
		cmocka_unit_test(test_reaps_untracked),
		cmocka_unit_test(test_slots_reused),
	};
	return cmocka_run_group_tests_name("sig", tests, NULL, NULL);
}
