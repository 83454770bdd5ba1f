/*
 * fingerprint — the cache key.  Builds the canonical, versioned manifest
 * (README "What the key covers") from the config, the server's
 * major version and the bytes of every migration file, and hashes it.
 *
 * Not for: secrets.  Env values are hashed, the password never appears.
 */
#ifndef PGSTASH_FINGERPRINT_H
#define PGSTASH_FINGERPRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FP_MANIFEST_VERSION 1

struct cfg;
struct cfg_step;
struct strbuf;

/* One matched file of a step. */
struct fp_file {
	char *rel;              /* path relative to the step root; discovered: to its package or script root */
	char *origin;           /* discovered: "django:APP" or "alembic:LOCATION"; NULL for a glob's file */
	char *path;             /* discovered: where it was read; NULL for a glob's file (root/rel) */
	char sha256[65];
	uint64_t bytes;
};

struct fp_step_files {
	struct fp_file *files;  /* sorted bytewise by rel, no duplicates */
	size_t n;
};

struct fp_result {
	char *manifest;         /* the canonical text, '\n'-terminated lines */
	char key[65];           /* hex SHA-256 of manifest */
	char *schema_manifest;  /* the schema layer's manifest (== manifest without fixtures) */
	char schema_key[65];    /* key of the schema layer; == key when no fixtures steps */
	bool has_fixtures;
	uint64_t files;         /* files hashed */
	uint64_t bytes;         /* bytes hashed */
};

/*
 * Lists the files of `step`: globs under its root ("**" as a whole
 * component: any number of directories), excludes applied, plus what
 * discover = FRAMEWORK names; sorted by path then origin, de-duplicated,
 * each hashed.  A glob matching nothing is an error ("file:line: ...")
 * unless it starts with '?' (optional); so is a step with no file at all,
 * a file that cannot be read, and a failed discovery.  0 or -1 (logged).
 * Free with fp_step_files_free.
 */
int fp_step_files(const struct cfg_step *step, struct fp_step_files *out);
void fp_step_files_free(struct fp_step_files *f);

/*
 * Whether exclude pattern `pattern` names `rel`: fnmatch(3) without
 * FNM_PATHNAME, and a "**" + "/" at a component's start also matches no
 * directory.
 */
bool fp_exclude_match(const char *pattern, const char *rel);

/*
 * Builds the manifest and key for `cfg` with server major `pg_major` on
 * `arch` (NULL: this machine's).  0 or -1 (logged).  Free with fp_result_free.
 */
int fp_compute(const struct cfg *cfg, int pg_major, const char *arch, struct fp_result *out);
void fp_result_free(struct fp_result *r);

/*
 * How well the cached manifest `entry` serves as a starting point for
 * `current` (prefix reuse, `incremental = yes`): the number of its file
 * lines when every non-file line is the same, every file of the entry is in
 * `current` with the same hash, and only incremental steps gained files; -1
 * when it cannot serve (including when it is the same set).  One call per
 * cached entry: no search over combinations of apps.
 */
long fp_prefix_score(const char *entry, const char *current, const struct cfg *cfg);

/*
 * Appends to `out` what changed from manifest `old` to `cur`, for a message:
 * "PostgreSQL 15 x86_64 -> 17 x86_64; added: migration file app
 * 0002.sql, …; changed: …; removed: …; settings: -"line", +"line"" (each
 * list cut after five names), parts without changes left out; nothing
 * when the two are the same.
 */
void fp_manifest_diff(const char *old, const char *cur, struct strbuf *out);

/*
 * A step's `run` (or `python`) as the key holds it: words starting with
 * the step root + '/' become "./REST" (what they mean in the step's
 * directory), so the key does not depend on where the checkout is.
 * Malloc'ed.
 */
char *fp_keyed_command(const char *cmd, const char *root);

/*
 * Whether step `name` has the same inputs in manifests `entry` and
 * `current`: its step line and its file lines, as sets.  Prefix reuse skips
 * such a step: the entry's database already holds what it would do.
 */
bool fp_step_unchanged(const char *entry, const char *current, const char *name);

/*
 * Writes `s` as a manifest token: bare when it is made only of safe
 * characters, else double-quoted with \\ \" \n \t \xHH escapes.
 */
void fp_quote(struct strbuf *sb, const char *s);

#endif
