/*
 * remote — see remote.h.
 *
 * One `struct s3` per public call: the parsed URL, the signing parameters and
 * a curl multi handle (its connection cache serves the call's requests).
 * One `struct req` per HTTP exchange; s3_perform drives it, polling the
 * signal descriptor alongside, and retries what S3 asks clients to retry.
 */
#include "remote.h"
#include "http.h"
#include "digest.h"
#include "durable.h"
#include "entry.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <curl/curl.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Connecting never waits longer than this, whatever timeout_s says. */
#define CONNECT_TIMEOUT_MAX_S 10L
/* An answer kept in memory (a meta, an XML document) larger than this is refused. */
#define BODY_MAX_BYTES (4u * 1024 * 1024)
/* A meta or a lease larger than this is not one of ours. */
#define ATTEMPTS 3
#define MAX_PARTS 10000
#define WAIT_POLL_S 2.0
#define WAIT_REPORT_S 30.0
/* Objects of an incomplete entry younger than this may be an upload in progress. */
#define ORPHAN_AGE_S 3600

/* ------------------------------------------------------------ pure helpers */

static bool
bucket_name_ok(const char *b)
{
	size_t n = strlen(b);
	if (n < 3 || n > 63)
		return false;
	for (const char *p = b; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return false;
	}
	return isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]);
}

int
remote_parse_url(const char *url, char **bucket, char **prefix)
{
	*bucket = *prefix = NULL;
	if (!url || strncmp(url, "s3://", 5) != 0)
		return -1;
	const char *b = url + 5;
	size_t bl = strcspn(b, "/");
	const char *p = b + bl;
	while (*p == '/')
		p++;
	size_t pl = strlen(p);
	while (pl > 0 && p[pl - 1] == '/')
		pl--;
	if (bl == 0)
		return -1;
	*bucket = xasprintf("%.*s", (int)bl, b);
	*prefix = xasprintf("%.*s", (int)pl, p);
	if (!bucket_name_ok(*bucket) || strstr(*prefix, "//") || strchr(*prefix, '?') || strchr(*prefix, '#')) {
		free(*bucket);
		free(*prefix);
		*bucket = *prefix = NULL;
		return -1;
	}
	for (const char *c = *prefix; *c; c++) {
		if ((unsigned char)*c < 0x20 || *c == 0x7f) {
			free(*bucket);
			free(*prefix);
			*bucket = *prefix = NULL;
			return -1;
		}
	}
	return 0;
}

char *
remote_uri_encode(const char *s, bool keep_slash)
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
static const char *
xml_find(const char *p, const char *end, const char *tag, const char **ib, const char **ie)
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
remote_xml_text(const char *xml, size_t len, const char *tag)
{
	const char *b, *e;
	if (!xml || !xml_find(xml, xml + len, tag, &b, &e))
		return NULL;
	return xml_decode(b, e);
}

int64_t
remote_parse_time(const char *iso)
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

