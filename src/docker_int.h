/*
 * docker_int.h — docker's pure helpers that the unit tests reach, and the
 * output demultiplexer docker_run uses; not an API.
 */
#ifndef PGSTASH_DOCKER_INT_H
#define PGSTASH_DOCKER_INT_H

#include "docker.h"

#include <stdbool.h>
#include <stddef.h>

/* docker_self_container_id, reading the given files; any path may be NULL. */
int docker_self_container_id_from(const char *mountinfo, const char *cgroup,
				  const char *hostname, char **id_out);

/* The JSON body of POST /containers/create for `o`; malloc'ed, caller frees. */
char *docker_create_body(const struct docker_run_opts *o);
/* A container name for step `step`: "pgstash-<step, sanitised>-<suffix>"; malloc'ed. */
char *docker_container_name(const char *step, const char *suffix);
/*
 * The "ApiVersion" to use given the engine's (from /_ping's API-Version
 * header, NULL if absent): ours unless the engine's is older.  Returns a
 * static string or `engine` itself.
 */
const char *docker_pick_api_version(const char *engine);

/*
 * Splits the engine's multiplexed log stream (Tty=false: frames of an 8-byte
 * header — stream 1/2, three zero bytes, big-endian payload length — then the
 * payload) into lines per stream.  Zero-initialise; feed bytes as they come
 * in any chunking; finish once at the end (flushes unterminated lines); free.
 */
typedef void (*docker_line_fn)(void *arg, int stream, const char *line, size_t len);
struct docker_demux {
	unsigned char hdr[8];
	size_t hdr_len;      /* header bytes collected for the current frame */
	size_t left;         /* payload bytes still to come in the current frame */
	int stream;          /* the current frame's stream: 1 stdout, 2 stderr */
	char *line[3];       /* partial line per stream (index 1, 2) */
	size_t line_len[3];
	size_t line_cap[3];
	bool bad;            /* a header was not a valid frame header */
	docker_line_fn fn;
	void *arg;
};
/* 0, or -1 once the stream is not a multiplexed stream (the rest is dropped). */
int docker_demux_feed(struct docker_demux *m, const char *buf, size_t n);
void docker_demux_finish(struct docker_demux *m);
void docker_demux_free(struct docker_demux *m);

/* The private socket the broker listens on for this process ("" when none runs); for tests. */
const char *docker_broker_socket(void);

#endif
