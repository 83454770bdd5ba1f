/*
 * Unit tests for pgbin: parsing `postgres --version` output, reading the
 * version from the binary's bytes (the real postgres, and ELF files made
 * here with the text at chunk boundaries, twice, or disagreeing), finding the
 * binaries in a configured directory (the real Debian one and fake ones whose
 * `postgres` is a shell script), the pg_config and PATH fallbacks, and the
 * messages when nothing usable is there.
 */
#include "unit.h"

#include "log.h"
#include "pgbin.h"
#include "pgbin_int.h"
#include "proc.h"

#include <elf.h>

#define PG_BINDIR "/usr/lib/postgresql/15/bin"

static char *tmp;
static char *saved_path;

static int
setup(void **state)
{
	(void)state;
	tmp = unit_tmpdir();
	/* As root, postgres --version runs as postgres or nobody (proc): its fakes must be reachable. */
	assert_int_equal(chmod(tmp, 0755), 0);
	const char *p = getenv("PATH");
	saved_path = p ? xstrdup(p) : NULL;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (saved_path)
		setenv("PATH", saved_path, 1);
	else
		unsetenv("PATH");
	free(saved_path);
	saved_path = NULL;
	rm_rf(tmp);
	free(tmp);
	return 0;
}

/* Writes an executable shell script dir/rel with `body` after the #! line; returns its directory. */
static char *
fake_prog(const char *rel, const char *body)
{
	char *text = xasprintf("#!/bin/sh\n%s", body);
	unit_write(tmp, rel, text);
	free(text);
	char *path = path_join(tmp, rel);
	assert_int_equal(chmod(path, 0755), 0);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	return path;
}

/* pgbin_find with stderr captured; *err gets the text. */
static int
find(const char *configured, struct pgbin *pg, char **err)
{
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = pgbin_find(configured, pg);
	char *e = unit_stderr_end(&cap);
	if (err)
		*err = e;
	else
		free(e);
	return rc;
}

/* ---- pgbin_parse_version ---- */

static void
expect_version(const char *text, const char *version, int major)
{
	char *v = NULL;
	int m = -1;
	int rc = pgbin_parse_version(text, &v, &m);
	if (rc != 0)
		fail_msg("could not parse \"%s\"", text);
	if (strcmp(v, version) != 0 || m != major)
		fail_msg("\"%s\" gave version \"%s\" major %d, want \"%s\" %d", text, v, m, version, major);
	free(v);
}

static void
expect_no_version(const char *text)
{
	char *v = NULL;
	int m = -1;
	if (pgbin_parse_version(text, &v, &m) != -1)
		fail_msg("\"%s\" parsed as \"%s\" %d", text, v ? v : "(null)", m);
	if (v != NULL || m != -1)
		fail_msg("\"%s\": outputs written on failure", text);
}

static void
test_parse_version(void **state)
{
	(void)state;
	expect_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "15.18", 15);
	expect_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "15.18", 15);
	expect_version("postgres (PostgreSQL) 16beta2", "16beta2", 16);
	expect_version("postgres (PostgreSQL) 16beta2\n", "16beta2", 16);
	expect_version("postgres (PostgreSQL) 9.6.24", "9.6.24", 9);
	expect_version("postgres (PostgreSQL) 9.6.24\n", "9.6.24", 9);
	expect_version("postgres (PostgreSQL) 17.0\n", "17.0", 17);
	expect_version("postgres (PostgreSQL) 18devel\n", "18devel", 18);
	expect_version("postgres (PostgreSQL) 12.22 (Ubuntu 12.22-1.pgdg22.04+1)\n", "12.22", 12);
	expect_version("postgres (PostgreSQL) 16.1\tmore", "16.1", 16);

	expect_no_version("");
	expect_no_version("garbage");
	expect_no_version("bash: postgres: command not found\n");
	expect_no_version("postgres (PostgreSQL)");
	expect_no_version("postgres (PostgreSQL) ");
	expect_no_version("postgres (PostgreSQL) \n");
	expect_no_version("postgres (PostgreSQL) beta");
	expect_no_version("postgres (PostgreSQL) v15.2");
	expect_no_version("postgres (PostgreSQL)  15.2");
	expect_no_version("postgres (PostgreSQL) -15");
	expect_no_version("postgres (PostgreSQL) 0.1");
	expect_no_version("postgres (PostgreSQL) 99999999999999999999");
	expect_no_version("postgres 15.2");
	expect_no_version("(postgresql) 15.2");
}

