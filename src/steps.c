/*
 * steps — see steps.h.  The run loop is tini's: the step is a direct child
 * in its own process group, signals arrive on the signalfd and are forwarded
 * to that group, and one poll() waits for output, signals and the deadline.
 */
#include "steps.h"
#include "log.h"
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

static const char shell_syntax[] = "shell syntax is not supported: write run = /bin/sh -c '…'";

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

char **
step_split_argv(const char *cmdline, const char **why)
{
	struct strlist words = {0};
	struct strbuf cur = {0};
	bool in_word = false;
	const char *p = cmdline ? cmdline : "";

	*why = NULL;
	while (*p) {
		char c = *p;
		if (is_blank(c)) {
			if (in_word)
				sl_add_owned(&words, sb_take(&cur));
			in_word = false;
			p++;
		} else if (c == '\'') {
			const char *end = strchr(p + 1, '\'');
			if (!end) {
				*why = "unterminated single quote";
				goto fail;
			}
			sb_appendn(&cur, p + 1, (size_t)(end - p - 1));
			in_word = true;
			p = end + 1;
		} else if (c == '"') {
			for (p++;; p++) {
				if (!*p) {
					*why = "unterminated double quote";
					goto fail;
				}
				if (*p == '"')
					break;
				if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
					p++;
				sb_appendc(&cur, *p);
			}
			in_word = true;
			p++;
		} else if (c == '\\') {
			if (!p[1]) {
				*why = "trailing backslash";
				goto fail;
			}
			/* As in sh, backslash-newline joins lines and is dropped. */
			if (p[1] != '\n') {
				sb_appendc(&cur, p[1]);
				in_word = true;
			}
			p += 2;
		} else if (strchr("|&;<>()`$", c) || (c == '#' && !in_word)) {
			/*
			 * Running these literally would do something quite different
			 * from what the line says in a shell: refuse rather than guess.
			 */
			*why = shell_syntax;
			goto fail;
		} else {
			sb_appendc(&cur, c);
			in_word = true;
			p++;
		}
	}
	if (in_word)
		sl_add_owned(&words, sb_take(&cur));
	if (words.n == 0) {
		*why = "empty command";
		goto fail;
	}
	sb_free(&cur);
	return words.v;

fail:
	sb_free(&cur);
	sl_free(&words);
	return NULL;
}

void
step_argv_free(char **argv)
{
	if (!argv)
		return;
	for (char **a = argv; *a; a++)
		free(*a);
	free(argv);
}

/* What a child reports on the status pipe when it could not start the step. */
enum child_stage {
	STAGE_CHDIR = 1,
	STAGE_EXEC = 2,
};

struct child_report {
	int stage;
	int err;
};

static void
child_fail(int fd, int stage, int err)
{
	struct child_report r = {.stage = stage, .err = err};
	ssize_t n = write(fd, &r, sizeof(r));
	(void)n;
	_exit(err == ENOENT ? 127 : 126);
}

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

