/*
 * marker — see marker.h.
 */
#include "marker.h"
#include "marker_int.h"
#include "durable.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BOOT_ID_PATH "/proc/sys/kernel/random/boot_id"

/* Paced write-back (mark_pace): files from 1 MiB, 8 MiB at a time; PGDATA's depth is 3 (base/OID/FILE). */
#define PACE_MIN_FILE ((off_t)1 << 20)
#define PACE_SLICE ((off_t)8 << 20)
#define PACE_MAX_DEPTH 8
/* From this many bytes in PGDATA's files, the write-back waits for the final server's start (wait_for_start). */
#define PACE_DEFER_BYTES ((uint64_t)64 << 20)
#define PACE_GRACE_MS 2000.0
#define PACE_START_MS 30000.0
/* The longest marker line: "unsynced KEY BOOT_ID". */
#define MARK_LINE_MAX (9 + MARK_KEY_MAX + 1 + MARK_BOOT_ID_LEN)

enum mark_holding
mark_holding(bool has_marker, bool has_pg_version, bool empty)
{
	if (has_marker)
		return MARK_HOLDS_MARKER;
	if (empty)
		return MARK_HOLDS_NOTHING;
	return has_pg_version ? MARK_HOLDS_FOREIGN_CLUSTER : MARK_HOLDS_FOREIGN_FILES;
}

/*
 * Opens `name` below dir_fd for reading, never through a link and never
 * blocking on a FIFO; *st its fstat.  -1 when it cannot be opened or is not
 * a regular file.
 */
static int
open_regular_at(int dir_fd, const char *name, struct stat *st)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The first size - 1 bytes at most of fd, NUL-terminated in buf: their count. */
static ssize_t
read_head_fd(int fd, char *buf, size_t size)
{
	size_t n = 0;
	while (n < size - 1) {
		ssize_t r = read(fd, buf + n, size - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	return (ssize_t)n;
}

/*
 * The first size - 1 bytes at most of the regular file `name` below dir_fd,
 * NUL-terminated in buf: never through a link, never blocking on a FIFO
 * (anything but a regular file reads as empty).  -1 when it cannot be opened.
 */
static ssize_t
read_head_at(int dir_fd, const char *name, char *buf, size_t size)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	ssize_t n = 0;
	buf[0] = '\0';
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		n = read_head_fd(fd, buf, size);
	close(fd);
	return n;
}

/* A regular file `name` in dir_fd, a link not followed. */
static bool
has_regular_file(int dir_fd, const char *name)
{
	struct stat st;
	return fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* A key as a marker names it: 1 to MARK_KEY_MAX printable characters, no blank. */
static bool
is_key(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MARK_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

bool
mark_parse_line(const char *line)
{
	char key[MARK_KEY_MAX + 1], boot[MARK_BOOT_ID_LEN + 1];
	/* Empty: a marker torn by a crash before it was synced (pgdata redoes it). */
	if (!*line || mark_parse_unsynced(line, key, boot))
		return true;
	if (strncmp(line, "building ", 9) == 0)
		return is_key(line + 9);
	if (strncmp(line, "restoring ", 10) == 0)
		return is_key(line + 10);
	return is_key(line);
}

/*
 * Whether dir_fd holds pgstash's marker, and nobody else's file by that name:
 * `pgstash keygen` writes NAME.key (a directory of secrets may hold a
 * pgstash.key), and whoever may write to the directory (a sticky /tmp) may
 * plant one.  So only one line that parses as a marker, in a regular file of
 * one link owned by the directory's owner, in a directory that not everybody
 * may write to.  Group write is allowed: Kubernetes' fsGroup gives a volume's
 * tree g+rwx again at every mount (pgstash sets 0700 when it hands PGDATA
 * over, as the official entrypoint does), and a group member's planted file
 * is not the directory owner's.  Then `line` holds it, without its newline.
 */
static bool
read_marker(int dir_fd, char line[MARK_LINE_MAX + 2])
{
	struct stat dir, st;
	if (fstat(dir_fd, &dir) != 0 || (dir.st_mode & S_IWOTH) != 0)
		return false;
	int fd = open_regular_at(dir_fd, MARK_FILE, &st);
	if (fd < 0)
		return false;
	bool ok = st.st_nlink == 1 && st.st_uid == dir.st_uid && st.st_size <= MARK_LINE_MAX + 1;
	ssize_t n = ok ? read_head_fd(fd, line, MARK_LINE_MAX + 2) : -1;
	close(fd);
	if (n < 0 || (size_t)n != strlen(line))
		return false;
	/* One line, its newline optional: nothing after it. */
	size_t end = strcspn(line, "\n");
	if (line[end] == '\n' && line[end + 1] != '\0')
		return false;
	line[end] = '\0';
	return mark_parse_line(line);
}

char *
mark_read(const char *pgdata)
{
	int dir_fd = open(pgdata, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return NULL;
	char line[MARK_LINE_MAX + 2];
	bool ok = read_marker(dir_fd, line);
	close(dir_fd);
	return ok ? xstrdup(line) : NULL;
}

enum mark_holding
mark_dir_holding(int dir_fd)
{
	/* Read through a descriptor of its own: readdir moves the position of the one it is given. */
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return MARK_HOLDS_FOREIGN_FILES;
	}
	bool empty = true;
	struct dirent *de;
	while (empty && (de = readdir(d)) != NULL)
		empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
	closedir(d);
	char line[MARK_LINE_MAX + 2];
	return mark_holding(read_marker(dir_fd, line), has_regular_file(dir_fd, "PG_VERSION"), empty);
}

void
mark_log_refusal(const char *dir, enum mark_holding h)
{
	if (h == MARK_HOLDS_FOREIGN_CLUSTER)
		log_error("PGDATA \"%s\" holds a database cluster that pgstash did not create: refusing to touch it "
		          "(use an empty directory or volume, or remove it yourself)",
		          dir);
	else if (h == MARK_HOLDS_FOREIGN_FILES)
		log_error("PGDATA \"%s\" is not empty and holds no database cluster: refusing to touch it", dir);
}

int
mark_write(const char *pgdata, const char *line, bool durable)
{
	char *p = path_join(pgdata, MARK_FILE);
	char *text = xasprintf("%s\n", line);
	int rc = durable_write_file(p, text, strlen(text), 0600, durable);
	free(text);
	free(p);
	return rc;
}

static bool
is_boot_id(const char *s, size_t n)
{
	if (n != MARK_BOOT_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i]) || !s[i])
			return false;
	}
	return true;
}

