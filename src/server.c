/*
 * server — see server.h.  The official image (docker-library/postgres,
 * docker-entrypoint.sh) is the reference for what users expect: its
 * docker_init_database_dir, docker_temp_server_start, docker_setup_db,
 * docker_process_init_files, pg_setup_hba_conf and docker_verify_minimum_env
 * each have a counterpart here.  Unlike the image we start postgres
 * ourselves instead of through pg_ctl: the postmaster is then our child, its
 * exit status is ours to read and no shell is involved.
 */
#include "server.h"
#include "server_int.h"
#include "config.h"
#include "digest.h"
#include "durable.h"
#include "log.h"
#include "pgbin.h"
#include "proc.h"
#include "sig.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Bounds on the temporary server: start-up, fast shutdown, then SIGQUIT. */
#define SRV_START_TIMEOUT_S 60.0
#define SRV_STOP_TIMEOUT_S 60.0
#define SRV_QUIT_TIMEOUT_S 10.0
/*
 * Waiting for the temporary server's start: postmaster.pid's status line is
 * read every SRV_POLL_FAST_MS in the first second (a restored cluster is up
 * in 30-50 ms, and a prefix build waits for it), every SRV_POLL_MS after; a
 * connection is tried when it says "ready", and every SRV_POLL_MS in any
 * case (an early try costs the starting server a backend and a FATAL line).
 */
#define SRV_POLL_FAST_MS 2
#define SRV_POLL_MS 20
/* How much of a failed program's output to show. */
#define TAIL_LINES 30
/* Start attempts when another process took the private port between our look and the server's bind. */
#define SRV_PORT_TRIES 3
/* Random bytes in the one-time password (hex: URL- and conninfo-safe). */
#define SRV_PASSWORD_BYTES 24

/* ---- small helpers ---- */

/* Prints the last TAIL_LINES lines of `text` to stderr as "[label] line". */
static void
print_tail(const char *label, const char *text, size_t len)
{
	if (!text || len == 0)
		return;
	size_t start = len;
	int lines = 0;
	if (text[start - 1] == '\n')
		start--;
	while (start > 0) {
		if (text[start - 1] == '\n' && ++lines == TAIL_LINES)
			break;
		start--;
	}
	struct strbuf out = {0};
	const char *p = text + start;
	const char *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		sb_appendf(&out, "[%s] ", label);
		sb_appendn(&out, p, n);
		sb_appendc(&out, '\n');
		p += n + (nl ? 1 : 0);
	}
	fflush(stdout);
	fwrite(out.buf, 1, out.len, stderr);
	fflush(stderr);
	sb_free(&out);
}

static void
print_file_tail(const char *label, const char *path)
{
	size_t len = 0;
	char *text = path ? read_file(path, &len) : NULL;
	if (!text)
		return;
	log_error("last lines of \"%s\":", path);
	print_tail(label, text, len);
	free(text);
}

/* libpq's messages end with a newline; log_* adds its own. */
static void
log_pq(const char *what, const char *msg)
{
	size_t n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		n--;
	log_error("%s: %.*s", what, (int)n, msg);
}

/*
 * A fresh private directory $TMPDIR/pgstash-NAME-<random> (0700).  A socket
 * path must fit in sun_path and unix_socket_directories is a comma list, so
 * an unusual or long $TMPDIR gives way to /tmp.  NULL on error (logged).
 */
/* Where private directories go: $TMPDIR when it is short and plain (socket paths are limited), else /tmp. */
static const char *
private_base(void)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base || base[0] != '/' || strlen(base) > 40 ||
	    strspn(base, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_.-") != strlen(base))
		base = "/tmp";
	return base;
}

static char *
make_private_dir(const char *name)
{
	const char *base = private_base();
	/* Our pid in the name: a later start can tell a dead run's directory from a live one's. */
	char *dir = xasprintf("%s/pgstash-%s-%ld-......", base, name, (long)getpid());
	memset(dir + strlen(dir) - 6, 'X', 6); /* mkdtemp's template */
	if (!mkdtemp(dir)) {
		log_error("could not create a temporary directory \"%s\": %s", dir, strerror(errno));
		free(dir);
		return NULL;
	}
	return dir;
}

void
srv_sweep_stale_dirs(void)
{
	const char *base = private_base();
	DIR *d = opendir(base);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		/* pgstash-WHAT-PID-(six random characters) */
		if (strncmp(de->d_name, "pgstash-", 8) != 0)
			continue;
		const char *p = strchr(de->d_name + 8, '-');
		if (!p)
			continue;
		char *end;
		long pid = strtol(p + 1, &end, 10);
		if (pid <= 0 || end == p + 1 || *end != '-' || strlen(end + 1) != 6)
			continue;
		if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) ||
		    st.st_uid != geteuid())
			continue;
		char *path = path_join(base, de->d_name);
		log_debug("removing \"%s\", left by pgstash pid %ld", path, pid);
		rm_rf(path);
		free(path);
	}
	closedir(d);
}

/*
 * Starts `argv` (argv[0] a path) in its own process group, stdin /dev/null,
 * stdout and stderr on `out_fd` (-1: our stderr).  An exec failure is logged
 * by the child, which ends with 127 or 126.  Returns the pid, or -1 (logged).
 */
static pid_t
spawn(char *const *argv, int out_fd)
{
	struct proc_opts o = {.argv = argv, .own_group = true};
	if (out_fd >= 0)
		o.out = (struct proc_stream){PROC_IO_FD, out_fd};
	struct proc p;
	if (proc_spawn(&o, &p) != PROC_SPAWNED)
		return -1;
	return p.pid;
}

/*
 * Writes all of buf to the non-blocking pipe `fd` feeding child `pid`,
 * watching for signals (forwarded to the child's group).  SIGPIPE must be
 * ignored by the caller.  0, or -1: EPIPE (the child stopped reading;
 * *closed set, not logged), a signal or an error (logged).
 */
static int
feed(int fd, const char *buf, size_t len, pid_t pid, bool *closed)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EPIPE) {
			*closed = true;
			return -1;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			log_error("could not write to a pipe: %s", strerror(errno));
			return -1;
		}
		struct pollfd pfd[2] = {{.fd = fd, .events = POLLOUT}, {.fd = sig_fd(), .events = POLLIN}};
		if (poll(pfd, sig_fd() >= 0 ? 2 : 1, 1000) < 0 && errno != EINTR) {
			log_error("poll failed: %s", strerror(errno));
			return -1;
		}
		int sig = sig_drain();
		if (sig) {
			sig_forward(pid, sig);
			log_error("received signal %d (%s)", sig, strsignal(sig));
			return -1;
		}
	}
	return 0;
}

/* ---- initdb ---- */

char **
srv_initdb_argv(const struct cfg *cfg, const struct pgbin *pg)
{
	struct strlist argv = {0};

	sl_add_owned(&argv, pgbin_path(pg, "initdb"));
	sl_add(&argv, "-D");
	sl_add(&argv, cfg->pgdata);
	sl_add_owned(&argv, xasprintf("--username=%s", cfg->db_user));
	/* No --locale: as in the official image, initdb takes it from LANG and LC_* (keyed: cfg.start_env). */
	sl_add(&argv, "--encoding=UTF8");
	sl_add(&argv, "--auth-local=trust");
	sl_add(&argv, "--auth-host=trust");
	/* The whole cluster is synced once, in the background, after bootstrap (marker.h). */
	sl_add(&argv, "--no-sync");
	if (cfg->initdb_args && cfg->initdb_args[strspn(cfg->initdb_args, " \t\r\n")]) {
		/*
		 * The official image runs `eval initdb ... $POSTGRES_INITDB_ARGS`, so
		 * quotes in it count: the step rule gives the same words for
		 * everything but expansions and operators, which it refuses.
		 */
		const char *why;
		char **words = proc_split_argv(cfg->initdb_args, &why);
		if (!words) {
			log_error("POSTGRES_INITDB_ARGS: %s", why);
			sl_free(&argv);
			return NULL;
		}
		for (char **w = words; *w; w++)
			sl_add(&argv, *w);
		proc_argv_free(words);
	}
	if (cfg->initdb_waldir && *cfg->initdb_waldir)
		sl_add_owned(&argv, xasprintf("--waldir=%s", cfg->initdb_waldir));
	return argv.v;
}

/*
 * Starts a cluster tool (initdb, pg_resetwal) quietly into *t: its output
 * goes to a private log file whose tail tool_wait prints only when it fails
 * (or straight to stderr at debug level).  0, or -1 (logged; *t none).
 */
