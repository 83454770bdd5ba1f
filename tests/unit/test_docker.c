/*
 * test_docker — the Docker Engine client: the pure parts (create body,
 * names, API version choice, the multiplexed stream, finding our own
 * container id) always; the real engine when /var/run/docker.sock answers
 * and has the base image (docker/build-base.sh makes it), else a visible SKIP.
 */
#include "unit.h"

#include "docker.h"
#include "docker_int.h"
#include "log.h"
#include "sig.h"

#include <cJSON.h>
#include <signal.h>
#include <time.h>
#include <sys/wait.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>

#define TEST_IMAGE "debian:bookworm-slim"

/* ---- pure parts ---- */

static void
test_create_body_full(void **state)
{
	char *argv[] = {"sh", "-c", "echo hi", NULL};
	char *env[] = {"A=1", "B=two words", NULL};
	struct docker_run_opts o = {
		.image = "app:dev", .argv = argv, .env = env, .workdir = "/src",
		.network_mode = "container:abc", .volumes_from = "abc:ro", .user = "1000:1000",
		.step = "django", .owner = "me",
	};
	char *body = docker_create_body(&o);
	cJSON *root = cJSON_Parse(body);
	assert_non_null(root);

	assert_string_equal(cJSON_GetObjectItem(root, "Image")->valuestring, "app:dev");
	cJSON *cmd = cJSON_GetObjectItem(root, "Cmd");
	assert_int_equal(cJSON_GetArraySize(cmd), 3);
	assert_string_equal(cJSON_GetArrayItem(cmd, 2)->valuestring, "echo hi");
	cJSON *e = cJSON_GetObjectItem(root, "Env");
	assert_int_equal(cJSON_GetArraySize(e), 2);
	assert_string_equal(cJSON_GetArrayItem(e, 1)->valuestring, "B=two words");
	assert_string_equal(cJSON_GetObjectItem(root, "WorkingDir")->valuestring, "/src");
	assert_string_equal(cJSON_GetObjectItem(root, "User")->valuestring, "1000:1000");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(root, "Tty")));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(root, "AttachStdout")));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(root, "AttachStderr")));
	cJSON *labels = cJSON_GetObjectItem(root, "Labels");
	assert_string_equal(cJSON_GetObjectItem(labels, DOCKER_LABEL_STEP)->valuestring, "django");
	assert_string_equal(cJSON_GetObjectItem(labels, DOCKER_LABEL_OWNER)->valuestring, "me");
	cJSON *host = cJSON_GetObjectItem(root, "HostConfig");
	assert_string_equal(cJSON_GetObjectItem(host, "NetworkMode")->valuestring, "container:abc");
	assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(host, "VolumesFrom"), 0)->valuestring, "abc:ro");
	/* Dies with the container whose network it joins, and the engine removes it even when we are gone. */
	assert_string_equal(cJSON_GetObjectItem(host, "PidMode")->valuestring, "container:abc");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(host, "AutoRemove")));
	cJSON_Delete(root);
	free(body);
}

static void
test_create_body_minimal(void **state)
{
	/* A quote and a backslash in a value must come out as valid JSON. */
	struct docker_run_opts o = {.image = "app", .step = "we\"ird\\step"};
	char *body = docker_create_body(&o);
	cJSON *root = cJSON_Parse(body);
	assert_non_null(root);
	assert_null(cJSON_GetObjectItem(root, "Cmd"));
	assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "HostConfig"), "PidMode"));
	assert_null(cJSON_GetObjectItem(root, "Env"));
	assert_null(cJSON_GetObjectItem(root, "WorkingDir"));
	assert_null(cJSON_GetObjectItem(root, "User"));
	cJSON *labels = cJSON_GetObjectItem(root, "Labels");
	assert_string_equal(cJSON_GetObjectItem(labels, DOCKER_LABEL_STEP)->valuestring, "we\"ird\\step");
	assert_null(cJSON_GetObjectItem(labels, DOCKER_LABEL_OWNER));
	cJSON *host = cJSON_GetObjectItem(root, "HostConfig");
	assert_null(cJSON_GetObjectItem(host, "NetworkMode"));
	assert_null(cJSON_GetObjectItem(host, "VolumesFrom"));
	cJSON_Delete(root);
	free(body);
}