int
step_run_command(const struct cfg_step *step, const struct cfg *cfg, const struct srv *s)
{
	const char *why = NULL;
	char **argv = NULL;
	struct strlist env = {0};
	struct strbuf pending = {0};
	int out[2] = {-1, -1};
	int st[2] = {-1, -1};
	int devnull = -1;
	int rc = -1;
	const char *name = step->name;

	if (sig_received) {
		log_error("step %s not started: received signal %d", name, (int)sig_received);
		return -1;
	}
	argv = step_split_argv(step->run, &why);
	if (!argv) {
		log_error("step %s: run = %s: %s", name, step->run ? step->run : "", why);
		return -1;
	}

	srv_env_inherit(&env);
	srv_client_env(s, cfg, step->database ? step->database : cfg->db_name, &env);
	for (size_t i = 0; i < step->env.n; i++)
		srv_env_put(&env, step->env.v[i]);

	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		log_error("could not open \"/dev/null\": %s", strerror(errno));
		goto cleanup;
	}
	if (pipe2(out, O_CLOEXEC) != 0 || pipe2(st, O_CLOEXEC) != 0) {
		log_error("could not create a pipe: %s", strerror(errno));
		goto cleanup;
	}

	log_info("step %s: running %s", name, step->run);
	double start = log_now();
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		log_error("could not fork: %s", strerror(errno));
		goto cleanup;
	}
	if (pid == 0) {
		/* Its own group, so a signal or the final SIGKILL reaches everything it started. */
		setpgid(0, 0);
		sig_child_reset();
		if (step->root && chdir(step->root) != 0)
			child_fail(st[1], STAGE_CHDIR, errno);
		dup2(devnull, STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(out[1], STDERR_FILENO);
		/* execvp searches the PATH of `environ`: let the step's own PATH count. */
		environ = env.v;
		execvp(argv[0], argv);
		child_fail(st[1], STAGE_EXEC, errno);
	}
	/* Also here: whichever of parent and child runs first, the group exists before we signal it. */
	setpgid(pid, pid);
	sig_track(pid);
	close(out[1]);
	close(st[1]);
	out[1] = st[1] = -1;

	struct child_report report;
	ssize_t got;
	do
		got = read(st[0], &report, sizeof(report));
	while (got < 0 && errno == EINTR);
	if (got == (ssize_t)sizeof(report)) {
		int status;
		sig_wait_child(pid, &status, -1, 0);
		if (report.stage == STAGE_CHDIR)
			log_error("step %s: could not change directory to \"%s\": %s", name, step->root,
			          strerror(report.err));
		else
			log_error("step %s: could not execute \"%s\": %s", name, argv[0], strerror(report.err));
		goto cleanup;
	}

	if (fcntl(out[0], F_SETFL, O_NONBLOCK) != 0)
		log_warning("could not make the output pipe of step %s non-blocking: %s", name, strerror(errno));

	long timeout = step->timeout > 0 ? step->timeout : cfg->step_timeout;
	double deadline = timeout > 0 ? start + (double)timeout : 0;
	double kill_at = 0;
	bool timed_out = false;
	bool killed = false;
	bool out_open = true;
	int forwarded = 0;
	int status = 0;

	for (;;) {
		double now = log_now();
		if (deadline > 0 && !timed_out && now >= deadline) {
			timed_out = true;
			log_warning("step %s timed out after %ld s: stopping it", name, timeout);
			kill(-pid, SIGTERM);
			kill_at = now + STEP_KILL_GRACE_S;
		}
		if (kill_at > 0 && !killed && now >= kill_at) {
			log_warning("step %s is still running %.0f s after SIGTERM: killing it", name, STEP_KILL_GRACE_S);
			kill(-pid, SIGKILL);
			killed = true;
		}

		int wait_ms = 1000;
		if (deadline > 0 && !timed_out)
			wait_ms = ms_until(deadline, now);
		if (kill_at > 0 && !killed && ms_until(kill_at, now) < wait_ms)
			wait_ms = ms_until(kill_at, now);
		struct pollfd pfd[2];
		nfds_t nfds = 0;
		if (out_open)
			pfd[nfds++] = (struct pollfd){.fd = out[0], .events = POLLIN};
		if (sig_fd() >= 0)
			pfd[nfds++] = (struct pollfd){.fd = sig_fd(), .events = POLLIN};
		else if (wait_ms > 50)
			wait_ms = 50; /* no signalfd (not PID 1 duty): notice the exit by polling */
		if (poll(pfd, nfds, wait_ms) < 0 && errno != EINTR) {
			log_error("poll failed: %s", strerror(errno));
			kill(-pid, SIGKILL);
			sig_wait_child(pid, &status, -1, 0);
			goto cleanup;
		}

		if (out_open)
			out_open = pump_output(out[0], name, &pending);
		int sig = sig_drain();
		if (!sig && sig_received && !forwarded)
			sig = sig_received; /* read by someone else's drain: still ours to forward */
		if (sig) {
			kill(-pid, sig);
			if (!forwarded)
				kill_at = log_now() + STEP_KILL_GRACE_S;
			forwarded = sig;
		}
		if (sig_child_done(pid, &status))
			break;
	}
	double elapsed = log_now() - start;

	/* What the step wrote just before it exited, then whatever a leftover process still holds. */
	if (out_open)
		pump_output(out[0], name, &pending);
	emit_lines(name, &pending, true);
	/* Nothing the step started may outlive it: a daemon would hold the pipe, files, the server. */
	if (kill(-pid, SIGKILL) == 0)
		log_debug("step %s: killed processes it left behind", name);

	if (forwarded) {
		log_error("step %s stopped after %.1f s: pgstash received signal %d (%s)", name, elapsed, forwarded,
		          strsignal(forwarded));
	} else if (timed_out) {
		log_error("step %s failed: timed out after %ld s", name, timeout);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		log_info("step %s finished in %.1f s", name, elapsed);
		rc = 0;
	} else if (WIFEXITED(status)) {
		log_error("step %s failed: exit status %d after %.1f s", name, WEXITSTATUS(status), elapsed);
	} else if (WIFSIGNALED(status)) {
		log_error("step %s failed: killed by signal %d (%s) after %.1f s", name, WTERMSIG(status),
		          strsignal(WTERMSIG(status)), elapsed);
	} else {
		log_error("step %s failed: unexpected wait status %d after %.1f s", name, status, elapsed);
	}

cleanup:
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (st[i] >= 0)
			close(st[i]);
	}
	if (devnull >= 0)
		close(devnull);
	sb_free(&pending);
	sl_free(&env);
	step_argv_free(argv);
	return rc;
}
