/*
 * Unit tests for privs: the ownership walk (every entry of the tree, symlinks
 * themselves and not their targets, a missing path), the table of what root
 * may hand to postgres, the directory preparation (mode, owner, a refusal
 * changing nothing), and, in a child process, the drop to the postgres user
 * with its directories handed over.  Ownership changes need root; as another
 * user only the no-op cases and the table run.
 */
#include "unit.h"

#include "config.h"
#include "log.h"
#include "privs.h"
#include "docker.h"
#include "entry.h"
#include "marker.h"
#include <sys/socket.h>
#include <sys/un.h>
#include "privs_int.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#define UID ((uid_t)4321)
#define GID ((gid_t)4322)

static void
assert_owner(const char *dir, const char *rel, uid_t uid, gid_t gid)
{
	char *p = path_join(dir, rel);
	struct stat st;
	if (lstat(p, &st) != 0)
		fail_msg("lstat %s: %s", p, strerror(errno));
	if (st.st_uid != uid || st.st_gid != gid)
		fail_msg("%s is owned by %ld:%ld, want %ld:%ld", p, (long)st.st_uid, (long)st.st_gid, (long)uid, (long)gid);
	free(p);
}

static void
need_root(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "skipped: changing owners needs root\n");
		skip();
	}
}

static void
test_chown_tree(void **state)
{
	(void)state;
	need_root();
	char *tree = path_join(unit_tmp, "tree");
	unit_write(tree, "PG_VERSION", "15\n");
	unit_write(tree, "base/1/1259", "x");
	unit_write(tree, "base/1/1260", "y");
	unit_write(unit_tmp, "outside", "not ours");
	char *outside = path_join(unit_tmp, "outside");
	char *link = path_join(tree, "pg_wal");
	assert_int_equal(symlink(outside, link), 0);

	assert_int_equal(privs_chown_tree(tree, UID, GID), 0);
	assert_owner(tree, "", UID, GID);
	assert_owner(tree, "PG_VERSION", UID, GID);
	assert_owner(tree, "base", UID, GID);
	assert_owner(tree, "base/1", UID, GID);
	assert_owner(tree, "base/1/1260", UID, GID);
	assert_owner(tree, "pg_wal", UID, GID);
	/* A link is changed itself, never followed. */
	assert_owner(unit_tmp, "outside", 0, 0);
	/* Again: nothing to change, still fine. */
	assert_int_equal(privs_chown_tree(tree, UID, GID), 0);
	free(link);
	free(outside);
	free(tree);
}

static void
test_chown_tree_missing(void **state)
{
	(void)state;
	char *gone = path_join(unit_tmp, "gone");
	assert_int_equal(privs_chown_tree(gone, getuid(), getgid()), 0);
	free(gone);
	/* Our own ids: nothing to change, as any user. */
	unit_write(unit_tmp, "a/b", "c");
	assert_int_equal(privs_chown_tree(unit_tmp, getuid(), getgid()), 0);
}

static void
test_prepare_dir(void **state)
{
	(void)state;
	char *dir = path_join(unit_tmp, "x/y/run");
	assert_int_equal(privs_prepare_dir(dir, PRIVS_SOCKET_DIR, 03775, getuid(), getgid()), 0);
	struct stat st;
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 03775);
	free(dir);

	need_root();
	dir = path_join(unit_tmp, "data");
	unit_write(dir, MARK_FILE, "building x\n");
	unit_write(dir, "old/file", "z");
	assert_int_equal(privs_prepare_dir(dir, PRIVS_PGDATA, 0700, UID, GID), 0);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_owner(dir, "", UID, GID);
	assert_owner(dir, "old/file", UID, GID);
	/* Not recursive: only the directory itself. */
	char *sock = path_join(unit_tmp, "sock");
	unit_write(sock, ".s.PGSQL.5432.lock", "i");
	assert_int_equal(privs_prepare_dir(sock, PRIVS_SOCKET_DIR, 0775, UID, GID), 0);
	assert_owner(sock, "", UID, GID);
	assert_owner(sock, ".s.PGSQL.5432.lock", 0, 0);
	free(sock);
	free(dir);
}

