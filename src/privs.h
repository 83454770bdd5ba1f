/*
 * privs — started as root (the official image's gosu step): hands what the
 * postgres user must write (PGDATA, the socket directory, the WAL directory,
 * the cache) to it, then becomes it for good, before initdb, the steps and
 * the exec.  postgres refuses to run as root anyway.  A configuration names
 * those directories, and may come from a pull request: root hands over only
 * what is empty or what pgstash or postgres put there.
 *
 * Not for: what goes into those directories (pgdata, acquire, build).
 */
#ifndef PGSTASH_PRIVS_H
#define PGSTASH_PRIVS_H

struct cfg;

/*
 * As root: owns cfg's directories to "postgres" when what they hold is what
 * pgstash or postgres put there (privs.c's table; decided for all before any
 * is changed: a refused PGDATA, WAL or socket directory is -1 with nothing
 * changed, a refused cache is left as it is), starts the Docker socket
 * broker when a step runs in a container (docker_broker_start: the socket's
 * group is the broker's, never ours), then setgroups to postgres' group
 * alone, setgid, setuid (in that order) and sets HOME, USER, LOGNAME.
 * 0, or -1 (logged).
 */
int privs_drop(const struct cfg *cfg);

/*
 * As root, before a cache command (ls, verify, prune): becomes the owner
 * of <cache_dir>/pgstash-v1 (with its login group, and cache_group), or
 * "postgres" when there is no cache yet, so that nothing in a cache that a
 * less privileged user writes is acted on as root.  Stays root only for a
 * cache root owns, or no cache and no postgres user; even then what it
 * starts (`postgres --version` of pg_bindir) runs unprivileged (proc).  0,
 * or -1 (logged).
 */
int privs_drop_for_cache(const struct cfg *cfg);

/*
 * As root, before `key`: becomes the user prepare fingerprints as
 * ("postgres", or nobody when there is none), changing no directory, so that
 * the files a configuration names are read, and their digests printed, only
 * as far as that user may read them.  0, or -1 (logged).
 */
int privs_drop_for_key(const struct cfg *cfg);

#endif
