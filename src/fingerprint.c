/*
 * fingerprint — see fingerprint.h.
 *
 * Paths enter the manifest relative to the step root and sorted bytewise, so
 * two checkouts at different places, written in different orders, with
 * different mtimes, give one key.  Only bytes count: no mtime, owner or mode.
 */
#include "fingerprint.h"
#include "digest.h"
#include "discover.h"
#include "entry.h"
#include "config.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

/* Large enough that read(2) per file costs little next to hashing. */
#define HASH_BUF (256 * 1024)

void
fp_quote(struct strbuf *sb, const char *s)
{
	bool bare = *s != '\0';
	for (const char *p = s; *p && bare; p++) {
		unsigned char c = (unsigned char)*p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._/@:+,-=%~", c)))
			bare = false;
	}
	if (bare) {
		sb_append(sb, s);
		return;
	}
	sb_appendc(sb, '"');
	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\') {
			sb_appendc(sb, '\\');
			sb_appendc(sb, (char)c);
		} else if (c == '\n')
			sb_append(sb, "\\n");
		else if (c == '\t')
			sb_append(sb, "\\t");
		else if (c < 0x20 || c == 0x7f)
			sb_appendf(sb, "\\x%02x", c);
		else
			sb_appendc(sb, (char)c);
	}
	sb_appendc(sb, '"');
}

/* glob(3) takes the root as part of the pattern: its metacharacters must not count. */
static char *
glob_escape(const char *s)
{
	struct strbuf sb = {0};
	for (; *s; s++) {
		if (strchr("*?[]\\", *s))
			sb_appendc(&sb, '\\');
		sb_appendc(&sb, *s);
	}
	return sb_take(&sb);
}

static int
cmp_files(const void *a, const void *b)
{
	const struct fp_file *fa = a, *fb = b;
	int c = strcmp(fa->rel, fb->rel);
	if (c != 0)
		return c;
	/* A glob's file (no origin) before the same path discovered. */
	if (!fa->origin || !fb->origin)
		return (fa->origin != NULL) - (fb->origin != NULL);
	return strcmp(fa->origin, fb->origin);
}

static bool
same_file(const struct fp_file *a, const struct fp_file *b)
{
	return cmp_files(a, b) == 0;
}

static int
glob_err(const char *path, int err)
{
	/* A missing directory just matches nothing; an unreadable one would silently drop files from the key. */
	if (err == ENOENT || err == ENOTDIR)
		return 0;
	log_error("could not read directory \"%s\" while listing migrations: %s", path, strerror(err));
	return 1;
}

void
fp_step_files_free(struct fp_step_files *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->files[i].rel);
		free(f->files[i].origin);
		free(f->files[i].path);
	}
	free(f->files);
	f->files = NULL;
	f->n = 0;
}

/*
 * An exclude pattern: fnmatch(3) without FNM_PATHNAME (a star spans '/'),
 * and a double star with its slash at the start of a component may also
 * match no directory at all, so that the README's __pycache__ exclude also
 * names a top-level __pycache__.
 */
bool
fp_exclude_match(const char *pattern, const char *rel)
{
	if (fnmatch(pattern, rel, 0) == 0)
		return true;
	for (const char *p = strstr(pattern, "**/"); p; p = strstr(p + 1, "**/")) {
		if (p != pattern && p[-1] != '/')
			continue;
		char *shorter = xasprintf("%.*s%s", (int)(p - pattern), pattern, p + 3);
		bool m = fp_exclude_match(shorter, rel);
		free(shorter);
		if (m)
			return true;
	}
	return false;
}

/* What one step's listing collects. */
struct listing {
	const struct cfg_step *step;
	size_t rootlen;
	bool root_slash;
	struct fp_step_files *out;
	size_t cap;
};

static void
add_file(struct listing *l, char *rel, char *origin, char *path)
{
	struct fp_step_files *out = l->out;
	if (out->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		out->files = xrealloc(out->files, l->cap * sizeof(*out->files));
	}
	memset(&out->files[out->n], 0, sizeof(out->files[0]));
	out->files[out->n].rel = rel;
	out->files[out->n].origin = origin;
	out->files[out->n++].path = path;
}

