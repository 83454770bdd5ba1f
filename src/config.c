/*
 * config — see config.h.
 *
 * inih parses the INI text; a line reader of ours sits in front of it so that
 * every message can name "file:line" (the packaged inih is built without
 * INI_HANDLER_LINENO), so that continuation lines are known as such, and so
 * that over-long lines, NUL bytes and invalid UTF-8 are refused instead of
 * silently split.
 */
#include "config.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#include <curl/curl.h>

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAMEDATALEN_MAX 63

enum section_kind {
	SEC_NONE,
	SEC_PGSTASH,
	SEC_DATABASE,
	SEC_STEP,
	SEC_CLONES,
	SEC_REMOTE,
	SEC_TRUST,
	SEC_BAD, /* an unknown section: its keys are not reported again */
};

struct parse_ctx {
	struct cfg *cfg;
	const char *path;
	FILE *f;
	char *linebuf;
	size_t linecap;
	int line;             /* number of the line inih is handling */
	bool continuation;    /* that line starts with blanks */
	bool stop;            /* the reader refused a line */
	int errors;
	int first_error_line;
	enum section_kind sec;
	struct cfg_step *step; /* current [step NAME] */
	struct strlist seen;  /* keys set in the current section */
	struct strlist sections;
	char *last_key;       /* key a continuation line continues */
};

static const char *const pgstash_keys[] = {
	"cache_dir", "cache_mode", "pgdata", "pg_bindir", "compression", "max_bytes", "max_entries",
	"lock_timeout", "step_timeout", "initdb_d", "socket_dir", "docker_socket", "cache_group",
	"local_auth", "on_change", "full_build", NULL,
};
static const char *const database_keys[] = {
	"user", "name", "extra", "initdb_args", "key_env", NULL,
};
static const char *const clones_keys[] = {
	"count", "naming", "pattern", "template", NULL,
};
static const char *const remote_keys[] = {
	"url", "endpoint", "region", "path_style", "timeout", NULL,
};
static const char *const trust_keys[] = {
	"signing_key", "trusted_keys", NULL,
};

/*
 * Settings that name a secret file: the environment only.  A config file
 * usually lives in the repository, so a pull request can change it, and
 * the file would be read as root: access_key_file pointed at another
 * secret sends its content in the Authorization header to an endpoint the
 * same config chose; key_secret_file makes `key --explain` print HMACs
 * under it, to guess offline.  Refused by name, so that the message says
 * what to set instead.
 */
static const struct env_only_key {
	enum section_kind sec;
	const char *key;
	const char *var;
} env_only_keys[] = {
	{SEC_REMOTE, "access_key_file", "AWS_ACCESS_KEY_ID_FILE"},
	{SEC_REMOTE, "secret_key_file", "AWS_SECRET_ACCESS_KEY_FILE"},
	{SEC_TRUST, "key_secret_file", "PGSTASH_KEY_SECRET_FILE"},
};
static const char *const step_keys[] = {
	"root", "migrations", "exclude", "run", "database", "env", "image", "image_id", "layer",
	"incremental", "timeout", "discover", "python", "after", NULL,
};

static void
ctx_error(struct parse_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
ctx_error(struct parse_ctx *ctx, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s:%d: %s", ctx->path, ctx->line, msg);
	if (!ctx->errors)
		ctx->first_error_line = ctx->line;
	ctx->errors++;
}

static char *
join_keys(const char *const *keys)
{
	struct strbuf sb = {0};
	for (size_t i = 0; keys[i]; i++) {
		if (i)
			sb_append(&sb, ", ");
		sb_append(&sb, keys[i]);
	}
	return sb_take(&sb);
}

static bool
key_known(const char *const *keys, const char *name)
{
	for (size_t i = 0; keys[i]; i++)
		if (strcmp(keys[i], name) == 0)
			return true;
	return false;
}

static bool
utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t len;
		unsigned cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			len = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			cp = c & 0x07;
		} else
			return false;
		if (i + len > n)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += len;
	}
	return true;
}

static bool
valid_step_name(const char *s)
{
	if (!*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

static void
begin_section(struct parse_ctx *ctx, const char *raw)
{
	/* raw is the text between '[' and ']', untrimmed. */
	char *name = xstrdup(raw);
	char *s = name;
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';

	sl_free(&ctx->seen);
	free(ctx->last_key);
	ctx->last_key = NULL;
	ctx->step = NULL;

	if (sl_contains(&ctx->sections, s)) {
		ctx_error(ctx, "duplicate section [%s]", s);
		ctx->sec = SEC_BAD;
		free(name);
		return;
	}
	sl_add(&ctx->sections, s);

	if (strcmp(s, "pgstash") == 0)
		ctx->sec = SEC_PGSTASH;
	else if (strcmp(s, "database") == 0)
		ctx->sec = SEC_DATABASE;
	else if (strcmp(s, "remote") == 0)
		ctx->sec = SEC_REMOTE;
	else if (strcmp(s, "trust") == 0)
		ctx->sec = SEC_TRUST;
	else if (strcmp(s, "clones") == 0) {
		ctx->sec = SEC_CLONES;
		ctx->cfg->clones_line = ctx->line;
	} else if (strncmp(s, "step", 4) == 0 && (s[4] == '\0' || isspace((unsigned char)s[4]))) {
		char *sn = s + 4;
		while (isspace((unsigned char)*sn))
			sn++;
		if (!valid_step_name(sn)) {
			ctx_error(ctx, "bad step section [%s]: expected [step NAME] with NAME made of letters, digits, '_', '-', '.' (at most 64)", s);
			ctx->sec = SEC_BAD;
		} else {
			struct cfg *cfg = ctx->cfg;
			cfg->steps = xrealloc(cfg->steps, (cfg->n_steps + 1) * sizeof(*cfg->steps));
			struct cfg_step *st = &cfg->steps[cfg->n_steps++];
			memset(st, 0, sizeof(*st));
			st->name = xstrdup(sn);
			st->file = xstrdup(ctx->path);
			st->line = ctx->line;
			st->layer = CFG_LAYER_SCHEMA;
			ctx->step = st;
			ctx->sec = SEC_STEP;
		}
	} else {
		ctx_error(ctx, "unknown section [%s] (expected [pgstash], [database], [clones], [remote], [trust] or [step NAME])", s);
		ctx->sec = SEC_BAD;
	}
	free(name);
}

/*
 * The reader inih calls for each line.  It hands inih a line at a time and
 * remembers the line number and whether it continues the previous key.
 */
static char *
reader(char *str, int num, void *stream)
{
	struct parse_ctx *ctx = stream;
	if (ctx->stop)
		return NULL;
	errno = 0;
	ssize_t n = getline(&ctx->linebuf, &ctx->linecap, ctx->f);
	if (n < 0) {
		if (errno) {
			ctx->line++;
			ctx_error(ctx, "could not read: %s", strerror(errno));
			ctx->stop = true;
		}
		return NULL;
	}
	ctx->line++;
	if (memchr(ctx->linebuf, '\0', (size_t)n)) {
		ctx_error(ctx, "NUL byte in line: this is not a text file");
		ctx->stop = true;
		return NULL;
	}
	if (!utf8_valid((const unsigned char *)ctx->linebuf, (size_t)n)) {
		ctx_error(ctx, "invalid UTF-8 in line");
		/* Keep parsing to report more, but hand inih a blank line. */
		str[0] = '\n';
		str[1] = '\0';
		ctx->continuation = false;
		return str;
	}
	size_t len = (size_t)n;
	if (len > 0 && ctx->linebuf[len - 1] == '\n')
		len--;
	if (len > 0 && ctx->linebuf[len - 1] == '\r')
		len--;
	if (len + 2 > (size_t)num) {
		ctx_error(ctx, "line too long (%zu bytes; the limit is %d): split a long value over continuation lines "
		          "(lines starting with blanks)", len, num - 2);
		str[0] = '\n';
		str[1] = '\0';
		ctx->continuation = false;
		return str;
	}
	memcpy(str, ctx->linebuf, len);
	str[len] = '\n';
	str[len + 1] = '\0';

	const char *p = str;
	ctx->continuation = len > 0 && (*p == ' ' || *p == '\t');
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '[') {
		const char *close = strchr(p, ']');
		if (!close)
			ctx_error(ctx, "section header without ']'");
		else {
			char *raw = xmalloc((size_t)(close - p));
			memcpy(raw, p + 1, (size_t)(close - p - 1));
			raw[close - p - 1] = '\0';
			begin_section(ctx, raw);
			free(raw);
		}
		ctx->continuation = false;
	}
	return str;
}

static char *
resolve_against(const char *base_file, const char *path)
{
	if (path[0] == '/' || !base_file)
		return xstrdup(path);
	char *dir = xstrdup(base_file);
	char *slash = strrchr(dir, '/');
	char *out;
	if (slash) {
		*slash = '\0';
		out = path_join(*dir ? dir : "/", path);
	} else
		out = xstrdup(path);
	free(dir);
	return out;
}

/* Adds blank-separated words of `value` to `sl`. */
static void
add_words(struct strlist *sl, const char *value)
{
	char *copy = xstrdup(value);
	char *save = NULL;
	for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
		sl_add(sl, w);
	free(copy);
}

static void
set_str(char **dst, const char *value)
{
	free(*dst);
	*dst = *value ? xstrdup(value) : NULL;
}

/* The highest level `compression = NAME:LEVEL` takes; 0: none. */
static long
max_level(enum cfg_compression c)
{
	switch (c) {
	case CFG_COMP_ZSTD: return 19;
	case CFG_COMP_GZIP: return 9;
	case CFG_COMP_NONE: return 0;
	}
	return 0;
}

/*
 * The words of the one-word settings, indexed by their enum (the name
 * functions at the end and the parser below both read these).
 */
static const char *const cache_mode_words[] = {
	[CFG_CACHE_READ_WRITE] = "read-write", [CFG_CACHE_READ_ONLY] = "read-only", [CFG_CACHE_OFF] = "off",
};
static const char *const on_change_words[] = {
	[CFG_ON_CHANGE_REPLACE] = "replace", [CFG_ON_CHANGE_MIGRATE] = "migrate", [CFG_ON_CHANGE_REFUSE] = "refuse",
};
static const char *const local_auth_words[] = {
	[CFG_LOCAL_PASSWORD] = "password", [CFG_LOCAL_PEER] = "peer", [CFG_LOCAL_TRUST] = "trust",
};
#define WORDS(a) (a), (sizeof(a) / sizeof((a)[0]))

/* The index of `value` among `words`; -1 (with why: "expected A, B or C") when absent. */
static int
parse_word(const char *value, const char *const *words, size_t n, const char **why)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(value, words[i]) == 0)
			return (int)i;
	/* Static: why outlives the call (config is read by one thread). */
	static char expected[128];
	size_t len = (size_t)snprintf(expected, sizeof(expected), "expected");
	for (size_t i = 0; i < n && len < sizeof(expected); i++)
		len += (size_t)snprintf(expected + len, sizeof(expected) - len, "%s%s", i == 0 ? " " : i + 1 < n ? ", " : " or ",
		                        words[i]);
	*why = expected;
	return -1;
}

