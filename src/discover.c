/*
 * discover — see discover.h.
 *
 * The child is the step's Python running a short script (below) with the
 * step's root as its directory.  Its answer comes back on its stdout, which
 * the script keeps for itself: anything the project prints while Django or
 * Alembic imports it goes to the child's stderr, a second pipe, which is
 * shown when discovery fails (the traceback's last line is the framework's
 * message).  The answer is NUL-separated, so no path needs quoting.
 */
#include "discover.h"
#include "config.h"
#include "log.h"
#include "proc.h"
#include "sig.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* An answer larger than this is not a list of migration files. */
#define DISCOVER_MAX_ANSWER (32u * 1024 * 1024)
/* The end of the child's stderr kept for the error message. */
#define DISCOVER_MAX_ERR (16u * 1024)

/*
 * argv: KIND ARG SCRIPT_DIR.  Django: the loader's own rules (MIGRATION_MODULES,
 * apps without migrations, namespace packages skipped; modules not starting
 * with _ or ~), each file keyed as its module path.  Alembic: env.py and every
 * revision's file, relative to the script directory; an ini without
 * script_location (Flask-Migrate's migrations/alembic.ini) means the ini's
 * directory.
 */
static const char discover_py[] =
	"import os, sys\n"
	"out = os.fdopen(os.dup(1), 'wb')\n"
	"os.dup2(2, 1)\n"
	"kind, arg, sdir = sys.argv[1:4]\n"
	"if sdir:\n"
	"    sys.path.insert(0, os.path.abspath(sdir))\n"
	"Z = bytes(1)\n"
	"def put(origin, rel, path):\n"
	"    out.write(origin.encode() + Z + os.fsencode(rel) + Z + os.fsencode(os.path.abspath(path)) + Z)\n"
	"if kind == 'django':\n"
	"    import django, importlib, importlib.util, pkgutil\n"
	"    django.setup()\n"
	"    from django.apps import apps\n"
	"    from django.db.migrations.loader import MigrationLoader\n"
	"    for ac in apps.get_app_configs():\n"
	"        name, explicit = MigrationLoader.migrations_module(ac.label)\n"
	"        if name is None:\n"
	"            continue\n"
	"        try:\n"
	"            mod = importlib.import_module(name)\n"
	"        except ModuleNotFoundError as e:\n"
	"            if not explicit and 'migrations' in (e.name or '').split('.'):\n"
	"                continue\n"
	"            raise\n"
	"        if not hasattr(mod, '__path__'):\n"
	"            continue\n"
	"        if getattr(mod, '__file__', None) is None and not isinstance(mod.__path__, list):\n"
	"            continue\n"
	"        for _, m, pkg in sorted(pkgutil.iter_modules(mod.__path__), key=lambda t: t[1]):\n"
	"            if pkg or m[0] in '_~':\n"
	"                continue\n"
	"            spec = importlib.util.find_spec(name + '.' + m)\n"
	"            if spec is None or not spec.origin or not os.path.isfile(spec.origin):\n"
	"                continue\n"
	"            put('django:' + ac.label, name.replace('.', '/') + '/' + os.path.basename(spec.origin), spec.origin)\n"
	"else:\n"
	"    from alembic.config import Config\n"
	"    from alembic.script import ScriptDirectory\n"
	"    ini = arg or 'alembic.ini'\n"
	"    if not os.path.isfile(ini):\n"
	"        sys.exit('alembic: no configuration file %s' % os.path.abspath(ini))\n"
	"    cfg = Config(ini)\n"
	"    if not cfg.get_main_option('script_location'):\n"
	"        cfg.set_main_option('script_location', os.path.dirname(os.path.abspath(ini)).replace('%', '%%'))\n"
	"    sd = ScriptDirectory.from_config(cfg)\n"
	"    d = os.path.abspath(sd.dir)\n"
	"    cwd = os.getcwd()\n"
	"    origin = os.path.relpath(d, cwd) if (d + '/').startswith(cwd + '/') else os.path.basename(d)\n"
	"    files = [os.path.join(d, 'env.py')] if os.path.isfile(os.path.join(d, 'env.py')) else []\n"
	"    files += [s.path for s in sd.walk_revisions()]\n"
	"    for f in files:\n"
	"        put('alembic:' + origin, os.path.relpath(os.path.abspath(f), d), f)\n"
	"out.flush()\n";

const char *
discover_name(int kind)
{
	switch (kind) {
	case CFG_DISCOVER_DJANGO:
		return "django";
	case CFG_DISCOVER_ALEMBIC:
		return "alembic";
	default:
		return "-";
	}
}

