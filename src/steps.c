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
/* Steps run at once at most (one poll set). */
#define STEP_MAX_PARALLEL 64
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
 * Reads what is available on the non-blocking `fd`, at most PUMP_READS
 * reads, and prints its complete lines.  The bound keeps a step that prints
 * without pause from holding the poll loop: its deadline, signals and the
 * other steps are looked at between rounds.  Returns false at end of file
 * (or a read error), true otherwise.
 */
#define PUMP_READS 16
static bool
pump_output(int fd, const char *name, struct strbuf *pending)
{
	char buf[65536];
	for (int reads = 0; reads < PUMP_READS;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			sb_appendn(pending, buf, (size_t)n);
			emit_lines(name, pending, false);
			reads++;
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
	return true;
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
	const struct cfg_step *step;
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
	bool running;
	const char *stopped_for; /* the step whose failure stopped this one, or NULL */
	int forwarded;       /* the signal forwarded to its group, or 0 */
	int status;
	int rc;              /* 0 when it exited 0 */
	struct proc p;
	char **argv;
	struct strlist env;
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

/* Forwards terminating signal `sig` (0: none read now) to the step's group; the first one plans the SIGKILL. */
static void
forward_signal(struct step_watch *w, int sig)
{
	if (!sig && sig_received && !w->forwarded)
		sig = sig_received; /* read by someone else's drain: still ours to forward */
	if (!sig)
		return;
	kill(-w->pid, sig);
	if (!w->forwarded)
		w->kill_at = log_now() + STEP_KILL_GRACE_S;
	w->forwarded = sig;
}

/* A step failed: the others still running get SIGTERM (SIGKILL after the grace). */
static void
stop_others(struct step_watch *ws, size_t n, const struct step_watch *failed)
{
	for (size_t i = 0; i < n; i++) {
		struct step_watch *w = &ws[i];
		if (!w->running || w->stopped_for || w->forwarded)
			continue;
		log_warning("stopping step %s: step %s failed", w->name, failed->name);
		w->stopped_for = failed->name;
		kill(-w->pid, SIGTERM);
		w->kill_at = log_now() + STEP_KILL_GRACE_S;
	}
}

static int report_end(const struct step_watch *w, double elapsed);

/* After its exit: the rest of its output, whatever it left behind killed, its end logged. */
static void
finish(struct step_watch *w)
{
	double elapsed = log_now() - w->start;
	/* What the step wrote just before it exited, then whatever a leftover process still holds. */
	if (w->out_open)
		pump_output(w->out, w->name, &w->pending);
	emit_lines(w->name, &w->pending, true);
	/* Nothing the step started may outlive it: a daemon would hold the pipe, files, the server. */
	if (kill(-w->pid, SIGKILL) == 0)
		log_debug("step %s: killed processes it left behind", w->name);
	w->running = false;
	w->rc = report_end(w, elapsed);
}

/*
 * tini's loop over every running step: one poll() waits for their output,
 * signals and the next deadline, until all have exited.  The first failure
 * stops the others.  0, or -1 when poll failed (logged; the steps are
 * killed and reaped).
 */
static int
supervise(struct step_watch *ws, size_t n)
{
	for (;;) {
		double now = log_now();
		int wait_ms = 1000;
		size_t live = 0;
		struct pollfd pfd[STEP_MAX_PARALLEL + 1];
		struct step_watch *owner[STEP_MAX_PARALLEL + 1];
		nfds_t nfds = 0;
		for (size_t i = 0; i < n; i++) {
			struct step_watch *w = &ws[i];
			if (!w->running)
				continue;
			live++;
			enforce_deadlines(w, now);
			int ms = poll_wait_ms(w, now);
			if (ms < wait_ms)
				wait_ms = ms;
			if (w->out_open) {
				owner[nfds] = w;
				pfd[nfds++] = (struct pollfd){.fd = w->out, .events = POLLIN};
			}
		}
		if (live == 0)
			return 0;
		if (sig_fd() >= 0) {
			owner[nfds] = NULL;
			pfd[nfds++] = (struct pollfd){.fd = sig_fd(), .events = POLLIN};
		} else if (wait_ms > 50)
			wait_ms = 50; /* no signalfd (not PID 1 duty): notice the exit by polling */
		if (poll(pfd, nfds, wait_ms) < 0 && errno != EINTR) {
			log_error("poll failed: %s", strerror(errno));
			for (size_t i = 0; i < n; i++) {
				if (ws[i].running) {
					kill(-ws[i].pid, SIGKILL);
					proc_wait(ws[i].pid, &ws[i].status, -1, 0);
					ws[i].running = false;
					ws[i].rc = -1;
				}
			}
			return -1;
		}
		for (nfds_t k = 0; k < nfds; k++)
			if (owner[k] && owner[k]->out_open)
				owner[k]->out_open = pump_output(owner[k]->out, owner[k]->name, &owner[k]->pending);
		int sig = sig_drain();
		for (size_t i = 0; i < n; i++)
			if (ws[i].running)
				forward_signal(&ws[i], sig);
		for (size_t i = 0; i < n; i++) {
			struct step_watch *w = &ws[i];
			if (w->running && sig_child_done(w->pid, &w->status)) {
				finish(w);
				if (w->rc != 0 && !w->stopped_for)
					stop_others(ws, n, w);
			}
		}
	}
}

/* Logs how the step ended.  0 when it exited 0. */
static int
report_end(const struct step_watch *w, double elapsed)
{
	const char *name = w->name;
	int status = w->status;
	if (w->stopped_for) {
		log_error("step %s stopped after %.1f s: step %s failed", name, elapsed, w->stopped_for);
	} else if (w->forwarded) {
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

/* Splits, builds the environment of and starts one step.  0, or -1 (logged). */
static int
watch_start(struct step_watch *w, const struct cfg_step *step, const struct cfg *cfg, const struct srv *s)
{
	const char *why = NULL;
	w->argv = proc_split_argv(step->run, &why);
	if (!w->argv) {
		log_error("step %s: run = %s: %s", w->name, step->run ? step->run : "", why);
		return -1;
	}
	step_env(step, cfg, s, &w->env);
	log_info("step %s: running %s", w->name, step->run);
	w->start = log_now();
	if (start_step(step, w->argv, &w->env, &w->p) != 0)
		return -1;
	w->pid = w->p.pid;
	w->out = w->p.out;
	w->out_open = true;
	w->running = true;
	if (fcntl(w->out, F_SETFL, O_NONBLOCK) != 0)
		log_warning("could not make the output pipe of step %s non-blocking: %s", w->name, strerror(errno));
	w->timeout = step->timeout > 0 ? step->timeout : cfg->step_timeout;
	w->deadline = w->timeout > 0 ? w->start + (double)w->timeout : 0;
	return 0;
}

int
step_run_commands(const struct cfg_step *const *steps, size_t n, const struct cfg *cfg, const struct srv *s)
{
	if (n == 0)
		return 0;
	if (n > STEP_MAX_PARALLEL) {
		log_error("at most %d steps run at once", STEP_MAX_PARALLEL);
		return -1;
	}
	if (sig_received) {
		log_error("step %s not started: received signal %d", steps[0]->name, (int)sig_received);
		return -1;
	}
	struct step_watch *ws = xcalloc(n, sizeof(*ws));
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		ws[i].step = steps[i];
		ws[i].name = steps[i]->name;
		ws[i].p = (struct proc){.pid = 0, .in = -1, .out = -1};
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (watch_start(&ws[i], steps[i], cfg, s) != 0) {
			rc = -1;
			stop_others(ws, i, &ws[i]);
		}
	}
	if (supervise(ws, n) != 0)
		rc = -1;
	for (size_t i = 0; i < n; i++) {
		if (ws[i].pid > 0 && ws[i].rc != 0)
			rc = -1;
		proc_close(&ws[i].p);
		sb_free(&ws[i].pending);
		sl_free(&ws[i].env);
		proc_argv_free(ws[i].argv);
	}
	free(ws);
	return rc;
}

int
step_run_command(const struct cfg_step *step, const struct cfg *cfg, const struct srv *s)
{
	return step_run_commands(&step, 1, cfg, s);
}
