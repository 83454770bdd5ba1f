/*
 * Unit tests for util: the growable string and string list, the strict number
 * parsers at their edges, hex, and the file-system chores (mkdir -p, rm -rf
 * that never follows a symlink out of the tree, atomic writes, du).
 */
#include "unit.h"
#include <time.h>

#include "log.h"

#include <dirent.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <limits.h>

static bool
exists(const char *dir, const char *rel)
{
	char *p = path_join(dir, rel);
	struct stat st;
	bool ok = lstat(p, &st) == 0;
	free(p);
	return ok;
}

/* Number of entries in dir besides . and .. */
static int
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* ---- strings ---- */

static void
test_strbuf(void **state)
{
	(void)state;
	struct strbuf sb = {0};
	assert_string_equal(sb_str(&sb), "");
	assert_int_equal(sb.len, 0);

	sb_append(&sb, "abc");
	sb_appendc(&sb, '-');
	sb_appendn(&sb, "xyz123", 3);
	sb_appendf(&sb, "[%d:%s]", 42, "q");
	assert_string_equal(sb_str(&sb), "abc-xyz[42:q]");
	assert_int_equal(sb.len, strlen("abc-xyz[42:q]"));
	assert_true(sb.cap > sb.len);

	/* An embedded NUL is kept and counted. */
	sb_appendn(&sb, "a\0b", 3);
	assert_int_equal(sb.len, 16);
	assert_memory_equal(sb.buf + 13, "a\0b", 4);

	char *s = sb_take(&sb);
	assert_null(sb.buf);
	assert_int_equal(sb.len, 0);
	assert_int_equal(sb.cap, 0);
	assert_memory_equal(s, "abc-xyz[42:q]a\0b", 17);
	free(s);

	/* Take of an empty buffer still hands out an owned "". */
	s = sb_take(&sb);
	assert_non_null(s);
	assert_string_equal(s, "");
	free(s);

	/* Growth across many small appends keeps every byte. */
	for (int i = 0; i < 10000; i++)
		sb_appendc(&sb, (char)('a' + i % 26));
	assert_int_equal(sb.len, 10000);
	assert_int_equal(strlen(sb_str(&sb)), 10000);
	for (int i = 0; i < 10000; i++)
		if (sb.buf[i] != (char)('a' + i % 26))
			fail_msg("byte %d is %c", i, sb.buf[i]);
	sb_free(&sb);
	assert_null(sb.buf);
	sb_free(&sb); /* twice is harmless */
	assert_string_equal(sb_str(&sb), "");
}

static void
test_strbuf_appendf_long(void **state)
{
	(void)state;
	char big[3000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';

	struct strbuf sb = {0};
	sb_append(&sb, "head:");
	/* Exactly at the 512-byte stack buffer's edge, then well beyond it. */
	sb_appendf(&sb, "%.511s", big);
	assert_int_equal(sb.len, 5 + 511);
	sb_appendf(&sb, "%.512s", big);
	assert_int_equal(sb.len, 5 + 511 + 512);
	sb_appendf(&sb, "<%s|%d>", big, 7);
	size_t want = 5 + 511 + 512 + 1 + 2999 + 3;
	assert_int_equal(sb.len, want);
	assert_int_equal(strlen(sb_str(&sb)), want);
	assert_memory_equal(sb.buf, "head:", 5);
	assert_string_equal(sb.buf + want - 3, "|7>");
	assert_int_equal(sb.buf[5 + 511 + 512], '<');
	for (size_t i = 5; i < want - 3; i++)
		if (i != 5 + 511 + 512 && sb.buf[i] != 'x')
			fail_msg("byte %zu is %c", i, sb.buf[i]);
	/* Appending after a long appendf continues at the right place. */
	sb_append(&sb, "tail");
	assert_string_equal(sb.buf + want, "tail");
	char *s = sb_take(&sb);
	assert_int_equal(strlen(s), want + 4);
	free(s);

	/* xasprintf's own 256-byte fast path, and beyond. */
	char *a = xasprintf("%s%s", big, "!");
	assert_int_equal(strlen(a), 3000);
	assert_int_equal(a[2999], '!');
	free(a);
	a = xasprintf("%d-%s", -5, "ok");
	assert_string_equal(a, "-5-ok");
	free(a);
}

static void
test_sl_split_lines(void **state)
{
	struct strlist l = {0};
	sl_split_lines("a\n\nbc\nlast", &l);
	assert_int_equal(l.n, 4);
	assert_string_equal(l.v[0], "a");
	assert_string_equal(l.v[1], "");
	assert_string_equal(l.v[2], "bc");
	assert_string_equal(l.v[3], "last");
	sl_free(&l);
	sl_split_lines("one\n", &l);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.v[0], "one");
	sl_free(&l);
	sl_split_lines("", &l);
	assert_int_equal(l.n, 0);
	sl_free(&l);
}