void
discover_result_free(struct discover_result *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].origin);
		free(r->v[i].rel);
		free(r->v[i].path);
	}
	free(r->v);
	r->v = NULL;
	r->n = 0;
}

/* ---------- the interpreter ---------- */

static const char *
base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* python, python3, python3.12: the names a Python interpreter goes by. */
static bool
is_python(const char *name)
{
	const char *b = base_name(name);
	if (strncmp(b, "python", 6) != 0)
		return false;
	for (b += 6; *b; b++)
		if (!((*b >= '0' && *b <= '9') || *b == '.'))
			return false;
	return true;
}

static const char *
env_value(const struct strlist *env, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < env->n; i++)
		if (strncmp(env->v[i], name, n) == 0 && env->v[i][n] == '=')
			return env->v[i] + n + 1;
	return NULL;
}

/* Where execvp in `root` with env's PATH finds `prog`; NULL when nowhere.  Malloc'ed. */
static char *
find_program(const char *prog, const char *root, const struct strlist *env)
{
	if (strchr(prog, '/'))
		return prog[0] == '/' ? xstrdup(prog) : path_join(root, prog);
	const char *path = env_value(env, "PATH");
	if (!path)
		path = "/usr/bin:/bin";
	for (const char *p = path;;) {
		size_t n = strcspn(p, ":");
		/* An empty or relative entry is taken from the child's directory, the root, as execvp there would. */
		char *entry = xasprintf("%.*s", (int)n, n ? p : ".");
		char *dir = entry[0] == '/' ? xstrdup(entry) : path_join(root, entry);
		char *cand = path_join(dir, prog);
		free(entry);
		free(dir);
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
			return cand;
		free(cand);
		if (!p[n])
			return NULL;
		p += n + 1;
	}
}

/* The Python a "#!" line of the file at `path` names, or NULL.  Malloc'ed. */
static char *
shebang_python(const char *path)
{
	char buf[256];
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return NULL;
	struct stat st;
	ssize_t n = -1;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 2 || buf[0] != '#' || buf[1] != '!')
		return NULL;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	char *p = buf + 2;
	p += strspn(p, " \t");
	char *interp = p;
	p += strcspn(p, " \t");
	if (*p)
		*p++ = '\0';
	p += strspn(p, " \t");
	if (strcmp(base_name(interp), "env") == 0) {
		if (strncmp(p, "-S", 2) == 0 && (p[2] == ' ' || p[2] == '\t'))
			p += 2 + strspn(p + 2, " \t");
		p[strcspn(p, " \t")] = '\0';
		interp = p;
	}
	return is_python(interp) ? xstrdup(interp) : NULL;
}

int
discover_interpreter(const struct cfg_step *step, const struct strlist *env, char **python, char **script_dir,
                     const char **why)
{
	*python = NULL;
	*script_dir = NULL;
	if (step->python) {
		*python = xstrdup(step->python);
		return 0;
	}
	char **argv = step->run ? proc_split_argv(step->run, why) : NULL;
	if (!argv) {
		if (!step->run)
			*why = "the step has no run line";
		return -1;
	}
	int rc = -1;
	if (is_python(argv[0])) {
		*python = xstrdup(argv[0]);
		/* python [OPTIONS] SCRIPT: Python puts SCRIPT's directory first on sys.path; -m and -c the current one. */
		for (char **a = argv + 1; *a; a++) {
			if (strcmp(*a, "-m") == 0 || strcmp(*a, "-c") == 0 || strcmp(*a, "-") == 0)
				break;
			if ((*a)[0] == '-')
				continue;
			const char *slash = strrchr(*a, '/');
			if (slash)
				*script_dir = xasprintf("%.*s", (int)(slash - *a), *a);
			break;
		}
		rc = 0;
		goto cleanup;
	}
	char *prog = find_program(argv[0], step->root, env);
	if (prog) {
		*python = shebang_python(prog);
		if (*python && strchr(argv[0], '/')) {
			const char *slash = strrchr(argv[0], '/');
			*script_dir = xasprintf("%.*s", (int)(slash - argv[0]), argv[0]);
		}
		free(prog);
	}
	if (*python)
		rc = 0;
	else
		*why = "run starts neither with python nor with a Python script: name the interpreter with python = PATH";
cleanup:
	proc_argv_free(argv);
	return rc;
}

/* ---------- the answer ---------- */

/* A keyed path: relative, no empty, "." or ".." component. */
static bool
good_rel(const char *rel)
{
	if (!*rel || rel[0] == '/')
		return false;
	for (const char *p = rel; *p;) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n;
		if (*p == '/')
			p++;
		else
			break;
		if (!*p)
			return false;
	}
	return true;
}

