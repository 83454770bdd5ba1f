/*
 * Unit tests for log: the "pgstash: level: message" line on stderr and never
 * on stdout, level filtering, truncation of very long messages, log_bytes,
 * log_now, and log_fatal's exit code (in a forked child).
 */
#include "unit.h"

#include "log.h"

#include <limits.h>
#include <sys/wait.h>

/* Redirects fds 1 and 2 to two temp files; the pair of unit_stderr_begin/end for both streams. */
struct both {
	int saved_out, saved_err;
	char out_path[64], err_path[64];
};

static void
both_begin(struct both *b)
{
	fflush(stdout);
	fflush(stderr);
	snprintf(b->out_path, sizeof(b->out_path), "/tmp/pgstash-unit-out-XXXXXX");
	snprintf(b->err_path, sizeof(b->err_path), "/tmp/pgstash-unit-err-XXXXXX");
	int o = mkstemp(b->out_path);
	int e = mkstemp(b->err_path);
	if (o < 0 || e < 0)
		abort();
	b->saved_out = dup(1);
	b->saved_err = dup(2);
	dup2(o, 1);
	dup2(e, 2);
	close(o);
	close(e);
}

static void
both_end(struct both *b, char **out, char **err)
{
	fflush(stdout);
	fflush(stderr);
	dup2(b->saved_out, 1);
	dup2(b->saved_err, 2);
	close(b->saved_out);
	close(b->saved_err);
	*out = read_file(b->out_path, NULL);
	*err = read_file(b->err_path, NULL);
	unlink(b->out_path);
	unlink(b->err_path);
	if (!*out || !*err)
		abort();
}

static int
reset_level(void **state)
{
	(void)state;
	log_min_level = LOG_INFO;
	return 0;
}

static void
test_default_level(void **state)
{
	(void)state;
	/* Runs first: nothing has set the level yet. */
	assert_int_equal(log_min_level, LOG_INFO);
}

static void
test_format(void **state)
{
	(void)state;
	log_min_level = LOG_DEBUG;
	struct both b;
	char *out, *err;
	both_begin(&b);
	log_error("could not open file \"%s\": %s", "/x", "No such file or directory");
	log_warning("w %d", 1);
	log_info("i %s", "two");
	log_debug("d%c", '3');
	log_info("%s", "100% literal");
	both_end(&b, &out, &err);
	assert_string_equal(out, "");
	assert_string_equal(err, "pgstash: error: could not open file \"/x\": No such file or directory\n"
	                         "pgstash: warning: w 1\n"
	                         "pgstash: info: i two\n"
	                         "pgstash: debug: d3\n"
	                         "pgstash: info: 100% literal\n");
	free(out);
	free(err);
}

static void
test_filtering(void **state)
{
	(void)state;
	struct {
		enum log_level min;
		const char *want;
	} cases[] = {
		{LOG_DEBUG, "pgstash: error: e\npgstash: warning: w\npgstash: info: i\npgstash: debug: d\n"},
		{LOG_INFO, "pgstash: error: e\npgstash: warning: w\npgstash: info: i\n"},
		{LOG_WARNING, "pgstash: error: e\npgstash: warning: w\n"},
		{LOG_ERROR, "pgstash: error: e\n"},
		{LOG_ERROR + 1, ""}, /* what the tests use to silence everything */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		log_min_level = cases[i].min;
		struct both b;
		char *out, *err;
		both_begin(&b);
		log_error("e");
		log_warning("w");
		log_info("i");
		log_debug("d");
		both_end(&b, &out, &err);
		assert_string_equal(out, "");
		if (strcmp(err, cases[i].want) != 0)
			fail_msg("level %d: got [%s], want [%s]", (int)cases[i].min, err, cases[i].want);
		free(out);
		free(err);
	}
	/* The default: info and above. */
	log_min_level = LOG_INFO;
}

/* log_at: the level chosen at run time, filtered as the fixed ones. */
static void
test_at(void **state)
{
	(void)state;
	log_min_level = LOG_INFO;
	struct both b;
	char *out, *err;
	both_begin(&b);
	log_at(LOG_WARNING, "w %d", 1);
	log_at(LOG_DEBUG, "dropped");
	log_at(LOG_ERROR, "e");
	both_end(&b, &out, &err);
	assert_string_equal(out, "");
	assert_string_equal(err, "pgstash: warning: w 1\npgstash: error: e\n");
	free(out);
	free(err);
}

