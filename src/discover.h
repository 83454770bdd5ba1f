/*
 * discover — asks a step's migration framework, with the step's own Python,
 * root and env, which migration files it would apply: Django (every
 * installed app's migrations module, site-packages included) or Alembic
 * (the script location's versions and env.py).  One interpreter start per
 * step; an import error or missing settings is an error carrying the
 * framework's own message, never an empty answer.
 *
 * Not for: hashing the files or the manifest (fingerprint), running the
 * migrations (steps).
 */
#ifndef PGSTASH_DISCOVER_H
#define PGSTASH_DISCOVER_H

#include <stdbool.h>
#include <stddef.h>

struct cfg_step;
struct strlist;

/* How long discovery may take before its process group is killed. */
#define DISCOVER_TIMEOUT_S 120.0

/* One file the framework named. */
struct discover_file {
	char *origin; /* "django:APP_LABEL" or "alembic:SCRIPT_LOCATION" */
	char *rel;    /* relative to its package root (sys.path entry) or script directory: the keyed path */
	char *path;   /* absolute, to read it */
};

struct discover_result {
	struct discover_file *v;
	size_t n;
};

/*
 * Runs the framework of `step` (step->discover != CFG_DISCOVER_NONE) in
 * step->root with the environment of pgstash less its secrets + step->env
 * (no server variables: setting up Django or Alembic connects to nothing).
 * 0 with *out filled, or -1 (logged with the child's output).  Refused as
 * root: the project's code never runs as root.  Free with
 * discover_result_free.
 */
int discover_files(const struct cfg_step *step, struct discover_result *out);
void discover_result_free(struct discover_result *r);

/* "django", "alembic", "-"; static. */
const char *discover_name(int kind);

/*
 * The interpreter discovery runs, found in `env` (its PATH): step->python,
 * else the run line's first word when it is python[N[.N]], else the Python
 * named by the #! line of the program it starts (`flask`, `alembic`,
 * `./manage.py`; `#!/usr/bin/env python3` too).  *script_dir: the directory
 * to put first on sys.path as `python DIR/manage.py` would (NULL: the root);
 * both malloc'ed.  0, or -1 with *why set (static).
 */
int discover_interpreter(const struct cfg_step *step, const struct strlist *env, char **python, char **script_dir,
                         const char **why);

/*
 * Parses the child's answer: NUL-terminated ORIGIN, REL, PATH triples.  REL
 * must be relative and free of ".." components, PATH absolute.  0, or -1
 * with *why set (static).
 */
int discover_parse(const char *buf, size_t len, struct discover_result *out, const char **why);

#endif
