/*
 * docker — see docker.h.
 *
 * Every call goes through one curl multi handle so that waiting on the engine
 * (a step's log stream can last minutes) also polls the signal descriptor:
 * docker stop on the sidecar must stop the step container at once, not when
 * the migration happens to print its next line.
 */
#include "docker.h"
#include "docker_int.h"
#include "durable.h"
#include "http.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <cJSON.h>
#include <curl/curl.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A log line longer than this is relayed in pieces rather than buffered whole. */
#define LINE_MAX_BYTES (64 * 1024)
/* An API answer (not a log stream) larger than this is refused. */
#define BODY_MAX_BYTES (64u * 1024 * 1024)
#define CONNECT_TIMEOUT_MS 5000L
/* Creating and starting on fuse-overlayfs with a large image takes a while. */
#define CREATE_TIMEOUT_S 300.0
#define SHORT_TIMEOUT_S 60.0

enum call_outcome {
	CALL_OK,      /* an HTTP answer arrived (any status) */
	CALL_FAILED,  /* transport error, logged */
	CALL_SIGNAL,  /* a terminating signal arrived first */
	CALL_TIMEOUT, /* the deadline passed first */
};

/* One HTTP exchange with the engine. */
struct call {
	const char *method;
	const char *path;           /* after the API prefix, e.g. "/containers/create?name=x" */
	bool unversioned;           /* path is used as is (/_ping) */
	const char *json;           /* request body; NULL: none */
	struct docker_demux *demux; /* stream the answer through it instead of keeping it */
	double timeout_s;           /* <= 0: none */
	bool interruptible;         /* give up when a terminating signal arrives */

	enum call_outcome outcome;
	long status;
	struct strbuf body;
	char *api_version;          /* the API-Version answer header, if any */
	char errbuf[CURL_ERROR_SIZE];

	/* while in flight */
	struct http_xfer x;         /* the easy handle; done and result once curl finished it */
	struct curl_slist *headers;
	char *url;
	double deadline;
	bool headers_done;          /* the answer's header block has ended */
};

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct call *c = userdata;
	size_t n = size * nmemb;

	if (c->demux) {
		long status = 0;
		curl_easy_getinfo(c->x.easy, CURLINFO_RESPONSE_CODE, &status);
		/* A broken frame stream is reported once the call ends; keep reading. */
		if (status == 200 || status == 101) {
			docker_demux_feed(c->demux, ptr, n);
			return n;
		}
		/* An error answer: keep it for its message. */
	}
	if (c->body.len + n > BODY_MAX_BYTES)
		return 0; /* makes curl fail with CURLE_WRITE_ERROR */
	sb_appendn(&c->body, ptr, n);
	return n;
}

static size_t
on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct call *c = userdata;
	size_t n = size * nmemb;
	static const char name[] = "api-version:";

	if ((n == 2 && ptr[0] == '\r' && ptr[1] == '\n') || (n == 1 && ptr[0] == '\n')) {
		c->headers_done = true;
	} else if (n > sizeof(name) - 1 && strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
		const char *v = ptr + sizeof(name) - 1;
		const char *end = ptr + n;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && isspace((unsigned char)end[-1]))
			end--;
		free(c->api_version);
		c->api_version = xasprintf("%.*s", (int)(end - v), v);
	}
	return n;
}

/* Takes `c` out of the multi handle and frees what it held in flight; idempotent. */
static void
call_end(struct docker *d, struct call *c)
{
	if (c->x.easy) {
		curl_multi_remove_handle(d->multi, c->x.easy);
		curl_easy_cleanup(c->x.easy);
		c->x.easy = NULL;
	}
	curl_slist_free_all(c->headers);
	c->headers = NULL;
	free(c->url);
	c->url = NULL;
}

static void
call_free(struct docker *d, struct call *c)
{
	call_end(d, c);
	sb_free(&c->body);
	free(c->api_version);
	c->api_version = NULL;
}

/* ------------------------------------------------------------ the broker */

/*
 * The broker (docker_broker_start): the channel whose end (EOF) stops it, its
 * pid, and the private socket it listens on for us.  Process-wide state like
 * the signal state: there is one broker per process.
 */
static int broker_fd = -1;
static pid_t broker_pid = -1;
static char broker_path[108];
static char broker_dir[64];

#define BROKER_MAX_CONNS 32

/* In a relay: copies bytes both ways between a and b until either side ends. */
_Noreturn static void
relay(int a, int b)
{
	char buf[16384];
	struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (int k = 0; k < 2; k++) {
			if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(p[k].fd, buf, sizeof(buf));
			if (n <= 0 || durable_write_all(p[1 - k].fd, buf, (size_t)n) != 0)
				_exit(0);
		}
	}
}

/* In the broker: a connection from `client`, if it is our parent's, relayed to the engine by a child. */
static pid_t
broker_accept(int listener, pid_t parent, const char *socket_path)
{
	int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return -1;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	/* Only the process that started us: a step runs as the same user, but under another pid. */
	if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != parent) {
		close(c);
		return -1;
	}
	int e = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	if (e < 0 || connect(e, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		if (e >= 0)
			close(e);
		close(c);
		return -1;
	}
	pid_t pid = fork();
	if (pid == 0)
		relay(c, e);
	close(c);
	close(e);
	return pid;
}

