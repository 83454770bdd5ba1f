/*
 * test_remote — the S3 remote: the pure parts (URL, config checks) and the transport's
 * failure modes against local sockets (refused, silent until the timeout,
 * cut short by SIGTERM) always; the real S3 API when one answers: the
 * endpoint in $PGSTASH_TEST_S3_ENDPOINT, else a moto_server this test starts
 * on a free loopback port ($PGSTASH_TEST_MOTO_SERVER, /opt/pgstash-s3/bin,
 * /usr/local/bin or PATH), else a visible SKIP.
 */
#include "unit.h"

#include "config.h"
#include "remote.h"
#include "s3.h"
#include "cli.h"
#include "log.h"
#include "sig.h"
#include "store.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

/* ---- pure helpers ---- */

#define KEY_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* ---- the transport against local sockets ---- */

/* A listening loopback socket that never accepts: connections hang after the handshake. */
static int
silent_server(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static int
closed_port(void)
{
	int port;
	int fd = silent_server(&port);
	close(fd);
	return port;
}

static bool
dir_has_entries(const char *path)
{
	return !dir_is_empty(path);
}

static void
test_unreachable(void **state)
{
	char *ep = xasprintf("http://127.0.0.1:%d", closed_port());
	struct remote_cfg rc = {.url = "s3://bucket/ci", .endpoint = ep, .path_style = true, .access_key = "AK",
	                        .secret_key = "SK", .timeout_s = 5};
	char *tmp = unit_tmpdir(), *a = NULL, *m = NULL;
	double t0 = log_now();

	assert_int_equal(remote_get(&rc, KEY_A, tmp, NULL, NULL, &a, &m), -1);
	assert_null(a);
	assert_null(m);
	assert_false(dir_has_entries(tmp));
	assert_int_equal(remote_lease(&rc, KEY_A, "me", 60), -1);
	assert_int_equal(remote_wait_for(&rc, KEY_A, 1), 1);
	FILE *out = tmpfile();
	assert_int_equal(cli_ls_remote(&rc, false, out), -1);
	assert_int_equal(remote_prune(&rc, 0, 1, false, out), -1);
	fclose(out);
	/* Refused connections are not retried: all of that is quick. */
	assert_true(log_now() - t0 < 4.0);
	rm_rf(tmp);
	free(tmp);
	free(ep);
}

static void
test_timeout(void **state)
{
	int port;
	int lfd = silent_server(&port);
	char *ep = xasprintf("http://127.0.0.1:%d", port);
	struct remote_cfg rc = {.url = "s3://bucket/ci", .endpoint = ep, .path_style = true, .timeout_s = 1};
	char *tmp = unit_tmpdir(), *a = NULL, *m = NULL;
	double t0 = log_now();

	assert_int_equal(remote_get(&rc, KEY_A, tmp, NULL, NULL, &a, &m), -1);
	double took = log_now() - t0;
	assert_true(took >= 0.9 && took < 3.0);
	assert_false(dir_has_entries(tmp));
	close(lfd);
	rm_rf(tmp);
	free(tmp);
	free(ep);
}

/* A child blocked on a silent server gets SIGTERM: the call must end at once. */
static void
test_signal_cuts_transfer(void **state)
{
	int port;
	int lfd = silent_server(&port);
	char *ep = xasprintf("http://127.0.0.1:%d", port);

	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (sig_init() != 0)
			_exit(90);
		struct remote_cfg rc = {.url = "s3://bucket/ci", .endpoint = ep, .path_style = true, .timeout_s = 60};
		char *a, *m;
		double t0 = log_now();
		int r = remote_get(&rc, KEY_A, "/tmp", NULL, NULL, &a, &m);
		_exit(r == -1 && sig_received == SIGTERM && log_now() - t0 < 5 ? 42 : 91);
	}
	struct timespec ts = {0, 500 * 1000 * 1000};
	nanosleep(&ts, NULL);
	double t0 = log_now();
	kill(pid, SIGTERM);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 42);
	assert_true(log_now() - t0 < 2.0);
	close(lfd);
	free(ep);
}

