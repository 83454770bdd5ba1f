/*
 * privs — see privs.h.
 */
#include "privs.h"
#include "privs_int.h"
#include "config.h"
#include "docker.h"
#include "entry.h"
#include "log.h"
#include "marker.h"
#include "proc.h"
#include "server.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
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

/* ---- what root hands to postgres ---- */

/*
 * What a kind of directory may hold for root to hand it to postgres, and how
 * it is handed over.  A configuration names these directories, and it may
 * come from a pull request: `pgdata = /etc` must not give /etc to postgres.
 * So root hands over only what is empty or what pgstash or postgres put
 * there (or, for a directory that is not handed over as a tree, what is
 * postgres' already), decided for all of them before anything is changed.
 */
struct dir_rule {
	const char *what;            /* for messages */
	bool by_marker;              /* PGDATA's own rule (mark_dir_holding), not names */
	const char *const *may_hold; /* fnmatch(3) patterns of the entries allowed; NULL-terminated */
	bool owner_suffices;         /* already uid's: handing its top over gives nothing new */
	bool tree;                   /* everything below goes too */
	bool best_effort;            /* refused: left as it is, and the start goes on */
};

/* WAL segments, timeline histories and backup files (hex names), and what postgres keeps beside them. */
static const char *const wal_names[] = {
	"[0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F]*", "archive_status", "summaries", "xlogtemp.*",
	NULL};
/* postgres' sockets and their locks; bootstrap's state file (pgstash.state, its temp files) and nss_wrapper's. */
static const char *const socket_names[] = {".s.PGSQL.*", "pgstash.*", "pgstash-*", NULL};
/* The store; a file system's lost+found when the cache is a volume of its own. */
static const char *const cache_names[] = {STORE_DIR_NAME, "lost+found", NULL};
static const char *const no_names[] = {NULL};

static const struct dir_rule dir_rules[] = {
	[PRIVS_PGDATA] = {.what = "PGDATA", .by_marker = true, .may_hold = no_names, .tree = true},
	[PRIVS_WALDIR] = {.what = "WAL directory", .may_hold = wal_names, .tree = true},
	[PRIVS_SOCKET_DIR] = {.what = "socket directory", .may_hold = socket_names, .owner_suffices = true},
	[PRIVS_CACHE_DIR] = {.what = "cache directory",
	                     .may_hold = cache_names,
	                     .owner_suffices = true,
	                     .best_effort = true},
};

/* Whether every entry of dir_fd matches one of `patterns`; else the first that does not goes into why. */
static bool
holds_only(int dir_fd, const char *const *patterns, struct privs_refusal *why)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		why->err = errno;
		if (fd >= 0)
			close(fd);
		return false;
	}
	bool ok = true;
	struct dirent *de;
	while (ok && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ok = false;
		for (const char *const *p = patterns; *p && !ok; p++)
			ok = fnmatch(*p, de->d_name, 0) == 0;
		if (!ok)
			snprintf(why->name, sizeof(why->name), "%s", de->d_name);
	}
	closedir(d);
	return ok;
}

bool
privs_may_hand_over(enum privs_dir kind, int dir_fd, uid_t uid, struct privs_refusal *why)
{
	const struct dir_rule *r = &dir_rules[kind];
	memset(why, 0, sizeof(*why));
	struct stat st;
	if (r->owner_suffices && fstat(dir_fd, &st) == 0 && st.st_uid == uid)
		return true;
	if (r->by_marker) {
		why->holding = mark_dir_holding(dir_fd);
		return why->holding == MARK_HOLDS_NOTHING || why->holding == MARK_HOLDS_MARKER;
	}
	return holds_only(dir_fd, r->may_hold, why);
}

/* One directory to hand over. */
struct handover {
	const char *path;
	enum privs_dir kind;
	mode_t mode;      /* created with; also set on it unless keep_mode */
	bool keep_mode;   /* the cache's mode is the store's business */
	gid_t gid;
	const char *also; /* an entry handed over as a tree with it (the cache's store), or NULL */
	const char *from_file; /* "file:line" when a config file named it (cfg's *_from_file), else NULL */
	int fd;           /* pinned by open_handover; -1 before */
	bool create;      /* missing: made (empty) once every directory is decided */
	bool refused;     /* not handed over: could not be opened, or foreign */
	bool foreign;     /* privs_may_hand_over said no, or a config file named someone else's directory */
};

/*
 * Pins h's directory, never through a link, creating it first when `make`.
 * 0; 1 when it does not exist (and !make); -1 (logged).
 */