static int
parse_compression(const char *value, enum cfg_compression *c, int *level, const char **why)
{
	char *copy = xstrdup(value);
	char *colon = strchr(copy, ':');
	long lv = 0;
	int rc = -1;
	if (colon)
		*colon++ = '\0';
	for (char *p = copy; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!entry_compression_parse(copy, c)) {
		*why = "expected zstd[:LEVEL], gzip[:LEVEL] or none";
		goto cleanup;
	}
	long max = max_level(*c);
	if (colon) {
		if (max == 0) {
			*why = "none takes no level";
			goto cleanup;
		}
		if (parse_long(colon, 1, max, &lv, why) != 0) {
			*why = max == 19 ? "zstd level must be 1 to 19" : "gzip level must be 1 to 9";
			goto cleanup;
		}
	}
	*level = (int)lv;
	rc = 0;
cleanup:
	free(copy);
	return rc;
}

/* cache_group: a group name or number; empty: none ((gid_t)-1).  0, or -1 with why set. */
static int
parse_group(const char *value, gid_t *out, const char **why)
{
	if (!*value) {
		*out = (gid_t)-1;
		return 0;
	}
	struct group *gr = getgrnam(value);
	if (gr) {
		*out = gr->gr_gid;
		return 0;
	}
	long n;
	if (parse_long(value, 0, INT_MAX - 1, &n, why) == 0) {
		*out = (gid_t)n;
		return 0;
	}
	*why = "no such group";
	return -1;
}

/* Where cfg records that directory setting `key` came from a config file; NULL for other keys. */
static char **
dir_from_file(struct cfg *cfg, const char *key)
{
	if (strcmp(key, "pgdata") == 0)
		return &cfg->pgdata_from_file;
	if (strcmp(key, "cache_dir") == 0)
		return &cfg->cache_dir_from_file;
	if (strcmp(key, "socket_dir") == 0)
		return &cfg->socket_dir_from_file;
	return NULL;
}

int
cfg_set_option(struct cfg *cfg, const char *key, const char *value, const char *where)
{
	const char *why = NULL;
	long lv;
	uint64_t size;

	char **from_file = dir_from_file(cfg, key);
	if (from_file) {
		/* Whoever sets it now: handle_pgstash says afterwards when that was a config file. */
		free(*from_file);
		*from_file = NULL;
	}
	if (strcmp(key, "cache_dir") == 0)
		set_str(&cfg->cache_dir, value);
	else if (strcmp(key, "pgdata") == 0)
		set_str(&cfg->pgdata, value);
	else if (strcmp(key, "pg_bindir") == 0)
		set_str(&cfg->pg_bindir, value);
	else if (strcmp(key, "initdb_d") == 0)
		set_str(&cfg->initdb_d, value);
	else if (strcmp(key, "socket_dir") == 0)
		set_str(&cfg->socket_dir, value);
	else if (strcmp(key, "docker_socket") == 0)
		set_str(&cfg->docker_socket, value);
	else if (strcmp(key, "cache_group") == 0) {
		if (parse_group(value, &cfg->cache_gid, &why) != 0)
			goto bad;
		set_str(&cfg->cache_group, value);
	}
	else if (strcmp(key, "compression") == 0) {
		if (parse_compression(value, &cfg->compression, &cfg->compression_level, &why) != 0)
			goto bad;
	} else if (strcmp(key, "max_bytes") == 0) {
		if (parse_size(value, &size, &why) != 0)
			goto bad;
		cfg->max_bytes = size;
	} else if (strcmp(key, "max_entries") == 0) {
		if (parse_long(value, 0, 1000000, &lv, &why) != 0)
			goto bad;
		cfg->max_entries = lv;
	} else if (strcmp(key, "lock_timeout") == 0) {
		if (parse_long(value, 0, 7 * 24 * 3600, &lv, &why) != 0)
			goto bad;
		cfg->lock_timeout = lv;
	} else if (strcmp(key, "step_timeout") == 0) {
		if (parse_long(value, 0, 7 * 24 * 3600, &lv, &why) != 0)
			goto bad;
		cfg->step_timeout = lv;
	} else if (strcmp(key, "full_build") == 0) {
		if (parse_bool(value, &cfg->full_build, &why) != 0)
			goto bad;
	} else if (strcmp(key, "cache_mode") == 0) {
		int i = parse_word(value, WORDS(cache_mode_words), &why);
		if (i < 0)
			goto bad;
		cfg->cache_mode = (enum cfg_cache_mode)i;
	} else if (strcmp(key, "on_change") == 0) {
		int i = parse_word(value, WORDS(on_change_words), &why);
		if (i < 0)
			goto bad;
		cfg->on_change = (enum cfg_on_change)i;
	} else if (strcmp(key, "local_auth") == 0) {
		int i = parse_word(value, WORDS(local_auth_words), &why);
		if (i < 0)
			goto bad;
		cfg->local_auth = (enum cfg_local_auth)i;
	} else {
		log_error("%s: unknown setting \"%s\"", where, key);
		return -1;
	}
	return 0;
bad:
	log_error("%s: bad value \"%s\" for %s: %s", where, value, key, why);
	return -1;
}

static void
set_from(char **dst, struct parse_ctx *ctx)
{
	free(*dst);
	*dst = xasprintf("%s:%d", ctx->path, ctx->line);
}

static void
handle_database(struct parse_ctx *ctx, const char *name, const char *value)
{
	struct cfg *cfg = ctx->cfg;
	if (strcmp(name, "user") == 0) {
		set_str(&cfg->db_user, value);
		set_from(&cfg->db_user_from, ctx);
	} else if (strcmp(name, "name") == 0) {
		set_str(&cfg->db_name, value);
		set_from(&cfg->db_name_from, ctx);
	} else if (strcmp(name, "extra") == 0) {
		add_words(&cfg->db_extra, value);
		if (!ctx->continuation)
			set_from(&cfg->db_extra_from, ctx);
	} else if (strcmp(name, "key_env") == 0) {
		add_words(&cfg->key_env, value);
		if (!ctx->continuation)
			set_from(&cfg->key_env_from, ctx);
	} else if (strcmp(name, "initdb_args") == 0) {
		if (!ctx->continuation)
			set_from(&cfg->initdb_args_from, ctx);
		if (ctx->continuation && cfg->initdb_args) {
			char *j = xasprintf("%s %s", cfg->initdb_args, value);
			free(cfg->initdb_args);
			cfg->initdb_args = j;
		} else
			set_str(&cfg->initdb_args, value);
	}
}

