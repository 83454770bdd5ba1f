/*
 * store — see store.h for the layout, the publish protocol and the meta format.
 *
 * Concurrency model in one place: key locks (<key>.lock) order builders,
 * readers and prune; the meta lock (meta.lock, held for milliseconds) makes
 * every change to the set of visible entries atomic with respect to every
 * other such change; temp files are flocked by their writer so a stale-file
 * sweep in another container cannot take a live one.
 */
#include "store.h"
#include "log.h"
#include "sig.h"
#include "snapshot.h"
#include "util.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How long meta.lock or a verify's shared lock may be waited for: they are held only briefly. */
#define SHORT_LOCK_TIMEOUT 60
/* Manifest characters per meta line; keeps lines well inside inih's 200. */
#define MANIFEST_CHUNK 120

static const enum cfg_compression all_comps[] = {CFG_COMP_ZSTD, CFG_COMP_GZIP, CFG_COMP_NONE};

static const char *
comp_name(enum cfg_compression c)
{
	switch (c) {
	case CFG_COMP_ZSTD: return "zstd";
	case CFG_COMP_GZIP: return "gzip";
	case CFG_COMP_NONE: return "none";
	}
	return "none";
}

static const char *
layer_name(enum cfg_layer l)
{
	return l == CFG_LAYER_FIXTURES ? "fixtures" : "schema";
}

static bool
is_hex64(const char *s)
{
	size_t i;
	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == 64;
}

bool
store_key_valid(const char *key)
{
	return key && is_hex64(key);
}

static char *
meta_path(const struct store *st, const char *key)
{
	return xasprintf("%s/%s.meta", st->dir, key);
}

static char *
archive_path(const struct store *st, const char *key, enum cfg_compression c)
{
	return xasprintf("%s/%s%s", st->dir, key, snap_suffix(c));
}

static char *
lock_path(const struct store *st, const char *key)
{
	return xasprintf("%s/%s.lock", st->lock_dir, key);
}

static const char *
iso_time(char buf[32], int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, 32, "%" PRId64, t);
	return buf;
}

void
store_meta_free(struct store_meta *m)
{
	if (!m)
		return;
	free(m->manifest);
	free(m->archive);
	memset(m, 0, sizeof(*m));
}

void
store_list_free(struct store_meta *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_meta_free(&v[i]);
	free(v);
}

/* ------------------------------------------------------------ meta format */

static bool
manifest_escape(unsigned char c)
{
	return c < 0x20 || c == 0x7f || c == '%' || c == ';' || c == '#' || c == '\\';
}

static void
encode_manifest(struct strbuf *sb, const char *m)
{
	const char *p = m ? m : "";
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		size_t i = 0;
		do {
			sb_append(sb, "manifest = ");
			size_t width = 0;
			bool first = true;
			while (i < len && width < MANIFEST_CHUNK) {
				unsigned char c = (unsigned char)p[i];
				if (manifest_escape(c) || (c == ' ' && (first || i + 1 == len))) {
					sb_appendf(sb, "%%%02X", c);
					width += 3;
				} else {
					sb_appendc(sb, (char)c);
					width++;
				}
				first = false;
				i++;
			}
			if (i < len || !nl)
				sb_appendc(sb, '\\');
			sb_appendc(sb, '\n');
		} while (i < len);
		if (!nl)
			break;
		p = nl + 1;
	}
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
decode_manifest_chunk(struct strbuf *sb, const char *v)
{
	size_t len = strlen(v);
	bool cont = len > 0 && v[len - 1] == '\\';
	if (cont)
		len--;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '%') {
			if (i + 2 >= len)
				return -1;
			int hi = hexval(v[i + 1]), lo = hexval(v[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			sb_appendc(sb, (char)(hi * 16 + lo));
			i += 2;
		} else if (v[i] == '\\') {
			return -1;
		} else {
			sb_appendc(sb, v[i]);
		}
	}
	if (!cont)
		sb_appendc(sb, '\n');
	return 0;
}

static char *
meta_text(const struct store_meta *m)
{
	struct strbuf sb = {0};
	sb_append(&sb, "; pgstash cache entry (" STORE_DIR_NAME "); written by pgstash, read with inih\n");
	sb_appendf(&sb, "key = %s\n", m->key);
	sb_appendf(&sb, "parent = %s\n", m->parent);
	sb_appendf(&sb, "layer = %s\n", layer_name(m->layer));
	sb_appendf(&sb, "compression = %s\n", comp_name(m->compression));
	sb_appendf(&sb, "pg_version = %s\n", m->pg_version);
	sb_appendf(&sb, "created = %" PRId64 "\n", m->created);
	sb_appendf(&sb, "last_used = %" PRId64 "\n", m->last_used);
	sb_appendf(&sb, "archive_bytes = %" PRIu64 "\n", m->archive_bytes);
	sb_appendf(&sb, "archive_sha256 = %s\n", m->archive_sha256);
	sb_appendf(&sb, "pgdata_bytes = %" PRIu64 "\n", m->pgdata_bytes);
	sb_appendf(&sb, "build_seconds = %.3f\n", m->build_seconds);
	encode_manifest(&sb, m->manifest);
	return sb_take(&sb);
}

