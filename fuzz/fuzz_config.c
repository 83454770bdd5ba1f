/*
 * fuzz_config — libFuzzer harness for the INI configuration reader.
 *
 * The input is the whole configuration file.  It goes the way `pgstash`
 * loads a config: defaults, cfg_load_ini (our line reader in front of inih,
 * the section and key handlers, continuation lines), the environment
 * (cleared once at start, so only the file matters), then cfg_validate and
 * the clone names when loading succeeded — as cfg_load does.  cfg_validate
 * only stat()s step roots; nothing is written but the input file.
 *
 * Not for: argv or environment overrides (cfg_set_option is reached through
 * [pgstash] keys).
 */
#include "config.h"
#include "fuzz_common.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static char *ini_path;

static void
setup_once(void)
{
	static const char *const vars[] = {
		"PGSTASH_CONFIG", "PGSTASH_CACHE_DIR", "PGDATA", "PGSTASH_PG_BINDIR", "PGSTASH_COMPRESSION",
		"PGSTASH_MAX_BYTES", "PGSTASH_MAX_ENTRIES", "PGSTASH_LOCK_TIMEOUT", "PGSTASH_STEP_TIMEOUT",
		"PGSTASH_INITDB_D", "PGSTASH_SOCKET_DIR", "PGSTASH_DOCKER_SOCKET", "POSTGRES_USER",
		"POSTGRES_USER_FILE", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRES_DB",
		"POSTGRES_DB_FILE", "POSTGRES_INITDB_ARGS", "POSTGRES_INITDB_ARGS_FILE", "POSTGRES_INITDB_WALDIR",
		"POSTGRES_HOST_AUTH_METHOD", NULL,
	};
	for (size_t i = 0; vars[i]; i++)
		unsetenv(vars[i]);
	ini_path = path_join(fuzz_setup(), "pgstash.ini");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ini_path)
		setup_once();
	fuzz_write(ini_path, data, size);

	struct cfg cfg;
	cfg_defaults(&cfg);
	int rc = cfg_load_ini(&cfg, ini_path);
	if (cfg_load_env(&cfg) != 0)
		rc = -1;
	if (rc == 0 && cfg_validate(&cfg) == 0) {
		struct strlist names = {0};
		cfg_clone_names(&cfg, &names);
		sl_free(&names);
	}
	cfg_free(&cfg);
	return 0;
}
