/*
 * Unit tests for snapshot: round trips (synthetic tree, and a real PGDATA
 * from initdb when PostgreSQL is installed), damaged archives, and hostile
 * archives that try to write outside the target.
 */
#include "unit.h"

#include "log.h"
#include "sig.h"
#include "snapshot.h"
#include "snapshot_int.h"
#include "digest.h"
#include "durable.h"
#include "entry.h"

#include <archive.h>
#include <archive_entry.h>
#include <pwd.h>
#include <signal.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>

#define PG_BINDIR "/usr/lib/postgresql/15/bin"

struct fixture {
	char *root;   /* temp dir */
	char *src;    /* root/src: the tree to snapshot */
	char *dst;    /* root/dst: restore target */
	char *arch;   /* root/snap.tar.zst */
};

static char *
rd(const char *dir, const char *rel)
{
	char *p = path_join(dir, rel);
	char *t = read_file(p, NULL);
	free(p);
	return t;
}

static mode_t
mode_of(const char *dir, const char *rel)
{
	char *p = path_join(dir, rel);
	struct stat sb;
	assert_int_equal(lstat(p, &sb), 0);
	free(p);
	return sb.st_mode;
}

static bool
exists(const char *dir, const char *rel)
{
	char *p = path_join(dir, rel);
	struct stat sb;
	bool r = lstat(p, &sb) == 0;
	free(p);
	return r;
}

static void
chmod_rel(const char *dir, const char *rel, mode_t m)
{
	char *p = path_join(dir, rel);
	assert_int_equal(chmod(p, m), 0);
	free(p);
}

static void
make_tree(const char *src)
{
	unit_write(src, "PG_VERSION", "15\n");
	unit_write(src, "base/1/1259", "relation bytes\n");
	unit_write(src, "base/1/1259_fsm", "");
	unit_write(src, "base/1/postmaster.pid", "nested, kept\n");
	unit_write(src, "global/pg_control", "control");
	unit_write(src, "postgresql.conf", "# conf\nmax_connections = 20\n");
	unit_write(src, "pg_stat_tmp/global.stat", "stats");
	unit_write(src, "log/postgresql.log", "server log");
	unit_write(src, "pg_log/old.log", "old log");
	unit_write(src, "postmaster.pid", "4242\n");
	unit_write(src, "postmaster.opts", "postgres\n");
	unit_write(src, "pgstash.state", "ready\n");
	unit_write(src, "base/b/c/deep.txt", "deep");
	/* A larger file, so data spans several buffers of the compressor. */
	char *big = xmalloc(3 * 1024 * 1024 + 1);
	for (size_t i = 0; i < 3 * 1024 * 1024; i++)
		big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
	big[3 * 1024 * 1024] = '\0';
	unit_write(src, "base/1/16384", big);
	free(big);
	char *empty = path_join(src, "pg_tblspc");
	assert_int_equal(mkdir(empty, 0700), 0);
	free(empty);
	chmod_rel(src, "postgresql.conf", 0600);
	chmod_rel(src, "base/b/c/deep.txt", 0751);
	chmod_rel(src, "base", 0700);
	chmod_rel(src, "base/b", 0750);
}

static int
setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	f->root = unit_tmpdir();
	f->src = path_join(f->root, "src");
	f->dst = path_join(f->root, "dst");
	f->arch = path_join(f->root, "snap.tar.zst");
	assert_int_equal(mkdir(f->src, 0700), 0);
	make_tree(f->src);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	rm_rf(f->root);
	free(f->root);
	free(f->src);
	free(f->dst);
	free(f->arch);
	free(f);
	return 0;
}

static void
write_snapshot(const char *src, const char *path, enum cfg_compression comp, int level, struct snap_stats *st)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(snap_write(src, fd, path, comp, level, NULL, st), 0);
	assert_int_equal(close(fd), 0);
}

static void
check_restored(const char *dst)
{
	char *t;
	t = rd(dst, "PG_VERSION");
	assert_string_equal(t, "15\n");
	free(t);
	t = rd(dst, "base/1/1259");
	assert_string_equal(t, "relation bytes\n");
	free(t);
	t = rd(dst, "base/1/1259_fsm");
	assert_string_equal(t, "");
	free(t);
	t = rd(dst, "base/1/postmaster.pid");
	assert_string_equal(t, "nested, kept\n");
	free(t);
	t = rd(dst, "base/b/c/deep.txt");
	assert_string_equal(t, "deep");
	free(t);
	size_t len;
	char *p = path_join(dst, "base/1/16384");
	t = read_file(p, &len);
	free(p);
	assert_non_null(t);
	assert_int_equal(len, 3 * 1024 * 1024);
	for (size_t i = 0; i < len; i += 4093)
		assert_int_equal(t[i], (char)('a' + (i * 7 + i / 4096) % 26));
	free(t);

	assert_int_equal(mode_of(dst, "postgresql.conf") & 07777, 0600);
	assert_int_equal(mode_of(dst, "base/b/c/deep.txt") & 07777, 0640); /* 0751: no file is restored executable */
	assert_int_equal(mode_of(dst, "base") & 07777, 0700);
	assert_int_equal(mode_of(dst, "base/b") & 07777, 0750);
	assert_true(S_ISDIR(mode_of(dst, "pg_tblspc")));

	/* Left out, or kept as empty directories. */
	assert_false(exists(dst, "postmaster.pid"));
	assert_false(exists(dst, "postmaster.opts"));
	assert_false(exists(dst, "pgstash.state"));
	assert_true(S_ISDIR(mode_of(dst, "pg_stat_tmp")));
	assert_false(exists(dst, "pg_stat_tmp/global.stat"));
	assert_true(S_ISDIR(mode_of(dst, "log")));
	assert_false(exists(dst, "log/postgresql.log"));
	assert_false(exists(dst, "pg_log/old.log"));
	assert_int_equal(mode_of(dst, ".") & 07777, 0700);
}

static void
roundtrip(void **state, enum cfg_compression comp, int level)
{
	struct fixture *f = *state;
	struct snap_stats w, r;
	write_snapshot(f->src, f->arch, comp, level, &w);
	assert_int_equal(strlen(w.sha256), 64);
	assert_int_equal(w.files, 8);
	assert_true(w.pgdata_bytes > 3 * 1024 * 1024);

	char digest[65];
	uint64_t bytes;
	assert_int_equal(digest_file(f->arch, NULL, 0, digest, &bytes), 0);
	assert_string_equal(digest, w.sha256);
	assert_int_equal(bytes, w.archive_bytes);
	if (comp != CFG_COMP_NONE)
		assert_true(w.archive_bytes < w.pgdata_bytes);

	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, w.pgdata_bytes, &r), 0);
	assert_string_equal(r.sha256, w.sha256);
	assert_int_equal(r.archive_bytes, w.archive_bytes);
	assert_int_equal(r.files, w.files);
	assert_int_equal(r.pgdata_bytes, w.pgdata_bytes);
	check_restored(f->dst);
}

static void test_roundtrip_zstd(void **state) { roundtrip(state, CFG_COMP_ZSTD, 0); }
static void test_roundtrip_zstd_level(void **state) { roundtrip(state, CFG_COMP_ZSTD, 9); }
static void test_roundtrip_gzip(void **state) { roundtrip(state, CFG_COMP_GZIP, 1); }
static void test_roundtrip_none(void **state) { roundtrip(state, CFG_COMP_NONE, 0); }

/* A meta declaring less than the archive expands to: a bomb, refused before the big file is written. */
static void
test_expansion_past_meta_is_bad(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	assert_true(w.pgdata_bytes / 4 + SNAP_EXPAND_MARGIN(w.pgdata_bytes / 4) < w.pgdata_bytes);
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, w.pgdata_bytes / 4, NULL),
	                 SNAP_BAD_ARCHIVE);
	assert_true(dir_is_empty(f->dst));
	/* A claim beyond the hard limit is a forgery too. */
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 1ULL << 50, NULL),
	                 SNAP_BAD_ARCHIVE);
	assert_true(dir_is_empty(f->dst));
	/* Within the margin: restored. */
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, w.pgdata_bytes - 1000, NULL),
	                 0);
}

/* A meta declaring more than PGDATA's file system has free: the local disk's fault, nothing written. */
static void
test_larger_than_free_space_fails(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	struct statvfs vfs;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	assert_int_equal(statvfs(f->root, &vfs), 0);
	uint64_t too_much = (uint64_t)vfs.f_bavail * vfs.f_frsize + (1ULL << 30);
	if (too_much > SNAP_MAX_TOTAL_BYTES)
		skip();
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, too_much, NULL), SNAP_FAILED);
	assert_true(dir_is_empty(f->dst));
}

static void
test_deterministic(void **state)
{
	struct fixture *f = *state;
	struct snap_stats a, b;
	char *second = path_join(f->root, "again.tar.zst");
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &a);
	write_snapshot(f->src, second, CFG_COMP_ZSTD, 0, &b);
	assert_string_equal(a.sha256, b.sha256);
	free(second);
}