enum {
	F_KEY = 1 << 0,
	F_PARENT = 1 << 1,
	F_LAYER = 1 << 2,
	F_COMP = 1 << 3,
	F_PGV = 1 << 4,
	F_CREATED = 1 << 5,
	F_LAST = 1 << 6,
	F_ABYTES = 1 << 7,
	F_SHA = 1 << 8,
	F_PBYTES = 1 << 9,
	F_BUILD = 1 << 10,
};
#define F_REQUIRED (F_KEY | F_LAYER | F_COMP | F_PGV | F_CREATED | F_LAST | F_ABYTES | F_SHA | F_PBYTES)

struct meta_parse {
	struct store_meta *m;
	struct strbuf manifest;
	unsigned seen;
	char why[160];
};

static int
parse_u64(const char *s, uint64_t *out)
{
	if (!*s || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int
meta_bad(struct meta_parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
meta_bad(struct meta_parse *p, const char *fmt, ...)
{
	if (!p->why[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->why, sizeof(p->why), fmt, ap);
		va_end(ap);
	}
	return 0; /* inih: failure */
}

static int
meta_handler(void *user, const char *section, const char *name, const char *value)
{
	struct meta_parse *p = user;
	struct store_meta *m = p->m;
	unsigned bit = 0;
	uint64_t u;

	if (*section)
		return meta_bad(p, "unexpected section [%s]", section);
	if (strcmp(name, "manifest") == 0) {
		if (decode_manifest_chunk(&p->manifest, value) != 0)
			return meta_bad(p, "bad manifest line");
		return 1;
	}
	if (strcmp(name, "key") == 0) {
		bit = F_KEY;
		if (!is_hex64(value))
			return meta_bad(p, "bad key");
		memcpy(m->key, value, 65);
	} else if (strcmp(name, "parent") == 0) {
		bit = F_PARENT;
		if (*value && !is_hex64(value))
			return meta_bad(p, "bad parent");
		snprintf(m->parent, sizeof(m->parent), "%s", value);
	} else if (strcmp(name, "layer") == 0) {
		bit = F_LAYER;
		if (strcmp(value, "schema") == 0)
			m->layer = CFG_LAYER_SCHEMA;
		else if (strcmp(value, "fixtures") == 0)
			m->layer = CFG_LAYER_FIXTURES;
		else
			return meta_bad(p, "bad layer \"%.40s\"", value);
	} else if (strcmp(name, "compression") == 0) {
		bit = F_COMP;
		size_t i;
		for (i = 0; i < 3; i++)
			if (strcmp(value, comp_name(all_comps[i])) == 0)
				break;
		if (i == 3)
			return meta_bad(p, "bad compression \"%.40s\"", value);
		m->compression = all_comps[i];
	} else if (strcmp(name, "pg_version") == 0) {
		bit = F_PGV;
		/* Only what a version looks like: it is written back on every touch. */
		if (!*value || strlen(value) >= sizeof(m->pg_version) ||
		    strspn(value, "0123456789.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-+~") != strlen(value))
			return meta_bad(p, "bad pg_version");
		memcpy(m->pg_version, value, strlen(value) + 1);
	} else if (strcmp(name, "created") == 0 || strcmp(name, "last_used") == 0) {
		bool created = name[0] == 'c';
		bit = created ? F_CREATED : F_LAST;
		if (parse_u64(value, &u) != 0 || u > (uint64_t)INT64_MAX)
			return meta_bad(p, "bad %s", name);
		*(created ? &m->created : &m->last_used) = (int64_t)u;
	} else if (strcmp(name, "archive_bytes") == 0 || strcmp(name, "pgdata_bytes") == 0) {
		bool arch = name[0] == 'a';
		bit = arch ? F_ABYTES : F_PBYTES;
		if (parse_u64(value, &u) != 0)
			return meta_bad(p, "bad %s", name);
		*(arch ? &m->archive_bytes : &m->pgdata_bytes) = u;
	} else if (strcmp(name, "archive_sha256") == 0) {
		bit = F_SHA;
		if (!is_hex64(value))
			return meta_bad(p, "bad archive_sha256");
		memcpy(m->archive_sha256, value, 65);
	} else if (strcmp(name, "build_seconds") == 0) {
		bit = F_BUILD;
		char *end;
		errno = 0;
		double d = strtod(value, &end);
		/* Bounded, so that writing it back stays a short line (a year is plenty). */
		if (!*value || *end || errno || !isfinite(d) || d < 0 || d > 366.0 * 86400)
			return meta_bad(p, "bad build_seconds");
		m->build_seconds = d;
	} else {
		return 1; /* a newer pgstash's field: ignored */
	}
	if (p->seen & bit)
		return meta_bad(p, "duplicate %s", name);
	p->seen |= bit;
	return 1;
}

/*
 * Reads the meta of `key` into *m.  1: parsed (m->archive set); 0: no meta;
 * -1: bad content, -2: unreadable; why filled for both.
 */
static int
meta_read(const struct store *st, const char *key, struct store_meta *m, char *why, size_t why_len)
{
	char *path = meta_path(st, key);
	struct meta_parse p = {.m = m};
	int rc = -1;

	memset(m, 0, sizeof(*m));
	char *text = read_file(path, NULL);
	if (!text) {
		if (errno == ENOENT) {
			rc = 0;
		} else {
			snprintf(why, why_len, "could not read \"%s\": %s", path, strerror(errno));
			rc = -2;
		}
		goto cleanup;
	}
	int line = ini_parse_string(text, meta_handler, &p);
	if (line != 0) {
		snprintf(why, why_len, "\"%s\" line %d: %s", path, line, p.why[0] ? p.why : "syntax error");
		goto cleanup;
	}
	if ((p.seen & F_REQUIRED) != F_REQUIRED) {
		snprintf(why, why_len, "\"%s\" lacks required fields", path);
		goto cleanup;
	}
	if (strcmp(m->key, key) != 0) {
		snprintf(why, why_len, "\"%s\" names another key", path);
		goto cleanup;
	}
	m->manifest = sb_take(&p.manifest);
	m->archive = archive_path(st, key, m->compression);
	rc = 1;
cleanup:
	if (rc != 1) {
		sb_free(&p.manifest);
		store_meta_free(m);
	}
	free(text);
	free(path);
	return rc;
}

/* ---------------------------------------------------------------- locking */

static int
lock_file_wait(const char *path, bool exclusive, long timeout_s, const char *key, int *fd_out)
{
	double start = log_now();
	double next_report = start + 10;
	int op = (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;

	*fd_out = -1;
	for (;;) {
		int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0) {
			log_warning("could not open lock file \"%s\": %s", path, strerror(errno));
			return -1;
		}
		for (;;) {
			if (flock(fd, op) == 0)
				break;
			if (errno != EWOULDBLOCK && errno != EINTR) {
				log_warning("could not lock \"%s\": %s", path, strerror(errno));
				close(fd);
				return -1;
			}
			double waited = log_now() - start;
			if (timeout_s == 0 || (timeout_s > 0 && waited >= (double)timeout_s)) {
				close(fd);
				return 1;
			}
			sig_drain();
			if (sig_received) {
				log_warning("stopped waiting for lock \"%s\": signal %d received", path, (int)sig_received);
				close(fd);
				return -1;
			}
			if (log_now() >= next_report) {
				if (key)
					log_info("waiting for another pgstash building %.12s… (%.0f s)", key, waited);
				else
					log_info("waiting for lock \"%s\" (%.0f s)", path, waited);
				next_report += 10;
			}
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		/* Prune may have removed the file between our open and flock: then lock the new one. */
		struct stat a, b;
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			*fd_out = fd;
			return 0;
		}
		close(fd);
	}
}

void
store_unlock(int fd)
{
	if (fd < 0)
		return;
	flock(fd, LOCK_UN);
	close(fd);
}

int
store_lock(struct store *st, const char *key, bool exclusive, long timeout_s, int *fd_out)
{
	*fd_out = -1;
	if (!st->usable) {
		log_warning("cache is not usable: cannot lock %.12s…", key ? key : "");
		return -1;
	}
	if (!store_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		return -1;
	}
	char *path = lock_path(st, key);
	int rc = lock_file_wait(path, exclusive, timeout_s, key, fd_out);
	free(path);
	return rc;
}

static int
meta_lock(struct store *st, int *fd_out)
{
	char *path = path_join(st->lock_dir, "meta.lock");
	int rc = lock_file_wait(path, true, SHORT_LOCK_TIMEOUT, NULL, fd_out);
	if (rc == 1)
		log_warning("lock \"%s\" is held for more than %d s; giving up", path, SHORT_LOCK_TIMEOUT);
	free(path);
	return rc == 0 ? 0 : -1;
}

/* -------------------------------------------------------------- temp files */

/*
 * Creates .tmp/<key>-<6 random characters><suffix>, flocked exclusive for as long as the fd
 * is open.  Returns the fd (path in *path_out, caller frees) or -1 (logged).
 */
static int
tmp_create(struct store *st, const char *key, const char *suffix, char **path_out)
{
	/* mkostemps' template: six 'X' that it replaces. */
	char rnd[7];
	memset(rnd, 'X', 6);
	rnd[6] = '\0';
	for (int tries = 0; tries < 10; tries++) {
		char *path = xasprintf("%s/%s-%s%s", st->tmp_dir, key, rnd, suffix);
		int fd = mkostemps(path, (int)strlen(suffix), O_CLOEXEC);
		if (fd < 0) {
			log_warning("could not create temp file in \"%s\": %s", st->tmp_dir, strerror(errno));
			free(path);
			return -1;
		}
		if (flock(fd, LOCK_EX) != 0) {
			log_warning("could not lock \"%s\": %s", path, strerror(errno));
			close(fd);
			unlink(path);
			free(path);
			return -1;
		}
		/* A sweep may have taken it between create and flock; it then removed it. */
		struct stat a, b;
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			*path_out = path;
			return fd;
		}
		close(fd);
		free(path);
	}
	log_warning("could not create a temp file in \"%s\" that stays put", st->tmp_dir);
	return -1;
}

static int
write_all(int fd, const char *data, size_t len, const char *name)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_warning("could not write \"%s\": %s", name, strerror(errno));
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Removes temp files no live writer holds. */
static void
sweep_tmp(struct store *st)
{
	DIR *d = opendir(st->tmp_dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ELOOP || errno == EISDIR) {
				char *p = path_join(st->tmp_dir, de->d_name);
				rm_rf(p);
				free(p);
			}
			continue;
		}
		struct stat sb;
		if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			close(fd);
			char *p = path_join(st->tmp_dir, de->d_name);
			rm_rf(p);
			free(p);
			continue;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			log_debug("removing stale temp file \"%s/%s\"", st->tmp_dir, de->d_name);
			unlinkat(dirfd(d), de->d_name, 0);
		} else {
			log_debug("temp file \"%s/%s\" is being written by another pgstash", st->tmp_dir, de->d_name);
		}
		close(fd);
	}
	closedir(d);
}

