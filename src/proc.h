/*
 * proc — the one fork/exec of pgstash: start a child with an argv array, a
 * built environment, an optional working directory and chosen standard
 * streams; wait for it with a bound, watching for signals (sig.h); capture
 * its output into a bounded buffer.  Also the environment lists handed to
 * children and the one rule that splits a command line into words.
 *
 * Not for: what a child is for, or supervising its output line by line
 * (steps), or the final exec of postgres (the front end).
 */
#ifndef PGSTASH_PROC_H
#define PGSTASH_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct strbuf;
struct strlist;

/* ---- command lines ---- */

/*
 * Splits `cmdline` into words, the rule documented for a step's `run`:
 *   - words are separated by blanks (space, tab, newline);
 *   - '...' keeps everything inside literally;
 *   - "..." keeps everything inside literally except \" and \\ ;
 *   - outside quotes a backslash keeps the next character literally;
 *   - nothing is expanded ($HOME, *, ~ stay as written) and there are no
 *     operators: an unquoted | & ; < > ( ) ` $ or a word starting with # is an
 *     error ("shell syntax is not supported: write run = /bin/sh -c '…'"),
 *     quote it to pass it literally;
 *   - an unterminated quote, a trailing backslash and an empty line are errors.
 * Returns a NULL-terminated array (free with proc_argv_free), or NULL with
 * *why set to a static explanation.
 */
char **proc_split_argv(const char *cmdline, const char **why);
/* Frees an array from proc_split_argv; NULL is fine. */
void proc_argv_free(char **argv);

/* ---- environment lists ("NAME=value" entries, NULL-terminated in .v) ---- */

/* Appends a copy of every entry of the process environment to `env`. */
void proc_env_inherit(struct strlist *env);
/*
 * Whether "NAME=value" (or NAME) is a variable no child of ours gets: a
 * password or credential (POSTGRES_PASSWORD, POSTGRES_PASSWORD_FILE,
 * PGPASSWORD, PGPASSFILE, AWS_*) or one of pgstash's own settings
 * (PGSTASH_*: read once, never a child's business).
 */
bool proc_env_secret(const char *entry);
/* proc_env_inherit less what proc_env_secret names: the base of every child's environment. */
void proc_env_inherit_public(struct strlist *env);
/*
 * Removes the credentials (POSTGRES_PASSWORD*, AWS_*, PGPASSWORD) from our
 * own environment, once the configuration has read them: whatever we exec
 * (postgres itself) inherits no copy.
 */
void proc_env_drop_credentials(void);
/* Sets "NAME=value" `entry` in env, replacing an earlier entry for NAME. */
void proc_env_put(struct strlist *env, const char *entry);
/* Sets NAME=value in env, replacing an earlier entry for NAME. */
void proc_env_set(struct strlist *env, const char *name, const char *value);
/* Sets HOME, USER and LOGNAME in env to those of `uid` (as su and gosu do; "nobody" and / when unknown). */
void proc_env_of_user(struct strlist *env, uid_t uid);

/* ---- who a child runs as ---- */

/*
 * Whoever started us, no child runs as root: what pgstash starts is named by
 * a configuration (pg_bindir, a step's run, a discovery's python) or found on
 * PATH, and a configuration may come from a pull request.  Started as root,
 * a child runs as the "postgres" user (its uid, and its login group alone),
 * or as nobody (65534:65534) when there is no such user: these are the ids.
 */
#define PROC_NOBODY_ID 65534
void proc_unprivileged_ids(uid_t *uid, gid_t *gid);
/*
 * Becomes uid:gid for good: setgroups to gid alone, setgid, setuid, in that
 * order (async-signal-safe: for a child between fork and exec).  0, or -1
 * with errno set; nothing logged.
 */
int proc_become(uid_t uid, gid_t gid);

/* ---- starting a child ---- */

/* Where one of a child's standard streams goes. */
enum proc_io {
	PROC_IO_DEFAULT, /* stdin: /dev/null; stdout: our stderr (our stdout is program output: a key, a
	                  * listing); stderr: where stdout goes */
	PROC_IO_NULL,    /* /dev/null */
	PROC_IO_PIPE,    /* a new pipe: our end is returned in struct proc */
	PROC_IO_FD,      /* .fd, a descriptor of ours */
};

struct proc_stream {
	enum proc_io io;
	int fd;          /* with PROC_IO_FD */
};

struct proc_opts {
	char *const *argv;     /* argv[0] is run as given unless search_path */
	char *const *envp;     /* NULL: ours, less what proc_env_secret names */
	bool search_path;      /* execvp: argv[0] is looked up in the PATH of envp (else ours) */
	const char *cwd;       /* NULL: ours */
	bool own_group;        /* setpgid(0, 0): signals are forwarded to its group, and a kill reaches all it starts */
	bool die_with_us;      /* SIGKILL when we exit (PR_SET_PDEATHSIG): for a child that waits on us */
	struct proc_stream in, out, err; /* zero: PROC_IO_DEFAULT; no PROC_IO_PIPE for err (it may follow out's) */
	/*
	 * false: a chdir or exec failure is logged by the child on its stderr,
	 * which ends with 127 (ENOENT) or 126, as a shell's would.  true: it is
	 * returned by proc_spawn instead, nothing is logged.
	 */
	bool report_start_error;
};