int
mark_boot_id(char out[MARK_BOOT_ID_LEN + 1])
{
	char *text = read_file(BOOT_ID_PATH, NULL);
	if (!text)
		return -1;
	size_t n = strcspn(text, "\n");
	int rc = is_boot_id(text, n) ? 0 : -1;
	if (rc == 0) {
		memcpy(out, text, n);
		out[n] = '\0';
	}
	free(text);
	return rc;
}

bool
mark_parse_unsynced(const char *line, char key[MARK_KEY_MAX + 1], char boot_id[MARK_BOOT_ID_LEN + 1])
{
	if (strncmp(line, "unsynced ", 9) != 0)
		return false;
	const char *k = line + 9;
	size_t kn = strcspn(k, " ");
	if (kn == 0 || kn > MARK_KEY_MAX || k[kn] != ' ')
		return false;
	const char *b = k + kn + 1;
	if (!is_boot_id(b, strlen(b)))
		return false;
	memcpy(key, k, kn);
	key[kn] = '\0';
	memcpy(boot_id, b, MARK_BOOT_ID_LEN + 1);
	return true;
}

/* ---------- the lock ---------- */

struct lock_wait {
	const char *pgdata;
	bool said; /* we had to wait */
};

static void
lock_report(void *arg, double waited, bool first)
{
	struct lock_wait *w = arg;
	w->said = true;
	if (first)
		log_debug("PGDATA \"%s\" is locked (by its background sync, or by another start): waiting", w->pgdata);
	else
		log_info("waiting for another pgstash process on PGDATA \"%s\" (%.0f s)", w->pgdata, waited);
}

enum mark_lock_result
mark_lock(const char *pgdata, long timeout_s, int *fd_out)
{
	*fd_out = -1;
	int fd = open(pgdata, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		log_error("could not open PGDATA \"%s\": %s", pgdata, strerror(errno));
		return MARK_LOCK_ERROR;
	}
	struct lock_wait w = {.pgdata = pgdata};
	double start = log_now();
	/* The usual holder is a syncer with tens of milliseconds to go: short naps first. */
	switch (durable_flock_wait(fd, LOCK_EX, timeout_s, 1, lock_report, &w)) {
	case DURABLE_WAIT_LOCKED:
		break;
	case DURABLE_WAIT_TIMEOUT:
		close(fd);
		return MARK_LOCK_TIMEOUT;
	case DURABLE_WAIT_SIGNAL:
		log_error("stopped waiting for the lock on PGDATA \"%s\": signal %d received", pgdata, (int)sig_received);
		close(fd);
		return MARK_LOCK_ERROR;
	case DURABLE_WAIT_ERROR:
		/* EBADF: NFS turns flock into a POSIX lock, which a read-only descriptor cannot take. */
		if (errno == ENOLCK || errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL || errno == EBADF) {
			log_debug("no flock on PGDATA \"%s\" (%s): its sync is not deferred", pgdata, strerror(errno));
			close(fd);
			return MARK_LOCKED;
		}
		log_error("could not lock PGDATA \"%s\": %s", pgdata, strerror(errno));
		close(fd);
		return MARK_LOCK_ERROR;
	}
	double waited = log_now() - start;
	if (w.said)
		log_debug("waited %.0f ms for the lock on PGDATA", waited * 1000.0);
	*fd_out = fd;
	return MARK_LOCKED;
}

