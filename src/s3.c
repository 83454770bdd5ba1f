/*
 * s3 — a small client of the S3 API over libcurl: one `struct s3` per
 * session (signing parameters and a curl multi handle whose connection cache
 * serves the session's requests), one `struct s3_req` per exchange.
 * s3_perform drives it through http_drive, retries what S3 asks clients to
 * retry, and can stream an answer into a file while digesting it.
 *
 * Requests are signed by libcurl (CURLOPT_AWS_SIGV4).  libcurl 7.88 signs the
 * path and the query exactly as given, so callers send both already in
 * canonical form (s3_uri_encode, query parameters sorted), and every request
 * carries x-amz-content-sha256 with the real payload digest: without it
 * libcurl would sign a streamed body as the empty string.
 *
 * Also the pure parts of the protocol: S3's URI encoding, the XML answers
 * (text of an element, a ListObjectsV2 page) and ISO 8601 times.
 *
 * Not for: what objects mean (remote.c: the fleet protocol), settings.
 */
#include "s3.h"
#include "digest.h"
#include "http.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Connecting never waits longer than this, whatever timeout_s says. */
#define CONNECT_TIMEOUT_MAX_S 10L
/* An answer kept in memory (a meta, an XML document) larger than this is refused. */
#define BODY_MAX_BYTES (4u * 1024 * 1024)
#define ATTEMPTS 3

char *
s3_uri_encode(const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	struct strbuf sb = {0};

	sb_append(&sb, "");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~' || (keep_slash && *p == '/')) {
			sb_appendc(&sb, (char)*p);
		} else {
			sb_appendc(&sb, '%');
			sb_appendc(&sb, hex[*p >> 4]);
			sb_appendc(&sb, hex[*p & 15]);
		}
	}
	return sb_take(&sb);
}

