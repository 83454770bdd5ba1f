/*
 * privs — see privs.h.
 */
#include "privs.h"
#include "privs_int.h"
#include "config.h"
#include "docker.h"
#include "entry.h"
#include "log.h"
#include "server.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where a tree goes, and the file system it may not leave (as nftw's FTW_MOUNT). */
struct owner {
	uid_t uid;
	gid_t gid;
	dev_t dev;
};

static int chown_dir_entries(int dirfd, const char *path, const struct owner *to);

/*
 * One entry, named `name` under dirfd (`path` for messages), then its
 * contents when it is a directory: pre-order, as nftw without FTW_DEPTH.
 */
static int
chown_entry(int dirfd, const char *name, const char *path, const struct owner *to)
{
	struct stat sb;
	/*
	 * The entry is pinned first (O_PATH|O_NOFOLLOW) and everything after
	 * acts on that descriptor: the user we hand the tree to can rename
	 * entries under us (renameat2 RENAME_EXCHANGE), so a name checked is
	 * not the name changed.  Gone meanwhile: the temp file of a syncer.
	 */
	int pin = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pin < 0)
		return 0;
	int rc = 0;
	if (fstat(pin, &sb) != 0 || sb.st_dev != to->dev)
		goto cleanup;
	/* A second name of a file may be anywhere, e.g. a link to a file of root's: never given away. */
	if (!S_ISDIR(sb.st_mode) && sb.st_nlink > 1) {
		log_warning("not changing owner of \"%s\": it has %ld links", path, (long)sb.st_nlink);
		goto cleanup;
	}
	if ((sb.st_uid != to->uid || sb.st_gid != to->gid) &&
	    fchownat(pin, "", to->uid, to->gid, AT_EMPTY_PATH) != 0 && errno != ENOENT) {
		log_error("could not change owner of \"%s\": %s", path, strerror(errno));
		rc = -1;
		goto cleanup;
	}
	if (!S_ISDIR(sb.st_mode))
		goto cleanup;
	/* Reopened through the pinned inode ("." of it), never by name again. */
	int fd = openat(pin, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		rc = errno == ENOENT || errno == EACCES ? 0 : -1;
		goto cleanup;
	}
	rc = chown_dir_entries(fd, path, to);
cleanup:
	close(pin);
	return rc;
}

/* Every entry of the open directory fd (closed here). */
static int
chown_dir_entries(int fd, const char *path, const struct owner *to)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *sub = path_join(path, de->d_name);
		rc = chown_entry(dirfd(d), de->d_name, sub, to);
		free(sub);
	}
	closedir(d);
	return rc;
}

int
privs_chown_tree(const char *path, uid_t uid, gid_t gid)
{
	struct stat sb;
	if (lstat(path, &sb) != 0)
		return errno == ENOENT ? 0 : -1;
	struct owner to = {.uid = uid, .gid = gid, .dev = sb.st_dev};
	return chown_entry(AT_FDCWD, path, path, &to);
}

int
privs_prepare_dir(const char *dir, mode_t mode, uid_t uid, gid_t gid, bool recursive)
{
	if (mkdir_p(dir, mode) != 0)
		return -1;
	/* Never through a link: the user it is handed to may have planted one there (the last time it ran). */
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		log_error("could not open directory \"%s\": %s", dir,
		          errno == ELOOP || errno == ENOTDIR ? "it is a symbolic link or not a directory" : strerror(errno));
		return -1;
	}
	struct stat sb;
	int rc = -1;
	if (fstat(fd, &sb) != 0 || fchown(fd, uid, gid) != 0) {
		log_error("could not change owner of \"%s\": %s", dir, strerror(errno));
		goto cleanup;
	}
	if (fchmod(fd, mode) != 0) {
		log_error("could not change mode of \"%s\": %s", dir, strerror(errno));
		goto cleanup;
	}
	if (recursive) {
		struct owner to = {.uid = uid, .gid = gid, .dev = sb.st_dev};
		int dup_fd = dup(fd);
		if (dup_fd < 0 || chown_dir_entries(dup_fd, dir, &to) != 0)
			goto cleanup;
	}
	rc = 0;
cleanup:
	close(fd);
	return rc;
}