/* ---- pgbin_version_in_binary ---- */

/*
 * Writes tmp/rel, mode 0755: a 64-bit ELF file of this machine's byte order
 * whose .rodata section is `pad` zero bytes then `text` (text_len bytes);
 * `outside` goes after the section, in no section.  Returns its path.
 */
static char *
fake_elf_text(const char *rel, size_t pad, const char *text, size_t text_len, const char *outside)
{
	static const char names[] = "\0.rodata\0.shstrtab";
	const size_t names_at = 256, rodata_at = 512, rodata_len = pad + text_len;
	size_t outside_len = outside ? strlen(outside) : 0;
	size_t total = rodata_at + rodata_len + outside_len;
	unsigned char *img = xcalloc(1, total);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_version = EV_CURRENT;
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_shoff = sizeof(Elf64_Ehdr);
	eh->e_shentsize = sizeof(Elf64_Shdr);
	eh->e_shnum = 3;
	eh->e_shstrndx = 2;
	Elf64_Shdr *sh = (Elf64_Shdr *)(img + sizeof(Elf64_Ehdr));
	sh[1] = (Elf64_Shdr){.sh_name = 1, .sh_type = SHT_PROGBITS, .sh_offset = rodata_at, .sh_size = rodata_len};
	sh[2] = (Elf64_Shdr){.sh_name = 9, .sh_type = SHT_STRTAB, .sh_offset = names_at, .sh_size = sizeof(names)};
	memcpy(img + names_at, names, sizeof(names));
	memcpy(img + rodata_at + pad, text, text_len);
	if (outside_len)
		memcpy(img + rodata_at + rodata_len, outside, outside_len);
	char *path = path_join(tmp, rel);
	char *dir = xstrdup(path);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(mkdir_p(dir, 0755), 0);
	free(dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, img, total), (ssize_t)total);
	assert_int_equal(close(fd), 0);
	assert_int_equal(chmod(path, 0755), 0);
	free(img);
	return path;
}

static char *
fake_elf(const char *rel, size_t pad, const char *text, size_t text_len)
{
	return fake_elf_text(rel, pad, text, text_len, NULL);
}

static void
expect_scan(const char *path, const char *version, int major)
{
	char *v = NULL;
	int m = 0;
	if (pgbin_version_in_binary(path, &v, &m) != 0)
		fail_msg("%s: no version read", path);
	if (strcmp(v, version) != 0 || m != major)
		fail_msg("%s: read \"%s\" %d, want \"%s\" %d", path, v, m, version, major);
	free(v);
}

static void
expect_no_scan(const char *path)
{
	char *v = NULL;
	int m = 0;
	if (pgbin_version_in_binary(path, &v, &m) != -1)
		fail_msg("%s: read \"%s\" %d", path, v, m);
	assert_null(v);
}

/* What the real postgres says when run is what its bytes say. */
static void
test_scan_real(void **state)
{
	(void)state;
	if (access(PG_BINDIR "/postgres", X_OK) != 0) {
		fprintf(stderr, "skipped: no postgres at %s\n", PG_BINDIR);
		skip();
	}
	FILE *f = popen(PG_BINDIR "/postgres --version", "r");
	assert_non_null(f);
	char line[256] = "";
	assert_non_null(fgets(line, sizeof(line), f));
	pclose(f);
	char *want = NULL;
	int want_major = 0;
	assert_int_equal(pgbin_parse_version(line, &want, &want_major), 0);
	expect_scan(PG_BINDIR "/postgres", want, want_major);
	free(want);
}