static int
tool_start(struct srv_tool *t, const char *what, char *const *argv, bool forward_signals)
{
	memset(t, 0, sizeof(*t));
	t->what = what;
	t->forward_signals = forward_signals;
	t->logfd = -1;
	t->t0 = log_now();
	if (log_min_level > LOG_DEBUG) {
		t->dir = make_private_dir(what);
		if (!t->dir)
			goto fail;
		t->logpath = xasprintf("%s/%s.log", t->dir, what);
		t->logfd = open(t->logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (t->logfd < 0) {
			log_error("could not create file \"%s\": %s", t->logpath, strerror(errno));
			goto fail;
		}
	}
	t->pid = spawn(argv, t->logfd);
	if (t->pid > 0)
		return 0;
fail:
	t->pid = 0;
	srv_tool_wait(t);
	return -1;
}

int
srv_tool_wait(struct srv_tool *t)
{
	int rc = -1;
	if (t->pid > 0) {
		int status = 0;
		if (proc_wait(t->pid, &status, -1, t->forward_signals ? t->pid : 0) == PROC_EXITED) {
			if (!proc_exited_ok(status)) {
				char how[64];
				log_error("%s failed: %s", t->what, proc_describe_status(status, how, sizeof(how)));
				print_file_tail(t->what, t->logpath);
			} else if (sig_received) {
				log_error("%s interrupted by signal %d", t->what, (int)sig_received);
			} else {
				rc = 0;
			}
		}
	}
	if (t->logfd >= 0)
		close(t->logfd);
	if (t->dir)
		rm_rf(t->dir);
	free(t->logpath);
	free(t->dir);
	memset(t, 0, sizeof(*t));
	t->logfd = -1;
	return rc;
}

/* A cluster tool, start to end; a terminating signal is passed on to it.  0 or -1 (logged). */
static int
run_tool(const char *what, char *const *argv)
{
	struct srv_tool t;
	if (tool_start(&t, what, argv, true) != 0)
		return -1;
	return srv_tool_wait(&t);
}

int
srv_initdb(const struct cfg *cfg, const struct pgbin *pg)
{
	char **argv = srv_initdb_argv(cfg, pg);
	if (!argv)
		return -1;
	log_info("initializing a cluster in \"%s\"", cfg->pgdata);
	double t0 = log_now();
	int rc = run_tool("initdb", argv);
	if (rc == 0)
		log_info("initdb done in %.1f s", log_now() - t0);
	proc_argv_free(argv);
	return rc;
}

/* Checked against what pg_resetwal changes: tests/unit/test_server.c. */
const char *const srv_reset_wal_paths[] = {"global/pg_control", "pg_wal", NULL};

int
srv_reset_wal_start(const struct cfg *cfg, const struct pgbin *pg, struct srv_tool *t)
{
	char *prog = pgbin_path(pg, "pg_resetwal");
	/* No -f: pg_resetwal itself refuses a cluster that was not shut down cleanly. */
	char *argv[] = {prog, "-D", cfg->pgdata, NULL};
	/*
	 * Never signalled: killed between rewriting pg_control and writing the new
	 * segment it would leave a cluster that does not start, and on_change =
	 * migrate runs it on the user's own cluster.  It takes milliseconds.
	 */
	int rc = tool_start(t, "pg_resetwal", argv, false);
	free(prog);
	return rc;
}

/*
 * Settings every postgres that pgstash itself starts (single-user, the
 * temporary server) runs with, whatever a restored cluster's conf files say:
 * a cache entry is written by whoever can write the cache, and its
 * postgresql.auto.conf could otherwise load a library from the archive
 * (shared_preload_libraries = 'extras/evil.so' is relative to PGDATA), run
 * an archive_command, or point hba_file at a trust-all file.  Command-line
 * settings win over every conf file.
 */
#define SRV_SAFE_OVERRIDES(hba, ident)                                                                        \
	"-c", "shared_preload_libraries=", "-c", "session_preload_libraries=", "-c", "local_preload_libraries=",    \
	    "-c", "dynamic_library_path=$libdir", "-c", "archive_mode=off", "-c", "archive_command=", "-c", hba,     \
	    "-c", ident

/* ---- the temporary server ---- */

/*
 * Whether PGDATA's conf files might set one of `names` (NULL-terminated):
 * postgresql.conf or postgresql.auto.conf sets one, or includes another
 * file, or cannot be read, or has a line whose name cannot be read
 * (conf_next_setting).  Only a cluster pgstash has initialized or
 * restored is looked at (a restore refuses an archive whose conf files set
 * what runs code: snapshot.c), as its owner.
 */
static bool
conf_may_set(const char *pgdata, const char *const *names)
{
	static const char *const files[] = {"postgresql.conf", "postgresql.auto.conf"};
	bool may = false;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]) && !may; i++) {
		char *path = path_join(pgdata, files[i]);
		int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		free(path);
		struct stat st;
		if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
			close(fd);
			may = true; /* not a plain file: the server may read anything from it */
			continue;
		}
		FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
		if (!f) {
			may = fd >= 0 || errno != ENOENT;
			if (fd >= 0)
				close(fd);
			continue;
		}
		char name[64];
		bool known;
		while (!may && conf_next_setting(f, name, sizeof(name), &known, NULL)) {
			may = !known || strncmp(name, "include", 7) == 0;
			for (const char *const *n = names; *n && !may; n++)
				may = strcmp(name, *n) == 0;
		}
		fclose(f);
	}
	return may;
}

static void
free_secret(char *p)
{
	if (p)
		explicit_bzero(p, strlen(p));
	free(p);
}

static void
srv_clear(struct srv *s)
{
	free(s->sockdir);
	free(s->user);
	free(s->bindir);
	free(s->pgdata);
	free(s->logfile);
	free(s->hba);
	free_secret(s->password);
	free(s->verifier);
	free(s->old_verifier);
	memset(s, 0, sizeof(*s));
}

/*
 * A TCP port on 127.0.0.1 for the temporary server where no client looks
 * for the real one: one the kernel hands out as free right now (from its
 * ephemeral range), never 5432 nor $PGPORT.  Another process may take it
 * before the server binds it: srv_start_temp then tries again.  The port,
 * or -1 (logged).
 */
static int
private_port(void)
{
	long pgport = 0;
	const char *env = getenv("PGPORT");
	const char *why;
	if (env && parse_long(env, 1, 65535, &pgport, &why) != 0)
		pgport = 0;
	for (int i = 0; i < 16; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			log_error("could not create a socket: %s", strerror(errno));
			return -1;
		}
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof(a);
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
			log_error("could not find a free TCP port on 127.0.0.1: %s", strerror(errno));
			close(fd);
			return -1;
		}
		close(fd);
		int port = ntohs(a.sin_port);
		if (port != 5432 && port != pgport)
			return port;
	}
	log_error("could not find a free TCP port on 127.0.0.1 other than 5432 and $PGPORT");
	return -1;
}

/*
 * The temporary server's pg_hba.conf, in its private directory: PGDATA's is
 * initdb's (trust everywhere) or a restored snapshot's, and neither may
 * decide who reaches a half-migrated database.  The socket is trusted: its
 * directory is 0700, so only the cluster's owner (pgstash, its host steps
 * and init scripts) gets there.  TCP takes SCRAM only, with the one-time
 * password that srv_start_temp sets.
 */
static int
write_temp_hba(const struct srv *s)
{
	struct strbuf sb = {0};
	sb_append(&sb, "# pgstash's temporary server (a build): its own file, not PGDATA's.\n"
	               "# The socket's directory is private to the cluster's owner.\n"
	               "local all all trust\n"
	               "local replication all trust\n");
	if (s->tcp)
		sb_append(&sb, "# Container steps: the one-time password only.\n"
		               "host all all all scram-sha-256\n");
	int rc = durable_write_file(s->hba, sb.buf, sb.len, 0600, false);
	sb_free(&sb);
	return rc;
}

/* Fills s's strings, makes its private directory and its pg_hba.conf.  0 or -1 (logged). */
static int
prepare_temp(struct srv *s, const struct cfg *cfg, const struct pgbin *pg, bool tcp, bool durable)
{
	memset(s, 0, sizeof(*s));
	s->durable = durable;
	s->port = tcp ? private_port() : SRV_PORT;
	if (s->port < 0)
		return -1;
	s->tcp = tcp;
	s->user = xstrdup(cfg->db_user);
	s->bindir = xstrdup(pg->bindir);
	s->pgdata = xstrdup(cfg->pgdata);
	s->sockdir = make_private_dir("srv");
	if (!s->sockdir)
		return -1;
	s->logfile = path_join(s->sockdir, "server.log");
	s->hba = path_join(s->sockdir, "pg_hba.conf");
	return write_temp_hba(s);
}

