/*
 * pgstash — the front end: global options, sub-command dispatch, exit codes.
 *
 * Everything with a side effect lives in src/; this file parses argv, loads
 * and validates the configuration whole, runs one command, and is the only
 * place that chooses an exit code (see the table in usage()).
 */
#include "bootstrap.h"
#include "cli.h"
#include "config.h"
#include "docker.h"
#include "fingerprint.h"
#include "log.h"
#include "pgbin.h"
#include "proc.h"
#include "privs.h"
#include "remote.h"
#include "sig.h"
#include "sign.h"
#include "store.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PGSTASH_VERSION
#define PGSTASH_VERSION "0.0.0"
#endif
#ifndef PGSTASH_REVISION
#define PGSTASH_REVISION "unknown"
#endif

/* The exit codes, as README's table: the only place that chooses them. */
enum exit_code {
	EXIT_OK = 0,
	EXIT_RUNTIME = 1,
	EXIT_USAGE = 2,
	EXIT_STEP = 3,
	EXIT_EXEC_DENIED = 126,
	EXIT_EXEC_NOT_FOUND = 127,
	EXIT_SIGNAL_BASE = 128, /* + the signal's number */
};

/* The exit code of a bootstrap outcome; `signo` is the signal that interrupted it (sig_received). */
static int
exit_code(enum boot_outcome o, int signo)
{
	switch (o) {
	case BOOT_OK:
		return EXIT_OK;
	case BOOT_FAILED:
		return EXIT_RUNTIME;
	case BOOT_BAD_CONFIG:
		return EXIT_USAGE;
	case BOOT_STEP_FAILED:
		return EXIT_STEP;
	case BOOT_EXEC_DENIED:
		return EXIT_EXEC_DENIED;
	case BOOT_EXEC_NOT_FOUND:
		return EXIT_EXEC_NOT_FOUND;
	case BOOT_INTERRUPTED:
		return signo > 0 ? EXIT_SIGNAL_BASE + signo : EXIT_RUNTIME;
	}
	return EXIT_RUNTIME;
}

