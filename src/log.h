/*
 * log — the one place messages reach stderr.
 *
 * Every message is "pgstash: LEVEL: text" on stderr; program output (a key, a
 * listing) goes to stdout and never through here.  The level is the only
 * global besides the signal state.
 */
#ifndef PGSTASH_LOG_H
#define PGSTASH_LOG_H

#include <stdarg.h>
#include <stdnoreturn.h>

enum log_level {
	LOG_DEBUG = 0,
	LOG_INFO = 1,
	LOG_WARNING = 2,
	LOG_ERROR = 3,
};

/* Messages below this level are dropped.  Default LOG_INFO; -v lowers, -q raises. */
extern enum log_level log_min_level;

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* At a level chosen at run time. */
void log_at(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An info line that -q does not drop: one that clients wait for (bootstrap's ready line). */
void log_info_always(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs at error level and exits with `code`; for the front end only. */
noreturn void log_fatal(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Monotonic seconds, for phase timings. */
double log_now(void);

/* Writes "N.N kB/MB/GB" for `bytes` into buf (at least 32 bytes); returns buf. */
const char *log_bytes(char *buf, unsigned long long bytes);

#endif
