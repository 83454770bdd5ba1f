/*
 * util — see util.h.
 */
#include "util.h"
#include "log.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void
oom(void)
{
	fputs("pgstash: error: out of memory\n", stderr);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom();
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom();
	return q;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		oom();
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	struct strbuf sb = {0};
	va_list ap;
	va_start(ap, fmt);
	char tmp[256];
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		oom();
	if ((size_t)n < sizeof(tmp))
		return xstrdup(tmp);
	sb.cap = (size_t)n + 1;
	sb.buf = xmalloc(sb.cap);
	va_start(ap, fmt);
	vsnprintf(sb.buf, sb.cap, fmt, ap);
	va_end(ap);
	return sb.buf;
}

static void
sb_grow(struct strbuf *sb, size_t more)
{
	if (sb->len + more + 1 <= sb->cap)
		return;
	size_t cap = sb->cap ? sb->cap : 64;
	while (cap < sb->len + more + 1)
		cap *= 2;
	sb->buf = xrealloc(sb->buf, cap);
	sb->cap = cap;
}

void
sb_appendn(struct strbuf *sb, const char *s, size_t n)
{
	sb_grow(sb, n);
	memcpy(sb->buf + sb->len, s, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
}

void
sb_append(struct strbuf *sb, const char *s)
{
	sb_appendn(sb, s, strlen(s));
}

void
sb_appendc(struct strbuf *sb, char c)
{
	sb_appendn(sb, &c, 1);
}

void
sb_appendf(struct strbuf *sb, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		oom();
	if ((size_t)n < sizeof(tmp)) {
		sb_appendn(sb, tmp, (size_t)n);
		return;
	}
	sb_grow(sb, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

const char *
sb_str(const struct strbuf *sb)
{
	return sb->buf ? sb->buf : "";
}

char *
sb_take(struct strbuf *sb)
{
	char *p = sb->buf ? sb->buf : xstrdup("");
	sb->buf = NULL;
	sb->len = sb->cap = 0;
	return p;
}

void
sb_free(struct strbuf *sb)
{
	free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->cap = 0;
}

void
sl_add_owned(struct strlist *sl, char *s)
{
	if (sl->n + 2 > sl->cap) {
		sl->cap = sl->cap ? sl->cap * 2 : 8;
		sl->v = xrealloc(sl->v, sl->cap * sizeof(char *));
	}
	sl->v[sl->n++] = s;
	sl->v[sl->n] = NULL;
}

void
sl_add(struct strlist *sl, const char *s)
{
	sl_add_owned(sl, xstrdup(s));
}

bool
sl_contains(const struct strlist *sl, const char *s)
{
	for (size_t i = 0; i < sl->n; i++)
		if (strcmp(sl->v[i], s) == 0)
			return true;
	return false;
}

bool
str_in(const char *const *v, const char *s)
{
	for (; v && *v; v++)
		if (strcmp(*v, s) == 0)
			return true;
	return false;
}

bool
str_ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

bool
str_ends_in(const char *const *v, const char *s)
{
	for (; v && *v; v++)
		if (str_ends_with(s, *v))
			return true;
	return false;
}

void
sl_split_lines(const char *text, struct strlist *out)
{
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		char *line = xmalloc(n + 1);
		memcpy(line, p, n);
		line[n] = '\0';
		sl_add_owned(out, line);
		p += n + (nl ? 1 : 0);
	}
}

void
sl_free(struct strlist *sl)
{
	for (size_t i = 0; i < sl->n; i++)
		free(sl->v[i]);
	free(sl->v);
	sl->v = NULL;
	sl->n = sl->cap = 0;
}

int
parse_long(const char *s, long min, long max, long *out, const char **why)
{
	char *end;

	if (!s || !*s) {
		*why = "empty value, expected a whole number";
		return -1;
	}
	if (isspace((unsigned char)*s)) {
		*why = "expected a whole number";
		return -1;
	}
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end != '\0') {
		*why = "expected a whole number";
		return -1;
	}
	if (errno == ERANGE || v < min || v > max) {
		*why = "number out of range";
		return -1;
	}
	*out = v;
	return 0;
}

int
parse_size(const char *s, uint64_t *out, const char **why)
{
	char *end;

	if (!s || !*s || !isdigit((unsigned char)*s)) {
		*why = "expected a size such as 512M, 10G or 1073741824";
		return -1;
	}
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno == ERANGE) {
		*why = "size out of range";
		return -1;
	}
	unsigned shift = 0;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'K': shift = 10; break;
		case 'M': shift = 20; break;
		case 'G': shift = 30; break;
		case 'T': shift = 40; break;
		default:
			*why = "expected a size such as 512M, 10G or 1073741824 (suffixes K, M, G, T; binary)";
			return -1;
		}
		end++;
		/* Accept "10G", "10GB", "10GiB" alike. */
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end) {
			*why = "expected a size such as 512M, 10G or 1073741824 (suffixes K, M, G, T; binary)";
			return -1;
		}
	}
	if (shift && v > (UINT64_MAX >> shift)) {
		*why = "size out of range";
		return -1;
	}
	*out = (uint64_t)v << shift;
	return 0;
}