static void
test_truncation(void **state)
{
	(void)state;
	size_t n = 10000;
	char *big = xmalloc(n + 1);
	memset(big, 'a', n);
	big[n] = '\0';
	big[n - 1] = 'Z'; /* the end must be cut off */
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	log_error("%s", big);
	log_info("after");
	char *err = unit_stderr_end(&cap);
	const char *prefix = "pgstash: error: ";
	assert_memory_equal(err, prefix, strlen(prefix));
	char *nl = strchr(err, '\n');
	assert_non_null(nl);
	size_t first = (size_t)(nl - err) + 1;
	/* One whole line, bounded (the logger builds it in a 4 KiB buffer), ending in a newline. */
	assert_true(first > 1000);
	assert_true(first <= 4096);
	for (size_t i = strlen(prefix); i < first - 1; i++)
		if (err[i] != 'a')
			fail_msg("byte %zu of the truncated line is 0x%02x", i, (unsigned char)err[i]);
	assert_null(memchr(err, 'Z', strlen(err)));
	assert_null(memchr(err, '\0', first));
	/* The next message still comes out whole, on its own line. */
	assert_string_equal(nl + 1, "pgstash: info: after\n");
	free(err);

	/* Exactly at the buffer's edge: no byte lost, newline kept. */
	for (size_t len = 4070; len < 4100; len++) {
		big[len] = '\0';
		unit_stderr_begin(&cap);
		log_error("%s", big);
		err = unit_stderr_end(&cap);
		size_t got = strlen(err);
		assert_true(got <= 4096);
		assert_int_equal(err[got - 1], '\n');
		assert_ptr_equal(strchr(err, '\n'), err + got - 1);
		size_t want = strlen(prefix) + len + 1;
		if (want <= 4095)
			assert_int_equal(got, want);
		free(err);
		big[len] = 'a';
	}
	free(big);
}

static void
test_stdout_flushed_first(void **state)
{
	(void)state;
	/* Program output buffered on stdout comes out before a log line when both share a file. */
	fflush(stdout);
	fflush(stderr);
	char path[] = "/tmp/pgstash-unit-mix-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	int so = dup(1), se = dup(2);
	dup2(fd, 1);
	dup2(fd, 2);
	close(fd);
	fputs("output-first ", stdout);
	log_error("then the log");
	fflush(stdout);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	char *text = read_file(path, NULL);
	unlink(path);
	assert_non_null(text);
	assert_string_equal(text, "output-first pgstash: error: then the log\n");
	free(text);
}

static void
test_bytes(void **state)
{
	(void)state;
	struct {
		unsigned long long v;
		const char *want;
	} cases[] = {
		{0, "0 B"},
		{1, "1 B"},
		{999, "999 B"},
		{1000, "1.0 kB"},
		{1536, "1.5 kB"},
		{123456, "123.5 kB"},
		{1000000, "1.0 MB"},
		{52428800, "52.4 MB"},
		{1000000000, "1.00 GB"},
		{2500000000ULL, "2.50 GB"},
		{1099511627776ULL, "1099.51 GB"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[32];
		memset(buf, '?', sizeof(buf));
		const char *got = log_bytes(buf, cases[i].v);
		assert_ptr_equal(got, buf);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("log_bytes(%llu) = \"%s\", want \"%s\"", cases[i].v, got, cases[i].want);
	}
	/* The largest value fits the documented 32 bytes. */
	char buf[32];
	log_bytes(buf, ULLONG_MAX);
	assert_true(strlen(buf) < sizeof(buf));
	assert_string_equal(buf + strlen(buf) - 3, " GB");
}

static void
test_now(void **state)
{
	(void)state;
	double a = log_now();
	assert_true(a > 0);
	double prev = a;
	for (int i = 0; i < 1000; i++) {
		double t = log_now();
		if (t < prev)
			fail_msg("log_now went back: %f after %f", t, prev);
		prev = t;
	}
	usleep(50 * 1000);
	double b = log_now();
	assert_true(b - a >= 0.045);
	assert_true(b - a < 10.0);
}

/* Runs log_fatal(code, ...) in a child at `level`; returns its wait status, *err its stderr. */
static int
fatal_child(int code, enum log_level level, char **err)
{
	char path[] = "/tmp/pgstash-unit-fatal-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fd, 2);
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0)
			dup2(devnull, 1);
		log_min_level = level;
		log_fatal(code, "cannot go on: %s (%d)", "reason", code);
	}
	close(fd);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	*err = read_file(path, NULL);
	unlink(path);
	assert_non_null(*err);
	return status;
}

static void
test_fatal(void **state)
{
	(void)state;
	const int codes[] = {1, 2, 3, 42, 126, 127, 143};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		char *err;
		int st = fatal_child(codes[i], LOG_INFO, &err);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), codes[i]);
		char *want = xasprintf("pgstash: error: cannot go on: reason (%d)\n", codes[i]);
		assert_string_equal(err, want);
		free(want);
		free(err);
	}
	/* Silenced (-q beyond error): still exits with the code, says nothing. */
	char *err;
	int st = fatal_child(5, LOG_ERROR + 1, &err);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 5);
	assert_string_equal(err, "");
	free(err);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_level),
		cmocka_unit_test_teardown(test_at, reset_level),
		cmocka_unit_test_teardown(test_format, reset_level),
		cmocka_unit_test_teardown(test_filtering, reset_level),
		cmocka_unit_test_teardown(test_truncation, reset_level),
		cmocka_unit_test_teardown(test_stdout_flushed_first, reset_level),
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_now),
		cmocka_unit_test_teardown(test_fatal, reset_level),
	};
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
