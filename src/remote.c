/*
 * remote — see remote.h.
 *
 * One `struct conn` per public call: where pgstash's objects live in the
 * bucket and an S3 session (s3.h) whose connection cache serves the call's
 * requests.
 */
#include "remote.h"
#include "config.h"
#include "s3.h"
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

#define MAX_PARTS 10000
#define WAIT_POLL_S 2.0
#define WAIT_REPORT_S 30.0
/* Objects of an incomplete entry younger than this may be an upload in progress. */
#define ORPHAN_AGE_S 3600

/* ------------------------------------------------------------ pure helpers */

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

/* ------------------------------------------------------------- the client */

/* A remote session: the S3 client and where pgstash's objects live in the bucket. */
struct conn {
	struct s3 s3;
	const struct remote_cfg *rc;
	char *bucket;
	char *prefix;   /* "" or "a/b" */
	char *dir;      /* object name prefix of the entries: "a/b/pgstash-v1/" */
};

static void
conn_close(struct conn *c)
{
	s3_close(&c->s3);
	free(c->bucket);
	free(c->prefix);
	free(c->dir);
	memset(c, 0, sizeof(*c));
}

/* 0, or -1 (logged as a warning). */
static int
conn_open(struct conn *c, const struct remote_cfg *rc)
{
	struct cfg_endpoint ep;
	const char *why = "";

	memset(c, 0, sizeof(*c));
	c->rc = rc;
	if (!remote_enabled(rc)) {
		log_warning("no remote configured");
		return -1;
	}
	if (cfg_remote_parse_url(rc->url, &c->bucket, &c->prefix) != 0) {
		log_warning("remote url \"%s\" is not s3://BUCKET[/PREFIX]", rc->url);
		return -1;
	}
	if (cfg_remote_endpoint(rc, &ep, &why) != 0) {
		log_warning("remote endpoint \"%s\": %s", rc->endpoint ? rc->endpoint : "", why);
		conn_close(c);
		return -1;
	}
	char *port = ep.port ? xasprintf(":%s", ep.port) : xstrdup("");
	char *base;
	if (rc->path_style)
		base = xasprintf("%s://%s%s/%s", ep.scheme, ep.host, port, c->bucket);
	else
		base = xasprintf("%s://%s.%s%s", ep.scheme, c->bucket, ep.host, port);
	free(port);
	cfg_endpoint_free(&ep);
	c->dir = c->prefix[0] ? xasprintf("%s/%s/", c->prefix, STORE_DIR_NAME) : xasprintf("%s/", STORE_DIR_NAME);
	struct s3_target t = {.label = rc->url, .base = base, .region = cfg_remote_region(rc), .access_key = rc->access_key,
	                      .secret_key = rc->secret_key, .timeout_s = timeout_of(rc)};
	int rc_open = s3_open(&c->s3, &t);
	free(base);
	if (rc_open != 0) {
		conn_close(c);
		return -1;
	}
	return 0;
}

/* "a/b/pgstash-v1/<key><suffix>"; caller frees. */
static char *
obj_name(const struct conn *s, const char *key, const char *suffix)
{
	return xasprintf("%s%s%s", s->dir, key, suffix);
}

/* ------------------------------------------------------------------- get */

/*
 * Downloads and checks the meta of `key` into mrq->resp and *mi.
 * REMOTE_HIT: a valid meta of key; REMOTE_MISS (logged at info);
 * REMOTE_GET_ERROR (warned).
 */
static enum remote_get_result
get_meta(struct conn *s, const char *key, struct s3_req *mrq, struct entry_meta *mi)
{
	char why[200];
	if (s3_perform(&s->s3, mrq) != 0) {
		s3_warn(&s->s3, mrq, "could not look up %.12s…", key);
		return REMOTE_GET_ERROR;
	}
	if (mrq->status == 404) {
		log_info("remote miss %.12s…", key);
		return REMOTE_MISS;
	}
	if (mrq->status != 200) {
		s3_warn(&s->s3, mrq, "could not download the meta of %.12s…", key);
		return REMOTE_GET_ERROR;
	}
	if (meta_parse(sb_str(&mrq->resp), mrq->resp.len, mi, why, sizeof(why)) != 0) {
		log_warning("remote \"%s\": the meta of %.12s… is not valid: %s", s->rc->url, key, why);
		return REMOTE_GET_ERROR;
	}
	if (strcmp(mi->key, key) != 0) {
		log_warning("remote \"%s\": the meta of %.12s… names another key", s->rc->url, key);
		return REMOTE_GET_ERROR;
	}
	return REMOTE_HIT;
}