static void
utf8_append(struct strbuf *sb, unsigned long cp)
{
	if (cp < 0x80) {
		sb_appendc(sb, (char)cp);
	} else if (cp < 0x800) {
		sb_appendc(sb, (char)(0xc0 | (cp >> 6)));
		sb_appendc(sb, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		sb_appendc(sb, (char)(0xe0 | (cp >> 12)));
		sb_appendc(sb, (char)(0x80 | ((cp >> 6) & 0x3f)));
		sb_appendc(sb, (char)(0x80 | (cp & 0x3f)));
	} else {
		sb_appendc(sb, (char)(0xf0 | (cp >> 18)));
		sb_appendc(sb, (char)(0x80 | ((cp >> 12) & 0x3f)));
		sb_appendc(sb, (char)(0x80 | ((cp >> 6) & 0x3f)));
		sb_appendc(sb, (char)(0x80 | (cp & 0x3f)));
	}
}

/* Decodes XML character data [p, end); NULL when an entity is malformed or yields NUL. */
static char *
xml_decode(const char *p, const char *end)
{
	static const struct {
		const char *name;
		char c;
	} named[] = {{"lt;", '<'}, {"gt;", '>'}, {"amp;", '&'}, {"quot;", '"'}, {"apos;", '\''}};
	struct strbuf sb = {0};

	sb_append(&sb, "");
	while (p < end) {
		if (*p == '\0')
			goto bad;
		if (*p != '&') {
			sb_appendc(&sb, *p++);
			continue;
		}
		p++;
		size_t i;
		for (i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
			size_t l = strlen(named[i].name);
			if ((size_t)(end - p) >= l && memcmp(p, named[i].name, l) == 0) {
				sb_appendc(&sb, named[i].c);
				p += l;
				break;
			}
		}
		if (i < sizeof(named) / sizeof(named[0]))
			continue;
		if (p >= end || *p != '#')
			goto bad;
		p++;
		int base = 10;
		if (p < end && (*p == 'x' || *p == 'X')) {
			base = 16;
			p++;
		}
		unsigned long cp = 0;
		int digits = 0;
		while (p < end && *p != ';') {
			int v;
			if (*p >= '0' && *p <= '9')
				v = *p - '0';
			else if (base == 16 && *p >= 'a' && *p <= 'f')
				v = *p - 'a' + 10;
			else if (base == 16 && *p >= 'A' && *p <= 'F')
				v = *p - 'A' + 10;
			else
				goto bad;
			cp = cp * (unsigned long)base + (unsigned long)v;
			if (++digits > 8 || cp > 0x10ffff)
				goto bad;
			p++;
		}
		if (p >= end || digits == 0 || cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
			goto bad;
		p++; /* ';' */
		utf8_append(&sb, cp);
	}
	return sb_take(&sb);
bad:
	sb_free(&sb);
	return NULL;
}

/*
 * Finds the first element <tag> in [p, end): *ib and *ie bound its content.
 * Returns the position after its end tag, or NULL.  S3's documents never nest
 * an element in one of the same name, so the first end tag is the one.
 */
const char *
s3_xml_find(const char *p, const char *end, const char *tag, const char **ib, const char **ie)
{
	size_t tl = strlen(tag);

	while (p < end) {
		const char *lt = memchr(p, '<', (size_t)(end - p));
		if (!lt)
			return NULL;
		const char *name = lt + 1;
		if ((size_t)(end - name) > tl && memcmp(name, tag, tl) == 0) {
			const char *after = name + tl;
			if (*after == '>' || *after == ' ' || *after == '\t' || *after == '\r' || *after == '\n' ||
			    *after == '/') {
				const char *gt = memchr(after, '>', (size_t)(end - after));
				if (!gt)
					return NULL;
				if (gt[-1] == '/') { /* <tag/> or <tag a="b"/> */
					*ib = *ie = gt + 1;
					return gt + 1;
				}
				const char *c = gt + 1;
				while (c < end) {
					const char *l2 = memchr(c, '<', (size_t)(end - c));
					if (!l2)
						return NULL;
					if ((size_t)(end - l2) >= tl + 3 && l2[1] == '/' && memcmp(l2 + 2, tag, tl) == 0 &&
					    l2[2 + tl] == '>') {
						*ib = gt + 1;
						*ie = l2;
						return l2 + tl + 3;
					}
					c = l2 + 1;
				}
				return NULL;
			}
		}
		p = lt + 1;
	}
	return NULL;
}

char *
s3_xml_text(const char *xml, size_t len, const char *tag)
{
	const char *b, *e;
	if (!xml || !s3_xml_find(xml, xml + len, tag, &b, &e))
		return NULL;
	return xml_decode(b, e);
}

int64_t
s3_parse_time(const char *iso)
{
	int y, mo, d, h, mi, s, n = 0;
	struct tm tm = {0};

	if (!iso || sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 || n != 19)
		return -1;
	const char *rest = iso + n;
	if (*rest == '.') {
		rest++;
		if (!isdigit((unsigned char)*rest))
			return -1;
		while (isdigit((unsigned char)*rest))
			rest++;
	}
	if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0)
		return -1;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	time_t t = timegm(&tm);
	return t == (time_t)-1 ? -1 : (int64_t)t;
}

void
s3_objects_free(struct s3_object *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

int
s3_parse_list(const char *xml, size_t len, struct s3_object **v, size_t *n, bool *truncated,
                  char **next_token)
{
	const char *end = xml + len, *b, *e;

	free(*next_token);
	*next_token = NULL;
	*truncated = false;
	if (!s3_xml_find(xml, end, "ListBucketResult", &b, &e))
		return -1;
	end = e;
	char *tr = s3_xml_text(b, (size_t)(e - b), "IsTruncated");
	*truncated = tr && strcmp(tr, "true") == 0;
	free(tr);
	if (*truncated) {
		*next_token = s3_xml_text(b, (size_t)(e - b), "NextContinuationToken");
		if (!*next_token || !**next_token)
			return -1; /* a truncated page without a token would loop forever */
	}
	const char *p = b, *cb, *ce;
	while ((p = s3_xml_find(p, end, "Contents", &cb, &ce)) != NULL) {
		size_t cl = (size_t)(ce - cb);
		char *name = s3_xml_text(cb, cl, "Key");
		char *size = s3_xml_text(cb, cl, "Size");
		char *mod = s3_xml_text(cb, cl, "LastModified");
		uint64_t sz;
		int64_t mt = s3_parse_time(mod);
		int ok = name && *name && parse_u64(size, &sz) == 0 && mt >= 0;
		if (ok) {
			*v = xrealloc(*v, (*n + 1) * sizeof(**v));
			(*v)[*n] = (struct s3_object){.name = name, .size = sz, .mtime = mt};
			(*n)++;
			name = NULL;
		}
		free(name);
		free(size);
		free(mod);
		if (!ok)
			return -1;
	}
	return 0;
}


static void
req_reset_answer(struct s3_req *rq)
{
	rq->outcome = S3_OUT_FAILED;
	rq->status = 0;
	sb_free(&rq->resp);
	rq->out_bytes = 0;
	rq->out_overflow = false;
	rq->out_errno = 0;
	free(rq->etag);
	free(rq->last_modified);
	rq->etag = rq->last_modified = NULL;
	rq->result = CURLE_OK;
	rq->errbuf[0] = '\0';
	rq->sent = 0;
}

void
s3_req_free(struct s3_req *rq)
{
	sb_free(&rq->resp);
	free(rq->etag);
	free(rq->last_modified);
	rq->etag = rq->last_modified = NULL;
}

void
s3_close(struct s3 *s)
{
	if (s->multi)
		curl_multi_cleanup(s->multi);
	if (s->global)
		curl_global_cleanup();
	free(s->label);
	free(s->base);
	free(s->sigv4);
	memset(s, 0, sizeof(*s));
}

int
s3_open(struct s3 *s, const struct s3_target *t)
{
	memset(s, 0, sizeof(*s));
	s->label = xstrdup(t->label);
	s->base = xstrdup(t->base);
	s->sigv4 = xasprintf("aws:amz:%s:s3", t->region);
	s->access_key = t->access_key;
	s->secret_key = t->secret_key;
	s->timeout_s = t->timeout_s;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_warning("could not initialise libcurl");
		s3_close(s);
		return -1;
	}
	s->global = true;
	s->multi = curl_multi_init();
	if (!s->multi) {
		log_warning("could not initialise libcurl");
		s3_close(s);
		return -1;
	}
	return 0;
}

static size_t
on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct s3_req *rq = userdata;
	size_t want = size * nitems;

	if (rq->body_fd >= 0) {
		uint64_t left = rq->body_size - rq->sent;
		if (want > left)
			want = (size_t)left;
		if (want == 0)
			return 0;
		ssize_t n;
		do
			n = pread(rq->body_fd, buf, want, (off_t)(rq->body_off + rq->sent));
		while (n < 0 && errno == EINTR);
		if (n <= 0) {
			rq->out_errno = n < 0 ? errno : EIO;
			return CURL_READFUNC_ABORT;
		}
		rq->sent += (uint64_t)n;
		return (size_t)n;
	}
	size_t left = rq->body_len - (size_t)rq->sent;
	if (want > left)
		want = left;
	memcpy(buf, rq->body + rq->sent, want);
	rq->sent += want;
	return want;
}

