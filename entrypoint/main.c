/*
 * pgstash — the front end: global options, sub-command dispatch, exit codes.
 *
 * Everything with a side effect lives in src/; this file parses argv, loads
 * and validates the configuration whole, runs one command, and is the only
 * place that chooses an exit code (see the table in usage()).
 */
#include "bootstrap.h"
#include "config.h"
#include "fingerprint.h"
#include "log.h"
#include "pgbin.h"
#include "remote.h"
#include "sig.h"
#include "store.h"
#include "util.h"

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

enum {
	EXIT_OK = 0,
	EXIT_RUNTIME = 1,
	EXIT_USAGE = 2,
	EXIT_STEP = 3,
};

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
	    "  prepare                 bootstrap PGDATA and exit 0 with no server running\n"
	    "  key [--explain]         print the cache key (64 hex chars); --explain prints the manifest\n"
	    "  ls [--json] [--remote]  list cache entries: key, layer, parent, created, last used, bytes,\n"
	    "                          PostgreSQL version, build seconds (--remote: the bucket's)\n"
	    "  verify [KEY...]         re-check entries' SHA-256 (all when no KEY); exit 1 if any is bad\n"
	    "  prune [--max-bytes=N] [--max-entries=N] [--dry-run] [--remote]\n"
	    "                          remove least recently used entries beyond the limits\n"
	    "                          (default: max_bytes and max_entries of the config)\n"
	    "  healthcheck             exit 0 only when bootstrap is done and the final server answers\n"
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
	    "  [database]\n"
	    "  user  = postgres       POSTGRES_USER(_FILE)   the superuser initdb creates\n"
	    "  name  = (user)         POSTGRES_DB(_FILE)     the main database\n"
	    "  extra = DB ...         more databases, created before the steps\n"
	    "  initdb_args = ...      POSTGRES_INITDB_ARGS(_FILE)\n"
	    "  (POSTGRES_PASSWORD(_FILE), POSTGRES_HOST_AUTH_METHOD and POSTGRES_INITDB_WALDIR come from the\n"
	    "  environment only; the password is applied at every start and never enters the key.)\n"
	    "  [step NAME]            steps run in file order\n"
	    "  root        = DIR      relative to the config file; the globs below are relative to it\n"
	    "  migrations  = GLOB ... glob(3) patterns (no **), blank-separated or on continuation lines\n"
	    "  exclude     = PAT ...  fnmatch(3) patterns on the relative path; '*' also spans '/'\n"
	    "  run         = COMMAND  split into words like a shell without expansion; use /bin/sh -c '...'\n"
	    "                         for shell syntax\n"
	    "  database    = DB       the step's PGDATABASE / DATABASE_URL (default: the main database)\n"
	    "  env         = NAME=VALUE  one per line; values are hashed into the key, never shown\n"
	    "  image       = IMAGE    run the step as a container through the Docker Engine API\n"
	    "  image_id    = yes | no also key on the image's ID, not only its name (asks the engine)\n"
	    "  layer       = schema | fixtures\n"
	    "  incremental = yes | no reuse a cached prefix when only migrations were added\n"
	    "  timeout     = SECONDS\n"
	    "  [clones]               copies of the migrated database for parallel test workers\n"
	    "  count = N   naming = django | xdist | pattern   pattern = NAME{n}   template = DB\n"
	    "  [remote]               an S3-compatible bucket shared by CI runners\n"
	    "  url = s3://BUCKET/PREFIX   PGSTASH_REMOTE_URL      endpoint = URL   PGSTASH_REMOTE_ENDPOINT\n"
	    "  region = us-east-1         AWS_REGION              path_style = yes | no\n"
	    "  access_key_file = FILE     AWS_ACCESS_KEY_ID(_FILE)    secret_key_file = FILE\n"
	    "                             AWS_SECRET_ACCESS_KEY(_FILE)    timeout = 30   PGSTASH_REMOTE_TIMEOUT\n"
	    "\n"
	    "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, 3 a migration step failed,\n"
	    "126 postgres could not be executed, 127 postgres not found, 128+N killed by signal N.\n",
	    out);
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
	struct pgbin pg;
	if (pgbin_find(cfg->pg_bindir, &pg) != 0)
		return EXIT_RUNTIME;
	if (boot_resolve_images(cfg) != 0) {
		pgbin_free(&pg);
		return EXIT_RUNTIME;
	}
	cfg_warn_no_steps(cfg, explain ? stdout : NULL);
	struct fp_result fp;
	double t0 = log_now();
	if (fp_compute(cfg, pg.major, NULL, &fp) != 0) {
		pgbin_free(&pg);
		return EXIT_USAGE;
	}
	log_debug("fingerprinted %llu files (%llu bytes) in %.3f s", (unsigned long long)fp.files,
	          (unsigned long long)fp.bytes, log_now() - t0);
	if (explain) {
		if (fp.has_fixtures) {
			printf("# schema layer %s\n%s# fixtures layer %s\n", fp.schema_key, fp.schema_manifest, fp.key);
		}
		fputs(fp.manifest, stdout);
	} else
		printf("%s\n", fp.key);
	fp_result_free(&fp);
	pgbin_free(&pg);
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
	if (remote) {
		if (!remote_enabled(&cfg->remote)) {
			log_error("ls --remote: no remote is configured ([remote] url or PGSTASH_REMOTE_URL)");
			return EXIT_USAGE;
		}
		return remote_list(&cfg->remote, stdout, json) == 0 ? EXIT_OK : EXIT_RUNTIME;
	}
	struct store st;
	if (store_open(&st, cfg->cache_dir) != 0 || !st.usable) {
		store_close(&st);
		return EXIT_RUNTIME;
	}
	int rc = store_print_ls(&st, json, stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
	store_close(&st);
	return rc;
}