/* discover = django | alembic [INI] */
static void
set_discover(struct parse_ctx *ctx, struct cfg_step *st, const char *value)
{
	struct strlist words = {0};
	add_words(&words, value);
	st->discover_line = ctx->line;
	free(st->discover_ini);
	st->discover_ini = NULL;
	st->discover = CFG_DISCOVER_NONE;
	if (words.n == 1 && strcmp(words.v[0], "django") == 0)
		st->discover = CFG_DISCOVER_DJANGO;
	else if ((words.n == 1 || words.n == 2) && strcmp(words.v[0], "alembic") == 0) {
		st->discover = CFG_DISCOVER_ALEMBIC;
		if (words.n == 2)
			st->discover_ini = xstrdup(words.v[1]);
	} else if (words.n > 0)
		ctx_error(ctx, "bad value \"%s\" for discover: expected django, or alembic [INI] (default alembic.ini)",
		          value);
	sl_free(&words);
}

static void
handle_step(struct parse_ctx *ctx, const char *name, const char *value)
{
	struct cfg_step *st = ctx->step;
	const char *why;

	if (strcmp(name, "root") == 0) {
		free(st->root);
		st->root = *value ? resolve_against(ctx->path, value) : NULL;
		st->root_line = ctx->line;
	} else if (strcmp(name, "migrations") == 0) {
		add_words(&st->migrations, value);
		if (!st->migrations_line)
			st->migrations_line = ctx->line;
	} else if (strcmp(name, "exclude") == 0)
		add_words(&st->exclude, value);
	else if (strcmp(name, "run") == 0) {
		if (ctx->continuation && st->run) {
			char *j = xasprintf("%s %s", st->run, value);
			free(st->run);
			st->run = j;
		} else {
			set_str(&st->run, value);
			st->run_line = ctx->line;
		}
	} else if (strcmp(name, "database") == 0) {
		set_str(&st->database, value);
		st->database_line = ctx->line;
	} else if (strcmp(name, "env") == 0) {
		const char *eq = strchr(value, '=');
		bool ok = eq && eq > value;
		for (const char *p = value; ok && p < eq; p++)
			if (!(isalnum((unsigned char)*p) || *p == '_') || (p == value && isdigit((unsigned char)*p)))
				ok = false;
		if (!ok) {
			/* Show the name only: the value may be a secret. */
			ctx_error(ctx, "bad env entry: expected NAME=value (one per line), NAME made of letters, digits and '_'");
			return;
		}
		sl_add(&st->env, value);
	} else if (strcmp(name, "image") == 0)
		set_str(&st->image, value);
	else if (strcmp(name, "layer") == 0) {
		if (!entry_layer_parse(value, &st->layer))
			ctx_error(ctx, "bad value \"%s\" for layer: expected schema or fixtures", value);
	} else if (strcmp(name, "image_id") == 0) {
		if (parse_bool(value, &st->image_id, &why) != 0)
			ctx_error(ctx, "bad value \"%s\" for image_id: %s", value, why);
	} else if (strcmp(name, "incremental") == 0) {
		if (parse_bool(value, &st->incremental, &why) != 0)
			ctx_error(ctx, "bad value \"%s\" for incremental: %s", value, why);
	} else if (strcmp(name, "timeout") == 0) {
		long lv;
		if (parse_long(value, 0, 7 * 24 * 3600, &lv, &why) != 0)
			ctx_error(ctx, "bad value \"%s\" for timeout: %s (seconds, 0 for none)", value, why);
		else
			st->timeout = lv;
	} else if (strcmp(name, "discover") == 0)
		set_discover(ctx, st, value);
	else if (strcmp(name, "python") == 0)
		set_str(&st->python, value);
	else if (strcmp(name, "after") == 0) {
		add_words(&st->after, value);
		if (!st->after_line)
			st->after_line = ctx->line;
	}
}

static void
handle_clones(struct parse_ctx *ctx, const char *name, const char *value)
{
	struct cfg *cfg = ctx->cfg;
	const char *why;
	if (strcmp(name, "count") == 0) {
		if (parse_long(value, 0, 64, &cfg->clone_count, &why) != 0)
			ctx_error(ctx, "bad value \"%s\" for count: %s (0 to 64)", value, why);
	} else if (strcmp(name, "naming") == 0) {
		if (strcmp(value, "django") != 0 && strcmp(value, "xdist") != 0 && strcmp(value, "pattern") != 0)
			ctx_error(ctx, "bad value \"%s\" for naming: expected django, xdist or pattern", value);
		else
			set_str(&cfg->clone_naming, value);
	} else if (strcmp(name, "pattern") == 0) {
		if (!strstr(value, "{n}") && !strstr(value, "{i}"))
			ctx_error(ctx, "bad value \"%s\" for pattern: it must contain {n} (1..N) or {i} (0..N-1)", value);
		else
			set_str(&cfg->clone_pattern, value);
	} else if (strcmp(name, "template") == 0)
		set_str(&cfg->clone_template, value);
}

/* Reads a secret file (as the shell's $(< file): trailing newlines go); NULL on error, logged by the caller. */
static char *
read_secret(const char *path, const char **why)
{
	size_t len;
	char *data = read_secret_file(path, SECRET_FILE_MAX, &len);
	if (!data) {
		*why = read_small_file_error(errno);
		return NULL;
	}
	if (memchr(data, '\0', len)) {
		explicit_bzero(data, len);
		free(data);
		*why = "the file contains a NUL byte";
		return NULL;
	}
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		data[--len] = '\0';
	return data;
}

static void
handle_remote(struct parse_ctx *ctx, const char *name, const char *value)
{
	struct remote_cfg *rc = &ctx->cfg->remote;
	const char *why;
	if (strcmp(name, "url") == 0)
		set_str(&rc->url, value);
	else if (strcmp(name, "endpoint") == 0)
		set_str(&rc->endpoint, value);
	else if (strcmp(name, "region") == 0)
		set_str(&rc->region, value);
	else if (strcmp(name, "path_style") == 0) {
		if (parse_bool(value, &rc->path_style, &why) != 0)
			ctx_error(ctx, "bad value \"%s\" for path_style: %s", value, why);
	} else if (strcmp(name, "timeout") == 0) {
		if (parse_long(value, 1, 3600, &rc->timeout_s, &why) != 0)
			ctx_error(ctx, "bad value \"%s\" for timeout: %s (1 to 3600 seconds)", value, why);
	}
}

/*
 * Replaces the key secret by the content of `path` (PGSTASH_KEY_SECRET_FILE,
 * read now, as root before the privilege drop, as the password file is).
 * NULL, or why not.
 */
static const char *
load_key_secret(struct trust_cfg *t, const char *path)
{
	const char *why = NULL;
	char *secret = read_secret(path, &why);
	if (!secret)
		return why;
	if (!*secret) {
		free(secret);
		return "the file is empty";
	}
	if (t->key_secret)
		explicit_bzero(t->key_secret, strlen(t->key_secret));
	free(t->key_secret);
	t->key_secret = secret;
	return NULL;
}

/*
 * [trust]: key files, relative to the config file (read by sign_load, which
 * names them in errors).  Unlike the secret files (env_only_keys) their
 * content stays in the process: a signature or a fingerprint goes out,
 * never the key.
 */
static void
handle_trust(struct parse_ctx *ctx, const char *name, const char *value)
{
	struct trust_cfg *t = &ctx->cfg->trust;
	if (strcmp(name, "signing_key") == 0) {
		free(t->signing_key);
		t->signing_key = *value ? resolve_against(ctx->path, value) : NULL;
		return;
	}
	struct strlist words = {0};
	add_words(&words, value);
	sl_free(&t->trusted_keys);
	for (size_t i = 0; i < words.n; i++) {
		char *path = resolve_against(ctx->path, words.v[i]);
		sl_add(&t->trusted_keys, path);
		free(path);
	}
	sl_free(&words);
}