/* A path glob(3) found under the root: kept when it is a regular file no exclude names.  0 or -1 (logged). */
static int
add_match(struct listing *l, const char *p)
{
	const struct cfg_step *step = l->step;
	struct stat st;
	if (stat(p, &st) != 0) {
		log_error("step \"%s\": could not stat \"%s\": %s", step->name, p, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode))
		return 0;
	const char *rel = p + l->rootlen + (l->root_slash ? 0 : 1);
	for (size_t x = 0; x < step->exclude.n; x++)
		if (fp_exclude_match(step->exclude.v[x], rel))
			return 0;
	add_file(l, xstrdup(rel), NULL, NULL);
	return 0;
}

/* glob(3) of `pat` under directory `base` (not escaped); `flags` as glob's.  0 or -1 (logged). */
static int
glob_under(struct listing *l, const char *base, const char *pat, int flags, struct strlist *dirs)
{
	char *ebase = glob_escape(base);
	char *pattern = path_join(ebase, pat);
	glob_t gl;
	int rc = 0;
	memset(&gl, 0, sizeof(gl));
	int r = glob(pattern, flags | GLOB_NOSORT, glob_err, &gl);
	if (r == GLOB_ABORTED) {
		log_error("step \"%s\": could not list \"%s\"", l->step->name, pattern);
		rc = -1;
	} else if (r == GLOB_NOSPACE) {
		log_error("out of memory while listing \"%s\"", pattern);
		rc = -1;
	}
	for (size_t i = 0; r == 0 && rc == 0 && i < gl.gl_pathc; i++) {
		if (dirs) {
			struct stat st;
			if (stat(gl.gl_pathv[i], &st) == 0 && S_ISDIR(st.st_mode))
				sl_add(dirs, gl.gl_pathv[i]);
		} else
			rc = add_match(l, gl.gl_pathv[i]);
	}
	globfree(&gl);
	free(pattern);
	free(ebase);
	return rc;
}

static int expand(struct listing *l, const char *base, const char *pat);

/*
 * `tail` in `dir` and in every directory below it: a "**" component.  Links
 * to directories are not followed (no cycles) and, as with '*', names
 * starting with '.' are not entered.  0 or -1 (logged).
 */
static int
expand_below(struct listing *l, const char *dir, const char *tail)
{
	if (expand(l, dir, tail) != 0)
		return -1;
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		log_error("could not read directory \"%s\" while listing migrations: %s", dir, strerror(errno));
		return -1;
	}
	struct strlist subs = {0};
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char *sub = path_join(dir, de->d_name);
		struct stat st;
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			sl_add(&subs, sub);
		free(sub);
	}
	closedir(d);
	int rc = 0;
	for (size_t i = 0; i < subs.n && rc == 0; i++)
		rc = expand_below(l, subs.v[i], tail);
	sl_free(&subs);
	return rc;
}

/* The files `pat` (relative, maybe with "**" components) names under `base`.  0 or -1 (logged). */
static int
expand(struct listing *l, const char *base, const char *pat)
{
	const char *star = NULL;
	for (const char *c = pat; *c;) {
		size_t n = strcspn(c, "/");
		if (n == 2 && c[0] == '*' && c[1] == '*') {
			star = c;
			break;
		}
		c += n;
		c += *c == '/';
	}
	if (!star)
		return glob_under(l, base, pat, 0, NULL);
	const char *tail = star[2] == '/' ? star + 3 : "";
	if (!*tail)
		tail = "*"; /* "dir/" + "**": every file below dir */
	if (star == pat)
		return expand_below(l, base, tail);
	struct strlist dirs = {0};
	char *head = xasprintf("%.*s", (int)(star - pat - 1), pat);
	int rc = glob_under(l, base, head, GLOB_ONLYDIR, &dirs);
	for (size_t i = 0; i < dirs.n && rc == 0; i++)
		rc = expand_below(l, dirs.v[i], tail);
	free(head);
	sl_free(&dirs);
	return rc;
}

/* Asks the step's framework for its files.  0 or -1 (logged). */
static int
add_discovered(struct listing *l)
{
	struct discover_result dr;
	if (discover_files(l->step, &dr) != 0)
		return -1;
	for (size_t i = 0; i < dr.n; i++) {
		add_file(l, dr.v[i].rel, dr.v[i].origin, dr.v[i].path);
		dr.v[i].rel = dr.v[i].origin = dr.v[i].path = NULL;
	}
	if (dr.n == 0)
		log_warning("step \"%s\": discover = %s found no migration file", l->step->name,
		            discover_name(l->step->discover));
	discover_result_free(&dr);
	return 0;
}