static void
test_scan_fakes(void **state)
{
	(void)state;
	const char text[] = "postgres (PostgreSQL) 16.3 (Debian 16.3-1)\n";
	char *p = fake_elf("plain/postgres", 0, text, strlen(text));
	expect_scan(p, "16.3", 16);
	free(p);

	/* The text across the 1 MiB boundary of the reads, right on it, at the very end without a newline. */
	for (size_t before = 0; before <= 30; before += 5) {
		char *rel = xasprintf("edge%zu/postgres", before);
		p = fake_elf(rel, 1024 * 1024 - before, text, strlen(text));
		expect_scan(p, "16.3", 16);
		free(p);
		free(rel);
	}
	p = fake_elf("end/postgres", 2 * 1024 * 1024, "postgres (PostgreSQL) 17.2", 26);
	expect_scan(p, "17.2", 17);
	free(p);

	/* Twice alike is fine; two versions, or one that does not parse, is not. */
	const char twice[] = "postgres (PostgreSQL) 16.3\n\0postgres (PostgreSQL) 16.3\n";
	p = fake_elf("twice/postgres", 0, twice, sizeof(twice) - 1);
	expect_scan(p, "16.3", 16);
	free(p);
	const char two[] = "postgres (PostgreSQL) 16.3\n\0postgres (PostgreSQL) 15.1\n";
	p = fake_elf("two/postgres", 0, two, sizeof(two) - 1);
	expect_no_scan(p);
	free(p);
	const char odd[] = "postgres (PostgreSQL) %s\n";
	p = fake_elf("odd/postgres", 0, odd, sizeof(odd) - 1);
	expect_no_scan(p);
	free(p);
	p = fake_elf("none/postgres", 0, "", 0);
	expect_no_scan(p);
	free(p);

	/* Only .rodata is read: the text after it, in no section, is not. */
	p = fake_elf_text("outside/postgres", 100, "no version here", 15, text);
	expect_no_scan(p);
	free(p);
	/* Nor is a 32-bit ELF file's (or anything not of this machine's layout). */
	p = fake_elf("elf32/postgres", 0, text, strlen(text));
	int fd = open(p, O_WRONLY);
	assert_true(fd >= 0);
	unsigned char cls = ELFCLASS32;
	assert_int_equal(pwrite(fd, &cls, 1, EI_CLASS), 1);
	close(fd);
	expect_no_scan(p);
	free(p);

	/* A script holding the text is not read: it may run another postgres. */
	char *dir = fake_prog("script/postgres", "# postgres (PostgreSQL) 16.1\nexec /usr/bin/postgres \"$@\"\n");
	p = path_join(dir, "postgres");
	expect_no_scan(p);
	free(p);
	free(dir);
	char *nowhere = path_join(tmp, "nowhere/postgres");
	expect_no_scan(nowhere);
	free(nowhere);
	expect_no_scan(tmp); /* a directory */

	/* pgbin_find takes it from the bytes: the file cannot even run. */
	p = fake_elf("found/postgres", 0, text, strlen(text));
	*strrchr(p, '/') = '\0';
	struct pgbin pg;
	char *err;
	if (find(p, &pg, &err) != 0)
		fail_msg("pgbin_find(%s) failed: %s", p, err);
	free(err);
	assert_string_equal(pg.version, "16.3");
	assert_int_equal(pg.major, 16);
	pgbin_free(&pg);
	free(p);
}

/* As root, only a root-owned binary no one else can write is read; any other is run (as another user). */
static void
test_scan_as_root(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "skipped: needs root\n");
		skip();
	}
	const char text[] = "postgres (PostgreSQL) 16.3\n";
	char *p = fake_elf("root/postgres", 0, text, strlen(text));
	expect_scan(p, "16.3", 16);
	assert_int_equal(chmod(p, 0775), 0);
	expect_no_scan(p);
	assert_int_equal(chmod(p, 0757), 0);
	expect_no_scan(p);
	assert_int_equal(chmod(p, 0644), 0);
	expect_no_scan(p);
	/* One the postgres user could not read or run (its `postgres --version` would fail). */
	assert_int_equal(chmod(p, 0751), 0);
	expect_no_scan(p);
	assert_int_equal(chmod(p, 0754), 0);
	expect_no_scan(p);
	assert_int_equal(chmod(p, 0755), 0);
	uid_t uid;
	gid_t gid;
	proc_unprivileged_ids(&uid, &gid);
	assert_int_equal(chown(p, uid, gid), 0);
	expect_no_scan(p);
	free(p);
}