static void
test_read_small_file(void **state)
{
	char *ok = path_join(unit_tmp, "ok"), *fifo = path_join(unit_tmp, "fifo"), *link = path_join(unit_tmp, "link");
	char *big = path_join(unit_tmp, "big");
	unit_write(unit_tmp, "ok", "hello\n");
	size_t len = 0;
	char *text = read_small_file(ok, 6, &len);
	assert_non_null(text);
	assert_int_equal(len, 6);
	assert_string_equal(text, "hello\n");
	free(text);
	/* One byte over the cap. */
	assert_null(read_small_file(ok, 5, NULL));
	assert_int_equal(errno, EFBIG);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_null(read_small_file(fifo, SMALL_FILE_MAX, NULL));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(symlink("/dev/zero", link), 0);
	assert_null(read_small_file(link, SMALL_FILE_MAX, NULL));
	assert_int_equal(errno, ELOOP);
	assert_string_equal(read_small_file_error(ELOOP), "it is a symbolic link");
	int fd = open(big, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 2 * SMALL_FILE_MAX), 0);
	close(fd);
	assert_null(read_small_file(big, SMALL_FILE_MAX, NULL));
	assert_int_equal(errno, EFBIG);
	free(ok);
	free(fifo);
	free(link);
	free(big);
}

/* Secrets: links followed (Docker and Kubernetes secrets are links), the rest as read_small_file. */
static void
test_read_secret_file(void **state)
{
	(void)state;
	char *ok = path_join(unit_tmp, "ok"), *fifo = path_join(unit_tmp, "fifo"), *link = path_join(unit_tmp, "link");
	char *zero = path_join(unit_tmp, "zero"), *big = path_join(unit_tmp, "big");
	unit_write(unit_tmp, "ok", "s3cret\n");
	assert_int_equal(symlink(ok, link), 0);
	size_t len = 0;
	char *text = read_secret_file(link, SECRET_FILE_MAX, &len);
	assert_non_null(text);
	assert_int_equal(len, 7);
	assert_string_equal(text, "s3cret\n");
	free(text);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_null(read_secret_file(fifo, SECRET_FILE_MAX, NULL)); /* does not hang */
	assert_int_equal(errno, EINVAL);
	assert_int_equal(symlink("/dev/zero", zero), 0);
	assert_null(read_secret_file(zero, SECRET_FILE_MAX, NULL)); /* never read to the end of memory */
	assert_int_equal(errno, EINVAL);
	int fd = open(big, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SECRET_FILE_MAX + 1), 0);
	close(fd);
	assert_null(read_secret_file(big, SECRET_FILE_MAX, NULL));
	assert_int_equal(errno, EFBIG);
	free(ok);
	free(fifo);
	free(link);
	free(zero);
	free(big);
}

static void
test_strlist(void **state)
{
	(void)state;
	struct strlist sl = {0};
	assert_false(sl_contains(&sl, "a"));
	char word[16];
	for (int i = 0; i < 100; i++) {
		snprintf(word, sizeof(word), "w%d", i);
		sl_add(&sl, word);
		assert_null(sl.v[sl.n]);
	}
	/* The list copied: changing our buffer changes nothing. */
	strcpy(word, "changed");
	assert_int_equal(sl.n, 100);
	assert_string_equal(sl.v[0], "w0");
	assert_string_equal(sl.v[99], "w99");
	assert_true(sl_contains(&sl, "w57"));
	assert_false(sl_contains(&sl, "w100"));
	assert_false(sl_contains(&sl, "changed"));
	sl_add_owned(&sl, xstrdup("owned"));
	assert_int_equal(sl.n, 101);
	assert_true(sl_contains(&sl, "owned"));
	assert_null(sl.v[101]);
	sl_free(&sl);
	assert_null(sl.v);
	assert_int_equal(sl.n, 0);
	sl_free(&sl);
	sl_add(&sl, "again");
	assert_string_equal(sl.v[0], "again");
	sl_free(&sl);
}