/* ------------------------------------------------------------- open/close */

static int
mkdirs_quiet(const char *path)
{
	char *p = xstrdup(path);
	int rc = 0;
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST) {
			rc = -1;
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	if (rc == 0) {
		struct stat sb;
		if (stat(path, &sb) != 0)
			rc = -1;
		else if (!S_ISDIR(sb.st_mode)) {
			errno = ENOTDIR;
			rc = -1;
		}
	}
	int e = errno;
	free(p);
	errno = e;
	return rc;
}

int
store_open(struct store *st, const char *cache_dir)
{
	memset(st, 0, sizeof(*st));
	if (!cache_dir || !*cache_dir) {
		log_warning("no cache directory configured: going on without caching");
		return -1;
	}
	st->dir = path_join(cache_dir, STORE_DIR_NAME);
	st->tmp_dir = path_join(st->dir, ".tmp");
	st->lock_dir = path_join(st->dir, ".locks");
	const char *const dirs[] = {st->dir, st->tmp_dir, st->lock_dir};
	for (size_t i = 0; i < 3; i++) {
		if (mkdirs_quiet(dirs[i]) != 0 || access(dirs[i], W_OK | X_OK) != 0) {
			log_warning("cache directory \"%s\" is not usable: %s: going on without caching", dirs[i],
			            strerror(errno));
			return -1;
		}
	}
	sweep_tmp(st);
	st->usable = true;
	return 0;
}