/*
 * Fills `dir` from `entries`: blank-separated names, "name/" a directory,
 * "name@" a symbolic link to /etc/passwd.
 */
static void
fill_dir(const char *dir, const char *entries)
{
	assert_int_equal(mkdir_p(dir, 0755), 0);
	char *copy = xstrdup(entries);
	char *save = NULL;
	for (char *e = strtok_r(copy, " ", &save); e; e = strtok_r(NULL, " ", &save)) {
		size_t n = strlen(e);
		char last = e[n - 1];
		if (last == '/' || last == '@')
			e[n - 1] = '\0';
		char *p = path_join(dir, e);
		if (last == '/')
			assert_int_equal(mkdir(p, 0700), 0);
		else if (last == '@')
			assert_int_equal(symlink("/etc/passwd", p), 0);
		else
			unit_write(dir, e, "x");
		free(p);
	}
	free(copy);
}

/* What each kind of directory may hold for root to hand it over. */
static void
test_hand_over_table(void **state)
{
	(void)state;
	static const struct {
		enum privs_dir kind;
		const char *entries;
		bool mine;          /* the directory is already the receiving user's */
		bool want;
		const char *refused; /* the entry named in the refusal, when one is */
	} cases[] = {
		{PRIVS_PGDATA, "", false, true, NULL},
		{PRIVS_PGDATA, MARK_FILE, false, true, NULL},
		{PRIVS_PGDATA, MARK_FILE " PG_VERSION base/ pgstash.manifest", false, true, NULL},
		{PRIVS_PGDATA, MARK_FILE " secret", false, true, NULL},
		{PRIVS_PGDATA, "secret", false, false, NULL},
		/* Handed over as a tree: that its top is postgres' already gives no right to what is inside. */
		{PRIVS_PGDATA, "secret", true, false, NULL},
		{PRIVS_PGDATA, "PG_VERSION base/", false, false, NULL},
		{PRIVS_PGDATA, "pgstash.manifest pgstash.initdb/", false, false, NULL},
		{PRIVS_PGDATA, MARK_FILE "@", false, false, NULL},
		{PRIVS_PGDATA, MARK_FILE "/", false, false, NULL},
		{PRIVS_WALDIR, "", false, true, NULL},
		{PRIVS_WALDIR, "000000010000000000000001 00000002.history archive_status/ summaries/ xlogtemp.12", false, true,
		 NULL},
		{PRIVS_WALDIR, "000000010000000000000001 passwd", false, false, "passwd"},
		{PRIVS_WALDIR, "passwd", true, false, "passwd"},
		{PRIVS_SOCKET_DIR, "", false, true, NULL},
		{PRIVS_SOCKET_DIR, ".s.PGSQL.5432 .s.PGSQL.5432.lock pgstash.state pgstash.state.tmp.aB3dE9 pgstash-group-x1",
		 false, true, NULL},
		{PRIVS_SOCKET_DIR, ".s.PGSQL.5432 shadow", false, false, "shadow"},
		{PRIVS_SOCKET_DIR, "shadow", true, true, NULL},
		{PRIVS_CACHE_DIR, "", false, true, NULL},
		{PRIVS_CACHE_DIR, STORE_DIR_NAME "/ lost+found/", false, true, NULL},
		{PRIVS_CACHE_DIR, STORE_DIR_NAME "/ hosts", false, false, "hosts"},
		{PRIVS_CACHE_DIR, "pgstash-v2/", false, false, "pgstash-v2"},
		{PRIVS_CACHE_DIR, "hosts", true, true, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "case%zu", i);
		char *dir = path_join(unit_tmp, name);
		fill_dir(dir, cases[i].entries);
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(fd >= 0);
		struct privs_refusal why;
		uid_t to = cases[i].mine ? geteuid() : geteuid() + 1;
		bool got = privs_may_hand_over(cases[i].kind, fd, to, &why);
		close(fd);
		if (got != cases[i].want)
			fail_msg("case %zu (kind %d, \"%s\"): got %d, want %d", i, (int)cases[i].kind, cases[i].entries, got,
			         cases[i].want);
		if (cases[i].refused)
			assert_string_equal(why.name, cases[i].refused);
		free(dir);
	}
}

