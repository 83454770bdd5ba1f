/*
 * durable — see durable.h.
 *
 * Why each step: the fsync before the rename puts the bytes on disk before
 * the name can point at them (else a crash may leave the new name on an
 * empty file); the fsync of the directory after it makes the rename itself
 * survive.  O_EXCL|O_NOFOLLOW: whatever sits at the temp name (a link planted
 * in a shared directory) is never written through.
 */
#include "durable.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REPORT_EVERY_S 10.0
#define MAX_NAP_MS 100

int
durable_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int random_suffix(char out[7]);

/*
 * The temp file "<name>.tmp.<6 random characters>", O_EXCL|O_NOFOLLOW: a
 * name nobody can guess ahead (a pid can be: 1 in a container), and nothing
 * planted at it is written through.  fd (the name in *tmp_out), or -1.
 */
static int
create_exclusive(int dir_fd, const char *name, mode_t mode, char **tmp_out)
{
	*tmp_out = NULL;
	for (int tries = 0; tries < 10; tries++) {
		char rnd[7];
		if (random_suffix(rnd) != 0)
			return -1;
		char *tmp = xasprintf("%s.tmp.%s", name, rnd);
		int fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
		if (fd >= 0) {
			*tmp_out = tmp;
			return fd;
		}
		free(tmp);
		if (errno != EEXIST)
			return -1;
	}
	return -1;
}

static int
sync_dir_of(int dir_fd, const char *label, const char *name)
{
	if (dir_fd == AT_FDCWD && !label)
		return fsync_parent(name);
	if (fsync(dir_fd) != 0 && errno != EINVAL) {
		log_error("could not fsync directory \"%s\": %s", label ? label : ".", strerror(errno));
		return -1;
	}
	return 0;
}

int
durable_write_at(int dir_fd, const char *label, const char *name, const char *data, size_t len, mode_t mode,
                 bool durable)
{
	char *tmp = NULL;
	int rc = -1;
	int fd = create_exclusive(dir_fd, name, mode, &tmp);
	char *shown = label ? path_join(label, tmp ? tmp : name) : xstrdup(tmp ? tmp : name);
	if (fd < 0) {
		log_error("could not create file \"%s\": %s", shown, strerror(errno));
		goto cleanup;
	}
	if (durable_write_all(fd, data, len) != 0) {
		log_error("could not write file \"%s\": %s", shown, strerror(errno));
		goto cleanup;
	}
	if (durable && fsync(fd) != 0) {
		log_error("could not fsync file \"%s\": %s", shown, strerror(errno));
		goto cleanup;
	}
	int closed = close(fd);
	fd = -1;
	if (closed != 0) {
		log_error("could not write file \"%s\": %s", shown, strerror(errno));
		goto cleanup;
	}
	if (renameat(dir_fd, tmp, dir_fd, name) != 0) {
		char *target = label ? path_join(label, name) : xstrdup(name);
		log_error("could not rename \"%s\" to \"%s\": %s", shown, target, strerror(errno));
		free(target);
		goto cleanup;
	}
	if (durable && sync_dir_of(dir_fd, label, name) != 0)
		goto cleanup;
	rc = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	if (rc != 0 && tmp)
		unlinkat(dir_fd, tmp, 0);
	free(shown);
	free(tmp);
	return rc;
}

int
durable_write_file(const char *path, const char *data, size_t len, mode_t mode, bool durable)
{
	return durable_write_at(AT_FDCWD, NULL, path, data, len, mode, durable);
}

bool
durable_same_file(int fd, const char *path)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Six random characters of [A-Za-z0-9] into out (7 bytes with the NUL).  0, or -1 (errno set). */
static int
random_suffix(char out[7])
{
	static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char r[6];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -1;
	for (size_t i = 0; i < sizeof(r); i++)
		out[i] = set[r[i] % (sizeof(set) - 1)];
	out[6] = '\0';
	return 0;
}

int
durable_tmp_create_at(int dir_fd, const char *dir, const char *prefix, const char *suffix, mode_t mode,
                      char **path_out)
{
	for (int tries = 0; tries < 10; tries++) {
		char rnd[7];
		if (random_suffix(rnd) != 0) {
			log_warning("could not create temp file in \"%s\": %s", dir, strerror(errno));
			return -1;
		}
		char *path = xasprintf("%s/%s-%s%s", dir, prefix, rnd, suffix);
		/* Relative to dir_fd: the name only; else the path. */
		const char *rel = dir_fd == AT_FDCWD ? path : strrchr(path, '/') + 1;
		int fd = openat(dir_fd, rel, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
		if (fd < 0 && errno == EEXIST) {
			free(path);
			continue;
		}
		if (fd < 0) {
			log_warning("could not create temp file in \"%s\": %s", dir, strerror(errno));
			free(path);
			return -1;
		}
		if (flock(fd, LOCK_EX) != 0 || fchmod(fd, mode) != 0) {
			log_warning("could not lock \"%s\": %s", path, strerror(errno));
			close(fd);
			unlinkat(dir_fd, rel, 0);
			free(path);
			return -1;
		}
		/* A sweep may have taken it between create and flock; it then removed it. */
		struct stat a, b;
		if (fstat(fd, &a) == 0 && fstatat(dir_fd, rel, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino) {
			*path_out = path;
			return fd;
		}
		close(fd);
		free(path);
	}
	log_warning("could not create a temp file in \"%s\" that stays put", dir);
	return -1;
}

int
durable_tmp_create(const char *dir, const char *prefix, const char *suffix, mode_t mode, char **path_out)
{
	return durable_tmp_create_at(AT_FDCWD, dir, prefix, suffix, mode, path_out);
}

enum durable_wait
durable_flock_wait(int fd, int op, long timeout_s, long first_nap_ms, durable_wait_report *report, void *arg)
{
	double start = log_now();
	double next_report = start + REPORT_EVERY_S;
	long nap_ms = first_nap_ms > 0 ? first_nap_ms : 1;
	bool first = true;

	for (;;) {
		if (flock(fd, op | LOCK_NB) == 0)
			return DURABLE_WAIT_LOCKED;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return DURABLE_WAIT_ERROR;
		double waited = log_now() - start;
		if (first && report)
			report(arg, 0, true);
		first = false;
		if (timeout_s == 0 || (timeout_s > 0 && waited >= (double)timeout_s))
			return DURABLE_WAIT_TIMEOUT;
		sig_drain();
		if (sig_received)
			return DURABLE_WAIT_SIGNAL;
		if (log_now() >= next_report) {
			if (report)
				report(arg, waited, false);
			next_report += REPORT_EVERY_S;
		}
		struct timespec ts = {nap_ms / 1000, (nap_ms % 1000) * 1000L * 1000L};
		nanosleep(&ts, NULL);
		nap_ms = nap_ms * 2 > MAX_NAP_MS ? MAX_NAP_MS : nap_ms * 2;
	}
}