static void
usage(FILE *out)
{
	fputs(
	    "pgstash — a fully migrated PostgreSQL in about a second: caches PGDATA snapshots\n"
	    "keyed on the hash of your migration files, then execs postgres.\n"
	    "\n"
	    "Usage: pgstash [--config=FILE] [--cache-dir=DIR] [--pgdata=DIR] [-v|-q] COMMAND [ARGS]\n"
	    "\n"
	    "Commands:\n"
	    "  run [POSTGRES-ARGS...]  bootstrap PGDATA (restore a cached snapshot, or initdb + run the\n"
	    "                          migration steps + cache it), then exec postgres with the args.\n"
	    "                          `pgstash postgres ARGS` and `pgstash -c k=v ...` mean run too,\n"
	    "                          as with the official postgres image's entrypoint.\n"
	    "  prepare [--full]        bootstrap PGDATA and exit 0 with no server running; --full: build\n"
	    "                          from scratch, not on a cached prefix (as full_build = yes)\n"
	    "  key [--explain]         print the cache key (64 hex chars); --explain prints the manifest\n"
	    "  ls [--json] [--remote]  list cache entries: key, layer, parent, created, last used, bytes,\n"
	    "                          PostgreSQL version, build seconds, signer, the entry a prefix\n"
	    "                          build started from (--remote: the bucket's)\n"
	    "  verify [KEY...]         re-check entries' SHA-256, key and signature (all when no KEY);\n"
	    "                          exit 1 if any is bad\n"
	    "  keygen PATH             write a signing key pair: PATH.key (0600) and PATH.pub\n"
	    "  prune [--max-bytes=N] [--max-entries=N] [--dry-run] [--remote]\n"
	    "                          remove least recently used entries beyond the limits\n"
	    "                          (default: max_bytes and max_entries of the config)\n"
	    "  healthcheck             exit 0 only when bootstrap is done and the final server answers\n"
	    "  OTHER [ARGS...]         any other word is exec'd from PATH (psql, bash, pg_isready), and\n"
	    "                          `postgres --version` (-V, --help, --describe-config) bootstraps nothing,\n"
	    "                          as with the official image's entrypoint\n"
	    "\n"
	    "Options:\n"
	    "  --config=FILE           INI configuration (default: $PGSTASH_CONFIG, else\n"
	    "                          " CFG_DEFAULT_FILE " if it exists)\n"
	    "  --cache-dir=DIR         override cache_dir       --pgdata=DIR   override pgdata\n"
	    "  -v, --verbose           debug messages           -q, --quiet    warnings and errors only\n"
	    "  --version               print the version        --help         this text\n"
	    "\n"
	    "Configuration (INI; the environment overrides the file, options override both):\n"
	    "  [pgstash]\n"
	    "  cache_dir    = /var/cache/pgstash    PGSTASH_CACHE_DIR   snapshots live in DIR/pgstash-v1/\n"
	    "  pgdata       = /var/lib/postgresql/data                 PGDATA\n"
	    "  pg_bindir    = (pg_config --bindir, then PATH)          PGSTASH_PG_BINDIR\n"
	    "  compression  = zstd                  PGSTASH_COMPRESSION zstd[:1-19] | gzip[:1-9] | none\n"
	    "  max_bytes    = 10G                   PGSTASH_MAX_BYTES   prune after publishing (K M G T)\n"
	    "  max_entries  = 20                    PGSTASH_MAX_ENTRIES 0 = no limit\n"
	    "  lock_timeout = 900                   PGSTASH_LOCK_TIMEOUT seconds to wait for another builder\n"
	    "  step_timeout = 0                     PGSTASH_STEP_TIMEOUT default per-step timeout, 0 = none\n"
	    "  initdb_d     = /docker-entrypoint-initdb.d              PGSTASH_INITDB_D\n"
	    "  socket_dir   = /var/run/postgresql   PGSTASH_SOCKET_DIR  final server socket + ready state\n"
	    "  docker_socket = /var/run/docker.sock PGSTASH_DOCKER_SOCKET for steps with image =\n"
	    "  local_auth   = password              PGSTASH_LOCAL_AUTH  socket + loopback: password | peer | trust\n"
	    "  [database]\n"
	    "  user  = postgres       POSTGRES_USER(_FILE)   the superuser initdb creates\n"
	    "  name  = (user)         POSTGRES_DB(_FILE)     the main database\n"
	    "  extra = DB ...         more databases, created before the steps\n"
	    "  initdb_args = ...      POSTGRES_INITDB_ARGS(_FILE)\n"
	    "  key_env = VAR ...      variables initdb.d scripts read: their values are keyed, hashed\n"
	    "  (initdb takes its locale from LANG and LC_*; those and TZ are in the key, in clear.)\n"
	    "  (POSTGRES_PASSWORD(_FILE), POSTGRES_HOST_AUTH_METHOD and POSTGRES_INITDB_WALDIR come from the\n"
	    "  environment only; the password is applied at every start and never enters the key.)\n"
	    "  [step NAME]            steps run in file order\n"
	    "  root        = DIR      relative to the config file; the globs below are relative to it\n"
	    "  migrations  = GLOB ... glob(3) patterns, ** spans directories; one matching nothing is an\n"
	    "                         error unless written ?GLOB; blank-separated or on continuation lines\n"
	    "  exclude     = PAT ...  fnmatch(3) patterns on the relative path; '*' also spans '/'\n"
	    "  discover    = django | alembic [INI]  also key the migration files the framework applies\n"
	    "                         (installed packages too), asked with the step's Python, root and env\n"
	    "  python      = PATH     discovery's interpreter (default: the one run starts)\n"
	    "  run         = COMMAND  split into words like a shell without expansion; use /bin/sh -c '...'\n"
	    "                         for shell syntax\n"
	    "  database    = DB       the step's PGDATABASE / DATABASE_URL (default: the main database)\n"
	    "  env         = NAME=VALUE  one per line; values are hashed into the key, never shown\n"
	    "  image       = IMAGE    run the step as a container through the Docker Engine API\n"
	    "  image_id    = yes | no also key on the image's ID, not only its name (asks the engine)\n"
	    "  layer       = schema | fixtures\n"
	    "  incremental = yes | no reuse a cached prefix when only migrations were added\n"
	    "  timeout     = SECONDS\n"
	    "  after       = NAME ... earlier steps this one waits for (steps on different databases\n"
	    "                         otherwise run at once)\n"
	    "  [clones]               copies of the migrated database for parallel test workers\n"
	    "  count = N   naming = django | xdist | pattern   pattern = NAME{n}   template = DB\n"
	    "  [remote]               an S3-compatible bucket shared by CI runners\n"
	    "  url = s3://BUCKET/PREFIX   PGSTASH_REMOTE_URL      endpoint = URL   PGSTASH_REMOTE_ENDPOINT\n"
	    "  region = us-east-1         AWS_REGION              path_style = yes | no\n"
	    "  timeout = 30               PGSTASH_REMOTE_TIMEOUT\n"
	    "  (The bucket's keys, AWS_ACCESS_KEY_ID(_FILE) and AWS_SECRET_ACCESS_KEY(_FILE), and the key\n"
	    "  secret PGSTASH_KEY_SECRET_FILE come from the environment only: a config file, which a pull\n"
	    "  request can change, may not name a secret file.)\n"
	    "\n"
	    "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, 3 a migration step failed,\n"
	    "126 the command could not be executed, 127 the command was not found, 128+N killed by signal N.\n",
	    out);
}