/* ---- pgbin_find ---- */

static void
test_find_real(void **state)
{
	(void)state;
	if (access(PG_BINDIR "/postgres", X_OK) != 0) {
		fprintf(stderr, "skipped: no postgres at %s\n", PG_BINDIR);
		skip();
	}
	struct pgbin pg;
	char *err;
	int rc = find(PG_BINDIR, &pg, &err);
	if (rc != 0)
		fail_msg("pgbin_find(%s) failed: %s", PG_BINDIR, err);
	free(err);
	assert_int_equal(pg.major, 15);
	assert_string_equal(pg.bindir, PG_BINDIR);
	assert_non_null(pg.version);
	assert_memory_equal(pg.version, "15.", 3);
	char *initdb = pgbin_path(&pg, "initdb");
	assert_string_equal(initdb, PG_BINDIR "/initdb");
	assert_int_equal(access(initdb, X_OK), 0);
	free(initdb);
	pgbin_free(&pg);
	assert_null(pg.bindir);
	assert_null(pg.version);
	pgbin_free(&pg); /* twice is harmless */
}

static void
test_find_fake(void **state)
{
	(void)state;
	char *dir = fake_prog("bin16/postgres", "[ \"$1\" = --version ] || exit 3\necho 'postgres (PostgreSQL) 16.1'\n");
	struct pgbin pg;
	char *err;
	int rc = find(dir, &pg, &err);
	if (rc != 0)
		fail_msg("pgbin_find(%s) failed: %s", dir, err);
	assert_string_equal(err, "");
	free(err);
	assert_int_equal(pg.major, 16);
	assert_string_equal(pg.version, "16.1");
	assert_string_equal(pg.bindir, dir);
	char *ctl = pgbin_path(&pg, "pg_ctl");
	char *want = path_join(dir, "pg_ctl");
	assert_string_equal(ctl, want);
	free(ctl);
	free(want);
	pgbin_free(&pg);

	/* A configured dir with a trailing slash finds the same postgres. */
	char *slashed = xasprintf("%s/", dir);
	assert_int_equal(find(slashed, &pg, NULL), 0);
	assert_int_equal(pg.major, 16);
	char *p = pgbin_path(&pg, "postgres");
	assert_string_equal(p, want = path_join(dir, "postgres"));
	free(p);
	free(want);
	pgbin_free(&pg);
	free(slashed);
	free(dir);
}

/* pg_bindir is a config's: started as root, its postgres --version never runs as root. */
static void
test_find_not_as_root(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "skipped: needs root\n");
		skip();
	}
	char *dir = fake_prog("asroot/postgres", "echo \"postgres (PostgreSQL) 16.$(id -u)\"\n");
	struct pgbin pg;
	assert_int_equal(find(dir, &pg, NULL), 0);
	assert_int_equal(pg.major, 16);
	uid_t uid;
	gid_t gid;
	proc_unprivileged_ids(&uid, &gid);
	char *want = xasprintf("16.%ld", (long)uid);
	assert_string_equal(pg.version, want);
	free(want);
	pgbin_free(&pg);
	free(dir);
}

