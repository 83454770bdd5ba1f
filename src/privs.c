/*
 * privs — see privs.h.
 */
#include "privs.h"
#include "privs_int.h"
#include "config.h"
#include "log.h"
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
	/* Gone between readdir and stat: the temp file of a background syncer's marker. */
	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
		return 0;
	if (sb.st_dev != to->dev)
		return 0;
	if ((sb.st_uid != to->uid || sb.st_gid != to->gid) &&
	    fchownat(dirfd, name, to->uid, to->gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != ENOENT) {
		log_error("could not change owner of \"%s\": %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb.st_mode))
		return 0;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == EACCES ? 0 : -1;
	return chown_dir_entries(fd, path, to);
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
	if (recursive ? privs_chown_tree(dir, uid, gid) != 0 : chown(dir, uid, gid) != 0) {
		if (!recursive)
			log_error("could not change owner of \"%s\": %s", dir, strerror(errno));
		return -1;
	}
	if (chmod(dir, mode) != 0) {
		log_error("could not change mode of \"%s\": %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* What postgres must write; the cache only best effort (trouble there only costs the caching). */
static int
own_directories(const struct cfg *cfg, uid_t uid, gid_t gid)
{
	if (privs_prepare_dir(cfg->pgdata, 0700, uid, gid, true) != 0)
		return -1;
	if (privs_prepare_dir(cfg->socket_dir, 03775, uid, gid, false) != 0)
		return -1;
	if (cfg->initdb_waldir && privs_prepare_dir(cfg->initdb_waldir, 0700, uid, gid, true) != 0)
		return -1;
	if (mkdir_p(cfg->cache_dir, 0755) == 0) {
		if (chown(cfg->cache_dir, uid, gid) != 0)
			log_warning("could not change owner of \"%s\": %s", cfg->cache_dir, strerror(errno));
		char *v1 = path_join(cfg->cache_dir, "pgstash-v1");
		if (access(v1, F_OK) == 0)
			privs_chown_tree(v1, uid, gid);
		free(v1);
	}
	return 0;
}

/* Container steps need the Docker socket: its group joins ours, nothing more.  The count of groups[]. */
static int
groups_for(const struct cfg *cfg, gid_t gid, gid_t groups[2])
{
	int n = 0;
	groups[n++] = gid;
	bool wants_docker = false;
	for (size_t i = 0; i < cfg->n_steps; i++)
		wants_docker = wants_docker || cfg->steps[i].image;
	struct stat sst;
	if (wants_docker && stat(cfg->docker_socket, &sst) == 0 && sst.st_gid != gid)
		groups[n++] = sst.st_gid;
	return n;
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
	gid_t groups[2];
	int ngroups = groups_for(cfg, gid, groups);
	if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		log_error("could not switch to user \"postgres\": %s", strerror(errno));
		goto cleanup;
	}
	if (setuid(0) == 0) {
		log_error("dropped privileges but could become root again: refusing to go on");
		goto cleanup;
	}
	/*
	 * Owned by postgres now, but behind a directory postgres cannot search (a
	 * cache under /root): an error, not a quiet loss of the caching asked for.
	 */
	if (access(cfg->cache_dir, W_OK | X_OK) != 0 && errno == EACCES) {
		log_error("cache directory \"%s\" is not reachable for the postgres user that pgstash runs as when started as "
		          "root: %s; use a directory postgres can reach (e.g. /var/cache/pgstash) or make its parents "
		          "searchable (chmod o+x)",
		          cfg->cache_dir, strerror(errno));
		goto cleanup;
	}
	setenv("HOME", home, 1);
	setenv("USER", "postgres", 1);
	setenv("LOGNAME", "postgres", 1);
	log_debug("running as postgres (uid %ld, gid %ld)", (long)uid, (long)gid);
	rc = 0;
cleanup:
	free(home);
	return rc;
}