/*
 * A cache command started as root becomes the cache's owner first (after its
 * arguments are checked): nothing in a cache another user writes is acted on
 * as root.  false: it could not (logged).
 */
static bool
as_cache_owner(const struct cfg *cfg)
{
	return geteuid() != 0 || privs_drop_for_cache(cfg) == 0;
}

static int
cmd_key(struct cfg *cfg, int argc, char **argv)
{
	bool explain = false;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--explain") == 0)
			explain = true;
		else {
			log_error("key: unknown argument \"%s\" (expected --explain)", argv[i]);
			return EXIT_USAGE;
		}
	}
	if (geteuid() == 0 && privs_drop_for_key(cfg) != 0)
		return EXIT_RUNTIME;
	struct pgbin pg;
	struct fp_result fp;
	double seconds = 0;
	cfg_warn_no_steps(cfg, explain ? stdout : NULL);
	enum boot_outcome o = boot_key(cfg, &pg, &fp, &seconds);
	if (o == BOOT_OK) {
		log_debug("fingerprinted %llu files (%llu bytes) in %.3f s", (unsigned long long)fp.files,
		          (unsigned long long)fp.bytes, seconds);
		if (explain) {
			if (fp.has_fixtures) {
				printf("# schema layer %s\n%s# fixtures layer %s\n", fp.schema_key, fp.schema_manifest, fp.key);
			}
			fputs(fp.manifest, stdout);
		} else
			printf("%s\n", fp.key);
	}
	fp_result_free(&fp);
	pgbin_free(&pg);
	if (o != BOOT_OK)
		return exit_code(o, sig_received);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* Opens the cache and [trust]'s keys for ls and verify.  0, or -1 (logged; both closed). */
static int
open_store(const struct cfg *cfg, struct store *st, struct sign_keys *keys)
{
	if (sign_load(keys, cfg->trust.signing_key, &cfg->trust.trusted_keys) != 0) {
		memset(st, 0, sizeof(*st));
		return -1;
	}
	/* read-only: a read-only mount is listed and verified as it is, never written. */
	int r = cfg->cache_mode == CFG_CACHE_READ_ONLY ? store_open_read_only(st, cfg->cache_dir)
	                                               : store_open(st, cfg->cache_dir, cfg->cache_gid);
	if (r != 0 || !st->usable) {
		store_close(st);
		sign_free(keys);
		return -1;
	}
	st->sign = keys;
	return 0;
}

