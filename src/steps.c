/*
 * steps — see steps.h.  The run loop is tini's: the step is a direct child
 * in its own process group, signals arrive on the signalfd and are forwarded
 * to that group, and one poll() waits for output, signals and the deadline.
 */
#include "steps.h"
#include "config.h"
#include "log.h"
#include "proc.h"
#include "server.h"
#include "sig.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* After SIGTERM (timeout or forwarded signal), how long until SIGKILL. */
#define STEP_KILL_GRACE_S 10.0
/* A line longer than this is printed in pieces, each with the prefix. */
#define STEP_MAX_LINE 16384

/* Prints one line of step output with the prefix, in a single write. */
static void
emit_line(const char *name, const char *s, size_t n)
{
	struct strbuf line = {0};
	sb_appendf(&line, "[step %s] ", name);
	sb_appendn(&line, s, n);
	sb_appendc(&line, '\n');
	fflush(stdout);
	fwrite(line.buf, 1, line.len, stderr);
	fflush(stderr);
	sb_free(&line);
}

/* Prints the complete lines in `pending` (all of it when `flush`), keeping the rest. */
static void
emit_lines(const char *name, struct strbuf *pending, bool flush)
{
	size_t start = 0;
	while (start < pending->len) {
		const char *base = pending->buf + start;
		size_t left = pending->len - start;
		const char *nl = memchr(base, '\n', left);
		if (nl && (size_t)(nl - base) > STEP_MAX_LINE) {
			/* Long lines come out in the same pieces however the reads split them. */
			emit_line(name, base, STEP_MAX_LINE);
			start += STEP_MAX_LINE;
		} else if (nl) {
			size_t n = (size_t)(nl - base);
			if (n > 0 && base[n - 1] == '\r')
				n--;
			emit_line(name, base, n);
			start += (size_t)(nl - base) + 1;
		} else if (left >= STEP_MAX_LINE || flush) {
			size_t n = left < STEP_MAX_LINE ? left : STEP_MAX_LINE;
			emit_line(name, base, n);
			start += n;
		} else {
			break;
		}
	}
	if (start > 0) {
		memmove(pending->buf, pending->buf + start, pending->len - start);
		pending->len -= start;
		pending->buf[pending->len] = '\0';
	}
}

/*
 * Reads what is available on the non-blocking `fd` and prints its complete
 * lines.  Returns false at end of file (or a read error), true otherwise.
 */
static bool
pump_output(int fd, const char *name, struct strbuf *pending)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			sb_appendn(pending, buf, (size_t)n);
			emit_lines(name, pending, false);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n < 0)
			log_warning("could not read the output of step %s: %s", name, strerror(errno));
		return false;
	}
}

static int
ms_until(double t, double now)
{
	double ms = (t - now) * 1000.0;
	if (ms <= 0)
		return 0;
	if (ms > 1000)
		return 1000;
	return (int)ms + 1;
}

/* What the supervision of a running step saw. */
struct step_watch {
	const char *name;
	pid_t pid;
	int out;             /* its stdout and stderr, non-blocking */
	struct strbuf pending;
	long timeout;        /* seconds; 0: none */
	double start;
	double deadline;     /* 0: none */
	double kill_at;      /* SIGKILL after SIGTERM; 0: not yet planned */
	bool timed_out;
	bool killed;
	bool out_open;
	int forwarded;       /* the signal forwarded to its group, or 0 */
	int status;
};

/* Sends SIGTERM at the deadline and SIGKILL when the grace after it is over. */
static void
enforce_deadlines(struct step_watch *w, double now)
{
	if (w->deadline > 0 && !w->timed_out && now >= w->deadline) {
		w->timed_out = true;
		log_warning("step %s timed out after %ld s: stopping it", w->name, w->timeout);
		kill(-w->pid, SIGTERM);
		w->kill_at = now + STEP_KILL_GRACE_S;
	}
	if (w->kill_at > 0 && !w->killed && now >= w->kill_at) {
		log_warning("step %s is still running %.0f s after SIGTERM: killing it", w->name, STEP_KILL_GRACE_S);
		kill(-w->pid, SIGKILL);
		w->killed = true;
	}
}

/* How long the next poll may sleep: until the next deadline, at most 1 s. */
static int
poll_wait_ms(const struct step_watch *w, double now)
{
	int wait_ms = 1000;
	if (w->deadline > 0 && !w->timed_out)
		wait_ms = ms_until(w->deadline, now);
	if (w->kill_at > 0 && !w->killed && ms_until(w->kill_at, now) < wait_ms)
		wait_ms = ms_until(w->kill_at, now);
	return wait_ms;
}

/* Forwards a terminating signal to the step's group; the first one plans the SIGKILL. */
static void
forward_signals(struct step_watch *w)
{
	int sig = sig_drain();
	if (!sig && sig_received && !w->forwarded)
		sig = sig_received; /* read by someone else's drain: still ours to forward */
	if (!sig)
		return;
	kill(-w->pid, sig);
	if (!w->forwarded)
		w->kill_at = log_now() + STEP_KILL_GRACE_S;
	w->forwarded = sig;
}

/*
 * tini's loop: one poll() waits for output, signals and the next deadline,
 * until the step has exited.  0, or -1 when poll failed (logged; the step is
 * killed and reaped).
 */