void
store_close(struct store *st)
{
	if (!st)
		return;
	free(st->dir);
	free(st->tmp_dir);
	free(st->lock_dir);
	memset(st, 0, sizeof(*st));
}

/* ----------------------------------------------------------------- entries */

/* Removes meta then archives of `key`; the caller holds meta.lock.  0 or -1 (logged). */
static int
remove_entry_files(struct store *st, const char *key)
{
	int rc = 0;
	char *m = meta_path(st, key);
	if (unlink(m) != 0 && errno != ENOENT) {
		log_warning("could not remove \"%s\": %s", m, strerror(errno));
		rc = -1;
	}
	free(m);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < 3; i++) {
		char *a = archive_path(st, key, all_comps[i]);
		if (unlink(a) != 0 && errno != ENOENT) {
			log_warning("could not remove \"%s\": %s", a, strerror(errno));
			rc = -1;
		}
		free(a);
	}
	fsync_dir(st->dir);
	return rc;
}

int
store_remove(struct store *st, const char *key)
{
	if (!st->usable)
		return -1;
	if (!store_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		return -1;
	}
	int lfd;
	if (meta_lock(st, &lfd) != 0)
		return -1;
	int rc = remove_entry_files(st, key);
	store_unlock(lfd);
	return rc;
}

/* 0 when archive m->archive exists with the size meta says, else -1 and why. */
static int
archive_check(const struct store_meta *m, char *why, size_t why_len)
{
	struct stat sb;
	if (stat(m->archive, &sb) != 0) {
		snprintf(why, why_len, "archive \"%s\": %s", m->archive, strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != m->archive_bytes) {
		snprintf(why, why_len, "archive \"%s\" is %lld bytes, its meta says %" PRIu64, m->archive,
		         (long long)sb.st_size, m->archive_bytes);
		return -1;
	}
	return 0;
}

int
store_lookup(struct store *st, const char *key, struct store_meta *out)
{
	char why[512];

	memset(out, 0, sizeof(*out));
	if (!st->usable)
		return 0;
	if (!store_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		return -1;
	}
	int r = meta_read(st, key, out, why, sizeof(why));
	if (r == 0)
		return 0;
	if (r == -2) {
		log_error("%s", why);
		return -1;
	}
	if (r == 1 && archive_check(out, why, sizeof(why)) == 0)
		return 1;
	log_warning("removing bad cache entry %.12s…: %s", key, why);
	store_meta_free(out);
	store_remove(st, key);
	return 0;
}

/* Writes meta text to a flocked temp file, fsynced; returns its fd and path, or -1. */
static int
meta_tmp_write(struct store *st, const struct store_meta *m, char **path_out)
{
	char *text = meta_text(m);
	int fd = tmp_create(st, m->key, ".meta", path_out);
	if (fd < 0) {
		free(text);
		return -1;
	}
	int rc = write_all(fd, text, strlen(text), *path_out);
	if (rc == 0 && fchmod(fd, 0644) != 0)
		rc = -1;
	if (rc == 0 && fsync(fd) != 0) {
		log_warning("could not fsync \"%s\": %s", *path_out, strerror(errno));
		rc = -1;
	}
	free(text);
	if (rc != 0) {
		unlink(*path_out);
		free(*path_out);
		*path_out = NULL;
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Under the meta lock: moves an entry's temp files into place, the way every
 * entry is published — an archive of the key in another compression removed
 * (it would be an orphan), the archive renamed and the directory fsynced,
 * then the meta renamed and fsynced (a reader never sees a meta without its
 * archive).  *arch_placed / *meta_placed tell the caller's cleanup how far it
 * got; *final_arch / *final_meta are set (caller frees).  0 or -1 (warning).
 */
static int
place_entry(struct store *st, const char *key, enum cfg_compression comp, const char *arch_tmp,
            const char *meta_tmp, char **final_arch, char **final_meta, bool *arch_placed, bool *meta_placed)
{
	for (size_t i = 0; i < 3; i++) {
		if (all_comps[i] == comp)
			continue;
		char *other = archive_path(st, key, all_comps[i]);
		unlink(other);
		free(other);
	}
	*final_arch = archive_path(st, key, comp);
	*final_meta = meta_path(st, key);
	if (rename(arch_tmp, *final_arch) != 0) {
		log_warning("could not rename \"%s\" to \"%s\": %s", arch_tmp, *final_arch, strerror(errno));
		return -1;
	}
	*arch_placed = true;
	if (fsync_dir(st->dir) != 0)
		return -1;
	if (rename(meta_tmp, *final_meta) != 0) {
		log_warning("could not rename \"%s\" to \"%s\": %s", meta_tmp, *final_meta, strerror(errno));
		return -1;
	}
	*meta_placed = true;
	return fsync_dir(st->dir);
}

int
store_publish(struct store *st, const char *pgdata, struct store_meta *meta, enum cfg_compression comp,
              int level, struct snap_stats *sst)
{
	struct snap_stats local;
	char *arch_tmp = NULL, *meta_tmp = NULL, *final_arch = NULL, *final_meta = NULL;
	int afd = -1, mfd = -1, lfd = -1;
	bool arch_placed = false, meta_placed = false;
	int rc = -1;
	char why[512];

	if (!sst)
		sst = &local;
	if (!st->usable) {
		log_warning("cache is not usable: snapshot not stored");
		return -1;
	}
	if (!store_key_valid(meta->key)) {
		log_error("invalid cache key \"%s\"", meta->key);
		return -1;
	}
	afd = tmp_create(st, meta->key, snap_suffix(comp), &arch_tmp);
	if (afd < 0)
		goto cleanup;
	if (snap_write(pgdata, afd, arch_tmp, comp, level, sst) != 0)
		goto cleanup;
	/* The entry is what must survive a crash: its bytes are on disk before any rename. */
	if (fchmod(afd, 0644) != 0 || fsync(afd) != 0) {
		log_warning("could not fsync \"%s\": %s", arch_tmp, strerror(errno));
		goto cleanup;
	}
	meta->created = meta->last_used = (int64_t)time(NULL);
	meta->archive_bytes = sst->archive_bytes;
	meta->pgdata_bytes = sst->pgdata_bytes;
	memcpy(meta->archive_sha256, sst->sha256, sizeof(meta->archive_sha256));
	meta->compression = comp;
	mfd = meta_tmp_write(st, meta, &meta_tmp);
	if (mfd < 0)
		goto cleanup;

	if (meta_lock(st, &lfd) != 0)
		goto cleanup;
	struct store_meta existing;
	if (meta_read(st, meta->key, &existing, why, sizeof(why)) == 1 &&
	    archive_check(&existing, why, sizeof(why)) == 0) {
		log_info("another pgstash stored %.12s… meanwhile; keeping that entry", meta->key);
		store_meta_free(meta);
		*meta = existing;
		rc = 0;
		goto cleanup;
	}
	store_meta_free(&existing);
	if (place_entry(st, meta->key, comp, arch_tmp, meta_tmp, &final_arch, &final_meta, &arch_placed,
	                &meta_placed) != 0)
		goto cleanup;
	free(meta->archive);
	meta->archive = xstrdup(final_arch);
	rc = 0;
cleanup:
	if (rc != 0 && meta_placed)
		unlink(final_meta);
	if (rc != 0 && arch_placed)
		unlink(final_arch);
	store_unlock(lfd);
	if (afd >= 0)
		close(afd);
	if (mfd >= 0)
		close(mfd);
	if (arch_tmp && !arch_placed)
		unlink(arch_tmp);
	if (meta_tmp && !meta_placed)
		unlink(meta_tmp);
	if (rc != 0)
		log_warning("could not store cache entry %.12s…: going on without caching", meta->key);
	free(arch_tmp);
	free(meta_tmp);
	free(final_arch);
	free(final_meta);
	return rc;
}

int
store_touch(struct store *st, const char *key)
{
	struct store_meta m;
	char why[512];
	char *tmp = NULL, *final = NULL;
	int lfd = -1, fd = -1, rc = -1;

	if (!st->usable || !store_key_valid(key))
		return -1;
	if (meta_lock(st, &lfd) != 0)
		return -1;
	int r = meta_read(st, key, &m, why, sizeof(why));
	if (r != 1) {
		if (r < 0)
			log_warning("could not update cache entry %.12s…: %s", key, why);
		goto cleanup;
	}
	m.last_used = (int64_t)time(NULL);
	fd = meta_tmp_write(st, &m, &tmp);
	if (fd < 0)
		goto cleanup;
	final = meta_path(st, key);
	if (rename(tmp, final) != 0) {
		log_warning("could not rename \"%s\" to \"%s\": %s", tmp, final, strerror(errno));
		unlink(tmp);
		goto cleanup;
	}
	rc = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	store_unlock(lfd);
	store_meta_free(&m);
	free(tmp);
	free(final);
	return rc;
}

int
store_import(struct store *st, const char *key, const char *archive_tmp, const char *meta_tmp)
{
	struct store_meta m = {0};
	struct meta_parse p = {.m = &m};
	char *text = NULL, *new_meta = NULL, *final_arch = NULL, *final_meta = NULL;
	int afd = -1, mfd = -1, lfd = -1, rc = -1;
	bool arch_placed = false, meta_placed = false;
	struct stat sb;
	char why[512];

	if (!st->usable) {
		log_warning("cache is not usable: downloaded entry not stored");
		goto cleanup;
	}
	if (!store_key_valid(key)) {
		log_error("invalid cache key \"%s\"", key ? key : "");
		goto cleanup;
	}
	text = read_file(meta_tmp, NULL);
	if (!text) {
		log_warning("could not read \"%s\": %s", meta_tmp, strerror(errno));
		goto cleanup;
	}
	int line = ini_parse_string(text, meta_handler, &p);
	if (line != 0 || (p.seen & F_REQUIRED) != F_REQUIRED || strcmp(m.key, key) != 0) {
		log_warning("downloaded meta of %.12s is not valid: %s", key,
		            line != 0 ? (p.why[0] ? p.why : "syntax error") : "it lacks fields or names another key");
		goto cleanup;
	}
	m.manifest = sb_take(&p.manifest);
	afd = open(archive_tmp, O_RDONLY | O_CLOEXEC);
	if (afd < 0 || fstat(afd, &sb) != 0) {
		log_warning("could not open \"%s\": %s", archive_tmp, strerror(errno));
		goto cleanup;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != m.archive_bytes) {
		log_warning("downloaded archive of %.12s is %lld bytes, its meta says %" PRIu64, key,
		            (long long)sb.st_size, m.archive_bytes);
		goto cleanup;
	}
	/* As store_publish: the bytes are on disk before any rename. */
	if (fchmod(afd, 0644) != 0 || fsync(afd) != 0) {
		log_warning("could not fsync \"%s\": %s", archive_tmp, strerror(errno));
		goto cleanup;
	}
	/* A download is a use: local LRU pruning must not take it first. */
	m.last_used = (int64_t)time(NULL);
	mfd = meta_tmp_write(st, &m, &new_meta);
	if (mfd < 0)
		goto cleanup;
	if (meta_lock(st, &lfd) != 0)
		goto cleanup;
	struct store_meta existing;
	if (meta_read(st, key, &existing, why, sizeof(why)) == 1 && archive_check(&existing, why, sizeof(why)) == 0) {
		log_info("another pgstash stored %.12s meanwhile; keeping that entry", key);
		store_meta_free(&existing);
		rc = 0;
		goto cleanup;
	}
	store_meta_free(&existing);
	if (place_entry(st, key, m.compression, archive_tmp, new_meta, &final_arch, &final_meta, &arch_placed,
	                &meta_placed) != 0)
		goto cleanup;
	rc = 0;
cleanup:
	if (rc != 0 && meta_placed)
		unlink(final_meta);
	if (rc != 0 && arch_placed)
		unlink(final_arch);
	store_unlock(lfd);
	if (afd >= 0)
		close(afd);
	if (mfd >= 0)
		close(mfd);
	if (!arch_placed)
		unlink(archive_tmp);
	if (new_meta && !meta_placed)
		unlink(new_meta);
	unlink(meta_tmp);
	if (rc != 0)
		log_warning("could not store downloaded entry %.12s: going on without it", key);
	sb_free(&p.manifest);
	store_meta_free(&m);
	free(text);
	free(new_meta);
	free(final_arch);
	free(final_meta);
	return rc;
}

int
store_restore(struct store *st, struct store_meta *meta, const char *pgdata, uid_t uid, gid_t gid,
              int pg_major, struct snap_stats *sst)
{
	if (!st->usable)
		return -1;
	if (!meta->archive)
		meta->archive = archive_path(st, meta->key, meta->compression);
	int r = snap_restore(meta->archive, meta->archive_sha256, pgdata, uid, gid, pg_major, sst);
	if (r == SNAP_BAD_ARCHIVE) {
		log_warning("removing bad cache entry %.12s…", meta->key);
		store_remove(st, meta->key);
		return -1;
	}
	if (r != 0)
		return -1;
	if (store_touch(st, meta->key) == 0)
		meta->last_used = (int64_t)time(NULL);
	return 0;
}

/* ------------------------------------------------------------------ listing */

static int
cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Sorted keys of every "<key>.meta" in the store directory. */
static int
meta_keys(struct store *st, struct strlist *keys)
{
	DIR *d = opendir(st->dir);
	if (!d) {
		log_error("could not open directory \"%s\": %s", st->dir, strerror(errno));
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len != 64 + 5 || strcmp(de->d_name + 64, ".meta") != 0)
			continue;
		char key[65];
		memcpy(key, de->d_name, 64);
		key[64] = '\0';
		if (is_hex64(key))
			sl_add(keys, key);
	}
	closedir(d);
	if (keys->n > 1)
		qsort(keys->v, keys->n, sizeof(char *), cmp_str);
	return 0;
}

int
store_list(struct store *st, struct store_meta **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!st->usable)
		return 0;
	struct strlist keys = {0};
	if (meta_keys(st, &keys) != 0)
		return -1;
	struct store_meta *v = xcalloc(keys.n ? keys.n : 1, sizeof(*v));
	size_t k = 0;
	char why[512];
	for (size_t i = 0; i < keys.n; i++) {
		int r = meta_read(st, keys.v[i], &v[k], why, sizeof(why));
		if (r == 0)
			continue; /* removed meanwhile */
		if (r < 0 || archive_check(&v[k], why, sizeof(why)) != 0) {
			log_warning("ignoring bad cache entry %.12s…: %s", keys.v[i], why);
			store_meta_free(&v[k]);
			continue;
		}
		k++;
	}
	sl_free(&keys);
	*out = v;
	*n = k;
	return 0;
}

static int
cmp_recent_first(const void *x, const void *y)
{
	const struct store_meta *a = x, *b = y;
	if (a->last_used != b->last_used)
		return a->last_used > b->last_used ? -1 : 1;
	return strcmp(a->key, b->key);
}

static int
cmp_oldest_first(const void *x, const void *y)
{
	return -cmp_recent_first(x, y);
}

static int
print_json(const struct store_meta *v, size_t n, FILE *out)
{
	cJSON *arr = cJSON_CreateArray();
	if (!arr)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct store_meta *m = &v[i];
		cJSON *o = cJSON_CreateObject();
		if (!o) {
			cJSON_Delete(arr);
			return -1;
		}
		cJSON_AddItemToArray(arr, o);
		cJSON_AddStringToObject(o, "key", m->key);
		if (m->parent[0])
			cJSON_AddStringToObject(o, "parent", m->parent);
		else
			cJSON_AddNullToObject(o, "parent");
		cJSON_AddStringToObject(o, "layer", layer_name(m->layer));
		cJSON_AddNumberToObject(o, "created", (double)m->created);
		cJSON_AddNumberToObject(o, "last_used", (double)m->last_used);
		cJSON_AddNumberToObject(o, "archive_bytes", (double)m->archive_bytes);
		cJSON_AddNumberToObject(o, "pgdata_bytes", (double)m->pgdata_bytes);
		cJSON_AddStringToObject(o, "pg_version", m->pg_version);
		cJSON_AddNumberToObject(o, "build_seconds", m->build_seconds);
		cJSON_AddStringToObject(o, "compression", comp_name(m->compression));
		cJSON_AddStringToObject(o, "archive_sha256", m->archive_sha256);
		cJSON_AddStringToObject(o, "archive", m->archive);
	}
	char *text = cJSON_Print(arr);
	cJSON_Delete(arr);
	if (!text)
		return -1;
	fputs(text, out);
	fputc('\n', out);
	cJSON_free(text);
	return 0;
}