/*
 * Downloads the archive `mi` names into the flocked temp file *fd / *path
 * (set before the transfer; the caller closes and, on failure, unlinks),
 * digesting it on the way and checking size and SHA-256.  0, or -1 (warned).
 */
static int
get_archive(struct conn *s, const char *key, const struct entry_meta *mi, const char *dir, int *fd, char **path)
{
	const char *suffix = entry_suffix(mi->compression);
	*fd = durable_tmp_create(dir, key, suffix, 0600, path);
	if (*fd < 0)
		return -1;
	char *aname = obj_name(s, key, suffix);
	struct s3_req arq = {.method = "GET", .object = aname, .out_fd = *fd, .out_name = *path, .body_fd = -1,
	                     .stream = true, .out_md = digest_new(), .out_max = mi->archive_bytes};
	char hex[65];
	int ret = -1;

	if (s3_perform(&s->s3, &arq) != 0) {
		if (arq.outcome != S3_OUT_LOCAL)
			s3_warn(&s->s3, &arq, "could not download the archive of %.12s…", key);
	} else if (arq.status != 200) {
		s3_warn(&s->s3, &arq, "could not download the archive of %.12s…", key);
	} else if (arq.out_overflow) {
		log_warning("remote \"%s\": the archive of %.12s… is larger than the %" PRIu64 " bytes its meta says",
		            s->rc->url, key, mi->archive_bytes);
	} else if (arq.out_bytes != mi->archive_bytes) {
		log_warning("remote \"%s\": the archive of %.12s… is %" PRIu64 " bytes, its meta says %" PRIu64,
		            s->rc->url, key, arq.out_bytes, mi->archive_bytes);
	} else if (digest_final(arq.out_md, hex), strcmp(hex, mi->archive_sha256) != 0) {
		log_warning("remote \"%s\": the archive of %.12s… does not match its meta's SHA-256 (%.12s…, meta says "
		            "%.12s…)", s->rc->url, key, hex, mi->archive_sha256);
	} else {
		ret = 0;
	}
	digest_free(arq.out_md);
	s3_req_free(&arq);
	free(aname);
	return ret;
}

enum remote_get_result
remote_get(const struct remote_cfg *rc, const char *key, const char *local_dir_tmp, remote_accept_fn accept,
           void *accept_ctx, char **archive_path_out, char **meta_path_out)
{
	struct conn s;
	struct s3_req mrq = {.method = "GET", .out_fd = -1, .body_fd = -1};
	struct entry_meta mi = {0};
	char *mname = NULL, *apath = NULL, *mpath = NULL;
	int afd = -1, mfd = -1;
	enum remote_get_result ret = REMOTE_GET_ERROR;
	double t0 = log_now();

	*archive_path_out = *meta_path_out = NULL;
	if (!entry_key_valid(key)) {
		log_warning("remote: invalid cache key \"%s\"", key ? key : "");
		return REMOTE_GET_ERROR;
	}
	if (conn_open(&s, rc) != 0)
		return REMOTE_GET_ERROR;

	mname = obj_name(&s, key, ".meta");
	mrq.object = mname;
	ret = get_meta(&s, key, &mrq, &mi);
	if (ret != REMOTE_HIT)
		goto cleanup;
	ret = REMOTE_GET_ERROR;
	char why[200];
	if (accept && !accept(&mi, accept_ctx, why, sizeof(why))) {
		log_warning("remote entry %.12s… is refused, %s (not downloaded)", key, why);
		goto cleanup;
	}
	if (get_archive(&s, key, &mi, local_dir_tmp, &afd, &apath) != 0)
		goto cleanup;
	mfd = durable_tmp_create(local_dir_tmp, key, ".meta", 0600, &mpath);
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
	entry_meta_free(&mi);
	s3_req_free(&mrq);
	free(apath);
	free(mpath);
	free(mname);
	conn_close(&s);
	return ret;
}

/* ------------------------------------------------------------------- put */

/* Is rq's 200 answer really an error?  CompleteMultipartUpload may say so in the body. */
static bool
body_is_error(const struct s3_req *rq)
{
	const char *b, *e;
	return rq->resp.len > 0 && s3_xml_find(rq->resp.buf, rq->resp.buf + rq->resp.len, "Error", &b, &e) != NULL;
}