/*
 * The broker's loop: relays our connections until the channel ends, then
 * kills and reaps its relays (so that none outlives it and is reparented to
 * the postgres we become) and exits 0.
 */
_Noreturn static void
broker_serve(int chan, int listener, pid_t parent, const char *socket_path)
{
	pid_t relays[BROKER_MAX_CONNS];
	int n = 0;
	struct pollfd p[2] = {{.fd = chan, .events = POLLIN}, {.fd = listener, .events = POLLIN}};
	for (;;) {
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break; /* EOF or anything else on the channel: we are done */
		for (int k = 0; k < n; k++) {
			if (waitpid(relays[k], NULL, WNOHANG) == relays[k])
				relays[k--] = relays[--n];
		}
		if ((p[1].revents & POLLIN) && n < BROKER_MAX_CONNS) {
			pid_t r = broker_accept(listener, parent, socket_path);
			if (r > 0)
				relays[n++] = r;
		}
	}
	for (int k = 0; k < n; k++)
		kill(relays[k], SIGKILL);
	for (int k = 0; k < n; k++)
		waitpid(relays[k], NULL, 0);
	_exit(0);
}

/* The broker child, as root: becomes uid/gid with the socket's group, listens, serves.  Never returns. */
_Noreturn static void
broker_child(int chan, int listener, pid_t parent, const char *socket_path, uid_t uid, gid_t gid,
             gid_t socket_gid)
{
	/* Not dumpable: a step running as the same user cannot ptrace its way to the group. */
	prctl(PR_SET_DUMPABLE, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	gid_t groups[1] = {socket_gid};
	if (setgroups(1, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0 || setuid(0) == 0)
		_exit(1);
	prctl(PR_SET_DUMPABLE, 0); /* setuid may have reset it */
	broker_serve(chan, listener, parent, socket_path);
}

int
docker_broker_start(const char *socket_path, uid_t uid, gid_t gid, gid_t socket_gid)
{
	int sv[2] = {-1, -1};
	snprintf(broker_dir, sizeof(broker_dir), "/tmp/pgstash-broker-XXXXXX");
	if (!mkdtemp(broker_dir) || chown(broker_dir, uid, gid) != 0) {
		log_error("could not create the Docker socket broker's directory: %s", strerror(errno));
		broker_dir[0] = '\0';
		return -1;
	}
	snprintf(broker_path, sizeof(broker_path), "%s/docker.sock", broker_dir);
	int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", broker_path);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    chown(broker_path, uid, gid) != 0 || listen(listener, 16) != 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		log_error("could not set up the Docker socket broker: %s", strerror(errno));
		goto fail;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		log_error("could not start the Docker socket broker: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0) {
		close(sv[0]);
		broker_child(sv[1], listener, parent, socket_path, uid, gid, socket_gid);
	}
	close(sv[1]);
	close(listener);
	broker_fd = sv[0];
	broker_pid = pid;
	return 0;
fail:
	if (listener >= 0)
		close(listener);
	if (sv[0] >= 0) {
		close(sv[0]);
		close(sv[1]);
	}
	unlink(broker_path);
	rmdir(broker_dir);
	broker_dir[0] = '\0';
	return -1;
}

const char *
docker_broker_socket(void)
{
	return broker_fd >= 0 ? broker_path : "";
}

void
docker_broker_stop(void)
{
	if (broker_fd < 0)
		return;
	close(broker_fd);
	broker_fd = -1;
	/* Reaped here: an unknown child's exit must not reach the postgres we become. */
	while (waitpid(broker_pid, NULL, 0) < 0 && errno == EINTR)
		;
	broker_pid = -1;
	unlink(broker_path);
	rmdir(broker_dir);
	broker_dir[0] = '\0';
}

/* Puts `c` in flight on the multi handle; 0, or -1 (logged, c->outcome CALL_FAILED). */
static int
call_begin(struct docker *d, struct call *c)
{
	CURL *easy;

	c->outcome = CALL_FAILED;
	c->status = 0;
	c->errbuf[0] = '\0';
	c->headers_done = false;
	c->deadline = c->timeout_s > 0 ? log_now() + c->timeout_s : 0;
	sb_free(&c->body);

	easy = curl_easy_init();
	if (!easy) {
		log_error("could not initialise libcurl");
		return -1;
	}
	c->url = xasprintf("http://localhost%s%s", c->unversioned ? "" : d->api_prefix, c->path);
	curl_easy_setopt(easy, CURLOPT_URL, c->url);
	/* We do not hold the socket's group when a broker runs: it relays for us. */
	curl_easy_setopt(easy, CURLOPT_UNIX_SOCKET_PATH, broker_fd >= 0 ? broker_path : d->socket_path);
	/* An http_proxy in the environment must not capture the socket's traffic. */
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, c);
	http_xfer_attach(&c->x, easy);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "pgstash");
	if (strcmp(c->method, "POST") == 0) {
		const char *body = c->json ? c->json : "";
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else if (strcmp(c->method, "GET") != 0) {
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, c->method);
	}
	if (c->json)
		c->headers = curl_slist_append(c->headers, "Content-Type: application/json");
	/* No "Expect: 100-continue" round trip for our small bodies. */
	c->headers = curl_slist_append(c->headers, "Expect:");
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, c->headers);

	if (curl_multi_add_handle(d->multi, easy) != CURLM_OK) {
		log_error("could not start a request to the Docker Engine");
		curl_easy_cleanup(easy);
		c->x.easy = NULL;
		return -1;
	}
	return 0;
}

