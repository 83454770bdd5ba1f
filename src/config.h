/*
 * config — the one configuration struct, filled in a fixed order: defaults →
 * INI file → environment → argv (the front end sets argv overrides on the
 * struct), then validated whole before any side effect.  Every problem is
 * reported (the INI ones as "file:line: ...") before the caller exits 2.
 *
 * Not for: deciding what to do with the settings.
 */
#ifndef PGSTASH_CONFIG_H
#define PGSTASH_CONFIG_H

#include "util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

/* The compression and layer enums, and their names: one table each, in entry. */
#include "entry.h"

#define CFG_DEFAULT_FILE "/etc/pgstash/pgstash.ini"

/* [pgstash] cache_mode: what a start may do with the cache (README "Trust"). */
enum cfg_cache_mode {
	CFG_CACHE_READ_WRITE, /* use, build, publish, prune, upload */
	CFG_CACHE_READ_ONLY,  /* use entries; never write, lock for writing, prune or upload */
	CFG_CACHE_OFF,        /* no cache at all: every start builds */
};

/* [pgstash] on_change: a PGDATA holding a finished cluster of another key (README "A changed key"). */
enum cfg_on_change {
	CFG_ON_CHANGE_REPLACE, /* warn, naming what changed, and replace it */
	CFG_ON_CHANGE_MIGRATE, /* run the new migrations in place when it is a prefix, else replace */
	CFG_ON_CHANGE_REFUSE,  /* exit 2, PGDATA untouched */
};

/* [pgstash] local_auth: how the final server's socket and loopback lines authenticate (README "Host mode"). */
enum cfg_local_auth {
	CFG_LOCAL_PASSWORD, /* both: the host method (scram-sha-256 unless POSTGRES_HOST_AUTH_METHOD says) */
	CFG_LOCAL_PEER,     /* the socket: peer; loopback: the host method */
	CFG_LOCAL_TRUST,    /* both trusted, as the official image (the image sets PGSTASH_LOCAL_AUTH=trust) */
};

#define REMOTE_DEFAULT_REGION "us-east-1"
#define REMOTE_DEFAULT_TIMEOUT 30

/* [remote]: an S3-compatible bucket shared by a fleet of runners (remote.h uses it). */
struct remote_cfg {
	char *url;                    /* s3://bucket[/prefix]; NULL or "": no remote */
	char *endpoint;               /* http(s)://host[:port]; NULL: https://s3.REGION.amazonaws.com */
	char *region;                 /* NULL: REMOTE_DEFAULT_REGION */
	char *access_key;             /* NULL: unsigned (anonymous) requests */
	char *secret_key;             /* secret: never logged */
	bool path_style;              /* <endpoint>/<bucket>/<object>; else <bucket>.<host>/<object> */
	long timeout_s;               /* connect limit, limit of a small request, longest stall of a
	                               * transfer; 0: REMOTE_DEFAULT_TIMEOUT */
	uint64_t multipart_threshold; /* 0: REMOTE_MULTIPART_THRESHOLD (tests set it lower) */
	uint64_t part_size;           /* 0: REMOTE_PART_SIZE; raised to REMOTE_MIN_PART_SIZE */
};

/* [trust]: who may make the entries this job uses (sign.h, README "Trust"). */
struct trust_cfg {
	char *signing_key;            /* PEM Ed25519 private key file; NULL: builds do not sign */
	struct strlist trusted_keys;  /* PEM public key files; empty: signatures not required */
	char *key_secret;             /* PGSTASH_KEY_SECRET_FILE's content (secret: never logged); NULL: env
	                               * digests in the manifest are plain SHA-256, else HMAC-SHA256 under it */
};

/* [step NAME] discover: which framework pgstash asks for the step's migration files (discover.h). */
enum cfg_discover {
	CFG_DISCOVER_NONE,
	CFG_DISCOVER_DJANGO,
	CFG_DISCOVER_ALEMBIC,
};

