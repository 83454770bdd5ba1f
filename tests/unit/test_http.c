/*
 * Unit tests for http: the one curl multi loop finishes a transfer, stops
 * early when asked, gives up at its deadline on a server that never answers,
 * and leaves at once when a terminating signal arrives.
 */
#include "unit.h"

#include "http.h"
#include "log.h"
#include "sig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

static size_t
sink(char *ptr, size_t size, size_t n, void *userdata)
{
	struct strbuf *sb = userdata;
	sb_appendn(sb, ptr, size * n);
	return size * n;
}

static CURL *
easy_for(const char *url, struct strbuf *sb)
{
	CURL *e = curl_easy_init();
	assert_non_null(e);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, sb);
	return e;
}

/* A TCP listener that accepts into its backlog and never answers; returns its URL. */
static char *
silent_server(int *fd_out)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 4), 0);
	socklen_t len = sizeof(a);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*fd_out = fd;
	return xasprintf("http://127.0.0.1:%d/", ntohs(a.sin_port));
}

static void
test_finishes(void **state)
{
	char *dir = unit_tmpdir();
	unit_write(dir, "f", "hello");
	char *url = xasprintf("file://%s/f", dir);
	struct strbuf sb = {0};
	CURLM *multi = curl_multi_init();
	struct http_xfer x;
	http_xfer_attach(&x, easy_for(url, &sb));
	assert_int_equal(curl_multi_add_handle(multi, x.easy), CURLM_OK);
	char err[256];
	assert_int_equal(http_drive(multi, &x, NULL, log_now() + 10, true, err, sizeof(err)), HTTP_FINISHED);
	assert_true(x.done);
	assert_int_equal(x.result, CURLE_OK);
	assert_string_equal(sb_str(&sb), "hello");
	curl_multi_remove_handle(multi, x.easy);
	curl_easy_cleanup(x.easy);

	/* A missing file: finished, with curl's error. */
	free(url);
	url = xasprintf("file://%s/missing", dir);
	http_xfer_attach(&x, easy_for(url, &sb));
	curl_multi_add_handle(multi, x.easy);
	assert_int_equal(http_drive(multi, &x, NULL, 0, false, err, sizeof(err)), HTTP_FINISHED);
	assert_int_not_equal(x.result, CURLE_OK);
	curl_multi_remove_handle(multi, x.easy);
	curl_easy_cleanup(x.easy);
	curl_multi_cleanup(multi);
	sb_free(&sb);
	free(url);
	rm_rf(dir);
	free(dir);
}

static void
test_deadline_and_stop(void **state)
{
	int lfd;
	char *url = silent_server(&lfd);
	struct strbuf sb = {0};
	CURLM *multi = curl_multi_init();
	struct http_xfer x;
	http_xfer_attach(&x, easy_for(url, &sb));
	curl_multi_add_handle(multi, x.easy);
	char err[256];
	double t0 = log_now();
	assert_int_equal(http_drive(multi, &x, NULL, t0 + 0.3, true, err, sizeof(err)), HTTP_TIMEOUT);
	double took = log_now() - t0;
	assert_true(took >= 0.3 && took < 2.0);
	assert_false(x.done);

	bool stop = true;
	assert_int_equal(http_drive(multi, &x, &stop, 0, true, err, sizeof(err)), HTTP_FINISHED);
	assert_false(x.done);
	curl_multi_remove_handle(multi, x.easy);
	curl_easy_cleanup(x.easy);
	curl_multi_cleanup(multi);
	close(lfd);
	sb_free(&sb);
	free(url);
}

static void
test_signal(void **state)
{
	assert_int_equal(sig_init(), 0);
	int lfd;
	char *url = silent_server(&lfd);
	struct strbuf sb = {0};
	CURLM *multi = curl_multi_init();
	struct http_xfer x;
	http_xfer_attach(&x, easy_for(url, &sb));
	curl_multi_add_handle(multi, x.easy);
	char err[256];
	kill(getpid(), SIGTERM);
	double t0 = log_now();
	assert_int_equal(http_drive(multi, &x, NULL, t0 + 20, true, err, sizeof(err)), HTTP_SIGNAL);
	assert_true(log_now() - t0 < 2.0);
	assert_int_equal(sig_received, SIGTERM);
	curl_multi_remove_handle(multi, x.easy);
	curl_easy_cleanup(x.easy);
	curl_multi_cleanup(multi);
	close(lfd);
	sb_free(&sb);
	free(url);
}

int
main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_finishes),
		cmocka_unit_test(test_deadline_and_stop),
		cmocka_unit_test(test_signal),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