/*
 * What the temporary server writes and how safely.
 *
 * A build's: durability off.  A crash during the build leaves a PGDATA that
 * is wiped and rebuilt anyway, and the clean shutdown at the end writes a
 * consistent checkpoint; only that state is ever snapshotted or used, and it
 * is synced to disk after bootstrap (marker.h: until then the marker says
 * "unsynced", and a start after a host crash rebuilds it).  No autovacuum,
 * as pg_upgrade's servers (a batch job thrown away unless it ends cleanly):
 * its workers would visit every database, and so change the ones a
 * snapshot begun during the steps has written (snap_early).  And
 * wal_level=minimal: a table created or truncated in a step's transaction is
 * then written without WAL (its commit syncs it instead, which fsync=off
 * skips), so a bulk load into new tables writes its data once, not twice:
 * `pgbench -i -s 64` 7.4-11.2 -> 5.1-7.4 s and 801 -> 17 MB of WAL on a
 * journaled ext4 (bench/README.md, "Snapshot write at data scale").  The
 * snapshot holds the same: pg_resetwal, run on every build, writes
 * wal_level=minimal into pg_control anyway, and the final server starts
 * with its own setting.  Not when the cluster's conf files might set the
 * WAL's level or its users (wal_level, max_wal_senders, summarize_wal, or
 * an include): a setting written there (a derived image's
 * postgresql.conf.sample, initdb -c on PostgreSQL 16+) may be what a step
 * needs, e.g. for a replication slot, which minimal refuses.  Nor when the
 * cluster holds a slot (a prefix restored from an entry built before).
 *
 * A migration in place (`durable`): durability on, whatever the conf files
 * say (that cluster holds a user's rows, which a host crash must not tear),
 * and the conf files' own autovacuum and WAL settings.
 */
static void
add_durability_settings(struct strlist *a, bool durable, const char *pgdata)
{
	static const char *const build[] = {
		"fsync=off", "synchronous_commit=off", "full_page_writes=off", "autovacuum=off",
	};
	static const char *const in_place[] = {"fsync=on", "synchronous_commit=on", "full_page_writes=on"};
	static const char *const wal_names[] = {"wal_level", "max_wal_senders", "summarize_wal", NULL};
	const char *const *v = durable ? in_place : build;
	size_t n = durable ? sizeof(in_place) / sizeof(in_place[0]) : sizeof(build) / sizeof(build[0]);
	for (size_t i = 0; i < n; i++) {
		sl_add(a, "-c");
		sl_add(a, v[i]);
	}
	char *slots = path_join(pgdata, "pg_replslot");
	/* A slot a cached prefix holds would stop the server at start under minimal (a FATAL error). */
	bool no_slots = !durable && dir_is_empty(slots);
	free(slots);
	if (no_slots && !conf_may_set(pgdata, wal_names)) {
		sl_add(a, "-c");
		sl_add(a, "wal_level=minimal");
		sl_add(a, "-c");
		sl_add(a, "max_wal_senders=0");
	}
}

/* Starts the postmaster, its output in s->logfile; sets s->pid.  0 or -1 (logged). */
static int
spawn_postmaster(struct srv *s, const struct pgbin *pg)
{
	char port[16];
	int logfd = open(s->logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0) {
		log_error("could not create file \"%s\": %s", s->logfile, strerror(errno));
		return -1;
	}
	snprintf(port, sizeof(port), "%d", s->port);
	char *sockopt = xasprintf("unix_socket_directories=%s", s->sockdir);
	char *hba = xasprintf("hba_file=%s", s->hba);
	char *ident = xasprintf("ident_file=%s/pg_ident.conf", s->pgdata);
	const char *fixed[] = {
		"-D", s->pgdata, "-p", port,
		"-c", s->tcp ? "listen_addresses=127.0.0.1" : "listen_addresses=",
		"-c", sockopt,
		SRV_SAFE_OVERRIDES(hba, ident),
		/* The log tail we print on failure must be in our file. */
		"-c", "logging_collector=off",
	};
	struct strlist a = {0};
	sl_add_owned(&a, pgbin_path(pg, "postgres"));
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		sl_add(&a, fixed[i]);
	add_durability_settings(&a, s->durable, s->pgdata);
	pid_t pid = spawn(a.v, logfd);
	close(logfd);
	sl_free(&a);
	free(hba);
	free(ident);
	free(sockopt);
	if (pid < 0)
		return -1;
	s->pid = pid;
	return 0;
}

/* Naps `ms`, waking early for a signal. */
static void
nap_or_signal(int ms)
{
	if (sig_fd() >= 0) {
		struct pollfd p = {.fd = sig_fd(), .events = POLLIN};
		poll(&p, 1, ms);
	} else {
		usleep((useconds_t)ms * 1000);
	}
}

/* How a wait for the temporary server's start ended (pg_ctl's WaitPMResult). */
enum srv_wait {
	SRV_READY,
	SRV_FAILED,     /* logged, with the server log's tail */
	SRV_PORT_TAKEN, /* it exited because another process has its port: not logged */
};

/* Whether the server log says the TCP port was taken (postgres' "could not bind ...: Address already in use"). */
static bool
port_was_taken(const struct srv *s)
{
	char *text = read_file(s->logfile, NULL);
	bool taken = text && strstr(text, "could not bind") && strstr(text, strerror(EADDRINUSE));
	free(text);
	return taken;
}

/*
 * Whether postmaster.pid's status line (its 8th, PostgreSQL 10 and later, as
 * pg_ctl reads it) says the server accepts connections.
 */
static bool
pidfile_says_ready(const struct srv *s)
{
	char *path = path_join(s->pgdata, "postmaster.pid");
	char *text = read_small_file(path, 4096, NULL);
	free(path);
	const char *line = text;
	for (int i = 1; i < 8 && line; i++) {
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	bool ready = line && strncmp(line, "ready", 5) == 0;
	free(text);
	return ready;
}

/*
 * Waits until the server started at t0 accepts connections.  With
 * `may_retry`, an exit because the port was taken is SRV_PORT_TAKEN.
 */
static enum srv_wait
wait_ready(struct srv *s, double t0, bool may_retry)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", s->port);
	const char *const kw[] = {"host", "port", "dbname", "user", "connect_timeout", NULL};
	const char *const val[] = {s->sockdir, port, "postgres", s->user, "5", NULL};
	double last_try = -1.0;
	for (;;) {
		double now = log_now();
		if (now - last_try >= SRV_POLL_MS / 1000.0 || pidfile_says_ready(s)) {
			last_try = now;
			PGPing ping = PQpingParams(kw, val, 0);
			if (ping == PQPING_OK)
				return SRV_READY;
			if (ping == PQPING_NO_ATTEMPT) {
				log_error("could not check the temporary server: bad connection parameters");
				return SRV_FAILED;
			}
		}
		int status;
		if (sig_child_done(s->pid, &status)) {
			char how[64];
			s->pid = 0;
			if (may_retry && port_was_taken(s))
				return SRV_PORT_TAKEN;
			log_error("the temporary server exited during start-up: %s",
			          proc_describe_status(status, how, sizeof(how)));
			print_file_tail("postgres", s->logfile);
			return SRV_FAILED;
		}
		if (sig_received) {
			log_error("start-up of the temporary server interrupted by signal %d", (int)sig_received);
			return SRV_FAILED;
		}
		if (log_now() - t0 > SRV_START_TIMEOUT_S) {
			log_error("the temporary server did not accept connections within %.0f s", SRV_START_TIMEOUT_S);
			print_file_tail("postgres", s->logfile);
			return SRV_FAILED;
		}
		nap_or_signal(log_now() - t0 < 1.0 ? SRV_POLL_FAST_MS : SRV_POLL_MS);
	}
}

/* A fresh random password in hex (safe in a URL and a conninfo).  NULL when there is no randomness (logged). */
static char *
random_password(void)
{
	unsigned char r[SRV_PASSWORD_BYTES];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		log_error("could not get random bytes for a password: %s", strerror(errno));
		return NULL;
	}
	char *hex = xmalloc(2 * sizeof(r) + 1);
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(hex + 2 * i, 3, "%02x", r[i]);
	explicit_bzero(r, sizeof(r));
	return hex;
}

/* ALTER ROLE `role` PASSWORD `verifier` (stored as it is), or NULL.  0 or -1 (logged). */
static int
set_role_verifier(PGconn *conn, const char *role, const char *verifier)
{
	int rc = -1;
	char *ident = PQescapeIdentifier(conn, role, strlen(role));
	char *literal = verifier ? PQescapeLiteral(conn, verifier, strlen(verifier)) : NULL;
	char *sql = NULL;
	PGresult *res = NULL;
	if (!ident || (verifier && !literal)) {
		log_pq("could not quote a role or its password", PQerrorMessage(conn));
		goto cleanup;
	}
	sql = xasprintf("ALTER ROLE %s PASSWORD %s", ident, literal ? literal : "NULL");
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		char *what = xasprintf("could not set the password of role \"%s\" on the temporary server", role);
		log_pq(what, PQerrorMessage(conn));
		free(what);
		goto cleanup;
	}
	rc = 0;
cleanup:
	PQclear(res);
	free(sql);
	PQfreemem(literal);
	PQfreemem(ident);
	return rc;
}

/*
 * Gives s->user a fresh one-time password for container steps, remembering
 * what it had.  The SCRAM verifier is computed here (as psql's \password
 * does): the password itself never reaches the server, its log, its WAL or
 * a snapshot.  0 or -1 (logged).
 */