struct cfg_step {
	char *name;                /* from [step NAME] */
	char *file;                /* config file and line of the section, for messages */
	int line;
	char *root;                /* absolute: relative roots are taken from the config file's directory */
	int root_line;
	struct strlist migrations; /* globs relative to root */
	int migrations_line;
	struct strlist exclude;    /* fnmatch patterns on the relative path, '*' may span '/' */
	char *run;                 /* command line; see proc_split_argv for the splitting rule */
	int run_line;
	char *database;            /* the step's database; defaults to cfg.db_name */
	int database_line;
	struct strlist env;        /* "NAME=value", in file order; values are secrets */
	char *image;               /* NULL: a command step on this host/container */
	bool image_id;             /* image_id = yes: the image's ID (not just its name) enters the key */
	char *resolved_image_id;   /* filled by build_resolve_images when image_id is set; not from the file */
	enum cfg_layer layer;
	bool incremental;
	long timeout;              /* seconds; 0: none */
	enum cfg_discover discover;
	char *discover_ini;        /* discover = alembic INI: relative to root; NULL: alembic.ini */
	int discover_line;
	char *python;              /* python = PATH: discovery's interpreter; NULL: the one `run` starts */
	struct strlist after;      /* after = NAME ...: earlier steps this one waits for (else: per database) */
	int after_line;
};

struct cfg {
	char *config_file;         /* the file read, NULL if none */
	char *cache_dir;
	char *pgdata;
	char *pg_bindir;           /* NULL: pg_config's (pgbin.h), then PATH */
	enum cfg_cache_mode cache_mode;
	enum cfg_on_change on_change;
	enum cfg_compression compression;
	int compression_level;     /* 0: the codec's default */
	uint64_t max_bytes;        /* 0: no limit */
	long max_entries;          /* 0: no limit */
	long lock_timeout;         /* seconds */
	long step_timeout;         /* default per-step timeout, seconds; 0: none */
	bool full_build;           /* full_build = yes, `prepare --full`: no prefix reuse, no entry built on one */
	char *cache_group;         /* NULL: the cache is private to its owner (0700/0600) */
	gid_t cache_gid;           /* cache_group resolved; (gid_t)-1 when none */
	enum cfg_local_auth local_auth; /* default password; trust also opens socket_dir to others (03775) */

	char *db_user;
	char *db_password;         /* secret: never logged, never in the key; NULL if none */
	char *db_name;
	struct strlist db_extra;
	char *initdb_args;         /* POSTGRES_INITDB_ARGS; NULL if none */
	char *initdb_waldir;       /* POSTGRES_INITDB_WALDIR; NULL if none */
	char *host_auth_method;    /* POSTGRES_HOST_AUTH_METHOD; NULL: scram-sha-256 */
	/*
	 * "NAME=value" of the variables initdb and the server read that are set:
	 * TZ, LANG, LC_ALL, LC_* (cfg_start_env_names); in the key, in clear.
	 */
	struct strlist start_env;
	/* [database] key_env: names of variables the initdb.d scripts read; their values are keyed, hashed. */
	struct strlist key_env;
	char *key_env_from;
	/* Where db_user, db_name, db_extra and initdb_args were set ("file:line" or an environment variable), for messages. */
	char *db_user_from, *db_name_from, *db_extra_from, *initdb_args_from;
	/*
	 * "file:line" when pgdata, cache_dir or socket_dir was last set by a config
	 * file, NULL when by the default, the environment or the command line:
	 * started as root, pgstash hands an existing directory to postgres only
	 * when the operator named it (privs.c), since a config file can come from a
	 * pull request.
	 */
	char *pgdata_from_file, *cache_dir_from_file, *socket_dir_from_file;

	char *initdb_d;            /* scripts run once after initdb: /docker-entrypoint-initdb.d */
	char *socket_dir;          /* the final server's unix socket dir; the ready-state file lives here */
	char *docker_socket;       /* Docker Engine API socket */

	struct cfg_step *steps;
	size_t n_steps;