int
parse_u64(const char *s, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

int
parse_bool(const char *s, bool *out, const char **why)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	*why = "expected yes or no";
	return -1;
}

void
hex_encode(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int
mkdir_p_quiet(const char *path, mode_t mode, char **failed_at)
{
	char *p = xstrdup(path);
	int rc = 0;

	if (failed_at)
		*failed_at = NULL;
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, mode) != 0 && errno != EEXIST) {
			rc = -1;
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	if (rc == 0) {
		struct stat st;
		if (stat(path, &st) != 0) {
			rc = -1;
		} else if (!S_ISDIR(st.st_mode)) {
			errno = ENOTDIR;
			rc = -1;
		}
	} else if (failed_at) {
		*failed_at = p;
		p = NULL;
	}
	int e = errno;
	free(p);
	errno = e;
	return rc;
}

int
mkdir_p(const char *path, mode_t mode)
{
	if (!*path) {
		log_error("could not create directory: empty path");
		return -1;
	}
	char *at;
	if (mkdir_p_quiet(path, mode, &at) == 0)
		return 0;
	if (at)
		log_error("could not create directory \"%s\": %s", at, strerror(errno));
	else
		log_error("\"%s\" exists but is not a directory", path);
	free(at);
	return -1;
}


/* Removes everything in open directory d (`shown` names it in messages), then closes d.  0 or -1 (logged). */
static int
remove_entries(DIR *d, const char *shown)
{
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *sub = path_join(shown, de->d_name);
		if (rm_rf_at(dirfd(d), de->d_name, sub) != 0)
			rc = -1;
		free(sub);
	}
	closedir(d);
	return rc;
}

int
rm_rf_at(int parent, const char *name, const char *shown)
{
	struct stat st;

	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno == ENOENT)
			return 0;
		log_error("could not stat \"%s\": %s", shown, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(parent, name, 0) != 0 && errno != ENOENT) {
			log_error("could not remove \"%s\": %s", shown, strerror(errno));
			return -1;
		}
		return 0;
	}
	/*
	 * Our own directory without owner rwx (a hostile archive's mode 0000 or
	 * 0500) could be neither listed nor emptied: give the owner its rights back.
	 */
	if (st.st_uid == geteuid() && (st.st_mode & 0700) != 0700)
		if (fchmodat(parent, name, (st.st_mode & 07777) | 0700, 0) != 0)
			log_debug("could not change mode of \"%s\": %s", shown, strerror(errno));
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		log_error("could not open directory \"%s\": %s", shown, strerror(errno));
		return -1;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		log_error("could not open directory \"%s\": %s", shown, strerror(errno));
		return -1;
	}
	int rc = remove_entries(d, shown);
	if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
		log_error("could not remove directory \"%s\": %s", shown, strerror(errno));
		rc = -1;
	}
	return rc;
}

int
rm_rf(const char *path)
{
	return rm_rf_at(AT_FDCWD, path, path);
}

int
empty_dir(const char *path)
{
	DIR *d = opendir(path);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		log_error("could not open directory \"%s\": %s", path, strerror(errno));
		return -1;
	}
	return remove_entries(d, path);
}

bool
dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return errno == ENOENT;
	struct dirent *de;
	bool empty = true;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			empty = false;
			break;
		}
	}
	closedir(d);
	return empty;
}

int
fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		log_error("could not open directory \"%s\": %s", path, strerror(errno));
		return -1;
	}
	if (fsync(fd) != 0 && errno != EINVAL) {
		log_error("could not fsync directory \"%s\": %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int
fsync_parent(const char *path)
{
	char *p = xstrdup(path);
	char *slash = strrchr(p, '/');
	int rc;
	if (!slash)
		rc = fsync_dir(".");
	else {
		if (slash == p)
			slash[1] = '\0';
		else
			*slash = '\0';
		rc = fsync_dir(p);
	}
	free(p);
	return rc;
}

char *
read_file(const char *path, size_t *len_out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct strbuf sb = {0};
	char buf[8192];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			sb_free(&sb);
			errno = e;
			return NULL;
		}
		if (n == 0)
			break;
		sb_appendn(&sb, buf, (size_t)n);
	}
	close(fd);
	if (len_out)
		*len_out = sb.len;
	return sb_take(&sb);
}

/*
 * The core of read_small_file and read_secret_file: open with `flags` added
 * (never blocking: a FIFO planted under the name must not hang the open),
 * regular files only, at most `max` bytes.  With `secret`, the buffer is
 * sized once (no copies left behind by a realloc) and the stack buffer wiped.
 */