/* Level and workers by size: the configured level wins; workers only at the big size and a low level. */
static void
test_zstd_choice(void **state)
{
	(void)state;
	/* The default: level 1 in its workers, at every size (the choice does not look at PGDATA). */
	struct snap_zstd z = snap_zstd_choice(0);
	assert_int_equal(z.level, SNAP_ZSTD_DEFAULT_LEVEL);
	assert_int_equal(z.workers, SNAP_ZSTD_WORKERS);
	z = snap_zstd_choice(1);
	assert_int_equal(z.level, 1);
	assert_int_equal(z.workers, SNAP_ZSTD_WORKERS);
	/* A configured level stays; above SNAP_ZSTD_WORKERS_MAX_LEVEL the workers would cost too much memory. */
	z = snap_zstd_choice(SNAP_ZSTD_WORKERS_MAX_LEVEL + 1);
	assert_int_equal(z.level, SNAP_ZSTD_WORKERS_MAX_LEVEL + 1);
	assert_int_equal(z.workers, 0);
	z = snap_zstd_choice(19);
	assert_int_equal(z.level, 19);
	assert_int_equal(z.workers, 0);
}

static void
write_with(const char *src, const char *path, struct snap_zstd z, struct snap_stats *st)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(snap_write_with(src, fd, path, CFG_COMP_ZSTD, z, NULL, st), 0);
	assert_int_equal(close(fd), 0);
}

/*
 * zstd's workers: the archive restores whole, and its bytes do not depend on
 * how many workers wrote it (an archive is the same on every machine).
 */
static void
test_zstd_workers(void **state)
{
	struct fixture *f = *state;
	struct snap_stats one, two, r;
	char *other = path_join(f->root, "one.tar.zst");
	write_with(f->src, other, (struct snap_zstd){.level = 1, .workers = 1}, &one);
	write_with(f->src, f->arch, (struct snap_zstd){.level = 1, .workers = 2}, &two);
	assert_string_equal(one.sha256, two.sha256);
	assert_int_equal(snap_restore(f->arch, two.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, two.pgdata_bytes, &r), 0);
	assert_int_equal(r.files, two.files);
	check_restored(f->dst);
	free(other);
}

/* snap_write writes what the choice says, on a small PGDATA too: the workers' frame, not the thread's. */
static void
test_default_uses_choice(void **state)
{
	struct fixture *f = *state;
	struct snap_stats dflt, chosen, single;
	char *second = path_join(f->root, "chosen.tar.zst");
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &dflt);
	write_with(f->src, second, snap_zstd_choice(0), &chosen);
	assert_string_equal(dflt.sha256, chosen.sha256);
	write_with(f->src, second, (struct snap_zstd){.level = SNAP_ZSTD_DEFAULT_LEVEL, .workers = 0}, &single);
	assert_string_not_equal(dflt.sha256, single.sha256);
	free(second);
}

/* ---- late paths (what pg_resetwal rewrites beside the write) ---- */

struct late_probe {
	const char *src;
	int calls;
	int answer;
};

/* ready: rewrites the late paths as pg_resetwal would, now that the rest is written. */
static int
rewrite_late(void *arg)
{
	struct late_probe *lp = arg;
	lp->calls++;
	unit_write(lp->src, "global/pg_control", "control after the reset");
	char *old = path_join(lp->src, "pg_wal/000000010000000000000001");
	unlink(old);
	free(old);
	unit_write(lp->src, "pg_wal/000000010000000000000002", "new segment");
	return lp->answer;
}

static const char *const late_paths[] = {"global/pg_control", "pg_wal", NULL};

/* The archive's entry names, in order. */
static void
archive_names(const char *path, struct strlist *out)
{
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a); /* what snap_write writes (pax) */
	assert_int_equal(archive_read_open_filename(a, path, 65536), ARCHIVE_OK);
	struct archive_entry *e;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK)
		sl_add(out, archive_entry_pathname(e));
	archive_read_free(a);
}

/* The late paths are read only after ready, and written last; the rest in the walk's order. */
static void
test_late_paths_written_last(void **state)
{
	struct fixture *f = *state;
	unit_write(f->src, "pg_wal/000000010000000000000001", "old segment");
	struct late_probe lp = {.src = f->src};
	struct snap_late late = {late_paths, rewrite_late, &lp};
	struct snap_stats w, r;
	int fd = open(f->arch, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(snap_write(f->src, fd, f->arch, CFG_COMP_ZSTD, 0, &late, &w), 0);
	assert_int_equal(close(fd), 0);
	assert_int_equal(lp.calls, 1);

	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, w.pgdata_bytes, &r), 0);
	check_restored(f->dst);
	char *t = rd(f->dst, "global/pg_control");
	assert_string_equal(t, "control after the reset");
	free(t);
	t = rd(f->dst, "pg_wal/000000010000000000000002");
	assert_string_equal(t, "new segment");
	free(t);
	assert_false(exists(f->dst, "pg_wal/000000010000000000000001"));

	struct strlist names = {0};
	archive_names(f->arch, &names);
	assert_true(names.n >= 4);
	assert_string_equal(names.v[names.n - 3], "global/pg_control");
	assert_string_equal(names.v[names.n - 2], "pg_wal/");
	assert_string_equal(names.v[names.n - 1], "pg_wal/000000010000000000000002");
	for (size_t i = 0; i + 3 < names.n; i++)
		assert_true(strncmp(names.v[i], "pg_wal", 6) != 0 && strcmp(names.v[i], "global/pg_control") != 0);
	sl_free(&names);
}

/* ready failing abandons the write; a write failing before never calls it. */
static void
test_late_not_ready(void **state)
{
	struct fixture *f = *state;
	unit_write(f->src, "pg_wal/000000010000000000000001", "old segment");
	struct late_probe lp = {.src = f->src, .answer = -1};
	struct snap_late late = {late_paths, rewrite_late, &lp};
	struct snap_stats w;
	int fd = open(f->arch, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(snap_write(f->src, fd, f->arch, CFG_COMP_ZSTD, 0, &late, &w), SNAP_NOT_READY);
	assert_int_equal(lp.calls, 1);

	char *link = path_join(f->src, "base/escape");
	assert_int_equal(symlink("/etc", link), 0);
	free(link);
	lp.calls = 0;
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(snap_write(f->src, fd, f->arch, CFG_COMP_ZSTD, 0, &late, &w), -1);
	assert_int_equal(lp.calls, 0);
	assert_int_equal(close(fd), 0);
}

static void
test_target_not_empty(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	unit_write(f->dst, "precious", "keep me");
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL), SNAP_FAILED);
	char *t = rd(f->dst, "precious");
	assert_string_equal(t, "keep me");
	free(t);
}

static void
copy_file(const char *from, const char *to, size_t max)
{
	size_t len;
	char *data = read_file(from, &len);
	assert_non_null(data);
	if (len > max)
		len = max;
	assert_int_equal(durable_write_file(to, data, len, 0644, false), 0);
	free(data);
}

static void
expect_bad(struct fixture *f, const char *arch, const char *sha, int major)
{
	int r = snap_restore(arch, sha, f->dst, (uid_t)-1, (gid_t)-1, major, NULL, 0, NULL);
	assert_int_equal(r, SNAP_BAD_ARCHIVE);
	assert_true(dir_is_empty(f->dst));
}

static void
test_truncated(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	char *cut = path_join(f->root, "cut.tar.zst");
	copy_file(f->arch, cut, (size_t)w.archive_bytes / 2);
	expect_bad(f, cut, w.sha256, 15);
	/* Without the digest, the broken stream alone is caught. */
	expect_bad(f, cut, NULL, 15);
	/* An empty file is no archive. */
	copy_file(f->arch, cut, 0);
	expect_bad(f, cut, NULL, 0);
	free(cut);
}

static void
test_flipped_byte(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_NONE, 0, &w);
	size_t len;
	char *data = read_file(f->arch, &len);
	/* Inside a file's data: the tar stays well formed, only the digest notices. */
	char *hit = memmem(data, len, "relation bytes", 14);
	assert_non_null(hit);
	hit[0] ^= 0x01;
	char *bad = path_join(f->root, "flip.tar");
	assert_int_equal(durable_write_file(bad, data, len, 0644, false), 0);
	expect_bad(f, bad, w.sha256, 15);

	/* And a compressed one, flipped in the middle. */
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	free(data);
	data = read_file(f->arch, &len);
	data[len / 2] ^= 0x40;
	assert_int_equal(durable_write_file(bad, data, len, 0644, false), 0);
	expect_bad(f, bad, w.sha256, 15);
	free(data);
	free(bad);
}

