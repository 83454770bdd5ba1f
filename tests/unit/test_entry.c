/*
 * Unit tests for entry: key validity, the layout names, every enum name both
 * ways, and the meta's one encoder and parser (round trip, bad input, the
 * fields a download needs).
 */
#include "unit.h"

#include "entry.h"

#define KEY_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KEY_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_0 "0000000000000000000000000000000000000000000000000000000000000000"

static void
test_key_valid(void **state)
{
	assert_true(entry_key_valid(KEY_A));
	assert_true(entry_key_valid(KEY_B));
	assert_false(entry_key_valid(NULL));
	assert_false(entry_key_valid(""));
	assert_false(entry_key_valid("abc"));
	assert_false(entry_key_valid("../../../../etc/passwd"));
	assert_false(entry_key_valid(KEY_A "a"));
	char upper[] = KEY_B;
	upper[10] = 'A';
	assert_false(entry_key_valid(upper));
}

static void
test_enum_names(void **state)
{
	const enum cfg_compression comps[] = {CFG_COMP_NONE, CFG_COMP_GZIP, CFG_COMP_ZSTD};
	for (size_t i = 0; i < 3; i++) {
		enum cfg_compression back;
		assert_true(entry_compression_parse(entry_compression_name(comps[i]), &back));
		assert_int_equal(back, comps[i]);
	}
	assert_string_equal(entry_compression_name(CFG_COMP_ZSTD), "zstd");
	assert_string_equal(entry_compression_name(CFG_COMP_GZIP), "gzip");
	assert_string_equal(entry_compression_name(CFG_COMP_NONE), "none");
	enum cfg_compression c;
	assert_false(entry_compression_parse("ZSTD", &c));
	assert_false(entry_compression_parse("lz4", &c));

	const enum cfg_layer layers[] = {CFG_LAYER_SCHEMA, CFG_LAYER_FIXTURES};
	for (size_t i = 0; i < 2; i++) {
		enum cfg_layer back;
		assert_true(entry_layer_parse(entry_layer_name(layers[i]), &back));
		assert_int_equal(back, layers[i]);
	}
	enum cfg_layer l;
	assert_false(entry_layer_parse("data", &l));

	assert_string_equal(entry_suffix(CFG_COMP_ZSTD), ".tar.zst");
	assert_string_equal(entry_suffix(CFG_COMP_GZIP), ".tar.gz");
	assert_string_equal(entry_suffix(CFG_COMP_NONE), ".tar");
}

static void
test_layout_names(void **state)
{
	char *p = entry_meta_path("/c/" STORE_DIR_NAME, KEY_A);
	assert_string_equal(p, "/c/pgstash-v1/" KEY_A ".meta");
	free(p);
	p = entry_archive_path("/c", KEY_A, CFG_COMP_GZIP);
	assert_string_equal(p, "/c/" KEY_A ".tar.gz");
	free(p);

	char key[65];
	enum cfg_compression c;
	assert_true(entry_archive_name(KEY_B ".tar.zst", key, &c));
	assert_string_equal(key, KEY_B);
	assert_int_equal(c, CFG_COMP_ZSTD);
	assert_true(entry_archive_name(KEY_B ".tar", key, &c));
	assert_int_equal(c, CFG_COMP_NONE);
	assert_false(entry_archive_name(KEY_B ".tar.xz", key, &c));
	assert_false(entry_archive_name(KEY_B ".meta", key, &c));
	assert_false(entry_archive_name("short.tar", key, &c));
	assert_true(entry_meta_name(KEY_B ".meta", key));
	assert_false(entry_meta_name(KEY_B ".lease", key));
	assert_false(entry_meta_name("x" KEY_B ".meta", key));
}

static void
test_round_trip(void **state)
{
	struct entry_meta m = {.layer = CFG_LAYER_FIXTURES, .created = 1700000000, .last_used = 1700000100,
	                       .archive_bytes = 12345, .pgdata_bytes = 99, .build_seconds = 1.5,
	                       .compression = CFG_COMP_GZIP};
	memcpy(m.key, KEY_A, 65);
	memcpy(m.parent, KEY_B, 65);
	memcpy(m.archive_sha256, SHA_0, 65);
	snprintf(m.pg_version, sizeof(m.pg_version), "16.4");
	/* Escapes, a long line, blanks at both ends, no final newline. */
	struct strbuf man = {0};
	sb_append(&man, "pgstash-manifest 1\n %;#\\\t\x7f \n");
	for (int i = 0; i < 300; i++)
		sb_appendc(&man, (char)('a' + i % 26));
	sb_append(&man, "\nlast");
	m.manifest = sb_take(&man);

	char *text = entry_meta_encode(&m);
	for (const char *line = text; *line;) {
		const char *nl = strchr(line, '\n');
		assert_non_null(nl);
		assert_true(nl - line < 200);
		line = nl + 1;
	}
	struct entry_meta back;
	int line;
	char why[200];
	assert_int_equal(entry_meta_parse(text, strlen(text), ENTRY_F_REQUIRED, &back, &line, why, sizeof(why)),
	                 ENTRY_PARSE_OK);
	assert_string_equal(back.key, m.key);
	assert_string_equal(back.parent, m.parent);
	assert_int_equal(back.layer, m.layer);
	assert_string_equal(back.manifest, m.manifest);
	assert_string_equal(back.pg_version, m.pg_version);
	assert_int_equal(back.created, m.created);
	assert_int_equal(back.last_used, m.last_used);
	assert_int_equal(back.archive_bytes, m.archive_bytes);
	assert_string_equal(back.archive_sha256, m.archive_sha256);
	assert_int_equal(back.pgdata_bytes, m.pgdata_bytes);
	assert_int_equal(back.compression, m.compression);
	assert_true(back.build_seconds > 1.4999 && back.build_seconds < 1.5001);
	assert_null(back.archive);
	/* A full build carries no provenance lines: its meta is what it always was. */
	assert_null(strstr(text, "built_from"));
	assert_string_equal(back.built_from, "");
	assert_true(entry_full_build_seconds(&back) > 1.4999 && entry_full_build_seconds(&back) < 1.5001);
	entry_meta_free(&back);
	free(text);

	/* A prefix build: built_from and the full build's time come back. */
	memcpy(m.built_from, KEY_B, 65);
	m.full_build_seconds = 12.25;
	text = entry_meta_encode(&m);
	unit_expect_contains(text, "\nbuilt_from = " KEY_B "\nfull_build_seconds = 12.250\n");
	assert_int_equal(entry_meta_parse(text, strlen(text), ENTRY_F_REQUIRED, &back, &line, why, sizeof(why)),
	                 ENTRY_PARSE_OK);
	assert_string_equal(back.built_from, KEY_B);
	assert_true(back.full_build_seconds > 12.249 && back.full_build_seconds < 12.251);
	assert_true(entry_full_build_seconds(&back) > 12.249 && entry_full_build_seconds(&back) < 12.251);
	entry_meta_free(&back);
	free(text);
	entry_meta_free(&m);
}