static int
set_one_time_password(struct srv *s)
{
	int rc = -1;
	PGresult *res = NULL;
	PGconn *conn = srv_connect(s, "postgres");
	if (!conn)
		return -1;
	s->password = random_password();
	if (!s->password)
		goto cleanup;
	const char *params[1] = {s->user};
	res = PQexecParams(conn, "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1", 1, NULL, params,
	                   NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 1) {
		log_pq("could not read the password of the temporary server's role", PQerrorMessage(conn));
		goto cleanup;
	}
	if (!PQgetisnull(res, 0, 0))
		s->old_verifier = xstrdup(PQgetvalue(res, 0, 0));
	char *verifier = PQencryptPasswordConn(conn, s->password, s->user, "scram-sha-256");
	if (!verifier) {
		log_pq("could not compute a SCRAM verifier", PQerrorMessage(conn));
		goto cleanup;
	}
	s->verifier = xstrdup(verifier);
	PQfreemem(verifier);
	rc = set_role_verifier(conn, s->user, s->verifier);
cleanup:
	PQclear(res);
	PQfinish(conn);
	return rc;
}

/*
 * Puts back what the role had before the one-time password, on every role
 * that still has it (a step may have renamed the role; one that set its own
 * password keeps it).  Then rewrites pg_authid: the row that held the
 * verifier would otherwise stay in the file, dead (plain VACUUM leaves its
 * bytes in the page's free space), and go into the snapshot.  The WAL that
 * saw it is replaced after the shutdown (srv_reset_wal).  0 or -1 (logged).
 */
static int
forget_one_time_password(const struct srv *s)
{
	int rc = -1;
	PGconn *conn = srv_connect(s, "postgres");
	if (!conn)
		return -1;
	const char *params[1] = {s->verifier};
	PGresult *res = PQexecParams(conn, "SELECT rolname FROM pg_catalog.pg_authid WHERE rolpassword = $1", 1, NULL,
	                             params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 1) {
		log_pq("could not look for the one-time password", PQerrorMessage(conn));
		goto cleanup;
	}
	for (int i = 0; i < PQntuples(res); i++)
		if (set_role_verifier(conn, PQgetvalue(res, i, 0), s->old_verifier) != 0)
			goto cleanup;
	PQclear(res);
	res = PQexec(conn, "VACUUM FULL pg_catalog.pg_authid");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		log_pq("could not rewrite pg_authid", PQerrorMessage(conn));
		goto cleanup;
	}
	rc = 0;
cleanup:
	PQclear(res);
	PQfinish(conn);
	return rc;
}

int
srv_start_temp(struct srv *s, const struct cfg *cfg, const struct pgbin *pg, bool tcp, bool durable)
{
	double t0 = 0;
	for (int attempt = 1;; attempt++) {
		if (prepare_temp(s, cfg, pg, tcp, durable) != 0)
			goto fail;
		t0 = log_now();
		if (spawn_postmaster(s, pg) != 0)
			goto fail;
		enum srv_wait w = wait_ready(s, t0, tcp && attempt < SRV_PORT_TRIES);
		if (w == SRV_READY)
			break;
		if (w == SRV_FAILED)
			goto fail;
		log_debug("port %d was taken before the temporary server could bind it: trying another", s->port);
		srv_stop(s);
	}
	if (tcp && set_one_time_password(s) != 0)
		goto fail;
	if (tcp)
		log_info("temporary server ready in %.2f s (socket in \"%s\", TCP on 127.0.0.1:%d with a one-time password)",
		         log_now() - t0, s->sockdir, s->port);
	else
		log_info("temporary server ready in %.2f s (socket in \"%s\")", log_now() - t0, s->sockdir);
	return 0;
fail:
	srv_stop(s);
	return -1;
}

int
srv_stop(struct srv *s)
{
	int rc = 0;

	/*
	 * Before the clean shutdown that ends a build: the cluster is snapshotted
	 * and becomes the final server, neither of which may know the one-time
	 * password.  After a signal a build is thrown away anyway; a migration
	 * in place (s->durable) is kept, so it forgets the password then too.
	 */
	if (s->pid > 0 && s->verifier && ((sig_received && !s->durable) || forget_one_time_password(s) != 0))
		rc = -1;
	if (s->pid > 0) {
		pid_t pid = s->pid;
		int status = 0;
		double t0 = log_now();
		/* SIGINT is the postmaster's "fast" shutdown: roll back sessions, checkpoint, exit 0. */
		if (kill(pid, SIGINT) != 0 && errno != ESRCH)
			log_warning("could not signal the temporary server: %s", strerror(errno));
		enum proc_wait_result w = proc_wait(pid, &status, SRV_STOP_TIMEOUT_S, 0);
		if (w == PROC_TIMEOUT) {
			log_error("the temporary server did not stop within %.0f s: sending SIGQUIT", SRV_STOP_TIMEOUT_S);
			kill(pid, SIGQUIT);
			w = proc_wait(pid, &status, SRV_QUIT_TIMEOUT_S, 0);
			if (w == PROC_TIMEOUT) {
				kill(-pid, SIGKILL);
				w = proc_wait(pid, &status, -1, 0);
			}
			rc = -1;
		}
		if (w != PROC_EXITED) {
			rc = -1;
		} else if (!proc_exited_ok(status)) {
			char how[64];
			log_error("the temporary server did not shut down cleanly: %s",
			          proc_describe_status(status, how, sizeof(how)));
			rc = -1;
		}
		if (rc != 0) {
			print_file_tail("postgres", s->logfile);
			/* Backends notice a dead postmaster on their own; don't wait for them to. */
			kill(-pid, SIGKILL);
		} else {
			log_info("temporary server stopped in %.2f s", log_now() - t0);
		}
		s->pid = 0;
	}
	if (s->sockdir && rm_rf(s->sockdir) != 0)
		rc = -1;
	srv_clear(s);
	return rc;
}

PGconn *
srv_connect(const struct srv *s, const char *dbname)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", s->port);
	const char *const kw[] = {"host", "port", "dbname", "user", "fallback_application_name", NULL};
	const char *const val[] = {s->sockdir, port, dbname, s->user, "pgstash", NULL};

	PGconn *conn = PQconnectdbParams(kw, val, 0);
	if (!conn) {
		log_error("could not connect to the temporary server: out of memory");
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		char *what = xasprintf("could not connect to database \"%s\" on the temporary server", dbname);
		log_pq(what, PQerrorMessage(conn));
		free(what);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* ---- roles and databases ---- */

static int
create_database(PGconn *conn, const char *name)
{
	const char *params[1] = {name};
	int rc = -1;
	char *ident = NULL;
	char *sql = NULL;
	PGresult *res = PQexecParams(conn, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", 1, NULL,
	                             params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 1) {
		log_pq("could not list databases", PQerrorMessage(conn));
		goto cleanup;
	}
	if (PQntuples(res) > 0) {
		log_debug("database \"%s\" exists", name);
		rc = 0;
		goto cleanup;
	}
	PQclear(res);
	res = NULL;
	ident = PQescapeIdentifier(conn, name, strlen(name));
	if (!ident) {
		log_pq("could not quote a database name", PQerrorMessage(conn));
		goto cleanup;
	}
	sql = xasprintf("CREATE DATABASE %s", ident);
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		char *what = xasprintf("could not create database \"%s\"", name);
		log_pq(what, PQerrorMessage(conn));
		free(what);
		goto cleanup;
	}
	log_info("created database \"%s\"", name);
	rc = 0;
cleanup:
	PQclear(res);
	PQfreemem(ident);
	free(sql);
	return rc;
}

int
srv_setup_databases(const struct srv *s, const struct cfg *cfg)
{
	struct strlist names = {0};
	int rc = -1;

	if (cfg->db_name && *cfg->db_name)
		sl_add(&names, cfg->db_name);
	for (size_t i = 0; i < cfg->db_extra.n; i++)
		if (!sl_contains(&names, cfg->db_extra.v[i]))
			sl_add(&names, cfg->db_extra.v[i]);

	PGconn *conn = srv_connect(s, "postgres");
	if (!conn)
		goto cleanup;
	for (size_t i = 0; i < names.n; i++) {
		/* initdb made "postgres"; the official image skips it the same way. */
		if (strcmp(names.v[i], "postgres") == 0)
			continue;
		if (create_database(conn, names.v[i]) != 0)
			goto cleanup;
	}
	rc = 0;
cleanup:
	PQfinish(conn);
	sl_free(&names);
	return rc;
}

int
srv_database_oids(const struct srv *s, const char *via, const struct strlist *except, struct strlist *oids)
{
	PGconn *conn = srv_connect(s, via);
	if (!conn)
		return -1;
	int rc = -1;
	PGresult *res = PQexec(conn, "SELECT oid::text, datname FROM pg_catalog.pg_database");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 2) {
		log_pq("could not list databases", PQerrorMessage(conn));
		goto cleanup;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		if (!sl_contains(except, PQgetvalue(res, i, 1)))
			sl_add(oids, PQgetvalue(res, i, 0));
	}
	rc = 0;