/* Replaces every `from` in `s` by `to`; returns a new string. */
static char *
replace_all(const char *s, const char *from, const char *to)
{
	struct strbuf sb = {0};
	size_t fl = strlen(from);
	for (const char *p = s; *p;) {
		if (strncmp(p, from, fl) == 0) {
			sb_append(&sb, to);
			p += fl;
		} else
			sb_appendc(&sb, *p++);
	}
	return sb_take(&sb);
}

void
cfg_clone_names(const struct cfg *cfg, struct strlist *out)
{
	const char *db = cfg->clone_template ? cfg->clone_template : cfg->db_name;
	const char *naming = cfg->clone_naming ? cfg->clone_naming : "django";
	if (cfg->clone_count <= 0 || !db)
		return;
	if (strcmp(naming, "django") == 0) {
		/* manage.py test --keepdb --parallel N: test_DB, then test_DB_1..N cloned from it. */
		char *t = xasprintf("test_%s", db);
		sl_add_owned(out, t);
		for (long n = 1; n <= cfg->clone_count; n++)
			sl_add_owned(out, xasprintf("test_%s_%ld", db, n));
	} else if (strcmp(naming, "xdist") == 0) {
		/* pytest-django under xdist: test_DB_gw0..gwN-1. */
		for (long i = 0; i < cfg->clone_count; i++)
			sl_add_owned(out, xasprintf("test_%s_gw%ld", db, i));
	} else {
		for (long i = 0; i < cfg->clone_count; i++) {
			char nbuf[24], ibuf[24];
			snprintf(nbuf, sizeof(nbuf), "%ld", i + 1);
			snprintf(ibuf, sizeof(ibuf), "%ld", i);
			char *a = replace_all(cfg->clone_pattern ? cfg->clone_pattern : "{db}_{n}", "{db}", db);
			char *b2 = replace_all(a, "{n}", nbuf);
			sl_add_owned(out, replace_all(b2, "{i}", ibuf));
			free(a);
			free(b2);
		}
	}
}

/* Keys whose continuation lines add to the value. */
static bool
multi_line_key(enum section_kind sec, const char *name)
{
	if (sec == SEC_DATABASE)
		return strcmp(name, "extra") == 0 || strcmp(name, "initdb_args") == 0 || strcmp(name, "key_env") == 0;
	if (sec == SEC_STEP)
		return strcmp(name, "migrations") == 0 || strcmp(name, "exclude") == 0 ||
		       strcmp(name, "env") == 0 || strcmp(name, "run") == 0;
	return false;
}

/* Keys that may be given on several lines (each adds). */
static bool
repeatable_key(enum section_kind sec, const char *name)
{
	return (sec == SEC_STEP && (strcmp(name, "env") == 0 || strcmp(name, "migrations") == 0 ||
	                            strcmp(name, "exclude") == 0)) ||
	       (sec == SEC_DATABASE && (strcmp(name, "extra") == 0 || strcmp(name, "key_env") == 0));
}

/* The keys of a section that takes keys, and its name for messages. */
static void
section_keys(enum section_kind sec, const char *const **keys, const char **secname)
{
	switch (sec) {
	case SEC_NONE:
	case SEC_BAD:
	case SEC_STEP:
		*keys = step_keys;
		*secname = "[step]";
		return;
	case SEC_PGSTASH:
		*keys = pgstash_keys;
		*secname = "[pgstash]";
		return;
	case SEC_DATABASE:
		*keys = database_keys;
		*secname = "[database]";
		return;
	case SEC_CLONES:
		*keys = clones_keys;
		*secname = "[clones]";
		return;
	case SEC_REMOTE:
		*keys = remote_keys;
		*secname = "[remote]";
		return;
	case SEC_TRUST:
		*keys = trust_keys;
		*secname = "[trust]";
		return;
	}
}

/* Whether `name` is one of env_only_keys in this section: then reported, its file never opened. */
static bool
refuse_env_only_key(struct parse_ctx *ctx, const char *name)
{
	for (size_t i = 0; i < sizeof(env_only_keys) / sizeof(env_only_keys[0]); i++) {
		const struct env_only_key *k = &env_only_keys[i];
		if (k->sec == ctx->sec && strcmp(k->key, name) == 0) {
			ctx_error(ctx,
			          "%s: secret files are not read from a config file (a pull request can change it and point "
			          "this at another secret); set %s in the environment instead",
			          name, k->var);
			return true;
		}
	}
	return false;
}

/*
 * Whether key `name` may be set here: known in the section, continued only
 * when it takes several values, repeated only when it adds.  false when not
 * (reported).
 */
static bool
key_allowed(struct parse_ctx *ctx, const char *name)
{
	const char *const *keys = step_keys;
	const char *secname = "[step]";

	section_keys(ctx->sec, &keys, &secname);
	if (refuse_env_only_key(ctx, name))
		return false;
	if (!key_known(keys, name)) {
		char *list = join_keys(keys);
		ctx_error(ctx, "unknown key \"%s\" in %s (expected one of: %s)", name, secname, list);
		free(list);
		return false;
	}
	if (ctx->continuation) {
		if (!multi_line_key(ctx->sec, name)) {
			ctx_error(ctx, "continuation line for \"%s\", which takes a single value", name);
			return false;
		}
	} else if (sl_contains(&ctx->seen, name) && !repeatable_key(ctx->sec, name)) {
		ctx_error(ctx, "duplicate key \"%s\" in %s", name, secname);
		return false;
	}
	if (!ctx->continuation)
		sl_add(&ctx->seen, name);
	return true;
}

static void
handle_pgstash(struct parse_ctx *ctx, const char *name, const char *value)
{
	char *where = xasprintf("%s:%d", ctx->path, ctx->line);
	if (cfg_set_option(ctx->cfg, name, value, where) != 0) {
		if (!ctx->errors)
			ctx->first_error_line = ctx->line;
		ctx->errors++;
	}
	char **from_file = dir_from_file(ctx->cfg, name);
	if (from_file)
		*from_file = xstrdup(where);
	free(where);
	/* Relative paths in a file are taken from the file's directory. */
	char **pathkey = NULL;
	if (strcmp(name, "cache_dir") == 0)
		pathkey = &ctx->cfg->cache_dir;
	else if (strcmp(name, "pgdata") == 0)
		pathkey = &ctx->cfg->pgdata;
	else if (strcmp(name, "initdb_d") == 0)
		pathkey = &ctx->cfg->initdb_d;
	if (pathkey && *pathkey && (*pathkey)[0] != '/') {
		char *abs = resolve_against(ctx->path, *pathkey);
		free(*pathkey);
		*pathkey = abs;
	}
}

/* inih's handler: returns non-zero to mean "fine" (inih's convention); our errors are counted in ctx. */
static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *ctx = user;
	(void)section;

	switch (ctx->sec) {
	case SEC_BAD:
		return 1;
	case SEC_NONE:
		ctx_error(ctx, "key \"%s\" outside any section (expected [pgstash], [database] or [step NAME] first)", name);
		return 1;
	case SEC_PGSTASH:
	case SEC_DATABASE:
	case SEC_CLONES:
	case SEC_REMOTE:
	case SEC_TRUST:
	case SEC_STEP:
		break;
	}
	if (!key_allowed(ctx, name))
		return 1;
	switch (ctx->sec) {
	case SEC_PGSTASH:
		handle_pgstash(ctx, name, value);
		break;
	case SEC_DATABASE:
		handle_database(ctx, name, value);
		break;
	case SEC_CLONES:
		handle_clones(ctx, name, value);
		break;
	case SEC_REMOTE:
		handle_remote(ctx, name, value);
		break;
	case SEC_TRUST:
		handle_trust(ctx, name, value);
		break;
	case SEC_STEP:
		handle_step(ctx, name, value);
		break;
	case SEC_NONE:
	case SEC_BAD:
		break;
	}
	return 1;
}

void
cfg_defaults(struct cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->cache_dir = xstrdup("/var/cache/pgstash");
	cfg->pgdata = xstrdup("/var/lib/postgresql/data");
	cfg->compression = CFG_COMP_ZSTD;
	cfg->max_bytes = 10ULL << 30;
	cfg->max_entries = 20;
	cfg->lock_timeout = 900;
	cfg->step_timeout = 0;
	cfg->db_user = xstrdup("postgres");
	cfg->initdb_d = xstrdup("/docker-entrypoint-initdb.d");
	cfg->socket_dir = xstrdup("/var/run/postgresql");
	cfg->docker_socket = xstrdup("/var/run/docker.sock");
	cfg->cache_gid = (gid_t)-1;
}