/* Hashes file i: a discovered one only when it is a regular file (no FIFO to hang on).  0 or -1 (logged). */
static int
hash_file(const struct cfg_step *step, struct fp_file *f, unsigned char *buf)
{
	char *path = f->path ? xstrdup(f->path) : path_join(step->root, f->rel);
	struct stat st;
	int rc = -1;
	if (f->path && stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		log_error("step \"%s\": discovered migration \"%s\" is not a regular file", step->name, path);
		goto cleanup;
	}
	if (digest_file(path, buf, HASH_BUF, f->sha256, &f->bytes) != 0) {
		log_error("step \"%s\": could not read migration file \"%s\": %s", step->name, path, strerror(errno));
		goto cleanup;
	}
	rc = 0;
cleanup:
	free(path);
	return rc;
}

int
fp_step_files(const struct cfg_step *step, struct fp_step_files *out)
{
	size_t rootlen = strlen(step->root);
	struct listing l = {.step = step, .rootlen = rootlen, .root_slash = rootlen > 0 && step->root[rootlen - 1] == '/',
	                    .out = out};
	int rc = -1;
	unsigned char *buf = NULL;

	memset(out, 0, sizeof(*out));
	for (size_t g = 0; g < step->migrations.n; g++) {
		const char *pat = step->migrations.v[g];
		bool optional = pat[0] == '?';
		size_t before = out->n;
		if (expand(&l, step->root, pat + optional) != 0)
			goto cleanup;
		if (out->n == before && !optional) {
			log_error("%s:%d: step \"%s\": \"%s\" matches no file under \"%s\" (write ?%s for a glob that may match "
			          "nothing)",
			          step->file, step->migrations_line ? step->migrations_line : step->line, step->name, pat,
			          step->root, pat);
			goto cleanup;
		}
	}
	if (step->discover != CFG_DISCOVER_NONE && add_discovered(&l) != 0)
		goto cleanup;
	if (out->n == 0) {
		log_error("step \"%s\": no migration file matches under \"%s\" (migrations = ...): a key that depends on "
		          "no file would never change",
		          step->name, step->root);
		goto cleanup;
	}
	qsort(out->files, out->n, sizeof(*out->files), cmp_files);
	/* Several globs may match one file: keep it once. */
	size_t w = 1;
	for (size_t i = 1; i < out->n; i++) {
		if (same_file(&out->files[i], &out->files[w - 1])) {
			free(out->files[i].rel);
			free(out->files[i].origin);
			free(out->files[i].path);
		} else
			out->files[w++] = out->files[i];
	}
	out->n = w;

	buf = xmalloc(HASH_BUF);
	for (size_t i = 0; i < out->n; i++)
		if (hash_file(step, &out->files[i], buf) != 0)
			goto cleanup;
	rc = 0;
cleanup:
	free(buf);
	if (rc != 0)
		fp_step_files_free(out);
	return rc;
}

/* The scripts run once after initdb change the database: they are part of the key. */
static int
add_initdb_d(struct strbuf *m, const char *dir)
{
	struct dirent **names = NULL;
	int n = scandir(dir, &names, NULL, alphasort);
	if (n < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		log_error("could not list \"%s\": %s", dir, strerror(errno));
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < n; i++) {
		const char *name = names[i]->d_name;
		char *path = path_join(dir, name);
		struct stat st;
		if (rc == 0 && name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			char hex[65];
			if (digest_file(path, NULL, 0, hex, NULL) != 0) {
				log_error("could not read \"%s\": %s", path, strerror(errno));
				rc = -1;
			} else {
				sb_append(m, "initdb.d ");
				fp_quote(m, name);
				sb_appendf(m, " mode=%s sha256=%s\n", (st.st_mode & 0111) ? "x" : "-", hex);
			}
		}
		free(path);
		free(names[i]);
	}
	free(names);
	return rc;
}

/*
 * The digest of environment values (a step's env, [database] key_env), so
 * that the manifest (`key --explain`, the entry's meta, the bucket) never
 * holds them in clear.  Plain SHA-256 is no secret for a guessable value
 * (SECRET_KEY=changeme): with PGSTASH_KEY_SECRET_FILE it is HMAC-SHA256
 * under that secret, and its manifest name says so.
 */
static void
value_digest(const struct cfg *cfg, const char *data, size_t len, char hex[65])
{
	const char *secret = cfg->trust.key_secret;
	if (secret)
		digest_hmac_hex(secret, strlen(secret), data, len, hex);
	else
		digest_hex(data, len, hex);
}