static char *
read_bounded(const char *path, int flags, size_t max, bool secret, size_t *len_out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | flags);
	if (fd < 0)
		return NULL;
	struct stat st;
	int e = 0;
	if (fstat(fd, &st) != 0)
		e = errno;
	else if (!S_ISREG(st.st_mode))
		e = EINVAL;
	else if ((uint64_t)st.st_size > max)
		e = EFBIG;
	struct strbuf sb = {0};
	if (!e && secret)
		sb_grow(&sb, max);
	char buf[8192];
	while (!e) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			e = errno;
		else if (n == 0)
			break;
		else if (sb.len + (size_t)n > max)
			e = EFBIG; /* it grew while we read */
		else
			sb_appendn(&sb, buf, (size_t)n);
	}
	close(fd);
	if (secret)
		explicit_bzero(buf, sizeof(buf));
	if (e) {
		if (secret && sb.buf)
			explicit_bzero(sb.buf, sb.len);
		sb_free(&sb);
		errno = e;
		return NULL;
	}
	if (len_out)
		*len_out = sb.len;
	return sb_take(&sb);
}

char *
read_small_file(const char *path, size_t max, size_t *len_out)
{
	/* O_NOFOLLOW: nor may a link lead to /dev/zero or to someone else's file. */
	return read_bounded(path, O_NOFOLLOW, max, false, len_out);
}

char *
read_secret_file(const char *path, size_t max, size_t *len_out)
{
	return read_bounded(path, 0, max, true, len_out);
}

const char *
read_small_file_error(int err)
{
	switch (err) {
	case ELOOP: return "it is a symbolic link";
	case EINVAL: return "it is not a regular file";
	case EFBIG: return "it is larger than any file of this kind can be";
	default: return strerror(err);
	}
}

const char *
iso_time(char buf[32], int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, 32, "%" PRId64, t);
	return buf;
}

char *
path_join(const char *a, const char *b)
{
	size_t la = strlen(a);
	if (la > 0 && a[la - 1] == '/')
		while (*b == '/')
			b++;
	if ((la > 0 && a[la - 1] == '/') || *b == '/')
		return xasprintf("%s%s", a, b);
	return xasprintf("%s/%s", a, b);
}

bool
ts_before(struct timespec a, struct timespec b)
{
	return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

struct timespec
ctime_mark(void)
{
	struct timespec mark, coarse;
	clock_gettime(CLOCK_REALTIME, &mark);
	clock_gettime(CLOCK_REALTIME_COARSE, &coarse);
	for (int i = 0; i < 200 && ts_before(coarse, mark); i++) {
		nanosleep(&(struct timespec){.tv_nsec = 500 * 1000}, NULL);
		clock_gettime(CLOCK_REALTIME_COARSE, &coarse);
	}
	/* Not reached in 100 ms (the clock was set back): the coarse time keeps the second half true. */
	return ts_before(coarse, mark) ? coarse : mark;
}

size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[65]; /* row[j]: the distance between a's first i bytes and b's first j */
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

size_t
conf_setting_name(const char *line, char *out, size_t cap)
{
	/* The server's lexer takes [ \t\r] as blanks: "\rname = ..." sets name. */
	while (*line == ' ' || *line == '\t' || *line == '\r')
		line++;
	size_t k = 0;
	while (k + 1 < cap && (isalnum((unsigned char)line[k]) || line[k] == '_' || line[k] == '.')) {
		out[k] = (char)tolower((unsigned char)line[k]);
		k++;
	}
	if (cap)
		out[k] = '\0';
	return k;
}

bool
conf_next_setting(FILE *f, char *out, size_t cap, bool *known, struct strbuf *whole)
{
	char line[1024];
	size_t len = 0;
	bool cut = false, nul = false;
	int c;
	/* A read error was the last line (unknown): the rest of the file was never read. */
	if (ferror(f))
		return false;
	/* A character at a time: a NUL or a line longer than the buffer must not move where lines start. */
	while ((c = getc(f)) != EOF && c != '\n') {
		nul = nul || c == '\0';
		if (len + 1 < sizeof(line))
			line[len++] = (char)c;
		else
			cut = true;
	}
	bool failed = c == EOF && ferror(f);
	if (c == EOF && len == 0 && !failed)
		return false;
	line[len] = '\0';
	if (whole) {
		whole->len = 0;
		sb_append(whole, line);
	}
	size_t blanks = strspn(line, " \t\r");
	size_t k = conf_setting_name(line, out, cap);
	/*
	 * Known: read whole (a read error may have cut it), no NUL (the server's
	 * reading of one is not ours), the name fits out and ends inside the buffer.
	 */
	*known = !failed && !nul && k + 1 < cap && (!cut || blanks + k < len);
	return true;
}
