/*
 * Unit tests for lazylib: neither libpq nor libcurl is mapped before a
 * function of theirs is called (the test binary is linked as pgstash is);
 * a call then loads the real library and forwards to it, every type of
 * curl_easy_setopt's argument and curl_easy_getinfo's pointer included;
 * and a library that cannot be loaded is one logged error, after which
 * every function answers as for an unusable handle.
 *
 * The tests run in the order listed: the first looks at the process before
 * anything was loaded, and the missing-library case runs in a child forked
 * before the parent loads anything.
 */
#include "unit.h"

#include "lazylib.h"
#include "lazylib_int.h"
#include "log.h"

#include <curl/curl.h>
#include <libpq-fe.h>

/* Whether a file whose name contains `name` is mapped into this process. */
static bool
mapped(const char *name)
{
	char *maps = read_file("/proc/self/maps", NULL);
	assert_non_null(maps);
	bool found = strstr(maps, name) != NULL;
	free(maps);
	return found;
}

static void
test_nothing_loaded_before_the_first_call(void **state)
{
	(void)state;
	assert_false(mapped("libpq.so"));
	assert_false(mapped("libcurl.so"));
	assert_false(lazylib_pq_loaded());
	assert_false(lazylib_curl_loaded());
}

/* In a child: both sonames point nowhere, then every kind of call. */
static void
test_a_library_that_cannot_be_loaded(void **state)
{
	(void)state;
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		lazylib_pq.soname = "libpq-not-here.so.5";
		lazylib_curl.soname = "libcurl-not-here.so.4";
		struct unit_capture c;
		unit_stderr_begin(&c);
		const char *keys[] = {"host", NULL}, *vals[] = {"/nonexistent", NULL};
		int bad = 0;
		bad |= (PQpingParams(keys, vals, 0) != PQPING_NO_ATTEMPT) << 0;
		PGconn *conn = PQconnectdbParams(keys, vals, 0);
		bad |= (conn != NULL) << 1;
		bad |= (PQstatus(conn) != CONNECTION_BAD) << 2;
		bad |= (strstr(PQerrorMessage(conn), "could not be loaded") == NULL) << 3;
		bad |= (PQresultStatus(PQexec(conn, "SELECT 1")) != PGRES_FATAL_ERROR) << 4;
		PQfinish(conn);
		PQclear(NULL);
		bad |= (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_FAILED_INIT) << 5;
		bad |= (curl_easy_init() != NULL) << 6;
		bad |= (curl_multi_init() != NULL) << 7;
		bad |= (curl_url() != NULL) << 8;
		bad |= (curl_easy_setopt(NULL, CURLOPT_URL, "http://x/") != CURLE_FAILED_INIT) << 9;
		bad |= (strstr(curl_easy_strerror(CURLE_OK), "could not be loaded") == NULL) << 10;
		curl_slist_free_all(NULL);
		bad |= (lazylib_pq_loaded() || lazylib_curl_loaded()) << 11;
		char *err = unit_stderr_end(&c);
		/* One error a library, naming it and what it is for. */
		bad |= (strstr(err, "could not load libpq, for the temporary server") == NULL) << 12;
		bad |= (strstr(err, "libpq-not-here.so.5") == NULL) << 13;
		bad |= (strstr(err, "could not load libcurl, for the S3 cache") == NULL) << 14;
		const char *second = strstr(err, "could not load libpq");
		bad |= (second && strstr(second + 1, "could not load libpq") != NULL) << 15;
		if (bad)
			fprintf(stderr, "failed checks: %#x; stderr was:\n%s", bad, err);
		free(err);
		_exit(bad ? 1 : 0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_libpq_forwarded(void **state)
{
	(void)state;
	/* A socket directory with no server: libpq itself answers "no response" (the missing answer is "no attempt"). */
	const char *keys[] = {"host", "port", "connect_timeout", NULL};
	const char *vals[] = {"/nonexistent-pgstash-dir", "5", "1", NULL};
	assert_int_equal(PQpingParams(keys, vals, 0), PQPING_NO_RESPONSE);
	assert_true(lazylib_pq_loaded());
	assert_true(mapped("libpq.so"));
	PGconn *conn = PQconnectdbParams(keys, vals, 0);
	assert_non_null(conn);
	assert_int_equal(PQstatus(conn), CONNECTION_BAD);
	unit_expect_contains(PQerrorMessage(conn), "/nonexistent-pgstash-dir");
	PQfinish(conn);
}

static size_t
discard(char *ptr, size_t size, size_t n, void *arg)
{
	(void)ptr;
	(void)arg;
	return size * n;
}

static void
test_libcurl_forwarded(void **state)
{
	(void)state;
	assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
	assert_true(lazylib_curl_loaded());
	assert_true(mapped("libcurl.so"));
	char *esc = curl_easy_escape(NULL, "a b/c", 0);
	assert_string_equal(esc, "a%20b%2Fc");
	curl_free(esc);

	CURL *h = curl_easy_init();
	assert_non_null(h);
	/* One option of each argument type: long, object pointer, function pointer, curl_off_t, blob-range pointer. */
	assert_int_equal(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1500L), CURLE_OK);
	assert_int_equal(curl_easy_setopt(h, CURLOPT_URL, "http://127.0.0.1:1/x"), CURLE_OK);
	assert_int_equal(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard), CURLE_OK);
	assert_int_equal(curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)1 << 40), CURLE_OK);
	struct curl_blob blob = {.data = (void *)"x", .len = 1, .flags = CURL_BLOB_COPY};
	CURLcode r = curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &blob);
	assert_true(r == CURLE_OK || r == CURLE_NOT_BUILT_IN || r == CURLE_UNKNOWN_OPTION);
	/* A pointer goes in through setopt and comes back through getinfo: both variadic forwards keep it. */
	int marker;
	assert_int_equal(curl_easy_setopt(h, CURLOPT_PRIVATE, &marker), CURLE_OK);
	void *back = NULL;
	assert_int_equal(curl_easy_getinfo(h, CURLINFO_PRIVATE, &back), CURLE_OK);
	assert_ptr_equal(back, &marker);
	/* A long the transfer set: nothing listens on port 1. */
	assert_int_not_equal(curl_easy_perform(h), CURLE_OK);
	long code = -1;
	assert_int_equal(curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code), CURLE_OK);
	assert_int_equal(code, 0);
	unit_expect_contains(curl_easy_strerror(CURLE_COULDNT_CONNECT), "connect");
	curl_easy_cleanup(h);

	CURLU *u = curl_url();
	assert_non_null(u);
	assert_int_equal(curl_url_set(u, CURLUPART_URL, "https://example.test:9000", 0), CURLUE_OK);
	char *port = NULL;
	assert_int_equal(curl_url_get(u, CURLUPART_PORT, &port, 0), CURLUE_OK);
	assert_string_equal(port, "9000");
	curl_free(port);
	curl_url_cleanup(u);
	curl_global_cleanup();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nothing_loaded_before_the_first_call),
		cmocka_unit_test(test_a_library_that_cannot_be_loaded),
		cmocka_unit_test(test_libpq_forwarded),
		cmocka_unit_test(test_libcurl_forwarded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