static void
test_container_name(void **state)
{
	char *n = docker_container_name("django", "0a1b2c3d");
	assert_string_equal(n, "pgstash-django-0a1b2c3d");
	free(n);
	n = docker_container_name("my step/é", "ff");
	assert_string_equal(n, "pgstash-my_step___-ff");
	free(n);
	n = docker_container_name("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "x");
	assert_int_equal(strlen(n), strlen("pgstash-") + 40 + 2);
	free(n);
}

static void
test_pick_api_version(void **state)
{
	assert_string_equal(docker_pick_api_version(NULL), DOCKER_API_VERSION);
	assert_string_equal(docker_pick_api_version("1.41"), "1.41");
	assert_string_equal(docker_pick_api_version("1.50"), DOCKER_API_VERSION);
	assert_string_equal(docker_pick_api_version("2.0"), DOCKER_API_VERSION);
	assert_string_equal(docker_pick_api_version("1.40"), "1.40");
	assert_string_equal(docker_pick_api_version("1.9"), "1.9");
	assert_string_equal(docker_pick_api_version("junk"), DOCKER_API_VERSION);
	assert_string_equal(docker_pick_api_version("1.40x"), DOCKER_API_VERSION);
}

/* ---- the multiplexed stream ---- */

struct lines {
	struct strbuf out; /* "1:line\n2:line\n" */
	int n;
};

static void
collect(void *arg, int stream, const char *line, size_t len)
{
	struct lines *l = arg;
	sb_appendf(&l->out, "%d:%.*s\n", stream, (int)len, line);
	l->n++;
}

static void
frame(struct strbuf *sb, int stream, const char *payload, size_t n)
{
	char hdr[8] = {(char)stream, 0, 0, 0, (char)(n >> 24), (char)(n >> 16), (char)(n >> 8), (char)n};
	sb_appendn(sb, hdr, 8);
	sb_appendn(sb, payload, n);
}

static void
demux_all(const struct strbuf *in, size_t chunk, struct lines *l)
{
	struct docker_demux m = {.fn = collect, .arg = l};
	for (size_t i = 0; i < in->len; i += chunk) {
		size_t n = in->len - i < chunk ? in->len - i : chunk;
		assert_int_equal(docker_demux_feed(&m, in->buf + i, n), 0);
	}
	docker_demux_finish(&m);
	docker_demux_free(&m);
}

static void
test_demux_lines(void **state)
{
	struct strbuf in = {0};
	frame(&in, 1, "out one\nout ", 12);
	frame(&in, 2, "err one\r\n", 9);
	frame(&in, 1, "", 0);
	frame(&in, 1, "two\n", 4);
	frame(&in, 2, "tail without newline", 20);
	frame(&in, 1, "\n\n", 2);
	const char *want = "1:out one\n2:err one\n1:out two\n1:\n1:\n2:tail without newline\n";

	/* The same lines whatever the chunking: whole, byte by byte, odd sizes. */
	size_t chunks[] = {in.len, 1, 3, 7, 8, 9};
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		struct lines l = {0};
		demux_all(&in, chunks[i], &l);
		assert_string_equal(sb_str(&l.out), want);
		sb_free(&l.out);
	}
	sb_free(&in);
}

static void
test_demux_long_line(void **state)
{
	struct strbuf in = {0};
	size_t big = 150 * 1024;
	char *payload = xmalloc(big + 1);
	memset(payload, 'x', big);
	payload[big] = '\n';
	frame(&in, 1, payload, big + 1);
	struct lines l = {0};
	demux_all(&in, 4096, &l);
	/* Relayed in bounded pieces, nothing lost. */
	assert_true(l.n >= 3);
	size_t xs = 0;
	for (size_t i = 0; i < l.out.len; i++)
		xs += l.out.buf[i] == 'x';
	assert_int_equal(xs, big);
	sb_free(&l.out);
	sb_free(&in);
	free(payload);
}