/* The manifest's name for value_digest: "sha256" or "hmac-sha256". */
static const char *
value_digest_name(const struct cfg *cfg)
{
	return cfg->trust.key_secret ? "hmac-sha256" : "sha256";
}

/*
 * `run` (or `python`) as keyed: a word that starts with the step root + '/'
 * is written "./REST", which is what it means in the step's directory, so
 * that two checkouts at different places give one key.  Anything else is
 * kept as written.  Malloc'ed.
 */
char *
fp_keyed_command(const char *cmd, const char *root)
{
	size_t rl = strlen(root);
	while (rl > 1 && root[rl - 1] == '/')
		rl--;
	struct strbuf sb = {0};
	for (const char *p = cmd; *p;) {
		bool word_start = p == cmd || strchr(" \t\n\r'\"", p[-1]);
		if (word_start && rl > 1 && strncmp(p, root, rl) == 0 && p[rl] == '/') {
			sb_append(&sb, ".");
			p += rl;
			continue;
		}
		sb_appendc(&sb, *p++);
	}
	return sb_take(&sb);
}

static void
add_step(struct strbuf *m, const struct cfg *cfg, const struct cfg_step *st, const struct fp_step_files *files)
{
	sb_append(m, "step ");
	fp_quote(m, st->name);
	sb_appendf(m, " layer=%s run=", entry_layer_name(st->layer));
	char *run = fp_keyed_command(st->run ? st->run : "", st->root);
	fp_quote(m, run);
	free(run);
	if (st->discover != CFG_DISCOVER_NONE) {
		/* Only when set: the keys of steps without discovery stay what they were. */
		sb_appendf(m, " discover=%s", discover_name(st->discover));
		if (st->discover_ini) {
			sb_append(m, " discover-ini=");
			fp_quote(m, st->discover_ini);
		}
	}
	if (st->after.n > 0) {
		/* The order steps run in can change the database: only when set, so other keys stay. */
		sb_append(m, " after=");
		struct strbuf names = {0};
		for (size_t i = 0; i < st->after.n; i++) {
			if (i)
				sb_appendc(&names, ',');
			sb_append(&names, st->after.v[i]);
		}
		fp_quote(m, sb_str(&names));
		sb_free(&names);
	}
	if (st->python) {
		char *py = fp_keyed_command(st->python, st->root);
		sb_append(m, " python=");
		fp_quote(m, py);
		free(py);
	}
	sb_append(m, " image=");
	fp_quote(m, st->image ? st->image : "-");
	if (st->resolved_image_id) {
		sb_append(m, " image-id=");
		fp_quote(m, st->resolved_image_id);
	}
	sb_append(m, " database=");
	fp_quote(m, st->database ? st->database : (cfg->db_name ? cfg->db_name : cfg->db_user));
	if (st->env.n == 0)
		sb_append(m, " env=-");
	else {
		/* Names in clear help --explain; values only through a digest (they may be secrets). */
		struct strbuf names = {0}, all = {0};
		for (size_t i = 0; i < st->env.n; i++) {
			const char *e = st->env.v[i];
			const char *eq = strchr(e, '=');
			if (i)
				sb_appendc(&names, ',');
			sb_appendn(&names, e, eq ? (size_t)(eq - e) : strlen(e));
			sb_append(&all, e);
			sb_appendc(&all, '\n');
		}
		char hex[65];
		value_digest(cfg, all.buf, all.len, hex);
		sb_append(m, " env=");
		fp_quote(m, sb_str(&names));
		sb_appendf(m, " env-%s=%s", value_digest_name(cfg), hex);
		explicit_bzero(all.buf, all.len);
		sb_free(&names);
		sb_free(&all);
	}
	sb_appendc(m, '\n');
	for (size_t i = 0; i < files->n; i++) {
		sb_append(m, "file ");
		fp_quote(m, st->name);
		sb_appendc(m, ' ');
		fp_quote(m, files->files[i].rel);
		sb_appendf(m, " sha256=%s", files->files[i].sha256);
		if (files->files[i].origin) {
			sb_append(m, " origin=");
			fp_quote(m, files->files[i].origin);
		}
		sb_appendc(m, '\n');
	}
}