static int
on_seek(void *userdata, curl_off_t offset, int origin)
{
	struct s3_req *rq = userdata;
	uint64_t size = rq->body_fd >= 0 ? rq->body_size : rq->body_len;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > size)
		return CURL_SEEKFUNC_FAIL;
	rq->sent = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static size_t
on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct s3_req *rq = userdata;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(rq->x.easy, CURLINFO_RESPONSE_CODE, &status);
	if (rq->out_fd >= 0 && status == 200) {
		if (rq->out_bytes + n > rq->out_max) {
			rq->out_overflow = true;
			return 0; /* CURLE_WRITE_ERROR */
		}
		const char *p = ptr;
		size_t left = n;
		while (left > 0) {
			ssize_t w = write(rq->out_fd, p, left);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				rq->out_errno = errno;
				return 0;
			}
			p += w;
			left -= (size_t)w;
		}
		if (rq->out_md)
			digest_update(rq->out_md, ptr, n);
		rq->out_bytes += n;
		return n;
	}
	if (rq->resp.len + n > BODY_MAX_BYTES) {
		rq->out_overflow = true;
		return 0;
	}
	sb_appendn(&rq->resp, ptr, n);
	return n;
}

static char *
header_value(const char *ptr, size_t n, const char *name)
{
	size_t nl = strlen(name);
	if (n <= nl || strncasecmp(ptr, name, nl) != 0 || ptr[nl] != ':')
		return NULL;
	const char *v = ptr + nl + 1, *end = ptr + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && isspace((unsigned char)end[-1]))
		end--;
	return xasprintf("%.*s", (int)(end - v), v);
}