/* ---- a live S3 API ---- */

static char *endpoint;      /* http://127.0.0.1:PORT */
static pid_t server_pid;    /* the moto_server we started, or 0 */
static const char *bucket = "pgstash-unit";
static char *prefix;        /* a fresh prefix per run: the bucket may be shared */
static char *url;           /* s3://bucket/prefix */
/* $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY, else moto's "testing". */
static const char *access_key = "testing";
static const char *secret_key = "testing";

static struct remote_cfg
live_cfg(void)
{
	return (struct remote_cfg){.url = url, .endpoint = endpoint, .path_style = true, .access_key = (char *)access_key,
	                           .secret_key = (char *)secret_key, .timeout_s = 10};
}

/*
 * A raw signed request (the test's own hands: creating the bucket, planting
 * junk).  Returns the HTTP status, or -1.
 */
static long
raw_request(const char *method, const char *path, const char *body, size_t len)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char *u = xasprintf("%s%s", endpoint, path);
	long status = -1;
	FILE *sink = fopen("/dev/null", "w");

	curl_easy_setopt(c, CURLOPT_URL, u);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
	curl_easy_setopt(c, CURLOPT_USERNAME, access_key);
	curl_easy_setopt(c, CURLOPT_PASSWORD, secret_key);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
	}
	h = curl_slist_append(h, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
	/* Not a form: a server would parse the body away. */
	h = curl_slist_append(h, "Content-Type: application/octet-stream");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	fclose(sink);
	free(u);
	return status;
}

/*
 * One IAM query call (form body) to the moto_server we started, signed with
 * throwaway keys: moto lets the first INITIAL_NO_AUTH_ACTION_COUNT calls
 * through unchecked.  Returns the HTTP status (answer in *resp) or -1.
 */
static long
iam_call(const char *form, struct strbuf *resp)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	long status = -1;
	FILE *f = tmpfile();

	curl_easy_setopt(c, CURLOPT_URL, endpoint);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:iam");
	curl_easy_setopt(c, CURLOPT_USERNAME, "bootstrap");
	curl_easy_setopt(c, CURLOPT_PASSWORD, "bootstrap");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	h = curl_slist_append(h, "Content-Type: application/x-www-form-urlencoded");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	char buf[4096];
	size_t n;
	rewind(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		sb_appendn(resp, buf, n);
	fclose(f);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return status;
}

/*
 * Makes moto check every signature from now on: an IAM user with a key and
 * an allow-all policy (three unchecked calls), whose keys the tests use.
 * Returns 0, or -1 when the server never answered.
 */