int
store_print_ls(struct store *st, bool json, FILE *out)
{
	struct store_meta *v;
	size_t n;
	if (!st->usable) {
		log_error("cache is not usable");
		return -1;
	}
	if (store_list(st, &v, &n) != 0)
		return -1;
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_recent_first);
	int rc = 0;
	if (json) {
		rc = print_json(v, n, out);
		if (rc != 0)
			log_error("could not build the JSON listing");
	} else {
		fprintf(out, "%-64s  %-8s  %-12s  %-20s  %-20s  %10s  %-8s  %9s\n", "KEY", "LAYER", "PARENT", "CREATED",
		        "LAST USED", "SIZE", "PG", "BUILD");
		for (size_t i = 0; i < n; i++) {
			char c[32], u[32], b[32], parent[13];
			snprintf(parent, sizeof(parent), "%.12s", v[i].parent[0] ? v[i].parent : "-");
			fprintf(out, "%-64s  %-8s  %-12s  %-20s  %-20s  %10s  %-8s  %7.1f s\n", v[i].key,
			        layer_name(v[i].layer), parent, iso_time(c, v[i].created), iso_time(u, v[i].last_used),
			        log_bytes(b, v[i].archive_bytes), v[i].pg_version, v[i].build_seconds);
		}
	}
	store_list_free(v, n);
	if (fflush(out) != 0)
		rc = -1;
	return rc;
}