static size_t
on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct s3_req *rq = userdata;
	size_t n = size * nmemb;
	char *v;

	if (n > 5 && strncmp(ptr, "HTTP/", 5) == 0) {
		/* A new answer (after a 100 Continue): forget the last one's headers. */
		free(rq->etag);
		free(rq->last_modified);
		rq->etag = rq->last_modified = NULL;
	} else if ((v = header_value(ptr, n, "etag")) != NULL) {
		free(rq->etag);
		rq->etag = v;
	} else if ((v = header_value(ptr, n, "last-modified")) != NULL) {
		free(rq->last_modified);
		rq->last_modified = v;
	}
	return n;
}

static void
req_end(struct s3 *s, struct s3_req *rq)
{
	if (rq->x.easy) {
		curl_multi_remove_handle(s->multi, rq->x.easy);
		curl_easy_cleanup(rq->x.easy);
		rq->x.easy = NULL;
	}
	curl_slist_free_all(rq->headers);
	rq->headers = NULL;
	free(rq->url);
	rq->url = NULL;
}

/* Puts rq in flight; 0, or -1 (rq->outcome S3_OUT_FAILED with errbuf set). */
static int
req_begin(struct s3 *s, struct s3_req *rq)
{
	char sha[65];
	const char *payload = rq->payload_sha;
	CURL *easy;

	req_reset_answer(rq);
	easy = curl_easy_init();
	if (!easy) {
		snprintf(rq->errbuf, sizeof(rq->errbuf), "could not initialise libcurl");
		return -1;
	}
	char *path = s3_uri_encode(rq->object ? rq->object : "", true);
	rq->url = xasprintf("%s/%s%s%s", s->base, path, rq->query ? "?" : "", rq->query ? rq->query : "");
	free(path);
	curl_easy_setopt(easy, CURLOPT_URL, rq->url);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, rq->errbuf);
	http_xfer_attach(&rq->x, easy);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "pgstash");
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, rq);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, rq);
	long connect_s = s->timeout_s < CONNECT_TIMEOUT_MAX_S ? s->timeout_s : CONNECT_TIMEOUT_MAX_S;
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, connect_s);
	if (rq->stream) {
		/* A large transfer may take long; one that stops moving, or drips, may not. */
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, S3_MIN_RATE);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, s->timeout_s);
	}
	if (s->access_key && s->access_key[0]) {
		curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, s->sigv4);
		/* Separately, not as "user:secret": a ':' in a key must not split it. */
		curl_easy_setopt(easy, CURLOPT_USERNAME, s->access_key);
		curl_easy_setopt(easy, CURLOPT_PASSWORD, s->secret_key ? s->secret_key : "");
	}

	bool has_body = rq->body || rq->body_fd >= 0;
	uint64_t body_size = rq->body_fd >= 0 ? rq->body_size : rq->body_len;
	if (!payload) {
		digest_hex(rq->body ? rq->body : "", rq->body ? rq->body_len : 0, sha);
		payload = sha;
	}
	if (strcmp(rq->method, "HEAD") == 0) {
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	} else if (strcmp(rq->method, "PUT") == 0) {
		curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(has_body ? body_size : 0));
	} else if (strcmp(rq->method, "POST") == 0) {
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(has_body ? body_size : 0));
	} else if (strcmp(rq->method, "GET") != 0) {
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, rq->method);
	}
	if (strcmp(rq->method, "PUT") == 0 || strcmp(rq->method, "POST") == 0) {
		curl_easy_setopt(easy, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(easy, CURLOPT_READDATA, rq);
		curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(easy, CURLOPT_SEEKDATA, rq);
		/* Otherwise curl adds an unsigned form content type to a POST. */
		rq->headers = curl_slist_append(rq->headers, "Content-Type: application/octet-stream");
	}
	/*
	 * S3 wants the payload digest with every signed request, and libcurl
	 * 7.88 signs a streamed body as the empty string unless it is given.
	 * No "Expect:" header to turn 100-continue off: libcurl 7.88 would
	 * sign that empty header, which is never sent, and the signature would
	 * not match.
	 */
	char *h = xasprintf("x-amz-content-sha256: %s", payload);
	rq->headers = curl_slist_append(rq->headers, h);
	free(h);
	for (size_t i = 0; i < sizeof(rq->hdr) / sizeof(rq->hdr[0]) && rq->hdr[i]; i++)
		rq->headers = curl_slist_append(rq->headers, rq->hdr[i]);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, rq->headers);

	if (curl_multi_add_handle(s->multi, easy) != CURLM_OK) {
		snprintf(rq->errbuf, sizeof(rq->errbuf), "could not start a request");
		curl_easy_cleanup(easy);
		rq->x.easy = NULL;
		return -1;
	}
	return 0;
}