static char *
absolute_path(const char *path)
{
	if (path[0] == '/')
		return xstrdup(path);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return xstrdup(path);
	return path_join(cwd, path);
}

int
cfg_load_ini(struct cfg *cfg, const char *path)
{
	struct parse_ctx ctx = {0};
	int rc = -1;
	char *abs = absolute_path(path);

	ctx.cfg = cfg;
	ctx.path = abs;
	ctx.sec = SEC_NONE;
	ctx.f = fopen(path, "re");
	if (!ctx.f) {
		log_error("could not open configuration file \"%s\": %s", path, strerror(errno));
		goto cleanup;
	}
	struct stat st;
	if (fstat(fileno(ctx.f), &st) == 0 && S_ISDIR(st.st_mode)) {
		log_error("configuration file \"%s\" is a directory", path);
		goto cleanup;
	}
	free(cfg->config_file);
	cfg->config_file = xstrdup(abs);

	int r = ini_parse_stream(reader, &ctx, handler, &ctx);
	if (r > 0 && (!ctx.errors || r < ctx.first_error_line)) {
		/* inih's own complaint: a line that is neither a section, a key nor a comment. */
		log_error("%s:%d: syntax error: expected \"key = value\", \"[section]\" or a comment", abs, r);
		ctx.errors++;
	} else if (r == -2) {
		log_error("%s: out of memory while parsing", abs);
		ctx.errors++;
	}
	rc = ctx.errors ? -1 : 0;
cleanup:
	if (ctx.f)
		fclose(ctx.f);
	free(ctx.linebuf);
	sl_free(&ctx.seen);
	sl_free(&ctx.sections);
	free(ctx.last_key);
	free(abs);
	return rc;
}

int
cfg_load_file(struct cfg *cfg, const char *explicit_path)
{
	if (explicit_path)
		return cfg_load_ini(cfg, explicit_path);
	const char *envp = getenv("PGSTASH_CONFIG");
	if (envp && *envp)
		return cfg_load_ini(cfg, envp);
	if (access(CFG_DEFAULT_FILE, F_OK) == 0)
		return cfg_load_ini(cfg, CFG_DEFAULT_FILE);
	return 0;
}

/*
 * The official image's file_env: VAR or VAR_FILE, not both.  Returns 0 and a
 * malloc'ed value (NULL when neither is set or the value is empty), or -1.
 */
static int
file_env(const char *var, char **out)
{
	char *fvar = xasprintf("%s_FILE", var);
	const char *v = getenv(var);
	const char *fv = getenv(fvar);
	int rc = -1;
	*out = NULL;

	if (v && *v && fv && *fv) {
		log_error("both %s and %s are set (but are exclusive)", var, fvar);
		goto cleanup;
	}
	if (fv && *fv) {
		const char *why;
		char *data = read_secret(fv, &why);
		if (!data) {
			log_error("%s: could not read secret file \"%s\": %s", fvar, fv, why);
			goto cleanup;
		}
		if (*data)
			*out = data;
		else
			free(data);
	} else if (v && *v)
		*out = xstrdup(v);
	rc = 0;
cleanup:
	free(fvar);
	return rc;
}

/* The [pgstash] keys the environment sets, by variable. */
static int
load_option_vars(struct cfg *cfg)
{
	static const struct {
		const char *env;
		const char *key;
	} map[] = {
		{"PGSTASH_CACHE_DIR", "cache_dir"},
		{"PGSTASH_CACHE_MODE", "cache_mode"},
		{"PGDATA", "pgdata"},
		{"PGSTASH_PG_BINDIR", "pg_bindir"},
		{"PGSTASH_COMPRESSION", "compression"},
		{"PGSTASH_MAX_BYTES", "max_bytes"},
		{"PGSTASH_MAX_ENTRIES", "max_entries"},
		{"PGSTASH_LOCK_TIMEOUT", "lock_timeout"},
		{"PGSTASH_STEP_TIMEOUT", "step_timeout"},
		{"PGSTASH_INITDB_D", "initdb_d"},
		{"PGSTASH_SOCKET_DIR", "socket_dir"},
		{"PGSTASH_DOCKER_SOCKET", "docker_socket"},
		{"PGSTASH_CACHE_GROUP", "cache_group"},
		{"PGSTASH_LOCAL_AUTH", "local_auth"},
		{"PGSTASH_ON_CHANGE", "on_change"},
		{"PGSTASH_FULL_BUILD", "full_build"},
	};
	int errors = 0;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		const char *v = getenv(map[i].env);
		if (!v || !*v)
			continue;
		char *where = xasprintf("environment variable %s", map[i].env);
		if (cfg_set_option(cfg, map[i].key, v, where) != 0)
			errors++;
		free(where);
	}
	return errors;
}

/* How a variable of env_vars sets its field. */
enum env_kind {
	ENV_PLAIN,   /* VAR: the string */
	ENV_SECRET,  /* VAR or VAR_FILE (file_env): the string */
	ENV_SECONDS, /* VAR: a long, 1 to 3600 */
};

/* Where a field's origin is recorded, for messages. */
enum env_from {
	FROM_NONE,
	FROM_SET,    /* the variable that was set: VAR or VAR_FILE */
	FROM_VAR,    /* VAR, even when VAR_FILE was set */
};

/* The official image's variables and the remote's, in the order they are read (and their errors reported). */
static const struct env_var {
	const char *var;
	enum env_kind kind;
	size_t field;       /* offset in struct cfg of a char * (a long for ENV_SECONDS) */
	enum env_from from;
	size_t from_field;  /* offset in struct cfg of the char * recording the origin */
	bool secret;        /* the old value is zeroed before it is freed */
} env_vars[] = {
	{"POSTGRES_USER", ENV_SECRET, offsetof(struct cfg, db_user), FROM_SET, offsetof(struct cfg, db_user_from), false},
	{"POSTGRES_PASSWORD", ENV_SECRET, offsetof(struct cfg, db_password), FROM_NONE, 0, false},
	{"POSTGRES_DB", ENV_SECRET, offsetof(struct cfg, db_name), FROM_SET, offsetof(struct cfg, db_name_from), false},
	{"POSTGRES_INITDB_ARGS", ENV_SECRET, offsetof(struct cfg, initdb_args), FROM_VAR,
	 offsetof(struct cfg, initdb_args_from), false},
	{"POSTGRES_INITDB_WALDIR", ENV_PLAIN, offsetof(struct cfg, initdb_waldir), FROM_NONE, 0, false},
	{"POSTGRES_HOST_AUTH_METHOD", ENV_PLAIN, offsetof(struct cfg, host_auth_method), FROM_NONE, 0, false},
	/* The remote: plain variables, and the AWS keys (with their *_FILE forms). */
	{"PGSTASH_SIGNING_KEY_FILE", ENV_PLAIN, offsetof(struct cfg, trust.signing_key), FROM_NONE, 0, false},
	{"PGSTASH_REMOTE_URL", ENV_PLAIN, offsetof(struct cfg, remote.url), FROM_NONE, 0, false},
	{"PGSTASH_REMOTE_ENDPOINT", ENV_PLAIN, offsetof(struct cfg, remote.endpoint), FROM_NONE, 0, false},
	{"AWS_REGION", ENV_PLAIN, offsetof(struct cfg, remote.region), FROM_NONE, 0, false},
	{"PGSTASH_REMOTE_TIMEOUT", ENV_SECONDS, offsetof(struct cfg, remote.timeout_s), FROM_NONE, 0, false},
	{"AWS_ACCESS_KEY_ID", ENV_SECRET, offsetof(struct cfg, remote.access_key), FROM_NONE, 0, false},
	{"AWS_SECRET_ACCESS_KEY", ENV_SECRET, offsetof(struct cfg, remote.secret_key), FROM_NONE, 0, true},
};

static char **
str_field(struct cfg *cfg, size_t off)
{
	return (char **)(void *)((char *)cfg + off);
}

/* Replaces the string at *dst by `v` (taken). */
static void
replace_str(char **dst, char *v, bool secret)
{
	if (secret && *dst)
		explicit_bzero(*dst, strlen(*dst));
	free(*dst);
	*dst = v;
}