/*
 * Drives every transfer on the multi handle until `c` has finished (or, with
 * until_headers, until its answer's headers are in), polling the signal
 * descriptor alongside when `c` is interruptible.  Sets c->outcome; on
 * CALL_OK c->status and c->body hold the answer.  Returns 0 for CALL_OK, -1
 * otherwise (only CALL_FAILED is logged here: a signal or a deadline is the
 * caller's story to tell).  Leaves `c` in flight: call_end it.
 */
static int
call_drive(struct docker *d, struct call *c, bool until_headers)
{
	char err[CURL_ERROR_SIZE];

	c->outcome = CALL_FAILED;
	if (!c->x.easy)
		return -1;
	switch (http_drive(d->multi, &c->x, until_headers ? &c->headers_done : NULL, c->deadline, c->interruptible, err,
	                   sizeof(err))) {
	case HTTP_FINISHED:
		break;
	case HTTP_SIGNAL:
		c->outcome = CALL_SIGNAL;
		return -1;
	case HTTP_TIMEOUT:
		c->outcome = CALL_TIMEOUT;
		return -1;
	case HTTP_ERROR:
		log_error("Docker Engine request %s %s failed: %s", c->method, c->path, err);
		return -1;
	}

	if (c->x.done && c->x.result != CURLE_OK) {
		log_error("cannot reach the Docker Engine at \"%s\": %s", d->socket_path,
			  c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->x.result));
		return -1;
	}
	curl_easy_getinfo(c->x.easy, CURLINFO_RESPONSE_CODE, &c->status);
	c->outcome = CALL_OK;
	return 0;
}

/* One whole exchange: begin, drive to the end, end.  As call_drive. */
static int
call_perform(struct docker *d, struct call *c)
{
	int ret = call_begin(d, c) == 0 ? call_drive(d, c, false) : -1;
	call_end(d, c);
	return ret;
}

/* The engine's explanation of a failed call: its JSON "message", else the body. */
static char *
api_message(const struct call *c)
{
	cJSON *root = cJSON_ParseWithLength(sb_str(&c->body), c->body.len);
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
	char *out;

	if (cJSON_IsString(msg) && msg->valuestring[0]) {
		out = xstrdup(msg->valuestring);
	} else {
		const char *b = sb_str(&c->body);
		size_t n = c->body.len;
		while (n > 0 && isspace((unsigned char)b[n - 1]))
			n--;
		out = n ? xasprintf("%.*s", (int)(n > 500 ? 500 : n), b) : xstrdup("no message");
	}
	cJSON_Delete(root);
	return out;
}

static void
log_api_error(const struct call *c, const char *what)
{
	char *msg = api_message(c);
	log_error("%s: %s (HTTP %ld)", what, msg, c->status);
	free(msg);
}

const char *
docker_pick_api_version(const char *engine)
{
	unsigned ours_major, ours_minor, major, minor;
	char tail;

	sscanf(DOCKER_API_VERSION, "%u.%u", &ours_major, &ours_minor);
	if (!engine || sscanf(engine, "%u.%u%c", &major, &minor, &tail) != 2)
		return DOCKER_API_VERSION;
	if (major < ours_major || (major == ours_major && minor < ours_minor))
		return engine;
	return DOCKER_API_VERSION;
}

int
docker_open(struct docker *d, const char *socket_path)
{
	struct call c = {.method = "GET", .path = "/_ping", .unversioned = true,
			 .timeout_s = SHORT_TIMEOUT_S};
	struct stat st;
	int ret = -1;

	memset(d, 0, sizeof(*d));
	d->socket_path = xstrdup(socket_path ? socket_path : DOCKER_DEFAULT_SOCKET);
	d->api_prefix = xstrdup("/v" DOCKER_API_VERSION);

	/* curl would only say "Couldn't connect to server": name the real cause. */
	if (stat(d->socket_path, &st) != 0) {
		log_error("cannot reach the Docker Engine at \"%s\": %s (is the socket mounted into the container?)",
			  d->socket_path, strerror(errno));
		goto cleanup;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_error("cannot reach the Docker Engine at \"%s\": not a socket", d->socket_path);
		goto cleanup;
	}
	/* With the broker, it holds the socket's group, not we. */
	if (broker_fd < 0 && access(d->socket_path, R_OK | W_OK) != 0) {
		int e = errno;
		log_error("cannot reach the Docker Engine at \"%s\": %s%s", d->socket_path, strerror(e),
			  e == EACCES ? " (this process needs the socket's group, or run the sidecar as root)" : "");
		goto cleanup;
	}

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("could not initialise libcurl");
		goto cleanup;
	}
	d->multi = curl_multi_init();
	if (!d->multi) {
		curl_global_cleanup();
		log_error("could not initialise libcurl");
		goto cleanup;
	}

	if (call_perform(d, &c) != 0)
		goto cleanup; /* logged: "cannot reach the Docker Engine at ..." */
	if (c.status != 200) {
		char *msg = api_message(&c);
		log_error("cannot reach the Docker Engine at \"%s\": /_ping answered HTTP %ld: %s",
			  d->socket_path, c.status, msg);
		free(msg);
		goto cleanup;
	}
	free(d->api_prefix);
	d->api_prefix = xasprintf("/v%s", docker_pick_api_version(c.api_version));
	log_debug("Docker Engine at \"%s\" answers, engine API %s, using %s", d->socket_path,
		  c.api_version ? c.api_version : "unknown", d->api_prefix + 1);
	ret = 0;

