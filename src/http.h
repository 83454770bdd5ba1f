/*
 * http — the one loop that drives libcurl transfers (a curl multi handle),
 * shared by the Docker Engine client and the S3 client: bounded by a
 * deadline, and, when asked, cut short at once by a terminating signal (the
 * signal descriptor is polled together with the transfers).
 *
 * Not for: building requests or reading answers (docker.c, s3.c).
 */
#ifndef PGSTASH_HTTP_H
#define PGSTASH_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

/* One transfer on a multi handle.  Its easy handle's CURLOPT_PRIVATE must point at it (http_xfer_attach). */
struct http_xfer {
	CURL *easy;
	bool done;       /* curl finished it: see result */
	CURLcode result;
};

/* Sets x->easy, clears done/result and points the handle's CURLOPT_PRIVATE at x. */
void http_xfer_attach(struct http_xfer *x, CURL *easy);

/* How http_drive ended. */
enum http_drive_result {
	HTTP_FINISHED, /* x is done (see x->result), or *stop_early became true */
	HTTP_SIGNAL,   /* a terminating signal arrived first (interruptible only) */
	HTTP_TIMEOUT,  /* the deadline passed first */
	HTTP_ERROR,    /* the multi handle failed: err filled */
};

/*
 * Drives every transfer on `multi` until x is done or *stop_early (NULL: not
 * used) is true; marks any other finished transfer done too.  deadline: a
 * log_now() time, <= 0 for none.  Nothing is logged.
 */
enum http_drive_result http_drive(CURLM *multi, struct http_xfer *x, const bool *stop_early, double deadline,
                                  bool interruptible, char *err, size_t err_len);

#endif