/* Applies one variable of env_vars.  0 or -1 (logged). */
static int
load_env_var(struct cfg *cfg, const struct env_var *e)
{
	const char *w = getenv(e->var);
	const char *why;
	char *v;

	switch (e->kind) {
	case ENV_PLAIN:
		if (w && *w)
			set_str(str_field(cfg, e->field), w);
		return 0;
	case ENV_SECONDS:
		if (w && *w && parse_long(w, 1, 3600, (long *)(void *)((char *)cfg + e->field), &why) != 0) {
			log_error("environment variable %s: bad value \"%s\": %s", e->var, w, why);
			return -1;
		}
		return 0;
	case ENV_SECRET:
		if (file_env(e->var, &v) != 0)
			return -1;
		if (!v)
			return 0;
		replace_str(str_field(cfg, e->field), v, e->secret);
		if (e->from != FROM_NONE) {
			char *fvar = xasprintf("%s_FILE", e->var);
			const char *fv = getenv(fvar);
			bool file = e->from == FROM_SET && fv && *fv;
			replace_str(str_field(cfg, e->from_field), file ? fvar : xstrdup(e->var), false);
			if (!file)
				free(fvar);
		}
		return 0;
	}
	return 0;
}

/* initdb writes TZ into postgresql.conf and takes its locale from LANG and LC_*: a start depends on them. */
const char *const cfg_start_env_names[] = {
	"TZ", "LANG", "LC_ALL", "LC_COLLATE", "LC_CTYPE", "LC_MESSAGES", "LC_MONETARY", "LC_NUMERIC", "LC_TIME", NULL,
};

int
cfg_load_env(struct cfg *cfg)
{
	int errors = load_option_vars(cfg);

	sl_free(&cfg->start_env);
	for (const char *const *n = cfg_start_env_names; *n; n++) {
		const char *v = getenv(*n);
		if (v && *v)
			sl_add_owned(&cfg->start_env, xasprintf("%s=%s", *n, v));
	}

	for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
		if (load_env_var(cfg, &env_vars[i]) != 0)
			errors++;
	const char *tk = getenv("PGSTASH_TRUSTED_KEYS");
	if (tk && *tk) {
		sl_free(&cfg->trust.trusted_keys);
		add_words(&cfg->trust.trusted_keys, tk);
	}
	const char *ks = getenv("PGSTASH_KEY_SECRET_FILE");
	if (ks && *ks) {
		const char *why = load_key_secret(&cfg->trust, ks);
		if (why) {
			log_error("PGSTASH_KEY_SECRET_FILE: could not read \"%s\": %s", ks, why);
			errors++;
		}
	}
	/* The official image's rule: POSTGRES_DB defaults to POSTGRES_USER. */
	if (!cfg->db_name && cfg->db_user) {
		cfg->db_name = xstrdup(cfg->db_user);
		free(cfg->db_name_from);
		cfg->db_name_from = cfg->db_user_from ? xstrdup(cfg->db_user_from) : NULL;
	}
	return errors ? -1 : 0;
}

/* ---- [remote] ---- */

static bool
bucket_name_ok(const char *b)
{
	size_t n = strlen(b);
	if (n < 3 || n > 63)
		return false;
	for (const char *p = b; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return false;
	}
	return isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]);
}

static bool
prefix_ok(const char *prefix)
{
	if (strstr(prefix, "//") || strchr(prefix, '?') || strchr(prefix, '#'))
		return false;
	for (const char *c = prefix; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return false;
	return true;
}

int
cfg_remote_parse_url(const char *url, char **bucket, char **prefix)
{
	*bucket = *prefix = NULL;
	if (!url || strncmp(url, "s3://", 5) != 0)
		return -1;
	const char *b = url + 5;
	size_t bl = strcspn(b, "/");
	const char *p = b + bl;
	while (*p == '/')
		p++;
	size_t pl = strlen(p);
	while (pl > 0 && p[pl - 1] == '/')
		pl--;
	if (bl == 0)
		return -1;
	*bucket = xasprintf("%.*s", (int)bl, b);
	*prefix = xasprintf("%.*s", (int)pl, p);
	if (!bucket_name_ok(*bucket) || !prefix_ok(*prefix)) {
		free(*bucket);
		free(*prefix);
		*bucket = *prefix = NULL;
		return -1;
	}
	return 0;
}

const char *
cfg_remote_region(const struct remote_cfg *rc)
{
	return rc->region && rc->region[0] ? rc->region : REMOTE_DEFAULT_REGION;
}

void
cfg_endpoint_free(struct cfg_endpoint *ep)
{
	free(ep->scheme);
	free(ep->host);
	free(ep->port);
	memset(ep, 0, sizeof(*ep));
}

int
cfg_remote_endpoint(const struct remote_cfg *rc, struct cfg_endpoint *ep, const char **why)
{
	char *def = NULL, *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL;
	const char *url = rc->endpoint;
	CURLU *u = curl_url();
	int ret = -1;

	memset(ep, 0, sizeof(*ep));
	if (!u) {
		*why = "out of memory";
		return -1;
	}
	if (!url || !*url)
		url = def = xasprintf("https://s3.%s.amazonaws.com", cfg_remote_region(rc));
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		*why = "not a URL";
		goto cleanup;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_PORT, &port, 0);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	curl_url_get(u, CURLUPART_QUERY, &query, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		*why = "the scheme must be http or https";
		goto cleanup;
	}
	if (!host || !*host) {
		*why = "no host";
		goto cleanup;
	}
	if ((path && strcmp(path, "/") != 0 && *path) || query || user) {
		*why = "an endpoint is scheme://host[:port] only (no path, query or user)";
		goto cleanup;
	}
	ep->scheme = xstrdup(scheme);
	ep->host = xstrdup(host);
	ep->port = port ? xstrdup(port) : NULL;
	ret = 0;
cleanup:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(query);
	curl_free(user);
	curl_url_cleanup(u);
	free(def);
	return ret;
}

static bool
host_is_dns_name(const char *host)
{
	if (host[0] == '[' || strcmp(host, "localhost") == 0)
		return false;
	for (const char *p = host; *p; p++) {
		if (!isdigit((unsigned char)*p) && *p != '.')
			return true;
	}
	return false; /* an IPv4 literal */
}

/* The endpoint against the addressing style and the bucket.  Returns the number of problems (logged). */
static int
validate_remote_endpoint(const struct remote_cfg *rc, const char *bucket)
{
	struct cfg_endpoint ep;
	const char *why = NULL;
	int bad = 0;
	if (cfg_remote_endpoint(rc, &ep, &why) != 0) {
		log_error("[remote] endpoint \"%s\": %s", rc->endpoint ? rc->endpoint : "", why);
		return 1;
	}
	if (!rc->path_style && !host_is_dns_name(ep.host)) {
		log_error("[remote] endpoint \"%s\": an IP address or localhost needs path_style = yes", rc->endpoint);
		bad = 1;
	}
	if (!rc->path_style && bucket && strchr(bucket, '.') && strcmp(ep.scheme, "https") == 0) {
		log_error("[remote] bucket \"%s\" has dots, which TLS certificates do not cover in virtual-host "
		          "style: set path_style = yes", bucket);
		bad = 1;
	}
	cfg_endpoint_free(&ep);
	return bad;
}

/* The region, the keys and the timeout.  Returns the number of problems (logged). */
static int
validate_remote_access(const struct remote_cfg *rc)
{
	int bad = 0;
	for (const char *p = cfg_remote_region(rc); *p; p++) {
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-') {
			log_error("[remote] region \"%s\": expected something like us-east-1", cfg_remote_region(rc));
			bad = 1;
			break;
		}
	}
	bool ak = rc->access_key && rc->access_key[0], sk = rc->secret_key && rc->secret_key[0];
	if (ak != sk) {
		log_error("[remote] needs both an access key and a secret key, or neither (anonymous access)");
		bad = 1;
	}
	if (ak && (strchr(rc->access_key, '\n') || strchr(rc->access_key, '/'))) {
		log_error("[remote] the access key contains a character access keys never have");
		bad = 1;
	}
	if (rc->timeout_s < 0 || rc->timeout_s > 3600) {
		log_error("[remote] timeout %ld: expected 1 to 3600 seconds", rc->timeout_s);
		bad = 1;
	}
	return bad;
}

/*
 * [remote], when a url is set: url syntax and bucket name, endpoint (http or
 * https, no path), region, both keys or neither, timeout, virtual-host style
 * only with a DNS name.  1 when anything is wrong (every problem logged), else 0.
 */
static int
validate_remote(const struct remote_cfg *rc)
{
	char *bucket = NULL, *prefix = NULL;
	int bad = 0;

	if (!rc->url || !rc->url[0])
		return 0;
	if (cfg_remote_parse_url(rc->url, &bucket, &prefix) != 0) {
		log_error("[remote] url \"%s\": expected s3://BUCKET[/PREFIX] with a valid bucket name", rc->url);
		bad = 1;
	}
	bad |= validate_remote_endpoint(rc, bucket);
	bad |= validate_remote_access(rc);
	free(bucket);
	free(prefix);
	return bad;
}