static int
cmd_keygen(struct cfg *cfg, int argc, char **argv)
{
	(void)cfg;
	if (argc != 1 || !*argv[0]) {
		log_error("keygen takes one argument: PATH (writes PATH.key and PATH.pub)");
		return EXIT_USAGE;
	}
	/* A mistyped option must not leave a private key named "-x.key" behind. */
	if (argv[0][0] == '-') {
		log_error("keygen: \"%s\" looks like an option, not a PATH (for a file of that name: ./%s)", argv[0],
		          argv[0]);
		return EXIT_USAGE;
	}
	char fp[65];
	if (sign_keygen(argv[0], fp) != 0)
		return EXIT_RUNTIME;
	printf("%s.key %s.pub %s\n", argv[0], argv[0], fp);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int
cmd_ls(struct cfg *cfg, int argc, char **argv)
{
	bool json = false, remote = false;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--remote") == 0)
			remote = true;
		else {
			log_error("ls: unknown argument \"%s\" (expected --json, --remote)", argv[i]);
			return EXIT_USAGE;
		}
	}
	if (!as_cache_owner(cfg))
		return EXIT_RUNTIME;
	if (remote) {
		if (!remote_enabled(&cfg->remote)) {
			log_error("ls --remote: no remote is configured ([remote] url or PGSTASH_REMOTE_URL)");
			return EXIT_USAGE;
		}
		return cli_ls_remote(&cfg->remote, json, stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
	}
	struct store st;
	struct sign_keys keys;
	if (open_store(cfg, &st, &keys) != 0)
		return EXIT_RUNTIME;
	int rc = cli_ls(&st, json, stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
	store_close(&st);
	sign_free(&keys);
	return rc;
}

static int
cmd_verify(struct cfg *cfg, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (!cli_key_prefix_ok(argv[i])) {
			log_error("verify: \"%s\" is not a key or key prefix (4 to 64 lowercase hex characters)", argv[i]);
			return EXIT_USAGE;
		}
	}
	if (!as_cache_owner(cfg))
		return EXIT_RUNTIME;
	struct store st;
	struct sign_keys keys;
	if (open_store(cfg, &st, &keys) != 0)
		return EXIT_RUNTIME;
	int bad = cli_verify(&st, (const char *const *)argv, (size_t)argc, stdout);
	store_close(&st);
	sign_free(&keys);
	return bad == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int
cmd_prune(struct cfg *cfg, int argc, char **argv)
{
	uint64_t max_bytes = cfg->max_bytes;
	long max_entries = cfg->max_entries;
	bool dry = false, remote = false;
	for (int i = 0; i < argc; i++) {
		const char *why;
		if (strcmp(argv[i], "--remote") == 0) {
			remote = true;
			continue;
		}
		if (strncmp(argv[i], "--max-bytes=", 12) == 0) {
			if (parse_size(argv[i] + 12, &max_bytes, &why) != 0) {
				log_error("prune: bad --max-bytes \"%s\": %s", argv[i] + 12, why);
				return EXIT_USAGE;
			}
		} else if (strncmp(argv[i], "--max-entries=", 14) == 0) {
			if (parse_long(argv[i] + 14, 0, 1000000, &max_entries, &why) != 0) {
				log_error("prune: bad --max-entries \"%s\": %s", argv[i] + 14, why);
				return EXIT_USAGE;
			}
		} else if (strcmp(argv[i], "--dry-run") == 0)
			dry = true;
		else {
			log_error("prune: unknown argument \"%s\" (expected --max-bytes=N, --max-entries=N, --dry-run, --remote)",
			          argv[i]);
			return EXIT_USAGE;
		}
	}
	if (!as_cache_owner(cfg))
		return EXIT_RUNTIME;
	if (remote) {
		if (!remote_enabled(&cfg->remote)) {
			log_error("prune --remote: no remote is configured ([remote] url or PGSTASH_REMOTE_URL)");
			return EXIT_USAGE;
		}
		return remote_prune(&cfg->remote, max_bytes, max_entries, dry, stdout) >= 0 ? EXIT_OK : EXIT_RUNTIME;
	}
	struct store st;
	struct sign_keys keys;
	if (open_store(cfg, &st, &keys) != 0)
		return EXIT_RUNTIME;
	int rc = store_prune(&st, max_bytes, max_entries, dry, NULL, stdout) >= 0 ? EXIT_OK : EXIT_RUNTIME;
	store_close(&st);
	sign_free(&keys);
	return rc;
}

static int
cmd_prepare(struct cfg *cfg, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--full") == 0)
			cfg->full_build = true;
		else {
			log_error("prepare: unknown argument \"%s\" (expected --full)", argv[i]);
			return EXIT_USAGE;
		}
	}
	cfg_warn_no_steps(cfg, NULL);
	enum boot_outcome o = boot_main(cfg, false, 0, NULL);
	/* Read after the bootstrap: it names the signal that ended it. */
	return exit_code(o, sig_received);
}

/* run: "run ARGS", "postgres ARGS" or "-c k=v ..." (the args go to postgres). */
static int
cmd_run(struct cfg *cfg, int argc, char **argv)
{
	cfg_warn_no_steps(cfg, NULL);
	enum boot_outcome o = boot_main(cfg, true, argc, argv);
	return exit_code(o, sig_received);
}

static int
cmd_healthcheck(struct cfg *cfg, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return boot_healthcheck(cfg);
}

struct command {
	const char *name;
	int (*run)(struct cfg *cfg, int argc, char **argv);
	/* Cheap, and independent of the config's validity: only socket_dir matters (healthcheck). */
	bool lax_config;
};

static const struct command commands[] = {
	{"run", cmd_run, false},
	{"postgres", cmd_run, false},
	{"prepare", cmd_prepare, false},
	{"key", cmd_key, false},
	{"ls", cmd_ls, false},
	{"verify", cmd_verify, false},
	{"prune", cmd_prune, false},
	{"healthcheck", cmd_healthcheck, true},
	{"keygen", cmd_keygen, true},
};

/*
 * The command named `cmd`, or NULL; "-c k=v ..." is run (the official image's
 * rule: a first argument starting with '-' means "postgres ARGS").
 */
static const struct command *
find_command(const char *cmd)
{
	if (cmd[0] == '-')
		return &commands[0];
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
		if (strcmp(cmd, commands[k].name) == 0)
			return &commands[k];
	return NULL;
}

/* Whether a command's arguments ask for help (run's go to postgres: wants_help). */
static bool
wants_usage(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

/* What the global options set. */
struct options {
	const char *config_path;
	const char *cache_dir;
	const char *pgdata;
	int cmd;  /* index of the command in argv */
};

/*
 * The global option a word "--NAME[=VALUE]" was meant as, or NULL.  Any other
 * word starting with '-' is postgres' (`pgstash --max_connections=200`, the
 * official image's rule), but no setting of postgres lies within two edits of
 * these names ('_' read as '-'), so `--confg=FILE` is a typo to say before
 * anything is bootstrapped, not a setting for the final server to refuse.
 */
static const char *
meant_option(const char *arg)
{
	static const char *const ours[] = {"config", "cache-dir", "pgdata", "verbose", "quiet", "version", "help"};
	char name[65];
	size_t n = strcspn(arg, "=");
	if (n >= sizeof(name))
		return NULL;
	for (size_t i = 0; i < n; i++)
		name[i] = arg[i] == '_' ? '-' : (char)tolower((unsigned char)arg[i]);
	name[n] = '\0';
	for (size_t k = 0; k < sizeof(ours) / sizeof(ours[0]); k++)
		if (edit_distance(name, ours[k]) <= 2)
			return ours[k];
	return NULL;
}

/*
 * The global options before the command, into *o.  -1 to go on; else the
 * exit code (--help, --version, a bad option).
 */
static int
parse_options(int argc, char **argv, struct options *o)
{
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return EXIT_OK;
		} else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			printf("pgstash %s (%s)\n", PGSTASH_VERSION, PGSTASH_REVISION);
			return EXIT_OK;
		} else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
			log_min_level = LOG_DEBUG;
		else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)
			log_min_level = LOG_WARNING;
		else if (strncmp(a, "--config=", 9) == 0)
			o->config_path = a + 9;
		else if (strcmp(a, "--config") == 0 && i + 1 < argc)
			o->config_path = argv[++i];
		else if (strncmp(a, "--cache-dir=", 12) == 0)
			o->cache_dir = a + 12;
		else if (strncmp(a, "--pgdata=", 9) == 0)
			o->pgdata = a + 9;
		else if (strcmp(a, "--config") == 0 || strcmp(a, "--cache-dir") == 0 || strcmp(a, "--pgdata") == 0) {
			log_error("%s needs a value (%s=...)", a, a);
			return EXIT_USAGE;
		} else if (strncmp(a, "--", 2) == 0 && meant_option(a + 2)) {
			log_error("unknown option \"%s\": did you mean --%s? (see pgstash --help)", a, meant_option(a + 2));
			return EXIT_USAGE;
		} else
			break;
	}
	if (o->config_path && !*o->config_path) {
		log_error("--config needs a file name");
		return EXIT_USAGE;
	}
	if (i >= argc) {
		usage(stderr);
		log_error("no command given");
		return EXIT_USAGE;
	}
	o->cmd = i;
	return -1;
}

