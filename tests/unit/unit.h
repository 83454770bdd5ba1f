/*
 * unit.h — what every cmocka unit test includes: cmocka itself (it needs
 * these system headers first) and a few fixture helpers.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