cleanup:
	call_free(d, &c);
	if (ret != 0)
		docker_close(d); /* nothing of a failed open is left for the caller to close */
	return ret;
}

void
docker_close(struct docker *d)
{
	if (d->multi) {
		curl_multi_cleanup(d->multi);
		curl_global_cleanup();
	}
	free(d->socket_path);
	free(d->api_prefix);
	memset(d, 0, sizeof(*d));
}

/*
 * Image references go into the URL path unescaped (the engine's router takes
 * "registry:5000/org/app:tag" with its slashes), so only their own characters
 * are allowed: nothing can add a query or another path.
 */
static bool
image_name_ok(const char *image)
{
	if (!image || !*image || strlen(image) > 512)
		return false;
	for (const char *p = image; *p; p++) {
		if (!isalnum((unsigned char)*p) && !strchr("._-/:@", *p))
			return false;
	}
	return image[0] != '/' && image[0] != '.' && !strstr(image, "..");
}

int
docker_image_id(struct docker *d, const char *image, char **id_out)
{
	struct call c = {.method = "GET", .timeout_s = SHORT_TIMEOUT_S, .interruptible = true};
	char *path = NULL;
	cJSON *root = NULL;
	int ret = -1;

	if (id_out)
		*id_out = NULL;
	if (!image_name_ok(image)) {
		log_error("invalid image name \"%s\"", image ? image : "");
		return -1;
	}
	path = xasprintf("/images/%s/json", image);
	c.path = path;
	if (call_perform(d, &c) != 0) {
		if (c.outcome == CALL_SIGNAL)
			log_debug("image lookup interrupted by signal %d", (int)sig_received);
		else if (c.outcome == CALL_TIMEOUT)
			log_error("the Docker Engine did not answer the lookup of image \"%s\" in time", image);
		goto cleanup;
	}
	if (c.status == 404) {
		log_error("image \"%s\" not found locally (pgstash does not pull unless asked)", image);
		ret = 1;
		goto cleanup;
	}
	if (c.status != 200) {
		char *what = xasprintf("could not inspect image \"%s\"", image);
		log_api_error(&c, what);
		free(what);
		goto cleanup;
	}
	root = cJSON_ParseWithLength(sb_str(&c.body), c.body.len);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "Id");
	if (!cJSON_IsString(id) || !id->valuestring[0]) {
		log_error("could not inspect image \"%s\": the Docker Engine's answer has no \"Id\"", image);
		goto cleanup;
	}
	if (id_out)
		*id_out = xstrdup(id->valuestring);
	ret = 0;

cleanup:
	cJSON_Delete(root);
	call_free(d, &c);
	free(path);
	return ret;
}

/* ---- which container are we? ---- */

static bool
is_hex_run(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
	}
	return true;
}

/*
 * The last 64-hex-digit token in s[0..n) delimited by '/', '-', '.', ':' or
 * the ends ("/docker/<id>", "docker-<id>.scope", "containers/<id>/hostname").
 */
static char *
find_id_token(const char *s, size_t n)
{
	char *found = NULL;

	for (size_t i = 0; i + 64 <= n; i++) {
		bool start_ok = i == 0 || strchr("/-.:", s[i - 1]);
		bool end_ok = i + 64 == n || strchr("/-.:", s[i + 64]);
		if (start_ok && end_ok && is_hex_run(s + i, 64)) {
			free(found);
			found = xasprintf("%.64s", s + i);
			i += 63;
		}
	}
	return found;
}

/*
 * Docker bind-mounts <data-root>/containers/<id>/{hostname,hosts,resolv.conf}
 * over the container's /etc files; mountinfo's fourth field (the mount's
 * root within its file system) names that directory whatever the cgroup
 * version or storage driver.
 */
static char *
id_from_mountinfo(const char *text)
{
	static const char *const targets[] = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"};
	struct strlist lines = {0};
	char *id = NULL;

	sl_split_lines(text, &lines);
	for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]) && !id; t++) {
		for (size_t i = 0; i < lines.n && !id; i++) {
			/* fields: id parent major:minor root mountpoint ... */
			char *save = NULL, *copy = xstrdup(lines.v[i]);
			const char *f[5];
			size_t nf = 0;
			for (char *w = strtok_r(copy, " ", &save); w && nf < 5; w = strtok_r(NULL, " ", &save))
				f[nf++] = w;
			if (nf == 5 && strcmp(f[4], targets[t]) == 0)
				id = find_id_token(f[3], strlen(f[3]));
			free(copy);
		}
	}
	sl_free(&lines);
	return id;
}

/* cgroup v1 paths ("/docker/<id>", "/system.slice/docker-<id>.scope"); v2 with a private namespace shows "0::/". */
static char *
id_from_cgroup(const char *text)
{
	struct strlist lines = {0};
	char *id = NULL;

	sl_split_lines(text, &lines);
	for (size_t i = 0; i < lines.n && !id; i++) {
		/* hierarchy-id:controllers:path */
		const char *path = strchr(lines.v[i], ':');
		if (path)
			path = strchr(path + 1, ':');
		if (path)
			id = find_id_token(path + 1, strlen(path + 1));
	}
	sl_free(&lines);
	return id;
}