/* ---------- syncing ---------- */

/*
 * syncfs() of dir_fd's file system and, when pg_wal is a link, of pg_wal's.
 * 0, or -1 with errno set and *what naming the step that failed.
 */
static int
sync_fs(int dir_fd, const char **what)
{
	if (syncfs(dir_fd) != 0) {
		*what = "sync the file system of";
		return -1;
	}
	struct stat st;
	/* pg_wal is only elsewhere when initdb --waldir made it a symlink. */
	if (fstatat(dir_fd, "pg_wal", &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISLNK(st.st_mode))
		return 0;
	int wal = openat(dir_fd, "pg_wal", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (wal < 0) {
		*what = "open pg_wal of";
		return -1;
	}
	int rc = syncfs(wal);
	int e = errno;
	close(wal);
	errno = e;
	if (rc != 0)
		*what = "sync the file system of pg_wal of";
	return rc;
}

int
mark_sync(const char *pgdata)
{
	double t0 = log_now();
	int fd = open(pgdata, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		log_error("could not open directory \"%s\": %s", pgdata, strerror(errno));
		return -1;
	}
	const char *what = NULL;
	int rc = sync_fs(fd, &what);
	if (rc != 0)
		log_error("could not %s \"%s\": %s", what, pgdata, strerror(errno));
	close(fd);
	log_debug("synced \"%s\" in %.0f ms", pgdata, (log_now() - t0) * 1000.0);
	return rc;
}

/* The marker's first line, read through dir_fd; NULL when there is none. */
static char *
read_at(int dir_fd)
{
	char buf[256];
	if (read_head_at(dir_fd, MARK_FILE, buf, sizeof(buf)) < 0)
		return NULL;
	buf[strcspn(buf, "\n")] = '\0';
	return xstrdup(buf);
}

/* What a pace_dir walk adds up. */
struct pace_sum {
	uint64_t large; /* bytes of files from PACE_MIN_FILE: the ones written back in slices */
	uint64_t all;   /* bytes of every regular file */
};

/*
 * Paced write-back: the large files under dir_fd (not following links), one
 * slice at a time, each written and waited for before the next is started.
 *
 * Why: on ext4 (data=ordered, delayed allocation) a syncfs of a fresh PGDATA
 * allocates the blocks of all its dirty pages at once, and every page of them
 * joins the running journal transaction, so any fsync made meanwhile (the
 * final server's start fsyncs postmaster.pid within its first milliseconds)
 * waits until all of it is on disk: 0.6-2.5 s behind 800 MB of `pgbench -s
 * 50` in `strace -f -T` of the start.  Pages nobody asked to write have no
 * blocks yet and hold no commit back, which is why `tar -x` and then a start
 * is not slowed down.  A slice at a time, a commit waits for one slice at
 * most.  The syncfs after it still makes everything durable (this writes no
 * metadata); a failure here only leaves more work for it.
 */
static void
pace_dir(int dir_fd, int depth, bool write, struct pace_sum *sum)
{
	DIR *d = fdopendir(dir_fd);
	if (!d) {
		close(dir_fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0')))
			continue;
		unsigned char type = e->d_type;
		struct stat lst;
		/* Some file systems do not say: ask (without following a link). */
		if (type == DT_UNKNOWN && fstatat(dirfd(d), e->d_name, &lst, AT_SYMLINK_NOFOLLOW) == 0)
			type = S_ISDIR(lst.st_mode) ? DT_DIR : S_ISREG(lst.st_mode) ? DT_REG : DT_UNKNOWN;
		if (type == DT_DIR) {
			if (depth < PACE_MAX_DEPTH) {
				int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				if (sub >= 0)
					pace_dir(sub, depth + 1, write, sum);
			}
			continue;
		}
		if (type != DT_REG)
			continue;
		/* O_NONBLOCK: should a FIFO have taken the file's place meanwhile. */
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		struct stat st;
		if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
			st.st_size = 0;
		sum->all += (uint64_t)st.st_size;
		if (st.st_size >= PACE_MIN_FILE)
			sum->large += (uint64_t)st.st_size;
		else
			st.st_size = 0;
		if (write)
			for (off_t off = 0; off < st.st_size; off += PACE_SLICE)
				if (sync_file_range(fd, off, PACE_SLICE,
				                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				                        SYNC_FILE_RANGE_WAIT_AFTER) != 0)
					break;
		close(fd);
	}
	closedir(d);
}

uint64_t
mark_pace(int dir_fd, bool write, uint64_t *all_bytes)
{
	struct pace_sum sum = {0};
	/* A descriptor of its own: fdopendir's reads move the offset, and dir_fd stays usable. */
	int own = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (own >= 0)
		pace_dir(own, 0, write, &sum);
	if (all_bytes)
		*all_bytes = sum.all;
	return sum.large;
}

enum mark_server_state
mark_server_state(int dir_fd)
{
	char buf[1024];
	if (read_head_at(dir_fd, "postmaster.pid", buf, sizeof(buf)) < 0)
		return MARK_SERVER_NONE;
	/* Line 8 (PostgreSQL 10 and later): "starting", "stopping", "ready   ", "standby ". */
	const char *line = buf;
	for (int i = 0; i < 7 && line; i++) {
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	if (!line || !*line || strncmp(line, "starting", 8) == 0)
		return MARK_SERVER_STARTING;
	return MARK_SERVER_UP;
}

/*
 * Waits, before writing anything back, while the final server is (about to
 * be) starting: up to PACE_GRACE_MS for its postmaster.pid to appear (`run`
 * execs postgres right after forking us; a `prepare` is usually followed by
 * a start), then up to PACE_START_MS for it to say "ready".  On ext4 a start
 * makes a few fsyncs, each a journal commit that waits for whatever data
 * write-back the commit has to order, and on a device whose cache flush
 * covers everything written so far (a loop file, a VM's disk) for that too.
 */
static void
wait_for_start(int dir_fd)
{
	double t0 = log_now();
	for (;;) {
		double ms = (log_now() - t0) * 1000.0;
		enum mark_server_state s = mark_server_state(dir_fd);
		if (s == MARK_SERVER_UP || (s == MARK_SERVER_NONE && ms >= PACE_GRACE_MS) || ms >= PACE_START_MS)
			return;
		struct timespec nap = {0, 10 * 1000 * 1000};
		nanosleep(&nap, NULL);
	}
}

enum mark_confirm_result
mark_confirm(int dir_fd, const char *expect, const char *key)
{
	const char *what = NULL;
	if (sync_fs(dir_fd, &what) != 0) {
		log_warning("background sync: could not %s PGDATA: %s; its marker stays \"unsynced\" (a start after a "
		            "reboot rebuilds it)",
		            what, strerror(errno));
		return MARK_CONFIRM_FAILED;
	}
	/* Someone may have replaced PGDATA meanwhile (a start that did not wait for the lock: no flock). */
	char *now = read_at(dir_fd);
	bool same = now && strcmp(now, expect) == 0;
	free(now);
	if (!same)
		return MARK_CONFIRM_CHANGED;
	/* Through dir_fd: the locked directory itself, whatever now sits at its path. */
	char *line = xasprintf("%s\n", key);
	int rc = durable_write_at(dir_fd, "PGDATA", MARK_FILE, line, strlen(line), 0600, true);
	free(line);
	if (rc != 0) {
		log_warning("background sync: PGDATA is on disk, but its marker stays \"unsynced\" (a start after a "
		            "reboot rebuilds it)");
		return MARK_CONFIRM_FAILED;
	}
	return MARK_CONFIRMED;
}

/* ---------- the background process ---------- */

/* Closes every descriptor from 3 up except `keep`. */
static void
close_other_fds(int keep)
{
	if ((keep <= 3 || close_range(3, (unsigned)keep - 1, 0) == 0) && close_range((unsigned)keep + 1, ~0U, 0) == 0)
		return;
	/* Kernels before 5.9. */
	long max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (int fd = 3; fd < (int)max; fd++)
		if (fd != keep)
			close(fd);
}

/*
 * The syncer: in its own session (no terminal's or process group's signal
 * reaches it), deaf to the terminating signals and to SIGPIPE, holding only
 * the lock (dir_fd) and maybe stderr.  Under `run` its parent is, or becomes,
 * postgres, whose reaper takes a child it does not know that dies by a
 * signal or exits non-zero for a crashed backend and restarts the cluster:
 * so whatever happens it ends with _exit(0), and failures are warnings.
 */
static noreturn void
syncer(int dir_fd, const char *expect, const char *key, bool keep_stderr, bool server_follows)
{
	sig_child_reset(); /* the signalfd is closed, the mask is what we were started with */
	struct sigaction ign = {.sa_handler = SIG_IGN};
	sigemptyset(&ign.sa_mask);
	const int deaf[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof(deaf) / sizeof(deaf[0]); i++)
		sigaction(deaf[i], &ign, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_NAME, "pgstash-sync", 0, 0, 0);

	if (dir_fd < 3) {
		int moved = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
		if (moved < 0)
			_exit(0);
		dir_fd = moved;
	}
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, STDIN_FILENO);
		dup2(devnull, STDOUT_FILENO);
		if (!keep_stderr)
			dup2(devnull, STDERR_FILENO);
	}
	close_other_fds(dir_fd);

	double t0 = log_now();
	/*
	 * After `prepare` only a PGDATA of PACE_DEFER_BYTES or more waits (it holds
	 * the lock while it waits, and a start may not follow; below that its
	 * syncfs takes tens of milliseconds).  Before a server that `run` execs
	 * right now every one does: even 60 MB of small files written back during
	 * the start delayed its first connection by ~40 ms on a journaled ext4
	 * (dj-200: 0.10 s against 0.06 s after tar -x), and dj-800's 105 MB of
	 * small files pushed `pg_ctl start -w` past its first 100 ms tick.
	 */
	uint64_t all = 0;
	uint64_t big = mark_pace(dir_fd, false, &all);
	bool defer = all >= PACE_DEFER_BYTES || server_follows;
	if (defer)
		wait_for_start(dir_fd);
	double waited = log_now() - t0;
	mark_pace(dir_fd, true, NULL);
	double paced = log_now() - t0 - waited;
	if (big > 0 || defer)
		log_debug("background sync (pid %ld): waited %.0f ms for the server's start, wrote %.0f MB of large files "
		          "back in %.0f ms",
		          (long)getpid(), waited * 1000.0, (double)big / 1e6, paced * 1000.0);
	enum mark_confirm_result r = mark_confirm(dir_fd, expect, key);
	if (r == MARK_CONFIRMED)
		log_debug("background sync (pid %ld) of PGDATA done in %.0f ms: its marker is final", (long)getpid(),
		          (log_now() - t0) * 1000.0);
	else if (r == MARK_CONFIRM_CHANGED)
		log_debug("background sync (pid %ld) of PGDATA done in %.0f ms; its marker changed meanwhile, so it is "
		          "left alone",
		          (long)getpid(), (log_now() - t0) * 1000.0);
	fflush(stderr);
	_exit(0);
}

int
mark_finish(const char *pgdata, const char *key, int lock_fd, bool keep_stderr, bool server_follows)
{
	char boot[MARK_BOOT_ID_LEN + 1];
	char *line = NULL;
	int rc = -1;

	if (lock_fd < 0) {
		log_debug("PGDATA is not locked: syncing it now");
		goto now;
	}
	if (mark_boot_id(boot) != 0) {
		log_debug("no boot id in \"%s\": syncing PGDATA now", BOOT_ID_PATH);
		goto now;
	}
	line = xasprintf("unsynced %s %s", key, boot);
	if (mark_write(pgdata, line, false) != 0)
		goto cleanup;

	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		log_warning("could not start the background sync of PGDATA (fork: %s): syncing now", strerror(errno));
		goto now;
	}
	if (pid == 0) {
		/*
		 * A go-between, reaped below before we return or exec: its child,
		 * the syncer, is nobody's to wait for (PID 1, or the nearest
		 * subreaper, adopts it), which `prepare` needs to return at once.
		 */
		if (setsid() < 0)
			_exit(1);
		pid_t gc = fork();
		if (gc == 0)
			syncer(lock_fd, line, key, keep_stderr, server_follows);
		_exit(gc < 0 ? 1 : 0);
	}
	sig_track(pid);
	int status = 0;
	if (sig_wait_child(pid, &status, -1, 0) != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_warning("could not start the background sync of PGDATA: syncing now");
		goto now;
	}
	log_info("PGDATA is flushed to disk in the background (its marker says \"unsynced\" until then)");
	rc = 0;
	goto cleanup;

now:
	/*
	 * No fsync of the marker itself: should a crash lose it, the one before
	 * ("unsynced" of that boot, "restoring", "building") makes the next start
	 * rebuild.
	 */
	if (mark_sync(pgdata) == 0 && mark_write(pgdata, key, false) == 0)
		rc = 0;
cleanup:
	free(line);
	return rc;
}