/* A started child. */
struct proc {
	pid_t pid;   /* tracked (sig_track); also its process group with own_group */
	int in;      /* write end of its stdin with in PROC_IO_PIPE (O_CLOEXEC), else -1 */
	int out;     /* read end of its stdout with out PROC_IO_PIPE (O_CLOEXEC), else -1 */
	int err;     /* the errno of a PROC_CHDIR_FAILED or PROC_EXEC_FAILED */
};

enum proc_spawn_result {
	PROC_SPAWNED,        /* running; the caller waits for it and closes p->in, p->out */
	PROC_NOT_STARTED,    /* no pipe or no fork (logged) */
	PROC_CHDIR_FAILED,   /* report_start_error: could not enter cwd (p->err); the child is reaped */
	PROC_EXEC_FAILED,    /* report_start_error: could not execute argv[0] (p->err); the child is reaped */
};

/*
 * Flushes both our streams, forks and execs as `o` says; the child gets the
 * default signal dispositions and mask (sig_child_reset) and, when we are
 * root, proc_unprivileged_ids' user (before it enters o->cwd; a failure to
 * switch is a PROC_EXEC_FAILED, or the child's exit 126), with that user's
 * HOME, USER and LOGNAME in the environment it would get.  On anything but
 * PROC_SPAWNED no descriptor of *p is left open and p->pid is 0.
 */
enum proc_spawn_result proc_spawn(const struct proc_opts *o, struct proc *p);
/* Closes whatever of p->in and p->out is still open. */
void proc_close(struct proc *p);

/* ---- waiting ---- */

enum proc_wait_result {
	PROC_EXITED,   /* *status set (wait(2) form) */
	PROC_TIMEOUT,  /* still running after timeout_s */
	PROC_FAILED,   /* the wait itself failed (logged) */
};

/*
 * Waits for child `pid` (from proc_spawn) for at most timeout_s seconds (< 0:
 * no limit).  A terminating signal arriving meanwhile is recorded in
 * sig_received and, when fwd_pgid > 0, forwarded to that process group;
 * waiting goes on.  See sig_wait_child.
 */
enum proc_wait_result proc_wait(pid_t pid, int *status, double timeout_s, pid_t fwd_pgid);
/* true when `status` says exit 0. */
bool proc_exited_ok(int status);
/* "exit status 1", "killed by signal 9 (Killed)" or "wait status N" into buf; returns buf. */
const char *proc_describe_status(int status, char *buf, size_t n);

/* ---- capturing output ---- */

/* What proc_capture runs and what it got.  Zero-initialise, set the inputs. */
struct proc_capture {
	/* in */
	const char *input;     /* written to its stdin, which is then closed; NULL: /dev/null */
	size_t input_len;
	size_t max;            /* bytes of output kept; the rest is read and dropped */
	bool with_stderr;      /* its stderr is captured too; else /dev/null */
	double timeout_s;      /* after the output ends, the wait's bound (< 0: none) */
	/* out */
	struct strbuf *output; /* what it wrote (at most max bytes); the caller's, appended to */
	int status;            /* with PROC_EXITED */
	pid_t pid;             /* the child; still running on PROC_TIMEOUT (the caller kills and reaps it) */
	bool input_short;      /* it exited before reading all of input */
};

/*
 * Runs `o` (its stream settings are replaced) with c's input, collects its
 * output until end of file, then waits as proc_wait does (forwarding signals
 * to its group when o->own_group).  On PROC_TIMEOUT the child is still
 * running: the caller kills and reaps it.  A child that could not be started
 * is PROC_FAILED (logged unless o->report_start_error).
 */
enum proc_wait_result proc_capture(const struct proc_opts *o, struct proc_capture *c);
/*
 * proc_capture's second half, for a child proc_spawn started earlier with
 * stdin and stdout PROC_IO_PIPE (stderr PROC_IO_DEFAULT follows stdout):
 * c's input, the output, the wait (forwarding signals to its group when
 * `own_group`).  Closes p's pipes.  c->input, max, timeout_s as above;
 * with_stderr is how p was started.
 */
enum proc_wait_result proc_collect(struct proc *p, struct proc_capture *c, bool own_group);

/*
 * Writes `len` bytes of buf to the pipe or FIFO `fd` whose reader may be
 * gone: that is EPIPE, not a SIGPIPE that would kill pgstash (ignored while
 * writing).  Retries EINTR.  Returns how many bytes were written (len when
 * all); a non-blocking fd stops at a full pipe.
 */
size_t proc_pipe_write(int fd, const void *buf, size_t len);

#endif
