/*
 * docker — the smallest Docker Engine API client that runs a migration step
 * in a container: libcurl over the engine's unix socket, cJSON for the
 * bodies.  A step container is created, started, its output followed and
 * relayed line by line to our stderr, waited for, and always removed — also
 * when a terminating signal or the step's timeout cuts it short.  Every
 * container carries the label DOCKER_LABEL_STEP (and DOCKER_LABEL_OWNER when
 * given) so leftovers of a killed sidecar can be found and removed.
 *
 * Not for: pulling or building images, deciding which images may run (the
 * caller passes only images named in the config), or anything a step does
 * inside its container.
 */
#ifndef PGSTASH_DOCKER_H
#define PGSTASH_DOCKER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define DOCKER_DEFAULT_SOCKET "/var/run/docker.sock"
/* The API version this client was written against; older engines get their own. */
#define DOCKER_API_VERSION "1.41"
#define DOCKER_LABEL_STEP "pgstash.step"
#define DOCKER_LABEL_OWNER "pgstash.owner"

/*
 * As root, before dropping to uid/gid: starts the broker, a child that holds
 * uid, gid and the socket's group socket_gid (and nothing else; not
 * dumpable), connects to socket_path on request and passes the connected
 * descriptor back.  From then on every call of this process goes through it,
 * so this process (and the postgres it becomes) need not hold that group.
 * 0, or -1 (logged).
 */
int docker_broker_start(const char *socket_path, uid_t uid, gid_t gid, gid_t socket_gid);
/* Ends the broker and reaps it (before the final exec); nothing when none runs. */
void docker_broker_stop(void);

/* A connection to one engine; fill with docker_open, release with docker_close. */
struct docker {
	char *socket_path;
	char *api_prefix;   /* "/v1.41": the negotiated version, path prefix of every call */
	void *multi;        /* CURLM *, polled together with the signal descriptor */
};

struct docker_run_opts {
	const char *image;        /* required: a name or id the engine has locally */
	char *const *argv;        /* NULL-terminated Cmd; NULL: the image's own CMD */
	char *const *env;         /* NULL-terminated "NAME=value" list; may be NULL */
	const char *workdir;      /* NULL: the image's WORKDIR */
	/* "container:<id>" (then its pid namespace too: the step dies with that container), "host", ...; NULL: the engine's default */
	const char *network_mode;
	const char *volumes_from; /* "<container>[:ro]" whose volumes the step sees; NULL: none */
	const char *user;         /* "uid[:gid]" or a name; NULL: the image's USER */
	const char *step;         /* required: step name, the DOCKER_LABEL_STEP value and part of the name */
	const char *owner;        /* DOCKER_LABEL_OWNER value (e.g. our container id); NULL: no label */
	const char *log_prefix;   /* prepended to every relayed output line; NULL: "" */
	double timeout_s;         /* > 0: kill the container after this many seconds and fail */
};

/*
 * Connects to the engine at `socket_path` (NULL: DOCKER_DEFAULT_SOCKET),
 * checks it answers GET /_ping and picks the API version (ours, or the
 * engine's when it is older).  0, or -1 (logged: "cannot reach the Docker
 * Engine at ...") with *d still safe to docker_close.
 */
int docker_open(struct docker *d, const char *socket_path);
/* Releases everything docker_open took; accepts a zeroed or closed struct. */
void docker_close(struct docker *d);

/*
 * Looks up `image` locally (GET /images/{name}/json).  0 with *id_out set to
 * a malloc'ed "sha256:..." (caller frees; id_out may be NULL), 1 when the
 * engine has no such image (logged as an error: pgstash does not pull), -1
 * on any other failure (logged).
 */
int docker_image_id(struct docker *d, const char *image, char **id_out);

/*
 * Finds the id of the container this process runs in, for
 * network_mode "container:<id>".  Sources, in order: the bind mounts Docker
 * makes for /etc/hostname, /etc/hosts and /etc/resolv.conf in
 * /proc/self/mountinfo (cgroup v1 and v2 alike, any storage driver), the
 * cgroup path in /proc/self/cgroup (cgroup v1, or v2 without a cgroup
 * namespace), and last the host name when it is a 12-digit hex short id.
 * 0 with *id_out malloc'ed (caller frees), or -1 when none applies (not
 * logged: running outside a container is normal; the caller decides).
 */
int docker_self_container_id(char **id_out);

/*
 * Runs one step container to its end: create, start, relay its output
 * (stdout and stderr, each line to our stderr as "<log_prefix>line"), wait,
 * remove.  The container is removed on every path, with its anonymous
 * volumes.  0 with *exit_code set to the container's exit status when it ran
 * to its end (whatever the status); -1 on failure, on timeout, or when a
 * terminating signal was received (sig_received is set; the container was
 * killed and removed), all logged.
 */
int docker_run(struct docker *d, const struct docker_run_opts *o, int *exit_code);

/*
 * Force-removes every container carrying `label` ("key" or "key=value"),
 * running or not, with its anonymous volumes.  Returns how many were
 * removed (each logged), or -1 (logged) when listing them failed.
 */
int docker_remove_labelled(struct docker *d, const char *label);

#endif