void
fp_result_free(struct fp_result *r)
{
	free(r->manifest);
	free(r->schema_manifest);
	memset(r, 0, sizeof(*r));
}

/* The digest of a key_env value (see value_digest). */
static void
key_env_digest(const struct cfg *cfg, const char *name, const char *value, char hex[65])
{
	struct strbuf sb = {0};
	sb_appendf(&sb, "%s=%s", name, value);
	value_digest(cfg, sb.buf, sb.len, hex);
	explicit_bzero(sb.buf, sb.len);
	sb_free(&sb);
}

/*
 * What initdb and the scripts read from the environment: TZ, LANG, LC_* in
 * clear (the official image's defaults differ from a host's, and initdb
 * writes them into the cluster), and [database] key_env by digest.
 */
static void
add_environment(struct strbuf *m, const struct cfg *cfg)
{
	for (size_t i = 0; i < cfg->start_env.n; i++) {
		sb_append(m, "\nenvironment ");
		fp_quote(m, cfg->start_env.v[i]);
	}
	for (size_t i = 0; i < cfg->key_env.n; i++) {
		const char *name = cfg->key_env.v[i];
		const char *v = getenv(name);
		sb_append(m, "\nkey_env ");
		fp_quote(m, name);
		if (!v) {
			sb_append(m, " unset");
			continue;
		}
		char hex[65];
		key_env_digest(cfg, name, v, hex);
		sb_appendf(m, " %s=%s", value_digest_name(cfg), hex);
	}
}

int
fp_compute(const struct cfg *cfg, int pg_major, const char *arch, struct fp_result *out)
{
	struct strbuf schema = {0}, fixtures = {0};
	struct utsname u;
	int rc = -1;
	const char *dbname = cfg->db_name ? cfg->db_name : cfg->db_user;

	memset(out, 0, sizeof(*out));
	if (!arch) {
		arch = uname(&u) == 0 ? u.machine : "unknown";
	}
	sb_appendf(&schema, "pgstash-manifest %d\n", FP_MANIFEST_VERSION);
	sb_appendf(&schema, "postgres %d ", pg_major);
	fp_quote(&schema, arch);
	sb_append(&schema, "\ninitdb --encoding=UTF8");
	if (cfg->initdb_args) {
		/* The same words srv_initdb passes, split by the same rule. */
		const char *why = NULL;
		char **words = proc_split_argv(cfg->initdb_args, &why);
		if (!words) {
			log_error("POSTGRES_INITDB_ARGS: %s", why);
			goto cleanup;
		}
		for (char **w = words; *w; w++) {
			sb_appendc(&schema, ' ');
			fp_quote(&schema, *w);
		}
		proc_argv_free(words);
	}
	add_environment(&schema, cfg);
	sb_append(&schema, "\nsuperuser ");
	fp_quote(&schema, cfg->db_user);
	sb_append(&schema, "\ndatabase ");
	fp_quote(&schema, dbname);
	sb_append(&schema, " owner ");
	fp_quote(&schema, cfg->db_user);
	sb_appendc(&schema, '\n');
	for (size_t i = 0; i < cfg->db_extra.n; i++) {
		sb_append(&schema, "database ");
		fp_quote(&schema, cfg->db_extra.v[i]);
		sb_append(&schema, " owner ");
		fp_quote(&schema, cfg->db_user);
		sb_appendc(&schema, '\n');
	}
	if (cfg->initdb_d && add_initdb_d(&schema, cfg->initdb_d) != 0)
		goto cleanup;

	for (size_t i = 0; i < cfg->n_steps; i++) {
		const struct cfg_step *st = &cfg->steps[i];
		struct fp_step_files files;
		if (fp_step_files(st, &files) != 0)
			goto cleanup;
		for (size_t k = 0; k < files.n; k++) {
			out->files++;
			out->bytes += files.files[k].bytes;
		}
		if (st->layer == CFG_LAYER_FIXTURES) {
			out->has_fixtures = true;
			add_step(&fixtures, cfg, st, &files);
		} else
			add_step(&schema, cfg, st, &files);
		fp_step_files_free(&files);
	}
	/* Clones are made after the last layer's steps: their lines close that layer's manifest. */
	struct strlist clones = {0};
	cfg_clone_names(cfg, &clones);
	for (size_t i = 0; i < clones.n; i++) {
		struct strbuf *m = out->has_fixtures ? &fixtures : &schema;
		sb_append(m, "clone ");
		fp_quote(m, clones.v[i]);
		sb_append(m, " template=");
		fp_quote(m, cfg->clone_template ? cfg->clone_template : dbname);
		sb_appendc(m, '\n');
	}
	sl_free(&clones);
	digest_hex(schema.buf, schema.len, out->schema_key);
	if (out->has_fixtures) {
		struct strbuf full = {0};
		sb_appendf(&full, "pgstash-manifest %d\nlayer fixtures parent %s\n", FP_MANIFEST_VERSION, out->schema_key);
		sb_appendn(&full, fixtures.buf, fixtures.len);
		digest_hex(full.buf, full.len, out->key);
		out->manifest = sb_take(&full);
		out->schema_manifest = sb_take(&schema);
	} else {
		memcpy(out->key, out->schema_key, sizeof(out->key));
		out->manifest = xstrdup(sb_str(&schema));
		out->schema_manifest = sb_take(&schema);
	}
	rc = 0;
cleanup:
	sb_free(&schema);
	sb_free(&fixtures);
	if (rc != 0)
		fp_result_free(out);
	return rc;
}