/* Checks one entry; prints the verdict; 0 ok, 1 bad. */
static int
verify_one(struct store *st, const char *key)
{
	struct store_meta m = {0};
	char why[512] = "";
	char digest[65];
	uint64_t bytes;
	int lfd = -1;
	int bad = 1;

	int r = store_lock(st, key, false, SHORT_LOCK_TIMEOUT, &lfd);
	if (r != 0) {
		snprintf(why, sizeof(why), "%s", r == 1 ? "locked by another pgstash for too long" : "could not lock");
		goto cleanup;
	}
	r = meta_read(st, key, &m, why, sizeof(why));
	if (r == 0) {
		snprintf(why, sizeof(why), "no such entry");
		goto cleanup;
	}
	if (r < 0)
		goto cleanup;
	if (snap_digest_file(m.archive, digest, &bytes) != 0) {
		snprintf(why, sizeof(why), "archive \"%s\": %s", m.archive, strerror(errno));
		goto cleanup;
	}
	if (bytes != m.archive_bytes) {
		snprintf(why, sizeof(why), "archive is %" PRIu64 " bytes, its meta says %" PRIu64, bytes,
		         m.archive_bytes);
		goto cleanup;
	}
	if (strcmp(digest, m.archive_sha256) != 0) {
		snprintf(why, sizeof(why), "archive SHA-256 is %s, its meta says %s", digest, m.archive_sha256);
		goto cleanup;
	}
	bad = 0;
cleanup:
	store_unlock(lfd);
	store_meta_free(&m);
	if (bad)
		printf("BAD %s: %s\n", key, why);
	else
		printf("ok %s\n", key);
	fflush(stdout);
	return bad;
}