static int
moto_enforce_auth(void)
{
	static char ak[128], sk[128];
	struct strbuf r = {0};
	long st = -1;

	for (int i = 0; i < 300 && st == -1; i++) {
		st = iam_call("Action=CreateUser&UserName=pgstash-unit&Version=2010-05-08", &r);
		if (st == -1) {
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	if (st != 200)
		goto fail;
	sb_free(&r);
	if (iam_call("Action=CreateAccessKey&UserName=pgstash-unit&Version=2010-05-08", &r) != 200)
		goto fail;
	char *a = s3_xml_text(r.buf, r.len, "AccessKeyId"), *s = s3_xml_text(r.buf, r.len, "SecretAccessKey");
	if (!a || !s || strlen(a) >= sizeof(ak) || strlen(s) >= sizeof(sk)) {
		free(a);
		free(s);
		goto fail;
	}
	snprintf(ak, sizeof(ak), "%s", a);
	snprintf(sk, sizeof(sk), "%s", s);
	free(a);
	free(s);
	sb_free(&r);
	/* {"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]} */
	if (iam_call("Action=PutUserPolicy&UserName=pgstash-unit&PolicyName=all&Version=2010-05-08&PolicyDocument="
	             "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C"
	             "%22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D", &r) != 200)
		goto fail;
	sb_free(&r);
	access_key = ak;
	secret_key = sk;
	return 0;
fail:
	fprintf(stderr, "moto_server: could not set up IAM keys (HTTP %ld): %s\n", st, sb_str(&r));
	sb_free(&r);
	return -1;
}

static char *
find_moto(void)
{
	const char *env = getenv("PGSTASH_TEST_MOTO_SERVER");
	if (env && *env)
		return access(env, X_OK) == 0 ? xstrdup(env) : NULL;
	const char *fixed[] = {"/opt/pgstash-s3/bin/moto_server", "/usr/local/bin/moto_server", NULL};
	for (size_t i = 0; fixed[i]; i++)
		if (access(fixed[i], X_OK) == 0)
			return xstrdup(fixed[i]);
	const char *path = getenv("PATH");
	char *copy = xstrdup(path ? path : "/usr/bin:/bin"), *save = NULL;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *p = path_join(d, "moto_server");
		if (access(p, X_OK) == 0) {
			free(copy);
			return p;
		}
		free(p);
	}
	free(copy);
	return NULL;
}

static int
live_setup(void **state)
{
	const char *env = getenv("PGSTASH_TEST_S3_ENDPOINT");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (env && *env) {
		const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
		if (ak && *ak && sk && *sk) {
			access_key = ak;
			secret_key = sk;
		}
		endpoint = xstrdup(env);
	} else {
		char *moto = find_moto();
		if (!moto) {
			fprintf(stderr, "SKIP: no S3 API to test against: set PGSTASH_TEST_S3_ENDPOINT or install "
			                "moto[server] (see tests/integration/s3server.py)\n");
			return 0;
		}
		int port = closed_port();
		char portstr[16];
		snprintf(portstr, sizeof(portstr), "%d", port);
		fflush(NULL);
		server_pid = fork();
		if (server_pid == 0) {
			int null = open("/dev/null", O_RDWR);
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			setpgid(0, 0);
			/* Three IAM calls unchecked, then every signature is verified. */
			setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3", 1);
			execl(moto, moto, "-H", "127.0.0.1", "-p", portstr, (char *)NULL);
			_exit(127);
		}
		free(moto);
		endpoint = xasprintf("http://127.0.0.1:%d", port);
		if (moto_enforce_auth() != 0) {
			fprintf(stderr, "SKIP: the moto_server at %s did not come up\n", endpoint);
			free(endpoint);
			endpoint = NULL;
			return 0;
		}
	}
	/* Creating the bucket doubles as the readiness probe: 200, or 409 when it exists. */
	char *bpath = xasprintf("/%s", bucket);
	long st = -1;
	for (int i = 0; i < 300; i++) {
		st = raw_request("PUT", bpath, NULL, 0);
		if (st == 200 || st == 409)
			break;
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	free(bpath);
	if (st != 200 && st != 409) {
		fprintf(stderr, "SKIP: the S3 API at %s does not answer (last status %ld)\n", endpoint, st);
		free(endpoint);
		endpoint = NULL;
		return 0;
	}
	prefix = xasprintf("unit-%ld-%d", (long)time(NULL), (int)getpid());
	url = xasprintf("s3://%s/%s", bucket, prefix);
	fprintf(stderr, "S3 API at %s, %s\n", endpoint, url);
	return 0;
}

static int
live_teardown(void **state)
{
	if (server_pid > 0) {
		kill(-server_pid, SIGTERM);
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
		server_pid = 0;
	}
	free(endpoint);
	free(prefix);
	free(url);
	endpoint = prefix = url = NULL;
	curl_global_cleanup();
	return 0;
}

#define NEED_S3()                \
	do {                     \
		if (!endpoint)   \
			skip();  \
	} while (0)

/* A fake local entry: an archive of `size` random bytes and its meta, in dir. */
struct entry {
	char key[65];
	char *archive;
	char *meta;
	char sha[65];
};

static void
make_entry(struct entry *e, const char *dir, uint64_t size, unsigned seed)
{
	unsigned char md[32];
	unsigned int mdl;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char *buf = xmalloc(1 << 16);
	unsigned x = seed * 2654435761u + 1;

	/* The key: a digest of the seed and the clock, so runs never collide. */
	char *seedtext = xasprintf("%u-%ld-%d", seed, (long)time(NULL), (int)getpid());
	EVP_Digest(seedtext, strlen(seedtext), md, &mdl, EVP_sha256(), NULL);
	hex_encode(md, 32, e->key);
	free(seedtext);
	e->archive = xasprintf("%s/%s.tar.zst", dir, e->key);
	e->meta = xasprintf("%s/%s.meta", dir, e->key);
	FILE *f = fopen(e->archive, "w");
	assert_non_null(f);
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (uint64_t left = size; left > 0;) {
		size_t n = left < (1 << 16) ? (size_t)left : (1 << 16);
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			buf[i] = (char)(x >> 16);
		}
		assert_int_equal(fwrite(buf, 1, n, f), n);
		EVP_DigestUpdate(ctx, buf, n);
		left -= n;
	}
	assert_int_equal(fclose(f), 0);
	EVP_DigestFinal_ex(ctx, md, &mdl);
	hex_encode(md, 32, e->sha);
	f = fopen(e->meta, "w");
	fprintf(f, "; pgstash cache entry (pgstash-v1)\nkey = %s\nparent = \nlayer = schema\ncompression = zstd\n"
	           "pg_version = 15.8\ncreated = 1700000000\nlast_used = 1700000000\narchive_bytes = %llu\n"
	           "archive_sha256 = %s\npgdata_bytes = 1\nbuild_seconds = 1.000\nmanifest = x\\\n",
	        e->key, (unsigned long long)size, e->sha);
	assert_int_equal(fclose(f), 0);
	EVP_MD_CTX_free(ctx);
	free(buf);
}

static void
entry_free(struct entry *e)
{
	free(e->archive);
	free(e->meta);
}

static void
assert_same_file(const char *a, const char *b)
{
	size_t la, lb;
	char *x = read_file(a, &la), *y = read_file(b, &lb);
	assert_non_null(x);
	assert_non_null(y);
	assert_int_equal(la, lb);
	assert_memory_equal(x, y, la);
	free(x);
	free(y);
}

static void
roundtrip(uint64_t size, uint64_t threshold)
{
	struct remote_cfg rc = live_cfg();
	char *src = unit_tmpdir(), *tmp = unit_tmpdir(), *a = NULL, *m = NULL;
	struct entry e;

	rc.multipart_threshold = threshold;
	rc.part_size = REMOTE_MIN_PART_SIZE;
	make_entry(&e, src, size, (unsigned)size);
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), 1);
	assert_int_equal(remote_put(&rc, e.key, e.archive, e.meta), 0);
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), 0);
	assert_non_null(a);
	assert_non_null(m);
	assert_true(strncmp(a, tmp, strlen(tmp)) == 0 && strstr(a, e.key) && strstr(a, ".tar.zst"));
	assert_true(strstr(m, ".meta") != NULL);
	assert_same_file(a, e.archive);
	assert_same_file(m, e.meta);
	struct stat sb;
	assert_int_equal(stat(a, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	unlink(a);
	unlink(m);
	free(a);
	free(m);
	assert_false(dir_has_entries(tmp));
	entry_free(&e);
	rm_rf(src);
	rm_rf(tmp);
	free(src);
	free(tmp);
}

static void
test_live_roundtrip(void **state)
{
	NEED_S3();
	roundtrip(100 * 1024 + 7, 0);
	roundtrip(0, 0);
}

/* Signatures are checked (moto: after moto_enforce_auth): a wrong secret is refused. */
static void
test_live_bad_secret(void **state)
{
	NEED_S3();
	struct remote_cfg rc = live_cfg();
	rc.secret_key = "not-the-secret";
	FILE *out = tmpfile();
	char *tmp = unit_tmpdir(), *a, *m;
	assert_int_equal(cli_ls_remote(&rc, false, out), -1);
	assert_int_equal(remote_get(&rc, KEY_A, tmp, NULL, NULL, &a, &m), -1);
	fclose(out);
	rm_rf(tmp);
	free(tmp);
}

static void
test_live_multipart(void **state)
{
	NEED_S3();
	/* 13 MiB + 5 bytes in parts of 5 MiB: three parts, the last one short. */
	roundtrip(13 * 1024 * 1024 + 5, 6 * 1024 * 1024);
}

/* Overwrites object `name` (under the entry dir) with `body`. */
static void
plant(const char *key, const char *suffix, const char *body, size_t len)
{
	char *p = xasprintf("/%s/%s/pgstash-v1/%s%s", bucket, prefix, key, suffix);
	assert_int_equal(raw_request("PUT", p, body, len), 200);
	free(p);
}

/* remote_get's judges for test_live_garbage: count their calls in *ctx. */
static bool
refuse_meta(const struct entry_meta *m, void *ctx, char *why, size_t why_len)
{
	(void)m;
	++*(int *)ctx;
	snprintf(why, why_len, "not trusted: test");
	return false;
}

static bool
accept_meta(const struct entry_meta *m, void *ctx, char *why, size_t why_len)
{
	(void)m;
	(void)why;
	(void)why_len;
	++*(int *)ctx;
	return true;
}

static void
test_live_garbage(void **state)
{
	NEED_S3();
	struct remote_cfg rc = live_cfg();
	char *src = unit_tmpdir(), *tmp = unit_tmpdir(), *a = NULL, *m = NULL;
	struct entry e;

	make_entry(&e, src, 4096, 77);
	assert_int_equal(remote_put(&rc, e.key, e.archive, e.meta), 0);

	/* Same size, other bytes: the digest catches it. */
	char junk[4096];
	memset(junk, 'j', sizeof(junk));
	plant(e.key, ".tar.zst", junk, sizeof(junk));
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), -1);
	assert_null(a);
	assert_false(dir_has_entries(tmp));
	/* Short, and longer than the meta says. */
	plant(e.key, ".tar.zst", junk, 100);
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), -1);
	assert_false(dir_has_entries(tmp));
	char *big = xmalloc(8192);
	memset(big, 'x', 8192);
	plant(e.key, ".tar.zst", big, 8192);
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), -1);
	assert_false(dir_has_entries(tmp));
	free(big);
	/* A meta that is not one; a meta naming another key; a meta without archive. */
	plant(e.key, ".meta", "<html>gateway error</html>", 26);
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), -1);
	char *other = xasprintf("key = %s\ncompression = zstd\narchive_bytes = 1\narchive_sha256 = %s\n", KEY_A, e.sha);
	plant(e.key, ".meta", other, strlen(other));
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), -1);
	free(other);
	assert_int_equal(remote_put(&rc, e.key, e.archive, e.meta), 0);
	char *ap = xasprintf("/%s/%s/pgstash-v1/%s.tar.zst", bucket, prefix, e.key);
	assert_int_equal(raw_request("DELETE", ap, NULL, 0), 204);
	free(ap);
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), -1);
	assert_false(dir_has_entries(tmp));
	/* remote_put repairs it. */
	assert_int_equal(remote_put(&rc, e.key, e.archive, e.meta), 0);
	assert_int_equal(remote_get(&rc, e.key, tmp, NULL, NULL, &a, &m), 0);
	unlink(a);
	unlink(m);
	free(a);
	free(m);
	/* A meta the caller refuses: its archive is never asked for (its size is the meta's word). */
	int judged = 0;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	assert_int_equal(remote_get(&rc, e.key, tmp, refuse_meta, &judged, &a, &m), -1);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(judged, 1);
	assert_non_null(strstr(err, "is refused, not trusted: test (not downloaded)"));
	assert_null(a);
	assert_false(dir_has_entries(tmp));
	free(err);
	assert_int_equal(remote_get(&rc, e.key, tmp, accept_meta, &judged, &a, &m), 0);
	assert_int_equal(judged, 2);
	unlink(a);
	unlink(m);
	free(a);
	free(m);

	/* remote_put refuses a meta that does not describe the archive. */
	struct entry f;
	make_entry(&f, src, 10, 78);
	assert_int_equal(remote_put(&rc, f.key, e.archive, f.meta), -1);
	assert_int_equal(remote_put(&rc, e.key, f.archive, f.meta), -1);
	entry_free(&f);
	entry_free(&e);
	rm_rf(src);
	rm_rf(tmp);
	free(src);
	free(tmp);
}