/*
 * `pgdata = /etc`, `socket_dir = /etc`: a directory holding what neither
 * pgstash nor postgres put there is refused, its owner, mode and contents as
 * they were (the old code handed PGDATA's whole tree over first, and only
 * then did pgdata refuse to touch it).
 */
static void
test_refused_untouched(void **state)
{
	(void)state;
	need_root();
	const enum privs_dir kinds[] = {PRIVS_PGDATA, PRIVS_WALDIR, PRIVS_SOCKET_DIR, PRIVS_CACHE_DIR};
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "victim%zu", i);
		char *dir = path_join(unit_tmp, name);
		unit_write(dir, "secret", "s");
		char *secret = path_join(dir, "secret");
		assert_int_equal(chmod(secret, 0600), 0);
		assert_int_equal(chmod(dir, 0755), 0);
		assert_int_equal(privs_prepare_dir(dir, kinds[i], 0700, UID, GID), kinds[i] == PRIVS_CACHE_DIR ? 0 : -1);
		struct stat st;
		assert_int_equal(stat(dir, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0755);
		assert_owner(dir, "", 0, 0);
		assert_owner(dir, "secret", 0, 0);
		assert_int_equal(stat(secret, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		free(secret);
		free(dir);
	}
}

/* A directory that is a link (postgres planted it) is refused, its target untouched; hard links are skipped. */
static void
test_links_refused(void **state)
{
	(void)state;
	need_root();
	char *target = path_join(unit_tmp, "rootdir");
	unit_write(target, "f", "x");
	assert_int_equal(chmod(target, 0700), 0);
	char *sock = path_join(unit_tmp, "sock");
	assert_int_equal(symlink(target, sock), 0);
	assert_int_equal(privs_prepare_dir(sock, PRIVS_SOCKET_DIR, 03775, UID, GID), -1);
	struct stat st;
	assert_int_equal(stat(target, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_owner(target, "", 0, 0);

	char *tree = path_join(unit_tmp, "tree");
	unit_write(tree, MARK_FILE, "building x\n");
	unit_write(tree, "own", "o");
	char *secret = path_join(target, "f");
	char *hard = path_join(tree, "hard");
	assert_int_equal(link(secret, hard), 0);
	assert_int_equal(privs_prepare_dir(tree, PRIVS_PGDATA, 0700, UID, GID), 0);
	assert_owner(tree, "own", UID, GID);
	assert_owner(target, "f", 0, 0);
	free(hard);
	free(secret);
	free(tree);
	free(sock);
	free(target);
}

/*
 * The user the tree is handed to swaps a directory with a link to root's
 * directory (renameat2 RENAME_EXCHANGE) while root walks: a walk by path
 * (nftw + lchown of the full path) loses it within a few hundred rounds.
 */
static void
test_chown_tree_exchange_race(void **state)
{
	(void)state;
	need_root();
	char *rootdir = path_join(unit_tmp, "rootdir");
	unit_write(rootdir, "f", "root's");
	assert_int_equal(chmod(rootdir, 0700), 0);
	char *tree = path_join(unit_tmp, "tree");
	unit_write(tree, "d/f", "theirs");
	char *link = path_join(tree, "l");
	assert_int_equal(symlink(rootdir, link), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t swapper = fork();
	assert_true(swapper >= 0);
	if (swapper == 0) {
		int dfd = open(tree, O_RDONLY | O_DIRECTORY);
		for (;;)
			renameat2(dfd, "d", dfd, "l", RENAME_EXCHANGE);
	}
	char *secret = path_join(rootdir, "f");
	struct stat st;
	bool lost = false;
	for (int round = 0; round < 1000 && !lost; round++) {
		privs_chown_tree(tree, UID + (uid_t)(round % 2), GID);
		lost = stat(secret, &st) != 0 || st.st_uid != 0 || stat(rootdir, &st) != 0 || st.st_uid != 0;
	}
	kill(swapper, SIGKILL);
	waitpid(swapper, NULL, 0);
	assert_false(lost);
	free(secret);
	free(link);
	free(tree);
	free(rootdir);
}

/* In a child: privs_drop, then report (as exit status) what went wrong, 0 when all is as it should be. */
static int
drop_in_child(const struct cfg *cfg, const struct passwd *pw)
{
	if (privs_drop(cfg) != 0)
		return 10;
	if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid || getgid() != pw->pw_gid)
		return 11;
	if (setuid(0) == 0)
		return 12;
	const char *user = getenv("USER");
	if (!user || strcmp(user, "postgres") != 0)
		return 13;
	/* Exactly postgres' group: never the Docker socket's (the broker holds that one). */
	gid_t groups[8];
	int n = getgroups(8, groups);
	if (n != 1 || groups[0] != pw->pw_gid)
		return 15;
	docker_broker_stop();
	return access(cfg->pgdata, W_OK) == 0 && access(cfg->socket_dir, W_OK) == 0 ? 0 : 14;
}

static void
test_drop(void **state)
{
	(void)state;
	need_root();
	struct passwd *pw = getpwnam("postgres");
	if (!pw) {
		fprintf(stderr, "skipped: no postgres user\n");
		skip();
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	struct cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.pgdata = path_join(unit_tmp, "data");
	cfg.socket_dir = path_join(unit_tmp, "run");
	cfg.cache_dir = path_join(unit_tmp, "cache");
	cfg.docker_socket = path_join(unit_tmp, "docker.sock");
	cfg.cache_gid = (gid_t)-1;
	/* A container step, and a socket in a group of its own: the old code added that group to ours. */
	struct cfg_step step = {.name = "c", .image = "img"};
	cfg.steps = &step;
	cfg.n_steps = 1;
	int sfd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", cfg.docker_socket);
	assert_int_equal(bind(sfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(chown(cfg.docker_socket, 0, 4242), 0);
	unit_write(cfg.pgdata, MARK_FILE, "building x\n");
	unit_write(cfg.pgdata, "leftover", "l");
	unit_write(cfg.cache_dir, "pgstash-v1/entry.meta", "m");
	unit_write(cfg.cache_dir, "lost+found/file", "o");
	assert_int_equal(chmod(unit_tmp, 0755), 0);

	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(drop_in_child(&cfg, pw));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_owner(cfg.pgdata, "", uid, gid);
	assert_owner(cfg.pgdata, "leftover", uid, gid);
	assert_owner(cfg.socket_dir, "", uid, gid);
	assert_owner(cfg.cache_dir, "", uid, gid);
	/* The store inside the cache is handed over (a CI cache restored under another owner); nothing else. */
	assert_owner(cfg.cache_dir, "pgstash-v1/entry.meta", uid, gid);
	assert_owner(cfg.cache_dir, "lost+found/file", 0, 0);
	free(cfg.pgdata);
	free(cfg.socket_dir);
	free(cfg.cache_dir);
	close(sfd);
	free(cfg.docker_socket);
}

/* postgres' passwd entry, or the test is skipped. */
static struct passwd *
postgres_or_skip(void)
{
	struct passwd *pw = getpwnam("postgres");
	if (!pw) {
		fprintf(stderr, "skipped: no postgres user\n");
		skip();
	}
	return pw;
}

/* privs_drop(cfg) in a forked child (it becomes postgres for good): 0 when it succeeded, 10 when not. */
static int
drop_status(const struct cfg *cfg)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(privs_drop(cfg) == 0 ? 0 : 10);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/*
 * A socket directory that may not be handed over stops the drop before
 * anything changed: PGDATA (empty, so it could have been) and the cache are
 * root's still.
 */
static void
test_drop_refused_changes_nothing(void **state)
{
	(void)state;
	need_root();
	postgres_or_skip();
	struct cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.pgdata = path_join(unit_tmp, "data");
	cfg.socket_dir = path_join(unit_tmp, "etc");
	cfg.cache_dir = path_join(unit_tmp, "cache");
	cfg.docker_socket = path_join(unit_tmp, "docker.sock");
	cfg.cache_gid = (gid_t)-1;
	unit_write(cfg.socket_dir, "passwd", "p");
	assert_int_equal(chmod(cfg.socket_dir, 0755), 0);
	assert_int_equal(drop_status(&cfg), 10);
	assert_owner(cfg.socket_dir, "", 0, 0);
	struct stat st;
	assert_int_equal(stat(cfg.socket_dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	/* Decided before anything is made: the missing ones were not even created. */
	struct stat missing;
	assert_int_equal(lstat(cfg.pgdata, &missing), -1);
	assert_int_equal(lstat(cfg.cache_dir, &missing), -1);
	free(cfg.pgdata);
	free(cfg.socket_dir);
	free(cfg.cache_dir);
	free(cfg.docker_socket);
}

/*
 * A config file names an existing directory that is not postgres': refused,
 * empty as it is (an empty directory on root's PATH, say), unchanged; the
 * same name from the environment (no from_file) is handed over; one that the
 * config names and pgstash creates is handed over.
 */
static void
test_config_named_existing_dir_refused(void **state)
{
	(void)state;
	need_root();
	struct passwd *pw = postgres_or_skip();
	char *sbin = path_join(unit_tmp, "sbin");
	assert_int_equal(mkdir(sbin, 0755), 0);
	for (int from_file = 1; from_file >= 0; from_file--) {
		struct cfg cfg;
		memset(&cfg, 0, sizeof(cfg));
		cfg.pgdata = path_join(unit_tmp, from_file ? "new-data" : "new-data-2");
		cfg.pgdata_from_file = from_file ? xstrdup("pgstash.ini:3") : NULL;
		cfg.socket_dir = xstrdup(sbin);
		cfg.socket_dir_from_file = from_file ? xstrdup("pgstash.ini:4") : NULL;
		cfg.cache_mode = CFG_CACHE_OFF;
		cfg.docker_socket = path_join(unit_tmp, "docker.sock");
		cfg.cache_gid = (gid_t)-1;
		int status = drop_status(&cfg);
		struct stat st;
		assert_int_equal(stat(sbin, &st), 0);
		if (from_file) {
			assert_int_equal(status, 10);
			assert_owner(sbin, "", 0, 0);
			assert_int_equal(st.st_mode & 07777, 0755);
			assert_int_equal(lstat(cfg.pgdata, &st), -1);
		} else {
			assert_int_equal(status, 0);
			assert_owner(sbin, "", pw->pw_uid, pw->pw_gid);
			assert_owner(cfg.pgdata, "", pw->pw_uid, pw->pw_gid);
		}
		free(cfg.pgdata);
		free(cfg.pgdata_from_file);
		free(cfg.socket_dir);
		free(cfg.socket_dir_from_file);
		free(cfg.docker_socket);
	}
	/* Named by a config file but made by pgstash: handed over (it is empty and ours). */
	struct cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.pgdata = path_join(unit_tmp, "made/data");
	cfg.pgdata_from_file = xstrdup("pgstash.ini:3");
	cfg.socket_dir = path_join(unit_tmp, "made/run");
	cfg.socket_dir_from_file = xstrdup("pgstash.ini:4");
	cfg.cache_mode = CFG_CACHE_OFF;
	cfg.docker_socket = path_join(unit_tmp, "docker.sock");
	cfg.cache_gid = (gid_t)-1;
	assert_int_equal(drop_status(&cfg), 0);
	assert_owner(cfg.pgdata, "", pw->pw_uid, pw->pw_gid);
	assert_owner(cfg.socket_dir, "", pw->pw_uid, pw->pw_gid);
	free(cfg.pgdata);
	free(cfg.pgdata_from_file);
	free(cfg.socket_dir);
	free(cfg.socket_dir_from_file);
	free(cfg.docker_socket);
	free(sbin);
}

int
main(void)
{
	log_min_level = LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chown_tree, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_chown_tree_missing, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_prepare_dir, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_links_refused, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_chown_tree_exchange_race, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_drop, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_drop_refused_changes_nothing, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_config_named_existing_dir_refused, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_hand_over_table, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_refused_untouched, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests_name("privs", tests, NULL, NULL);
}
