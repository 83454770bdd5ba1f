/*
 * fuzz_common — the scratch directory the libFuzzer harnesses share.
 *
 * Each fuzzer process makes one directory, "pgstash-fuzz-<pid>-<random>" under
 * $FUZZ_TMPDIR, else /dev/shm (tmpfs: the store fsyncs its directory on every
 * removal, which costs milliseconds per input on a disk), else /tmp, and
 * removes it at exit.  A harness writes nothing anywhere else.  A crash (and
 * a fork-mode job) ends without atexit handlers and leaves its directory
 * behind, for inspection, until the next fuzzer start sweeps it (its pid is
 * gone).
 *
 * Not for: anything that should be in src/ (the harnesses use the modules as
 * they are).
 */
#ifndef PGSTASH_FUZZ_COMMON_H
#define PGSTASH_FUZZ_COMMON_H

#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *fuzz_scratch;

/*
 * Gives the owner rwx on every directory below dfd/name, so that rm_rf can
 * remove what a successful restore made: an archive may hold a directory of
 * mode 0000, which only root can empty.  Symlinks are not followed.
 */
static void
fuzz_make_removable(int dfd, const char *name)
{
	struct stat sb;
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(sb.st_mode))
		return;
	if ((sb.st_mode & 0700) != 0700)
		fchmodat(dfd, name, (sb.st_mode & 07777) | 0700, 0);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			fuzz_make_removable(dirfd(d), de->d_name);
	closedir(d);
}

/*
 * Removes the scratch directories of fuzzer processes that are gone: a crash
 * or a fork-mode job ends without atexit handlers.  Only names of the form
 * pgstash-fuzz-<pid>-<random> whose pid no longer exists are touched.
 */
static void
fuzz_sweep_stale(const char *base)
{
	DIR *d = opendir(base);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char *end;
		if (strncmp(de->d_name, "pgstash-fuzz-", 13) != 0)
			continue;
		errno = 0;
		long pid = strtol(de->d_name + 13, &end, 10);
		if (errno || end == de->d_name + 13 || *end != '-' || pid <= 0)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		char *path = path_join(base, de->d_name);
		fuzz_make_removable(AT_FDCWD, path);
		rm_rf(path);
		free(path);
	}
	closedir(d);
}

static void
fuzz_cleanup(void)
{
	if (fuzz_scratch) {
		fuzz_make_removable(AT_FDCWD, fuzz_scratch);
		rm_rf(fuzz_scratch);
		free(fuzz_scratch);
		fuzz_scratch = NULL;
	}
}

/* Aborts with a message: the libFuzzer way to report a broken invariant. */
__attribute__((__noreturn__, format(printf, 1, 2))) static void
fuzz_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("fuzz harness: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

/* Creates the scratch directory once and silences pgstash's logging. */
static const char *
fuzz_setup(void)
{
	if (fuzz_scratch)
		return fuzz_scratch;
	/* log_v drops everything below log_min_level: above LOG_ERROR nothing is printed. */
	log_min_level = (enum log_level)(LOG_ERROR + 1);

	const char *base = getenv("FUZZ_TMPDIR");
	struct stat sb;
	if (!base || !*base)
		base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0 ? "/dev/shm"
		                                                                                        : "/tmp";
	fuzz_sweep_stale(base);
	/* mkdtemp's template: six 'X' that it replaces. */
	char rnd[7];
	memset(rnd, 'X', 6);
	rnd[6] = '\0';
	char *tmpl = xasprintf("%s/pgstash-fuzz-%ld-%s", base, (long)getpid(), rnd);
	if (!mkdtemp(tmpl))
		fuzz_die("could not create a scratch directory under \"%s\": %s", base, strerror(errno));
	fuzz_scratch = tmpl;
	atexit(fuzz_cleanup);
	return fuzz_scratch;
}

/* Writes data to `path` (created or truncated, 0600). */
static void
fuzz_write(const char *path, const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		fuzz_die("could not create \"%s\": %s", path, strerror(errno));
	while (size > 0) {
		ssize_t n = write(fd, data, size);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fuzz_die("could not write \"%s\": %s", path, strerror(errno));
		}
		data += n;
		size -= (size_t)n;
	}
	if (close(fd) != 0)
		fuzz_die("could not close \"%s\": %s", path, strerror(errno));
}

#endif