/* Defaults, the file, the environment, the options; validated whole unless `lax`.  0, or -1 (logged, freed). */
static int
load_config(struct cfg *cfg, const struct options *o, bool lax)
{
	cfg_defaults(cfg);
	int bad = 0;
	if (cfg_load_file(cfg, o->config_path) != 0)
		bad++;
	if (!bad || !lax) {
		if (cfg_load_env(cfg) != 0)
			bad++;
	}
	if (!lax) {
		if (o->cache_dir && cfg_set_option(cfg, "cache_dir", o->cache_dir, "--cache-dir") != 0)
			bad++;
		if (o->pgdata && cfg_set_option(cfg, "pgdata", o->pgdata, "--pgdata") != 0)
			bad++;
		if (!bad && cfg_validate(cfg) != 0)
			bad++;
	}
	if (bad) {
		cfg_free(cfg);
		return -1;
	}
	return 0;
}

/*
 * The official entrypoint's _pg_want_help: postgres arguments that only
 * print something and exit (`postgres --version`), so nothing is bootstrapped.
 */
static bool
wants_help(int argc, char **argv)
{
	static const char *const help[] = {"-?", "--help", "--describe-config", "-V", "--version"};
	for (int i = 0; i < argc; i++)
		for (size_t k = 0; k < sizeof(help) / sizeof(help[0]); k++)
			if (strcmp(argv[i], help[k]) == 0)
				return true;
	return false;
}