static void
test_find_missing(void **state)
{
	(void)state;
	char *dir = path_join(tmp, "empty-bin");
	assert_int_equal(mkdir(dir, 0755), 0);
	struct pgbin pg;
	char *err;
	assert_int_equal(find(dir, &pg, &err), -1);
	char *want = xasprintf("pgstash: error: no executable \"postgres\" in \"%s\" (from pg_bindir)", dir);
	unit_expect_contains(err, want);
	free(want);
	free(err);
	assert_null(pg.bindir);
	assert_null(pg.version);
	pgbin_free(&pg);

	/* A directory that does not exist at all. */
	char *nowhere = path_join(tmp, "nowhere");
	assert_int_equal(find(nowhere, &pg, &err), -1);
	unit_expect_contains(err, "no executable \"postgres\" in \"");
	unit_expect_contains(err, "/nowhere\"");
	free(err);
	pgbin_free(&pg);

	/* A postgres that is not executable, and one that is a directory. */
	unit_write(tmp, "noexec/postgres", "#!/bin/sh\necho 'postgres (PostgreSQL) 16.1'\n");
	char *noexec = path_join(tmp, "noexec");
	assert_int_equal(find(noexec, &pg, &err), -1);
	unit_expect_contains(err, "no executable \"postgres\"");
	free(err);
	char *isdir = path_join(tmp, "isdir/postgres");
	assert_int_equal(mkdir_p(isdir, 0755), 0);
	*strrchr(isdir, '/') = '\0';
	assert_int_equal(find(isdir, &pg, &err), -1);
	unit_expect_contains(err, "no executable \"postgres\"");
	free(err);
	free(dir);
	free(nowhere);
	free(noexec);
	free(isdir);
}