static void
test_trailing_garbage(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_NONE, 0, &w);
	size_t len;
	char *data = read_file(f->arch, &len);
	data = xrealloc(data, len + 5);
	memcpy(data + len, "junk!", 5);
	char *bad = path_join(f->root, "junk.tar");
	assert_int_equal(durable_write_file(bad, data, len + 5, 0644, false), 0);
	/* The digest covers bytes after the tar trailer too. */
	expect_bad(f, bad, w.sha256, 15);
	free(data);
	free(bad);
}

static void
test_digest_mismatch(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	char wrong[65];
	memcpy(wrong, w.sha256, 65);
	wrong[0] = wrong[0] == '0' ? '1' : '0';
	expect_bad(f, f->arch, wrong, 15);
}

static void
test_major_mismatch(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	expect_bad(f, f->arch, w.sha256, 14);
	/* 0: no expectation. */
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 0, NULL, 0, NULL), 0);
}

static void
test_signal_aborts(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	sig_received = SIGTERM;
	int r = snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL);
	sig_received = 0;
	assert_int_equal(r, SNAP_FAILED);
	assert_true(dir_is_empty(f->dst));
}

static void
test_write_refuses_outside_symlink(void **state)
{
	struct fixture *f = *state;
	char *l = path_join(f->src, "pg_wal");
	assert_int_equal(symlink("/var/lib/elsewhere", l), 0);
	free(l);
	int fd = open(f->arch, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	struct snap_stats w;
	assert_int_equal(snap_write(f->src, fd, f->arch, CFG_COMP_ZSTD, 0, NULL, &w), -1);
	close(fd);
}

/* Even a symlink inside PGDATA: restores rely on snapshots holding none. */
static void
test_write_refuses_inside_symlink(void **state)
{
	struct fixture *f = *state;
	char *l = path_join(f->src, "base/link");
	assert_int_equal(symlink("b/c/deep.txt", l), 0);
	free(l);
	int fd = open(f->arch, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	struct snap_stats w;
	assert_int_equal(snap_write(f->src, fd, f->arch, CFG_COMP_ZSTD, 0, NULL, &w), -1);
	close(fd);
}

static void
test_write_missing_source(void **state)
{
	struct fixture *f = *state;
	char *nowhere = path_join(f->root, "nowhere");
	int fd = open(f->arch, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	struct snap_stats w;
	assert_int_equal(snap_write(nowhere, fd, f->arch, CFG_COMP_ZSTD, 0, NULL, &w), -1);
	close(fd);
	free(nowhere);
}

/* ------------------------------------------------------------- hostile */

enum hkind { H_FILE, H_DIR, H_SYMLINK, H_HARDLINK, H_CHR, H_FIFO };

struct hentry {
	enum hkind kind;
	const char *path;
	const char *data; /* file contents, or link target */
};

static void
hostile_archive(const char *out, const struct hentry *ents, size_t n)
{
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	assert_int_equal(archive_write_add_filter_zstd(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, out), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	for (size_t i = 0; i < n; i++) {
		archive_entry_clear(e);
		archive_entry_set_pathname(e, ents[i].path);
		archive_entry_set_mtime(e, 1700000000, 0);
		size_t size = 0;
		switch (ents[i].kind) {
		case H_FILE:
			archive_entry_set_mode(e, AE_IFREG | 0644);
			size = strlen(ents[i].data);
			break;
		case H_DIR:
			archive_entry_set_mode(e, AE_IFDIR | 0755);
			break;
		case H_SYMLINK:
			archive_entry_set_mode(e, AE_IFLNK | 0777);
			archive_entry_set_symlink(e, ents[i].data);
			break;
		case H_HARDLINK:
			archive_entry_set_mode(e, AE_IFREG | 0644);
			archive_entry_set_hardlink(e, ents[i].data);
			break;
		case H_CHR:
			archive_entry_set_mode(e, AE_IFCHR | 0666);
			archive_entry_set_rdev(e, makedev(1, 3));
			break;
		case H_FIFO:
			archive_entry_set_mode(e, AE_IFIFO | 0644);
			break;
		}
		archive_entry_set_size(e, (la_int64_t)size);
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		if (size)
			assert_int_equal(archive_write_data(a, ents[i].data, size), (la_ssize_t)size);
	}
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

/* Restores a hostile archive (with its correct digest) into root/box/dst; nothing may appear outside dst. */
static void
hostile_case(struct fixture *f, const struct hentry *ents, size_t n, const char *const *must_not_exist)
{
	char *box = path_join(f->root, "box");
	char *dst = path_join(box, "dst");
	char *arch = path_join(f->root, "hostile.tar.zst");
	assert_int_equal(mkdir_p(box, 0755), 0);
	hostile_archive(arch, ents, n);
	char sha[65];
	assert_int_equal(digest_file(arch, NULL, 0, sha, NULL), 0);
	assert_int_equal(snap_restore(arch, sha, dst, (uid_t)-1, (gid_t)-1, 0, NULL, 0, NULL), SNAP_BAD_ARCHIVE);
	assert_true(dir_is_empty(dst));
	for (size_t i = 0; must_not_exist && must_not_exist[i]; i++) {
		struct stat sb;
		if (lstat(must_not_exist[i], &sb) == 0)
			fail_msg("hostile archive wrote \"%s\"", must_not_exist[i]);
	}
	/* Only dst itself may be in the box. */
	DIR *d = opendir(box);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "dst"))
			fail_msg("hostile archive wrote \"%s\" beside the target", de->d_name);
	}
	closedir(d);
	rm_rf(box);
	free(box);
	free(dst);
	free(arch);
}

static void
test_hostile_dotdot(void **state)
{
	struct fixture *f = *state;
	char *victim = path_join(f->root, "box/x");
	const char *const gone[] = {victim, NULL};
	struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "../x", "owned"}};
	hostile_case(f, e, 2, gone);
	struct hentry e2[] = {{H_DIR, "base", NULL}, {H_FILE, "base/../../x", "owned"}};
	hostile_case(f, e2, 2, gone);
	free(victim);
}

static void
test_hostile_absolute(void **state)
{
	struct fixture *f = *state;
	char *victim = path_join(f->root, "abs-victim");
	const char *const gone[] = {victim, NULL};
	struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, victim, "owned"}};
	hostile_case(f, e, 2, gone);
	free(victim);
}

static void
test_hostile_symlink(void **state)
{
	struct fixture *f = *state;
	char *outside = path_join(f->root, "outside");
	assert_int_equal(mkdir(outside, 0755), 0);
	char *victim = path_join(outside, "owned");
	const char *const gone[] = {victim, NULL};
	/* Absolute target, then a file through it. */
	struct hentry e[] = {{H_SYMLINK, "evil", outside}, {H_FILE, "evil/owned", "owned"}};
	hostile_case(f, e, 2, gone);
	/* Relative target climbing out, then a file through it. */
	struct hentry e2[] = {{H_SYMLINK, "evil", "../../outside"}, {H_FILE, "evil/owned", "owned"}};
	hostile_case(f, e2, 2, gone);
	/* Even a symlink inside is refused (snapshots never hold one), and nothing is written through it. */
	struct hentry e3[] = {{H_DIR, "sub", NULL}, {H_SYMLINK, "in", "sub"}, {H_FILE, "in/f", "x"}};
	hostile_case(f, e3, 3, NULL);
	free(victim);
	free(outside);
}

static void
test_hostile_hardlink(void **state)
{
	struct fixture *f = *state;
	struct stat before, after;
	assert_int_equal(stat("/etc/passwd", &before), 0);
	struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_HARDLINK, "pw", "/etc/passwd"}};
	hostile_case(f, e, 2, NULL);
	struct hentry e2[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_HARDLINK, "pw", "PG_VERSION"}};
	hostile_case(f, e2, 2, NULL);
	assert_int_equal(stat("/etc/passwd", &after), 0);
	assert_int_equal(before.st_nlink, after.st_nlink);
}

static void
test_hostile_device_fifo(void **state)
{
	struct fixture *f = *state;
	struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_CHR, "null", NULL}};
	hostile_case(f, e, 2, NULL);
	struct hentry e2[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FIFO, "fifo", NULL}};
	hostile_case(f, e2, 2, NULL);
}

/* ------------------------------------------------- the restore's own writer */

/* Writes `len` bytes of `data` to dir/rel (parents made). */
static void
write_bytes(const char *dir, const char *rel, const unsigned char *data, size_t len)
{
	char *path = path_join(dir, rel);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	assert_int_equal(mkdir_p(path, 0755), 0);
	*slash = '/';
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	for (size_t off = 0; off < len;) {
		ssize_t k = write(fd, data + off, len - off);
		assert_true(k > 0);
		off += (size_t)k;
	}
	assert_int_equal(close(fd), 0);
	free(path);
}

static unsigned char *
pattern(size_t len, unsigned seed)
{
	unsigned char *b = xmalloc(len ? len : 1);
	for (size_t i = 0; i < len; i++)
		b[i] = (unsigned char)((i * 131 + seed * 7919 + i / 8192) % 251);
	return b;
}