/* Docker's default host name is the short id; a --hostname or host network gives something else. */
static char *
id_from_hostname(const char *text)
{
	size_t n = strcspn(text, "\r\n");
	if (n == 12 && is_hex_run(text, 12))
		return xasprintf("%.12s", text);
	return NULL;
}

int
docker_self_container_id_from(const char *mountinfo, const char *cgroup, const char *hostname,
			      char **id_out)
{
	char *(*const parse[3])(const char *) = {id_from_mountinfo, id_from_cgroup, id_from_hostname};
	const char *paths[3] = {mountinfo, cgroup, hostname};

	*id_out = NULL;
	for (int i = 0; i < 3; i++) {
		if (!paths[i])
			continue;
		char *text = read_file(paths[i], NULL);
		if (!text) {
			log_debug("could not read \"%s\": %s", paths[i], strerror(errno));
			continue;
		}
		char *id = parse[i](text);
		free(text);
		if (id) {
			log_debug("own container id %s (from \"%s\")", id, paths[i]);
			*id_out = id;
			return 0;
		}
	}
	return -1;
}

int
docker_self_container_id(char **id_out)
{
	return docker_self_container_id_from("/proc/self/mountinfo", "/proc/self/cgroup",
					     "/proc/sys/kernel/hostname", id_out);
}

/* ---- the multiplexed log stream ---- */

static void
line_emit(struct docker_demux *m, int s, const char *p, size_t n)
{
	if (n > 0 && p[n - 1] == '\r')
		n--;
	if (m->fn)
		m->fn(m->arg, s, p, n);
}

static void
line_bytes(struct docker_demux *m, int s, const char *p, size_t n)
{
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t chunk = nl ? (size_t)(nl - p) : n;

		if (m->line_len[s] == 0 && nl) {
			line_emit(m, s, p, chunk); /* the common case: no copy */
		} else {
			if (m->line_len[s] + chunk > m->line_cap[s]) {
				size_t cap = m->line_cap[s] ? m->line_cap[s] : 256;
				while (cap < m->line_len[s] + chunk)
					cap *= 2;
				m->line[s] = xrealloc(m->line[s], cap);
				m->line_cap[s] = cap;
			}
			memcpy(m->line[s] + m->line_len[s], p, chunk);
			m->line_len[s] += chunk;
			if (nl || m->line_len[s] >= LINE_MAX_BYTES) {
				line_emit(m, s, m->line[s], m->line_len[s]);
				m->line_len[s] = 0;
			}
		}
		p += chunk;
		n -= chunk;
		if (nl) {
			p++;
			n--;
		}
	}
}

int
docker_demux_feed(struct docker_demux *m, const char *buf, size_t n)
{
	while (n > 0) {
		if (m->bad)
			return -1;
		if (m->left == 0) {
			size_t take = 8 - m->hdr_len < n ? 8 - m->hdr_len : n;
			memcpy(m->hdr + m->hdr_len, buf, take);
			m->hdr_len += take;
			buf += take;
			n -= take;
			if (m->hdr_len < 8)
				break;
			m->hdr_len = 0;
			/* stdin 0, stdout 1, stderr 2, systemerr 3 (newer engines) */
			if (m->hdr[0] > 3 || m->hdr[1] || m->hdr[2] || m->hdr[3]) {
				m->bad = true;
				return -1;
			}
			m->stream = m->hdr[0] >= 2 ? 2 : 1;
			m->left = (size_t)m->hdr[4] << 24 | (size_t)m->hdr[5] << 16 |
				  (size_t)m->hdr[6] << 8 | (size_t)m->hdr[7];
			continue;
		}
		size_t take = m->left < n ? m->left : n;
		line_bytes(m, m->stream, buf, take);
		m->left -= take;
		buf += take;
		n -= take;
	}
	return m->bad ? -1 : 0;
}

void
docker_demux_finish(struct docker_demux *m)
{
	for (int s = 1; s <= 2; s++) {
		if (m->line_len[s] > 0) {
			line_emit(m, s, m->line[s], m->line_len[s]);
			m->line_len[s] = 0;
		}
	}
}

void
docker_demux_free(struct docker_demux *m)
{
	for (int s = 0; s < 3; s++) {
		free(m->line[s]);
		m->line[s] = NULL;
		m->line_len[s] = m->line_cap[s] = 0;
	}
}

/* ---- running a step container ---- */

static void
add_string_array(cJSON *obj, const char *key, char *const *v)
{
	cJSON *arr = cJSON_AddArrayToObject(obj, key);
	for (size_t i = 0; v[i]; i++)
		cJSON_AddItemToArray(arr, cJSON_CreateString(v[i]));
}

