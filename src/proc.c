/*
 * proc — see proc.h.  Every child pgstash starts goes through proc_spawn, so
 * the habits of tini and pg_ctl hold everywhere: both streams flushed before
 * fork, signal state reset in the child, descriptors close-on-exec, a failed
 * exec ending in _exit with a shell's code, and the child tracked so that any
 * wait loop (which reaps everything as PID 1) keeps its status for us.
 */
#include "proc.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- command lines ---- */

static const char shell_syntax[] = "shell syntax is not supported: write run = /bin/sh -c '…'";

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Appends the '...' word part at *p to cur; false when unterminated. */
static bool
take_single_quoted(const char **p, struct strbuf *cur)
{
	const char *end = strchr(*p + 1, '\'');
	if (!end)
		return false;
	sb_appendn(cur, *p + 1, (size_t)(end - *p - 1));
	*p = end + 1;
	return true;
}

/* Appends the "..." word part at *p to cur; false when unterminated. */
static bool
take_double_quoted(const char **p, struct strbuf *cur)
{
	const char *q = *p + 1;
	for (;; q++) {
		if (!*q)
			return false;
		if (*q == '"')
			break;
		if (*q == '\\' && (q[1] == '"' || q[1] == '\\'))
			q++;
		sb_appendc(cur, *q);
	}
	*p = q + 1;
	return true;
}