int
discover_parse(const char *buf, size_t len, struct discover_result *out, const char **why)
{
	size_t cap = 0;
	memset(out, 0, sizeof(*out));
	for (size_t off = 0; off < len;) {
		const char *field[3];
		for (int k = 0; k < 3; k++) {
			const char *nul = off < len ? memchr(buf + off, '\0', len - off) : NULL;
			if (!nul) {
				*why = "the answer ends in the middle of an entry";
				goto fail;
			}
			field[k] = buf + off;
			off = (size_t)(nul - buf) + 1;
		}
		if (!*field[0]) {
			*why = "an entry has no origin";
			goto fail;
		}
		if (!good_rel(field[1])) {
			*why = "an entry's path is not a plain relative path";
			goto fail;
		}
		if (field[2][0] != '/') {
			*why = "an entry's file is not an absolute path";
			goto fail;
		}
		if (out->n == cap) {
			cap = cap ? cap * 2 : 64;
			out->v = xrealloc(out->v, cap * sizeof(*out->v));
		}
		out->v[out->n++] = (struct discover_file){
			.origin = xstrdup(field[0]),
			.rel = xstrdup(field[1]),
			.path = xstrdup(field[2]),
		};
	}
	return 0;
fail:
	discover_result_free(out);
	return -1;
}

/* ---------- the child ---------- */

/* Appends what `fd` has now; false at its end.  `keep_tail`: only the last `max` bytes stay. */
static bool
drain(int fd, struct strbuf *sb, size_t max, bool keep_tail, bool *overflow)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n <= 0)
			return false;
		sb_appendn(sb, buf, (size_t)n);
		if (sb->len > max) {
			if (!keep_tail) {
				*overflow = true;
				sb->len = max;
				sb->buf[max] = '\0';
			} else {
				memmove(sb->buf, sb->buf + sb->len - max, max);
				sb->len = max;
				sb->buf[max] = '\0';
			}
		}
	}
}

/* Shows the child's stderr, each line prefixed; returns its last non-empty line (in `err`'s buffer) or "". */
static const char *
show_child_output(const char *name, struct strbuf *err, bool as_error)
{
	const char *last = "";
	char *s = err->buf;
	while (s && *s) {
		char *nl = strchr(s, '\n');
		if (nl)
			*nl = '\0';
		if (*s) {
			if (as_error)
				fprintf(stderr, "[step %s discover] %s\n", name, s);
			else
				log_debug("[step %s discover] %s", name, s);
			last = s;
		}
		s = nl ? nl + 1 : NULL;
	}
	fflush(stderr);
	return last;
}

/*
 * Reads both pipes until they end, the deadline passes or a signal comes.
 * 0 when both ended; -1 otherwise (the caller kills the group).
 */
static int
collect(int out_fd, int err_fd, struct strbuf *answer, struct strbuf *err, bool *overflow, double deadline)
{
	bool out_open = true, err_open = true;
	fcntl(out_fd, F_SETFL, O_NONBLOCK);
	fcntl(err_fd, F_SETFL, O_NONBLOCK);
	while (out_open || err_open) {
		if (sig_drain() || sig_received)
			return -1;
		double now = log_now();
		if (now >= deadline)
			return -1;
		int wait_ms = (int)((deadline - now) * 1000.0) + 1;
		if (wait_ms > 1000)
			wait_ms = 1000;
		struct pollfd pfd[3];
		nfds_t n = 0;
		if (out_open)
			pfd[n++] = (struct pollfd){.fd = out_fd, .events = POLLIN};
		if (err_open)
			pfd[n++] = (struct pollfd){.fd = err_fd, .events = POLLIN};
		if (sig_fd() >= 0)
			pfd[n++] = (struct pollfd){.fd = sig_fd(), .events = POLLIN};
		if (poll(pfd, n, wait_ms) < 0 && errno != EINTR) {
			log_error("poll failed: %s", strerror(errno));
			return -1;
		}
		if (out_open)
			out_open = drain(out_fd, answer, DISCOVER_MAX_ANSWER, false, overflow);
		if (err_open)
			err_open = drain(err_fd, err, DISCOVER_MAX_ERR, true, overflow);
	}
	return 0;
}