static void
test_demux_bad_header(void **state)
{
	struct lines l = {0};
	struct docker_demux m = {.fn = collect, .arg = &l};
	const char raw[] = "plain tty output\n";
	assert_int_equal(docker_demux_feed(&m, raw, sizeof(raw) - 1), -1);
	assert_true(m.bad);
	assert_int_equal(docker_demux_feed(&m, raw, sizeof(raw) - 1), -1);
	docker_demux_finish(&m);
	docker_demux_free(&m);
	assert_int_equal(l.n, 0);
	sb_free(&l.out);
}

/* ---- our own container id ---- */

#define ID64 "6c3d17b07ff2e2a3c150301c7c77d6d7122ab0029126c1009a0d86b1d3761075"
#define ID64B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char *
fixture(const char *dir, const char *name, const char *text)
{
	unit_write(dir, name, text);
	return path_join(dir, name);
}

static void
test_self_id(void **state)
{
	char *dir = unit_tmpdir();
	/* As seen here: Docker 20.10, cgroup v1, fuse-overlayfs. */
	char *mi = fixture(dir, "mountinfo",
		"68 47 0:52 / / rw,relatime - fuse.fuse-overlayfs fuse-overlayfs rw,user_id=0\n"
		"86 69 254:0 /var/lib/docker/containers/" ID64 "/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw\n"
		"87 69 254:0 /var/lib/docker/containers/" ID64 "/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n");
	/* Data root on its own file system: the root field starts below it. */
	char *mi2 = fixture(dir, "mountinfo2",
		"87 69 254:0 /containers/" ID64B "/hosts /etc/hosts rw - ext4 /dev/vdb rw\n");
	/* A host (or a bind mount of /etc/hosts by the user): nothing to find. */
	char *mi_none = fixture(dir, "mountinfo-none",
		"22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
		"23 22 254:0 /srv/" ID64 " /srv rw - ext4 /dev/vda rw\n");
	char *cg1 = fixture(dir, "cgroup1", "12:pids:/docker/" ID64B "\n1:name=systemd:/docker/" ID64B "\n");
	char *cg_systemd = fixture(dir, "cgroup-systemd", "0::/system.slice/docker-" ID64 ".scope\n");
	char *cg2 = fixture(dir, "cgroup2", "0::/\n");
	char *host_short = fixture(dir, "hostname", "6c3d17b07ff2\n");
	char *host_named = fixture(dir, "hostname-named", "db\n");
	char *missing = path_join(dir, "missing");
	char *id = NULL;

	assert_int_equal(docker_self_container_id_from(mi, cg2, host_named, &id), 0);
	assert_string_equal(id, ID64);
	free(id);
	assert_int_equal(docker_self_container_id_from(mi2, NULL, NULL, &id), 0);
	assert_string_equal(id, ID64B);
	free(id);
	assert_int_equal(docker_self_container_id_from(mi_none, cg1, NULL, &id), 0);
	assert_string_equal(id, ID64B);
	free(id);
	assert_int_equal(docker_self_container_id_from(missing, cg_systemd, NULL, &id), 0);
	assert_string_equal(id, ID64);
	free(id);
	/* cgroup v2 with a private namespace and the default host name. */
	assert_int_equal(docker_self_container_id_from(mi_none, cg2, host_short, &id), 0);
	assert_string_equal(id, "6c3d17b07ff2");
	free(id);
	assert_int_equal(docker_self_container_id_from(mi_none, cg2, host_named, &id), -1);
	assert_null(id);
	assert_int_equal(docker_self_container_id_from(missing, missing, missing, &id), -1);

	free(mi); free(mi2); free(mi_none); free(cg1); free(cg_systemd); free(cg2);
	free(host_short); free(host_named); free(missing);
	rm_rf(dir);
	free(dir);
}

