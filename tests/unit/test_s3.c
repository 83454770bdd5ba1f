/*
 * Unit tests for s3: the protocol's pure parts (URI encoding, the XML
 * extractor, ListObjectsV2 pages, times) and SigV4 as libcurl computes it for
 * our requests, against the example of AWS's "Signature Calculations for the
 * Authorization Header" (GET Object): the signing this client relies on.
 */
#include "unit.h"

#include "log.h"
#include "s3.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void
test_uri_encode(void **state)
{
	char *s = s3_uri_encode("ci/pgstash-v1/a b+c~d_e.f%", true);
	assert_string_equal(s, "ci/pgstash-v1/a%20b%2Bc~d_e.f%25");
	free(s);
	s = s3_uri_encode("ci/x=y&z", false);
	assert_string_equal(s, "ci%2Fx%3Dy%26z");
	free(s);
	s = s3_uri_encode("\xc3\xa9", false);
	assert_string_equal(s, "%C3%A9");
	free(s);
	s = s3_uri_encode("", true);
	assert_string_equal(s, "");
	free(s);
}

static void
test_xml_text(void **state)
{
	const char *x = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>"
	                "<Message>a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos; &#233;&#x41;</Message>"
	                "<KeyCount>3</KeyCount><Key>k</Key><Empty/><Attr a=\"1\">v</Attr></Error>";
	char *s = s3_xml_text(x, strlen(x), "Code");
	assert_string_equal(s, "NoSuchKey");
	free(s);
	s = s3_xml_text(x, strlen(x), "Message");
	assert_string_equal(s, "a <b> & \"c\" 'd' \xc3\xa9" "A");
	free(s);
	/* <Key> must not be found inside <KeyCount>. */
	s = s3_xml_text(x, strlen(x), "Key");
	assert_string_equal(s, "k");
	free(s);
	s = s3_xml_text(x, strlen(x), "Empty");
	assert_string_equal(s, "");
	free(s);
	s = s3_xml_text(x, strlen(x), "Attr");
	assert_string_equal(s, "v");
	free(s);
	assert_null(s3_xml_text(x, strlen(x), "Missing"));
	/* Malformed: unterminated element, bad entities, a NUL character reference. */
	const char *bad[] = {"<Code>abc", "<Code>a &bogus; b</Code>", "<Code>&#0;</Code>", "<Code>&#xd800;</Code>",
	                     "<Code>&#12345678901;</Code>", "<Code>&", "<Code", NULL};
	for (size_t i = 0; bad[i]; i++)
		assert_null(s3_xml_text(bad[i], strlen(bad[i]), "Code"));
	/* Bounded by len, not by the NUL. */
	assert_null(s3_xml_text(x, 20, "Code"));
	assert_null(s3_xml_text(NULL, 0, "Code"));
}

static void
test_parse_time(void **state)
{
	assert_int_equal(s3_parse_time("1970-01-01T00:00:00Z"), 0);
	assert_int_equal(s3_parse_time("2024-02-29T12:34:56.789Z"), 1709210096);
	assert_int_equal(s3_parse_time("2024-02-29T12:34:56+00:00"), 1709210096);
	assert_int_equal(s3_parse_time("2024-02-29 12:34:56Z"), -1);
	assert_int_equal(s3_parse_time("2024-13-01T00:00:00Z"), -1);
	assert_int_equal(s3_parse_time("2024-02-29T12:34:56"), -1);
	assert_int_equal(s3_parse_time("2024-02-29T12:34:56.Z"), -1);
	assert_int_equal(s3_parse_time(""), -1);
	assert_int_equal(s3_parse_time(NULL), -1);
}

static void
test_parse_list(void **state)
{
	const char *page1 =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
		"<Prefix>ci/pgstash-v1/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>"
		"<NextContinuationToken>tok/+=</NextContinuationToken>"
		"<Contents><Key>ci/pgstash-v1/a&amp;b.meta</Key><LastModified>2024-02-29T12:34:56.000Z</LastModified>"
		"<ETag>&quot;x&quot;</ETag><Size>123</Size><StorageClass>STANDARD</StorageClass></Contents>"
		"<Contents><Key>ci/pgstash-v1/c.tar.zst</Key><LastModified>2024-02-29T12:34:57Z</LastModified>"
		"<Size>18446744073709551615</Size></Contents></ListBucketResult>";
	const char *page2 = "<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>";
	struct s3_object *v = NULL;
	size_t n = 0;
	bool tr;
	char *tok = NULL;

	assert_int_equal(s3_parse_list(page1, strlen(page1), &v, &n, &tr, &tok), 0);
	assert_true(tr);
	assert_string_equal(tok, "tok/+=");
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "ci/pgstash-v1/a&b.meta");
	assert_int_equal(v[0].size, 123);
	assert_int_equal(v[0].mtime, 1709210096);
	assert_true(v[1].size == UINT64_MAX);
	assert_int_equal(s3_parse_list(page2, strlen(page2), &v, &n, &tr, &tok), 0);
	assert_false(tr);
	assert_null(tok);
	assert_int_equal(n, 2);
	s3_objects_free(v, n);

	/* Not a listing; a truncated page without a token; a bad size. */
	const char *bad[] = {
		"<Error><Code>AccessDenied</Code></Error>",
		"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
		"<ListBucketResult><Contents><Key>k</Key><Size>-1</Size>"
		"<LastModified>2024-02-29T12:34:56Z</LastModified></Contents></ListBucketResult>",
		"<ListBucketResult><Contents><Key>k</Key><Size>1</Size></Contents></ListBucketResult>",
		NULL};
	for (size_t i = 0; bad[i]; i++) {
		v = NULL;
		n = 0;
		assert_int_equal(s3_parse_list(bad[i], strlen(bad[i]), &v, &n, &tr, &tok), -1);
		s3_objects_free(v, n);
		free(tok);
		tok = NULL;
	}
}


