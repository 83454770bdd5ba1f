/*
 * util — small helpers every module needs: checked allocation, a growable
 * string, a string list, strict number parsing, and the file-system chores
 * (mkdir -p, rm -rf, fsync of a directory) that must be done carefully once.
 *
 * Not for: anything with policy.  Allocation failure aborts (the process is a
 * short-lived entrypoint; there is nothing sensible to roll back to).
 */
#ifndef PGSTASH_UTIL_H
#define PGSTASH_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>

/* Never return NULL: out of memory aborts with a message. Caller frees. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Returns a malloc'ed string formatted like printf. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable NUL-terminated byte string; zero-initialise, free with sb_free. */
struct strbuf {
	char *buf;
	size_t len;
	size_t cap;
};
void sb_append(struct strbuf *sb, const char *s);
void sb_appendn(struct strbuf *sb, const char *s, size_t n);
void sb_appendf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_appendc(struct strbuf *sb, char c);
/* Returns the buffer ("" when empty, never NULL); the strbuf still owns it. */
const char *sb_str(const struct strbuf *sb);
/* Hands the buffer to the caller (never NULL) and resets the strbuf. */
char *sb_take(struct strbuf *sb);
void sb_free(struct strbuf *sb);

/* A NULL-terminated, growable array of owned strings; zero-initialise. */
struct strlist {
	char **v; /* v[n] == NULL once anything was added */
	size_t n;
	size_t cap;
};
void sl_add(struct strlist *sl, const char *s);     /* copies s */
void sl_add_owned(struct strlist *sl, char *s);     /* takes s */
bool sl_contains(const struct strlist *sl, const char *s);
/* Whether s is one of v's strings (NULL-terminated; NULL: none). */
bool str_in(const char *const *v, const char *s);
/* Whether s ends in suffix; in one of v's strings (NULL-terminated). */
bool str_ends_with(const char *s, const char *suffix);
bool str_ends_in(const char *const *v, const char *s);
/* Adds the lines of `text` (without their newlines) to `out`. */
void sl_split_lines(const char *text, struct strlist *out);
void sl_free(struct strlist *sl);

/*
 * Strict parsers: the whole string must be the number (surrounding blanks not
 * allowed), in range.  Return 0 on success, -1 with *why set to a static
 * explanation otherwise.
 */
int parse_long(const char *s, long min, long max, long *out, const char **why);
/* "10G", "512M", "1024", "1.5G"? no: integer with optional K/M/G/T (binary). */
int parse_size(const char *s, uint64_t *out, const char **why);
/* Decimal digits only (no sign, no blanks), in range of uint64_t: 0, or -1 (NULL too). */
int parse_u64(const char *s, uint64_t *out);
/* yes/no/true/false/on/off/1/0, case-insensitive. */
int parse_bool(const char *s, bool *out, const char **why);

/* Lowercase hex of `len` bytes into out (2*len+1 bytes). */
void hex_encode(const unsigned char *in, size_t len, char *out);

/* mkdir -p with `mode` for created components; 0 or -1 (logged). */
int mkdir_p(const char *path, mode_t mode);
/*
 * mkdir -p without logging: 0, or -1 with errno set (ENOTDIR: path exists
 * but is no directory) and *failed_at (optional, malloc'ed) the component
 * whose mkdir failed, NULL when it was the final check.
 */
int mkdir_p_quiet(const char *path, mode_t mode, char **failed_at);
/*
 * Removes `path` and everything below it without following symlinks; a missing
 * path is success.  0 or -1 (logged).
 */
/* rm_rf of `name` under the open directory `parent` (AT_FDCWD: a path); never follows a link.  `shown` names it in messages. */
int rm_rf_at(int parent, const char *name, const char *shown);
int rm_rf(const char *path);
/* Removes everything inside directory `path`, keeping the directory. */
int empty_dir(const char *path);
/* true if `path` is a directory with no entries (or does not exist when missing_ok). */
bool dir_is_empty(const char *path);
/* open(O_DIRECTORY)+fsync; 0 or -1 (logged). */
int fsync_dir(const char *path);
/* fsync the directory containing `path`. */
int fsync_parent(const char *path);
/* Reads a whole (small) file; NUL-terminated, *len_out optional. NULL on error (errno set, not logged). */
char *read_file(const char *path, size_t *len_out);
/*
 * read_file for a file others may have planted (a cache entry's meta, PGDATA's
 * marker, the state file): never through a symbolic link (ELOOP), regular
 * files only (EINVAL: a FIFO does not hang us), at most `max` bytes (EFBIG).
 * NULL with errno set; read_small_file_error says it in words.
 */
#define SMALL_FILE_MAX (1024 * 1024)
char *read_small_file(const char *path, size_t max, size_t *len_out);
const char *read_small_file_error(int err);
/*
 * A secret named by a variable (POSTGRES_PASSWORD_FILE, PGSTASH_KEY_SECRET_FILE, …):
 * links are followed (Docker's and Kubernetes' secrets are links), but only
 * a regular file of at most `max` bytes is read, never blocking on a FIFO,
 * and no copy is left in freed memory.  The caller wipes it.  NULL with
 * errno set (read_small_file_error says it in words).
 */
#define SECRET_FILE_MAX (64 * 1024)
char *read_secret_file(const char *path, size_t max, size_t *len_out);
/* "2026-11-21T10:18:30Z" (UTC) for unix seconds t into buf; the number itself if out of range.  Returns buf. */
const char *iso_time(char buf[32], int64_t t);

/*
 * A time that splits file changes in two, by their ctimes: every change made
 * before the call is stamped before it, every change made after the return
 * at or after it.  The kernel stamps a change with its coarse clock, or with
 * a fine-grained reading (multigrain timestamps, Linux 6.13+) that can run a
 * tick ahead of CLOCK_REALTIME_COARSE; so the mark is a fine reading, and the
 * call waits (a tick, a few ms) until the coarse clock has passed it.
 */
struct timespec ctime_mark(void);

/* a < b */
bool ts_before(struct timespec a, struct timespec b);

/*
 * The Levenshtein distance between a and b (insertions, deletions,
 * substitutions), for "did you mean" hints; SIZE_MAX when either is longer
 * than 64 bytes (far from any name worth suggesting).
 */
size_t edit_distance(const char *a, const char *b);

/*
 * The setting a postgresql.conf line sets, lowercased into out (cap bytes;
 * "" for a comment, a blank line or no name): the name at the start of the
 * line after blanks, as the server's own parser reads it.  Returns its length.
 */
size_t conf_setting_name(const char *line, char *out, size_t cap);
/*
 * Reads the next line of a conf file from f, to its end whatever its
 * length, and puts the name it sets (or includes) into out as
 * conf_setting_name does.  *known is false when that name could not be read
 * whole (the blanks and name at the line's start ran past the line buffer,
 * 1 KiB, or the name past `cap`), the line holds a NUL, or reading failed
 * (a read error is one last line, unknown, so that what was never read is
 * not taken for a clean end): a caller then assumes the worst.  (Read a
 * buffer at a time, a name cut in two, "shared_preload_librar" + "ies",
 * would pass as two harmless ones.)  false at the end of the file, and
 * after a read error's line.  `whole` (optional) gets the line without its
 * newline, as far as the line buffer holds it.
 */
bool conf_next_setting(FILE *f, char *out, size_t cap, bool *known, struct strbuf *whole);

/* Returns a malloc'ed "a/b", dropping a duplicate slash. */
char *path_join(const char *a, const char *b);

#endif