cleanup:
	PQclear(res);
	PQfinish(conn);
	return rc;
}

int
srv_create_clones(const struct srv *s, const struct cfg *cfg)
{
	struct strlist names = {0};
	cfg_clone_names(cfg, &names);
	if (names.n == 0)
		return 0;
	const char *tmpl = cfg->clone_template ? cfg->clone_template : cfg->db_name;
	int rc = -1;
	char *qt = srv_quote_ident(tmpl);
	double t0 = log_now();
	PGconn *conn = srv_connect(s, "postgres");
	if (!conn)
		goto cleanup;
	for (size_t i = 0; i < names.n; i++) {
		char *qn = srv_quote_ident(names.v[i]);
		/* A prefix snapshot holds clones of an older schema: replace them. */
		char *drop = xasprintf("DROP DATABASE IF EXISTS %s", qn);
		char *create = xasprintf("CREATE DATABASE %s TEMPLATE %s", qn, qt);
		PGresult *res = PQexec(conn, drop);
		bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		if (ok) {
			res = PQexec(conn, create);
			ok = PQresultStatus(res) == PGRES_COMMAND_OK;
			PQclear(res);
		}
		free(drop);
		free(create);
		free(qn);
		if (!ok) {
			char *what = xasprintf("could not create clone \"%s\" of \"%s\"", names.v[i], tmpl);
			log_pq(what, PQerrorMessage(conn));
			free(what);
			goto cleanup;
		}
	}
	log_info("created %zu clone%s of \"%s\" in %.2f s", names.n, names.n == 1 ? "" : "s", tmpl, log_now() - t0);
	rc = 0;
cleanup:
	PQfinish(conn);
	free(qt);
	sl_free(&names);
	return rc;
}

/* ---- /docker-entrypoint-initdb.d ---- */

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Decompresses `path` (any filter libarchive knows, found by content) into
 * the pipe `fd` feeding `pid`.  0, or -1 (logged unless the reader went away
 * first, which its own exit status explains).
 */
static int
feed_compressed(const char *path, int fd, pid_t pid)
{
	struct archive *a = archive_read_new();
	struct archive_entry *entry;
	char *buf = xmalloc(65536);
	int rc = -1;
	bool closed = false;

	if (!a) {
		log_error("could not read \"%s\": out of memory", path);
		goto cleanup;
	}
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	if (archive_read_open_filename(a, path, 65536) != ARCHIVE_OK ||
	    archive_read_next_header(a, &entry) != ARCHIVE_OK) {
		log_error("could not read \"%s\": %s", path, archive_error_string(a));
		goto cleanup;
	}
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, 65536);
		if (n < 0) {
			log_error("could not decompress \"%s\": %s", path, archive_error_string(a));
			goto cleanup;
		}
		if (n == 0)
			break;
		if (feed(fd, buf, (size_t)n, pid, &closed) != 0) {
			if (closed)
				rc = 0; /* psql stopped reading: its exit status says why */
			goto cleanup;
		}
	}
	rc = 0;
cleanup:
	archive_read_free(a);
	free(buf);
	return rc;
}

/* Runs one init file (argv) with `envp`; feeds `compressed` to its stdin when set.  0 or -1 (logged). */
static int
run_init_file(char *const argv[], char *const envp[], const char *file, const char *compressed)
{
	struct proc_opts o = {.argv = argv, .envp = envp, .own_group = true};
	if (compressed)
		o.in.io = PROC_IO_PIPE;
	struct proc p;
	struct sigaction ign = {.sa_handler = SIG_IGN};
	struct sigaction old_pipe;

	if (proc_spawn(&o, &p) != PROC_SPAWNED)
		return -1;
	int fed = 0;
	if (compressed) {
		/* Ignored only now, after the fork: psql must start with the default disposition. */
		sigaction(SIGPIPE, &ign, &old_pipe);
		fcntl(p.in, F_SETFL, O_NONBLOCK);
		fed = feed_compressed(compressed, p.in, p.pid);
		if (fed != 0)
			sig_forward(p.pid, SIGTERM); /* half a script must not run as if it were whole */
		proc_close(&p);
	}
	int status = 0;
	enum proc_wait_result w = proc_wait(p.pid, &status, -1, p.pid);
	if (compressed)
		sigaction(SIGPIPE, &old_pipe, NULL);
	if (w != PROC_EXITED)
		return -1;
	if (sig_received) {
		log_error("\"%s\" interrupted by signal %d", file, (int)sig_received);
		return -1;
	}
	if (!proc_exited_ok(status)) {
		char how[64];
		log_error("\"%s\" failed: %s", file, proc_describe_status(status, how, sizeof(how)));
		return -1;
	}
	if (fed != 0) {
		log_error("\"%s\" failed", file);
		return -1;
	}
	return 0;
}

/*
 * The names in `dir` that the image's glob "*" gives, in bytewise order.
 * 1 when there is no such directory, 0, or -1 (logged).
 */
static int
list_init_files(const char *dir, struct strlist *names)
{
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT) {
			log_debug("no \"%s\": nothing to run", dir);
			return 1;
		}
		log_error("could not open directory \"%s\": %s", dir, strerror(errno));
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		/* The image's glob "*" skips dot files (Kubernetes' ..data links among them). */
		if (de->d_name[0] != '.')
			sl_add(names, de->d_name);
	}
	closedir(d);
	if (names->n > 0)
		qsort(names->v, names->n, sizeof(char *), cmp_names);
	return 0;
}

/* The environment the image gives init scripts: client settings, POSTGRES_*, and PATH with our psql first. */
static void
init_files_env(const struct srv *s, const struct cfg *cfg, struct strlist *env)
{
	proc_env_inherit_public(env);
	srv_client_env(s, cfg, cfg->db_name, env);
	proc_env_set(env, "POSTGRES_USER", cfg->db_user);
	proc_env_set(env, "POSTGRES_DB", cfg->db_name);
	if (cfg->db_password)
		proc_env_set(env, "POSTGRES_PASSWORD", cfg->db_password);
	/* Scripts written for the image call `psql`: give them the one matching the server. */
	const char *path_env = getenv("PATH");
	char *path_var = xasprintf("%s%s%s", s->bindir, path_env && *path_env ? ":" : "", path_env ? path_env : "");
	proc_env_set(env, "PATH", path_var);
	free(path_var);
}

/*
 * The shell a non-executable init script is sourced into: bash with
 * `set -Eeo pipefail`, as the official image's entrypoint, and the helper
 * functions and variables scripts written for that image call.  Written
 * here after the image's documented interface; the temporary server is
 * already ours, so starting and stopping it are no-ops.  $1 is the script.
 */
static const char init_shell[] =
	"file_env() {\n"
	"  local var=\"$1\" file_var=\"$1_FILE\" val=\"${2:-}\"\n"
	"  if [ -n \"${!var:-}\" ] && [ -n \"${!file_var:-}\" ]; then\n"
	"    printf >&2 'error: both %s and %s are set (but are exclusive)\\n' \"$var\" \"$file_var\"; exit 1\n"
	"  fi\n"
	"  if [ -n \"${!var:-}\" ]; then val=\"${!var}\"; elif [ -n \"${!file_var:-}\" ]; then val=\"$(< \"${!file_var}\")\"; fi\n"
	"  export \"$var\"=\"$val\"; unset \"$file_var\"\n"
	"}\n"
	"docker_process_sql() {\n"
	"  local runner=(psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --no-password --no-psqlrc)\n"
	"  if [ -n \"${POSTGRES_DB:-}\" ]; then runner+=(--dbname \"$POSTGRES_DB\"); fi\n"
	"  \"${runner[@]}\" \"$@\"\n"
	"}\n"
	"docker_process_init_files() {\n"
	"  local f\n"
	"  for f; do\n"
	"    case \"$f\" in\n"
	"      *.sh) if [ -x \"$f\" ]; then \"$f\"; else . \"$f\"; fi ;;\n"
	"      *.sql) docker_process_sql -f \"$f\" ;;\n"
	"      *.sql.gz) gunzip -c \"$f\" | docker_process_sql ;;\n"
	"      *.sql.xz) xzcat \"$f\" | docker_process_sql ;;\n"
	"      *.sql.zst) zstd -dc \"$f\" | docker_process_sql ;;\n"
	"      *) echo \"$0: ignoring $f\" ;;\n"
	"    esac\n"
	"  done\n"
	"}\n"
	"docker_setup_env() {\n"
	"  file_env POSTGRES_PASSWORD; file_env POSTGRES_USER postgres\n"
	"  file_env POSTGRES_DB \"$POSTGRES_USER\"; file_env POSTGRES_INITDB_ARGS\n"
	"  declare -g DATABASE_ALREADY_EXISTS=\n"
	"}\n"
	"docker_verify_minimum_env() { :; }\n"
	"docker_temp_server_start() { :; }\n"
	"docker_temp_server_stop() { :; }\n"
	"psql=(psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --no-password --no-psqlrc)\n"
	"set -Eeo pipefail\n"
	". \"$1\"\n";