static bool
valid_identifier(const char *s)
{
	return s && *s && strlen(s) <= NAMEDATALEN_MAX;
}

/* [pgstash]: the paths everything else is under.  Returns the number of problems (logged). */
static int
validate_paths(const struct cfg *cfg)
{
	int errors = 0;
	if (!cfg->cache_dir) {
		log_error("cache_dir is empty");
		errors++;
	}
	if (!cfg->pgdata) {
		log_error("pgdata (PGDATA) is empty");
		errors++;
	}
	return errors;
}

/* A shell variable name: [A-Za-z_][A-Za-z0-9_]*. */
static bool
env_name_ok(const char *s)
{
	if (!*s || isdigit((unsigned char)*s))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

/* [database]: user, name, extra, key_env.  Returns the number of problems (logged). */
static int
validate_database(const struct cfg *cfg, const char *dbname)
{
	int errors = 0;
	const char *uf = cfg->db_user_from ? cfg->db_user_from : "[database] user";
	const char *nf = cfg->db_name_from ? cfg->db_name_from : "[database] name";
	const char *xf = cfg->db_extra_from ? cfg->db_extra_from : "[database] extra";
	if (!valid_identifier(cfg->db_user)) {
		log_error("%s: database user must be 1 to %d bytes", uf, NAMEDATALEN_MAX);
		errors++;
	}
	if (!valid_identifier(dbname)) {
		log_error("%s: database name must be 1 to %d bytes", nf, NAMEDATALEN_MAX);
		errors++;
	}
	for (size_t i = 0; i < cfg->key_env.n; i++) {
		const char *k = cfg->key_env.v[i];
		if (!env_name_ok(k)) {
			log_error("%s: key_env \"%s\" is not a variable name (letters, digits, '_', not starting with a digit)",
			          cfg->key_env_from ? cfg->key_env_from : "[database] key_env", k);
			errors++;
		}
	}
	for (size_t i = 0; i < cfg->db_extra.n; i++) {
		const char *x = cfg->db_extra.v[i];
		if (!valid_identifier(x)) {
			log_error("%s: extra database name \"%s\" must be 1 to %d bytes", xf, x, NAMEDATALEN_MAX);
			errors++;
		}
		bool dup = dbname && strcmp(x, dbname) == 0;
		for (size_t j = 0; j < i; j++)
			dup = dup || strcmp(x, cfg->db_extra.v[j]) == 0;
		if (dup) {
			log_error("%s: database \"%s\" is listed twice (with [database] name/extra or POSTGRES_DB)", xf, x);
			errors++;
		}
	}
	return errors;
}

/*
 * Whether initdb word `w` is its --pwfile option, in any form getopt_long
 * takes: --pwfile=FILE, --pwfile FILE, or a prefix no shorter than "--pwf".
 */
static bool
is_pwfile_option(const char *w)
{
	static const char opt[] = "--pwfile";
	size_t n = strcspn(w, "=");
	return n >= 5 && n < sizeof(opt) && strncmp(w, opt, n) == 0;
}

/*
 * initdb_args' words: splittable and, from a config file, no --pwfile.  A
 * file (which a pull request may change) naming a readable secret would put
 * its hash into the cache entry, and maybe into a bucket.  Returns the number
 * of problems (logged).
 */
static int
validate_initdb_words(const struct cfg *cfg)
{
	const char *from = cfg->initdb_args_from ? cfg->initdb_args_from : "initdb_args";
	const char *why = NULL;
	char **words = proc_split_argv(cfg->initdb_args, &why);
	if (!words) {
		/* The splitter's hint is about steps: say it for initdb. */
		log_error("%s: bad initdb arguments: %s", from,
		          strncmp(why, "shell syntax", 12) == 0 ? "shell syntax is not supported (quote the word)" : why);
		return 1;
	}
	bool from_file = cfg->initdb_args_from && strcmp(cfg->initdb_args_from, "POSTGRES_INITDB_ARGS") != 0;
	int errors = 0;
	for (char **w = words; from_file && *w && !errors; w++)
		if (is_pwfile_option(*w)) {
			log_error("%s: initdb_args may not name a password file (\"%s\") in a config file: set "
			          "POSTGRES_INITDB_ARGS in the environment instead",
			          from, *w);
			errors++;
		}
	proc_argv_free(words);
	return errors;
}

/* initdb_args and the host auth method.  Returns the number of problems (logged). */
static int
validate_initdb(const struct cfg *cfg)
{
	static const char *const methods[] = {
		"trust", "reject", "scram-sha-256", "md5", "password", "gss", "sspi", "ident", "peer",
		"ldap", "radius", "cert", "pam", "bsd", NULL,
	};
	int errors = 0;
	if (cfg->initdb_args)
		errors += validate_initdb_words(cfg);
	if (cfg->host_auth_method && !key_known(methods, cfg->host_auth_method)) {
		log_error("POSTGRES_HOST_AUTH_METHOD=\"%s\" is not a pg_hba.conf method (trust, scram-sha-256, md5, ...)",
		          cfg->host_auth_method);
		errors++;
	}
	return errors;
}

/* [clones], when clone_count > 0.  Returns the number of problems (logged). */
static int
validate_clones(const struct cfg *cfg, const char *dbname)
{
	int errors = 0;
	const char *cf = cfg->config_file ? cfg->config_file : "config";
	const char *tmpl = cfg->clone_template ? cfg->clone_template : dbname;
	const char *naming = cfg->clone_naming ? cfg->clone_naming : "django";
	if (strcmp(naming, "pattern") == 0 && !cfg->clone_pattern) {
		log_error("%s:%d: [clones] naming = pattern needs pattern = NAME{n}", cf, cfg->clones_line);
		errors++;
	}
	if (strcmp(tmpl, dbname) != 0 && !sl_contains(&cfg->db_extra, tmpl)) {
		log_error("%s:%d: [clones] template \"%s\" is not created by pgstash", cf, cfg->clones_line, tmpl);
		errors++;
	}
	struct strlist names = {0};
	cfg_clone_names(cfg, &names);
	for (size_t i = 0; i < names.n; i++) {
		const char *c = names.v[i];
		bool clash = strcmp(c, tmpl) == 0 || strcmp(c, dbname) == 0 || sl_contains(&cfg->db_extra, c) ||
		             strcmp(c, "postgres") == 0 || strncmp(c, "template", 8) == 0;
		for (size_t j = 0; j < i; j++)
			clash = clash || strcmp(c, names.v[j]) == 0;
		if (clash || !valid_identifier(c)) {
			log_error("%s:%d: [clones] clone name \"%s\" clashes with another database or is not a valid name",
			          cf, cfg->clones_line, c);
			errors++;
			break;
		}
	}
	sl_free(&names);
	return errors;
}

/*
 * stat() as the user who reads the step later: as root, proc_unprivileged_ids'
 * (setfsuid also drops the file system capabilities until it is set back), so
 * that a configuration, which may come from a pull request, cannot learn from
 * our answer what exists behind a directory only root may search.
 */
static int
stat_as_reader(const char *path, struct stat *sb)
{
	if (geteuid() != 0)
		return stat(path, sb);
	uid_t uid;
	gid_t gid;
	proc_unprivileged_ids(&uid, &gid);
	int old_gid = setfsgid(gid);
	int old_uid = setfsuid(uid);
	int rc = stat(path, sb);
	int e = errno;
	setfsuid((uid_t)old_uid);
	setfsgid((gid_t)old_gid);
	errno = e;
	return rc;
}

/* A step's run line and root.  Returns the number of problems (logged). */
static int
validate_step_command(const struct cfg_step *st)
{
	int errors = 0;
	if (!st->run) {
		log_error("%s:%d: step \"%s\" has no command: expected run = COMMAND", st->file, st->line, st->name);
		errors++;
	} else {
		/* Split now, so a bad command fails before initdb rather than after it. */
		const char *why = NULL;
		char **words = proc_split_argv(st->run, &why);
		if (!words) {
			log_error("%s:%d: step \"%s\": bad run command: %s", st->file, st->run_line ? st->run_line : st->line,
			          st->name, why);
			errors++;
		}
		proc_argv_free(words);
	}
	if (!st->root) {
		log_error("%s:%d: step \"%s\" has no root: expected root = DIRECTORY (the migration globs are relative to it)",
		          st->file, st->line, st->name);
		errors++;
	} else {
		struct stat sb;
		int line = st->root_line ? st->root_line : st->line;
		if (stat_as_reader(st->root, &sb) != 0) {
			log_error("%s:%d: step \"%s\": root \"%s\": %s", st->file, line, st->name, st->root, strerror(errno));
			errors++;
		} else if (!S_ISDIR(sb.st_mode)) {
			log_error("%s:%d: step \"%s\": root \"%s\" is not a directory", st->file, line, st->name, st->root);
			errors++;
		}
	}
	return errors;
}

/* A step's migrations, database and image.  Returns the number of problems (logged). */
static int
validate_step_inputs(const struct cfg *cfg, const struct cfg_step *st, const char *dbname)
{
	int errors = 0;
	if (st->migrations.n == 0 && st->discover == CFG_DISCOVER_NONE) {
		log_error("%s:%d: step \"%s\" names no migration files: expected migrations = GLOB ... or discover = "
		          "django | alembic",
		          st->file, st->line, st->name);
		errors++;
	}
	for (size_t k = 0; k < st->migrations.n; k++) {
		if (st->migrations.v[k][0] == '/') {
			log_error("%s:%d: step \"%s\": migration glob \"%s\" must be relative to the step root", st->file,
			          st->migrations_line, st->name, st->migrations.v[k]);
			errors++;
		}
	}
	if (st->database) {
		bool known = strcmp(st->database, dbname) == 0 || strcmp(st->database, "postgres") == 0 ||
		             sl_contains(&cfg->db_extra, st->database);
		if (!known) {
			log_error("%s:%d: step \"%s\": database \"%s\" is not created by pgstash: name it in [database] "
			          "name or extra",
			          st->file, st->database_line, st->name, st->database);
			errors++;
		}
	}
	if (st->discover != CFG_DISCOVER_NONE && st->image && !st->python) {
		log_error("%s:%d: step \"%s\": discover runs Python on this host, but the step's interpreter is in its "
		          "image: set python = PATH",
		          st->file, st->discover_line, st->name);
		errors++;
	}
	if (st->image_id && !st->image) {
		log_error("%s:%d: step \"%s\": image_id = yes needs image = IMAGE", st->file, st->line, st->name);
		errors++;
	}
	if (st->image && strpbrk(st->image, " \t")) {
		log_error("%s:%d: step \"%s\": image \"%s\" contains blanks", st->file, st->line, st->name, st->image);
		errors++;
	}
	return errors;
}

/* [step NAME] number i, against the steps before it.  Returns the number of problems (logged). */
static int
validate_step(const struct cfg *cfg, size_t i, const char *dbname)
{
	const struct cfg_step *st = &cfg->steps[i];
	int errors = 0;
	for (size_t j = 0; j < i; j++) {
		if (strcmp(cfg->steps[j].name, st->name) == 0) {
			log_error("%s:%d: duplicate step \"%s\" (first at line %d)", st->file, st->line, st->name,
			          cfg->steps[j].line);
			errors++;
		}
	}
	errors += validate_step_command(st);
	errors += validate_step_inputs(cfg, st, dbname);
	for (size_t k = 0; k < st->after.n; k++) {
		bool earlier = false;
		for (size_t j = 0; j < i && !earlier; j++)
			earlier = strcmp(cfg->steps[j].name, st->after.v[k]) == 0;
		if (!earlier) {
			log_error("%s:%d: step \"%s\": after = %s: no step of that name before this one (after names an "
			          "earlier step)",
			          st->file, st->after_line, st->name, st->after.v[k]);
			errors++;
		}
	}
	if (st->layer == CFG_LAYER_SCHEMA) {
		for (size_t j = 0; j < i; j++) {
			if (cfg->steps[j].layer == CFG_LAYER_FIXTURES) {
				log_error("%s:%d: schema step \"%s\" follows fixtures step \"%s\": fixtures steps must come last",
				          st->file, st->line, st->name, cfg->steps[j].name);
				errors++;
				break;
			}
		}
	}
	return errors;
}

int
cfg_validate(const struct cfg *cfg)
{
	int errors = 0;
	const char *dbname = cfg->db_name ? cfg->db_name : cfg->db_user;

	errors += validate_paths(cfg);
	errors += validate_database(cfg, dbname);
	errors += validate_initdb(cfg);
	errors += validate_remote(&cfg->remote);
	/* Without a main database name the checks below have nothing to compare with. */
	if (!dbname)
		return -1;
	if (cfg->clone_count > 0)
		errors += validate_clones(cfg, dbname);
	for (size_t i = 0; i < cfg->n_steps; i++)
		errors += validate_step(cfg, i, dbname);
	return errors ? -1 : 0;
}

int
cfg_load(struct cfg *cfg, const char *explicit_path)
{
	cfg_defaults(cfg);
	int rc = 0;
	if (cfg_load_file(cfg, explicit_path) != 0)
		rc = -1;
	if (cfg_load_env(cfg) != 0)
		rc = -1;
	if (rc == 0 && cfg_validate(cfg) != 0)
		rc = -1;
	return rc;
}

/* Frees the remote's strings, the secret zeroed first. */
static void
free_remote(struct remote_cfg *rc)
{
	if (rc->secret_key)
		explicit_bzero(rc->secret_key, strlen(rc->secret_key));
	free(rc->url);
	free(rc->endpoint);
	free(rc->region);
	free(rc->access_key);
	free(rc->secret_key);
	memset(rc, 0, sizeof(*rc));
}

void
cfg_free(struct cfg *cfg)
{
	free(cfg->config_file);
	free(cfg->cache_dir);
	free(cfg->pgdata);
	free(cfg->pg_bindir);
	free(cfg->db_user);
	free(cfg->db_password);
	free(cfg->db_name);
	sl_free(&cfg->db_extra);
	sl_free(&cfg->start_env);
	sl_free(&cfg->key_env);
	free(cfg->key_env_from);
	free(cfg->initdb_args);
	free(cfg->initdb_waldir);
	free(cfg->host_auth_method);
	free(cfg->initdb_d);
	free(cfg->socket_dir);
	free(cfg->docker_socket);
	free(cfg->cache_group);
	free(cfg->clone_naming);
	free(cfg->clone_pattern);
	free(cfg->clone_template);
	free(cfg->db_user_from);
	free(cfg->pgdata_from_file);
	free(cfg->cache_dir_from_file);
	free(cfg->socket_dir_from_file);
	free(cfg->db_name_from);
	free(cfg->db_extra_from);
	free(cfg->initdb_args_from);
	free_remote(&cfg->remote);
	free(cfg->trust.signing_key);
	sl_free(&cfg->trust.trusted_keys);
	if (cfg->trust.key_secret)
		explicit_bzero(cfg->trust.key_secret, strlen(cfg->trust.key_secret));
	free(cfg->trust.key_secret);
	for (size_t i = 0; i < cfg->n_steps; i++) {
		struct cfg_step *st = &cfg->steps[i];
		free(st->name);
		free(st->file);
		free(st->root);
		sl_free(&st->migrations);
		sl_free(&st->exclude);
		free(st->run);
		free(st->database);
		sl_free(&st->env);
		free(st->image);
		free(st->resolved_image_id);
		free(st->discover_ini);
		free(st->python);
		sl_free(&st->after);
	}
	free(cfg->steps);
	memset(cfg, 0, sizeof(*cfg));
}

bool
cfg_warn_no_steps(const struct cfg *cfg, FILE *explain)
{
	char why[PATH_MAX + 160];
	if (cfg->n_steps > 0)
		return false;
	if (cfg->config_file)
		snprintf(why, sizeof(why), "%s has no [step NAME] section", cfg->config_file);
	else
		snprintf(why, sizeof(why), "no configuration file found (looked at --config, $PGSTASH_CONFIG, %s)",
		         CFG_DEFAULT_FILE);
	log_warning("%s: the key depends on no migration file and never changes", why);
	if (explain)
		fprintf(explain, "# %s: the key depends on no migration file and never changes\n", why);
	return true;
}

const char *
cfg_cache_mode_name(enum cfg_cache_mode m)
{
	return (size_t)m < sizeof(cache_mode_words) / sizeof(cache_mode_words[0]) ? cache_mode_words[m] : "?";
}

const char *
cfg_on_change_name(enum cfg_on_change c)
{
	return (size_t)c < sizeof(on_change_words) / sizeof(on_change_words[0]) ? on_change_words[c] : "?";
}

const char *
cfg_local_auth_name(enum cfg_local_auth a)
{
	return (size_t)a < sizeof(local_auth_words) / sizeof(local_auth_words[0]) ? local_auth_words[a] : "?";
}