char *
docker_create_body(const struct docker_run_opts *o)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *labels, *host;
	char *json, *out;

	cJSON_AddStringToObject(root, "Image", o->image);
	if (o->argv)
		add_string_array(root, "Cmd", o->argv);
	if (o->env)
		add_string_array(root, "Env", o->env);
	if (o->workdir)
		cJSON_AddStringToObject(root, "WorkingDir", o->workdir);
	if (o->user)
		cJSON_AddStringToObject(root, "User", o->user);
	/* Tty off: the log stream is multiplexed, and stdout and stderr stay apart. */
	cJSON_AddFalseToObject(root, "Tty");
	cJSON_AddFalseToObject(root, "OpenStdin");
	cJSON_AddFalseToObject(root, "AttachStdin");
	cJSON_AddTrueToObject(root, "AttachStdout");
	cJSON_AddTrueToObject(root, "AttachStderr");
	labels = cJSON_AddObjectToObject(root, "Labels");
	cJSON_AddStringToObject(labels, DOCKER_LABEL_STEP, o->step);
	if (o->owner)
		cJSON_AddStringToObject(labels, DOCKER_LABEL_OWNER, o->owner);

	host = cJSON_AddObjectToObject(root, "HostConfig");
	if (o->network_mode)
		cJSON_AddStringToObject(host, "NetworkMode", o->network_mode);
	/*
	 * A step that joins a container's network joins its pid namespace too,
	 * so that it dies with it: when the namespace's init ends (`docker rm
	 * -f` of the sidecar, which leaves pgstash no chance to remove the
	 * step), the kernel kills every process in it.  A shared network alone
	 * would keep the step running.
	 */
	if (o->network_mode && strncmp(o->network_mode, "container:", 10) == 0)
		cJSON_AddStringToObject(host, "PidMode", o->network_mode);
	if (o->volumes_from) {
		char *const vf[] = {(char *)o->volumes_from, NULL};
		add_string_array(host, "VolumesFrom", vf);
	}
	/*
	 * The engine removes the container once it has exited, also when we are
	 * gone.  Its exit code is not lost: docker_run asks for it (wait,
	 * condition=next-exit) before the start, as `docker run --rm` does.
	 */
	cJSON_AddTrueToObject(host, "AutoRemove");

	json = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!json) {
		log_error("out of memory building a JSON body");
		abort();
	}
	/* cJSON's allocator is malloc, but hand back memory from ours to keep ownership plain. */
	out = xstrdup(json);
	cJSON_free(json);
	return out;
}

char *
docker_container_name(const char *step, const char *suffix)
{
	struct strbuf sb = {0};
	size_t n = 0;

	sb_append(&sb, "pgstash-");
	for (const char *p = step; *p && n < 40; p++, n++)
		sb_appendc(&sb, isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-' ? *p : '_');
	sb_appendc(&sb, '-');
	sb_append(&sb, suffix);
	return sb_take(&sb);
}

static void
random_suffix(char out[9])
{
	unsigned char r[4];

	if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		unsigned v = (unsigned)ts.tv_nsec ^ (unsigned)getpid() << 16;
		memcpy(r, &v, sizeof(r));
	}
	hex_encode(r, sizeof(r), out);
}

struct relay {
	const char *prefix;
};

static void
relay_line(void *arg, int stream, const char *line, size_t len)
{
	const struct relay *r = arg;
	(void)stream;
	/* NUL bytes and all; the lock keeps the line whole against other stdio writers here. */
	flockfile(stderr);
	fputs(r->prefix, stderr);
	fwrite(line, 1, len, stderr);
	putc_unlocked('\n', stderr);
	funlockfile(stderr);
}

/* Kills (if running) and removes container `id` with its anonymous volumes; 0 or -1 (logged). */
static int
remove_container(struct docker *d, const char *id)
{
	char *path = xasprintf("/containers/%s?force=1&v=1", id);
	/* Not interruptible: this is the cleanup a signal asks for. */
	struct call c = {.method = "DELETE", .path = path, .timeout_s = SHORT_TIMEOUT_S};
	int ret = -1;

	if (call_perform(d, &c) != 0) {
		if (c.outcome == CALL_TIMEOUT)
			log_error("the Docker Engine did not remove container %.12s in time", id);
		goto cleanup;
	}
	/* 404: AutoRemove was first; 409: its removal is under way, and we wait for it to end. */
	if (c.status == 409) {
		call_free(d, &c);
		free(path);
		path = xasprintf("/containers/%s/wait?condition=removed", id);
		c = (struct call){.method = "POST", .path = path, .timeout_s = SHORT_TIMEOUT_S};
		if (call_perform(d, &c) != 0) {
			if (c.outcome == CALL_TIMEOUT)
				log_error("the Docker Engine did not remove container %.12s in time", id);
			goto cleanup;
		}
		if (c.status == 200)
			c.status = 204;
	}
	if (c.status != 204 && c.status != 404) {
		char *what = xasprintf("could not remove container %.12s", id);
		log_api_error(&c, what);
		free(what);
		goto cleanup;
	}
	log_debug("removed container %.12s", id);
	ret = 0;

cleanup:
	call_free(d, &c);
	free(path);
	return ret;
}

/* Logs a failed call of docker_run's: the engine's message, or what cut it short. */
static void
run_call_failed(const struct docker_run_opts *o, const struct call *c, const char *what, const char *id)
{
	if (c->outcome == CALL_OK) {
		char *msg = xasprintf("step \"%s\": could not %s container %.12s", o->step, what, id);
		log_api_error(c, msg);
		free(msg);
	} else if (c->outcome == CALL_SIGNAL) {
		log_info("step \"%s\": signal %d received, stopping container %.12s", o->step,
			 (int)sig_received, id);
	} else if (c->outcome == CALL_TIMEOUT) {
		log_error("step \"%s\" timed out after %g s; stopping container %.12s", o->step,
			  o->timeout_s, id);
	}
}

/*
 * Creates the step's container.  Returns its id (malloc'ed), or NULL (logged).
 * Not interruptible: cut short, the engine may still create the container
 * and we would not know its id.  Signals are looked at as soon as it answers.
 */