/* Runs the child; 0 with its answer in `answer`, or -1 (logged). */
static int
run_child(const struct cfg_step *step, char **argv, const struct strlist *env, struct strbuf *answer)
{
	const char *kind = discover_name(step->discover);
	struct strbuf err = {0};
	int errpipe[2] = {-1, -1};
	struct proc p = {.pid = 0, .in = -1, .out = -1};
	bool overflow = false;
	int rc = -1;

	if (pipe2(errpipe, O_CLOEXEC) != 0) {
		log_error("could not create a pipe: %s", strerror(errno));
		return -1;
	}
	struct proc_opts o = {
		.argv = argv,
		.envp = env->v,
		.search_path = true,
		.cwd = step->root,
		.own_group = true,
		.out = {PROC_IO_PIPE},
		.err = {PROC_IO_FD, errpipe[1]},
		.report_start_error = true,
	};
	double t0 = log_now();
	enum proc_spawn_result sr = proc_spawn(&o, &p);
	close(errpipe[1]);
	if (sr != PROC_SPAWNED) {
		if (sr == PROC_EXEC_FAILED || sr == PROC_CHDIR_FAILED)
			log_error("step \"%s\": discover = %s: could not %s \"%s\": %s", step->name, kind,
			          sr == PROC_EXEC_FAILED ? "execute" : "change directory to",
			          sr == PROC_EXEC_FAILED ? argv[0] : step->root, strerror(p.err));
		close(errpipe[0]);
		return -1;
	}
	int status = 0;
	double deadline = t0 + DISCOVER_TIMEOUT_S;
	bool ended = collect(p.out, errpipe[0], answer, &err, &overflow, deadline) == 0;
	enum proc_wait_result w = PROC_FAILED;
	if (ended) {
		double left = deadline - log_now();
		w = proc_wait(p.pid, &status, left > 0 ? left : 0, p.pid);
	}
	if (w != PROC_EXITED) {
		kill(-p.pid, SIGKILL);
		proc_wait(p.pid, &status, -1, 0);
		show_child_output(step->name, &err, true);
		if (sig_received)
			log_error("step \"%s\": discover = %s stopped: pgstash received signal %d", step->name, kind,
			          (int)sig_received);
		else
			log_error("step \"%s\": discover = %s did not finish within %.0f s", step->name, kind,
			          DISCOVER_TIMEOUT_S);
		goto cleanup;
	}
	/* Whatever the group left behind must not outlive discovery. */
	kill(-p.pid, SIGKILL);
	if (!proc_exited_ok(status)) {
		char how[64];
		const char *last = show_child_output(step->name, &err, true);
		log_error("step \"%s\": discover = %s failed (%s): %s", step->name, kind,
		          proc_describe_status(status, how, sizeof(how)), *last ? last : "no message");
		goto cleanup;
	}
	show_child_output(step->name, &err, false);
	if (overflow) {
		log_error("step \"%s\": discover = %s answered more than %u MiB", step->name, kind,
		          DISCOVER_MAX_ANSWER >> 20);
		goto cleanup;
	}
	log_debug("step %s: discover = %s took %.2f s", step->name, kind, log_now() - t0);
	rc = 0;
cleanup:
	proc_close(&p);
	close(errpipe[0]);
	sb_free(&err);
	return rc;
}

int
discover_files(const struct cfg_step *step, struct discover_result *out)
{
	const char *kind = discover_name(step->discover);
	struct strlist env = {0};
	struct strbuf answer = {0};
	char *python = NULL, *script_dir = NULL;
	const char *why = NULL;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (geteuid() == 0) {
		log_error("step \"%s\": discover = %s runs the project's Python, which pgstash never does as root: run "
		          "this command as the user the steps run as",
		          step->name, kind);
		return -1;
	}
	proc_env_inherit_public(&env);
	for (size_t i = 0; i < step->env.n; i++)
		proc_env_put(&env, step->env.v[i]);
	if (discover_interpreter(step, &env, &python, &script_dir, &why) != 0) {
		log_error("%s:%d: step \"%s\": discover = %s: %s", step->file, step->discover_line, step->name, kind, why);
		goto cleanup;
	}
	char *argv[] = {python,
	                "-B",
	                "-c",
	                (char *)discover_py,
	                (char *)kind,
	                step->discover_ini ? step->discover_ini : "",
	                script_dir ? script_dir : "",
	                NULL};
	if (run_child(step, argv, &env, &answer) != 0)
		goto cleanup;
	if (discover_parse(answer.buf ? answer.buf : "", answer.len, out, &why) != 0) {
		log_error("step \"%s\": discover = %s: bad answer from \"%s\": %s", step->name, kind, python, why);
		goto cleanup;
	}
	rc = 0;
cleanup:
	free(python);
	free(script_dir);
	sb_free(&answer);
	sl_free(&env);
	return rc;
}
