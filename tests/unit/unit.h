/*
 * unit.h — what every cmocka unit test includes: cmocka itself (it needs
 * these system headers first) and the shared fixtures: a temp dir, writing,
 * reading and testing for a file, stderr capture, a substring assertion, a
 * dead pid, becoming the postgres user.
 */
#ifndef PGSTASH_UNIT_H
#define PGSTASH_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

/* A fresh directory under $TMPDIR (or /tmp); caller frees and may rm_rf it. */
static inline char *
unit_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *t = xasprintf("%s/pgstash-unit-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(t)) {
		fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
		abort();
	}
	return t;
}

/* Writes `content` to dir/rel, creating parent directories. */
static inline void
unit_write(const char *dir, const char *rel, const char *content)
{
	char *path = path_join(dir, rel);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	if (mkdir_p(path, 0755) != 0)
		abort();
	*slash = '/';
	FILE *f = fopen(path, "w");
	if (!f || fputs(content, f) < 0 || fclose(f) != 0)
		abort();
	free(path);
}


/* The contents of dir/rel (malloc'ed), or NULL when it cannot be read. */
static inline char *
unit_read(const char *dir, const char *rel)
{
	char *path = path_join(dir, rel);
	char *s = read_file(path, NULL);
	free(path);
	return s;
}

/* Whether dir/rel exists (a dangling symlink counts). */
static inline bool
unit_exists(const char *dir, const char *rel)
{
	char *path = path_join(dir, rel);
	struct stat st;
	bool ok = lstat(path, &st) == 0;
	free(path);
	return ok;
}

/* Fails the test unless `needle` occurs in `hay`. */
static inline void
unit_expect_contains(const char *hay, const char *needle)
{
	if (!hay || !strstr(hay, needle))
		fail_msg("expected [%s] in:\n%s", needle, hay ? hay : "(null)");
}

/* A pid that was just used and is now free (its child exited and was reaped). */
static inline pid_t
unit_dead_pid(void)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0)
		_exit(0);
	int status;
	if (waitpid(pid, &status, 0) != pid)
		abort();
	return pid;
}

/*
 * Run as root: becomes the postgres user for the rest of the process (the
 * server refuses root).  0, or -1 (said on stderr).  As another user: 0.
 */
static inline int
unit_drop_root(void)
{
	if (geteuid() != 0)
		return 0;
	struct passwd *pw = getpwnam("postgres");
	if (!pw) {
		fprintf(stderr, "running as root and there is no postgres user\n");
		return -1;
	}
	if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
		fprintf(stderr, "could not become postgres: %s\n", strerror(errno));
		return -1;
	}
	/* A uid change makes us undumpable, which LeakSanitizer needs us not to be. */
	prctl(PR_SET_DUMPABLE, 1);
	return chdir("/tmp");
}

/*
 * A test file's scratch directory: cmocka setup/teardown that make it fresh
 * for each test (unit_tmp) and remove it after.
 */
static char *unit_tmp __attribute__((unused));

static inline int
unit_tmp_setup(void **state)
{
	(void)state;
	unit_tmp = unit_tmpdir();
	return 0;
}

static inline int
unit_tmp_teardown(void **state)
{
	(void)state;
	rm_rf(unit_tmp);
	free(unit_tmp);
	unit_tmp = NULL;
	return 0;
}

/* Redirects fd 2 into a temp file until unit_stderr_end, which returns what was written (malloc'ed). */
struct unit_capture {
	int saved;
	char path[64];
};

static inline void
unit_stderr_begin(struct unit_capture *c)
{
	fflush(stderr);
	snprintf(c->path, sizeof(c->path), "/tmp/pgstash-unit-err-XXXXXX");
	int fd = mkstemp(c->path);
	if (fd < 0)
		abort();
	c->saved = dup(2);
	dup2(fd, 2);
	close(fd);
}

static inline char *
unit_stderr_end(struct unit_capture *c)
{
	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	char *s = read_file(c->path, NULL);
	unlink(c->path);
	return s ? s : xstrdup("");
}
#endif