static char *
create_container(struct docker *d, const struct docker_run_opts *o)
{
	char suffix[9];
	random_suffix(suffix);
	char *name = docker_container_name(o->step, suffix);
	char *body = docker_create_body(o);
	char *path = xasprintf("/containers/create?name=%s", name);
	struct call c = {.method = "POST", .path = path, .json = body, .timeout_s = CREATE_TIMEOUT_S};
	cJSON *root = NULL;
	char *id = NULL;

	if (call_perform(d, &c) != 0) {
		if (c.outcome == CALL_TIMEOUT)
			log_error("step \"%s\": the Docker Engine did not create the container in time (%s)",
				  o->step, name);
		goto cleanup;
	}
	if (c.status != 201) {
		char *what = xasprintf("step \"%s\": could not create a container from image \"%s\"",
				       o->step, o->image);
		log_api_error(&c, what);
		free(what);
		goto cleanup;
	}
	root = cJSON_ParseWithLength(sb_str(&c.body), c.body.len);
	const cJSON *jid = cJSON_GetObjectItemCaseSensitive(root, "Id");
	if (!cJSON_IsString(jid) || !jid->valuestring[0] ||
	    !is_hex_run(jid->valuestring, strlen(jid->valuestring))) {
		log_error("step \"%s\": the Docker Engine's answer to create has no container \"Id\"", o->step);
		goto cleanup;
	}
	id = xstrdup(jid->valuestring);
	const cJSON *warnings = cJSON_GetObjectItemCaseSensitive(root, "Warnings");
	const cJSON *w;
	cJSON_ArrayForEach(w, warnings) {
		if (cJSON_IsString(w) && w->valuestring[0])
			log_warning("step \"%s\": Docker: %s", o->step, w->valuestring);
	}
	log_debug("step \"%s\": created container %.12s (%s) from image \"%s\"", o->step, id, name, o->image);
cleanup:
	cJSON_Delete(root);
	call_free(d, &c);
	free(path);
	free(body);
	free(name);
	return id;
}

/*
 * Attaches to container `id` (the call stays in flight in *attach), then
 * starts it.  0, or -1 (logged).
 *
 * Attached before the start, as `docker run` does: the attach stream carries
 * the container's stdout/stderr from its first byte to its exit.  The logs
 * endpoint would not: with follow=1 it may end before the last, unterminated
 * line is written to the log file, and it depends on the daemon's log
 * driver.  The engine hijacks the connection and streams until the
 * container's output closes.
 */
static int
attach_and_start(struct docker *d, const struct docker_run_opts *o, const char *id, struct call *attach)
{
	if (call_begin(d, attach) != 0)
		return -1;
	if (call_drive(d, attach, true) != 0 || (attach->status != 200 && attach->status != 101)) {
		run_call_failed(o, attach, "attach to", id);
		return -1;
	}
	char *path = xasprintf("/containers/%s/start", id);
	struct call c = {.method = "POST", .path = path, .timeout_s = CREATE_TIMEOUT_S, .interruptible = true};
	int ret = 0;
	if (call_perform(d, &c) != 0 || (c.status != 204 && c.status != 304)) {
		run_call_failed(o, &c, "start", id);
		ret = -1;
	}
	call_free(d, &c);
	free(path);
	return ret;
}

/* Relays the output (through on_body and the demux) until the container's streams close.  0 or -1 (logged). */
static int
follow_output(struct docker *d, const struct docker_run_opts *o, const char *id, struct call *attach,
              struct docker_demux *demux)
{
	if (call_drive(d, attach, false) != 0) {
		if (attach->outcome != CALL_FAILED) {
			run_call_failed(o, attach, "follow", id);
			return -1;
		}
		log_warning("step \"%s\": lost the output of container %.12s", o->step, id);
	}
	call_end(d, attach);
	docker_demux_finish(demux);
	if (demux->bad)
		log_warning("step \"%s\": the output of container %.12s was not a multiplexed stream; the rest of it was dropped",
			    o->step, id);
	return 0;
}

/*
 * Registers a wait for container `id`'s next exit (the call stays in flight
 * in *wait), before it starts: with AutoRemove the container may be gone
 * by the time a later wait asked.  The engine answers the headers once the
 * waiter is in place.  0, or -1 (logged).
 */
static int
begin_wait(struct docker *d, const struct docker_run_opts *o, const char *id, struct call *wait)
{
	if (call_begin(d, wait) != 0)
		return -1;
	if (call_drive(d, wait, true) != 0 || wait->status != 200) {
		run_call_failed(o, wait, "wait for", id);
		return -1;
	}
	return 0;
}

/* Ends the wait begin_wait began, until `deadline` (0: none).  0 with *exit_code, or -1 (logged). */
static int
wait_container(struct docker *d, const struct docker_run_opts *o, const char *id, struct call *wait, double deadline,
               int *exit_code)
{
	cJSON *root = NULL;
	int ret = -1;

	/* The step's time limit counts from its start, not from this call. */
	wait->deadline = deadline;
	if (call_drive(d, wait, false) != 0 || wait->status != 200) {
		run_call_failed(o, wait, "wait for", id);
		goto cleanup;
	}
	root = cJSON_ParseWithLength(sb_str(&wait->body), wait->body.len);
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(root, "StatusCode");
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "Error");
	const cJSON *errmsg = cJSON_GetObjectItemCaseSensitive(err, "Message");
	if (cJSON_IsString(errmsg) && errmsg->valuestring[0]) {
		log_error("step \"%s\": waiting for container %.12s failed: %s", o->step, id, errmsg->valuestring);
		goto cleanup;
	}
	if (!cJSON_IsNumber(code)) {
		log_error("step \"%s\": the Docker Engine's answer to wait has no \"StatusCode\"", o->step);
		goto cleanup;
	}
	*exit_code = code->valueint;
	log_debug("step \"%s\": container %.12s exited with status %d", o->step, id, *exit_code);
	ret = 0;