/* Runs or ignores init file `name` (at `path`) by its suffix.  0 or -1 (logged). */
static int
run_one_init_file(const char *name, char *path, const char *psql, const struct cfg *cfg, char *const env[])
{
	struct stat st;
	char *sql_argv[] = {(char *)psql, "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password",
	                    "--dbname", cfg->db_name, NULL, NULL, NULL};

	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
		log_info("ignoring \"%s\"", path);
		return 0;
	}
	if (str_ends_with(name, ".sh")) {
		if (access(path, X_OK) == 0) {
			log_info("running \"%s\"", path);
			char *argv[] = {path, NULL};
			return run_init_file(argv, env, path, NULL);
		}
		/*
		 * The image sources non-executable scripts into its bash, helpers in
		 * scope; here that bash is a child, so variables a script sets stay its own.
		 */
		log_info("sourcing \"%s\" (not executable) in bash with the official image's helpers", path);
		char *argv[] = {"/bin/bash", "-c", (char *)init_shell, "docker-entrypoint.sh", path, NULL};
		return run_init_file(argv, env, path, NULL);
	}
	if (str_ends_with(name, ".sql")) {
		log_info("running \"%s\"", path);
		sql_argv[7] = "-f";
		sql_argv[8] = path;
		return run_init_file(sql_argv, env, path, NULL);
	}
	if (str_ends_with(name, ".sql.gz") || str_ends_with(name, ".sql.xz") || str_ends_with(name, ".sql.zst")) {
		log_info("running \"%s\"", path);
		return run_init_file(sql_argv, env, path, path);
	}
	log_info("ignoring \"%s\"", path);
	return 0;
}

int
srv_run_initdb_d(const struct srv *s, const struct cfg *cfg)
{
	struct strlist names = {0};
	struct strlist env = {0};
	char *psql = NULL;
	int rc = -1;

	if (!cfg->initdb_d || !*cfg->initdb_d)
		return 0;
	int listed = list_init_files(cfg->initdb_d, &names);
	if (listed != 0 || names.n == 0) {
		rc = listed < 0 ? -1 : 0;
		goto cleanup;
	}
	init_files_env(s, cfg, &env);
	psql = path_join(s->bindir, "psql");
	for (size_t i = 0; i < names.n; i++) {
		if (sig_received)
			goto cleanup;
		char *path = path_join(cfg->initdb_d, names.v[i]);
		int r = run_one_init_file(names.v[i], path, psql, cfg, env.v);
		free(path);
		if (r != 0)
			goto cleanup;
	}
	rc = 0;
cleanup:
	free(psql);
	sl_free(&env);
	sl_free(&names);
	return rc;
}

/* ---- per-start settings ---- */

char *
srv_quote_literal(const char *s)
{
	struct strbuf sb = {0};
	/* E'' reads the same whatever standard_conforming_strings says. */
	sb_append(&sb, "E'");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '\'')
			sb_append(&sb, "''");
		else if (*p == '\\')
			sb_append(&sb, "\\\\");
		else if (*p < 0x20 || *p == 0x7f)
			/* Single-user mode reads line by line: no raw newline may reach it. */
			sb_appendf(&sb, "\\x%02x", *p);
		else
			sb_appendc(&sb, (char)*p);
	}
	sb_appendc(&sb, '\'');
	return sb_take(&sb);
}

char *
srv_quote_ident(const char *s)
{
	struct strbuf sb = {0};
	sb_appendc(&sb, '"');
	for (const char *p = s; *p; p++) {
		if (*p == '"')
			sb_appendc(&sb, '"');
		sb_appendc(&sb, *p);
	}
	sb_appendc(&sb, '"');
	return sb_take(&sb);
}

static bool
has_password(const struct cfg *cfg)
{
	/* As the image's `[ -z "$POSTGRES_PASSWORD" ]`: empty means none. */
	return cfg->db_password && *cfg->db_password;
}

static const char *
host_method(const struct cfg *cfg)
{
	return cfg->host_auth_method && *cfg->host_auth_method ? cfg->host_auth_method : "scram-sha-256";
}

/* One pg_hba.conf line in initdb's columns. */
static void
hba_line(struct strbuf *sb, const char *type, const char *db, const char *address, const char *method)
{
	sb_appendf(sb, "%-7s %-15s %-15s %-23s %s\n", type, db, "all", address, method);
}

char *
srv_hba_text(const struct cfg *cfg)
{
	const char *method = host_method(cfg);
	for (const char *p = method; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			log_error("POSTGRES_HOST_AUTH_METHOD must be one line");
			return NULL;
		}
	}
	bool trust = strcmp(method, "trust") == 0;
	/*
	 * The official image trusts the socket and loopback (initdb's default):
	 * in a container only its own processes get there.  On a host every
	 * local user does, and with trust `nobody` would log in as the superuser
	 * and run COPY ... TO PROGRAM as the cluster's owner.
	 */
	const char *local = method, *loopback = method;
	switch (trust ? CFG_LOCAL_TRUST : cfg->local_auth) {
	case CFG_LOCAL_TRUST:
		local = loopback = "trust";
		break;
	case CFG_LOCAL_PEER:
		local = "peer";
		break;
	case CFG_LOCAL_PASSWORD:
		break;
	}
	struct strbuf sb = {0};
	sb_appendf(&sb,
	           "# Written by pgstash on every start, as the official image's pg_setup_hba_conf:\n"
	           "# edits here are lost.  local_auth = %s (README \"Host mode\").\n"
	           "\n",
	           cfg_local_auth_name(cfg->local_auth));
	sb_appendf(&sb, "# %-5s %-15s %-15s %-23s %s\n", "TYPE", "DATABASE", "USER", "ADDRESS", "METHOD");
	hba_line(&sb, "local", "all", "", local);
	hba_line(&sb, "host", "all", "127.0.0.1/32", loopback);
	hba_line(&sb, "host", "all", "::1/128", loopback);
	hba_line(&sb, "local", "replication", "", local);
	hba_line(&sb, "host", "replication", "127.0.0.1/32", loopback);
	hba_line(&sb, "host", "replication", "::1/128", loopback);
	sb_appendc(&sb, '\n');
	if (trust)
		sb_append(&sb, "# warning trust is enabled for all connections\n"
		               "# see https://www.postgresql.org/docs/current/auth-trust.html\n");
	sb_appendf(&sb, "host all all all %s\n", method);
	return sb_take(&sb);
}

mode_t
srv_socket_dir_mode(const struct cfg *cfg)
{
	if (strcmp(host_method(cfg), "trust") == 0 || cfg->local_auth != CFG_LOCAL_PASSWORD)
		return 03775;
	return 0750;
}

static int
write_hba(const struct cfg *cfg, bool durable)
{
	char *text = srv_hba_text(cfg);
	if (!text)
		return -1;
	char *path = path_join(cfg->pgdata, "pg_hba.conf");
	/* Without `durable` PGDATA's marker says "unsynced": a later syncfs makes it durable. */
	int rc = durable_write_file(path, text, strlen(text), 0600, durable);
	free(path);
	free(text);
	return rc;
}

/* Prints single-user mode's output with nothing that could hold the password. */
static void
print_single_user_output(const char *out, const char *password, const char *literal)
{
	struct strbuf clean = {0};
	struct strlist lines = {0};
	sl_split_lines(out, &lines);
	for (size_t i = 0; i < lines.n; i++) {
		const char *text = lines.v[i];
		while (strncmp(text, "backend> ", 9) == 0)
			text += 9;
		if (*text && !strstr(text, "STATEMENT:") && !strstr(text, password) && !strstr(text, literal) &&
		    !strstr(text, "PASSWORD")) {
			sb_append(&clean, text);
			sb_appendc(&clean, '\n');
		}
	}
	sl_free(&lines);
	print_tail("postgres --single", clean.buf, clean.len);
	sb_free(&clean);
}

/* What single-user mode may print; more is dropped (only its tail is shown). */
#define SINGLE_USER_OUTPUT_MAX (1024 * 1024)

/*
 * The argv of `postgres --single` on cfg->pgdata; --single must come first.
 * The statement goes on stdin, never argv; the log settings keep the server
 * from echoing it should it fail.  `config_file`: read instead of PGDATA's
 * postgresql.conf (a session started ahead, srv_single_start), or NULL.
 *
 * Without `durable` the cluster is not on disk yet anyway (a restore or a
 * build just wrote it, and the marker says "unsynced", see marker.h):
 * fsync=off spares the shutdown checkpoint's fsyncs; the background syncfs
 * covers what it writes, and a host crash before that means a rebuild.  A
 * cluster that is on disk keeps postgres' own fsyncs.
 *
 * One statement needs a few catalog pages: a small shared_buffers spares
 * setting up and tearing down the cluster's own (128 MB by default), a
 * quarter of the session's CPU time (20 -> 15 ms, perf stat, PG 15).  One
 * backend needs no shared memory for a hundred (the process array, the
 * lock table): 35 -> 31-33 ms a session, 20 sessions in a row, PG 15.  Only
 * the postmaster checks these settings against each other, and single-user
 * mode has none.
 */
