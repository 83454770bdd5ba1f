/*
 * Unit tests for marker: the "unsynced KEY BOOT_ID" form, the boot id, the
 * PGDATA lock, the background process's confirmation (sync, then KEY only
 * if the marker is still the expected line), and mark_finish end to end: the
 * marker is "unsynced" when it returns and becomes KEY a moment later, once
 * the detached syncer is done and has let go of the lock.
 */
#include "unit.h"

#include "log.h"
#include "marker.h"
#include "marker_int.h"

#include <dirent.h>
#include <sys/file.h>
#include <sys/wait.h>

#define KEY "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define BOOT "6f2b1c8e-6a4d-4b7e-9a53-2c1d0e9f8a7b"

static void
assert_marker(const char *want)
{
	char *got = mark_read(unit_tmp);
	if (!want) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

/* Waits up to 10 s for the marker to read `want`; true when it does. */
static bool
marker_becomes(const char *want)
{
	for (int i = 0; i < 1000; i++) {
		char *got = mark_read(unit_tmp);
		bool ok = got && strcmp(got, want) == 0;
		free(got);
		if (ok)
			return true;
		usleep(10 * 1000);
	}
	return false;
}

static void
test_parse_unsynced(void **state)
{
	(void)state;
	char key[MARK_KEY_MAX + 1], boot[MARK_BOOT_ID_LEN + 1];
	assert_true(mark_parse_unsynced("unsynced " KEY " " BOOT, key, boot));
	assert_string_equal(key, KEY);
	assert_string_equal(boot, BOOT);
	assert_true(mark_parse_unsynced("unsynced abc " BOOT, key, boot));
	assert_string_equal(key, "abc");

	const char *bad[] = {
		KEY,
		"",
		"unsynced",
		"unsynced ",
		"unsynced " KEY,
		"unsynced " KEY " ",
		"unsynced  " KEY " " BOOT,           /* two spaces */
		"unsynced " KEY " " BOOT " extra",   /* something after */
		"unsynced " KEY " " BOOT "0",        /* a boot id too long */
		"unsynced " KEY " 6f2b1c8e-6a4d-4b7e-9a53-2c1d0e9f8a7",
		"unsynced " KEY " 6F2B1C8E-6A4D-4B7E-9A53-2C1D0E9F8A7B", /* the kernel writes lowercase */
		"unsynced " KEY " 6f2b1c8e06a4d-4b7e-9a53-2c1d0e9f8a7b",
		"unsynced " KEY "0 " BOOT,           /* a key longer than any */
		"restoring " KEY,
		"building " KEY,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (mark_parse_unsynced(bad[i], key, boot))
			fail_msg("parsed \"%s\"", bad[i]);
	}
}

static void
test_boot_id(void **state)
{
	(void)state;
	char a[MARK_BOOT_ID_LEN + 1], b[MARK_BOOT_ID_LEN + 1];
	assert_int_equal(mark_boot_id(a), 0);
	assert_int_equal(strlen(a), MARK_BOOT_ID_LEN);
	assert_int_equal(mark_boot_id(b), 0);
	assert_string_equal(a, b);
	/* What bootstrap writes parses back. */
	char *line = xasprintf("unsynced %s %s", KEY, a);
	char key[MARK_KEY_MAX + 1], boot[MARK_BOOT_ID_LEN + 1];
	assert_true(mark_parse_unsynced(line, key, boot));
	assert_string_equal(boot, a);
	free(line);
}

static void
test_parse_line(void **state)
{
	(void)state;
	const char *good[] = {"", KEY, "x", "building " KEY, "restoring " KEY, "unsynced " KEY " " BOOT};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!mark_parse_line(good[i]))
			fail_msg("refused \"%s\"", good[i]);
	const char *bad[] = {
		"-----BEGIN PRIVATE KEY-----", "building ", "building  " KEY, "restoring ", KEY "0", KEY " ",
		"unsynced " KEY,               "a\tb",      "k\x7f",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (mark_parse_line(bad[i]))
			fail_msg("parsed \"%s\"", bad[i]);
}

/* What mark_dir_holding says of unit_tmp. */
static enum mark_holding
holding(void)
{
	int fd = open(unit_tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	enum mark_holding h = mark_dir_holding(fd);
	close(fd);
	return h;
}

/* Only pgstash's own marker makes a directory pgstash's: not a key file of that name, nor a planted one. */
static void
test_dir_holding(void **state)
{
	(void)state;
	assert_int_equal(holding(), MARK_HOLDS_NOTHING);
	unit_write(unit_tmp, MARK_FILE, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n");
	assert_int_equal(holding(), MARK_HOLDS_FOREIGN_FILES);
	assert_marker(NULL); /* pgdata's claim goes by the same rule */
	unit_write(unit_tmp, MARK_FILE, KEY "\n" KEY "\n");
	assert_int_equal(holding(), MARK_HOLDS_FOREIGN_FILES);
	assert_marker(NULL);
	unit_write(unit_tmp, MARK_FILE, "unsynced " KEY " " BOOT "\n");
	assert_int_equal(holding(), MARK_HOLDS_MARKER);
	assert_marker("unsynced " KEY " " BOOT);
	unit_write(unit_tmp, "PG_VERSION", "17\n");
	assert_int_equal(holding(), MARK_HOLDS_MARKER);

	/* A directory others may write to: anyone may have put it there. */
	assert_int_equal(chmod(unit_tmp, 01777), 0);
	assert_int_equal(holding(), MARK_HOLDS_FOREIGN_CLUSTER);
	assert_marker(NULL);
	/* Group write (Kubernetes' fsGroup at every mount): the owner check is what keeps a member's file out. */
	assert_int_equal(chmod(unit_tmp, 02770), 0);
	assert_int_equal(holding(), MARK_HOLDS_MARKER);
	assert_int_equal(chmod(unit_tmp, 0700), 0);
	assert_int_equal(holding(), MARK_HOLDS_MARKER);

	/* A hard link: its other name may be anyone's file. */
	char *marker = path_join(unit_tmp, MARK_FILE);
	char *other = path_join(unit_tmp, "other");
	assert_int_equal(link(marker, other), 0);
	assert_int_equal(holding(), MARK_HOLDS_FOREIGN_CLUSTER);
	assert_int_equal(unlink(other), 0);
	assert_int_equal(holding(), MARK_HOLDS_MARKER);

	/* A link to a marker elsewhere. */
	unit_write(unit_tmp, "elsewhere/" MARK_FILE, KEY "\n");
	assert_int_equal(unlink(marker), 0);
	assert_int_equal(symlink("elsewhere/" MARK_FILE, marker), 0);
	assert_int_equal(holding(), MARK_HOLDS_FOREIGN_CLUSTER);
	assert_int_equal(unlink(marker), 0);
	unit_write(unit_tmp, MARK_FILE, KEY);
	assert_int_equal(holding(), MARK_HOLDS_MARKER);
	free(other);

	/* Another user's file in the directory. */
	if (geteuid() != 0) {
		free(marker);
		fprintf(stderr, "skipped: changing owners needs root\n");
		skip();
	}
	assert_int_equal(chown(marker, 12345, 12345), 0);
	assert_int_equal(holding(), MARK_HOLDS_FOREIGN_CLUSTER);
	assert_int_equal(chown(unit_tmp, 12345, 12345), 0);
	assert_int_equal(holding(), MARK_HOLDS_MARKER);
	free(marker);
}

static void
test_read_write(void **state)
{
	(void)state;
	assert_marker(NULL);
	assert_int_equal(mark_write(unit_tmp, "restoring " KEY, false), 0);
	assert_marker("restoring " KEY);
	assert_int_equal(mark_write(unit_tmp, KEY, true), 0);
	assert_marker(KEY);
	char *path = path_join(unit_tmp, MARK_FILE);
	char *text = read_file(path, NULL);
	assert_string_equal(text, KEY "\n");
	free(text);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	free(path);
	/* No temp file is left beside it. */
	DIR *d = opendir(unit_tmp);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	assert_int_equal(n, 1);
}

static int
open_dir(void)
{
	int fd = open(unit_tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void
test_confirm(void **state)
{
	(void)state;
	const char *line = "unsynced " KEY " " BOOT;
	int fd = open_dir();

	/* Still the line it expects: KEY, durably. */
	assert_int_equal(mark_write(unit_tmp, line, false), 0);
	assert_int_equal(mark_confirm(fd, line, KEY), 0);
	assert_marker(KEY);

	/* Anything else is left alone: another start's marker, or none at all. */
	const char *others[] = {"restoring " KEY, "unsynced " KEY " 00000000-0000-0000-0000-000000000000", KEY};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		assert_int_equal(mark_write(unit_tmp, others[i], false), 0);
		assert_int_equal(mark_confirm(fd, line, KEY), 1);
		assert_marker(others[i]);
	}
	char *path = path_join(unit_tmp, MARK_FILE);
	unlink(path);
	assert_int_equal(mark_confirm(fd, line, KEY), 1);
	assert_marker(NULL);

	/* pg_wal linked elsewhere (initdb --waldir) is synced too; a dangling link is a failure that changes nothing. */
	char *wal = xasprintf("%s-wal", unit_tmp);
	assert_int_equal(mkdir(wal, 0700), 0);
	char *link = path_join(unit_tmp, "pg_wal");
	assert_int_equal(symlink(wal, link), 0);
	assert_int_equal(mark_write(unit_tmp, line, false), 0);
	assert_int_equal(mark_confirm(fd, line, KEY), 0);
	assert_marker(KEY);
	assert_int_equal(rmdir(wal), 0);
	assert_int_equal(mark_write(unit_tmp, line, false), 0);
	log_min_level = LOG_ERROR; /* the warning is expected */
	assert_int_equal(mark_confirm(fd, line, KEY), -1);
	log_min_level = LOG_INFO;
	assert_marker(line);

	/* A PGDATA replaced under its path: the syncer's directory is the old one, the new marker is not touched. */
	unlink(link);
	unlink(path);
	char *moved = xasprintf("%s-old", unit_tmp);
	assert_int_equal(mark_write(unit_tmp, line, false), 0);
	assert_int_equal(rename(unit_tmp, moved), 0);
	assert_int_equal(mkdir(unit_tmp, 0700), 0);
	assert_int_equal(mark_write(unit_tmp, line, false), 0);
	assert_int_equal(mark_confirm(fd, line, KEY), 0);
	assert_marker(line);
	char *old = mark_read(moved);
	assert_string_equal(old, KEY);
	free(old);
	rm_rf(moved);

	free(moved);
	free(link);
	free(wal);
	free(path);
	close(fd);
}

static void
test_lock(void **state)
{
	(void)state;
	int a = -1, b = -1;
	assert_int_equal(mark_lock(unit_tmp, 0, &a), 0);
	assert_true(a >= 0);
	assert_true(fcntl(a, F_GETFD) & FD_CLOEXEC);
	/* Held: another open file description waits, then gives up. */
	assert_int_equal(mark_lock(unit_tmp, 0, &b), 1);
	assert_int_equal(b, -1);
	double t0 = log_now();
	assert_int_equal(mark_lock(unit_tmp, 1, &b), 1);
	assert_true(log_now() - t0 >= 0.99);
	/* A duplicate shares the lock: closing one copy keeps it. */
	int dup_a = dup(a);
	close(a);
	assert_int_equal(mark_lock(unit_tmp, 0, &b), 1);
	close(dup_a);
	assert_int_equal(mark_lock(unit_tmp, 0, &b), 0);
	close(b);
	/* Not a directory, or missing: an error. */
	char *missing = path_join(unit_tmp, "nope");
	log_min_level = LOG_ERROR + 1;
	assert_int_equal(mark_lock(missing, 0, &b), -1);
	log_min_level = LOG_INFO;
	free(missing);
}

static void
test_finish_in_background(void **state)
{
	(void)state;
	char boot[MARK_BOOT_ID_LEN + 1];
	assert_int_equal(mark_boot_id(boot), 0);
	char *line = xasprintf("unsynced %s %s", KEY, boot);

	int fd = -1;
	assert_int_equal(mark_lock(unit_tmp, 0, &fd), 0);
	assert_int_equal(mark_write(unit_tmp, "restoring " KEY, false), 0);
	log_min_level = LOG_WARNING;
	assert_int_equal(mark_finish(unit_tmp, KEY, fd, false, false), 0);
	log_min_level = LOG_INFO;
	/* The syncer shares the lock: our copy goes, the lock stays until it is done. */
	close(fd);
	assert_true(marker_becomes(KEY));
	int again = -1;
	assert_int_equal(mark_lock(unit_tmp, 10, &again), 0);
	close(again);
	/* It was no child of ours left to reap (the go-between is reaped by mark_finish). */
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);

	/* Until then it says so. */
	assert_int_equal(mark_lock(unit_tmp, 0, &fd), 0);
	log_min_level = LOG_WARNING;
	assert_int_equal(mark_finish(unit_tmp, KEY, fd, false, false), 0);
	log_min_level = LOG_INFO;
	char *now = mark_read(unit_tmp);
	assert_true(strcmp(now, line) == 0 || strcmp(now, KEY) == 0);
	free(now);
	close(fd);
	assert_int_equal(mark_lock(unit_tmp, 10, &again), 0);
	assert_marker(KEY);
	close(again);
	free(line);
}

/*
 * Before a server `run` execs (server_follows), even a small PGDATA's syncer
 * writes nothing back until the server says "ready" (or 2 s without a
 * postmaster.pid pass): the start's fsyncs must not wait for it.
 */
static void
test_finish_waits_for_the_server(void **state)
{
	(void)state;
	char boot[MARK_BOOT_ID_LEN + 1];
	assert_int_equal(mark_boot_id(boot), 0);
	char *line = xasprintf("unsynced %s %s", KEY, boot);
	unit_write(unit_tmp, "postmaster.pid", "4242\n/data\n1\n5432\n/tmp\n*\n1 2\nstarting\n");
	int fd = -1;
	assert_int_equal(mark_lock(unit_tmp, 0, &fd), 0);
	log_min_level = LOG_WARNING;
	assert_int_equal(mark_finish(unit_tmp, KEY, fd, false, true), 0);
	log_min_level = LOG_INFO;
	close(fd);
	/* Starting: still "unsynced" well past what a small syncfs takes. */
	usleep(500 * 1000);
	assert_marker(line);
	unit_write(unit_tmp, "postmaster.pid", "4242\n/data\n1\n5432\n/tmp\n*\n1 2\nready   \n");
	assert_true(marker_becomes(KEY));
	int again = -1;
	assert_int_equal(mark_lock(unit_tmp, 10, &again), 0);
	close(again);
	free(line);
}

static void
test_finish_now(void **state)
{
	(void)state;
	/* Without the lock (a file system without flock): synced before it returns, KEY at once. */
	assert_int_equal(mark_write(unit_tmp, "restoring " KEY, false), 0);
	assert_int_equal(mark_finish(unit_tmp, KEY, -1, false, false), 0);
	assert_marker(KEY);
}

/* Writes `len` bytes of 'x' at dir/rel (its directories made first). */
static void
write_len(const char *rel, size_t len)
{
	unit_write(unit_tmp, rel, "");
	char *p = path_join(unit_tmp, rel);
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	for (size_t i = 0; i < len; i++)
		fputc('x', f);
	assert_int_equal(fclose(f), 0);
	free(p);
}

/*
 * The paced write-back counts (and writes back) the regular files of at
 * least 1 MiB, in subdirectories too, never through a link: a link to a
 * large file or to a directory outside adds nothing.
 */
static void
test_pace(void **state)
{
	(void)state;
	write_len("base/5/16384", 3 * 1024 * 1024 + 5);
	write_len("base/5/16385", 1024 * 1024);
	write_len("base/5/16386", 1024 * 1024 - 1);
	write_len("global/1262", 100);
	char *outside = xasprintf("%s-outside", unit_tmp);
	assert_int_equal(mkdir(outside, 0700), 0);
	char *big = path_join(outside, "big");
	FILE *f = fopen(big, "wb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 8 * 1024 * 1024, SEEK_SET), 0);
	fputc('x', f);
	assert_int_equal(fclose(f), 0);
	char *l1 = path_join(unit_tmp, "base/5/link");
	char *l2 = path_join(unit_tmp, "pg_tblspc");
	assert_int_equal(symlink(big, l1), 0);
	assert_int_equal(symlink(outside, l2), 0);
	int fd = open_dir();
	const uint64_t want = 3 * 1024 * 1024 + 5 + 1024 * 1024;
	uint64_t all = 0;
	assert_int_equal(mark_pace(fd, false, &all), want);
	assert_int_equal(all, want + 1024 * 1024 - 1 + 100);
	assert_int_equal(mark_pace(fd, true, NULL), want);
	/* dir_fd stays usable (mark_pace reads through a descriptor of its own). */
	assert_int_equal(mark_confirm(fd, "no such marker", KEY), MARK_CONFIRM_CHANGED);
	close(fd);
	rm_rf(outside);
	free(outside);
	free(big);
	free(l1);
	free(l2);
}

/* postmaster.pid's 8th line: none, starting (also when not written that far), up. */
static void
test_server_state(void **state)
{
	(void)state;
	int fd = open_dir();
	assert_int_equal(mark_server_state(fd), MARK_SERVER_NONE);
	const char *head = "4242\n/data\n1796203000\n5432\n/run\n\n  5432001         0\n";
	const struct {
		const char *status;
		enum mark_server_state want;
	} cases[] = {
		{"", MARK_SERVER_STARTING},
		{"starting\n", MARK_SERVER_STARTING},
		{"ready   \n", MARK_SERVER_UP},
		{"stopping\n", MARK_SERVER_UP},
		{"standby \n", MARK_SERVER_UP},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = xasprintf("%s%s", head, cases[i].status);
		unit_write(unit_tmp, "postmaster.pid", text);
		assert_int_equal(mark_server_state(fd), cases[i].want);
		free(text);
	}
	unit_write(unit_tmp, "postmaster.pid", "4242\n/data\n");
	assert_int_equal(mark_server_state(fd), MARK_SERVER_STARTING);
	/* A FIFO in its place does not block. */
	char *p = path_join(unit_tmp, "postmaster.pid");
	assert_int_equal(unlink(p), 0);
	assert_int_equal(mkfifo(p, 0600), 0);
	assert_int_equal(mark_server_state(fd), MARK_SERVER_STARTING);
	free(p);
	close(fd);
}

int
main(void)
{
	log_min_level = LOG_INFO;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_unsynced),
		cmocka_unit_test(test_boot_id),
		cmocka_unit_test(test_parse_line),
		cmocka_unit_test_setup_teardown(test_dir_holding, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_read_write, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_confirm, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_lock, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_finish_in_background, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_finish_now, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_finish_waits_for_the_server, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_pace, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_server_state, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests_name("marker", tests, NULL, NULL);
}
