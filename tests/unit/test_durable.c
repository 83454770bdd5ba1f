/*
 * Unit tests for durable: the atomic replacement (content, mode, a reader of
 * the old file unaffected, errors leave no temp file), O_EXCL|O_NOFOLLOW on
 * the temp name (a planted link is never written through; a stale temp file
 * of ours is replaced), writing under a directory descriptor, the flocked
 * temp files and their check after the flock, and the flock wait.
 */
#include "unit.h"

#include "durable.h"
#include "log.h"
#include "sig.h"

#include <dirent.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>

static bool
exists(const char *dir, const char *rel)
{
	char *p = path_join(dir, rel);
	struct stat st;
	bool ok = lstat(p, &st) == 0;
	free(p);
	return ok;
}

static int
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void
test_write_file(void **state)
{
	(void)state;
	mode_t old = umask(022);
	char *p = path_join(unit_tmp, "out.txt");
	const char text[] = "hello\0world\n";
	assert_int_equal(durable_write_file(p, text, sizeof(text) - 1, 0600, true), 0);
	size_t len;
	char *got = read_file(p, &len);
	assert_non_null(got);
	assert_int_equal(len, sizeof(text) - 1);
	assert_memory_equal(got, text, sizeof(text) - 1);
	free(got);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(count_entries(unit_tmp), 1);

	/* Replacing: new content, new mode, the old inode is not written into. */
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(durable_write_file(p, "v2", 2, 0644, false), 0);
	char buf[32] = "";
	assert_int_equal(read(fd, buf, sizeof(buf) - 1), (ssize_t)(sizeof(text) - 1));
	assert_memory_equal(buf, text, sizeof(text) - 1);
	close(fd);
	got = read_file(p, &len);
	assert_string_equal(got, "v2");
	free(got);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(count_entries(unit_tmp), 1);

	/* Empty content is a valid file. */
	assert_int_equal(durable_write_file(p, "", 0, 0644, true), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 0);

	/* A missing directory: -1, logged, nothing created. */
	char *missing = path_join(unit_tmp, "nodir/out.txt");
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = durable_write_file(missing, "x", 1, 0644, true);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(rc, -1);
	unit_expect_contains(err, "pgstash: error: could not create file \"");
	unit_expect_contains(err, "No such file or directory");
	free(err);
	assert_false(exists(unit_tmp, "nodir"));

	/* The target is a directory: rename fails and the temp file is removed. */
	char *dir = path_join(unit_tmp, "adir");
	assert_int_equal(mkdir(dir, 0755), 0);
	unit_write(dir, "inside", "x");
	unit_stderr_begin(&cap);
	rc = durable_write_file(dir, "x", 1, 0644, true);
	err = unit_stderr_end(&cap);
	assert_int_equal(rc, -1);
	unit_expect_contains(err, "could not rename");
	free(err);
	assert_int_equal(count_entries(unit_tmp), 2); /* out.txt and adir, no temp file */
	assert_true(exists(unit_tmp, "adir/inside"));

	umask(old);
	free(p);
	free(missing);
	free(dir);
}