static void
test_live_lease(void **state)
{
	NEED_S3();
	struct remote_cfg rc = live_cfg();
	const char *k = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

	assert_int_equal(remote_lease(&rc, k, "runner-a:1", 60), 0);
	assert_int_equal(remote_lease(&rc, k, "runner-b:2", 60), 1);
	assert_int_equal(remote_lease(&rc, k, "runner-a:1", 60), 0); /* ours again */
	assert_int_equal(remote_lease_release(&rc, k, "runner-b:2"), 1);
	assert_int_equal(remote_lease(&rc, k, "runner-b:2", 60), 1);
	assert_int_equal(remote_lease_release(&rc, k, "runner-a:1"), 0);
	assert_int_equal(remote_lease_release(&rc, k, "runner-a:1"), 0); /* absent */
	assert_int_equal(remote_lease(&rc, k, "runner-b:2", 60), 0);
	assert_int_equal(remote_lease_release(&rc, k, "runner-b:2"), 0);

	/* An expired lease (its own ttl) is taken over. */
	assert_int_equal(remote_lease(&rc, k, "runner-c:3", 1), 0);
	struct timespec ts = {2, 100 * 1000 * 1000};
	nanosleep(&ts, NULL);
	assert_int_equal(remote_lease(&rc, k, "runner-d:4", 60), 0);
	assert_int_equal(remote_lease(&rc, k, "runner-c:3", 60), 1);
	assert_int_equal(remote_lease_release(&rc, k, "runner-c:3"), 1);
	/* Garbage in the lease object counts as expired. */
	plant(k, ".lease", "\x01\x02garbage", 9);
	assert_int_equal(remote_lease(&rc, k, "runner-e:5", 60), 0);
	assert_int_equal(remote_lease_release(&rc, k, "runner-e:5"), 0);
	/* Bad owners are refused. */
	assert_int_equal(remote_lease(&rc, k, "two\nlines", 60), -1);
	assert_int_equal(remote_lease(&rc, k, "", 60), -1);
}