static void
assert_file_bytes(const char *dir, const char *rel, const unsigned char *want, size_t len)
{
	char *p = path_join(dir, rel);
	size_t got_len = 0;
	char *got = read_file(p, &got_len);
	if (!got)
		fail_msg("\"%s\" was not restored", rel);
	assert_int_equal(got_len, len);
	if (len && memcmp(got, want, len) != 0)
		fail_msg("\"%s\" restored with other bytes", rel);
	free(got);
	free(p);
}

/*
 * More files and more bytes than the writer queue holds at once (4096 jobs,
 * 4 MiB), of every size class: empty, small, at the small/large boundary,
 * large: each comes back byte for byte.
 */
static void
test_many_files(void **state)
{
	struct fixture *f = *state;
	char *src = path_join(f->root, "many");
	unit_write(src, "PG_VERSION", "15\n");
	const size_t sizes[] = {0, 1, 8192, 100000, 256 * 1024, 256 * 1024 + 1, 1 << 20};
	enum { NDIR = 6, PER = 900 };
	for (unsigned d = 0; d < NDIR; d++) {
		for (unsigned i = 0; i < PER; i++) {
			char rel[64];
			snprintf(rel, sizeof(rel), "base/%u/%u", 16384 + d, i);
			size_t len = i % 50 == 0 ? sizes[(i / 50) % 7] : (i % 3 == 0 ? 0 : 8192);
			unsigned char *b = pattern(len, d * PER + i);
			write_bytes(src, rel, b, len);
			free(b);
		}
	}
	struct snap_stats w, r;
	write_snapshot(src, f->arch, CFG_COMP_ZSTD, 1, &w);
	assert_int_equal(w.files, NDIR * PER + 1);
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, &r), 0);
	assert_int_equal(r.files, w.files);
	assert_int_equal(r.pgdata_bytes, w.pgdata_bytes);
	for (unsigned d = 0; d < NDIR; d++) {
		for (unsigned i = 0; i < PER; i++) {
			char rel[64];
			snprintf(rel, sizeof(rel), "base/%u/%u", 16384 + d, i);
			size_t len = i % 50 == 0 ? sizes[(i / 50) % 7] : (i % 3 == 0 ? 0 : 8192);
			unsigned char *b = pattern(len, d * PER + i);
			assert_file_bytes(f->dst, rel, b, len);
			assert_int_equal(mode_of(f->dst, rel) & 07777, 0600);
			free(b);
		}
	}
	rm_rf(src);
	free(src);
}

/*
 * A large file of mostly zeros (a WAL segment after pg_resetwal) comes back
 * with the same bytes and holes where whole aligned 64 KiB blocks were zero;
 * data in a partial block at the end is kept.
 */
static void
test_large_file_holes(void **state)
{
	struct fixture *f = *state;
	unit_write(f->src, "pg_wal/000000010000000000000001", "");
	size_t len = 16 * 1024 * 1024 + 1000;
	unsigned char *b = xcalloc(len, 1);
	memset(b, 0x11, 8192);                       /* the segment's first page */
	memset(b + 5 * 65536 + 100, 0x22, 10);       /* a few bytes inside one block */
	memset(b + len - 10, 0x33, 10);              /* the tail, after the last whole block */
	write_bytes(f->src, "pg_wal/000000010000000000000001", b, len);
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL), 0);
	assert_file_bytes(f->dst, "pg_wal/000000010000000000000001", b, len);
	char *p = path_join(f->dst, "pg_wal/000000010000000000000001");
	struct stat sb;
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal((size_t)sb.st_size, len);
	/* Three blocks hold data; a file system without holes would allocate all 16 MiB. */
	struct statfs fs;
	assert_int_equal(statfs(p, &fs), 0);
	if (fs.f_type == 0xEF53 || fs.f_type == 0x01021994) /* ext4, tmpfs: both keep holes */
		assert_true((uint64_t)sb.st_blocks * 512 <= 4 * 65536);
	else
		print_message("note: file system %#lx, %lld blocks allocated\n", (unsigned long)fs.f_type,
		              (long long)sb.st_blocks);
	free(p);
	free(b);
	check_restored(f->dst);
}

/*
 * Large files (streamed, not queued): several of them, some larger than the
 * writers' 4 MiB queue, with unaligned zero runs that cross 1 MiB boundaries,
 * aligned zero blocks, and small files queued between them, come back byte
 * for byte.
 */
static void
test_large_files(void **state)
{
	struct fixture *f = *state;
	const size_t lens[] = {9 * 1024 * 1024 + 12345, 5 * 1024 * 1024, 256 * 1024 + 1, 1024 * 1024 + 65536 * 3 + 7};
	unsigned char *bufs[4];
	uint32_t x = 12345;
	for (size_t k = 0; k < 4; k++) {
		bufs[k] = xmalloc(lens[k]);
		for (size_t i = 0; i < lens[k]; i++) {
			x = x * 1103515245u + 12345u;
			bufs[k][i] = (unsigned char)(x >> 24);
		}
		/* Zero runs: an aligned hole of two blocks, and an unaligned run over a piece boundary. */
		if (lens[k] > 3 * 1024 * 1024) {
			memset(bufs[k] + 2 * 65536, 0, 2 * 65536);
			memset(bufs[k] + 1024 * 1024 - 1000, 0, 70000);
		}
		char name[64], small[64];
		snprintf(name, sizeof(name), "base/5/%zu", 20000 + k);
		snprintf(small, sizeof(small), "base/5/%zu_vm", 20000 + k);
		unit_write(f->src, name, "");
		write_bytes(f->src, name, bufs[k], lens[k]);
		unit_write(f->src, small, "small");
	}
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 1, &w);
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, w.pgdata_bytes, NULL), 0);
	for (size_t k = 0; k < 4; k++) {
		char name[64];
		snprintf(name, sizeof(name), "base/5/%zu", 20000 + k);
		assert_file_bytes(f->dst, name, bufs[k], lens[k]);
		free(bufs[k]);
	}
	check_restored(f->dst);
}

/* Random bytes (never a whole zero block by chance), from seed. */
static unsigned char *
noise(size_t len, uint32_t x)
{
	unsigned char *b = xmalloc(len);
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = (unsigned char)(x >> 24);
	}
	return b;
}

/* An archive of PG_VERSION and one large file, base/1/big, zstd-compressed or plain tar. */
static void
large_archive(const char *out, const unsigned char *data, size_t len, bool zstd)
{
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	if (zstd)
		assert_int_equal(archive_write_add_filter_zstd(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, out), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, "PG_VERSION");
	archive_entry_set_mode(e, AE_IFREG | 0600);
	archive_entry_set_size(e, 3);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, "15\n", 3), 3);
	archive_entry_clear(e);
	archive_entry_set_pathname(e, "base/1/big");
	archive_entry_set_mode(e, AE_IFREG | 0600);
	archive_entry_set_size(e, (la_int64_t)len);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

/*
 * A large file (its data queued for the writers in libarchive's blocks, which
 * need not fall on 64 KiB boundaries): aligned all-zero 64 KiB blocks stay
 * holes, also around the 1 MiB marks; data across those marks and an
 * unaligned zero run over one come back byte for byte; the same with one
 * writer thread and with several (the small files' pool).
 */
static void
test_large_file_holes_and_data(void **state)
{
	struct fixture *f = *state;
	const size_t mib = 1024 * 1024, blk = 65536, len = 6 * mib + 777;
	unsigned char *b = noise(len, 19);
	const size_t holes[] = {0, mib - blk, mib, 2 * mib + 3 * blk, 2 * mib + 4 * blk, 4 * mib - blk, 5 * mib};
	const size_t nholes = sizeof(holes) / sizeof(holes[0]);
	for (size_t i = 0; i < nholes; i++)
		memset(b + holes[i], 0, blk);
	memset(b + 3 * mib - 5000, 0, 10000); /* unaligned, over a 1 MiB mark: written */
	large_archive(f->arch, b, len, true);
	const int writers[] = {1, 3};
	for (size_t w = 0; w < 2; w++) {
		snap_restore_writers = writers[w];
		int rc = snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL);
		snap_restore_writers = 0;
		assert_int_equal(rc, 0);
		assert_file_bytes(f->dst, "base/1/big", b, len);
		char *p = path_join(f->dst, "base/1/big");
		struct stat sb;
		struct statfs fs;
		assert_int_equal(stat(p, &sb), 0);
		assert_int_equal(statfs(p, &fs), 0);
		/* Every block but the holes is allocated; one block of slack for the file system. */
		if (fs.f_type == 0xEF53 || fs.f_type == 0x01021994)
			assert_true((uint64_t)sb.st_blocks * 512 <= len - nholes * blk + blk);
		else
			print_message("note: file system %#lx, %lld blocks allocated\n", (unsigned long)fs.f_type,
			              (long long)sb.st_blocks);
		free(p);
		rm_rf(f->dst);
	}
	free(b);
}