static char **
single_user_argv(const struct cfg *cfg, const struct pgbin *pg, bool durable, const char *config_file)
{
	char *hba = xasprintf("hba_file=%s/pg_hba.conf", cfg->pgdata);
	char *ident = xasprintf("ident_file=%s/pg_ident.conf", cfg->pgdata);
	char *conf = config_file ? xasprintf("config_file=%s", config_file) : NULL;
	const char *fixed[] = {
		"--single", "-D", cfg->pgdata, "-j",
		SRV_SAFE_OVERRIDES(hba, ident),
		"-c", "exit_on_error=true",
		"-c", "log_statement=none",
		"-c", "log_min_error_statement=panic",
		"-c", "log_min_duration_statement=-1",
		"-c", "shared_buffers=1MB",
		"-c", "max_connections=1",
		"-c", "max_wal_senders=0",
		"-c", "max_worker_processes=0",
	};
	struct strlist a = {0};
	sl_add_owned(&a, pgbin_path(pg, "postgres"));
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		sl_add(&a, fixed[i]);
	if (!durable) {
		/* Else postgresql.conf's own setting, as before. */
		sl_add(&a, "-c");
		sl_add(&a, "fsync=off");
	}
	if (conf) {
		sl_add(&a, "-c");
		sl_add(&a, conf);
	}
	sl_add(&a, "postgres");
	free(hba);
	free(ident);
	free(conf);
	return a.v; /* NULL-terminated, as a strlist is: free with proc_argv_free */
}

/* What a single-user session is given, and what it printed. */
static void
single_user_capture(struct proc_capture *c, const char *sql, struct strbuf *output)
{
	*c = (struct proc_capture){.output = output};
	/* The statement is far below a pipe's capacity: one write, then EOF ends the session. */
	c->input = sql;
	c->input_len = strlen(sql);
	c->max = SINGLE_USER_OUTPUT_MAX;
	c->with_stderr = true;
	c->timeout_s = SRV_STOP_TIMEOUT_S;
}

/* Runs `sql` through a new `postgres --single` on cfg->pgdata (single_user_argv); c as single_user_capture. */
static enum proc_wait_result
run_single_user(const struct cfg *cfg, const struct pgbin *pg, bool durable, struct proc_capture *c)
{
	char **argv = single_user_argv(cfg, pg, durable, NULL);
	struct proc_opts o = {.argv = argv, .own_group = true};
	enum proc_wait_result w = proc_capture(&o, c);
	proc_argv_free(argv);
	return w;
}

/* ---- the single-user session started ahead ---- */

/* In a session's private directory: the FIFO it reads as its configuration file, then the file that replaces it. */
#define SINGLE_CONF "postgresql.conf"
#define SINGLE_CONF_NEXT "postgresql.conf.next"

void
srv_single_start(struct srv_single *s, const struct cfg *cfg, const struct pgbin *pg)
{
	*s = (struct srv_single){.p = {.in = -1, .out = -1}};
	if (!has_password(cfg))
		return;
	s->dir = make_private_dir("single");
	if (!s->dir)
		return;
	char *fifo = path_join(s->dir, SINGLE_CONF);
	char **argv = NULL;
	if (mkfifo(fifo, 0600) != 0) {
		log_debug("no single-user session ahead: could not create FIFO \"%s\": %s", fifo, strerror(errno));
		goto cleanup;
	}
	argv = single_user_argv(cfg, pg, false, fifo);
	/* Its stderr follows its stdout into the pipe; it dies with us, since it may wait for us for good. */
	struct proc_opts o = {.argv = argv, .own_group = true, .die_with_us = true, .report_start_error = true};
	o.in.io = PROC_IO_PIPE;
	o.out.io = PROC_IO_PIPE;
	if (proc_spawn(&o, &s->p) != PROC_SPAWNED) {
		s->p = (struct proc){.in = -1, .out = -1};
		log_debug("no single-user session ahead: could not start postgres");
	}
cleanup:
	proc_argv_free(argv);
	free(fifo);
	if (s->p.pid == 0)
		srv_single_cancel(s);
}

void
srv_single_cancel(struct srv_single *s)
{
	if (s->p.pid > 0) {
		kill(-s->p.pid, SIGKILL);
		int status;
		proc_wait(s->p.pid, &status, -1, 0);
		proc_close(&s->p);
	}
	s->p.pid = 0;
	if (s->dir) {
		rm_rf(s->dir);
		free(s->dir);
		s->dir = NULL;
	}
}

/*
 * The configuration file a session started ahead reads: PGDATA's, included
 * by its absolute path (a relative one would be taken from the FIFO's
 * directory), quoted as a configuration file quotes (every byte but plain
 * ones as an octal escape).  NULL when the working directory is unknown.
 */
static char *
single_conf_text(const char *pgdata)
{
	char cwd[PATH_MAX];
	if (pgdata[0] != '/' && !getcwd(cwd, sizeof(cwd)))
		return NULL;
	char *abs = pgdata[0] == '/' ? xstrdup(pgdata) : path_join(cwd, pgdata);
	char *path = path_join(abs, "postgresql.conf");
	free(abs);
	struct strbuf t = {0};
	sb_append(&t, "include '");
	for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
		if (*c >= 0x20 && *c < 0x7f && *c != '\'' && *c != '\\')
			sb_appendc(&t, (char)*c);
		else
			sb_appendf(&t, "\\%03o", *c);
	}
	free(path);
	sb_append(&t, "'\n");
	return t.buf;
}

/*
 * Lets a session started ahead read the restored (or built) cluster.  It
 * waits in open() of its FIFO configuration file, which it then reads twice
 * (postgres reads the file again once it knows PGDATA, for
 * postgresql.auto.conf).  So the FIFO is opened for writing once postgres
 * has it open (ENXIO until then), a regular file with the same text is
 * renamed over it, and only then is the text written and the FIFO closed:
 * the second open finds the file, and the two reads cannot both land in the
 * FIFO.  0, or -1 when the session cannot be used (the caller runs a new
 * one; it has not read PGDATA).
 */
static int
single_release(struct srv_single *s, const struct cfg *cfg)
{
	int rc = -1, fd = -1;
	char *fifo = path_join(s->dir, SINGLE_CONF);
	char *next = path_join(s->dir, SINGLE_CONF_NEXT);
	char *text = single_conf_text(cfg->pgdata);
	size_t len = text ? strlen(text) : 0;
	if (!text || durable_write_file(next, text, len, 0600, false) != 0)
		goto cleanup;
	double deadline = log_now() + SRV_STOP_TIMEOUT_S;
	for (;;) {
		fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0 || errno != ENXIO)
			break;
		int status;
		if (sig_child_done(s->p.pid, &status)) {
			char how[64];
			log_debug("the single-user session started ahead ended before it read its configuration: %s",
			          proc_describe_status(status, how, sizeof(how)));
			proc_close(&s->p);
			s->p.pid = 0;
			goto cleanup;
		}
		if (sig_received || log_now() > deadline)
			goto cleanup;
		nap_or_signal(1);
	}
	if (fd < 0) {
		log_debug("could not open \"%s\": %s", fifo, strerror(errno));
		goto cleanup;
	}
	if (rename(next, fifo) != 0) {
		log_debug("could not rename \"%s\": %s", next, strerror(errno));
		goto cleanup;
	}
	/* Far below PIPE_BUF into an empty pipe: one write, whole. */
	rc = proc_pipe_write(fd, text, len) == len ? 0 : -1;
cleanup:
	if (fd >= 0)
		close(fd);
	free(text);
	free(next);
	free(fifo);
	return rc;
}

/* The column single-user mode prints the other superusers in: hex of their names, one a line. */
#define SUPERUSERS_COLUMN "pgstash_superusers"

/*
 * Adds the names single-user mode printed in SUPERUSERS_COLUMN (as
 * `1: pgstash_superusers = "HEX"`; no line when there are none) to `out`.
 */
static void
parse_superusers(const char *output, struct strlist *out)
{
	const char *p = strstr(output, SUPERUSERS_COLUMN " = \"");
	if (!p)
		return;
	p += strlen(SUPERUSERS_COLUMN " = \"");
	struct strbuf names = {0};
	for (; isxdigit((unsigned char)p[0]) && isxdigit((unsigned char)p[1]); p += 2) {
		char hex[3] = {p[0], p[1], '\0'};
		char c = (char)strtol(hex, NULL, 16);
		if (c)
			sb_appendc(&names, c);
	}
	sl_split_lines(sb_str(&names), out);
	sb_free(&names);
}