static void
test_hex(void **state)
{
	(void)state;
	const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
	char out[2 * sizeof(in) + 1];
	memset(out, '?', sizeof(out));
	hex_encode(in, sizeof(in), out);
	assert_string_equal(out, "00017f80abff");
	char empty[1] = {'?'};
	hex_encode(in, 0, empty);
	assert_string_equal(empty, "");
}

/* ---- parsers ---- */

static void
expect_long(const char *s, long min, long max, int rc, long want)
{
	long v = -12345;
	const char *why = NULL;
	int got = parse_long(s, min, max, &v, &why);
	if (got != rc)
		fail_msg("parse_long(\"%s\", %ld, %ld) = %d, want %d", s, min, max, got, rc);
	if (rc == 0 && v != want)
		fail_msg("parse_long(\"%s\") gave %ld, want %ld", s, v, want);
	if (rc != 0 && (!why || !*why))
		fail_msg("parse_long(\"%s\") failed without a reason", s);
	if (rc != 0 && v != -12345)
		fail_msg("parse_long(\"%s\") wrote its output on failure", s);
}

static void
test_parse_long(void **state)
{
	(void)state;
	expect_long("0", 0, 10, 0, 0);
	expect_long("10", 0, 10, 0, 10);
	expect_long("-3", -5, 5, 0, -3);
	expect_long("+7", 0, 10, 0, 7);
	expect_long("007", 0, 10, 0, 7);
	expect_long("9223372036854775807", LONG_MIN, LONG_MAX, 0, LONG_MAX);
	expect_long("-9223372036854775808", LONG_MIN, LONG_MAX, 0, LONG_MIN);
	/* strtol clamps overflow to LONG_MAX: it must not pass as LONG_MAX. */
	expect_long("9223372036854775808", LONG_MIN, LONG_MAX, -1, 0);
	expect_long("-9223372036854775809", LONG_MIN, LONG_MAX, -1, 0);
	expect_long("99999999999999999999999", 0, LONG_MAX, -1, 0);
	expect_long("11", 0, 10, -1, 0);
	expect_long("-1", 0, 10, -1, 0);
	expect_long("", 0, 10, -1, 0);
	expect_long(NULL, 0, 10, -1, 0);
	expect_long(" 5", 0, 10, -1, 0);
	expect_long("\t5", 0, 10, -1, 0);
	expect_long("5 ", 0, 10, -1, 0);
	expect_long("5\n", 0, 10, -1, 0);
	expect_long("5x", 0, 10, -1, 0);
	expect_long("0x10", 0, 100, -1, 0);
	expect_long("1e3", 0, 10000, -1, 0);
	expect_long("-", 0, 10, -1, 0);
	expect_long("abc", 0, 10, -1, 0);

	const char *why = NULL;
	long v;
	assert_int_equal(parse_long("11", 0, 10, &v, &why), -1);
	unit_expect_contains(why, "out of range");
	assert_int_equal(parse_long("1x", 0, 10, &v, &why), -1);
	unit_expect_contains(why, "whole number");
}

static void
expect_size(const char *s, int rc, uint64_t want)
{
	uint64_t v = 12345;
	const char *why = NULL;
	int got = parse_size(s, &v, &why);
	if (got != rc)
		fail_msg("parse_size(\"%s\") = %d, want %d (%s)", s, got, rc, got ? why : "ok");
	if (rc == 0 && v != want)
		fail_msg("parse_size(\"%s\") gave %llu, want %llu", s, (unsigned long long)v, (unsigned long long)want);
	if (rc != 0 && (!why || !*why))
		fail_msg("parse_size(\"%s\") failed without a reason", s);
	if (rc != 0 && v != 12345)
		fail_msg("parse_size(\"%s\") wrote its output on failure", s);
}

