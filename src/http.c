/*
 * http — see http.h.
 */
#include "http.h"
#include "log.h"
#include "sig.h"

#include <stdio.h>

/* Longest wait in curl_multi_poll before the signal and the deadline are looked at again. */
#define POLL_MS 200

void
http_xfer_attach(struct http_xfer *x, CURL *easy)
{
	x->easy = easy;
	x->done = false;
	x->result = CURLE_OK;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
}

/* Marks the transfers curl reports finished. */
static void
collect_done(CURLM *multi)
{
	CURLMsg *msg;
	int queued;
	while ((msg = curl_multi_info_read(multi, &queued)) != NULL) {
		struct http_xfer *other = NULL;
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&other);
		if (other) {
			other->done = true;
			other->result = msg->data.result;
		}
	}
}

enum http_drive_result
http_drive(CURLM *multi, struct http_xfer *x, const bool *stop_early, double deadline, bool interruptible,
           char *err, size_t err_len)
{
	for (;;) {
		int running = 0;
		CURLMcode mc = curl_multi_perform(multi, &running);
		if (mc != CURLM_OK) {
			snprintf(err, err_len, "%s", curl_multi_strerror(mc));
			return HTTP_ERROR;
		}
		collect_done(multi);
		if (x->done || (stop_early && *stop_early))
			return HTTP_FINISHED;
		if (interruptible) {
			sig_drain();
			if (sig_received)
				return HTTP_SIGNAL;
		}
		int wait_ms = POLL_MS;
		if (deadline > 0) {
			double left = deadline - log_now();
			if (left <= 0)
				return HTTP_TIMEOUT;
			if (left * 1000 < wait_ms)
				wait_ms = (int)(left * 1000) + 1;
		}
		struct curl_waitfd extra = {.fd = sig_fd(), .events = CURL_WAIT_POLLIN};
		unsigned n_extra = interruptible && extra.fd >= 0 ? 1 : 0;
		mc = curl_multi_poll(multi, n_extra ? &extra : NULL, n_extra, wait_ms, NULL);
		if (mc != CURLM_OK) {
			snprintf(err, err_len, "%s", curl_multi_strerror(mc));
			return HTTP_ERROR;
		}
	}
}