/* Drives rq to its end; sets rq->outcome (and status when S3_OUT_OK). */
static void
req_drive(struct s3 *s, struct s3_req *rq)
{
	double deadline = log_now() + (double)(rq->cleanup ? 10 : s->timeout_s);
	/* A stream's own: its size at the minimum rate on top (a low-speed window can be met at the limit forever). */
	if (rq->stream && !rq->cleanup)
		deadline += (double)(rq->out_max ? rq->out_max : rq->body_size) / (double)S3_MIN_RATE;

	rq->outcome = S3_OUT_FAILED;
	switch (http_drive(s->multi, &rq->x, NULL, deadline, !rq->cleanup, rq->errbuf, sizeof(rq->errbuf))) {
	case HTTP_FINISHED:
		break;
	case HTTP_SIGNAL:
		rq->outcome = S3_OUT_SIGNAL;
		return;
	case HTTP_TIMEOUT:
		rq->outcome = S3_OUT_TIMEOUT;
		return;
	case HTTP_ERROR:
		return;
	}
	rq->result = rq->x.result;
	if (rq->out_errno) {
		rq->outcome = S3_OUT_LOCAL;
		return;
	}
	if (rq->result == CURLE_OPERATION_TIMEDOUT) {
		rq->outcome = S3_OUT_TIMEOUT;
		return;
	}
	if (rq->result != CURLE_OK && !(rq->result == CURLE_WRITE_ERROR && rq->out_overflow)) {
		if (!rq->errbuf[0])
			snprintf(rq->errbuf, sizeof(rq->errbuf), "%s", curl_easy_strerror(rq->result));
		return;
	}
	curl_easy_getinfo(rq->x.easy, CURLINFO_RESPONSE_CODE, &rq->status);
	rq->outcome = S3_OUT_OK;
}