static void
test_parse_size(void **state)
{
	(void)state;
	expect_size("0", 0, 0);
	expect_size("1024", 0, 1024);
	expect_size("1K", 0, 1024);
	expect_size("1k", 0, 1024);
	expect_size("512M", 0, 512ULL << 20);
	expect_size("10G", 0, 10ULL << 30);
	expect_size("2T", 0, 2ULL << 40);
	/* The long forms all mean the binary unit. */
	expect_size("3KB", 0, 3ULL << 10);
	expect_size("3KiB", 0, 3ULL << 10);
	expect_size("3MiB", 0, 3ULL << 20);
	expect_size("3mb", 0, 3ULL << 20);
	expect_size("3GiB", 0, 3ULL << 30);
	expect_size("3GB", 0, 3ULL << 30);
	expect_size("3gib", 0, 3ULL << 30);
	expect_size("3TB", 0, 3ULL << 40);
	expect_size("18446744073709551615", 0, UINT64_MAX);
	/* The largest value of each unit that still fits, and one past it. */
	expect_size("16777215T", 0, 16777215ULL << 40);
	expect_size("16777216T", -1, 0);
	expect_size("17179869183G", 0, 17179869183ULL << 30);
	expect_size("17179869184G", -1, 0);
	expect_size("18446744073709551616", -1, 0);
	expect_size("99999999999999999999999K", -1, 0);

	expect_size("", -1, 0);
	expect_size(NULL, -1, 0);
	expect_size("-1", -1, 0);
	expect_size("-1G", -1, 0);
	expect_size("+1", -1, 0);
	expect_size(" 1G", -1, 0);
	expect_size("\t1G", -1, 0);
	expect_size("1G ", -1, 0);
	expect_size("1 G", -1, 0);
	expect_size("1.5G", -1, 0);
	expect_size("1P", -1, 0);
	expect_size("1X", -1, 0);
	expect_size("1GBB", -1, 0);
	expect_size("1GiBs", -1, 0);
	expect_size("1iB", -1, 0);
	expect_size("G", -1, 0);
	expect_size("0x10", -1, 0);

	const char *why = NULL;
	uint64_t v;
	assert_int_equal(parse_size("17179869184G", &v, &why), -1);
	unit_expect_contains(why, "out of range");
	assert_int_equal(parse_size("10X", &v, &why), -1);
	unit_expect_contains(why, "512M");
}