/* An archive cut in the middle of a large file's data: a bad archive, nothing left in PGDATA. */
static void
test_truncated_in_large_file(void **state)
{
	struct fixture *f = *state;
	const size_t len = 8 * 1024 * 1024;
	unsigned char *b = noise(len, 7);
	char *cut = path_join(f->root, "cut");
	const bool zstd[] = {true, false};
	for (size_t k = 0; k < 2; k++) {
		large_archive(f->arch, b, len, zstd[k]);
		struct stat sb;
		assert_int_equal(stat(f->arch, &sb), 0);
		/* Random data does not compress: 60 % of the archive is 4.8 MiB into the file. */
		copy_file(f->arch, cut, (size_t)sb.st_size * 6 / 10);
		for (int w = 1; w <= 3; w += 2) {
			snap_restore_writers = w;
			expect_bad(f, cut, NULL, 15);
			snap_restore_writers = 0;
		}
	}
	free(cut);
	free(b);
}

struct feeder {
	const char *from, *fifo;
	size_t signal_at;  /* SIGTERM is sent after this many bytes (SIZE_MAX: none) */
	const char *fill;  /* or NULL: a file written first, of fill_bytes */
	size_t fill_bytes;
};

/*
 * Copies the archive into the fifo.  Once the restore has opened it (past its
 * check of the free space), writes the filler file first; and sends a
 * SIGTERM part of the way in (to the process, where it stays pending).
 */
static void *
feed(void *arg)
{
	const struct feeder *fd = arg;
	size_t len;
	char *data = read_file(fd->from, &len);
	int out = open(fd->fifo, O_WRONLY | O_CLOEXEC);
	if (fd->fill) {
		unsigned char *junk = noise(fd->fill_bytes, 5);
		int ff = open(fd->fill, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (ff < 0 || write(ff, junk, fd->fill_bytes) != (ssize_t)fd->fill_bytes || close(ff) != 0)
			fprintf(stderr, "could not fill %s: %s\n", fd->fill, strerror(errno));
		free(junk);
	}
	size_t done = 0;
	bool sent = false;
	while (out >= 0 && data && done < len) {
		if (!sent && done >= fd->signal_at) {
			kill(getpid(), SIGTERM);
			sent = true;
		}
		size_t n = len - done < 65536 ? len - done : 65536;
		ssize_t k = write(out, data + done, n);
		if (k <= 0)
			break; /* the restore stopped reading */
		done += (size_t)k;
	}
	if (out >= 0)
		close(out);
	free(data);
	return NULL;
}

/* snap_restore of `archive` (a plain file) through a fifo fed by feed(). */
static int
restore_fed(struct fixture *f, const char *archive, const char *dst, struct feeder *fd)
{
	char *fifo = path_join(f->root, "fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	struct sigaction ign = {.sa_handler = SIG_IGN}, oldpipe;
	sigaction(SIGPIPE, &ign, &oldpipe);
	fd->from = archive;
	fd->fifo = fifo;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, feed, fd), 0);
	int rc = snap_restore(fifo, NULL, dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL);
	pthread_join(th, NULL);
	sigaction(SIGPIPE, &oldpipe, NULL);
	unlink(fifo);
	free(fifo);
	return rc;
}

/*
 * A write failure inside a large file: the file system fills up (after
 * the restore checked the free space, before the file's data; ftruncate
 * alone still fits) when its first blocks are written.  SNAP_FAILED, PGDATA
 * left empty.  Needs root, for the small tmpfs.
 */
static void
test_large_file_disk_full(void **state)
{
	struct fixture *f = *state;
	char *mnt = path_join(f->root, "small");
	assert_int_equal(mkdir(mnt, 0700), 0);
	if (geteuid() != 0 || mount("pgstash-unit", mnt, "tmpfs", 0, "size=8m") != 0) {
		fprintf(stderr, "skipped: cannot mount a tmpfs here (%s)\n", strerror(errno));
		free(mnt);
		skip();
	}
	const size_t len = 6 * 1024 * 1024;
	unsigned char *b = noise(len, 3);
	large_archive(f->arch, b, len, true);
	char *dst = path_join(mnt, "pgdata");
	char *fill = path_join(mnt, "fill");
	for (int w = 1; w <= 3; w += 2) {
		struct feeder fd = {.signal_at = SIZE_MAX, .fill = fill, .fill_bytes = 6 * 1024 * 1024};
		snap_restore_writers = w;
		int rc = restore_fed(f, f->arch, dst, &fd);
		snap_restore_writers = 0;
		assert_int_equal(rc, SNAP_FAILED);
		assert_true(dir_is_empty(dst));
		assert_int_equal(unlink(fill), 0);
	}
	assert_int_equal(umount2(mnt, MNT_DETACH), 0);
	free(fill);
	free(dst);
	free(mnt);
	free(b);
}

/* Issue 19: a signal that arrives while a large file is read stops the restore before the file ends. */
static void
test_signal_in_large_file(void **state)
{
	struct fixture *f = *state;
	const size_t len = 64 * 1024 * 1024;
	unsigned char *b = noise(len, 11);
	char *tar = path_join(f->root, "big.tar");
	large_archive(tar, b, len, false);
	free(b);
	sigset_t term, old;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	assert_int_equal(pthread_sigmask(SIG_BLOCK, &term, &old), 0);
	struct feeder fd = {.signal_at = 8 * 1024 * 1024};
	int rc = restore_fed(f, tar, f->dst, &fd);
	int got = sig_received;
	sig_received = 0;
	const struct timespec zero = {0, 0};
	assert_int_equal(sigtimedwait(&term, NULL, &zero), SIGTERM);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	assert_int_equal(got, SIGTERM);
	assert_int_equal(rc, SNAP_FAILED);
	assert_true(dir_is_empty(f->dst));
	free(tar);
}