static int
supervise(struct step_watch *w)
{
	for (;;) {
		double now = log_now();
		enforce_deadlines(w, now);
		int wait_ms = poll_wait_ms(w, now);
		struct pollfd pfd[2];
		nfds_t nfds = 0;
		if (w->out_open)
			pfd[nfds++] = (struct pollfd){.fd = w->out, .events = POLLIN};
		if (sig_fd() >= 0)
			pfd[nfds++] = (struct pollfd){.fd = sig_fd(), .events = POLLIN};
		else if (wait_ms > 50)
			wait_ms = 50; /* no signalfd (not PID 1 duty): notice the exit by polling */
		if (poll(pfd, nfds, wait_ms) < 0 && errno != EINTR) {
			log_error("poll failed: %s", strerror(errno));
			kill(-w->pid, SIGKILL);
			proc_wait(w->pid, &w->status, -1, 0);
			return -1;
		}
		if (w->out_open)
			w->out_open = pump_output(w->out, w->name, &w->pending);
		forward_signals(w);
		if (sig_child_done(w->pid, &w->status))
			return 0;
	}
}

/* Logs how the step ended.  0 when it exited 0. */
static int
report_end(const struct step_watch *w, double elapsed)
{
	const char *name = w->name;
	int status = w->status;
	if (w->forwarded) {
		log_error("step %s stopped after %.1f s: pgstash received signal %d (%s)", name, elapsed, w->forwarded,
		          strsignal(w->forwarded));
	} else if (w->timed_out) {
		log_error("step %s failed: timed out after %ld s", name, w->timeout);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		log_info("step %s finished in %.1f s", name, elapsed);
		return 0;
	} else if (WIFEXITED(status)) {
		log_error("step %s failed: exit status %d after %.1f s", name, WEXITSTATUS(status), elapsed);
	} else if (WIFSIGNALED(status)) {
		log_error("step %s failed: killed by signal %d (%s) after %.1f s", name, WTERMSIG(status),
		          strsignal(WTERMSIG(status)), elapsed);
	} else {
		log_error("step %s failed: unexpected wait status %d after %.1f s", name, status, elapsed);
	}
	return -1;
}

/* The step's environment: ours less secrets, the temporary server's client settings, then the step's own. */
static void
step_env(const struct cfg_step *step, const struct cfg *cfg, const struct srv *s, struct strlist *env)
{
	proc_env_inherit_public(env);
	srv_client_env(s, cfg, step->database ? step->database : cfg->db_name, env);
	for (size_t i = 0; i < step->env.n; i++)
		proc_env_put(env, step->env.v[i]);
}

/* Starts the step in its own process group, its output on a pipe.  0 or -1 (logged). */
static int
start_step(const struct cfg_step *step, char **argv, const struct strlist *env, struct proc *p)
{
	struct proc_opts o = {
		.argv = argv,
		.envp = env->v,
		.search_path = true,
		.cwd = step->root,
		.own_group = true,
		.out = {PROC_IO_PIPE},
		.report_start_error = true,
	};
	switch (proc_spawn(&o, p)) {
	case PROC_SPAWNED:
		return 0;
	case PROC_NOT_STARTED:
		return -1;
	case PROC_CHDIR_FAILED:
		log_error("step %s: could not change directory to \"%s\": %s", step->name, step->root, strerror(p->err));
		return -1;
	case PROC_EXEC_FAILED:
		log_error("step %s: could not execute \"%s\": %s", step->name, argv[0], strerror(p->err));
		return -1;
	}
	return -1;
}

int
step_run_command(const struct cfg_step *step, const struct cfg *cfg, const struct srv *s)
{
	const char *why = NULL;
	struct strlist env = {0};
	struct proc p = {.pid = 0, .in = -1, .out = -1};
	struct step_watch w = {.name = step->name, .out_open = true};
	int rc = -1;

	if (sig_received) {
		log_error("step %s not started: received signal %d", w.name, (int)sig_received);
		return -1;
	}
	char **argv = proc_split_argv(step->run, &why);
	if (!argv) {
		log_error("step %s: run = %s: %s", w.name, step->run ? step->run : "", why);
		return -1;
	}
	step_env(step, cfg, s, &env);

	log_info("step %s: running %s", w.name, step->run);
	w.start = log_now();
	if (start_step(step, argv, &env, &p) != 0)
		goto cleanup;
	w.pid = p.pid;
	w.out = p.out;
	if (fcntl(w.out, F_SETFL, O_NONBLOCK) != 0)
		log_warning("could not make the output pipe of step %s non-blocking: %s", w.name, strerror(errno));
	w.timeout = step->timeout > 0 ? step->timeout : cfg->step_timeout;
	w.deadline = w.timeout > 0 ? w.start + (double)w.timeout : 0;
	if (supervise(&w) != 0)
		goto cleanup;
	double elapsed = log_now() - w.start;

	/* What the step wrote just before it exited, then whatever a leftover process still holds. */
	if (w.out_open)
		pump_output(w.out, w.name, &w.pending);
	emit_lines(w.name, &w.pending, true);
	/* Nothing the step started may outlive it: a daemon would hold the pipe, files, the server. */
	if (kill(-w.pid, SIGKILL) == 0)
		log_debug("step %s: killed processes it left behind", w.name);
	rc = report_end(&w, elapsed);

cleanup:
	proc_close(&p);
	sb_free(&w.pending);
	sl_free(&env);
	proc_argv_free(argv);
	return rc;
}