/* ---- the real engine ---- */

static bool engine_ok;
static char owner[64];

static int
engine_setup(void **state)
{
	struct docker d;
	struct unit_capture cap;

	snprintf(owner, sizeof(owner), "unit-%ld-%ld", (long)getpid(), (long)time(NULL));
	unit_stderr_begin(&cap);
	if (docker_open(&d, NULL) == 0) {
		engine_ok = docker_image_id(&d, TEST_IMAGE, NULL) == 0;
		if (!engine_ok)
			printf("SKIP: the Docker Engine answers but has no image %s (run docker/build-base.sh)\n",
			       TEST_IMAGE);
	} else {
		printf("SKIP: no Docker Engine answers at %s: engine tests skipped\n", DOCKER_DEFAULT_SOCKET);
	}
	docker_close(&d);
	free(unit_stderr_end(&cap));
	fflush(stdout);
	return 0;
}

static int
engine_teardown(void **state)
{
	if (engine_ok) {
		struct docker d;
		char *label = xasprintf(DOCKER_LABEL_OWNER "=%s", owner);
		if (docker_open(&d, NULL) == 0)
			docker_remove_labelled(&d, label);
		docker_close(&d);
		free(label);
	}
	return 0;
}

#define NEED_ENGINE()                   \
	do {                            \
		if (!engine_ok)         \
			skip();         \
	} while (0)

/* How many containers carry our owner label: removes them, so only call when 0 is expected. */
static int
leftovers(struct docker *d)
{
	char *label = xasprintf(DOCKER_LABEL_OWNER "=%s", owner);
	int n = docker_remove_labelled(d, label);
	free(label);
	return n;
}

static void
test_open_unreachable(void **state)
{
	struct docker d;
	struct unit_capture cap;
	char *dir = unit_tmpdir();
	char *nosock = path_join(dir, "docker.sock");
	char *file = fixture(dir, "file.sock", "not a socket");

	unit_stderr_begin(&cap);
	int r1 = docker_open(&d, nosock);
	docker_close(&d);
	int r2 = docker_open(&d, file);
	docker_close(&d);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(r1, -1);
	assert_int_equal(r2, -1);
	char *want = xasprintf("cannot reach the Docker Engine at \"%s\": No such file or directory", nosock);
	assert_non_null(strstr(err, want));
	assert_non_null(strstr(err, "not a socket"));
	free(want);
	free(err);
	free(file);
	free(nosock);
	rm_rf(dir);
	free(dir);
}

static void
test_image_id(void **state)
{
	NEED_ENGINE();
	struct docker d;
	struct unit_capture cap;
	char *id = NULL;

	assert_int_equal(docker_open(&d, NULL), 0);
	assert_int_equal(docker_image_id(&d, TEST_IMAGE, &id), 0);
	assert_non_null(id);
	assert_true(strncmp(id, "sha256:", 7) == 0);
	free(id);

	unit_stderr_begin(&cap);
	int r = docker_image_id(&d, "pgstash-unit/no-such-image:nope", &id);
	int bad = docker_image_id(&d, "x?all=1", &id);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(r, 1);
	assert_null(id);
	assert_int_equal(bad, -1);
	assert_non_null(strstr(err, "image \"pgstash-unit/no-such-image:nope\" not found locally"));
	free(err);
	docker_close(&d);
}