/* Entries in an order pgstash never writes: files before (or without) their directories. */
/* Issue 14: only a cluster's paths, and conf files without code-running or trust-moving settings. */
static void
test_cluster_shape(void **state)
{
	struct fixture *f = *state;
	const char *bad_paths[] = {"recovery.signal", "standby.signal", "backup_label", "extras/evil.so",
	                           "pg_tblspc/16384/PG_15", "pgstash.key"};
	for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
		struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, bad_paths[i], "x"}};
		hostile_archive(f->arch, e, 2);
		if (snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL) != SNAP_BAD_ARCHIVE)
			fail_msg("%s was not refused", bad_paths[i]);
		assert_true(dir_is_empty(f->dst));
	}
	const char *bad_conf[] = {"archive_command = 'x'", "  Shared_Preload_Libraries='a'", "hba_file = '/x'",
	                          "include_dir 'conf.d'", "ssl_key_file = 'k'", "dynamic_library_path = '/x'",
	                          "jit_provider = 'evil'", "log_directory = '/etc'",
	                          /* Names that end without "_file" or "_directory" (session 15's review). */
	                          "extension_destdir = 'base/pg'", "krb_server_keyfile = 'k'", "ssl_crl_dir = 'd'",
	                          "log_filename = '../../../home/postgres/.psqlrc'",
	                          /* The server's lexer takes \r as a blank before a name. */
	                          "\rshared_preload_libraries = '/tmp/x.so'", " \r\tarchive_command = 'x'",
	                          /* An extension's setting: its module's own (attacker's review, session 16). */
	                          "plperl.on_init = 'system(q{id})'", "plperl.on_plperlu_init = 'x'",
	                          "basebackup_to_shell.command = 'x'", "pltcl.start_proc = 'x'",
	                          "pljava.libjvm_location = '/tmp/x.so'", "pgsodium.getkey_script = 'base/1/k.sh'",
	                          "pljava.vmoptions = '-XX:OnError=x'", "postgis.gdal_datapath = 'base'"};
	for (size_t i = 0; i < sizeof(bad_conf) / sizeof(bad_conf[0]); i++) {
		struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "postgresql.auto.conf", bad_conf[i]}};
		hostile_archive(f->arch, e, 2);
		if (snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL) != SNAP_BAD_ARCHIVE)
			fail_msg("\"%s\" was not refused", bad_conf[i]);
	}
	/* Blanks that push the name across a 1 KiB read: it must not pass as "shared_preload_librar" + "ies". */
	for (size_t pad = 1000; pad <= 1030; pad++) {
		char *line = xmalloc(pad + 64);
		memset(line, ' ', pad);
		strcpy(line + pad, "shared_preload_libraries = '/tmp/x.so'\n");
		struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "postgresql.auto.conf", line}};
		hostile_archive(f->arch, e, 2);
		if (snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL) != SNAP_BAD_ARCHIVE)
			fail_msg("shared_preload_libraries after %zu blanks was not refused", pad);
		free(line);
	}
	/*
	 * A library under any name, small or large (a catalog setting could load
	 * base/1/99999 as well as extras/evil.so), is refused before PGDATA is
	 * left with it.
	 */
	size_t big = 300 * 1024;
	char *large = xmalloc(big + 1);
	memset(large, 'a', big);
	large[big] = '\0';
	memcpy(large, "\177ELF", 4);
	const char *libraries[] = {"\177ELF\2\1\1", large};
	for (size_t i = 0; i < 2; i++) {
		struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "base/1/99999", libraries[i]}};
		hostile_archive(f->arch, e, 2);
		if (snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL) != SNAP_BAD_ARCHIVE)
			fail_msg("an ELF file of %zu bytes was not refused", strlen(libraries[i]));
		assert_true(dir_is_empty(f->dst));
	}
	free(large);
	/*
	 * Where the server listens (session 15's review): postgresql.auto.conf
	 * never sets it, postgresql.conf only with a line of this machine's
	 * sample, which initdb copies (the image's listen_addresses = '*').
	 */
	char *sample = path_join(f->root, "postgresql.conf.sample");
	unit_write(f->root, "postgresql.conf.sample",
	           "#listen_addresses = 'localhost'\nlisten_addresses = '*'\n#port = 5432\n");
	struct {
		const char *conf, *text, *sample;
		int want;
	} listen[] = {
		{"postgresql.auto.conf", "listen_addresses = '*'\n", sample, SNAP_BAD_ARCHIVE},
		{"postgresql.conf", "listen_addresses = '*'\n", NULL, SNAP_BAD_ARCHIVE},
		{"postgresql.conf", "listen_addresses = '*'\n", sample, 0},
		{"postgresql.conf", "listen_addresses = '*' \n", sample, SNAP_BAD_ARCHIVE},
		{"postgresql.conf", "listen_addresses = '0.0.0.0'\n", sample, SNAP_BAD_ARCHIVE},
		{"postgresql.conf", "#port = 5432\nport = 5433\n", sample, SNAP_BAD_ARCHIVE},
		{"postgresql.conf", "#listen_addresses = '*'\n#port = 5433\n", NULL, 0},
	};
	for (size_t i = 0; i < sizeof(listen) / sizeof(listen[0]); i++) {
		struct hentry e[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, listen[i].conf, listen[i].text}};
		hostile_archive(f->arch, e, 2);
		int rc = snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, listen[i].sample, 0, NULL);
		if (rc != listen[i].want)
			fail_msg("%s \"%s\" with%s the sample: %d, want %d", listen[i].conf, listen[i].text,
			         listen[i].sample ? "" : "out", rc, listen[i].want);
		if (rc == 0)
			assert_int_equal(empty_dir(f->dst), 0);
	}
	free(sample);
	struct hentry ok[] = {{H_FILE, "PG_VERSION", "15\n"},
	                      {H_FILE, "postgresql.auto.conf",
	                       "# archive_command = 'x'\nwork_mem = '64MB'\npg_stat_statements.track = 'all'\n"
	                       "plpgsql.extra_warnings = 'all'\nauto_explain.log_min_duration = '1s'\n"},
	                      {H_FILE, "base/1/1", "\177EL"}, {H_FILE, "base/1/2", "\177ELG and more"},
	                      {H_DIR, "pg_tblspc", NULL}};
	hostile_archive(f->arch, ok, sizeof(ok) / sizeof(ok[0]));
	assert_int_equal(snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL), 0);
}

/* ------------------------------------------------------------- sparse maps */

/* A ustar header block of `type` for `name` and `size` bytes, its checksum set. */
static void
tar_header(unsigned char blk[512], const char *name, size_t size, char type)
{
	memset(blk, 0, 512);
	snprintf((char *)blk, 100, "%s", name);
	snprintf((char *)blk + 100, 8, "%07o", 0600);
	snprintf((char *)blk + 108, 8, "%07o", 0);
	snprintf((char *)blk + 116, 8, "%07o", 0);
	snprintf((char *)blk + 124, 12, "%011zo", size);
	snprintf((char *)blk + 136, 12, "%011o", 1700000000);
	blk[156] = (unsigned char)type;
	memcpy(blk + 257, "ustar", 6);
	memcpy(blk + 263, "00", 2);
	memset(blk + 148, ' ', 8);
	unsigned sum = 0;
	for (size_t i = 0; i < 512; i++)
		sum += blk[i];
	snprintf((char *)blk + 148, 8, "%06o", sum);
}

/* Appends a tar entry (header, data padded to 512 bytes) to out. */
static void
tar_entry(struct strbuf *out, const char *name, const void *data, size_t size, char type)
{
	unsigned char blk[512];
	tar_header(blk, name, size, type);
	sb_appendn(out, (const char *)blk, 512);
	sb_appendn(out, data, size);
	static const char zeros[512];
	sb_appendn(out, zeros, (512 - size % 512) % 512);
}

/* Appends a pax record "LEN key=value\n" (LEN counts itself). */
static void
pax_record(struct strbuf *out, const char *key, const char *value)
{
	size_t body = strlen(key) + strlen(value) + 3, len = body + 1;
	while (snprintf(NULL, 0, "%zu", len) + body != len)
		len++;
	sb_appendf(out, "%zu %s=%s\n", len, key, value);
}

/*
 * A plain tar of PG_VERSION and base/1/99999 of `size` bytes stored as a GNU
 * sparse 1.0 entry (what GNU tar and bsdtar write for a file with holes):
 * `n` ranges (offset, length), their data taken in turn from `data`.
 */
static void
sparse_archive(const char *out, uint64_t size, const uint64_t (*ranges)[2], size_t n, const unsigned char *data)
{
	struct strbuf tar = {0}, pax = {0}, body = {0};
	tar_entry(&tar, "PG_VERSION", "15\n", 3, '0');
	char realsize[32];
	snprintf(realsize, sizeof(realsize), "%" PRIu64, size);
	pax_record(&pax, "GNU.sparse.major", "1");
	pax_record(&pax, "GNU.sparse.minor", "0");
	pax_record(&pax, "GNU.sparse.name", "base/1/99999");
	pax_record(&pax, "GNU.sparse.realsize", realsize);
	tar_entry(&tar, "PaxHeaders/99999", pax.buf, pax.len, 'x');
	sb_appendf(&body, "%zu\n", n);
	size_t stored = 0;
	for (size_t i = 0; i < n; i++) {
		sb_appendf(&body, "%" PRIu64 "\n%" PRIu64 "\n", ranges[i][0], ranges[i][1]);
		stored += (size_t)ranges[i][1];
	}
	static const char zeros[512];
	sb_appendn(&body, zeros, (512 - body.len % 512) % 512);
	sb_appendn(&body, (const char *)data, stored);
	tar_entry(&tar, "base/1/GNUSparseFile.0/99999", body.buf, body.len, '0');
	static const char end[1024];
	sb_appendn(&tar, end, sizeof(end));
	FILE *fp = fopen(out, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(tar.buf, 1, tar.len, fp), tar.len);
	assert_int_equal(fclose(fp), 0);
	sb_free(&tar);
	sb_free(&pax);
	sb_free(&body);
}

/*
 * A sparse map is restored where its ranges go forward; one that lists a
 * range twice is refused, small file or large: a second, all-zero block over
 * the first bytes was skipped as a hole, and an ELF file written by the first
 * passed as zeros (attacker's review of session 15's ELF check).
 */
static void
test_sparse_map_goes_forward(void **state)
{
	struct fixture *f = *state;
	/* An ELF header's first 16 bytes, then 4 bytes of data. */
	static const unsigned char elf[] = "\177ELF\2\1\1\0\0\0\0\0\0\0\0\0WXYZ";
	unsigned char plain[20];
	memcpy(plain, elf, sizeof(plain));
	plain[0] = 'x';
	const uint64_t forward[][2] = {{0, 16}, {100000, 4}};
	const uint64_t twice[][2] = {{0, 16}, {0, 4}};   /* the library, then four zeros over its magic */
	const uint64_t inside[][2] = {{0, 16}, {8, 4}};  /* a range that starts inside the one before */
	static const unsigned char zeros[20];
	unsigned char twice_data[20];
	memcpy(twice_data, elf, 16);
	memcpy(twice_data + 16, zeros, 4);
	const uint64_t sizes[] = {200000, 300000}; /* below and above the large-file mark (256 KiB) */
	for (size_t k = 0; k < 2; k++) {
		sparse_archive(f->arch, sizes[k], forward, 2, plain);
		unsigned char *want = xcalloc(1, sizes[k]);
		memcpy(want, plain, 16);
		memcpy(want + 100000, plain + 16, 4);
		assert_int_equal(snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL), 0);
		assert_file_bytes(f->dst, "base/1/99999", want, sizes[k]);
		rm_rf(f->dst);
		free(want);
		sparse_archive(f->arch, sizes[k], twice, 2, twice_data);
		expect_bad(f, f->arch, NULL, 15);
		sparse_archive(f->arch, sizes[k], inside, 2, twice_data);
		expect_bad(f, f->arch, NULL, 15);
	}
}