/* Sleeps `seconds` unless a terminating signal arrives; false then. */
bool
s3_sleep(double seconds)
{
	double end = log_now() + seconds;
	for (;;) {
		sig_drain();
		if (sig_received)
			return false;
		double left = end - log_now();
		if (left <= 0)
			return true;
		struct pollfd pfd = {.fd = sig_fd(), .events = POLLIN};
		int ms = (int)(left * 1000) + 1;
		if (pfd.fd >= 0) {
			poll(&pfd, 1, ms);
		} else {
			struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
}

static bool
retryable(const struct s3_req *rq)
{
	if (rq->outcome == S3_OUT_OK)
		return rq->status == 500 || rq->status == 502 || rq->status == 503 || rq->status == 504;
	if (rq->outcome != S3_OUT_FAILED)
		return false;
	/* Not a refused or unresolvable endpoint: that costs every start its retries for nothing. */
	switch (rq->result) {
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/*
 * One exchange with retries (up to ATTEMPTS, for 5xx answers and broken
 * connections).  A file sink is truncated and its digest restarted before a
 * retry.  Returns 0 when an answer arrived (rq->status, any), -1 otherwise
 * (rq->outcome says why).
 */
int
s3_perform(struct s3 *s, struct s3_req *rq)
{
	for (int attempt = 1;; attempt++) {
		if (rq->out_fd >= 0) {
			if (rq->out_md)
				digest_reset(rq->out_md);
			if (ftruncate(rq->out_fd, 0) != 0 || lseek(rq->out_fd, 0, SEEK_SET) != 0) {
				log_warning("could not reset \"%s\": %s", rq->out_name, strerror(errno));
				rq->outcome = S3_OUT_LOCAL;
				return -1;
			}
		}
		if (req_begin(s, rq) == 0)
			req_drive(s, rq);
		req_end(s, rq);
		if (attempt >= ATTEMPTS || !retryable(rq))
			break;
		log_debug("remote %s %s: %s; trying again", rq->method, rq->object ? rq->object : "/",
		          rq->outcome == S3_OUT_OK ? "server error" : rq->errbuf);
		if (rq->cleanup ? false : !s3_sleep(0.5 * attempt)) {
			rq->outcome = S3_OUT_SIGNAL;
			return -1;
		}
	}
	if (rq->outcome == S3_OUT_LOCAL && rq->out_fd >= 0)
		log_warning("could not write \"%s\": %s", rq->out_name, strerror(rq->out_errno));
	return rq->outcome == S3_OUT_OK ? 0 : -1;
}

/*
 * Why rq did not succeed, for a message: S3's <Error> code and message, or
 * the transport error, or the HTTP status.  Caller frees.
 */
char *
s3_req_error(const struct s3 *s, const struct s3_req *rq)
{
	switch (rq->outcome) {
	case S3_OUT_SIGNAL:
		return xasprintf("interrupted by signal %d", (int)sig_received);
	case S3_OUT_TIMEOUT:
		if (rq->stream)
			return xasprintf("slower than %ld KiB/s (over %ld s, or on average over the whole transfer)",
			                 S3_MIN_RATE / 1024, s->timeout_s);
		return xasprintf("no answer within %ld s", s->timeout_s);
	case S3_OUT_FAILED:
		return xasprintf("%s", rq->errbuf[0] ? rq->errbuf : "transfer failed");
	case S3_OUT_LOCAL:
		return xasprintf("could not write \"%s\": %s", rq->out_name ? rq->out_name : "", strerror(rq->out_errno));
	case S3_OUT_OK:
		break;
	}
	char *code = s3_xml_text(rq->resp.buf, rq->resp.len, "Code");
	char *msg = s3_xml_text(rq->resp.buf, rq->resp.len, "Message");
	char *out;
	if (code && msg)
		out = xasprintf("%s: %.300s (HTTP %ld)", code, msg, rq->status);
	else if (code)
		out = xasprintf("%s (HTTP %ld)", code, rq->status);
	else if (rq->out_overflow)
		out = xasprintf("the answer is larger than expected (HTTP %ld)", rq->status);
	else
		out = xasprintf("HTTP %ld", rq->status);
	free(code);
	free(msg);
	return out;
}

/* Logs a failed request as a warning (a signal at info level): "remote URL: WHAT: WHY". */
void
s3_warn(const struct s3 *s, const struct s3_req *rq, const char *fmt, ...)
{
	char what[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	char *why = s3_req_error(s, rq);
	if (rq->outcome == S3_OUT_SIGNAL)
		log_info("remote \"%s\": %s: %s", s->label, what, why);
	else
		log_warning("remote \"%s\": %s: %s", s->label, what, why);
	free(why);
}