cleanup:
	cJSON_Delete(root);
	return ret;
}

int
docker_run(struct docker *d, const struct docker_run_opts *o, int *exit_code)
{
	struct relay relay = {.prefix = o->log_prefix ? o->log_prefix : ""};
	struct docker_demux demux = {.fn = relay_line, .arg = &relay};
	struct call attach = {0}, wait = {0};
	char *attach_path = NULL, *wait_path = NULL, *id = NULL;
	bool ran = false;
	int ret = -1;

	if (!o->step || !*o->step) {
		log_error("a step container needs a step name");
		return -1;
	}
	if (!image_name_ok(o->image)) {
		log_error("step \"%s\": invalid image name \"%s\"", o->step, o->image ? o->image : "");
		return -1;
	}
	id = create_container(d, o);
	if (!id)
		goto cleanup;
	sig_drain();
	if (sig_received) {
		log_info("step \"%s\": signal %d received, removing container %.12s", o->step,
			 (int)sig_received, id);
		goto cleanup;
	}
	/* The step's time limit counts from here: creation time is the engine's, not the step's. */
	double deadline = o->timeout_s > 0 ? log_now() + o->timeout_s : 0;
	wait_path = xasprintf("/containers/%s/wait?condition=next-exit", id);
	wait = (struct call){.method = "POST", .path = wait_path, .interruptible = true, .timeout_s = o->timeout_s};
	attach_path = xasprintf("/containers/%s/attach?stream=1&stdout=1&stderr=1", id);
	attach = (struct call){.method = "POST", .path = attach_path, .demux = &demux, .interruptible = true,
			       .timeout_s = o->timeout_s};
	if (begin_wait(d, o, id, &wait) != 0 || attach_and_start(d, o, id, &attach) != 0 ||
	    follow_output(d, o, id, &attach, &demux) != 0)
		goto cleanup;
	ran = wait_container(d, o, id, &wait, deadline, exit_code) == 0;

cleanup:
	/* The attach and wait connections go first: removing the container ends them anyway. */
	call_free(d, &attach);
	call_free(d, &wait);
	/*
	 * Always removed, with force: a killed migration leaves a cluster
	 * nobody keeps, so a grace period would only delay the sidecar's own
	 * shutdown (docker stop gives it ten seconds in all).
	 */
	if (id && remove_container(d, id) != 0)
		ran = false;
	if (ran && !sig_received)
		ret = 0;
	else if (ran)
		log_debug("step \"%s\": finished, but a signal arrived meanwhile", o->step);
	docker_demux_free(&demux);
	free(id);
	free(attach_path);
	free(wait_path);
	return ret;
}

int
docker_remove_labelled(struct docker *d, const char *label)
{
	struct call c = {.method = "GET", .timeout_s = SHORT_TIMEOUT_S};
	cJSON *filter = cJSON_CreateObject();
	cJSON *root = NULL;
	char *fjson = NULL, *path = NULL, *esc = NULL;
	int removed = 0, ret = -1;

	char *const labels[] = {(char *)label, NULL};
	add_string_array(filter, "label", labels);
	fjson = cJSON_PrintUnformatted(filter);
	esc = fjson ? curl_easy_escape(NULL, fjson, 0) : NULL;
	if (!esc) {
		log_error("out of memory building a container filter");
		goto cleanup;
	}
	path = xasprintf("/containers/json?all=1&filters=%s", esc);
	c.path = path;
	if (call_perform(d, &c) != 0)
		goto cleanup;
	if (c.status != 200) {
		char *what = xasprintf("could not list containers labelled \"%s\"", label);
		log_api_error(&c, what);
		free(what);
		goto cleanup;
	}
	root = cJSON_ParseWithLength(sb_str(&c.body), c.body.len);
	if (!cJSON_IsArray(root)) {
		log_error("could not list containers labelled \"%s\": the Docker Engine's answer is not a list", label);
		goto cleanup;
	}
	const cJSON *item;
	cJSON_ArrayForEach(item, root) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "Id");
		if (!cJSON_IsString(id) || !is_hex_run(id->valuestring, strlen(id->valuestring)))
			continue;
		const cJSON *names = cJSON_GetObjectItemCaseSensitive(item, "Names");
		const cJSON *first = cJSON_GetArrayItem(names, 0);
		const char *nm = cJSON_IsString(first) ? first->valuestring : "";
		if (remove_container(d, id->valuestring) == 0) {
			log_info("removed leftover container %.12s %s (label \"%s\")", id->valuestring,
				 nm[0] == '/' ? nm + 1 : nm, label);
			removed++;
		}
	}
	ret = removed; /* a container that could not be removed is logged */

cleanup:
	cJSON_Delete(root);
	cJSON_Delete(filter);
	curl_free(esc);
	cJSON_free(fjson);
	call_free(d, &c);
	free(path);
	return ret;
}
