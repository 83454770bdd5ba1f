/*
 * s3 — an S3 API client over libcurl (see s3.c's opening comment for how
 * requests are signed) and the pure parts of the protocol.  Every transfer
 * runs through http_drive, so a terminating signal cuts it short at once
 * (sig_received is then set; the outcome is S3_OUT_SIGNAL and messages are
 * at info level only).  Secrets are never logged.
 *
 * Not for: what the objects mean (remote.h), settings (the caller resolves
 * them into a struct s3_target).
 */
#ifndef PGSTASH_S3_H
#define PGSTASH_S3_H

#include "http.h"
#include "util.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct digest;

/* Where and how to talk to the bucket, resolved by the caller from its settings. */
struct s3_target {
	const char *label;      /* names the store in messages (the s3:// url) */
	const char *base;       /* URL up to and without the object path: ".../bucket" or "https://bucket.host" */
	const char *region;     /* for the signature scope */
	const char *access_key; /* NULL or "": unsigned (anonymous) requests */
	const char *secret_key; /* never logged */
	long timeout_s;         /* connect limit, limit of a small request, window of a transfer's S3_MIN_RATE */
};

/*
 * A streamed transfer (an archive, a part) must move at least this many
 * bytes a second over every timeout_s window (libcurl's low-speed limit),
 * and is cut off at its overall deadline: timeout_s plus its size at this
 * rate.  A server that drips bytes costs a start about timeout_s, not hours.
 */
#define S3_MIN_RATE (64L * 1024)

/* A session: open with s3_open, close with s3_close. */
struct s3 {
	char *label;
	char *base;
	char *sigv4;            /* "aws:amz:REGION:s3" */
	const char *access_key; /* the target's (not owned) */
	const char *secret_key;
	long timeout_s;
	CURLM *multi;
	bool global;            /* curl_global_init done */
};

/* 0, or -1 (logged as a warning).  t's strings must outlive the session (keys) or are copied (label, base). */
int s3_open(struct s3 *s, const struct s3_target *t);
/* Frees the session; a zeroed or failed one is fine. */
void s3_close(struct s3 *s);

enum s3_outcome {
	S3_OUT_OK,      /* an HTTP answer arrived (any status) */
	S3_OUT_FAILED,  /* transport error: rq->errbuf / rq->result */
	S3_OUT_SIGNAL,  /* a terminating signal arrived first */
	S3_OUT_TIMEOUT, /* the deadline or the stall limit passed first */
	S3_OUT_LOCAL,   /* our side failed (writing the download); logged */
};

struct s3_req {
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
	bool stream;                /* a long transfer: S3_MIN_RATE and a deadline by its size (out_max, body_size) */
	bool cleanup;               /* not cut short by a signal (aborting an upload), short deadline */
	/* a 200 answer goes to out_fd (digested into out_md) instead of memory, at most out_max bytes */
	int out_fd;
	const char *out_name;
	struct digest *out_md;
	uint64_t out_max;

	/* the answer */
	enum s3_outcome outcome;
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


/* Frees the answer's strings (not the request's). */
void s3_req_free(struct s3_req *rq);

/*
 * One exchange with retries (up to 3, for 5xx answers and broken
 * connections).  A file sink is truncated and its digest restarted before a
 * retry.  Returns 0 when an answer arrived (rq->status, any), -1 otherwise
 * (rq->outcome says why).
 */
int s3_perform(struct s3 *s, struct s3_req *rq);

/*
 * Why rq did not succeed, for a message: S3's <Error> code and message, or
 * the transport error, or the HTTP status.  Caller frees.
 */
char *s3_req_error(const struct s3 *s, const struct s3_req *rq);
/* Logs a failed request as a warning (a signal at info level): "remote URL: WHAT: WHY". */
void s3_warn(const struct s3 *s, const struct s3_req *rq, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sleeps `seconds` unless a terminating signal arrives; false then. */
bool s3_sleep(double seconds);

/* ---- the protocol's pure parts ---- */

/*
 * S3's URI encoding: every byte but A-Z a-z 0-9 - . _ ~ as %XX (uppercase),
 * '/' kept when keep_slash (object paths), encoded otherwise (query values).
 * Returns a malloc'ed string.
 */
char *s3_uri_encode(const char *s, bool keep_slash);
/*
 * The text of the first element <tag> in xml[0..len) (attributes allowed,
 * <tag/> is ""), entities decoded (&lt; &gt; &amp; &quot; &apos; &#N; &#xH;).
 * Returns a malloc'ed string, or NULL when there is none or it is malformed.
 */
char *s3_xml_text(const char *xml, size_t len, const char *tag);
/*
 * The first element <tag> in [p, end): sets [*ib, *ie) to its content and
 * returns the position after its end tag; NULL when there is none.
 */
const char *s3_xml_find(const char *p, const char *end, const char *tag, const char **ib, const char **ie);
/* "2026-11-21T10:18:30.000Z" (ISO 8601, UTC) to unix seconds; -1 when malformed. */
int64_t s3_parse_time(const char *iso);

struct s3_object {
	char *name;        /* object name, entities decoded; owned */
	uint64_t size;
	int64_t mtime;     /* LastModified, unix seconds */
};
/*
 * Parses one ListObjectsV2 page: appends its <Contents> to *v (*n entries,
 * grown with realloc), sets *truncated and *next_token (malloc'ed, NULL when
 * none; freed first if set).  0, or -1 when the page is not a listing.
 */
int s3_parse_list(const char *xml, size_t len, struct s3_object **v, size_t *n, bool *truncated,
                  char **next_token);
void s3_objects_free(struct s3_object *v, size_t n);

#endif