/* In a child, as root: the broker holds the socket's group; we drop to postgres without it and still reach the engine. */
static int
broker_child(uid_t uid, gid_t gid, gid_t sock_gid)
{
	struct docker d;
	char *id = NULL;
	if (docker_broker_start(DOCKER_DEFAULT_SOCKET, uid, gid, sock_gid) != 0)
		return 10;
	gid_t groups[1] = {gid};
	if (setgroups(1, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
		return 11;
	if (access(DOCKER_DEFAULT_SOCKET, R_OK | W_OK) == 0)
		return 12; /* we hold the group after all */
	if (docker_open(&d, NULL) != 0)
		return 13;
	int r = docker_image_id(&d, TEST_IMAGE, &id);
	free(id);
	docker_close(&d);
	if (r != 0)
		return 14;
	/* Another process of the same user (a step) reaches the broker's socket but gets no engine. */
	pid_t other = fork();
	if (other == 0) {
		signal(SIGPIPE, SIG_IGN); /* the broker may hang up before we write */
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un addr = {.sun_family = AF_UNIX};
		snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", docker_broker_socket());
		if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof(addr)) != 0)
			_exit(0);
		const char req[] = "GET /_ping HTTP/1.0\r\n\r\n";
		char buf[64];
		if (write(c, req, sizeof(req) - 1) < 0 || read(c, buf, sizeof(buf)) <= 0)
			_exit(0);
		_exit(1);
	}
	int ost;
	if (other < 0 || waitpid(other, &ost, 0) != other || !WIFEXITED(ost) || WEXITSTATUS(ost) != 0)
		return 17;
	docker_broker_stop();
	/* Gone and reaped: no child is left for the postgres we would become. */
	if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
		return 15;
	if (docker_open(&d, NULL) == 0)
		return 16;
	docker_close(&d);
	return 0;
}