static void
test_download_fields(void **state)
{
	struct entry_meta mi;
	int line;
	char why[200];
	const char *good = "; pgstash cache entry\nkey = " KEY_A "\nparent = \nlayer = schema\ncompression = gzip\n"
	                   "archive_bytes = 42\narchive_sha256 = " SHA_0 "\nmanifest = x %25\\\nnewer_field = 1\n";
	assert_int_equal(entry_meta_parse(good, strlen(good), ENTRY_F_DOWNLOAD, &mi, &line, why, sizeof(why)),
	                 ENTRY_PARSE_OK);
	assert_string_equal(mi.key, KEY_A);
	assert_string_equal(mi.archive_sha256, SHA_0);
	assert_int_equal(mi.archive_bytes, 42);
	assert_int_equal(mi.compression, CFG_COMP_GZIP);
	assert_string_equal(mi.manifest, "x %");
	entry_meta_free(&mi);
	/* The same text lacks what a local entry needs. */
	assert_int_equal(entry_meta_parse(good, strlen(good), ENTRY_F_REQUIRED, &mi, &line, why, sizeof(why)),
	                 ENTRY_PARSE_MISSING);
}

static void
test_bad_input(void **state)
{
	struct entry_meta mi;
	int line;
	char why[200];
	const struct {
		const char *text;
		enum entry_parse want;
		const char *why;
	} bad[] = {
		{"key = " KEY_A "\ncompression = zstd\narchive_bytes = 42\n", ENTRY_PARSE_MISSING, "lacks"},
		{"key = " KEY_A "\ncompression = lz4\n", ENTRY_PARSE_SYNTAX, "bad compression \"lz4\""},
		{"archive_bytes = -1\n", ENTRY_PARSE_SYNTAX, "bad archive_bytes"},
		/* 0 would leave the restore's expansion unbounded (the cap is pgdata_bytes + a margin). */
		{"pgdata_bytes = 0\n", ENTRY_PARSE_SYNTAX, "bad pgdata_bytes"},
		{"archive_sha256 = XYZ\n", ENTRY_PARSE_SYNTAX, "bad archive_sha256"},
		{"key = " KEY_A "\nkey = " KEY_A "\n", ENTRY_PARSE_SYNTAX, "duplicate key"},
		{"[section]\nkey = " KEY_A "\n", ENTRY_PARSE_SYNTAX, "unexpected section [section]"},
		{"layer = data\n", ENTRY_PARSE_SYNTAX, "bad layer"},
		{"pg_version = 1 6\n", ENTRY_PARSE_SYNTAX, "bad pg_version"},
		{"build_seconds = nan\n", ENTRY_PARSE_SYNTAX, "bad build_seconds"},
		{"full_build_seconds = -1\n", ENTRY_PARSE_SYNTAX, "bad full_build_seconds"},
		{"built_from = ../x\n", ENTRY_PARSE_SYNTAX, "bad built_from"},
		{"created = 99999999999999999999\n", ENTRY_PARSE_SYNTAX, "bad created"},
		{"manifest = %00\n", ENTRY_PARSE_SYNTAX, "bad manifest line"},
		{"manifest = a\\b\n", ENTRY_PARSE_SYNTAX, "bad manifest line"},
		{"\x89PNG\r\n\x1a\n garbage", ENTRY_PARSE_SYNTAX, "syntax error"},
		{"", ENTRY_PARSE_MISSING, "lacks"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum entry_parse r = entry_meta_parse(bad[i].text, strlen(bad[i].text), ENTRY_F_DOWNLOAD, &mi, &line, why,
		                                      sizeof(why));
		if (r != bad[i].want || !strstr(why, bad[i].why))
			fail_msg("input %zu: got %d \"%s\"", i, (int)r, why);
		assert_null(mi.manifest);
	}
	/* A NUL inside is binary, not a shorter meta. */
	char nul[] = "key = " KEY_A "\0junk";
	assert_int_equal(entry_meta_parse(nul, sizeof(nul) - 1, ENTRY_F_KEY, &mi, &line, why, sizeof(why)),
	                 ENTRY_PARSE_BINARY);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_valid),     cmocka_unit_test(test_enum_names),
		cmocka_unit_test(test_layout_names),  cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_download_fields), cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