char **
proc_split_argv(const char *cmdline, const char **why)
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
			if (!take_single_quoted(&p, &cur)) {
				*why = "unterminated single quote";
				goto fail;
			}
			in_word = true;
		} else if (c == '"') {
			if (!take_double_quoted(&p, &cur)) {
				*why = "unterminated double quote";
				goto fail;
			}
			in_word = true;
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
proc_argv_free(char **argv)
{
	if (!argv)
		return;
	for (char **a = argv; *a; a++)
		free(*a);
	free(argv);
}

/* ---- environment lists ---- */

/*
 * In a child, before exec with our own environment: drops what
 * proc_env_secret names, in place (no allocation after fork).
 */
static void
child_env_public(void)
{
	size_t k = 0;
	for (size_t i = 0; environ && environ[i]; i++)
		if (!proc_env_secret(environ[i]))
			environ[k++] = environ[i];
	if (environ)
		environ[k] = NULL;
}


void
proc_env_inherit(struct strlist *env)
{
	for (char **e = environ; e && *e; e++)
		sl_add(env, *e);
}

/* The length of the name of "NAME=value" (or of NAME). */
static size_t
env_name_len(const char *entry)
{
	const char *eq = strchr(entry, '=');
	return eq ? (size_t)(eq - entry) : strlen(entry);
}

/* Whether entry's name is `name`, or starts with it when `name` ends in '_' (a family such as AWS_). */
static bool
env_name_is(const char *entry, size_t len, const char *name)
{
	size_t n = strlen(name);
	if (name[n - 1] == '_')
		return len >= n && strncmp(entry, name, n) == 0;
	return len == n && strncmp(entry, name, n) == 0;
}

static bool
env_credential(const char *entry)
{
	static const char *const names[] = {"POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "PGPASSWORD", "AWS_"};
	size_t len = env_name_len(entry);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (env_name_is(entry, len, names[i]))
			return true;
	return false;
}

bool
proc_env_secret(const char *entry)
{
	size_t len = env_name_len(entry);
	return env_credential(entry) || env_name_is(entry, len, "PGPASSFILE") || env_name_is(entry, len, "PGSTASH_");
}

void
proc_env_inherit_public(struct strlist *env)
{
	for (char **e = environ; e && *e; e++)
		if (!proc_env_secret(*e))
			sl_add(env, *e);
}

void
proc_env_drop_credentials(void)
{
	struct strlist names = {0};
	for (char **e = environ; e && *e; e++)
		if (env_credential(*e))
			sl_add_owned(&names, xasprintf("%.*s", (int)env_name_len(*e), *e));
	for (size_t i = 0; i < names.n; i++)
		unsetenv(names.v[i]);
	sl_free(&names);
}

void
proc_env_put(struct strlist *env, const char *entry)
{
	const char *eq = strchr(entry, '=');
	size_t n = eq ? (size_t)(eq - entry) : strlen(entry);
	for (size_t i = 0; i < env->n; i++) {
		if (strncmp(env->v[i], entry, n) == 0 && env->v[i][n] == '=') {
			free(env->v[i]);
			env->v[i] = xstrdup(entry);
			return;
		}
	}
	sl_add(env, entry);
}

void
proc_env_set(struct strlist *env, const char *name, const char *value)
{
	char *e = xasprintf("%s=%s", name, value);
	proc_env_put(env, e);
	free(e);
}

/* ---- who a child runs as ---- */

void
proc_unprivileged_ids(uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam("postgres");
	*uid = pw ? pw->pw_uid : (uid_t)PROC_NOBODY_ID;
	*gid = pw ? pw->pw_gid : (gid_t)PROC_NOBODY_ID;
}

int
proc_become(uid_t uid, gid_t gid)
{
	if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
		return -1;
	return 0;
}

/* ---- starting a child ---- */

/* A child's stream as child_exec takes it: a descriptor, or one of these. */
#define CHILD_DEFAULT (-1)
#define CHILD_DEVNULL (-2)

/* What a child reports on the status pipe when it could not start. */
struct start_report {
	enum proc_spawn_result what;
	int err;
};

/* In the child: says why it could not start, then ends as a shell would. */
static void __attribute__((__noreturn__))
child_fail(const struct proc_opts *o, int report_fd, enum proc_spawn_result what, int err)
{
	if (report_fd >= 0) {
		struct start_report r = {.what = what, .err = err};
		ssize_t n = write(report_fd, &r, sizeof(r));
		(void)n;
	} else if (what == PROC_CHDIR_FAILED) {
		log_error("could not change directory to \"%s\": %s", o->cwd, strerror(err));
	} else {
		log_error("could not execute \"%s\": %s", o->argv[0], strerror(err));
	}
	_exit(err == ENOENT ? 127 : 126);
}

/* In the child: puts `fd` (or /dev/null) on `target`. */
static void
child_stream(int fd, int target, int flags)
{
	if (fd == CHILD_DEVNULL) {
		fd = open("/dev/null", flags | O_CLOEXEC);
		if (fd < 0)
			return;
	}
	dup2(fd, target);
}

/* Who the child becomes: unprivileged ids when we are root (proc_unprivileged_ids), else nobody new. */
struct child_user {
	bool drop;
	uid_t uid;
	gid_t gid;
};

/* In the child, after fork: never returns.  `parent` is the pid that forked it. */
static void __attribute__((__noreturn__))
child_exec(const struct proc_opts *o, const struct child_user *as, int in, int out, int err, int report_fd,
           pid_t parent)
{
	/* Its own group, so a signal or a final SIGKILL reaches everything it started. */
	if (o->own_group)
		setpgid(0, 0);
	sig_child_reset();
	if (as->drop && proc_become(as->uid, as->gid) != 0)
		child_fail(o, report_fd, PROC_EXEC_FAILED, errno);
	/* After proc_become, which would clear it; and we may have exited before it was set. */
	if (o->die_with_us && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
		_exit(126);
	if (o->cwd && chdir(o->cwd) != 0)
		child_fail(o, report_fd, PROC_CHDIR_FAILED, errno);
	child_stream(in == CHILD_DEFAULT ? CHILD_DEVNULL : in, STDIN_FILENO, O_RDONLY);
	if (out == CHILD_DEFAULT)
		dup2(STDERR_FILENO, STDOUT_FILENO);
	else
		child_stream(out, STDOUT_FILENO, O_WRONLY);
	if (err != CHILD_DEFAULT)
		child_stream(err, STDERR_FILENO, O_WRONLY);
	else if (out != CHILD_DEFAULT)
		child_stream(out, STDERR_FILENO, O_WRONLY);
	/* execvp searches the PATH of `environ`: let the child's own PATH count. */
	if (o->envp)
		environ = (char **)o->envp;
	else
		child_env_public();
	if (o->search_path)
		execvp(o->argv[0], o->argv);
	else
		execv(o->argv[0], o->argv);
	child_fail(o, report_fd, PROC_EXEC_FAILED, errno);
}

static void
close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void
close_pair(int pair[2])
{
	close_fd(&pair[0]);
	close_fd(&pair[1]);
}

/* Creates the pipes `o` asks for.  0 or -1 (logged, nothing left open). */
static int
make_pipes(const struct proc_opts *o, int in[2], int out[2], int st[2])
{
	if ((o->in.io == PROC_IO_PIPE && pipe2(in, O_CLOEXEC) != 0) ||
	    (o->out.io == PROC_IO_PIPE && pipe2(out, O_CLOEXEC) != 0) ||
	    (o->report_start_error && pipe2(st, O_CLOEXEC) != 0)) {
		log_error("could not create a pipe: %s", strerror(errno));
		close_pair(in);
		close_pair(out);
		close_pair(st);
		return -1;
	}
	return 0;
}

/* The descriptor child_exec puts on a stream; `pipe_end` is the child's end of its pipe. */
static int
child_fd(const struct proc_stream *s, int pipe_end)
{
	switch (s->io) {
	case PROC_IO_DEFAULT:
		return CHILD_DEFAULT;
	case PROC_IO_NULL:
		return CHILD_DEVNULL;
	case PROC_IO_PIPE:
		return pipe_end;
	case PROC_IO_FD:
		return s->fd;
	}
	return CHILD_DEFAULT;
}

/*
 * In the parent: reads the status pipe, which stays empty (end of file at the
 * exec) unless the child could not start.  On a report the child is reaped.
 */
static enum proc_spawn_result
read_start_report(int fd, pid_t pid, int *err)
{
	struct start_report r;
	ssize_t got;
	do
		got = read(fd, &r, sizeof(r));
	while (got < 0 && errno == EINTR);
	if (got != (ssize_t)sizeof(r))
		return PROC_SPAWNED;
	int status;
	proc_wait(pid, &status, -1, 0);
	*err = r.err;
	return r.what;
}

void
proc_env_of_user(struct strlist *env, uid_t uid)
{
	struct passwd *pw = getpwuid(uid);
	const char *name = pw ? pw->pw_name : "nobody";
	proc_env_set(env, "HOME", pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : "/");
	proc_env_set(env, "USER", name);
	proc_env_set(env, "LOGNAME", name);
}

/*
 * The environment of a child that root starts as `uid`: what it would get
 * (o->envp, or ours less the secrets) with HOME, USER and LOGNAME of that
 * user, as su and gosu set them; root's HOME would point its tools (Python's
 * user site, psql's rc files) at root's files.
 */
static void
env_of_user(const struct proc_opts *o, uid_t uid, struct strlist *env)
{
	if (o->envp) {
		for (char *const *e = o->envp; *e; e++)
			sl_add(env, *e);
	} else
		proc_env_inherit_public(env);
	proc_env_of_user(env, uid);
}

enum proc_spawn_result
proc_spawn(const struct proc_opts *o, struct proc *p)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, st[2] = {-1, -1};

	*p = (struct proc){.pid = 0, .in = -1, .out = -1, .err = 0};
	if (make_pipes(o, in, out, st) != 0)
		return PROC_NOT_STARTED;
	/* Looked up here: getpwnam is no business of a child between fork and exec. */
	struct child_user as = {.drop = geteuid() == 0};
	struct strlist user_env = {0};
	struct proc_opts as_user;
	if (as.drop) {
		proc_unprivileged_ids(&as.uid, &as.gid);
		env_of_user(o, as.uid, &user_env);
		as_user = *o;
		as_user.envp = user_env.v;
		o = &as_user;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		log_error("could not fork: %s", strerror(errno));
		sl_free(&user_env);
		close_pair(in);
		close_pair(out);
		close_pair(st);
		return PROC_NOT_STARTED;
	}
	if (pid == 0)
		child_exec(o, &as, child_fd(&o->in, in[0]), child_fd(&o->out, out[1]), child_fd(&o->err, -1), st[1],
		           parent);
	/* Also here: whichever of parent and child runs first, the group exists before we signal it. */
	if (o->own_group)
		setpgid(pid, pid);
	sig_track(pid);
	sl_free(&user_env); /* the child has its copy; o is not used below */
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&st[1]);
	enum proc_spawn_result r = PROC_SPAWNED;
	if (st[0] >= 0) {
		r = read_start_report(st[0], pid, &p->err);
		close_fd(&st[0]);
	}
	if (r != PROC_SPAWNED) {
		close_pair(in);
		close_pair(out);
		return r;
	}
	p->pid = pid;
	p->in = in[1];
	p->out = out[0];
	return PROC_SPAWNED;
}

void
proc_close(struct proc *p)
{
	close_fd(&p->in);
	close_fd(&p->out);
}

/* ---- waiting ---- */

enum proc_wait_result
proc_wait(pid_t pid, int *status, double timeout_s, pid_t fwd_pgid)
{
	int r = sig_wait_child(pid, status, timeout_s, fwd_pgid);
	if (r == 0)
		return PROC_EXITED;
	if (r == 1)
		return PROC_TIMEOUT;
	return PROC_FAILED;
}

bool
proc_exited_ok(int status)
{
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

const char *
proc_describe_status(int status, char *buf, size_t n)
{
	if (WIFEXITED(status))
		snprintf(buf, n, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, n, "wait status %d", status);
	return buf;
}

/* ---- capturing output ---- */

size_t
proc_pipe_write(int fd, const void *buf, size_t len)
{
	struct sigaction ign = {.sa_handler = SIG_IGN};
	struct sigaction old_pipe;
	size_t off = 0;

	/* Ignored only now, after any fork: a child must start with the default disposition. */
	bool ignored = sigaction(SIGPIPE, &ign, &old_pipe) == 0;
	while (off < len) {
		ssize_t n = write(fd, (const char *)buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* the reader went away (or the pipe is full and fd non-blocking) */
		off += (size_t)n;
	}
	if (ignored)
		sigaction(SIGPIPE, &old_pipe, NULL);
	return off;
}

/*
 * Writes all of the input, then closes the child's stdin (end of its input).
 * The input fits a pipe, so this never waits for the child to read.  false
 * when the child went away first (its output and status say why).
 */
static bool
write_input(struct proc *p, const char *input, size_t len)
{
	bool whole = proc_pipe_write(p->in, input, len) == len;
	close_fd(&p->in);
	return whole;
}

/* Reads `fd` to its end, keeping at most `max` bytes in `out`. */
static void
read_bounded(int fd, struct strbuf *out, size_t max)
{
	char buf[4096];
	size_t kept = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t take = (size_t)n;
		if (take > max - kept)
			take = max - kept;
		sb_appendn(out, buf, take);
		kept += take;
	}
}

enum proc_wait_result
proc_capture(const struct proc_opts *o, struct proc_capture *c)
{
	struct proc_opts so = *o;
	struct proc p;

	so.in.io = c->input ? PROC_IO_PIPE : PROC_IO_NULL;
	so.out.io = PROC_IO_PIPE;
	so.err.io = c->with_stderr ? PROC_IO_DEFAULT : PROC_IO_NULL;
	c->input_short = false;
	if (proc_spawn(&so, &p) != PROC_SPAWNED)
		return PROC_FAILED;
	return proc_collect(&p, c, o->own_group);
}

enum proc_wait_result
proc_collect(struct proc *p, struct proc_capture *c, bool own_group)
{
	c->pid = p->pid;
	c->input_short = false;
	if (c->input)
		c->input_short = !write_input(p, c->input, c->input_len);
	read_bounded(p->out, c->output, c->max);
	proc_close(p);
	return proc_wait(p->pid, &c->status, c->timeout_s, own_group ? p->pid : 0);
}