static void
test_broker(void **state)
{
	NEED_ENGINE();
	struct passwd *pw = getpwnam("postgres");
	struct stat st;
	if (geteuid() != 0 || !pw || stat(DOCKER_DEFAULT_SOCKET, &st) != 0 || st.st_gid == pw->pw_gid) {
		fprintf(stderr, "skipped: needs root, a postgres user and a socket in another group\n");
		skip();
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(broker_child(pw->pw_uid, pw->pw_gid, st.st_gid));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_run_output_and_exit_code(void **state)
{
	NEED_ENGINE();
	struct docker d;
	struct unit_capture cap;
	char *argv[] = {"sh", "-c", "echo out; echo err >&2; echo \"FOO=$FOO\"; pwd; printf 'no newline'; exit 3", NULL};
	char *env[] = {"FOO=bar baz", NULL};
	struct docker_run_opts o = {
		.image = TEST_IMAGE, .argv = argv, .env = env, .workdir = "/tmp",
		.step = "unit", .owner = owner, .log_prefix = "[unit] ",
	};
	int code = -1;

	assert_int_equal(docker_open(&d, NULL), 0);
	unit_stderr_begin(&cap);
	int r = docker_run(&d, &o, &code);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(r, 0);
	assert_int_equal(code, 3);
	assert_non_null(strstr(err, "[unit] out\n"));
	assert_non_null(strstr(err, "[unit] err\n"));
	assert_non_null(strstr(err, "[unit] FOO=bar baz\n"));
	assert_non_null(strstr(err, "[unit] /tmp\n"));
	assert_non_null(strstr(err, "[unit] no newline\n"));
	/* Removed afterwards. */
	assert_int_equal(leftovers(&d), 0);
	free(err);
	docker_close(&d);
}

static void
test_run_missing_image(void **state)
{
	NEED_ENGINE();
	struct docker d;
	struct unit_capture cap;
	struct docker_run_opts o = {.image = "pgstash-unit/no-such-image:nope", .step = "unit", .owner = owner};
	int code = -1;

	assert_int_equal(docker_open(&d, NULL), 0);
	unit_stderr_begin(&cap);
	int r = docker_run(&d, &o, &code);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(r, -1);
	assert_non_null(strstr(err, "could not create a container from image"));
	assert_non_null(strstr(err, "(HTTP 404)"));
	assert_int_equal(leftovers(&d), 0);
	free(err);
	docker_close(&d);
}

static void
test_run_timeout(void **state)
{
	NEED_ENGINE();
	struct docker d;
	struct unit_capture cap;
	char *argv[] = {"sleep", "60", NULL};
	struct docker_run_opts o = {.image = TEST_IMAGE, .argv = argv, .step = "unit", .owner = owner,
				    .timeout_s = 1.5};
	int code = -1;

	assert_int_equal(docker_open(&d, NULL), 0);
	double t0 = log_now();
	unit_stderr_begin(&cap);
	int r = docker_run(&d, &o, &code);
	char *err = unit_stderr_end(&cap);
	double took = log_now() - t0;
	assert_int_equal(r, -1);
	assert_true(took < 20);
	assert_non_null(strstr(err, "timed out after 1.5 s"));
	assert_int_equal(leftovers(&d), 0);
	free(err);
	docker_close(&d);
}

/*
 * A child runs a step whose container prints "started" and sleeps; once the
 * line arrives the parent signals the child.  Returns the child's wait status.
 */
static int
run_child_and_signal(int sig, bool child_uses_sig)
{
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		close(pipefd[1]);
		if (child_uses_sig && sig_init() != 0)
			_exit(90);
		struct docker d;
		char *argv[] = {"sh", "-c", "echo started; exec sleep 60", NULL};
		struct docker_run_opts o = {.image = TEST_IMAGE, .argv = argv, .step = "unit",
					    .owner = owner, .log_prefix = "child: "};
		int code = -1;
		if (docker_open(&d, NULL) != 0)
			_exit(91);
		int r = docker_run(&d, &o, &code);
		docker_close(&d);
		_exit(r == -1 && sig_received == SIGTERM ? 42 : 92);
	}
	close(pipefd[1]);
	FILE *f = fdopen(pipefd[0], "r");
	char line[512];
	bool started = false;
	while (fgets(line, sizeof(line), f)) {
		fputs(line, stderr);
		if (strstr(line, "child: started")) {
			started = true;
			break;
		}
	}
	assert_true(started);
	kill(pid, sig);
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void
test_run_interrupted_by_signal(void **state)
{
	NEED_ENGINE();
	struct docker d;
	double t0 = log_now();
	int status = run_child_and_signal(SIGTERM, true);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 42);
	assert_true(log_now() - t0 < 30);
	assert_int_equal(docker_open(&d, NULL), 0);
	assert_int_equal(leftovers(&d), 0);
	docker_close(&d);
}

static void
test_remove_labelled_orphan(void **state)
{
	NEED_ENGINE();
	struct docker d;
	/* SIGKILL: nothing runs in the child, its container is left behind. */
	int status = run_child_and_signal(SIGKILL, false);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(docker_open(&d, NULL), 0);
	assert_int_equal(leftovers(&d), 1);
	assert_int_equal(leftovers(&d), 0);
	docker_close(&d);
}

int
main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_create_body_full),
		cmocka_unit_test(test_create_body_minimal),
		cmocka_unit_test(test_container_name),
		cmocka_unit_test(test_pick_api_version),
		cmocka_unit_test(test_demux_lines),
		cmocka_unit_test(test_demux_long_line),
		cmocka_unit_test(test_demux_bad_header),
		cmocka_unit_test(test_self_id),
		cmocka_unit_test(test_open_unreachable),
	};
	const struct CMUnitTest engine[] = {
		cmocka_unit_test(test_image_id),
		cmocka_unit_test(test_broker),
		cmocka_unit_test(test_run_output_and_exit_code),
		cmocka_unit_test(test_run_missing_image),
		cmocka_unit_test(test_run_timeout),
		cmocka_unit_test(test_run_interrupted_by_signal),
		cmocka_unit_test(test_remove_labelled_orphan),
	};
	int failed = cmocka_run_group_tests_name("docker", pure, NULL, NULL);
	failed += cmocka_run_group_tests_name("docker-engine", engine, engine_setup, engine_teardown);
	return failed ? 1 : 0;
}