/* The step name of a "file STEP REL sha256=..." line (step names need no quoting); NULL otherwise. */
static bool
file_line_step(const char *line, char *step, size_t cap)
{
	if (strncmp(line, "file ", 5) != 0)
		return false;
	const char *s = line + 5;
	size_t n = strcspn(s, " ");
	if (n + 1 > cap)
		return false;
	memcpy(step, s, n);
	step[n] = '\0';
	return true;
}

static bool
step_incremental(const struct cfg *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_steps; i++)
		if (strcmp(cfg->steps[i].name, name) == 0)
			return cfg->steps[i].incremental;
	return false;
}

long
fp_prefix_score(const char *entry, const char *current, const struct cfg *cfg)
{
	struct strlist el = {0}, cl = {0};
	long score = -1;
	sl_split_lines(entry, &el);
	sl_split_lines(current, &cl);

	/* Everything but the file lines must be the same, in the same order. */
	size_t ei = 0, ci = 0;
	long files = 0;
	char step[128];
	bool proper = false;
	for (;;) {
		while (ei < el.n && strncmp(el.v[ei], "file ", 5) == 0)
			ei++;
		while (ci < cl.n && strncmp(cl.v[ci], "file ", 5) == 0)
			ci++;
		if (ei >= el.n || ci >= cl.n) {
			if (ei < el.n || ci < cl.n)
				goto cleanup;
			break;
		}
		if (strcmp(el.v[ei], cl.v[ci]) != 0)
			goto cleanup;
		ei++;
		ci++;
	}
	/*
	 * Every file of the entry must be in the current set with the same hash
	 * (an edited or removed migration disqualifies it), and only steps with
	 * incremental = yes may have gained files.
	 */
	for (size_t i = 0; i < el.n; i++) {
		if (!file_line_step(el.v[i], step, sizeof(step)))
			continue;
		if (!sl_contains(&cl, el.v[i]))
			goto cleanup;
		files++;
	}
	for (size_t i = 0; i < cl.n; i++) {
		if (!file_line_step(cl.v[i], step, sizeof(step)) || sl_contains(&el, cl.v[i]))
			continue;
		if (!step_incremental(cfg, step))
			goto cleanup;
		proper = true;
	}
	if (proper)
		score = files;
cleanup:
	sl_free(&el);
	sl_free(&cl);
	return score;
}

/* ---------- what changed between two manifests ---------- */

/*
 * A line's identity, for the lines that name a file and carry its digest:
 * "file STEP REL" and "initdb.d NAME" (the mode and digest may change);
 * NULL for every other line, compared whole.  Caller frees.
 */
static char *
diff_identity(const char *line, const char **kind)
{
	const char *cut = NULL;
	if (strncmp(line, "file ", 5) == 0) {
		*kind = "migration file";
		cut = strstr(line, " sha256=");
		for (const char *p = cut; p; p = strstr(p + 1, " sha256="))
			cut = p;
	} else if (strncmp(line, "initdb.d ", 9) == 0) {
		*kind = "initdb.d script";
		cut = strstr(line, " mode=");
		for (const char *p = cut; p; p = strstr(p + 1, " mode="))
			cut = p;
	}
	if (!cut)
		return NULL;
	const char *name = strchr(line, ' ') + 1;
	return xasprintf("%s %.*s", *kind, (int)(cut - name), name);
}