static int
cmd_verify(struct cfg *cfg, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (strlen(argv[i]) != 64 || strspn(argv[i], "0123456789abcdef") != 64) {
			log_error("verify: \"%s\" is not a key (64 lowercase hex characters)", argv[i]);
			return EXIT_USAGE;
		}
	}
	struct store st;
	if (store_open(&st, cfg->cache_dir) != 0 || !st.usable) {
		store_close(&st);
		return EXIT_RUNTIME;
	}
	int bad = store_verify(&st, (const char *const *)argv, (size_t)argc);
	store_close(&st);
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
	if (remote) {
		if (!remote_enabled(&cfg->remote)) {
			log_error("prune --remote: no remote is configured ([remote] url or PGSTASH_REMOTE_URL)");
			return EXIT_USAGE;
		}
		return remote_prune(&cfg->remote, max_bytes, max_entries, dry, stdout) >= 0 ? EXIT_OK : EXIT_RUNTIME;
	}
	struct store st;
	if (store_open(&st, cfg->cache_dir) != 0 || !st.usable) {
		store_close(&st);
		return EXIT_RUNTIME;
	}
	int rc = store_prune(&st, max_bytes, max_entries, dry, NULL, stdout) >= 0 ? EXIT_OK : EXIT_RUNTIME;
	store_close(&st);
	return rc;
}

/* The official image's rule: a first argument starting with '-' means "postgres ARGS". */
static bool
means_run(const char *cmd)
{
	return cmd[0] == '-' || strcmp(cmd, "postgres") == 0 || strcmp(cmd, "run") == 0;
}

int
main(int argc, char **argv)
{
	const char *config_path = NULL;
	const char *cache_dir = NULL, *pgdata = NULL;
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
			config_path = a + 9;
		else if (strcmp(a, "--config") == 0 && i + 1 < argc)
			config_path = argv[++i];
		else if (strncmp(a, "--cache-dir=", 12) == 0)
			cache_dir = a + 12;
		else if (strncmp(a, "--pgdata=", 9) == 0)
			pgdata = a + 9;
		else if (strncmp(a, "--", 2) == 0 && strcmp(a, "--") != 0 && !means_run(a + 1)) {
			/* "--config" without a value lands here too. */
			log_error("unknown option \"%s\"; see pgstash --help", a);
			return EXIT_USAGE;
		} else
			break;
	}
	if (config_path && !*config_path) {
		log_error("--config needs a file name");
		return EXIT_USAGE;
	}
	if (i >= argc) {
		usage(stderr);
		log_error("no command given");
		return EXIT_USAGE;
	}
	const char *cmd = argv[i];
	static const char *const known[] = {"run", "postgres", "prepare", "key", "ls", "verify", "prune", "healthcheck", NULL};
	bool ok = cmd[0] == '-';
	for (size_t k = 0; known[k] && !ok; k++)
		ok = strcmp(cmd, known[k]) == 0;
	if (!ok) {
		log_error("unknown command \"%s\" (expected run, prepare, key, ls, verify, prune or healthcheck; see pgstash --help)",
		          cmd);
		return EXIT_USAGE;
	}

	if (strcmp(cmd, "healthcheck") == 0) {
		/* Cheap, and independent of the config's validity: only socket_dir matters. */
		struct cfg cfg;
		cfg_defaults(&cfg);
		if (cfg_load_file(&cfg, config_path) != 0 || cfg_load_env(&cfg) != 0) {
			cfg_free(&cfg);
			return EXIT_USAGE;
		}
		int rc = boot_healthcheck(&cfg);
		cfg_free(&cfg);
		return rc;
	}

	struct cfg cfg;
	cfg_defaults(&cfg);
	int bad = 0;
	if (cfg_load_file(&cfg, config_path) != 0)
		bad++;
	if (cfg_load_env(&cfg) != 0)
		bad++;
	if (cache_dir && cfg_set_option(&cfg, "cache_dir", cache_dir, "--cache-dir") != 0)
		bad++;
	if (pgdata && cfg_set_option(&cfg, "pgdata", pgdata, "--pgdata") != 0)
		bad++;
	if (!bad && cfg_validate(&cfg) != 0)
		bad++;
	if (bad) {
		cfg_free(&cfg);
		return EXIT_USAGE;
	}

	if (strcmp(cmd, "prepare") == 0 || means_run(cmd))
		cfg_warn_no_steps(&cfg, NULL);
	int rc;
	int sub_argc = argc - i - 1;
	char **sub_argv = argv + i + 1;
	if (strcmp(cmd, "key") == 0)
		rc = cmd_key(&cfg, sub_argc, sub_argv);
	else if (strcmp(cmd, "ls") == 0)
		rc = cmd_ls(&cfg, sub_argc, sub_argv);
	else if (strcmp(cmd, "verify") == 0)
		rc = cmd_verify(&cfg, sub_argc, sub_argv);
	else if (strcmp(cmd, "prune") == 0)
		rc = cmd_prune(&cfg, sub_argc, sub_argv);
	else if (strcmp(cmd, "prepare") == 0) {
		if (sub_argc > 0) {
			log_error("prepare takes no arguments");
			rc = EXIT_USAGE;
		} else
			rc = boot_main(&cfg, false, 0, NULL);
	} else {
		/* run: "run ARGS", "postgres ARGS" or "-c k=v ..." (the args go to postgres). */
		char **pg_argv = cmd[0] == '-' ? argv + i : sub_argv;
		int pg_argc = cmd[0] == '-' ? argc - i : sub_argc;
		rc = boot_main(&cfg, true, pg_argc, pg_argv);
	}
	cfg_free(&cfg);
	return rc;
}
