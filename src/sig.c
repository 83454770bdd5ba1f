/*
 * sig — see sig.h.
 */
#include "sig.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

volatile sig_atomic_t sig_received;

static int sfd = -1;
static sigset_t old_mask;

#define MAX_TRACKED 32
static struct {
	pid_t pid;
	bool done;
	int status;
} tracked[MAX_TRACKED];

static void
handled_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGQUIT);
	sigaddset(set, SIGCHLD);
}

int
sig_init(void)
{
	sigset_t set;

	if (sfd >= 0)
		return 0;
	handled_set(&set);
	if (sigprocmask(SIG_BLOCK, &set, &old_mask) != 0) {
		log_error("could not block signals: %s", strerror(errno));
		return -1;
	}
	sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		log_error("could not create signalfd: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void
sig_child_reset(void)
{
	sigset_t set;
	handled_set(&set);
	for (int s = 1; s < NSIG; s++) {
		if (sigismember(&set, s) == 1)
			signal(s, SIG_DFL);
	}
	if (sfd >= 0) {
		close(sfd);
		sfd = -1;
		/* What we were started with: a child must not inherit our blocked set. */
		sigprocmask(SIG_SETMASK, &old_mask, NULL);
	} else {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
	}
}

int
sig_fd(void)
{
	return sfd;
}

static void
reap(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0)
			break;
		for (int i = 0; i < MAX_TRACKED; i++) {
			if (tracked[i].pid == pid) {
				tracked[i].done = true;
				tracked[i].status = status;
				break;
			}
		}
	}
}

int
sig_drain(void)
{
	int got = 0;

	if (sfd >= 0) {
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo == SIGCHLD)
				continue;
			got = (int)si.ssi_signo;
			if (!sig_received)
				sig_received = got;
		}
	} else {
		/* Not initialised (unit tests): still notice pending signals. */
		sigset_t pend;
		if (sigpending(&pend) == 0) {
			const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
			for (size_t i = 0; i < 4; i++)
				if (sigismember(&pend, sigs[i]) == 1) {
					got = sigs[i];
					if (!sig_received)
						sig_received = got;
				}
		}
	}
	reap();
	return got;
}

void
sig_track(pid_t pid)
{
	for (int i = 0; i < MAX_TRACKED; i++) {
		if (tracked[i].pid == 0) {
			tracked[i].pid = pid;
			tracked[i].done = false;
			tracked[i].status = 0;
			return;
		}
	}
	log_warning("too many child processes tracked; the status of pid %ld is lost", (long)pid);
}

bool
sig_child_done(pid_t pid, int *status)
{
	/* Reap only: reading the signalfd here would swallow a signal its caller is about to look for. */
	reap();
	for (int i = 0; i < MAX_TRACKED; i++) {
		if (tracked[i].pid == pid && tracked[i].done) {
			if (status)
				*status = tracked[i].status;
			tracked[i].pid = 0;
			tracked[i].done = false;
			return true;
		}
	}
	return false;
}

void
sig_forward(pid_t pgid, int sig)
{
	if (pgid <= 0)
		return;
	if (kill(-pgid, sig) != 0)
		kill(pgid, sig);
}

/*
 * Without the signalfd (sig_init not called: `pgstash key`'s `postgres
 * --version`, unit tests) nothing wakes us when the child exits: a pidfd
 * does (Linux 5.3+); failing that, naps that start at 1 ms and double up to
 * 50 ms, so a child that lives a few milliseconds costs about as much again,
 * not a fixed 200 ms.  -1 when there is no pidfd.
 */
static int
open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
	/* A pidfd is always close-on-exec. */
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	return -1;
#endif
}

int
sig_wait_child(pid_t pid, int *status, double timeout_s, pid_t fwd_pgid)
{
	double deadline = timeout_s >= 0 ? log_now() + timeout_s : 0;
	int pidfd = -2; /* -2: not tried yet */
	int nap_ms = 1;
	int rc = -1;

	for (;;) {
		int got = sig_drain();
		if (got && fwd_pgid > 0)
			sig_forward(fwd_pgid, got);
		if (sig_child_done(pid, status)) {
			rc = 0;
			break;
		}
		/* With a pidfd, still wake now and then: sig_drain looks for pending signals. */
		int wait_ms = 200;
		if (sfd < 0 && pidfd == -2)
			pidfd = open_pidfd(pid);
		if (sfd < 0 && pidfd < 0) {
			wait_ms = nap_ms;
			nap_ms = nap_ms * 2 > 50 ? 50 : nap_ms * 2;
		}
		if (timeout_s >= 0) {
			double left = deadline - log_now();
			if (left <= 0) {
				rc = 1;
				break;
			}
			if (left * 1000 < wait_ms)
				wait_ms = (int)(left * 1000) + 1;
		}
		int fd = sfd >= 0 ? sfd : pidfd;
		if (fd >= 0) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			int n = poll(&p, 1, wait_ms);
			if (n < 0 && errno != EINTR) {
				log_error("poll failed: %s", strerror(errno));
				break;
			}
			/*
			 * A pidfd stays readable once the child has exited: should it not
			 * be ours to reap (untracked), naps from here on, no spinning.
			 */
			if (n > 0 && fd == pidfd) {
				if (sig_child_done(pid, status)) {
					rc = 0;
					break;
				}
				close(pidfd);
				pidfd = -1;
			}
		} else {
			usleep((useconds_t)wait_ms * 1000);
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	return rc;
}