/* What postgres must write; the cache only best effort (trouble there only costs the caching). */
static int
own_directories(const struct cfg *cfg, uid_t uid, gid_t gid)
{
	if (privs_prepare_dir(cfg->pgdata, 0700, uid, gid, true) != 0)
		return -1;
	/* Open to every local user only when pg_hba.conf says who may connect through it. */
	if (privs_prepare_dir(cfg->socket_dir, srv_socket_dir_mode(cfg), uid, gid, false) != 0)
		return -1;
	if (cfg->initdb_waldir && privs_prepare_dir(cfg->initdb_waldir, 0700, uid, gid, true) != 0)
		return -1;
	/*
	 * The cache: its top, and the store inside it (pgstash-v1/ and what it
	 * holds), handed over through the same pinned walk as PGDATA (no link
	 * followed, no file with a second name, no other file system), so that a
	 * cache a CI job saved and restored under another owner is postgres' to
	 * use again.  Whatever else is in cache_dir stays whoever's it is; what an
	 * entry holds is checked by the store before use, whoever owns it.
	 */
	gid_t cache_gid = cfg->cache_gid != (gid_t)-1 ? cfg->cache_gid : gid;
	if (mkdir_p(cfg->cache_dir, cfg->cache_gid != (gid_t)-1 ? 0750 : 0700) == 0) {
		int fd = open(cfg->cache_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct stat sb;
		if (fd < 0 || fstat(fd, &sb) != 0 || fchown(fd, uid, cache_gid) != 0) {
			log_warning("could not change owner of \"%s\": %s", cfg->cache_dir, strerror(errno));
		} else if (cfg->cache_mode == CFG_CACHE_READ_WRITE) {
			struct owner to = {.uid = uid, .gid = cache_gid, .dev = sb.st_dev};
			char *store = path_join(cfg->cache_dir, STORE_DIR_NAME);
			if (chown_entry(fd, STORE_DIR_NAME, store, &to) != 0)
				log_warning("could not hand \"%s\" to postgres: caching may not work", store);
			free(store);
		}
		if (fd >= 0)
			close(fd);
	}
	return 0;
}

/*
 * Container steps need the Docker socket, whose group would let any holder
 * command the engine (a container binding the host's /): that group goes to
 * a broker child (docker_broker_start), never to us, so neither the steps we
 * start nor the postgres we become hold it.  0, or -1 (logged).
 */
static int
docker_access_for(const struct cfg *cfg, uid_t uid, gid_t gid)
{
	bool wants_docker = false;
	for (size_t i = 0; i < cfg->n_steps; i++)
		wants_docker = wants_docker || cfg->steps[i].image;
	struct stat sst;
	if (!wants_docker || stat(cfg->docker_socket, &sst) != 0 || sst.st_gid == gid)
		return 0;
	return docker_broker_start(cfg->docker_socket, uid, gid, sst.st_gid);
}

/* setgroups, setgid, setuid (in that order), for good, and HOME, USER, LOGNAME.  0 or -1 (logged). */
static int
become(uid_t uid, gid_t gid, const gid_t *groups, int ngroups, const char *name, const char *home)
{
	if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		log_error("could not switch to user \"%s\": %s", name, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		log_error("dropped privileges but could become root again: refusing to go on");
		return -1;
	}
	setenv("HOME", home, 1);
	setenv("USER", name, 1);
	setenv("LOGNAME", name, 1);
	log_debug("running as %s (uid %ld, gid %ld)", name, (long)uid, (long)gid);
	return 0;
}

int
privs_drop(const struct cfg *cfg)
{
	struct passwd *pw = getpwnam("postgres");
	if (!pw) {
		log_error("started as root, but there is no \"postgres\" user to run the server as");
		return -1;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	char *home = xstrdup(pw->pw_dir);

	int rc = -1;
	if (own_directories(cfg, uid, gid) != 0)
		goto cleanup;
	if (docker_access_for(cfg, uid, gid) != 0)
		goto cleanup;
	gid_t groups[1] = {gid};
	if (become(uid, gid, groups, 1, "postgres", home) != 0)
		goto cleanup;
	/*
	 * Owned by postgres now, but behind a directory postgres cannot search (a
	 * cache under /root): an error, not a quiet loss of the caching asked for.
	 */
	int need = cfg->cache_mode == CFG_CACHE_READ_ONLY ? R_OK | X_OK : W_OK | X_OK;
	if (cfg->cache_mode != CFG_CACHE_OFF && cfg->cache_dir && access(cfg->cache_dir, need) != 0 && errno == EACCES) {
		log_error("cache directory \"%s\" is not reachable for the postgres user that pgstash runs as when started as "
		          "root: %s; use a directory postgres can reach (e.g. /var/cache/pgstash) or make its parents "
		          "searchable (chmod o+x)",
		          cfg->cache_dir, strerror(errno));
		goto cleanup;
	}
	rc = 0;
cleanup:
	free(home);
	return rc;
}

int
privs_drop_for_cache(const struct cfg *cfg)
{
	struct stat sb;
	struct passwd *pw = NULL;
	char *v1 = path_join(cfg->cache_dir, "pgstash-v1");
	bool found = lstat(v1, &sb) == 0 && S_ISDIR(sb.st_mode);
	free(v1);
	if (found && sb.st_uid == 0)
		return 0; /* root's own cache: nobody less privileged controls it (the store checks its modes) */
	if (found)
		pw = getpwuid(sb.st_uid);
	else
		pw = getpwnam("postgres");
	if (!found && !pw)
		return 0; /* no cache yet and no postgres user: a host where root keeps its own */
	uid_t uid = pw ? pw->pw_uid : sb.st_uid;
	gid_t gid = pw ? pw->pw_gid : sb.st_gid;
	char *name = pw ? xstrdup(pw->pw_name) : xasprintf("%ld", (long)uid);
	char *home = pw ? xstrdup(pw->pw_dir) : xstrdup("/");
	gid_t groups[2] = {gid, cfg->cache_gid};
	int n = cfg->cache_gid != (gid_t)-1 && cfg->cache_gid != gid ? 2 : 1;
	int rc = docker_access_for(cfg, uid, gid) == 0 ? become(uid, gid, groups, n, name, home) : -1;
	free(name);
	free(home);
	return rc;
}