static int
parse_u64_str(const char *s, uint64_t *out)
{
	if (!s || !*s || !isdigit((unsigned char)*s))
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

void
remote_objects_free(struct remote_object *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

int
remote_parse_list(const char *xml, size_t len, struct remote_object **v, size_t *n, bool *truncated,
                  char **next_token)
{
	const char *end = xml + len, *b, *e;

	free(*next_token);
	*next_token = NULL;
	*truncated = false;
	if (!xml_find(xml, end, "ListBucketResult", &b, &e))
		return -1;
	end = e;
	char *tr = remote_xml_text(b, (size_t)(e - b), "IsTruncated");
	*truncated = tr && strcmp(tr, "true") == 0;
	free(tr);
	if (*truncated) {
		*next_token = remote_xml_text(b, (size_t)(e - b), "NextContinuationToken");
		if (!*next_token || !**next_token)
			return -1; /* a truncated page without a token would loop forever */
	}
	const char *p = b, *cb, *ce;
	while ((p = xml_find(p, end, "Contents", &cb, &ce)) != NULL) {
		size_t cl = (size_t)(ce - cb);
		char *name = remote_xml_text(cb, cl, "Key");
		char *size = remote_xml_text(cb, cl, "Size");
		char *mod = remote_xml_text(cb, cl, "LastModified");
		uint64_t sz;
		int64_t mt = remote_parse_time(mod);
		int ok = name && *name && parse_u64_str(size, &sz) == 0 && mt >= 0;
		if (ok) {
			*v = xrealloc(*v, (*n + 1) * sizeof(**v));
			(*v)[*n] = (struct remote_object){.name = name, .size = sz, .mtime = mt};
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

/* --------------------------------------------------------------- meta text */

/*
 * Parses a downloaded or to-be-uploaded meta (entry.h's format) for what a
 * transfer needs.  0, or -1 with why filled (no key comparison here).
 */
static int
meta_parse(const char *text, size_t len, struct entry_meta *mi, char *why, size_t why_len)
{
	char reason[160];
	int line;

	memset(mi, 0, sizeof(*mi));
	if (len > ENTRY_META_MAX_BYTES || strlen(text) != len) {
		snprintf(why, why_len, "not a meta (binary or too large)");
		return -1;
	}
	switch (entry_meta_parse(text, len, ENTRY_F_DOWNLOAD, mi, &line, reason, sizeof(reason))) {
	case ENTRY_PARSE_OK:
		return 0;
	case ENTRY_PARSE_BINARY:
		snprintf(why, why_len, "%s", reason);
		return -1;
	case ENTRY_PARSE_SYNTAX:
		snprintf(why, why_len, "line %d: %s", line, reason);
		return -1;
	case ENTRY_PARSE_MISSING:
		snprintf(why, why_len, "lacks key, archive_sha256, archive_bytes or compression");
		return -1;
	}
	return -1;
}

/* ------------------------------------------------------------ configuration */

bool
remote_enabled(const struct remote_cfg *rc)
{
	return rc && rc->url && rc->url[0];
}

static long
timeout_of(const struct remote_cfg *rc)
{
	return rc->timeout_s > 0 ? rc->timeout_s : REMOTE_DEFAULT_TIMEOUT;
}

static const char *
region_of(const struct remote_cfg *rc)
{
	return rc->region && rc->region[0] ? rc->region : REMOTE_DEFAULT_REGION;
}

struct endpoint {
	char *scheme; /* "http" or "https" */
	char *host;   /* as in the URL: "[::1]" keeps its brackets */
	char *port;   /* NULL: the scheme's */
};

static void
endpoint_free(struct endpoint *ep)
{
	free(ep->scheme);
	free(ep->host);
	free(ep->port);
	memset(ep, 0, sizeof(*ep));
}

/* Splits the endpoint with libcurl's URL parser.  0, or -1 with why set. */
static int
endpoint_parse(const struct remote_cfg *rc, struct endpoint *ep, const char **why)
{
	char *def = NULL, *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL;
	const char *url = rc->endpoint;
	CURLU *u = curl_url();
	int ret = -1;

	memset(ep, 0, sizeof(*ep));
	if (!u) {
		*why = "out of memory";
		return -1;
	}
	if (!url || !*url)
		url = def = xasprintf("https://s3.%s.amazonaws.com", region_of(rc));
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		*why = "not a URL";
		goto cleanup;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_PORT, &port, 0);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	curl_url_get(u, CURLUPART_QUERY, &query, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		*why = "the scheme must be http or https";
		goto cleanup;
	}
	if (!host || !*host) {
		*why = "no host";
		goto cleanup;
	}
	if ((path && strcmp(path, "/") != 0 && *path) || query || user) {
		*why = "an endpoint is scheme://host[:port] only (no path, query or user)";
		goto cleanup;
	}
	ep->scheme = xstrdup(scheme);
	ep->host = xstrdup(host);
	ep->port = port ? xstrdup(port) : NULL;
	ret = 0;
cleanup:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(query);
	curl_free(user);
	curl_url_cleanup(u);
	free(def);
	return ret;
}

static bool
host_is_dns_name(const char *host)
{
	if (host[0] == '[' || strcmp(host, "localhost") == 0)
		return false;
	for (const char *p = host; *p; p++) {
		if (!isdigit((unsigned char)*p) && *p != '.')
			return true;
	}
	return false; /* an IPv4 literal */
}

int
remote_validate(const struct remote_cfg *rc)
{
	char *bucket = NULL, *prefix = NULL;
	struct endpoint ep;
	const char *why = NULL;
	int bad = 0;

	if (!remote_enabled(rc))
		return 0;
	if (remote_parse_url(rc->url, &bucket, &prefix) != 0) {
		log_error("[remote] url \"%s\": expected s3://BUCKET[/PREFIX] with a valid bucket name", rc->url);
		bad = 1;
	}
	if (endpoint_parse(rc, &ep, &why) != 0) {
		log_error("[remote] endpoint \"%s\": %s", rc->endpoint ? rc->endpoint : "", why);
		bad = 1;
	} else {
		if (!rc->path_style && !host_is_dns_name(ep.host)) {
			log_error("[remote] endpoint \"%s\": an IP address or localhost needs path_style = yes",
			          rc->endpoint);
			bad = 1;
		}
		if (!rc->path_style && bucket && strchr(bucket, '.') && strcmp(ep.scheme, "https") == 0) {
			log_error("[remote] bucket \"%s\" has dots, which TLS certificates do not cover in virtual-host "
			          "style: set path_style = yes", bucket);
			bad = 1;
		}
		endpoint_free(&ep);
	}
	for (const char *p = region_of(rc); *p; p++) {
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-') {
			log_error("[remote] region \"%s\": expected something like us-east-1", region_of(rc));
			bad = 1;
			break;
		}
	}
	bool ak = rc->access_key && rc->access_key[0], sk = rc->secret_key && rc->secret_key[0];
	if (ak != sk) {
		log_error("[remote] needs both an access key and a secret key, or neither (anonymous access)");
		bad = 1;
	}
	if (ak && (strchr(rc->access_key, '\n') || strchr(rc->access_key, '/'))) {
		log_error("[remote] the access key contains a character access keys never have");
		bad = 1;
	}
	if (rc->timeout_s < 0 || rc->timeout_s > 3600) {
		log_error("[remote] timeout %ld: expected 1 to 3600 seconds", rc->timeout_s);
		bad = 1;
	}
	free(bucket);
	free(prefix);
	return bad ? -1 : 0;
}

void
remote_cfg_free(struct remote_cfg *rc)
{
	if (!rc)
		return;
	if (rc->secret_key)
		explicit_bzero(rc->secret_key, strlen(rc->secret_key));
	free(rc->url);
	free(rc->endpoint);
	free(rc->region);
	free(rc->access_key);
	free(rc->secret_key);
	memset(rc, 0, sizeof(*rc));
}

/* ------------------------------------------------------------- the client */

struct s3 {
	const struct remote_cfg *rc;
	char *bucket;
	char *prefix;   /* "" or "a/b" */
	char *base;     /* URL up to and without the object path: ".../bucket" or "https://bucket.host" */
	char *sigv4;    /* "aws:amz:REGION:s3" */
	char *dir;      /* object name prefix of the entries: "a/b/pgstash-v1/" */
	long timeout_s;
	CURLM *multi;
	bool global;    /* curl_global_init done */
};

enum outcome {
	OUT_OK,      /* an HTTP answer arrived (any status) */
	OUT_FAILED,  /* transport error: rq->errbuf / rq->result */
	OUT_SIGNAL,  /* a terminating signal arrived first */
	OUT_TIMEOUT, /* the deadline or the stall limit passed first */
	OUT_LOCAL,   /* our side failed (writing the download); logged */
};

struct req {
	/* the request */
	const char *method;         /* GET HEAD PUT POST DELETE */
	const char *object;         /* object name (unencoded); NULL: the bucket */
	const char *query;          /* canonical query (sorted, encoded), without '?'; NULL: none */
	const char *hdr[4];         /* extra "Name: value" lines (signed too), NULL-terminated */
	const char *body;           /* memory body (PUT/POST); body_len bytes */
	size_t body_len;
	int body_fd;                /* >= 0: the body is body_size bytes of this file from body_off */
	uint64_t body_off;
	uint64_t body_size;
	const char *payload_sha;    /* hex digest of the body; NULL: computed from the memory body */
	bool stream;                /* a long transfer: a stall limit instead of a deadline */
	bool cleanup;               /* not cut short by a signal (aborting an upload), short deadline */
	/* a 200 answer goes to out_fd (digested into out_md) instead of memory, at most out_max bytes */
	int out_fd;
	const char *out_name;
	struct digest *out_md;
	uint64_t out_max;

	/* the answer */
	enum outcome outcome;
	long status;
	struct strbuf resp;
	uint64_t out_bytes;
	bool out_overflow;
	int out_errno;
	char *etag;
	char *last_modified;
	CURLcode result;
	char errbuf[CURL_ERROR_SIZE];

	/* in flight */
	uint64_t sent;
	struct http_xfer x;         /* the easy handle; done and result once curl finished it */
	struct curl_slist *headers;
	char *url;
};

static void
req_reset_answer(struct req *rq)
{
	rq->outcome = OUT_FAILED;
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

static void
req_free(struct req *rq)
{
	sb_free(&rq->resp);
	free(rq->etag);
	free(rq->last_modified);
	rq->etag = rq->last_modified = NULL;
}

static void
s3_close(struct s3 *s)
{
	if (s->multi)
		curl_multi_cleanup(s->multi);
	if (s->global)
		curl_global_cleanup();
	free(s->bucket);
	free(s->prefix);
	free(s->base);
	free(s->sigv4);
	free(s->dir);
	memset(s, 0, sizeof(*s));
}

/* 0, or -1 (logged as a warning). */
static int
s3_open(struct s3 *s, const struct remote_cfg *rc)
{
	struct endpoint ep;
	const char *why = "";

	memset(s, 0, sizeof(*s));
	s->rc = rc;
	s->timeout_s = timeout_of(rc);
	if (!remote_enabled(rc)) {
		log_warning("no remote configured");
		return -1;
	}
	if (remote_parse_url(rc->url, &s->bucket, &s->prefix) != 0) {
		log_warning("remote url \"%s\" is not s3://BUCKET[/PREFIX]", rc->url);
		return -1;
	}
	if (endpoint_parse(rc, &ep, &why) != 0) {
		log_warning("remote endpoint \"%s\": %s", rc->endpoint ? rc->endpoint : "", why);
		s3_close(s);
		return -1;
	}
	char *port = ep.port ? xasprintf(":%s", ep.port) : xstrdup("");
	if (rc->path_style)
		s->base = xasprintf("%s://%s%s/%s", ep.scheme, ep.host, port, s->bucket);
	else
		s->base = xasprintf("%s://%s.%s%s", ep.scheme, s->bucket, ep.host, port);
	free(port);
	endpoint_free(&ep);
	s->sigv4 = xasprintf("aws:amz:%s:s3", region_of(rc));
	s->dir = s->prefix[0] ? xasprintf("%s/%s/", s->prefix, STORE_DIR_NAME) : xasprintf("%s/", STORE_DIR_NAME);
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

/* "a/b/pgstash-v1/<key><suffix>"; caller frees. */
static char *
obj_name(const struct s3 *s, const char *key, const char *suffix)
{
	return xasprintf("%s%s%s", s->dir, key, suffix);
}

static size_t
on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct req *rq = userdata;
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
	struct req *rq = userdata;
	uint64_t size = rq->body_fd >= 0 ? rq->body_size : rq->body_len;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > size)
		return CURL_SEEKFUNC_FAIL;
	rq->sent = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static size_t
on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct req *rq = userdata;
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
	struct req *rq = userdata;
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
req_end(struct s3 *s, struct req *rq)
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

/* Puts rq in flight; 0, or -1 (rq->outcome OUT_FAILED with errbuf set). */
static int
req_begin(struct s3 *s, struct req *rq)
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
	char *path = remote_uri_encode(rq->object ? rq->object : "", true);
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
		/* A large transfer may take long; one that stops moving may not. */
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, s->timeout_s);
	}
	if (s->rc->access_key && s->rc->access_key[0]) {
		curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, s->sigv4);
		/* Separately, not as "user:secret": a ':' in a key must not split it. */
		curl_easy_setopt(easy, CURLOPT_USERNAME, s->rc->access_key);
		curl_easy_setopt(easy, CURLOPT_PASSWORD, s->rc->secret_key ? s->rc->secret_key : "");
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

/* Drives rq to its end; sets rq->outcome (and status when OUT_OK). */
static void
req_drive(struct s3 *s, struct req *rq)
{
	double deadline = rq->stream ? 0 : log_now() + (double)(rq->cleanup ? 10 : s->timeout_s);

	rq->outcome = OUT_FAILED;
	switch (http_drive(s->multi, &rq->x, NULL, deadline, !rq->cleanup, rq->errbuf, sizeof(rq->errbuf))) {
	case HTTP_FINISHED:
		break;
	case HTTP_SIGNAL:
		rq->outcome = OUT_SIGNAL;
		return;
	case HTTP_TIMEOUT:
		rq->outcome = OUT_TIMEOUT;
		return;
	case HTTP_ERROR:
		return;
	}
	rq->result = rq->x.result;
	if (rq->out_errno) {
		rq->outcome = OUT_LOCAL;
		return;
	}
	if (rq->result == CURLE_OPERATION_TIMEDOUT) {
		rq->outcome = OUT_TIMEOUT;
		return;
	}
	if (rq->result != CURLE_OK && !(rq->result == CURLE_WRITE_ERROR && rq->out_overflow)) {
		if (!rq->errbuf[0])
			snprintf(rq->errbuf, sizeof(rq->errbuf), "%s", curl_easy_strerror(rq->result));
		return;
	}
	curl_easy_getinfo(rq->x.easy, CURLINFO_RESPONSE_CODE, &rq->status);
	rq->outcome = OUT_OK;
}

/* Sleeps `seconds` unless a terminating signal arrives; false then. */
static bool
sleep_interruptible(double seconds)
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
retryable(const struct req *rq)
{
	if (rq->outcome == OUT_OK)
		return rq->status == 500 || rq->status == 502 || rq->status == 503 || rq->status == 504;
	if (rq->outcome != OUT_FAILED)
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
static int
s3_perform(struct s3 *s, struct req *rq)
{
	for (int attempt = 1;; attempt++) {
		if (rq->out_fd >= 0) {
			if (rq->out_md)
				digest_reset(rq->out_md);
			if (ftruncate(rq->out_fd, 0) != 0 || lseek(rq->out_fd, 0, SEEK_SET) != 0) {
				log_warning("could not reset \"%s\": %s", rq->out_name, strerror(errno));
				rq->outcome = OUT_LOCAL;
				return -1;
			}
		}
		if (req_begin(s, rq) == 0)
			req_drive(s, rq);
		req_end(s, rq);
		if (attempt >= ATTEMPTS || !retryable(rq))
			break;
		log_debug("remote %s %s: %s; trying again", rq->method, rq->object ? rq->object : "/",
		          rq->outcome == OUT_OK ? "server error" : rq->errbuf);
		if (rq->cleanup ? false : !sleep_interruptible(0.5 * attempt)) {
			rq->outcome = OUT_SIGNAL;
			return -1;
		}
	}
	if (rq->outcome == OUT_LOCAL && rq->out_fd >= 0)
		log_warning("could not write \"%s\": %s", rq->out_name, strerror(rq->out_errno));
	return rq->outcome == OUT_OK ? 0 : -1;
}

/*
 * Why rq did not succeed, for a message: S3's <Error> code and message, or
 * the transport error, or the HTTP status.  Caller frees.
 */
static char *
req_error(const struct s3 *s, const struct req *rq)
{
	switch (rq->outcome) {
	case OUT_SIGNAL:
		return xasprintf("interrupted by signal %d", (int)sig_received);
	case OUT_TIMEOUT:
		return xasprintf(rq->stream ? "no progress for %ld s" : "no answer within %ld s", s->timeout_s);
	case OUT_FAILED:
		return xasprintf("%s", rq->errbuf[0] ? rq->errbuf : "transfer failed");
	case OUT_LOCAL:
		return xasprintf("could not write \"%s\": %s", rq->out_name ? rq->out_name : "", strerror(rq->out_errno));
	case OUT_OK:
		break;
	}
	char *code = remote_xml_text(rq->resp.buf, rq->resp.len, "Code");
	char *msg = remote_xml_text(rq->resp.buf, rq->resp.len, "Message");
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
static void
warn_req(const struct s3 *s, const struct req *rq, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
warn_req(const struct s3 *s, const struct req *rq, const char *fmt, ...)
{
	char what[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	char *why = req_error(s, rq);
	if (rq->outcome == OUT_SIGNAL)
		log_info("remote \"%s\": %s: %s", s->rc->url, what, why);
	else
		log_warning("remote \"%s\": %s: %s", s->rc->url, what, why);
	free(why);
}

/* ------------------------------------------------------------------- get */

enum remote_get_result
remote_get(const struct remote_cfg *rc, const char *key, const char *local_dir_tmp, char **archive_path_out,
           char **meta_path_out)
{
	struct s3 s;
	struct req mrq = {.method = "GET", .out_fd = -1, .body_fd = -1};
	struct req arq = {.method = "GET", .out_fd = -1, .body_fd = -1, .stream = true};
	struct entry_meta mi;
	char *mname = NULL, *aname = NULL, *apath = NULL, *mpath = NULL;
	int afd = -1, mfd = -1;
	enum remote_get_result ret = REMOTE_GET_ERROR;
	struct digest *md = NULL;
	char why[200];
	double t0 = log_now();

	*archive_path_out = *meta_path_out = NULL;
	if (!entry_key_valid(key)) {
		log_warning("remote: invalid cache key \"%s\"", key ? key : "");
		return REMOTE_GET_ERROR;
	}
	if (s3_open(&s, rc) != 0)
		return REMOTE_GET_ERROR;

	mname = obj_name(&s, key, ".meta");
	mrq.object = mname;
	if (s3_perform(&s, &mrq) != 0) {
		warn_req(&s, &mrq, "could not look up %.12s…", key);
		goto cleanup;
	}
	if (mrq.status == 404) {
		log_info("remote miss %.12s…", key);
		ret = REMOTE_MISS;
		goto cleanup;
	}
	if (mrq.status != 200) {
		warn_req(&s, &mrq, "could not download the meta of %.12s…", key);
		goto cleanup;
	}
	if (meta_parse(sb_str(&mrq.resp), mrq.resp.len, &mi, why, sizeof(why)) != 0) {
		log_warning("remote \"%s\": the meta of %.12s… is not valid: %s", rc->url, key, why);
		goto cleanup;
	}
	if (strcmp(mi.key, key) != 0) {
		log_warning("remote \"%s\": the meta of %.12s… names another key", rc->url, key);
		goto cleanup;
	}

	afd = durable_tmp_create(local_dir_tmp, key, entry_suffix(mi.compression), 0644, &apath);
	if (afd < 0)
		goto cleanup;
	md = digest_new();
	aname = obj_name(&s, key, entry_suffix(mi.compression));
	arq.object = aname;
	arq.out_fd = afd;
	arq.out_name = apath;
	arq.out_md = md;
	arq.out_max = mi.archive_bytes;
	if (s3_perform(&s, &arq) != 0) {
		if (arq.outcome != OUT_LOCAL)
			warn_req(&s, &arq, "could not download the archive of %.12s…", key);
		goto cleanup;
	}
	if (arq.status != 200) {
		warn_req(&s, &arq, "could not download the archive of %.12s…", key);
		goto cleanup;
	}
	if (arq.out_overflow) {
		log_warning("remote \"%s\": the archive of %.12s… is larger than the %" PRIu64 " bytes its meta says",
		            rc->url, key, mi.archive_bytes);
		goto cleanup;
	}
	if (arq.out_bytes != mi.archive_bytes) {
		log_warning("remote \"%s\": the archive of %.12s… is %" PRIu64 " bytes, its meta says %" PRIu64,
		            rc->url, key, arq.out_bytes, mi.archive_bytes);
		goto cleanup;
	}
	char hex[65];
	digest_final(md, hex);
	if (strcmp(hex, mi.archive_sha256) != 0) {
		log_warning("remote \"%s\": the archive of %.12s… does not match its meta's SHA-256 (%.12s…, meta says "
		            "%.12s…)", rc->url, key, hex, mi.archive_sha256);
		goto cleanup;
	}

	mfd = durable_tmp_create(local_dir_tmp, key, ".meta", 0644, &mpath);
	if (mfd < 0)
		goto cleanup;
	if (durable_write_all(mfd, sb_str(&mrq.resp), mrq.resp.len) != 0) {
		log_warning("could not write \"%s\": %s", mpath, strerror(errno));
		goto cleanup;
	}
	char b[32];
	double secs = log_now() - t0;
	log_info("remote hit %.12s…: downloaded %s in %.2f s (%.0f MB/s)", key, log_bytes(b, mi.archive_bytes), secs,
	         secs > 0 ? (double)mi.archive_bytes / secs / 1e6 : 0.0);
	*archive_path_out = apath;
	*meta_path_out = mpath;
	apath = mpath = NULL;
	ret = REMOTE_HIT;

cleanup:
	if (afd >= 0)
		close(afd);
	if (mfd >= 0)
		close(mfd);
	if (apath)
		unlink(apath);
	if (mpath)
		unlink(mpath);
	digest_free(md);
	req_free(&mrq);
	req_free(&arq);
	free(apath);
	free(mpath);
	free(aname);
	free(mname);
	s3_close(&s);
	return ret;
}

/* ------------------------------------------------------------------- put */

/* Is rq's 200 answer really an error?  CompleteMultipartUpload may say so in the body. */
static bool
body_is_error(const struct req *rq)
{
	const char *b, *e;
	return rq->resp.len > 0 && xml_find(rq->resp.buf, rq->resp.buf + rq->resp.len, "Error", &b, &e) != NULL;
}

static void
multipart_abort(struct s3 *s, const char *object, const char *upload_id)
{
	char *id = remote_uri_encode(upload_id, false);
	char *q = xasprintf("uploadId=%s", id);
	struct req rq = {.method = "DELETE", .object = object, .query = q, .out_fd = -1, .body_fd = -1,
	                 .cleanup = true};
	if (s3_perform(s, &rq) != 0 || (rq.status != 204 && rq.status != 200 && rq.status != 404))
		warn_req(s, &rq, "could not abort the multipart upload of \"%s\" (a lifecycle rule removes it)",
		         object);
	req_free(&rq);
	free(q);
	free(id);
}

static int
put_multipart(struct s3 *s, const char *object, int fd, uint64_t size, const char *key)
{
	struct req rq = {.method = "POST", .object = object, .query = "uploads=", .out_fd = -1, .body_fd = -1};
	struct strbuf done = {0};
	char *upload_id = NULL, *id_enc = NULL, *q = NULL;
	uint64_t part = s->rc->part_size ? s->rc->part_size : REMOTE_PART_SIZE;
	int ret = -1;

	if (part < REMOTE_MIN_PART_SIZE)
		part = REMOTE_MIN_PART_SIZE;
	while ((size + part - 1) / part > MAX_PARTS)
		part *= 2;
	if (s3_perform(s, &rq) != 0 || rq.status != 200 || body_is_error(&rq)) {
		warn_req(s, &rq, "could not start the upload of %.12s…", key);
		goto cleanup;
	}
	upload_id = remote_xml_text(rq.resp.buf, rq.resp.len, "UploadId");
	if (!upload_id || !*upload_id) {
		log_warning("remote \"%s\": the answer to CreateMultipartUpload has no UploadId", s->rc->url);
		goto cleanup;
	}
	id_enc = remote_uri_encode(upload_id, false);
	sb_append(&done, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
	unsigned nparts = (unsigned)((size + part - 1) / part);
	for (unsigned i = 0; i < nparts; i++) {
		uint64_t off = (uint64_t)i * part;
		uint64_t len = size - off < part ? size - off : part;
		char sha[65];
		if (digest_range(fd, off, len, sha) != 0) {
			log_warning("could not read the archive of %.12s…: %s", key, strerror(errno));
			goto abort;
		}
		free(q);
		q = xasprintf("partNumber=%u&uploadId=%s", i + 1, id_enc);
		req_free(&rq);
		rq = (struct req){.method = "PUT", .object = object, .query = q, .out_fd = -1, .body_fd = fd,
		                  .body_off = off, .body_size = len, .payload_sha = sha, .stream = true};
		if (s3_perform(s, &rq) != 0 || rq.status != 200 || !rq.etag || !*rq.etag) {
			warn_req(s, &rq, "could not upload part %u of %u of %.12s…", i + 1, nparts, key);
			goto abort;
		}
		/* ETags are quoted; XML-escape them as S3 returns them. */
		sb_appendf(&done, "<Part><PartNumber>%u</PartNumber><ETag>", i + 1);
		for (const char *c = rq.etag; *c; c++) {
			if (*c == '"')
				sb_append(&done, "&quot;");
			else if (*c == '&')
				sb_append(&done, "&amp;");
			else if (*c == '<')
				sb_append(&done, "&lt;");
			else if (*c == '>')
				sb_append(&done, "&gt;");
			else
				sb_appendc(&done, *c);
		}
		sb_append(&done, "</ETag></Part>");
	}
	sb_append(&done, "</CompleteMultipartUpload>");
	free(q);
	q = xasprintf("uploadId=%s", id_enc);
	req_free(&rq);
	rq = (struct req){.method = "POST", .object = object, .query = q, .out_fd = -1, .body_fd = -1,
	                  .body = done.buf, .body_len = done.len};
	/* Completing a large upload can take S3 a while; it sends blanks meanwhile. */
	if (s3_perform(s, &rq) != 0 || rq.status != 200 || body_is_error(&rq)) {
		warn_req(s, &rq, "could not complete the upload of %.12s…", key);
		goto abort;
	}
	log_debug("remote: uploaded %.12s… in %u parts of %" PRIu64 " bytes", key, nparts, part);
	ret = 0;
	goto cleanup;
abort:
	multipart_abort(s, object, upload_id);
cleanup:
	req_free(&rq);
	sb_free(&done);
	free(upload_id);
	free(id_enc);
	free(q);
	return ret;
}

int
remote_put(const struct remote_cfg *rc, const char *key, const char *archive_path, const char *meta_path)
{
	struct s3 s;
	struct entry_meta mi;
	struct req rq = {.out_fd = -1, .body_fd = -1};
	char *meta = NULL, *aname = NULL, *mname = NULL;
	size_t mlen = 0;
	int fd = -1, ret = -1;
	struct stat sb;
	char why[200] = "";
	double t0 = log_now();

	if (!entry_key_valid(key)) {
		log_warning("remote: invalid cache key \"%s\"", key ? key : "");
		return -1;
	}
	if (s3_open(&s, rc) != 0)
		return -1;
	meta = read_file(meta_path, &mlen);
	if (!meta) {
		log_warning("could not read \"%s\": %s", meta_path, strerror(errno));
		goto cleanup;
	}
	if (meta_parse(meta, mlen, &mi, why, sizeof(why)) != 0 || strcmp(mi.key, key) != 0) {
		log_warning("not uploading %.12s…: \"%s\" is not its meta%s%s", key, meta_path, why[0] ? ": " : "",
		            why);
		goto cleanup;
	}
	fd = open(archive_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		log_warning("could not open \"%s\": %s", archive_path, strerror(errno));
		goto cleanup;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != mi.archive_bytes) {
		log_warning("not uploading %.12s…: \"%s\" is not the %" PRIu64 "-byte archive its meta names", key,
		            archive_path, mi.archive_bytes);
		goto cleanup;
	}

	aname = obj_name(&s, key, entry_suffix(mi.compression));
	uint64_t threshold = rc->multipart_threshold ? rc->multipart_threshold : REMOTE_MULTIPART_THRESHOLD;
	if (mi.archive_bytes > threshold) {
		if (put_multipart(&s, aname, fd, mi.archive_bytes, key) != 0)
			goto cleanup;
	} else {
		/*
		 * The meta's digest as the payload's: a server that checks it
		 * (AWS, MinIO) refuses an archive that changed since it was
		 * published.
		 */
		rq = (struct req){.method = "PUT", .object = aname, .out_fd = -1, .body_fd = fd, .body_off = 0,
		                  .body_size = mi.archive_bytes, .payload_sha = mi.archive_sha256, .stream = true};
		if (s3_perform(&s, &rq) != 0 || rq.status != 200) {
			warn_req(&s, &rq, "could not upload the archive of %.12s…", key);
			goto cleanup;
		}
		req_free(&rq);
	}
	/* The meta last: a reader must never find a meta whose archive is not there yet. */
	mname = obj_name(&s, key, ".meta");
	rq = (struct req){.method = "PUT", .object = mname, .out_fd = -1, .body_fd = -1, .body = meta,
	                  .body_len = mlen};
	if (s3_perform(&s, &rq) != 0 || rq.status != 200) {
		warn_req(&s, &rq, "could not upload the meta of %.12s…", key);
		goto cleanup;
	}
	char b[32];
	log_info("remote: uploaded %.12s… (%s) in %.2f s", key, log_bytes(b, mi.archive_bytes), log_now() - t0);
	ret = 0;
cleanup:
	if (ret != 0 && !sig_received)
		log_warning("remote: %.12s… not uploaded; the local cache has it", key);
	if (fd >= 0)
		close(fd);
	req_free(&rq);
	free(meta);
	free(aname);
	free(mname);
	s3_close(&s);
	return ret;
}

/* ----------------------------------------------------------------- leases */

struct lease {
	char owner[256];
	int64_t acquired;
	long ttl;
	bool valid;
};

static void
lease_parse(const char *text, size_t len, struct lease *l)
{
	memset(l, 0, sizeof(*l));
	if (len > 4096 || memchr(text, '\0', len))
		return;
	bool have_owner = false, have_time = false;
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char line[300];
		if (ll < sizeof(line)) {
			memcpy(line, p, ll);
			line[ll] = '\0';
			long long v;
			char tail;
			if (strncmp(line, "owner = ", 8) == 0 && ll - 8 < sizeof(l->owner)) {
				memcpy(l->owner, line + 8, ll - 8 + 1);
				have_owner = true;
			} else if (sscanf(line, "acquired = %lld%c", &v, &tail) == 1 && v >= 0) {
				l->acquired = v;
				have_time = true;
			} else if (sscanf(line, "ttl = %lld%c", &v, &tail) == 1 && v > 0 && v <= LONG_MAX) {
				l->ttl = (long)v;
			}
		}
		p += ll + 1;
	}
	l->valid = have_owner && have_time && l->owner[0];
}

static bool
lease_expired(const struct lease *l, long ttl_s)
{
	long ttl = l->ttl > 0 ? l->ttl : ttl_s;
	return !l->valid || (int64_t)time(NULL) > l->acquired + ttl;
}

static bool
owner_ok(const char *owner)
{
	if (!owner || !*owner || strlen(owner) >= sizeof(((struct lease *)0)->owner))
		return false;
	for (const char *p = owner; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	}
	return true;
}

/*
 * Reads the lease: 0 with *l (and *etag, caller frees) set, 1 when there is
 * none, -1 on error (warned).  `cleanup`: not cut short by a signal.
 */
static int
lease_read(struct s3 *s, const char *object, struct lease *l, char **etag, bool cleanup)
{
	struct req rq = {.method = "GET", .object = object, .out_fd = -1, .body_fd = -1, .cleanup = cleanup};
	int ret = -1;

	memset(l, 0, sizeof(*l));
	if (etag)
		*etag = NULL;
	if (s3_perform(s, &rq) != 0 || (rq.status != 200 && rq.status != 404)) {
		warn_req(s, &rq, "could not read lease \"%s\"", object);
	} else if (rq.status == 404) {
		ret = 1;
	} else {
		lease_parse(sb_str(&rq.resp), rq.resp.len, l);
		if (etag && rq.etag)
			*etag = xstrdup(rq.etag);
		ret = 0;
	}
	req_free(&rq);
	return ret;
}

/*
 * Writes our lease with the given condition header (NULL: none).  0 written,
 * 1 precondition failed (someone else's write won), 2 the server does not
 * implement the condition, -1 error (warned).
 */
static int
lease_write(struct s3 *s, const char *object, const char *text, const char *condition)
{
	struct req rq = {.method = "PUT", .object = object, .out_fd = -1, .body_fd = -1, .body = text,
	                 .body_len = strlen(text)};
	int ret = -1;

	rq.hdr[0] = condition;
	if (s3_perform(s, &rq) != 0) {
		warn_req(s, &rq, "could not write lease \"%s\"", object);
	} else if (rq.status == 200) {
		ret = 0;
	} else if (rq.status == 412 || rq.status == 409) {
		/* 409 ConditionalRequestConflict: a concurrent conditional write is in progress. */
		ret = 1;
	} else if (rq.status == 501) {
		ret = 2;
	} else {
		warn_req(s, &rq, "could not write lease \"%s\"", object);
	}
	req_free(&rq);
	return ret;
}

/* Reads the lease back after our write: is it ours? */
static enum remote_lease_result
lease_confirm(struct s3 *s, const char *object, const char *owner)
{
	struct lease l;
	int r = lease_read(s, object, &l, NULL, false);
	if (r < 0)
		return REMOTE_LEASE_ERROR;
	return r == 0 && l.valid && strcmp(l.owner, owner) == 0 ? REMOTE_LEASED : REMOTE_LEASE_HELD;
}

enum remote_lease_result
remote_lease(const struct remote_cfg *rc, const char *key, const char *owner, long ttl_s)
{
	struct s3 s;
	struct lease l;
	char *object = NULL, *text = NULL, *etag = NULL, *cond = NULL;
	enum remote_lease_result ret = REMOTE_LEASE_ERROR;

	if (!entry_key_valid(key) || !owner_ok(owner) || ttl_s <= 0) {
		log_warning("remote: bad lease request for \"%s\"", key ? key : "");
		return REMOTE_LEASE_ERROR;
	}
	if (s3_open(&s, rc) != 0)
		return REMOTE_LEASE_ERROR;
	object = obj_name(&s, key, ".lease");
	text = xasprintf("owner = %s\nacquired = %lld\nttl = %ld\n", owner, (long long)time(NULL), ttl_s);

	/* Two rounds: a lease that vanishes between our failed create and our read is created again. */
	bool no_cond = false;
	for (int round = 0; round < 2; round++) {
		int w = lease_write(&s, object, text, "If-None-Match: *");
		if (w < 0)
			goto cleanup;
		if (w == 0) {
			ret = lease_confirm(&s, object, owner);
			goto cleanup;
		}
		int r = lease_read(&s, object, &l, &etag, false);
		if (r < 0)
			goto cleanup;
		no_cond = w == 2;
		if (r == 1) {
			if (no_cond)
				break; /* no conditions here: write it plainly below */
			continue;
		}
		if (l.valid && strcmp(l.owner, owner) == 0) {
			ret = REMOTE_LEASED; /* ours from an earlier try of this owner */
			goto cleanup;
		}
		if (!lease_expired(&l, ttl_s)) {
			log_info("remote: %.12s… is being built by %s (since %lld s)", key, l.owner,
			         (long long)((int64_t)time(NULL) - l.acquired));
			ret = REMOTE_LEASE_HELD;
			goto cleanup;
		}
		if (no_cond)
			break;
		log_info("remote: taking over the expired lease of %.12s…%s%s", key, l.valid ? " from " : "",
		         l.valid ? l.owner : "");
		if (!etag) {
			log_warning("remote \"%s\": lease \"%s\" has no ETag; not taking it over", rc->url, object);
			goto cleanup;
		}
		cond = xasprintf("If-Match: %s", etag);
		w = lease_write(&s, object, text, cond);
		if (w < 0)
			goto cleanup;
		if (w == 1) {
			ret = REMOTE_LEASE_HELD; /* another runner took it over first */
			goto cleanup;
		}
		if (w == 2) {
			no_cond = true;
			break;
		}
		ret = lease_confirm(&s, object, owner);
		goto cleanup;
	}
	if (!no_cond) {
		ret = REMOTE_LEASE_HELD; /* it came and went twice: contended; let the others have it */
		goto cleanup;
	}
	/*
	 * The server implements no conditional writes (501) and the lease is
	 * absent or expired: write, then read back.  Best effort only.
	 */
	if (lease_write(&s, object, text, NULL) == 0)
		ret = lease_confirm(&s, object, owner);
cleanup:
	free(object);
	free(text);
	free(etag);
	free(cond);
	s3_close(&s);
	return ret;
}

enum remote_release_result
remote_lease_release(const struct remote_cfg *rc, const char *key, const char *owner)
{
	struct s3 s;
	struct lease l;
	char *object = NULL, *etag = NULL, *cond = NULL;
	struct req rq = {.method = "DELETE", .out_fd = -1, .body_fd = -1, .cleanup = true};
	enum remote_release_result ret = REMOTE_RELEASE_ERROR;

	if (!entry_key_valid(key) || !owner_ok(owner)) {
		log_warning("remote: bad lease release for \"%s\"", key ? key : "");
		return REMOTE_RELEASE_ERROR;
	}
	if (s3_open(&s, rc) != 0)
		return REMOTE_RELEASE_ERROR;
	object = obj_name(&s, key, ".lease");
	/* Released on the way out of a SIGTERM too: else the fleet waits out the ttl. */
	int r = lease_read(&s, object, &l, &etag, true);
	if (r != 0) {
		ret = r == 1 ? REMOTE_RELEASED : REMOTE_RELEASE_ERROR;
		goto cleanup;
	}
	if (!l.valid || strcmp(l.owner, owner) != 0) {
		log_debug("remote: the lease of %.12s… is not ours; left alone", key);
		ret = REMOTE_RELEASE_NOT_OURS;
		goto cleanup;
	}
	rq.object = object;
	if (etag) {
		cond = xasprintf("If-Match: %s", etag);
		rq.hdr[0] = cond;
	}
	if (s3_perform(&s, &rq) != 0 || (rq.status != 204 && rq.status != 200 && rq.status != 404 &&
	                                  rq.status != 412)) {
		warn_req(&s, &rq, "could not remove lease \"%s\"", object);
		goto cleanup;
	}
	ret = rq.status == 412 ? REMOTE_RELEASE_NOT_OURS : REMOTE_RELEASED;
cleanup:
	req_free(&rq);
	free(object);
	free(etag);
	free(cond);
	s3_close(&s);
	return ret;
}

enum remote_wait_result
remote_wait_for(const struct remote_cfg *rc, const char *key, long timeout_s)
{
	struct s3 s;
	char *mname = NULL, *lname = NULL;
	double start = log_now(), next_report = start + WAIT_REPORT_S;
	bool warned = false;
	enum remote_wait_result ret = REMOTE_WAIT_GAVE_UP;

	if (!entry_key_valid(key))
		return REMOTE_WAIT_GAVE_UP;
	if (s3_open(&s, rc) != 0)
		return REMOTE_WAIT_GAVE_UP;
	mname = obj_name(&s, key, ".meta");
	lname = obj_name(&s, key, ".lease");
	for (;;) {
		struct req rq = {.method = "HEAD", .object = mname, .out_fd = -1, .body_fd = -1};
		int r = s3_perform(&s, &rq);
		long status = rq.status;
		if (r != 0 && rq.outcome == OUT_SIGNAL) {
			req_free(&rq);
			ret = REMOTE_WAIT_SIGNAL;
			break;
		}
		if (r == 0 && status == 200) {
			req_free(&rq);
			ret = REMOTE_WAIT_APPEARED;
			break;
		}
		if ((r != 0 || status != 404) && !warned) {
			warn_req(&s, &rq, "could not look for %.12s… (still trying)", key);
			warned = true;
		}
		req_free(&rq);
		if (r == 0 && status == 404) {
			struct lease l;
			int lr = lease_read(&s, lname, &l, NULL, false);
			if (lr == 1 || (lr == 0 && lease_expired(&l, timeout_s > 0 ? timeout_s : 1))) {
				/* The meta may have landed just before the lease went. */
				struct req again = {.method = "HEAD", .object = mname, .out_fd = -1, .body_fd = -1};
				if (s3_perform(&s, &again) == 0 && again.status == 200)
					ret = REMOTE_WAIT_APPEARED;
				else
					log_info("remote: the builder of %.12s… %s without uploading it", key,
					         lr == 1 ? "gave up" : "went quiet");
				req_free(&again);
				break;
			}
		}
		double now = log_now();
		if (now - start >= (double)timeout_s) {
			log_info("remote: %.12s… did not appear within %ld s", key, timeout_s);
			break;
		}
		if (now >= next_report) {
			log_info("remote: waiting for another runner to upload %.12s… (%.0f s)", key, now - start);
			next_report += WAIT_REPORT_S;
		}
		double nap = WAIT_POLL_S;
		if (start + (double)timeout_s - now < nap)
			nap = start + (double)timeout_s - now;
		if (!sleep_interruptible(nap)) {
			ret = REMOTE_WAIT_SIGNAL;
			break;
		}
	}
	free(mname);
	free(lname);
	s3_close(&s);
	return ret;
}

/* ------------------------------------------------------------ list, prune */

int64_t
remote_entry_mtime(const struct remote_entry *e)
{
	int64_t t = e->has_meta ? e->meta_mtime : 0;
	if (e->has_archive && e->archive_mtime > t)
		t = e->archive_mtime;
	if (e->has_lease && e->lease_mtime > t)
		t = e->lease_mtime;
	return t;
}

static int
cmp_entry_recent_first(const void *x, const void *y)
{
	const struct remote_entry *a = x, *b = y;
	int64_t ta = remote_entry_mtime(a), tb = remote_entry_mtime(b);
	if (ta != tb)
		return ta > tb ? -1 : 1;
	return strcmp(a->key, b->key);
}

static int
cmp_entry_oldest_first(const void *x, const void *y)
{
	return -cmp_entry_recent_first(x, y);
}

/* Lists every object under s->dir (all pages).  0, or -1 (logged as an error). */
static int
list_objects(struct s3 *s, struct remote_object **v, size_t *n)
{
	char *token = NULL, *prefix_enc = remote_uri_encode(s->dir, false);
	int ret = -1;

	*v = NULL;
	*n = 0;
	for (int page = 0;; page++) {
		/* Parameters in canonical order: libcurl 7.88 signs the query as given. */
		char *tok_enc = token ? remote_uri_encode(token, false) : NULL;
		char *q = tok_enc ? xasprintf("continuation-token=%s&list-type=2&prefix=%s", tok_enc, prefix_enc)
		                  : xasprintf("list-type=2&prefix=%s", prefix_enc);
		struct req rq = {.method = "GET", .query = q, .out_fd = -1, .body_fd = -1};
		bool truncated = false;
		int r = s3_perform(s, &rq);
		if (r != 0 || rq.status != 200) {
			char *why = req_error(s, &rq);
			log_error("remote \"%s\": could not list the bucket: %s", s->rc->url, why);
			free(why);
		} else if (remote_parse_list(rq.resp.buf, rq.resp.len, v, n, &truncated, &token) != 0) {
			log_error("remote \"%s\": the bucket listing is not a ListObjectsV2 answer", s->rc->url);
			r = -1;
		}
		bool ok = r == 0 && rq.status == 200;
		req_free(&rq);
		free(q);
		free(tok_enc);
		if (!ok)
			break;
		if (!truncated) {
			ret = 0;
			break;
		}
		if (page > 100000) {
			log_error("remote \"%s\": the bucket listing does not end", s->rc->url);
			break;
		}
	}
	free(token);
	free(prefix_enc);
	if (ret != 0) {
		remote_objects_free(*v, *n);
		*v = NULL;
		*n = 0;
	}
	return ret;
}

/* Groups objects into entries by key; objects that are not ours are skipped. */
static int
list_entries(struct s3 *s, struct remote_entry **out, size_t *nout)
{
	struct remote_object *objs;
	size_t n, ne = 0;
	struct remote_entry *v = NULL;
	size_t dl = strlen(s->dir);

	if (list_objects(s, &objs, &n) != 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *name = objs[i].name;
		if (strncmp(name, s->dir, dl) != 0)
			continue;
		name += dl;
		if (strlen(name) < 64 + 5)
			continue;
		char key[65];
		memcpy(key, name, 64);
		key[64] = '\0';
		const char *sfx = name + 64;
		if (!entry_key_valid(key))
			continue;
		size_t j;
		for (j = 0; j < ne; j++)
			if (strcmp(v[j].key, key) == 0)
				break;
		if (j == ne) {
			v = xrealloc(v, (ne + 1) * sizeof(*v));
			memset(&v[ne], 0, sizeof(v[ne]));
			memcpy(v[ne].key, key, 65);
			ne++;
		}
		struct remote_entry *e = &v[j];
		if (strcmp(sfx, ".meta") == 0) {
			e->has_meta = true;
			e->meta_bytes = objs[i].size;
			e->meta_mtime = objs[i].mtime;
		} else if (strcmp(sfx, ".lease") == 0) {
			e->has_lease = true;
			e->lease_mtime = objs[i].mtime;
		} else {
			for (size_t c = 0; c < 3; c++) {
				if (strcmp(sfx, entry_suffix(entry_all_compressions[c])) == 0) {
					e->has_archive = true;
					e->suffix = entry_suffix(entry_all_compressions[c]);
					e->archive_bytes += objs[i].size;
					if (objs[i].mtime > e->archive_mtime)
						e->archive_mtime = objs[i].mtime;
				}
			}
		}
	}
	remote_objects_free(objs, n);
	*out = v;
	*nout = ne;
	return 0;
}

const char *
remote_entry_state(const struct remote_entry *e)
{
	if (e->has_meta && e->has_archive)
		return "ok";
	if (e->has_archive)
		return "no meta";
	if (e->has_meta)
		return "no archive";
	return "lease only";
}

int
remote_entries(const struct remote_cfg *rc, struct remote_entry **out, size_t *nout)
{
	struct s3 s;
	struct remote_entry *v = NULL;
	size_t n = 0;

	*out = NULL;
	*nout = 0;
	if (s3_open(&s, rc) != 0)
		return -1;
	if (list_entries(&s, &v, &n) != 0) {
		s3_close(&s);
		return -1;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_entry_recent_first);
	for (size_t i = 0; i < n; i++)
		if (v[i].suffix)
			v[i].archive = xasprintf("%s%s%s", s.dir, v[i].key, v[i].suffix);
	s3_close(&s);
	*out = v;
	*nout = n;
	return 0;
}

void
remote_entries_free(struct remote_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].archive);
	free(v);
}

/* Deletes one object; 0 (also when absent) or -1 (warned). */
static int
delete_object(struct s3 *s, const char *object)
{
	struct req rq = {.method = "DELETE", .object = object, .out_fd = -1, .body_fd = -1};
	int ret = 0;
	if (s3_perform(s, &rq) != 0 || (rq.status != 204 && rq.status != 200 && rq.status != 404)) {
		warn_req(s, &rq, "could not delete \"%s\"", object);
		ret = -1;
	}
	req_free(&rq);
	return ret;
}

/* Deletes what the entry has: meta, then archives, then lease.  0 or -1. */
static int
delete_entry(struct s3 *s, const struct remote_entry *e)
{
	char *m = obj_name(s, e->key, ".meta");
	int ret = e->has_meta ? delete_object(s, m) : 0;
	free(m);
	if (ret != 0)
		return -1; /* never an archive without its meta gone first */
	for (size_t c = 0; e->has_archive && c < 3; c++) {
		const char *sfx = entry_suffix(entry_all_compressions[c]);
		if (e->suffix && strcmp(sfx, e->suffix) != 0)
			continue;
		char *a = obj_name(s, e->key, sfx);
		if (delete_object(s, a) != 0)
			ret = -1;
		free(a);
	}
	if (e->has_lease) {
		char *l = obj_name(s, e->key, ".lease");
		delete_object(s, l);
		free(l);
	}
	return ret;
}

static void
prune_line(FILE *out, bool dry_run, const struct remote_entry *e, const char *why)
{
	char b[32], t[32];
	fprintf(out, "%s %s (%s, %s, %s)\n", dry_run ? "would remove" : "removed", e->key,
	        log_bytes(b, e->archive_bytes), iso_time(t, remote_entry_mtime(e)), why);
}

int
remote_prune(const struct remote_cfg *rc, uint64_t max_bytes, long max_entries, bool dry_run, FILE *out)
{
	struct s3 s;
	struct remote_entry *v = NULL;
	size_t n = 0, complete = 0;
	uint64_t total = 0;
	int removed = 0, ret = -1;
	int64_t now = (int64_t)time(NULL);

	if (s3_open(&s, rc) != 0)
		return -1;
	if (list_entries(&s, &v, &n) != 0)
		goto cleanup;
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_entry_oldest_first);
	for (size_t i = 0; i < n; i++) {
		if (v[i].has_meta && v[i].has_archive) {
			complete++;
			total += v[i].archive_bytes;
		}
	}
	bool failed = false;
	for (size_t i = 0; i < n; i++) {
		struct remote_entry *e = &v[i];
		if (!(e->has_meta && e->has_archive))
			continue;
		bool over = (max_entries > 0 && complete > (size_t)max_entries) || (max_bytes > 0 && total > max_bytes);
		if (!over)
			break;
		if (!dry_run && delete_entry(&s, e) != 0) {
			failed = true;
			continue;
		}
		prune_line(out, dry_run, e, "oldest upload");
		complete--;
		total -= e->archive_bytes;
		removed++;
	}
	/* Orphans: only old ones, a young one may be an upload or a build in progress. */
	for (size_t i = 0; i < n; i++) {
		struct remote_entry *e = &v[i];
		if ((e->has_meta && e->has_archive) || now - remote_entry_mtime(e) < ORPHAN_AGE_S)
			continue;
		if (!dry_run && delete_entry(&s, e) != 0) {
			failed = true;
			continue;
		}
		prune_line(out, dry_run, e, remote_entry_state(e));
	}
	fflush(out);
	ret = failed ? -1 : removed;
cleanup:
	free(v);
	s3_close(&s);
	return ret;
}