/*
 * Replaces pgstash with argv[0] (looked up in PATH unless `exact`), with
 * environment `envp` (NULL: ours); returns only the exit code of a failure.
 */
static int
exec_command(char **argv, char **envp, bool exact, const char *what)
{
	fflush(stdout);
	fflush(stderr);
	if (!envp)
		envp = environ;
	if (exact)
		execve(argv[0], argv, envp);
	else
		execvpe(argv[0], argv, envp);
	int e = errno;
	if (e == ENOENT)
		log_error("\"%s\" is %s, and no such program was found%s", argv[0], what, exact ? "" : " on PATH");
	else
		log_error("could not execute \"%s\": %s", argv[0], strerror(e));
	return e == ENOENT ? EXIT_EXEC_NOT_FOUND : EXIT_EXEC_DENIED;
}

/*
 * As root: gives root up for good, as every child of proc does, before the
 * exec of a program the configuration names (pg_bindir).  false: it could
 * not (logged).
 */
static bool
unprivileged_for(const char *prog)
{
	if (geteuid() != 0)
		return true;
	uid_t uid;
	gid_t gid;
	proc_unprivileged_ids(&uid, &gid);
	if (proc_become(uid, gid) == 0)
		return true;
	log_error("could not give up root (to uid %ld) to run \"%s\": %s", (long)uid, prog, strerror(errno));
	return false;
}

/* `postgres --version` and the like: exec the configured postgres with the args, bootstrapping nothing. */
static int
postgres_help(const struct options *o, int argc, char **argv)
{
	struct cfg cfg;
	if (load_config(&cfg, o, true) != 0)
		return EXIT_USAGE;
	struct pgbin pg;
	int found = pgbin_find(cfg.pg_bindir, &pg);
	cfg_free(&cfg);
	if (found != 0)
		return EXIT_EXEC_NOT_FOUND;
	char **pargv = xcalloc((size_t)argc + 2, sizeof(char *));
	pargv[0] = pgbin_path(&pg, "postgres");
	for (int i = 0; i < argc; i++)
		pargv[i + 1] = argv[i];
	pgbin_free(&pg);
	/* As the final server's (bootstrap): a configured postgres gets none of our secrets. */
	struct strlist env = {0};
	proc_env_inherit_public(&env);
	if (geteuid() == 0) {
		/* As a child of root gets them (proc_spawn): not root's HOME, USER and LOGNAME. */
		uid_t uid;
		gid_t gid;
		proc_unprivileged_ids(&uid, &gid);
		proc_env_of_user(&env, uid);
	}
	int rc = unprivileged_for(pargv[0]) ? exec_command(pargv, env.v, true, "postgres") : EXIT_EXEC_DENIED;
	sl_free(&env);
	free(pargv[0]);
	free(pargv);
	return rc;
}

int
main(int argc, char **argv)
{
	struct options o = {0};
	int rc = parse_options(argc, argv, &o);
	if (rc >= 0)
		return rc;
	const char *cmd = argv[o.cmd];
	const struct command *c = find_command(cmd);
	/* As the official entrypoint: a command that is not ours is exec'd (psql, bash, pg_isready). */
	if (!c)
		return exec_command(argv + o.cmd, NULL, false, "not a pgstash command");
	/* "-c k=v ...": the command word is the first argument for postgres. */
	int first = cmd[0] == '-' ? o.cmd : o.cmd + 1;
	if (c->run == cmd_run && wants_help(argc - first, argv + first))
		return postgres_help(&o, argc - first, argv + first);
	if (c->run != cmd_run && wants_usage(argc - first, argv + first)) {
		usage(stdout);
		return EXIT_OK;
	}
	struct cfg cfg;
	if (load_config(&cfg, &o, c->lax_config) != 0)
		return EXIT_USAGE;
	/* Read: from here no copy in our environment, for no child to inherit. */
	proc_env_drop_credentials();
	rc = c->run(&cfg, argc - first, argv + first);
	/* A privilege drop for image steps started it (key, prepare, cache commands): its /tmp directory goes too. */
	docker_broker_stop();
	cfg_free(&cfg);
	return rc;
}
