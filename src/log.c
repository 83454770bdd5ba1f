/*
 * log — formatted diagnostics on stderr, in the form of PostgreSQL's frontend
 * tools: "pgstash: error: could not open file \"x\": No such file or directory".
 */
#include "log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum log_level log_min_level = LOG_INFO;

static void
log_v(enum log_level level, bool always, const char *fmt, va_list ap)
{
	static const char *const names[] = {"debug", "info", "warning", "error"};

	if (level < log_min_level && !always)
		return;
	/* Build the whole line first: concurrent writers (steps, the server) share stderr. */
	char line[4096];
	int n = snprintf(line, sizeof(line), "pgstash: %s: ", names[level]);
	if (n < 0)
		return;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m < 0)
		return;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	fflush(stdout);
	fwrite(line, 1, len, stderr);
	fflush(stderr);
}

#define LOG_FN(fn, level)                     \
	void fn(const char *fmt, ...)             \
	{                                         \
		va_list ap;                           \
		va_start(ap, fmt);                    \
		log_v(level, false, fmt, ap);                \
		va_end(ap);                           \
	}

LOG_FN(log_error, LOG_ERROR)
LOG_FN(log_warning, LOG_WARNING)
LOG_FN(log_info, LOG_INFO)
LOG_FN(log_debug, LOG_DEBUG)

void
log_info_always(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(LOG_INFO, true, fmt, ap);
	va_end(ap);
}

noreturn void
log_fatal(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(LOG_ERROR, false, fmt, ap);
	va_end(ap);
	exit(code);
}

double
log_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *
log_bytes(char *buf, unsigned long long bytes)
{
	/* The bounds sit where rounding to one decimal would print "1000.0". */
	if (bytes < 1000ULL)
		snprintf(buf, 32, "%llu B", bytes);
	else if (bytes < 999950ULL)
		snprintf(buf, 32, "%.1f kB", (double)bytes / 1e3);
	else if (bytes < 999950000ULL)
		snprintf(buf, 32, "%.1f MB", (double)bytes / 1e6);
	else
		snprintf(buf, 32, "%.2f GB", (double)bytes / 1e9);
	return buf;
}

void
log_at(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(level, false, fmt, ap);
	va_end(ap);
}