/* Collects the request headers curl sends. */
static int
on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *userp)
{
	if (type == CURLINFO_HEADER_OUT)
		sb_appendn(userp, data, size);
	return 0;
}

static void
test_sigv4_aws_vector(void **state)
{
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	socklen_t len = sizeof(a);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);

	/* The example's request, sent to a listener that never answers (the headers are what counts). */
	CURL *c = curl_easy_init();
	struct strbuf sent = {0};
	char *connect_to = xasprintf("examplebucket.s3.amazonaws.com:80:127.0.0.1:%d", ntohs(a.sin_port));
	struct curl_slist *to = curl_slist_append(NULL, connect_to);
	struct curl_slist *h = NULL;
	h = curl_slist_append(h, "Range: bytes=0-9");
	h = curl_slist_append(h, "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	h = curl_slist_append(h, "x-amz-date: 20130524T000000Z");
	curl_easy_setopt(c, CURLOPT_URL, "http://examplebucket.s3.amazonaws.com/test.txt");
	curl_easy_setopt(c, CURLOPT_CONNECT_TO, to);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
	curl_easy_setopt(c, CURLOPT_USERNAME, "AKIAIOSFODNN7EXAMPLE");
	curl_easy_setopt(c, CURLOPT_PASSWORD, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
	curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(c, CURLOPT_DEBUGFUNCTION, on_debug);
	curl_easy_setopt(c, CURLOPT_DEBUGDATA, &sent);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 500L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_perform(c);
	assert_non_null(strstr(sb_str(&sent),
	                       "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
	                       "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
	                       "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	curl_slist_free_all(to);
	free(connect_to);
	sb_free(&sent);
	close(lfd);
}

/* A server that declares a large archive and drips it, 20 bytes a second, until the client goes. */
static void
drip_server(int lfd)
{
	int fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		_exit(1);
	char req[4096];
	if (read(fd, req, sizeof(req)) <= 0)
		_exit(1);
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
	if (write(fd, head, strlen(head)) < 0)
		_exit(1);
	char zeros[20] = {0};
	for (int i = 0; i < 120; i++) {
		if (write(fd, zeros, sizeof(zeros)) < 0)
			_exit(0);
		sleep(1);
	}
	_exit(0);
}

/* A streamed download below S3_MIN_RATE ends after about timeout_s, as a timeout that says why. */
static void
test_stream_min_rate(void **state)
{
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	socklen_t len = sizeof(a);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		drip_server(lfd);
	close(lfd);

	char *base = xasprintf("http://127.0.0.1:%d/bucket", ntohs(a.sin_port));
	struct s3_target t = {.label = "s3://bucket", .base = base, .region = "us-east-1", .timeout_s = 2};
	struct s3 s;
	assert_int_equal(s3_open(&s, &t), 0);
	char *out = xasprintf("%s/drip.tar.zst", unit_tmp);
	int fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	struct s3_req rq = {.method = "GET", .object = "x.tar.zst", .out_fd = fd, .out_name = out, .body_fd = -1,
	                    .stream = true, .out_max = 1000000};
	double t0 = log_now();
	assert_int_equal(s3_perform(&s, &rq), -1);
	double took = log_now() - t0;
	assert_int_equal(rq.outcome, S3_OUT_TIMEOUT);
	assert_true(took >= 1.5 && took < 10);
	char *why = s3_req_error(&s, &rq);
	assert_non_null(strstr(why, "slower than 64 KiB/s"));
	free(why);
	s3_req_free(&rq);
	s3_close(&s);
	close(fd);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	free(out);
	free(base);
}

int
main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uri_encode),
		cmocka_unit_test(test_xml_text),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_parse_list),
		cmocka_unit_test(test_sigv4_aws_vector),
		cmocka_unit_test_setup_teardown(test_stream_min_rate, unit_tmp_setup, unit_tmp_teardown),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
