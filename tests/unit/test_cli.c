/*
 * Unit tests for cli: what `verify` accepts (a key or a prefix of 4 to 64
 * lowercase hex digits) and how it resolves prefixes against a store (unique
 * prefix: the entry; ambiguous or unknown: a BAD line), and the `ls` table.
 */
#include "unit.h"

#include "cli.h"
#include "digest.h"
#include "durable.h"
#include "entry.h"
#include "store.h"

/* Keys are the SHA-256 of their manifest (store_acceptable): two manifests whose keys share "3ec7". */
#define MANIFEST_1 "manifest 111\n"
#define KEY_1 "3ec7aae37d62719ff9d791e4ea3ce1b82f1d33fbc084b7591217ac6a86a5bb7e"
#define MANIFEST_2 "manifest 135\n"
#define KEY_2 "3ec79f0a2a181b89b8d025aaf993eae4ca1fee1e300e481199d6f948ad1d28b3"

static char *tmp;
static struct store st;

static int
setup(void **state)
{
	tmp = unit_tmpdir();
	assert_int_equal(store_open(&st, tmp, (gid_t)-1), 0);
	return 0;
}

static int
teardown(void **state)
{
	store_close(&st);
	rm_rf(tmp);
	free(tmp);
	return 0;
}

/* A complete entry made by hand: a 5-byte archive and its meta. */
static void
make_entry(const char *key, const char *bytes)
{
	struct entry_meta m = {.layer = CFG_LAYER_SCHEMA, .created = 1, .last_used = 2, .compression = CFG_COMP_NONE};
	memcpy(m.key, key, 65);
	m.manifest = (char *)(strcmp(key, KEY_1) == 0 ? MANIFEST_1 : MANIFEST_2);
	snprintf(m.pg_version, sizeof(m.pg_version), "16.4");
	m.archive_bytes = strlen(bytes);
	m.pgdata_bytes = strlen(bytes); /* 0 is a bad meta */
	digest_hex(bytes, strlen(bytes), m.archive_sha256);
	char *a = entry_archive_path(st.dir, key, CFG_COMP_NONE);
	assert_int_equal(durable_write_file(a, bytes, strlen(bytes), 0644, false), 0);
	char *text = entry_meta_encode(&m);
	char *p = entry_meta_path(st.dir, key);
	assert_int_equal(durable_write_file(p, text, strlen(text), 0644, false), 0);
	free(p);
	free(text);
	free(a);
}

static char *
verify(const char *const *keys, size_t n, int *bad)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	assert_non_null(out);
	*bad = cli_verify(&st, keys, n, out);
	fclose(out);
	return buf;
}

static void
test_key_prefix_ok(void **state)
{
	assert_true(cli_key_prefix_ok("abcd"));
	assert_true(cli_key_prefix_ok(KEY_1));
	assert_false(cli_key_prefix_ok("abc"));
	assert_false(cli_key_prefix_ok("ABCD"));
	assert_false(cli_key_prefix_ok("abcg"));
	assert_false(cli_key_prefix_ok(KEY_1 "a"));
	assert_false(cli_key_prefix_ok(""));
}

static void
test_verify_prefixes(void **state)
{
	make_entry(KEY_1, "hello");
	make_entry(KEY_2, "world");
	int bad;
	const char *unique[] = {"3ec7a", KEY_2};
	char *out = verify(unique, 2, &bad);
	assert_int_equal(bad, 0);
	assert_string_equal(out, "ok " KEY_1 "\nok " KEY_2 "\n");
	free(out);

	const char *ambiguous[] = {"3ec7"};
	out = verify(ambiguous, 1, &bad);
	assert_int_equal(bad, 1);
	assert_string_equal(out, "BAD 3ec7: ambiguous key prefix\n");
	free(out);

	const char *none[] = {"ffff"};
	out = verify(none, 1, &bad);
	assert_int_equal(bad, 1);
	assert_string_equal(out, "BAD ffff: no such entry\n");
	free(out);

	/* Every entry; a damaged one is reported, not removed. */
	char *a = entry_archive_path(st.dir, KEY_2, CFG_COMP_NONE);
	assert_int_equal(durable_write_file(a, "WORLD", 5, 0644, false), 0);
	out = verify(NULL, 0, &bad);
	assert_int_equal(bad, 1);
	assert_non_null(strstr(out, "ok " KEY_1 "\n"));
	assert_non_null(strstr(out, "BAD " KEY_2 ": archive SHA-256 is "));
	free(out);
	struct stat sb;
	assert_int_equal(stat(a, &sb), 0);
	free(a);
}

static void
test_ls(void **state)
{
	make_entry(KEY_1, "hello");
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	assert_int_equal(cli_ls(&st, false, out), 0);
	fclose(out);
	assert_int_equal(strncmp(buf, "KEY ", 4), 0);
	assert_non_null(strstr(buf, KEY_1 "  schema    -             1970-01-01T00:00:01Z  1970-01-01T00:00:02Z"));
	free(buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_prefix_ok),
		cmocka_unit_test_setup_teardown(test_verify_prefixes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ls, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