int
store_verify(struct store *st, const char *const *keys, size_t n)
{
	struct strlist all = {0};
	int nbad = 0;

	if (!st->usable) {
		log_error("cache is not usable");
		return -1;
	}
	if (meta_keys(st, &all) != 0)
		return -1;
	if (n == 0) {
		for (size_t i = 0; i < all.n; i++)
			nbad += verify_one(st, all.v[i]);
		sl_free(&all);
		return nbad;
	}
	for (size_t i = 0; i < n; i++) {
		const char *want = keys[i];
		size_t wl = strlen(want);
		const char *found = NULL;
		size_t matches = 0;
		for (size_t j = 0; j < all.n && wl >= 4; j++) {
			if (strncmp(all.v[j], want, wl) == 0) {
				found = all.v[j];
				matches++;
			}
		}
		if (matches == 1) {
			nbad += verify_one(st, found);
		} else {
			printf("BAD %s: %s\n", want, matches > 1 ? "ambiguous key prefix" : "no such entry");
			nbad++;
		}
	}
	fflush(stdout);
	sl_free(&all);
	return nbad;
}

static void
prune_report(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
prune_report(FILE *out, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (out) {
		fprintf(out, "%s\n", line);
		fflush(out);
	} else {
		log_info("%s", line);
	}
}

/* Is `name` "<key><suffix>" for an archive suffix?  Sets key and comp. */
static bool
archive_name(const char *name, char key[65], enum cfg_compression *comp)
{
	if (strlen(name) <= 64)
		return false;
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(name + 64, snap_suffix(all_comps[i])) == 0) {
			memcpy(key, name, 64);
			key[64] = '\0';
			*comp = all_comps[i];
			return is_hex64(key);
		}
	}
	return false;
}