static void
test_live_wait_for(void **state)
{
	NEED_S3();
	struct remote_cfg rc = live_cfg();
	char *src = unit_tmpdir();
	struct entry e;
	make_entry(&e, src, 1000, 99);

	/* Nobody holds a lease and nothing is there: not worth waiting for. */
	double t0 = log_now();
	assert_int_equal(remote_wait_for(&rc, e.key, 30), 1);
	assert_true(log_now() - t0 < 3);

	/* Another runner holds the lease and uploads a moment later. */
	assert_int_equal(remote_lease(&rc, e.key, "builder:1", 60), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct timespec ts = {1, 0};
		nanosleep(&ts, NULL);
		int r = remote_put(&rc, e.key, e.archive, e.meta);
		_exit(r == 0 ? 0 : 1);
	}
	/* The polling loop drains signals, which reaps children: track ours. */
	sig_track(pid);
	assert_int_equal(remote_wait_for(&rc, e.key, 30), 0);
	int status;
	assert_int_equal(sig_wait_child(pid, &status, 30, 0), 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* A held lease and no upload: the timeout. */
	const char *k2 = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
	assert_int_equal(remote_lease(&rc, k2, "builder:2", 60), 0);
	t0 = log_now();
	assert_int_equal(remote_wait_for(&rc, k2, 2), 1);
	assert_true(log_now() - t0 >= 1.9 && log_now() - t0 < 5);
	/* The builder gives up: the waiter stops early. */
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct timespec ts = {1, 0};
		nanosleep(&ts, NULL);
		_exit(remote_lease_release(&rc, k2, "builder:2") == 0 ? 0 : 1);
	}
	sig_track(pid);
	t0 = log_now();
	assert_int_equal(remote_wait_for(&rc, k2, 30), 1);
	assert_true(log_now() - t0 < 6);
	assert_int_equal(sig_wait_child(pid, &status, 30, 0), 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	entry_free(&e);
	rm_rf(src);
	free(src);
}

static char *
capture_file(FILE *f)
{
	struct strbuf sb = {0};
	char buf[4096];
	size_t n;
	fflush(f);
	rewind(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		sb_appendn(&sb, buf, n);
	return sb_take(&sb);
}

static void
test_live_list_prune(void **state)
{
	NEED_S3();
	struct remote_cfg rc = live_cfg();
	char *src = unit_tmpdir();
	struct entry e[3];

	/* Their own prefix: the other tests' entries stay out of the counts. */
	char *saved = url;
	url = xasprintf("%s-lp", saved);
	rc.url = url;
	for (int i = 0; i < 3; i++) {
		make_entry(&e[i], src, 1000 + (uint64_t)i, 200 + (unsigned)i);
		assert_int_equal(remote_put(&rc, e[i].key, e[i].archive, e[i].meta), 0);
		/* LastModified has whole seconds. */
		struct timespec ts = {1, 100 * 1000 * 1000};
		if (i < 2)
			nanosleep(&ts, NULL);
	}
	const char *lk = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
	assert_int_equal(remote_lease(&rc, lk, "someone", 60), 0);

	FILE *out = tmpfile();
	assert_int_equal(cli_ls_remote(&rc, false, out), 0);
	char *text = capture_file(out);
	fputs(text, stderr);
	assert_non_null(strstr(text, "KEY"));
	for (int i = 0; i < 3; i++)
		assert_non_null(strstr(text, e[i].key));
	assert_non_null(strstr(text, "lease only"));
	/* Most recent first. */
	assert_true(strstr(text, e[2].key) < strstr(text, e[0].key));
	free(text);
	fclose(out);

	out = tmpfile();
	assert_int_equal(cli_ls_remote(&rc, true, out), 0);
	text = capture_file(out);
	cJSON *arr = cJSON_Parse(text);
	assert_true(cJSON_IsArray(arr));
	assert_int_equal(cJSON_GetArraySize(arr), 4);
	int complete = 0;
	const cJSON *o;
	cJSON_ArrayForEach(o, arr) {
		if (cJSON_IsTrue(cJSON_GetObjectItem(o, "complete"))) {
			complete++;
			assert_true(cJSON_GetObjectItem(o, "archive_bytes")->valuedouble >= 1000);
			assert_true(cJSON_GetObjectItem(o, "last_modified")->valuedouble > 1700000000);
		}
	}
	assert_int_equal(complete, 3);
	cJSON_Delete(arr);
	free(text);
	fclose(out);

	out = tmpfile();
	assert_int_equal(remote_prune(&rc, 0, 1, true, out), 2);
	text = capture_file(out);
	assert_non_null(strstr(text, "would remove"));
	assert_non_null(strstr(text, e[0].key));
	assert_non_null(strstr(text, e[1].key));
	assert_null(strstr(text, e[2].key));
	free(text);
	fclose(out);

	out = tmpfile();
	assert_int_equal(remote_prune(&rc, 0, 1, false, out), 2);
	fclose(out);
	char *tmp = unit_tmpdir(), *a, *m;
	assert_int_equal(remote_get(&rc, e[0].key, tmp, NULL, NULL, &a, &m), 1);
	assert_int_equal(remote_get(&rc, e[1].key, tmp, NULL, NULL, &a, &m), 1);
	assert_int_equal(remote_get(&rc, e[2].key, tmp, NULL, NULL, &a, &m), 0);
	unlink(a);
	unlink(m);
	free(a);
	free(m);
	/* By size: the last one is 1002 bytes. */
	out = tmpfile();
	assert_int_equal(remote_prune(&rc, 1001, 0, false, out), 1);
	fclose(out);
	assert_int_equal(remote_get(&rc, e[2].key, tmp, NULL, NULL, &a, &m), 1);
	/* The fresh lease is no orphan yet. */
	out = tmpfile();
	assert_int_equal(cli_ls_remote(&rc, false, out), 0);
	text = capture_file(out);
	assert_non_null(strstr(text, lk));
	free(text);
	fclose(out);

	for (int i = 0; i < 3; i++)
		entry_free(&e[i]);
	free(url);
	url = saved;
	rm_rf(tmp);
	rm_rf(src);
	free(tmp);
	free(src);
}

/* A waiting runner gets SIGTERM: it stops at once. */
static void
test_live_signal_while_waiting(void **state)
{
	NEED_S3();
	struct remote_cfg rc = live_cfg();
	const char *k = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

	assert_int_equal(remote_lease(&rc, k, "holder", 60), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (sig_init() != 0)
			_exit(90);
		int r = remote_wait_for(&rc, k, 60);
		_exit(r == -1 && sig_received == SIGTERM ? 42 : 91);
	}
	struct timespec ts = {1, 0};
	nanosleep(&ts, NULL);
	double t0 = log_now();
	kill(pid, SIGTERM);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 42);
	assert_true(log_now() - t0 < 2.0);
	assert_int_equal(remote_lease_release(&rc, k, "holder"), 0);
}

/* A builder stopped by SIGTERM still releases its lease on the way out. */
static void
test_live_release_after_signal(void **state)
{
	NEED_S3();
	struct remote_cfg rc = live_cfg();
	const char *k = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (sig_init() != 0)
			_exit(90);
		if (remote_lease(&rc, k, "stopped", 60) != 0)
			_exit(91);
		kill(getpid(), SIGTERM);
		sig_drain();
		if (sig_received != SIGTERM)
			_exit(92);
		_exit(remote_lease_release(&rc, k, "stopped") == 0 ? 42 : 93);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 42);
	/* Gone: anyone acquires it at once. */
	assert_int_equal(remote_lease(&rc, k, "next", 60), 0);
	assert_int_equal(remote_lease_release(&rc, k, "next"), 0);
}

int
main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_unreachable),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_signal_cuts_transfer),
	};
	const struct CMUnitTest live[] = {
		cmocka_unit_test(test_live_roundtrip),
		cmocka_unit_test(test_live_bad_secret),
		cmocka_unit_test(test_live_multipart),
		cmocka_unit_test(test_live_garbage),
		cmocka_unit_test(test_live_lease),
		cmocka_unit_test(test_live_wait_for),
		cmocka_unit_test(test_live_list_prune),
		cmocka_unit_test(test_live_signal_while_waiting),
		cmocka_unit_test(test_live_release_after_signal),
	};
	int failed = cmocka_run_group_tests_name("remote", pure, NULL, NULL);
	failed += cmocka_run_group_tests_name("remote-s3", live, live_setup, live_teardown);
	return failed ? 1 : 0;
}