/*
 * The password as the server would store it, computed here: PostgreSQL 14
 * and later make SCRAM-SHA-256 of 4096 iterations and a random 16-byte salt
 * of an ASCII password (SASLprep leaves it as it is), unless the conf files
 * say otherwise.  Single-user mode stores such a verifier as it is, so the
 * password itself never reaches the server (as set_one_time_password), and
 * its own 4096 HMAC rounds are spared: 28.1 -> 26.4 ms a session (20 in a
 * row, 4 rounds, PG 15); here they take ~0.3 ms.  NULL when the server
 * might store it otherwise: it then gets the password.  Not looked at: a
 * password_encryption set for the role or database (ALTER ROLE ... SET),
 * which single-user mode would apply; the verifier is then SCRAM where the
 * server would have made md5, and logins with the password still work.
 */
static char *
precomputed_verifier(const struct cfg *cfg, int major)
{
	if (major < 14)
		return NULL;
	for (const unsigned char *c = (const unsigned char *)cfg->db_password; *c; c++)
		if (*c >= 0x80)
			return NULL;
	static const char *const storage[] = {"password_encryption", "scram_iterations", NULL};
	if (conf_may_set(cfg->pgdata, storage))
		return NULL;
	unsigned char salt[16];
	if (getrandom(salt, sizeof(salt), 0) != (ssize_t)sizeof(salt))
		return NULL;
	char *v = xmalloc(DIGEST_SCRAM_SIZE);
	if (digest_scram_verifier(cfg->db_password, salt, sizeof(salt), 4096, v) != 0) {
		free(v);
		return NULL;
	}
	return v;
}

static int
set_password(const struct cfg *cfg, const struct pgbin *pg, bool durable, struct strlist *superusers,
             struct srv_single *ahead)
{
	int rc = -1;
	char *ident = srv_quote_ident(cfg->db_user);
	char *verifier = precomputed_verifier(cfg, pg->major);
	char *literal = srv_quote_literal(verifier ? verifier : cfg->db_password);
	char *user = srv_quote_literal(cfg->db_user);
	/*
	 * -j: a statement ends at ";" and an empty line, not at the first newline.
	 * The superusers ride on the same session: no second postgres on a hit.
	 */
	char *sql = superusers ? xasprintf("ALTER ROLE %s WITH PASSWORD %s;\n\n"
	                                   "SELECT encode(convert_to(string_agg(rolname::text, E'\\n' ORDER BY rolname), "
	                                   "'UTF8'), 'hex') AS " SUPERUSERS_COLUMN
	                                   " FROM pg_catalog.pg_authid WHERE rolsuper AND rolname <> %s;\n\n",
	                                   ident, literal, user)
	                       : xasprintf("ALTER ROLE %s WITH PASSWORD %s;\n\n", ident, literal);
	struct strbuf output = {0};
	struct proc_capture c;
	single_user_capture(&c, sql, &output);

	double t0 = log_now();
	/* Started ahead with fsync=off: for a cluster that is not on disk yet only. */
	bool was_ahead = ahead && ahead->p.pid > 0 && !durable && single_release(ahead, cfg) == 0;
	enum proc_wait_result w;
	if (was_ahead) {
		w = proc_collect(&ahead->p, &c, true);
		ahead->p.pid = 0;
	} else {
		if (ahead)
			srv_single_cancel(ahead);
		w = run_single_user(cfg, pg, durable, &c);
	}
	switch (w) {
	case PROC_EXITED:
		break;
	case PROC_TIMEOUT:
		/* Still running: its pid is its group. */
		kill(-c.pid, SIGKILL);
		proc_wait(c.pid, &c.status, -1, 0);
		log_error("setting the password in single-user mode did not finish within %.0f s", SRV_STOP_TIMEOUT_S);
		goto cleanup;
	case PROC_FAILED:
		goto cleanup;
	}
	if (!proc_exited_ok(c.status) || c.input_short) {
		char how[64];
		log_error("could not set the password of role \"%s\" in single-user mode: %s", cfg->db_user,
		          proc_describe_status(c.status, how, sizeof(how)));
		print_single_user_output(sb_str(&output), cfg->db_password, literal);
		goto cleanup;
	}
	log_debug("password of role \"%s\" set in single-user mode in %.0f ms%s%s", cfg->db_user,
	          (log_now() - t0) * 1000.0, verifier ? " (as its SCRAM-SHA-256 verifier)" : "",
	          was_ahead ? " (postgres started ahead)" : "");
	if (superusers)
		parse_superusers(sb_str(&output), superusers);
	rc = 0;
cleanup:
	/* The buffers held the password: don't leave it in freed memory. */
	explicit_bzero(sql, strlen(sql));
	explicit_bzero(literal, strlen(literal));
	if (verifier) {
		explicit_bzero(verifier, strlen(verifier));
		free(verifier);
	}
	if (output.buf)
		explicit_bzero(output.buf, output.len);
	sb_free(&output);
	free(sql);
	free(literal);
	free(user);
	free(ident);
	return rc;
}

int
srv_apply_per_start(const struct cfg *cfg, const struct pgbin *pg, bool durable, struct strlist *superusers,
                    struct srv_single *ahead)
{
	int rc = -1;
	if (write_hba(cfg, durable) == 0 && (!has_password(cfg) || set_password(cfg, pg, durable, superusers, ahead) == 0))
		rc = 0;
	if (ahead)
		srv_single_cancel(ahead);
	return rc;
}

int
srv_check_auth(const struct cfg *cfg)
{
	const char *method = host_method(cfg);
	if (!has_password(cfg) && strcmp(method, "trust") != 0) {
		log_error("the superuser password is not specified");
		log_error("set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value for the superuser, "
		          "for example \"-e POSTGRES_PASSWORD=password\" on \"docker run\"");
		log_error("you may also use \"POSTGRES_HOST_AUTH_METHOD=trust\" to allow all connections without a "
		          "password; this is *not* recommended, see https://www.postgresql.org/docs/current/auth-trust.html");
		return -1;
	}
	if (strcmp(method, "trust") == 0)
		log_warning("POSTGRES_HOST_AUTH_METHOD is \"trust\": anyone who can reach the Postgres port can connect "
		            "without a password, even if POSTGRES_PASSWORD is set; "
		            "see https://www.postgresql.org/docs/current/auth-trust.html");
	return 0;
}

/* ---- client environment ---- */

/* RFC 3986 percent-encoding; `keep` lists reserved characters allowed through. */
static void
url_encode(struct strbuf *sb, const char *s, const char *keep)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		    strchr("-._~", *p) || (keep && strchr(keep, *p)))
			sb_appendc(sb, (char)*p);
		else
			sb_appendf(sb, "%%%02X", *p);
	}
}

void
srv_client_env(const struct srv *s, const struct cfg *cfg, const char *dbname, struct strlist *env)
{
	char port[16];
	const char *user = s->user ? s->user : cfg->db_user;
	struct strbuf url = {0};

	snprintf(port, sizeof(port), "%d", s->port);
	proc_env_set(env, "PGHOST", s->sockdir);
	proc_env_set(env, "PGPORT", port);
	proc_env_set(env, "PGUSER", user);
	/* No PGPASSWORD: the socket is trusted and only the cluster's owner reaches it; a step is untrusted code. */
	proc_env_set(env, "PGDATABASE", dbname);

	sb_append(&url, "postgresql://");
	url_encode(&url, user, NULL);
	/* The host in the query: the form libpq, psycopg and SQLAlchemy all read. */
	sb_append(&url, "@/");
	url_encode(&url, dbname, NULL);
	sb_append(&url, "?host=");
	url_encode(&url, s->sockdir, "/");
	sb_appendf(&url, "&port=%s", port);
	proc_env_set(env, "DATABASE_URL", sb_str(&url));
	sb_free(&url);
}

void
srv_container_env(const struct srv *s, const struct cfg *cfg, const char *dbname, struct strlist *env)
{
	char port[16];
	const char *user = s->user ? s->user : cfg->db_user;
	struct strbuf url = {0};

	snprintf(port, sizeof(port), "%d", s->port);
	proc_env_set(env, "PGHOST", "127.0.0.1");
	proc_env_set(env, "PGPORT", port);
	proc_env_set(env, "PGUSER", user);
	/* The one-time password: never the superuser's own, which a step container must not see. */
	proc_env_set(env, "PGPASSWORD", s->password ? s->password : "");
	proc_env_set(env, "PGDATABASE", dbname);

	sb_append(&url, "postgresql://");
	url_encode(&url, user, NULL);
	if (s->password) {
		sb_appendc(&url, ':');
		url_encode(&url, s->password, NULL);
	}
	sb_appendf(&url, "@127.0.0.1:%s/", port);
	url_encode(&url, dbname, NULL);
	proc_env_set(env, "DATABASE_URL", sb_str(&url));
	explicit_bzero(url.buf, url.len);
	sb_free(&url);
}