/* Removes metas that do not parse or lack their archive, and archives no meta names.  Under meta.lock. */
static void
sweep_orphans(struct store *st, FILE *out)
{
	int lfd;
	if (meta_lock(st, &lfd) != 0)
		return;
	struct strlist keys = {0};
	if (meta_keys(st, &keys) == 0) {
		char why[512];
		for (size_t i = 0; i < keys.n; i++) {
			struct store_meta m;
			int r = meta_read(st, keys.v[i], &m, why, sizeof(why));
			if (r == 1 && archive_check(&m, why, sizeof(why)) == 0) {
				store_meta_free(&m);
				continue;
			}
			store_meta_free(&m);
			if (r == 0 || r == -2)
				continue;
			if (remove_entry_files(st, keys.v[i]) == 0)
				prune_report(out, "removed bad entry %s: %s", keys.v[i], why);
		}
	}
	DIR *d = opendir(st->dir);
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL) {
		char key[65];
		enum cfg_compression comp;
		if (!archive_name(de->d_name, key, &comp))
			continue;
		struct store_meta m;
		char why[512];
		int r = meta_read(st, key, &m, why, sizeof(why));
		bool named = r == 1 && m.compression == comp;
		store_meta_free(&m);
		if (named || r == -2)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			prune_report(out, "removed orphan archive %s", de->d_name);
	}
	if (d)
		closedir(d);
	sl_free(&keys);
	store_unlock(lfd);
}

int
store_prune(struct store *st, uint64_t max_bytes, long max_entries, bool dry_run, const char *keep_key,
            FILE *out)
{
	struct store_meta *v;
	size_t n;
	int removed = 0;

	if (!st->usable) {
		log_error("cache is not usable");
		return -1;
	}
	if (!dry_run)
		sweep_orphans(st, out);
	if (store_list(st, &v, &n) != 0)
		return -1;
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_oldest_first);
	uint64_t total = 0;
	size_t left = n;
	for (size_t i = 0; i < n; i++)
		total += v[i].archive_bytes;
#define OVER() ((max_entries > 0 && left > (size_t)max_entries) || (max_bytes > 0 && total > max_bytes))
	for (size_t i = 0; i < n && OVER(); i++) {
		const struct store_meta *m = &v[i];
		char b[32], u[32];
		if (keep_key && strcmp(m->key, keep_key) == 0)
			continue;
		int lfd;
		int r = store_lock(st, m->key, true, 0, &lfd);
		if (r == 1) {
			prune_report(out, "skipped %s: in use", m->key);
			continue;
		}
		if (r != 0)
			continue;
		if (dry_run) {
			prune_report(out, "would remove %s (%s, last used %s)", m->key, log_bytes(b, m->archive_bytes),
			             iso_time(u, m->last_used));
		} else {
			if (store_remove(st, m->key) != 0) {
				store_unlock(lfd);
				continue;
			}
			/* Safe under the exclusive lock: lockers re-check the file after flock. */
			char *lp = lock_path(st, m->key);
			unlink(lp);
			free(lp);
			prune_report(out, "removed %s (%s, last used %s)", m->key, log_bytes(b, m->archive_bytes),
			             iso_time(u, m->last_used));
		}
		store_unlock(lfd);
		left--;
		total -= m->archive_bytes;
		removed++;
	}
	if (OVER())
		log_info("cache stays above its limits: the remaining entries are in use or kept");
#undef OVER
	store_list_free(v, n);
	return removed;
}

char *
store_meta_file(const struct store *st, const char *key)
{
	return meta_path(st, key);
}

const char *
store_download_dir(const struct store *st)
{
	return st->tmp_dir;
}