/* The identity of `line` is among `lines`' identities. */
static bool
diff_has_identity(const struct strlist *lines, const char *id)
{
	const char *kind;
	for (size_t i = 0; i < lines->n; i++) {
		char *other = diff_identity(lines->v[i], &kind);
		bool same = other && strcmp(other, id) == 0;
		free(other);
		if (same)
			return true;
	}
	return false;
}

/* Appends "; WHAT: a, b, c and N more" when `names` has any. */
static void
diff_list(struct strbuf *out, const char *what, const struct strlist *names)
{
	enum { SHOWN = 5 };
	if (names->n == 0)
		return;
	sb_appendf(out, "%s%s: ", out->len ? "; " : "", what);
	for (size_t i = 0; i < names->n && i < SHOWN; i++)
		sb_appendf(out, "%s%s", i ? ", " : "", names->v[i]);
	if (names->n > SHOWN)
		sb_appendf(out, " and %zu more", names->n - SHOWN);
}

void
fp_manifest_diff(const char *old, const char *cur, struct strbuf *out)
{
	struct strlist ol = {0}, cl = {0};
	struct strlist added = {0}, changed = {0}, removed = {0}, settings = {0}, pg = {0};
	sl_split_lines(old, &ol);
	sl_split_lines(cur, &cl);
	const char *kind;
	for (size_t i = 0; i < cl.n; i++) {
		if (sl_contains(&ol, cl.v[i]))
			continue;
		char *id = diff_identity(cl.v[i], &kind);
		if (id)
			sl_add_owned(diff_has_identity(&ol, id) ? &changed : &added, id);
		else if (strncmp(cl.v[i], "postgres ", 9) != 0)
			sl_add_owned(&settings, xasprintf("+\"%s\"", cl.v[i]));
	}
	for (size_t i = 0; i < ol.n; i++) {
		if (sl_contains(&cl, ol.v[i]))
			continue;
		char *id = diff_identity(ol.v[i], &kind);
		if (id && !diff_has_identity(&cl, id))
			sl_add_owned(&removed, id);
		else if (id)
			free(id);
		else if (strncmp(ol.v[i], "postgres ", 9) != 0)
			sl_add_owned(&settings, xasprintf("-\"%s\"", ol.v[i]));
	}
	/* "postgres MAJOR ARCH": the one line a cluster cannot follow. */
	const char *opg = NULL, *cpg = NULL;
	for (size_t i = 0; i < ol.n; i++)
		if (strncmp(ol.v[i], "postgres ", 9) == 0)
			opg = ol.v[i];
	for (size_t i = 0; i < cl.n; i++)
		if (strncmp(cl.v[i], "postgres ", 9) == 0)
			cpg = cl.v[i];
	if (opg && cpg && strcmp(opg, cpg) != 0)
		sl_add_owned(&pg, xasprintf("%s -> %s", opg + 9, cpg + 9));
	diff_list(out, "PostgreSQL", &pg);
	diff_list(out, "added", &added);
	diff_list(out, "changed", &changed);
	diff_list(out, "removed", &removed);
	diff_list(out, "settings", &settings);
	sl_free(&ol);
	sl_free(&cl);
	sl_free(&added);
	sl_free(&changed);
	sl_free(&removed);
	sl_free(&settings);
	sl_free(&pg);
}

/* The lines of `m` about step `name`: "step NAME ..." and "file NAME ...". */
static void
step_lines(const char *m, const char *name, struct strlist *out)
{
	struct strlist all = {0};
	sl_split_lines(m, &all);
	size_t n = strlen(name);
	for (size_t i = 0; i < all.n; i++) {
		const char *l = all.v[i];
		const char *rest = strncmp(l, "step ", 5) == 0 ? l + 5 : strncmp(l, "file ", 5) == 0 ? l + 5 : NULL;
		if (rest && strncmp(rest, name, n) == 0 && rest[n] == ' ')
			sl_add(out, l);
	}
	sl_free(&all);
}

bool
fp_step_unchanged(const char *entry, const char *current, const char *name)
{
	struct strlist a = {0}, b = {0};
	step_lines(entry, name, &a);
	step_lines(current, name, &b);
	bool same = a.n > 0 && a.n == b.n;
	for (size_t i = 0; same && i < a.n; i++)
		same = sl_contains(&b, a.v[i]);
	sl_free(&a);
	sl_free(&b);
	return same;
}
