/*
 * Unit tests for the front end, entrypoint/main.c compiled in: the one
 * exit-code table (every bootstrap outcome, README's codes), the command
 * table (names, "-c k=v" meaning run), and main's own usage errors, which
 * exit 2 before any side effect.
 */
#include "unit.h"

#define main pgstash_main
#include "../../entrypoint/main.c"
#undef main

static void
test_exit_codes(void **state)
{
	(void)state;
	assert_int_equal(exit_code(BOOT_OK, 0), 0);
	assert_int_equal(exit_code(BOOT_FAILED, 0), 1);
	assert_int_equal(exit_code(BOOT_BAD_CONFIG, 0), 2);
	assert_int_equal(exit_code(BOOT_STEP_FAILED, 0), 3);
	assert_int_equal(exit_code(BOOT_EXEC_DENIED, 0), 126);
	assert_int_equal(exit_code(BOOT_EXEC_NOT_FOUND, 0), 127);
	assert_int_equal(exit_code(BOOT_INTERRUPTED, SIGTERM), 143);
	assert_int_equal(exit_code(BOOT_INTERRUPTED, SIGINT), 130);
	/* A signal decides only for an interrupted start, and none is a runtime failure. */
	assert_int_equal(exit_code(BOOT_INTERRUPTED, 0), 1);
	assert_int_equal(exit_code(BOOT_OK, SIGTERM), 0);
	assert_int_equal(exit_code(BOOT_STEP_FAILED, SIGTERM), 3);
}

static void
test_commands(void **state)
{
	(void)state;
	static const char *const names[] = {"run", "postgres", "prepare", "key", "ls", "verify", "prune", "healthcheck"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct command *c = find_command(names[i]);
		assert_non_null(c);
		assert_string_equal(c->name, names[i]);
		assert_int_equal(c->lax_config, strcmp(names[i], "healthcheck") == 0);
	}
	assert_ptr_equal(find_command("-c")->run, cmd_run);
	assert_ptr_equal(find_command("postgres")->run, cmd_run);
	assert_null(find_command("start"));
	assert_null(find_command(""));
}

/* A mistyped global option, not a setting of postgres (none lies within two edits of ours). */
static void
test_meant_option(void **state)
{
	(void)state;
	assert_string_equal(meant_option("confg=x"), "config");
	assert_string_equal(meant_option("Config"), "config");
	assert_string_equal(meant_option("cache_dir=/x"), "cache-dir");
	assert_string_equal(meant_option("pgdta"), "pgdata");
	assert_string_equal(meant_option("verbse"), "verbose");
	assert_null(meant_option("max_connections=200"));
	assert_null(meant_option("port=5433"));
	assert_null(meant_option("config_file=/etc/x")); /* postgres' own: five edits away */
	assert_null(meant_option(""));
}

/* main with argv, stderr captured; its exit code. */
static int
run_main(char **err, int argc, ...)
{
	char *argv[16];
	va_list ap;
	va_start(ap, argc);
	argv[0] = "pgstash";
	for (int i = 1; i < argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	argv[argc] = NULL;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = pgstash_main(argc, argv);
	char *e = unit_stderr_end(&cap);
	if (err)
		*err = e;
	else
		free(e);
	return rc;
}

static void
test_usage_errors(void **state)
{
	(void)state;
	char *err;
	assert_int_equal(run_main(&err, 1), 2);
	unit_expect_contains(err, "no command given");
	free(err);
	/* Not ours: exec'd as the official entrypoint does; 127 when there is no such program. */
	assert_int_equal(run_main(&err, 2, "pgstash-no-such-command"), 127);
	unit_expect_contains(err, "\"pgstash-no-such-command\" is not a pgstash command");
	free(err);
	assert_int_equal(run_main(&err, 3, "--config=", "key"), 2);
	unit_expect_contains(err, "--config needs a file name");
	free(err);
	assert_int_equal(run_main(&err, 3, "prepare", "now"), 2);
	unit_expect_contains(err, "prepare: unknown argument \"now\" (expected --full)");
	free(err);
	assert_int_equal(run_main(&err, 3, "key", "--bogus"), 2);
	unit_expect_contains(err, "key: unknown argument \"--bogus\"");
	free(err);
	/* Before, both meant "run": a bootstrap, then postgres refusing the word. */
	assert_int_equal(run_main(&err, 3, "--confg=x", "prepare"), 2);
	unit_expect_contains(err, "unknown option \"--confg=x\": did you mean --config?");
	free(err);
	assert_int_equal(run_main(&err, 3, "--pgdata", "prepare"), 2);
	unit_expect_contains(err, "--pgdata needs a value (--pgdata=...)");
	free(err);
}

int
main(void)
{
	log_min_level = LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_meant_option),
		cmocka_unit_test(test_usage_errors),
	};
	return cmocka_run_group_tests_name("main", tests, NULL, NULL);
}