static void
test_implicit_parents(void **state)
{
	struct fixture *f = *state;
	struct hentry e[] = {{H_FILE, "base/1/1259", "rel"}, {H_FILE, "./global/pg_control", "ctl"},
	                     {H_DIR, "base/", NULL},        {H_DIR, "./", NULL},
	                     {H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "base//b/./c", "c"}};
	hostile_archive(f->arch, e, sizeof(e) / sizeof(e[0]));
	assert_int_equal(snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL), 0);
	char *t = rd(f->dst, "base/1/1259");
	assert_string_equal(t, "rel");
	free(t);
	t = rd(f->dst, "global/pg_control");
	assert_string_equal(t, "ctl");
	free(t);
	t = rd(f->dst, "base/b/c");
	assert_string_equal(t, "c");
	free(t);
	/* hostile_archive's directories say 0755: kept (a PGDATA made with initdb -g has 0750). */
	assert_int_equal(mode_of(f->dst, "base") & 07777, 0755);
	assert_int_equal(mode_of(f->dst, "base/1") & 07777, 0700);
	assert_int_equal(mode_of(f->dst, ".") & 07777, 0700);
}

/* Names that collide with each other or with pgstash's markers: refused, PGDATA left empty. */
static void
test_hostile_collisions(void **state)
{
	struct fixture *f = *state;
	struct hentry dup[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "base", "x"}, {H_FILE, "base", "y"}};
	hostile_case(f, dup, 3, NULL);
	struct hentry file_dir[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "base", "x"}, {H_FILE, "base/1", "y"}};
	hostile_case(f, file_dir, 3, NULL);
	struct hentry dir_file[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_DIR, "base", NULL}, {H_FILE, "base", "y"}};
	hostile_case(f, dir_file, 3, NULL);
	struct hentry marker[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "pgstash.key", "0000\n"}};
	hostile_case(f, marker, 2, NULL);
	struct hentry pid[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "./postmaster.pid", "1\n"}};
	hostile_case(f, pid, 2, NULL);
	struct hentry self[] = {{H_FILE, "PG_VERSION", "15\n"}, {H_FILE, "./", "x"}};
	hostile_case(f, self, 2, NULL);

	/* The marker already in PGDATA survives a refused archive that names it. */
	unit_write(f->dst, "pgstash.key", "restoring k\n");
	hostile_archive(f->arch, marker, 2);
	assert_int_equal(snap_restore(f->arch, NULL, f->dst, (uid_t)-1, (gid_t)-1, 0, NULL, 0, NULL), SNAP_BAD_ARCHIVE);
}

/*
 * A write that fails (here: RLIMIT_FSIZE, as a full disk would) in a writer
 * thread or in the streaming of a large file: SNAP_FAILED (the local system's
 * fault, not the archive's), PGDATA left empty.
 */
static void
test_write_failure(void **state)
{
	struct fixture *f = *state;
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	struct sigaction ign = {.sa_handler = SIG_IGN}, old;
	sigaction(SIGXFSZ, &ign, &old);
	struct rlimit saved, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
	/* 1: below the 3 MiB file (streamed); 2: below the small files too (writer threads). */
	const rlim_t caps[] = {1024 * 1024, 4};
	for (size_t i = 0; i < 2; i++) {
		lim = saved;
		lim.rlim_cur = caps[i];
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
		int rc = snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
		assert_int_equal(rc, SNAP_FAILED);
		assert_true(dir_is_empty(f->dst));
	}
	sigaction(SIGXFSZ, &old, NULL);
	assert_int_equal(snap_restore(f->arch, w.sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, 0, NULL), 0);
	check_restored(f->dst);
}

/*
 * The archive's file system full at any point (EFBIG past RLIMIT_FSIZE, as
 * ENOSPC would be): -1, and nothing of libarchive's left allocated (its free
 * skips the close once a header write failed; LeakSanitizer in the ASan
 * build), at each level and with or without zstd's workers.
 */
static void
test_snapshot_to_a_full_disk(void **state)
{
	struct fixture *f = *state;
	/* Bigger than one output block: the file is written from many places. */
	char *noise = xmalloc(6 * 1024 * 1024 + 1);
	uint32_t x = 12345;
	for (size_t i = 0; i < 6 * 1024 * 1024; i++) {
		x = x * 1103515245u + 12345u;
		noise[i] = (char)('a' + (x >> 16) % 26);
	}
	noise[6 * 1024 * 1024] = '\0';
	for (int i = 0; i < 2000; i++) {
		char rel[32];
		snprintf(rel, sizeof(rel), "base/1/%d", 20000 + i);
		noise[(size_t)i * 3000 + 2000] = '\0';
		unit_write(f->src, rel, i % 400 == 0 ? noise + 2500000 : noise + (size_t)i * 3000);
	}
	free(noise);
	struct sigaction ign = {.sa_handler = SIG_IGN}, old;
	sigaction(SIGXFSZ, &ign, &old);
	struct rlimit saved, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
	const rlim_t caps[] = {1, 4096, 1024 * 1024, 3 * 1024 * 1024, 5 * 1024 * 1024};
	const struct snap_zstd zs[] = {{1, 0}, {1, 2}, {3, 0}};
	for (size_t z = 0; z < sizeof(zs) / sizeof(zs[0]); z++) {
		for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
			int fd = open(f->arch, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			assert_true(fd >= 0);
			lim = saved;
			lim.rlim_cur = caps[i];
			assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
			struct snap_stats st;
			int rc = snap_write_with(f->src, fd, f->arch, CFG_COMP_ZSTD, zs[z], NULL, &st);
			assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
			assert_int_equal(rc, -1);
			assert_int_equal(close(fd), 0);
		}
	}
	sigaction(SIGXFSZ, &old, NULL);
}

/* ------------------------------------------------------------ real PGDATA */