static void
test_parse_bool(void **state)
{
	(void)state;
	const char *yes[] = {"yes", "YES", "Yes", "true", "TRUE", "on", "On", "1"};
	const char *no[] = {"no", "NO", "false", "False", "off", "OFF", "0"};
	const char *bad[] = {"", "y", "n", "maybe", "2", " yes", "yes ", "on\n", "truee", "00"};
	const char *why;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		bool b = false;
		if (parse_bool(yes[i], &b, &why) != 0 || !b)
			fail_msg("\"%s\" is not read as yes", yes[i]);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		bool b = true;
		if (parse_bool(no[i], &b, &why) != 0 || b)
			fail_msg("\"%s\" is not read as no", no[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool b = true;
		why = NULL;
		if (parse_bool(bad[i], &b, &why) != -1 || !b || !why)
			fail_msg("\"%s\" should be rejected without touching the output", bad[i]);
	}
}

/* ---- file system ---- */

static void
test_mkdir_p(void **state)
{
	(void)state;
	mode_t old = umask(022);
	char *deep = path_join(unit_tmp, "a/b/c/d");
	assert_int_equal(mkdir_p(deep, 0700), 0);
	struct stat st;
	assert_int_equal(stat(deep, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	char *mid = path_join(unit_tmp, "a/b");
	assert_int_equal(stat(mid, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);

	/* Existing: success, nothing changes. */
	assert_int_equal(mkdir_p(deep, 0755), 0);
	assert_int_equal(mkdir_p(unit_tmp, 0755), 0);
	assert_int_equal(mkdir_p("/", 0755), 0);
	/* A trailing slash is the same directory. */
	char *slash = xasprintf("%s/e/f/", unit_tmp);
	assert_int_equal(mkdir_p(slash, 0755), 0);
	assert_true(exists(unit_tmp, "e/f"));

	/* A file in the way, as the last component and in the middle. */
	unit_write(unit_tmp, "plain", "x");
	char *file = path_join(unit_tmp, "plain");
	char *below = path_join(unit_tmp, "plain/sub/dir");
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc1 = mkdir_p(file, 0755);
	int rc2 = mkdir_p(below, 0755);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(rc1, -1);
	assert_int_equal(rc2, -1);
	unit_expect_contains(err, "is not a directory");
	unit_expect_contains(err, "plain/sub\"");
	free(err);
	assert_int_equal(stat(file, &st), 0);
	assert_true(S_ISREG(st.st_mode));

	umask(old);
	free(deep);
	free(mid);
	free(slash);
	free(file);
	free(below);
}

/* unit_tmp/victim holds a nested tree and a symlink to unit_tmp/outside; returns victim. */
static char *
make_tree_with_escape(void)
{
	unit_write(unit_tmp, "outside/keep", "precious");
	unit_write(unit_tmp, "outside/sub/keep2", "precious too");
	unit_write(unit_tmp, "victim/a/b/c/file", "1");
	unit_write(unit_tmp, "victim/a/other", "22");
	unit_write(unit_tmp, "victim/.hidden", "333");
	char *outside = path_join(unit_tmp, "outside");
	char *link = path_join(unit_tmp, "victim/a/b/escape");
	char *flink = path_join(unit_tmp, "victim/filelink");
	char *keep = path_join(unit_tmp, "outside/keep");
	char *dangling = path_join(unit_tmp, "victim/dangling");
	char *empty = path_join(unit_tmp, "victim/empty/deeper");
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(symlink(keep, flink), 0);
	assert_int_equal(symlink("/nonexistent/pgstash", dangling), 0);
	assert_int_equal(mkdir_p(empty, 0755), 0);
	free(outside);
	free(link);
	free(flink);
	free(keep);
	free(dangling);
	free(empty);
	return path_join(unit_tmp, "victim");
}

static void
expect_outside_intact(void)
{
	char *keep = path_join(unit_tmp, "outside/keep");
	char *keep2 = path_join(unit_tmp, "outside/sub/keep2");
	char *a = read_file(keep, NULL);
	char *b = read_file(keep2, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_string_equal(a, "precious");
	assert_string_equal(b, "precious too");
	free(a);
	free(b);
	free(keep);
	free(keep2);
}

static void
test_rm_rf(void **state)
{
	(void)state;
	char *victim = make_tree_with_escape();
	assert_int_equal(rm_rf(victim), 0);
	assert_false(exists(unit_tmp, "victim"));
	expect_outside_intact();

	/* Missing is success; a file and a top-level symlink are removed themselves. */
	assert_int_equal(rm_rf(victim), 0);
	unit_write(unit_tmp, "lone", "x");
	char *lone = path_join(unit_tmp, "lone");
	assert_int_equal(rm_rf(lone), 0);
	assert_false(exists(unit_tmp, "lone"));
	char *outside = path_join(unit_tmp, "outside");
	char *toplink = path_join(unit_tmp, "toplink");
	assert_int_equal(symlink(outside, toplink), 0);
	assert_int_equal(rm_rf(toplink), 0);
	assert_false(exists(unit_tmp, "toplink"));
	expect_outside_intact();
	free(victim);
	free(lone);
	free(outside);
	free(toplink);
}

static void
test_empty_dir(void **state)
{
	(void)state;
	char *victim = make_tree_with_escape();
	assert_false(dir_is_empty(victim));
	assert_int_equal(empty_dir(victim), 0);
	struct stat st;
	assert_int_equal(stat(victim, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(count_entries(victim), 0);
	assert_true(dir_is_empty(victim));
	expect_outside_intact();

	/* A missing directory: nothing to do, and it counts as empty. */
	char *missing = path_join(unit_tmp, "missing");
	assert_int_equal(empty_dir(missing), 0);
	assert_true(dir_is_empty(missing));
	/* A file is not an empty directory. */
	unit_write(unit_tmp, "file", "x");
	char *file = path_join(unit_tmp, "file");
	assert_false(dir_is_empty(file));
	/* Only dot entries: empty; one hidden file: not. */
	unit_write(victim, ".x", "");
	assert_false(dir_is_empty(victim));
	free(victim);
	free(missing);
	free(file);
}

static void
test_fsync(void **state)
{
	(void)state;
	assert_int_equal(fsync_dir(unit_tmp), 0);
	unit_write(unit_tmp, "d/f", "x");
	char *f = path_join(unit_tmp, "d/f");
	assert_int_equal(fsync_parent(f), 0);
	assert_int_equal(fsync_parent("/etc"), 0); /* parent is "/" */
	assert_int_equal(fsync_parent("relative-name"), 0); /* parent is "." */

	char *missing = path_join(unit_tmp, "nope");
	char *missing_child = path_join(unit_tmp, "nope/child");
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc1 = fsync_dir(missing);
	int rc2 = fsync_parent(missing_child);
	int rc3 = fsync_dir(f); /* a file is no directory */
	char *err = unit_stderr_end(&cap);
	assert_int_equal(rc1, -1);
	assert_int_equal(rc2, -1);
	assert_int_equal(rc3, -1);
	unit_expect_contains(err, "pgstash: error: could not open directory \"");
	unit_expect_contains(err, "/nope\": No such file or directory");
	unit_expect_contains(err, "Not a directory");
	free(err);
	free(f);
	free(missing);
	free(missing_child);
}

static void
test_read_file(void **state)
{
	(void)state;
	/* Larger than read_file's 8 KiB chunk, with a NUL inside. */
	size_t n = 20000;
	char *data = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		data[i] = (char)(i % 251);
	char *p = path_join(unit_tmp, "bin");
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
	size_t len = 0;
	char *got = read_file(p, &len);
	assert_non_null(got);
	assert_int_equal(len, n);
	assert_memory_equal(got, data, n);
	assert_int_equal(got[n], '\0');
	free(got);

	unit_write(unit_tmp, "empty", "");
	char *e = path_join(unit_tmp, "empty");
	got = read_file(e, &len);
	assert_non_null(got);
	assert_int_equal(len, 0);
	assert_string_equal(got, "");
	free(got);
	got = read_file(e, NULL);
	assert_non_null(got);
	free(got);

	char *missing = path_join(unit_tmp, "missing");
	errno = 0;
	assert_null(read_file(missing, &len));
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_null(read_file(unit_tmp, &len));
	assert_int_equal(errno, EISDIR);
	free(data);
	free(p);
	free(e);
	free(missing);
}


static void
test_str_in(void **state)
{
	(void)state;
	const char *const v[] = {"global/pg_control", "pg_wal", NULL};
	assert_true(str_in(v, "pg_wal"));
	assert_true(str_in(v, "global/pg_control"));
	assert_false(str_in(v, "pg_wal/000000010000000000000001"));
	assert_false(str_in(v, "pg_"));
	assert_false(str_in(v, ""));
	assert_false(str_in(NULL, "pg_wal"));
}

static void
test_str_ends(void **state)
{
	(void)state;
	assert_true(str_ends_with("init.sql.gz", ".sql.gz"));
	assert_true(str_ends_with("x", "x"));
	assert_true(str_ends_with("x", ""));
	assert_false(str_ends_with("sql", ".sql"));
	assert_false(str_ends_with("a.sqlx", ".sql"));
	const char *const v[] = {"command", "_path", NULL};
	assert_true(str_ends_in(v, "basebackup_to_shell.command"));
	assert_true(str_ends_in(v, "dynamic_library_path"));
	assert_false(str_ends_in(v, "command_tag"));
	assert_false(str_ends_in(v, "path"));
	assert_false(str_ends_in(NULL, "command"));
}

static void
test_path_join(void **state)
{
	(void)state;
	struct {
		const char *a, *b, *want;
	} cases[] = {
		{"a", "b", "a/b"},
		{"a/", "b", "a/b"},
		{"/", "etc", "/etc"},
		{"/x/y", "z/w", "/x/y/z/w"},
		{"/x/y/", "z/", "/x/y/z/"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = path_join(cases[i].a, cases[i].b);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("path_join(\"%s\", \"%s\") = \"%s\", want \"%s\"", cases[i].a, cases[i].b, got,
			         cases[i].want);
		free(got);
	}
	char long_a[600];
	memset(long_a, 'd', sizeof(long_a) - 1);
	long_a[sizeof(long_a) - 1] = '\0';
	char *got = path_join(long_a, "f");
	assert_int_equal(strlen(got), 601);
	assert_string_equal(got + 599, "/f");
	free(got);
}

static struct timespec
ctime_of(const char *path)
{
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_ctim;
}

/*
 * The mark splits changes by ctime: one just before it is older, one just
 * after is not.  The change before is stamped fine-grained where the kernel
 * does that (its ctime was just read): such a stamp can be a tick ahead of
 * CLOCK_REALTIME_COARSE, and a mark taken as the coarse clock's next tick
 * was older than it about once in 300 tries here, once in a CI run.
 */
static void
test_ctime_mark(void **state)
{
	(void)state;
	char *dir = unit_tmpdir();
	char *f = path_join(dir, "f");
	for (int i = 0; i < 300; i++) {
		unit_write(dir, "f", "before");
		ctime_of(f);
		int fd = open(f, O_WRONLY | O_APPEND | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "!", 1), 1);
		assert_int_equal(close(fd), 0);
		struct timespec mark = ctime_mark();
		assert_true(ts_before(ctime_of(f), mark));
		unit_write(dir, "f", "after");
		assert_false(ts_before(ctime_of(f), mark));
	}
	free(f);
	rm_rf(dir);
	free(dir);
}

static void
test_ts_before(void **state)
{
	(void)state;
	struct timespec a = {.tv_sec = 5, .tv_nsec = 999999999}, b = {.tv_sec = 6, .tv_nsec = 0};
	assert_true(ts_before(a, b));
	assert_false(ts_before(b, a));
	assert_false(ts_before(a, a));
	assert_true(ts_before((struct timespec){.tv_sec = 6, .tv_nsec = 1}, (struct timespec){.tv_sec = 6, .tv_nsec = 2}));
}

/* The setting a conf line sets, as the server's lexer reads it (blanks: space, tab, CR). */
static void
test_conf_setting_name(void **state)
{
	(void)state;
	struct {
		const char *line, *name;
	} cases[] = {
	    {"work_mem = '64MB'", "work_mem"}, {"  Shared_Preload_Libraries='a'", "shared_preload_libraries"},
	    {"\rpassword_encryption = md5", "password_encryption"}, {" \r\tinclude 'x'", "include"},
	    {"pg_stat_statements.max 10", "pg_stat_statements.max"}, {"# archive_command = 'x'", ""},
	    {"", ""}, {"\n", ""}, {"= 3", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char name[64];
		size_t n = conf_setting_name(cases[i].line, name, sizeof(name));
		if (strcmp(name, cases[i].name) != 0 || n != strlen(cases[i].name))
			fail_msg("\"%s\" gave \"%s\" (%zu), want \"%s\"", cases[i].line, name, n, cases[i].name);
	}
	char tiny[5];
	assert_int_equal(conf_setting_name("work_mem = 1", tiny, sizeof(tiny)), 4);
	assert_string_equal(tiny, "work");
}

/*
 * conf_next_setting reads whole lines whatever their length: a name the
 * line buffer cuts in two, a name too long for `out`, or a NUL byte make
 * the line's name unknown, and the next line still starts where it does.
 */
static void
test_conf_next_setting(void **state)
{
	(void)state;
	struct strbuf text = {0};
	sb_append(&text, "work_mem = '64MB'\n# a comment\n");
	for (int i = 0; i < 1018; i++) /* the name is cut by the 1 KiB line buffer */
		sb_appendc(&text, ' ');
	sb_append(&text, "shared_preload_libraries = 'x'\n");
	sb_append(&text, "log_line_prefix = '");
	for (int i = 0; i < 3000; i++) /* a long value: the name is known, the line is read to its end */
		sb_appendc(&text, 'v');
	sb_append(&text, "'\n");
	sb_append(&text, "a_setting_name_much_longer_than_the_sixty_four_bytes_a_caller_gives_us_library = 1\n");
	sb_appendn(&text, "x\0y\n", 4); /* a NUL: unknown, and "y" does not start a line */
	sb_append(&text, "archive_command = 'x'"); /* the last line, without a newline */
	FILE *f = fmemopen(text.buf, text.len, "r");
	assert_non_null(f);
	struct {
		const char *name;
		bool known;
	} want[] = {{"work_mem", true}, {"", true},       {NULL, false}, {"log_line_prefix", true},
	            {NULL, false},      {"x", false},     {"archive_command", true}};
	char name[64];
	bool known;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (!conf_next_setting(f, name, sizeof(name), &known, NULL))
			fail_msg("line %zu: end of file too early", i + 1);
		if (known != want[i].known || (want[i].name && strcmp(name, want[i].name) != 0))
			fail_msg("line %zu: \"%s\" known %d, want \"%s\" known %d", i + 1, name, known,
			         want[i].name ? want[i].name : "(any)", want[i].known);
	}
	assert_false(conf_next_setting(f, name, sizeof(name), &known, NULL));
	fclose(f);
	sb_free(&text);
}

/*
 * A read error is not the end of the file: a caller would otherwise take a
 * file it could not read to its end for one without dangerous settings.  A
 * non-blocking pipe whose writer is still open fails with EAGAIN once its
 * bytes are read (a real EIO cannot be made here).
 */
static void
test_conf_next_setting_read_error(void **state)
{
	(void)state;
	for (int cut = 0; cut < 2; cut++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		/* Whole lines, or a line the error cuts. */
		const char *text = cut ? "work_mem = 1\nshared_preload_libr" : "work_mem = 1\n";
		assert_int_equal(write(p[1], text, strlen(text)), (ssize_t)strlen(text));
		assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
		FILE *f = fdopen(p[0], "r");
		assert_non_null(f);
		char name[64];
		bool known;
		assert_true(conf_next_setting(f, name, sizeof(name), &known, NULL));
		assert_true(known);
		assert_string_equal(name, "work_mem");
		assert_true(conf_next_setting(f, name, sizeof(name), &known, NULL));
		assert_false(known);
		assert_false(conf_next_setting(f, name, sizeof(name), &known, NULL));
		fclose(f);
		close(p[1]);
	}
}

static void
test_edit_distance(void **state)
{
	(void)state;
	assert_int_equal(edit_distance("", ""), 0);
	assert_int_equal(edit_distance("config", "config"), 0);
	assert_int_equal(edit_distance("confg", "config"), 1);
	assert_int_equal(edit_distance("config", ""), 6);
	assert_int_equal(edit_distance("kitten", "sitting"), 3);
	assert_int_equal(edit_distance("pgdata", "port"), 4);
	char long_name[70];
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_true(edit_distance(long_name, "a") == SIZE_MAX);
}

int
main(void)
{
	log_min_level = LOG_DEBUG;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strbuf),
		cmocka_unit_test(test_strbuf_appendf_long),
		cmocka_unit_test(test_strlist),
		cmocka_unit_test_setup_teardown(test_read_small_file, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_read_secret_file, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test(test_sl_split_lines),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_parse_long),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_bool),
		cmocka_unit_test_setup_teardown(test_mkdir_p, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_rm_rf, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_empty_dir, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_fsync, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_read_file, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test(test_str_in),
		cmocka_unit_test(test_str_ends),
		cmocka_unit_test(test_ctime_mark),
		cmocka_unit_test(test_ts_before),
		cmocka_unit_test(test_conf_setting_name),
		cmocka_unit_test(test_conf_next_setting),
		cmocka_unit_test(test_conf_next_setting_read_error),
		cmocka_unit_test(test_edit_distance),
		cmocka_unit_test_setup_teardown(test_path_join, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