static int
open_handover(struct handover *h, bool make)
{
	const struct dir_rule *r = &dir_rules[h->kind];
	void (*say)(const char *, ...) = r->best_effort ? log_warning : log_error;
	h->fd = -1;
	if (make && mkdir_p(h->path, h->mode & 0777) != 0)
		return -1;
	/* Never through a link: the user it is handed to may have planted one there (the last time it ran). */
	h->fd = open(h->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (h->fd < 0 && errno == ENOENT && !make)
		return 1;
	if (h->fd < 0) {
		say("could not open directory \"%s\": %s", h->path,
		    errno == ELOOP || errno == ENOTDIR ? "it is a symbolic link or not a directory" : strerror(errno));
		return -1;
	}
	return 0;
}

/* Says why h is not handed over: an error, or for a best-effort directory a warning. */
static void
log_refusal(const struct handover *h, const struct privs_refusal *why)
{
	const struct dir_rule *r = &dir_rules[h->kind];
	void (*say)(const char *, ...) = r->best_effort ? log_warning : log_error;
	if (r->by_marker)
		mark_log_refusal(h->path, why->holding);
	else if (!why->name[0])
		say("%s \"%s\" could not be read (%s): not handing it to postgres", r->what, h->path, strerror(why->err));
	else
		say("%s \"%s\" holds \"%s\", which neither pgstash nor postgres puts there: not handing it (owner, mode) to "
		    "postgres; use a directory of its own",
		    r->what, h->path, why->name);
}

/*
 * A directory that exists and that a config file names is handed over only
 * when it is uid's already: a config file can come from a pull request, and
 * root must not give postgres a directory of its choosing (an empty one on
 * root's PATH, say).  The default, the environment and the command line are
 * the operator's word.  true when h may go on to the content check.
 */
static bool
named_by_operator_or_ours(const struct handover *h, uid_t uid)
{
	struct stat st;
	if (!h->from_file || (fstat(h->fd, &st) == 0 && st.st_uid == uid))
		return true;
	void (*say)(const char *, ...) = dir_rules[h->kind].best_effort ? log_warning : log_error;
	say("%s \"%s\" is named by the config file (%s) and is not postgres' already: started as root, pgstash hands an "
	    "existing directory to postgres only when the environment or the command line names it (PGDATA, "
	    "PGSTASH_CACHE_DIR, PGSTASH_SOCKET_DIR, --pgdata, --cache-dir), since a config file can come from a pull "
	    "request; name it there, or let pgstash create it",
	    dir_rules[h->kind].what, h->path, h->from_file);
	return false;
}

/* Decides h (pinned): whether it may be handed to uid.  Refusals logged. */
static void
decide_handover(struct handover *h, uid_t uid)
{
	struct privs_refusal why;
	if (!named_by_operator_or_ours(h, uid))
		h->refused = h->foreign = true;
	else if (!privs_may_hand_over(h->kind, h->fd, uid, &why)) {
		log_refusal(h, &why);
		h->refused = h->foreign = true;
	}
}

/* Gives h's directory (and its tree, and h->also) to uid.  0, or -1 (logged; a warning when best effort). */
static int
apply_handover(const struct handover *h, uid_t uid)
{
	const struct dir_rule *r = &dir_rules[h->kind];
	void (*say)(const char *, ...) = r->best_effort ? log_warning : log_error;
	struct stat sb;
	if (fstat(h->fd, &sb) != 0 || fchown(h->fd, uid, h->gid) != 0) {
		say("could not change owner of \"%s\": %s", h->path, strerror(errno));
		return -1;
	}
	if (!h->keep_mode && fchmod(h->fd, h->mode) != 0) {
		say("could not change mode of \"%s\": %s", h->path, strerror(errno));
		return -1;
	}
	struct owner to = {.uid = uid, .gid = h->gid, .dev = sb.st_dev};
	if (r->tree) {
		int dup_fd = dup(h->fd);
		if (dup_fd < 0 || chown_dir_entries(dup_fd, h->path, &to) != 0)
			return -1;
	}
	if (h->also) {
		char *sub = path_join(h->path, h->also);
		int rc = chown_entry(h->fd, h->also, sub, &to);
		if (rc != 0)
			say("could not hand \"%s\" to postgres: caching may not work", sub);
		free(sub);
		return rc;
	}
	return 0;
}

/*
 * Opens all, decides all, then changes them: a refusal of one that is not
 * best effort leaves every one as it was.  0, or -1 (logged).
 */
static int
hand_over_all(struct handover *h, size_t n, uid_t uid)
{
	int rc = 0;
	/* Those that exist: pinned and decided, nothing created yet. */
	for (size_t i = 0; i < n; i++) {
		int o = open_handover(&h[i], false);
		if (o < 0)
			h[i].refused = true;
		else if (o == 1)
			h[i].create = true;
		else
			decide_handover(&h[i], uid);
		if (h[i].refused && !dir_rules[h[i].kind].best_effort)
			rc = -1;
	}
	/*
	 * Then the missing ones are made, only when nothing was refused.  Made
	 * by us they are empty, so who named them does not matter; the content
	 * check still runs, for one that someone made meanwhile.
	 */
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (!h[i].create)
			continue;
		if (open_handover(&h[i], true) != 0)
			h[i].refused = true;
		else {
			h[i].from_file = NULL;
			decide_handover(&h[i], uid);
		}
		if (h[i].refused && !dir_rules[h[i].kind].best_effort)
			rc = -1;
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		if (!h[i].refused && apply_handover(&h[i], uid) != 0 && !dir_rules[h[i].kind].best_effort)
			rc = -1;
	for (size_t i = 0; i < n; i++)
		if (h[i].fd >= 0)
			close(h[i].fd);
	return rc;
}

int
privs_prepare_dir(const char *dir, enum privs_dir kind, mode_t mode, uid_t uid, gid_t gid)
{
	struct handover h = {.path = dir, .kind = kind, .mode = mode, .gid = gid};
	return hand_over_all(&h, 1, uid);
}

/*
 * What postgres must write: PGDATA, the socket directory, the WAL directory,
 * and the cache, only best effort (trouble there only costs the caching;
 * *cache_refused says it was left as it was for what it holds).
 */
static int
own_directories(const struct cfg *cfg, uid_t uid, gid_t gid, bool *cache_refused)
{
	struct handover h[4] = {
		{.path = cfg->pgdata, .kind = PRIVS_PGDATA, .mode = 0700, .gid = gid, .from_file = cfg->pgdata_from_file},
		/* Open to every local user only when pg_hba.conf says who may connect through it. */
		{.path = cfg->socket_dir,
		 .kind = PRIVS_SOCKET_DIR,
		 .mode = srv_socket_dir_mode(cfg),
		 .gid = gid,
		 .from_file = cfg->socket_dir_from_file},
	};
	size_t n = 2, cache = SIZE_MAX;
	if (cfg->initdb_waldir)
		h[n++] = (struct handover){.path = cfg->initdb_waldir, .kind = PRIVS_WALDIR, .mode = 0700, .gid = gid};
	/*
	 * The cache: its top, and the store inside it (pgstash-v1/ and what it
	 * holds), handed over through the same pinned walk as PGDATA (no link
	 * followed, no file with a second name, no other file system), so that a
	 * cache a CI job saved and restored under another owner is postgres' to
	 * use again.  Whatever else is in cache_dir keeps the top from being
	 * handed over at all; what an entry holds is checked by the store before
	 * use, whoever owns it.
	 */
	if (cfg->cache_mode != CFG_CACHE_OFF && cfg->cache_dir && *cfg->cache_dir) {
		bool grouped = cfg->cache_gid != (gid_t)-1;
		cache = n;
		h[n++] = (struct handover){.path = cfg->cache_dir,
		                           .kind = PRIVS_CACHE_DIR,
		                           .mode = grouped ? 0750 : 0700,
		                           .keep_mode = true,
		                           .gid = grouped ? cfg->cache_gid : gid,
		                           .from_file = cfg->cache_dir_from_file,
		                           .also = cfg->cache_mode == CFG_CACHE_READ_WRITE ? STORE_DIR_NAME : NULL};
	}
	int rc = hand_over_all(h, n, uid);
	*cache_refused = cache != SIZE_MAX && h[cache].foreign;
	return rc;
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
	bool cache_refused = false;
	if (own_directories(cfg, uid, gid, &cache_refused) != 0)
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
		          "root: %s; %s",
		          cfg->cache_dir, strerror(errno),
		          cache_refused ? "it holds what pgstash did not put there (said above): use a directory of its own "
		                          "(e.g. /var/cache/pgstash)"
		                        : "use a directory postgres can reach (e.g. /var/cache/pgstash) or make its parents "
		                          "searchable (chmod o+x)");
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

int
privs_drop_for_key(const struct cfg *cfg)
{
	uid_t uid;
	gid_t gid;
	proc_unprivileged_ids(&uid, &gid); /* whom a child of root runs as: one rule */
	struct passwd *pw = getpwuid(uid);
	char *name = xstrdup(pw ? pw->pw_name : "nobody");
	char *home = xstrdup(pw && *pw->pw_dir ? pw->pw_dir : "/");
	gid_t groups[1] = {gid};
	int rc = docker_access_for(cfg, uid, gid) == 0 ? become(uid, gid, groups, 1, name, home) : -1;
	free(name);
	free(home);
	return rc;
}