static void
test_find_bad_version(void **state)
{
	(void)state;
	struct {
		const char *rel, *body;
	} cases[] = {
		{"garbage/postgres", "echo 'this is not postgres'\n"},
		{"silent/postgres", "exit 0\n"},
		{"fails/postgres", "echo 'postgres (PostgreSQL) 16.1'\nexit 1\n"},
		{"killed/postgres", "echo 'postgres (PostgreSQL) 16.1'\nkill -9 $$\n"},
		{"stderr/postgres", "echo 'postgres (PostgreSQL) 16.1' >&2\n"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *dir = fake_prog(cases[i].rel, cases[i].body);
		struct pgbin pg;
		char *err;
		int rc = find(dir, &pg, &err);
		if (rc != -1)
			fail_msg("%s: pgbin_find succeeded with major %d", cases[i].rel, pg.major);
		char *want = xasprintf("could not read the version of \"%s/postgres\"", dir);
		unit_expect_contains(err, want);
		free(want);
		free(err);
		assert_null(pg.bindir);
		pgbin_free(&pg);
		free(dir);
	}
}

/* With PATH first:then and no pg_bindir, pgbin_find finds `bindir` and major `major`. */
static void
expect_found(const char *first, const char *then, const char *bindir, int major)
{
	char *path = xasprintf("%s:%s", first, then);
	setenv("PATH", path, 1);
	struct pgbin pg;
	char *err;
	if (find(NULL, &pg, &err) != 0)
		fail_msg("PATH %s: %s", path, err);
	assert_string_equal(pg.bindir, bindir);
	assert_int_equal(pg.major, major);
	pgbin_free(&pg);
	free(err);
	free(path);
}

static void
test_find_fallbacks(void **state)
{
	(void)state;
	/* Only PATH knows: a postgres in a PATH directory, no pg_config anywhere on it. */
	char *onpath = fake_prog("onpath/postgres", "echo 'postgres (PostgreSQL) 14.9'\n");
	char *other = path_join(tmp, "other");
	assert_int_equal(mkdir(other, 0755), 0);
	expect_found(other, onpath, onpath, 14);
	/* An empty configured value means "not configured". */
	struct pgbin pg;
	char *err;
	assert_int_equal(find("", &pg, NULL), 0);
	assert_string_equal(pg.bindir, onpath);
	pgbin_free(&pg);

	/* pg_config --bindir comes before PATH. */
	char *real = fake_prog("real/bin/postgres", "echo 'postgres (PostgreSQL) 13.2'\n");
	char *body = xasprintf("[ \"$1\" = --bindir ] || exit 1\necho '%s'\n", real);
	char *cfgdir = fake_prog("cfg/pg_config", body);
	expect_found(cfgdir, onpath, real, 13);

	/* A pg_config with postgres beside it is not run: its directory is what it would print. */
	char *beside = fake_prog("beside/pg_config", "touch \"$0.ran\"\nexit 1\n");
	free(fake_prog("beside/postgres", "echo 'postgres (PostgreSQL) 12.4'\n"));
	char *ran = path_join(beside, "pg_config.ran");
	expect_found(beside, onpath, beside, 12);
	assert_int_equal(access(ran, F_OK), -1);
	/* Found through a symbolic link: the directory of its target, as pg_config resolves its own path. */
	char *links = path_join(tmp, "links");
	assert_int_equal(mkdir(links, 0755), 0);
	char *link = path_join(links, "pg_config");
	char *target = path_join(beside, "pg_config");
	assert_int_equal(symlink(target, link), 0);
	expect_found(links, onpath, beside, 12);
	assert_int_equal(access(ran, F_OK), -1);

	/* Nothing anywhere: a message naming every way to fix it. */
	setenv("PATH", other, 1);
	assert_int_equal(find(NULL, &pg, &err), -1);
	unit_expect_contains(err, "could not find the PostgreSQL server binaries");
	unit_expect_contains(err, "pg_bindir");
	free(err);
	pgbin_free(&pg);

	free(onpath);
	free(other);
	free(real);
	free(body);
	free(cfgdir);
	free(beside);
	free(ran);
	free(links);
	free(link);
	free(target);
}

static void
test_path(void **state)
{
	(void)state;
	struct pgbin pg = {.bindir = "/opt/pg/bin", .version = "16.1", .major = 16};
	char *p = pgbin_path(&pg, "initdb");
	assert_string_equal(p, "/opt/pg/bin/initdb");
	free(p);
	struct pgbin slash = {.bindir = "/opt/pg/bin/"};
	p = pgbin_path(&slash, "pg_ctl");
	assert_string_equal(p, "/opt/pg/bin/pg_ctl");
	free(p);
}

/* The sample initdb copies: Debian's layout, a source build's two, pg_config beside the binaries, none. */
static void
test_conf_sample(void **state)
{
	(void)state;
	struct {
		const char *bindir, *sample, *pg_config;
	} cases[] = {
		{"usr/lib/postgresql/15/bin", "usr/share/postgresql/15/postgresql.conf.sample", NULL},
		{"src1/bin", "src1/share/postgresql/postgresql.conf.sample", NULL},
		{"pgsql/bin", "pgsql/share/postgresql.conf.sample", NULL},
		{"odd/bin", "elsewhere/share/postgresql.conf.sample", "odd/bin/pg_config"},
		{"none/bin", NULL, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *bindir = path_join(tmp, cases[i].bindir);
		assert_int_equal(mkdir_p(bindir, 0755), 0);
		if (cases[i].sample)
			unit_write(tmp, cases[i].sample, "listen_addresses = '*'\n");
		if (cases[i].pg_config) {
			char *body = xasprintf("[ \"$1\" = --sharedir ] && echo %s/elsewhere/share\n", tmp);
			free(fake_prog(cases[i].pg_config, body));
			free(body);
		}
		struct pgbin pg = {.bindir = bindir, .major = 15};
		char *got = pgbin_conf_sample(&pg);
		if (!cases[i].sample) {
			assert_null(got);
		} else {
			/* The same file, whatever ".." the path holds. */
			char *want = path_join(tmp, cases[i].sample);
			struct stat a, b;
			if (!got)
				fail_msg("%s: no sample found", cases[i].bindir);
			assert_int_equal(stat(got, &a), 0);
			assert_int_equal(stat(want, &b), 0);
			assert_true(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
			free(want);
		}
		free(got);
		free(bindir);
	}
}

int
main(void)
{
	log_min_level = LOG_INFO;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_version),
		cmocka_unit_test_setup_teardown(test_scan_real, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_fakes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_as_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_real, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_fake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_not_as_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_bad_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_fallbacks, setup, teardown),
		cmocka_unit_test(test_path),
		cmocka_unit_test_setup_teardown(test_conf_sample, setup, teardown),
	};
	return cmocka_run_group_tests_name("pgbin", tests, NULL, NULL);
}