	/* [clones]: copies of the migrated database for parallel test workers. */
	long clone_count;          /* 0: none */
	char *clone_naming;        /* "django" (test_DB, test_DB_1..N), "xdist" (test_DB_gw0..N-1) or "pattern" */
	char *clone_pattern;       /* naming = pattern: "{db}" and "{n}" (1..N) or "{i}" (0..N-1) replaced */
	char *clone_template;      /* the database copied; default: the main database */
	int clones_line;

	/* [remote]: an S3-compatible bucket shared by a fleet of runners (see remote.h). */
	struct remote_cfg remote;

	/* [trust]: signing and trusted keys. */
	struct trust_cfg trust;
};

/* The names whose values cfg_load_env keeps in start_env, NULL-terminated. */
extern const char *const cfg_start_env_names[];

/* The parts of a remote endpoint URL; cfg_endpoint_free frees them. */
struct cfg_endpoint {
	char *scheme; /* "http" or "https" */
	char *host;   /* as in the URL: "[::1]" keeps its brackets */
	char *port;   /* NULL: the scheme's */
};

/*
 * Splits s3://BUCKET[/PREFIX] (bucket 3-63 letters, digits, '-', '.', '_',
 * starting and ending alphanumeric; prefix without "//", '?', '#' or control
 * characters; slashes around it dropped).  0 with both malloc'ed, or -1.
 */
int cfg_remote_parse_url(const char *url, char **bucket, char **prefix);
/*
 * Splits rc's endpoint (default https://s3.REGION.amazonaws.com) with
 * libcurl's URL parser: scheme http or https, a host, no path, query or user.
 * 0, or -1 with *why set to a static explanation.
 */
int cfg_remote_endpoint(const struct remote_cfg *rc, struct cfg_endpoint *ep, const char **why);
void cfg_endpoint_free(struct cfg_endpoint *ep);
/* rc's region, else REMOTE_DEFAULT_REGION. */
const char *cfg_remote_region(const struct remote_cfg *rc);

/*
 * The clone database names for `cfg` (empty when clone_count is 0), in
 * creation order; the caller frees the list.  For naming = django the first
 * is test_DB itself, the database `manage.py test --keepdb` uses.
 */
void cfg_clone_names(const struct cfg *cfg, struct strlist *out);

/* Sets every default; `cfg` is overwritten (free it first if it was loaded). */
void cfg_defaults(struct cfg *cfg);
/*
 * Reads `path` (explicit != NULL: --config, which must exist), else
 * $PGSTASH_CONFIG (must exist), else CFG_DEFAULT_FILE if it exists.  Errors
 * are logged as "file:line: ...".  0, or -1 when anything was wrong.
 */
int cfg_load_file(struct cfg *cfg, const char *explicit_path);
/* Same, for one given INI file. */
int cfg_load_ini(struct cfg *cfg, const char *path);
/*
 * Applies the environment: PGSTASH_*, PGDATA, POSTGRES_* (and their *_FILE
 * secrets).  0, or -1 when anything was wrong (logged).
 */
int cfg_load_env(struct cfg *cfg);
/* Whole-config checks (step roots exist, databases known...).  0 or -1 (logged). */
int cfg_validate(const struct cfg *cfg);
/* defaults → file → env → validate, for callers without argv overrides. */
int cfg_load(struct cfg *cfg, const char *explicit_path);
void cfg_free(struct cfg *cfg);
/*
 * No step, so a key that never changes: warns on stderr, naming the file
 * read or where none was found (and writes the same as a "# " line to
 * `explain` unless NULL).  True when it warned.
 */
bool cfg_warn_no_steps(const struct cfg *cfg, FILE *explain);

/* Sets a [pgstash] key from argv or env; `where` names the source for messages.  0 or -1 (logged). */
int cfg_set_option(struct cfg *cfg, const char *key, const char *value, const char *where);

/* "read-write", "read-only", "off"; static. */
const char *cfg_cache_mode_name(enum cfg_cache_mode m);
/* "replace", "migrate", "refuse"; static. */
const char *cfg_on_change_name(enum cfg_on_change c);
/* "password", "peer", "trust"; static. */
const char *cfg_local_auth_name(enum cfg_local_auth a);

#endif