/* A link planted at the temp name is not followed: the target keeps its bytes. */
static void
test_no_follow(void **state)
{
	char *target = path_join(unit_tmp, "target");
	unit_write(unit_tmp, "target", "precious");
	char *out = path_join(unit_tmp, "out");
	char *tmpname = xasprintf("%s.tmp.%ld", out, (long)getpid());
	assert_int_equal(symlink(target, tmpname), 0);
	assert_int_equal(durable_write_file(out, "new", 3, 0644, true), 0);
	char *got = read_file(target, NULL);
	assert_string_equal(got, "precious");
	free(got);
	got = read_file(out, NULL);
	assert_string_equal(got, "new");
	free(got);
	struct stat st;
	assert_int_equal(lstat(out, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	/* The temp name is random now, not the guessable pid: the planted link is left as it was. */
	assert_int_equal(lstat(tmpname, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(durable_write_file(out, "v3", 2, 0600, false), 0);
	got = read_file(out, NULL);
	assert_string_equal(got, "v3");
	free(got);
	/* target, out, the planted link: no temp file left behind. */
	assert_int_equal(count_entries(unit_tmp), 3);
	free(tmpname);
	free(out);
	free(target);
}

/* Under a directory descriptor, whatever now sits at the directory's path. */
static void
test_write_at(void **state)
{
	char *dir = path_join(unit_tmp, "d");
	assert_int_equal(mkdir(dir, 0700), 0);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	char *moved = path_join(unit_tmp, "moved");
	assert_int_equal(rename(dir, moved), 0);
	assert_int_equal(durable_write_at(dfd, "PGDATA", "marker", "k\n", 2, 0600, true), 0);
	char *p = path_join(moved, "marker");
	char *got = read_file(p, NULL);
	assert_string_equal(got, "k\n");
	free(got);
	assert_int_equal(count_entries(moved), 1);

	/* A failing rename names the file with the label. */
	assert_int_equal(mkdirat(dfd, "sub", 0700), 0);
	assert_int_equal(mkdirat(dfd, "sub/x", 0700), 0);
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = durable_write_at(dfd, "PGDATA", "sub", "x", 1, 0600, true);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(rc, -1);
	unit_expect_contains(err, "could not rename \"PGDATA/sub.tmp.");
	free(err);
	assert_int_equal(count_entries(moved), 2);
	close(dfd);
	free(p);
	free(moved);
	free(dir);
}

static void
test_tmp_create(void **state)
{
	char *path = NULL;
	int fd = durable_tmp_create(unit_tmp, "key", ".meta", 0644, &path);
	assert_true(fd >= 0);
	assert_non_null(path);
	const char *base = strrchr(path, '/') + 1;
	assert_int_equal(strncmp(base, "key-", 4), 0);
	assert_int_equal(strlen(base), strlen("key-XXXXXX.meta"));
	assert_string_equal(base + strlen(base) - 5, ".meta");
	/* Held: another open cannot take the lock (the sweep leaves it alone). */
	int other = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(other >= 0);
	assert_int_equal(flock(other, LOCK_EX | LOCK_NB), -1);
	close(other);
	assert_true(durable_same_file(fd, path));
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	close(fd);
	free(path);

	struct unit_capture cap;
	unit_stderr_begin(&cap);
	char *missing = path_join(unit_tmp, "nodir");
	fd = durable_tmp_create(missing, "key", ".tar", 0600, &path);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(fd, -1);
	unit_expect_contains(err, "could not create temp file in");
	free(err);
	free(missing);
}

/*
 * The check after the flock: a sweep that took the file between create and
 * flock has removed it, and a new file may sit at the name.  Then the fd is
 * not the file at the path, and durable_tmp_create tries another name.
 */
static void
test_same_file_check(void **state)
{
	unit_write(unit_tmp, "f", "one");
	char *p = path_join(unit_tmp, "f");
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_true(durable_same_file(fd, p));
	assert_int_equal(unlink(p), 0);
	assert_false(durable_same_file(fd, p)); /* removed */
	unit_write(unit_tmp, "f", "two");
	assert_false(durable_same_file(fd, p)); /* replaced */
	close(fd);
	free(p);
}

static void
test_flock_wait(void **state)
{
	char *p = path_join(unit_tmp, "lock");
	int a = open(p, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
	int b = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(a >= 0 && b >= 0);
	assert_int_equal(durable_flock_wait(a, LOCK_EX, 0, 100, NULL, NULL), DURABLE_WAIT_LOCKED);
	assert_int_equal(durable_flock_wait(b, LOCK_SH, 0, 100, NULL, NULL), DURABLE_WAIT_TIMEOUT);
	double t0 = log_now();
	assert_int_equal(durable_flock_wait(b, LOCK_EX, 1, 1, NULL, NULL), DURABLE_WAIT_TIMEOUT);
	double waited = log_now() - t0;
	assert_true(waited >= 1.0 && waited < 3.0);

	/* A holder that lets go after 300 ms: the waiter gets it. */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct timespec ts = {0, 300 * 1000 * 1000};
		nanosleep(&ts, NULL);
		_exit(0);
	}
	close(a); /* the child's copy of a still holds the lock until it exits */
	assert_int_equal(durable_flock_wait(b, LOCK_EX, 10, 1, NULL, NULL), DURABLE_WAIT_LOCKED);
	int status;
	waitpid(pid, &status, 0);
	close(b);
	b = open(p, O_RDONLY | O_CLOEXEC);
	assert_int_equal(durable_flock_wait(b, LOCK_EX, 0, 1, NULL, NULL), DURABLE_WAIT_LOCKED);
	close(b);

	/* Not a lockable descriptor: an error with errno, nothing logged. */
	errno = 0;
	assert_int_equal(durable_flock_wait(-1, LOCK_EX, 0, 1, NULL, NULL), DURABLE_WAIT_ERROR);
	assert_int_equal(errno, EBADF);
	free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_file, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_no_follow, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_write_at, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_tmp_create, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_same_file_check, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_flock_wait, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