/* Runs argv (as the postgres user when we are root); returns the exit status or -1. */
static int
run_pg(const char *const *argv, const struct passwd *pw)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (pw && (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
			_exit(125);
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0)
			dup2(devnull, STDOUT_FILENO);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	int status;
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
test_real_pgdata(void **state)
{
	struct fixture *f = *state;
	if (access(PG_BINDIR "/initdb", X_OK) != 0) {
		fprintf(stderr, "skipped: no initdb at %s\n", PG_BINDIR);
		skip();
	}
	const struct passwd *pw = NULL;
	if (geteuid() == 0) {
		pw = getpwnam("postgres");
		if (!pw) {
			fprintf(stderr, "skipped: running as root and there is no postgres user\n");
			skip();
		}
		assert_int_equal(chown(f->root, pw->pw_uid, pw->pw_gid), 0);
		assert_int_equal(chmod(f->root, 0755), 0);
	}
	char *pg1 = path_join(f->root, "pg1");
	char *pg2 = path_join(f->root, "pg2");
	char *sock = path_join(f->root, "sock");
	char *logf = path_join(f->root, "server.log");
	assert_int_equal(mkdir(sock, 0777), 0);
	assert_int_equal(chmod(sock, 0777), 0);

	const char *const initdb[] = {PG_BINDIR "/initdb", "-D", pg1, "-U", "postgres", "--auth=trust",
	                              "-E", "UTF8", "--locale=C", "--no-sync", NULL};
	assert_int_equal(run_pg(initdb, pw), 0);

	struct snap_stats w, r;
	write_snapshot(pg1, f->arch, CFG_COMP_ZSTD, 0, &w);
	fprintf(stderr, "initdb PGDATA: %llu bytes in %llu files -> %llu byte snapshot (%.1f%%) in %.2f s\n",
	        (unsigned long long)w.pgdata_bytes, (unsigned long long)w.files,
	        (unsigned long long)w.archive_bytes, 100.0 * (double)w.archive_bytes / (double)w.pgdata_bytes,
	        w.seconds);
	assert_int_equal(snap_restore(f->arch, w.sha256, pg2, pw ? pw->pw_uid : (uid_t)-1,
	                              pw ? pw->pw_gid : (gid_t)-1, 15, NULL, 0, &r),
	                 0);
	fprintf(stderr, "restored in %.2f s\n", r.seconds);
	if (pw) {
		struct stat sb;
		char *ctl = path_join(pg2, "global/pg_control");
		assert_int_equal(stat(ctl, &sb), 0);
		assert_int_equal(sb.st_uid, pw->pw_uid);
		free(ctl);
		assert_int_equal(stat(pg2, &sb), 0);
		assert_int_equal(sb.st_uid, pw->pw_uid);
		assert_int_equal(sb.st_mode & 0777, 0700);
	}

	char *opts = xasprintf("-c listen_addresses= -c unix_socket_directories=%s -c port=%d", sock,
	                       50000 + (int)(getpid() % 10000));
	char *port = xasprintf("%d", 50000 + (int)(getpid() % 10000));
	const char *const start[] = {PG_BINDIR "/pg_ctl", "-D", pg2, "-l", logf, "-o", opts, "-w", "-t", "60",
	                             "start", NULL};
	int started = run_pg(start, pw);
	if (started != 0) {
		char *log = read_file(logf, NULL);
		fprintf(stderr, "server log:\n%s\n", log ? log : "(none)");
		free(log);
	}
	assert_int_equal(started, 0);
	const char *const psql[] = {PG_BINDIR "/psql", "-X", "-h", sock, "-p", port, "-U", "postgres",
	                            "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", "select 1", NULL};
	int q = run_pg(psql, pw);
	const char *const stop[] = {PG_BINDIR "/pg_ctl", "-D", pg2, "-m", "fast", "-w", "stop", NULL};
	int stopped = run_pg(stop, pw);
	assert_int_equal(q, 0);
	assert_int_equal(stopped, 0);
	free(opts);
	free(port);
	free(pg1);
	free(pg2);
	free(sock);
	free(logf);
}

/* ---- the relcache init files, and a snapshot begun while the steps run (snap_early) ---- */

/* Every server start removes them: a snapshot leaves them out, at any depth. */
static void
test_relcache_init_files_left_out(void **state)
{
	struct fixture *f = *state;
	unit_write(f->src, "global/pg_internal.init", "shared relcache");
	unit_write(f->src, "base/1/pg_internal.init", "relcache");
	unit_write(f->src, "base/1/pg_internal.init.4242", "a backend's temp");
	struct snap_stats w;
	write_snapshot(f->src, f->arch, CFG_COMP_ZSTD, 0, &w);
	struct strlist names = {0};
	archive_names(f->arch, &names);
	for (size_t i = 0; i < names.n; i++)
		assert_null(strstr(names.v[i], "pg_internal.init"));
	assert_true(sl_contains(&names, "base/1/1259"));
	sl_free(&names);
}

/* make_tree's tree plus two databases of files only. */
static void
add_databases(const char *src)
{
	unit_write(src, "base/16384/2600", "catalog of 16384");
	unit_write(src, "base/16384/16390", "table of 16384");
	unit_write(src, "base/16385/2600", "catalog of 16385");
	unit_write(src, "base/16385/16391", "table of 16385");
}

static void
write_early(const char *src, const char *arch, const struct strlist *oids, struct timespec since,
            void (*during)(const char *src), struct snap_stats *w)
{
	int fd = open(arch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	struct snap_early *e = snap_early_start(src, fd, arch, CFG_COMP_ZSTD, 0, oids, since);
	assert_non_null(e);
	if (during)
		during(src);
	assert_int_equal(snap_write_after(e, NULL, w), 0);
	assert_int_equal(close(fd), 0);
}

/* Each name once, and the archive restores to the tree. */
static void
check_early_archive(struct fixture *f, const struct snap_stats *w, struct strlist *names)
{
	struct snap_stats r;
	archive_names(f->arch, names);
	for (size_t i = 0; i < names->n; i++)
		for (size_t j = i + 1; j < names->n; j++)
			assert_string_not_equal(names->v[i], names->v[j]);
	assert_int_equal(snap_restore(f->arch, w->sha256, f->dst, (uid_t)-1, (gid_t)-1, 15, NULL, w->pgdata_bytes, &r), 0);
	check_restored(f->dst);
	assert_int_equal(r.files, w->files);
	assert_int_equal(r.pgdata_bytes, w->pgdata_bytes);
}

/* Databases untouched since `since` are written first, while "the steps" run; the rest after. */
static void
test_early_write_of_untouched_databases(void **state)
{
	struct fixture *f = *state;
	add_databases(f->src);
	struct snap_stats plain, w;
	char *plain_arch = path_join(f->root, "plain.tar.zst");
	write_snapshot(f->src, plain_arch, CFG_COMP_ZSTD, 0, &plain);
	struct strlist oids = {0}, names = {0}, plain_names = {0};
	sl_add(&oids, "16385");
	sl_add(&oids, "16384");
	sl_add(&oids, "99999"); /* a database without a directory: nothing */
	write_early(f->src, f->arch, &oids, ctime_mark(), NULL, &w);
	check_early_archive(f, &w, &names);
	assert_string_equal(names.v[0], "base/16384/");
	assert_string_equal(names.v[3], "base/16385/");
	char *t = rd(f->dst, "base/16385/16391");
	assert_string_equal(t, "table of 16385");
	free(t);
	/* The same entries as a snapshot written at once, in another order; the same counts. */
	archive_names(plain_arch, &plain_names);
	assert_int_equal(names.n, plain_names.n);
	for (size_t i = 0; i < plain_names.n; i++)
		assert_true(sl_contains(&names, plain_names.v[i]));
	assert_int_equal(w.files, plain.files);
	assert_int_equal(w.pgdata_bytes, plain.pgdata_bytes);
	sl_free(&oids);
	sl_free(&names);
	sl_free(&plain_names);
	free(plain_arch);
}

static void
change_16384(const char *src)
{
	unit_write(src, "base/16384/16390", "table of 16384, changed by a step");
}

static void
add_to_16384(const char *src)
{
	unit_write(src, "base/16384/16392", "a table a step created");
}

/* A file of an early database changed or added by "the steps": all of it is written again, as it is now. */
static void
early_redone(void **state, void (*during)(const char *src), const char *rel, const char *expect)
{
	struct fixture *f = *state;
	add_databases(f->src);
	struct strlist oids = {0}, names = {0};
	sl_add(&oids, "16384");
	struct snap_stats w;
	write_early(f->src, f->arch, &oids, ctime_mark(), during, &w);
	check_early_archive(f, &w, &names);
	/* Written again from the start: the walk's own order. */
	assert_string_equal(names.v[0], "PG_VERSION");
	char *t = rd(f->dst, rel);
	assert_string_equal(t, expect);
	free(t);
	sl_free(&oids);
	sl_free(&names);
}

static void
test_early_write_redone_when_a_file_changes(void **state)
{
	early_redone(state, change_16384, "base/16384/16390", "table of 16384, changed by a step");
}

static void
test_early_write_redone_when_a_file_appears(void **state)
{
	early_redone(state, add_to_16384, "base/16384/16392", "a table a step created");
}

/* A database changed after `since` (the temporary server's start) is left to the walk after the steps. */
static void
test_early_write_skips_a_database_changed_since(void **state)
{
	struct fixture *f = *state;
	add_databases(f->src);
	struct timespec since = ctime_mark();
	change_16384(f->src);
	struct strlist oids = {0}, names = {0};
	sl_add(&oids, "16384");
	sl_add(&oids, "16385");
	struct snap_stats w;
	write_early(f->src, f->arch, &oids, since, NULL, &w);
	check_early_archive(f, &w, &names);
	assert_string_equal(names.v[0], "base/16385/");
	char *t = rd(f->dst, "base/16384/16390");
	assert_string_equal(t, "table of 16384, changed by a step");
	free(t);
	sl_free(&oids);
	sl_free(&names);
}

/* A build that fails: the thread is stopped and freed, whatever it had written. */
static void
test_early_write_dropped(void **state)
{
	struct fixture *f = *state;
	add_databases(f->src);
	struct strlist oids = {0};
	sl_add(&oids, "16384");
	sl_add(&oids, "16385");
	int fd = open(f->arch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	snap_early_drop(snap_early_start(f->src, fd, f->arch, CFG_COMP_ZSTD, 0, &oids, ctime_mark()));
	snap_early_drop(NULL);
	assert_int_equal(close(fd), 0);
	sl_free(&oids);
}

int
main(void)
{
	log_min_level = LOG_ERROR + 1;
	if (getenv("UNIT_VERBOSE"))
		log_min_level = LOG_DEBUG;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip_zstd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relcache_init_files_left_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_early_write_of_untouched_databases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_early_write_redone_when_a_file_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_early_write_redone_when_a_file_appears, setup, teardown),
		cmocka_unit_test_setup_teardown(test_early_write_skips_a_database_changed_since, setup, teardown),
		cmocka_unit_test_setup_teardown(test_early_write_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_zstd_level, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_gzip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expansion_past_meta_is_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_larger_than_free_space_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deterministic, setup, teardown),
		cmocka_unit_test(test_zstd_choice),
		cmocka_unit_test_setup_teardown(test_zstd_workers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_uses_choice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_late_paths_written_last, setup, teardown),
		cmocka_unit_test_setup_teardown(test_late_not_ready, setup, teardown),
		cmocka_unit_test_setup_teardown(test_target_not_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flipped_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trailing_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_digest_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_major_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_aborts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_refuses_outside_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_refuses_inside_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_missing_source, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_dotdot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_absolute, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_hardlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_device_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_file_holes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_file_holes_and_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_in_large_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_file_disk_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_in_large_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_implicit_parents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cluster_shape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sparse_map_goes_forward, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_collisions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_to_a_full_disk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_real_pgdata, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