static void
multipart_abort(struct conn *s, const char *object, const char *upload_id)
{
	char *id = s3_uri_encode(upload_id, false);
	char *q = xasprintf("uploadId=%s", id);
	struct s3_req rq = {.method = "DELETE", .object = object, .query = q, .out_fd = -1, .body_fd = -1,
	                 .cleanup = true};
	if (s3_perform(&s->s3, &rq) != 0 || (rq.status != 204 && rq.status != 200 && rq.status != 404))
		s3_warn(&s->s3, &rq, "could not abort the multipart upload of \"%s\" (a lifecycle rule removes it)",
		         object);
	s3_req_free(&rq);
	free(q);
	free(id);
}

static int
put_multipart(struct conn *s, const char *object, int fd, uint64_t size, const char *key)
{
	struct s3_req rq = {.method = "POST", .object = object, .query = "uploads=", .out_fd = -1, .body_fd = -1};
	struct strbuf done = {0};
	char *upload_id = NULL, *id_enc = NULL, *q = NULL;
	uint64_t part = s->rc->part_size ? s->rc->part_size : REMOTE_PART_SIZE;
	int ret = -1;

	if (part < REMOTE_MIN_PART_SIZE)
		part = REMOTE_MIN_PART_SIZE;
	while ((size + part - 1) / part > MAX_PARTS)
		part *= 2;
	if (s3_perform(&s->s3, &rq) != 0 || rq.status != 200 || body_is_error(&rq)) {
		s3_warn(&s->s3, &rq, "could not start the upload of %.12s…", key);
		goto cleanup;
	}
	upload_id = s3_xml_text(rq.resp.buf, rq.resp.len, "UploadId");
	if (!upload_id || !*upload_id) {
		log_warning("remote \"%s\": the answer to CreateMultipartUpload has no UploadId", s->rc->url);
		goto cleanup;
	}
	id_enc = s3_uri_encode(upload_id, false);
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
		s3_req_free(&rq);
		rq = (struct s3_req){.method = "PUT", .object = object, .query = q, .out_fd = -1, .body_fd = fd,
		                  .body_off = off, .body_size = len, .payload_sha = sha, .stream = true};
		if (s3_perform(&s->s3, &rq) != 0 || rq.status != 200 || !rq.etag || !*rq.etag) {
			s3_warn(&s->s3, &rq, "could not upload part %u of %u of %.12s…", i + 1, nparts, key);
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
	s3_req_free(&rq);
	rq = (struct s3_req){.method = "POST", .object = object, .query = q, .out_fd = -1, .body_fd = -1,
	                  .body = done.buf, .body_len = done.len};
	/* Completing a large upload can take S3 a while; it sends blanks meanwhile. */
	if (s3_perform(&s->s3, &rq) != 0 || rq.status != 200 || body_is_error(&rq)) {
		s3_warn(&s->s3, &rq, "could not complete the upload of %.12s…", key);
		goto abort;
	}
	log_debug("remote: uploaded %.12s… in %u parts of %" PRIu64 " bytes", key, nparts, part);
	ret = 0;
	goto cleanup;
abort:
	multipart_abort(s, object, upload_id);
cleanup:
	s3_req_free(&rq);
	sb_free(&done);
	free(upload_id);
	free(id_enc);
	free(q);
	return ret;
}

int
remote_put(const struct remote_cfg *rc, const char *key, const char *archive_path, const char *meta_path)
{
	struct conn s;
	struct entry_meta mi = {0};
	struct s3_req rq = {.out_fd = -1, .body_fd = -1};
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
	if (conn_open(&s, rc) != 0)
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
		rq = (struct s3_req){.method = "PUT", .object = aname, .out_fd = -1, .body_fd = fd, .body_off = 0,
		                  .body_size = mi.archive_bytes, .payload_sha = mi.archive_sha256, .stream = true};
		if (s3_perform(&s.s3, &rq) != 0 || rq.status != 200) {
			s3_warn(&s.s3, &rq, "could not upload the archive of %.12s…", key);
			goto cleanup;
		}
		s3_req_free(&rq);
	}
	/* The meta last: a reader must never find a meta whose archive is not there yet. */
	mname = obj_name(&s, key, ".meta");
	rq = (struct s3_req){.method = "PUT", .object = mname, .out_fd = -1, .body_fd = -1, .body = meta,
	                  .body_len = mlen};
	if (s3_perform(&s.s3, &rq) != 0 || rq.status != 200) {
		s3_warn(&s.s3, &rq, "could not upload the meta of %.12s…", key);
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
	entry_meta_free(&mi);
	s3_req_free(&rq);
	free(meta);
	free(aname);
	free(mname);
	conn_close(&s);
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
lease_read(struct conn *s, const char *object, struct lease *l, char **etag, bool cleanup)
{
	struct s3_req rq = {.method = "GET", .object = object, .out_fd = -1, .body_fd = -1, .cleanup = cleanup};
	int ret = -1;

	memset(l, 0, sizeof(*l));
	if (etag)
		*etag = NULL;
	if (s3_perform(&s->s3, &rq) != 0 || (rq.status != 200 && rq.status != 404)) {
		s3_warn(&s->s3, &rq, "could not read lease \"%s\"", object);
	} else if (rq.status == 404) {
		ret = 1;
	} else {
		lease_parse(sb_str(&rq.resp), rq.resp.len, l);
		if (etag && rq.etag)
			*etag = xstrdup(rq.etag);
		ret = 0;
	}
	s3_req_free(&rq);
	return ret;
}

/*
 * Writes our lease with the given condition header (NULL: none).  0 written,
 * 1 precondition failed (someone else's write won), 2 the server does not
 * implement the condition, -1 error (warned).
 */
static int
lease_write(struct conn *s, const char *object, const char *text, const char *condition)
{
	struct s3_req rq = {.method = "PUT", .object = object, .out_fd = -1, .body_fd = -1, .body = text,
	                 .body_len = strlen(text)};
	int ret = -1;

	rq.hdr[0] = condition;
	if (s3_perform(&s->s3, &rq) != 0) {
		s3_warn(&s->s3, &rq, "could not write lease \"%s\"", object);
	} else if (rq.status == 200) {
		ret = 0;
	} else if (rq.status == 412 || rq.status == 409) {
		/* 409 ConditionalRequestConflict: a concurrent conditional write is in progress. */
		ret = 1;
	} else if (rq.status == 501) {
		ret = 2;
	} else {
		s3_warn(&s->s3, &rq, "could not write lease \"%s\"", object);
	}
	s3_req_free(&rq);
	return ret;
}

/* Reads the lease back after our write: is it ours? */
static enum remote_lease_result
lease_confirm(struct conn *s, const char *object, const char *owner)
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
	struct conn s;
	struct lease l;
	char *object = NULL, *text = NULL, *etag = NULL, *cond = NULL;
	enum remote_lease_result ret = REMOTE_LEASE_ERROR;

	if (!entry_key_valid(key) || !owner_ok(owner) || ttl_s <= 0) {
		log_warning("remote: bad lease request for \"%s\"", key ? key : "");
		return REMOTE_LEASE_ERROR;
	}
	if (conn_open(&s, rc) != 0)
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
	conn_close(&s);
	return ret;
}

enum remote_release_result
remote_lease_release(const struct remote_cfg *rc, const char *key, const char *owner)
{
	struct conn s;
	struct lease l;
	char *object = NULL, *etag = NULL, *cond = NULL;
	struct s3_req rq = {.method = "DELETE", .out_fd = -1, .body_fd = -1, .cleanup = true};
	enum remote_release_result ret = REMOTE_RELEASE_ERROR;

	if (!entry_key_valid(key) || !owner_ok(owner)) {
		log_warning("remote: bad lease release for \"%s\"", key ? key : "");
		return REMOTE_RELEASE_ERROR;
	}
	if (conn_open(&s, rc) != 0)
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
	if (s3_perform(&s.s3, &rq) != 0 || (rq.status != 204 && rq.status != 200 && rq.status != 404 &&
	                                  rq.status != 412)) {
		s3_warn(&s.s3, &rq, "could not remove lease \"%s\"", object);
		goto cleanup;
	}
	ret = rq.status == 412 ? REMOTE_RELEASE_NOT_OURS : REMOTE_RELEASED;
cleanup:
	s3_req_free(&rq);
	free(object);
	free(etag);
	free(cond);
	conn_close(&s);
	return ret;
}

enum remote_wait_result
remote_wait_for(const struct remote_cfg *rc, const char *key, long timeout_s)
{
	struct conn s;
	char *mname = NULL, *lname = NULL;
	double start = log_now(), next_report = start + WAIT_REPORT_S;
	bool warned = false;
	enum remote_wait_result ret = REMOTE_WAIT_GAVE_UP;

	if (!entry_key_valid(key))
		return REMOTE_WAIT_GAVE_UP;
	if (conn_open(&s, rc) != 0)
		return REMOTE_WAIT_GAVE_UP;
	mname = obj_name(&s, key, ".meta");
	lname = obj_name(&s, key, ".lease");
	for (;;) {
		struct s3_req rq = {.method = "HEAD", .object = mname, .out_fd = -1, .body_fd = -1};
		int r = s3_perform(&s.s3, &rq);
		long status = rq.status;
		if (r != 0 && rq.outcome == S3_OUT_SIGNAL) {
			s3_req_free(&rq);
			ret = REMOTE_WAIT_SIGNAL;
			break;
		}
		if (r == 0 && status == 200) {
			s3_req_free(&rq);
			ret = REMOTE_WAIT_APPEARED;
			break;
		}
		if ((r != 0 || status != 404) && !warned) {
			s3_warn(&s.s3, &rq, "could not look for %.12s… (still trying)", key);
			warned = true;
		}
		s3_req_free(&rq);
		if (r == 0 && status == 404) {
			struct lease l;
			int lr = lease_read(&s, lname, &l, NULL, false);
			if (lr == 1 || (lr == 0 && lease_expired(&l, timeout_s > 0 ? timeout_s : 1))) {
				/* The meta may have landed just before the lease went. */
				struct s3_req again = {.method = "HEAD", .object = mname, .out_fd = -1, .body_fd = -1};
				if (s3_perform(&s.s3, &again) == 0 && again.status == 200)
					ret = REMOTE_WAIT_APPEARED;
				else
					log_info("remote: the builder of %.12s… %s without uploading it", key,
					         lr == 1 ? "gave up" : "went quiet");
				s3_req_free(&again);
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
		if (!s3_sleep(nap)) {
			ret = REMOTE_WAIT_SIGNAL;
			break;
		}
	}
	free(mname);
	free(lname);
	conn_close(&s);
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
list_objects(struct conn *s, struct s3_object **v, size_t *n)
{
	char *token = NULL, *prefix_enc = s3_uri_encode(s->dir, false);
	int ret = -1;

	*v = NULL;
	*n = 0;
	for (int page = 0;; page++) {
		/* Parameters in canonical order: libcurl 7.88 signs the query as given. */
		char *tok_enc = token ? s3_uri_encode(token, false) : NULL;
		char *q = tok_enc ? xasprintf("continuation-token=%s&list-type=2&prefix=%s", tok_enc, prefix_enc)
		                  : xasprintf("list-type=2&prefix=%s", prefix_enc);
		struct s3_req rq = {.method = "GET", .query = q, .out_fd = -1, .body_fd = -1};
		bool truncated = false;
		int r = s3_perform(&s->s3, &rq);
		if (r != 0 || rq.status != 200) {
			char *why = s3_req_error(&s->s3, &rq);
			log_error("remote \"%s\": could not list the bucket: %s", s->rc->url, why);
			free(why);
		} else if (s3_parse_list(rq.resp.buf, rq.resp.len, v, n, &truncated, &token) != 0) {
			log_error("remote \"%s\": the bucket listing is not a ListObjectsV2 answer", s->rc->url);
			r = -1;
		}
		bool ok = r == 0 && rq.status == 200;
		s3_req_free(&rq);
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
		s3_objects_free(*v, *n);
		*v = NULL;
		*n = 0;
	}
	return ret;
}

/* Groups objects into entries by key; objects that are not ours are skipped. */
static int
list_entries(struct conn *s, struct remote_entry **out, size_t *nout)
{
	struct s3_object *objs;
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
	s3_objects_free(objs, n);
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
	struct conn s;
	struct remote_entry *v = NULL;
	size_t n = 0;

	*out = NULL;
	*nout = 0;
	if (conn_open(&s, rc) != 0)
		return -1;
	if (list_entries(&s, &v, &n) != 0) {
		conn_close(&s);
		return -1;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_entry_recent_first);
	for (size_t i = 0; i < n; i++)
		if (v[i].suffix)
			v[i].archive = xasprintf("%s%s%s", s.dir, v[i].key, v[i].suffix);
	conn_close(&s);
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
delete_object(struct conn *s, const char *object)
{
	struct s3_req rq = {.method = "DELETE", .object = object, .out_fd = -1, .body_fd = -1};
	int ret = 0;
	if (s3_perform(&s->s3, &rq) != 0 || (rq.status != 204 && rq.status != 200 && rq.status != 404)) {
		s3_warn(&s->s3, &rq, "could not delete \"%s\"", object);
		ret = -1;
	}
	s3_req_free(&rq);
	return ret;
}

/* Deletes what the entry has: meta, then archives, then lease.  0 or -1. */
static int
delete_entry(struct conn *s, const struct remote_entry *e)
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
	struct conn s;
	struct remote_entry *v = NULL;
	size_t n = 0, complete = 0;
	uint64_t total = 0;
	int removed = 0, ret = -1;
	int64_t now = (int64_t)time(NULL);

	if (conn_open(&s, rc) != 0)
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
	conn_close(&s);
	return ret;
}
