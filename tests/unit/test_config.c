/*
 * Unit tests for config: good files, every kind of bad input with its
 * file:line, env precedence and *_FILE secrets.
 */
#include "unit.h"

#include "config.h"
#include "log.h"

#include <sys/inotify.h>

static char *tmp;

static int
setup(void **state)
{
	(void)state;
	tmp = unit_tmpdir();
	/* As root a step's root is checked as postgres would see it (stat_as_reader): mkdtemp's 0700 hides it. */
	chmod(tmp, 0755);
	unsetenv("PGSTASH_CONFIG");
	unsetenv("PGDATA");
	unsetenv("PGSTASH_CACHE_DIR");
	unsetenv("PGSTASH_MAX_BYTES");
	unsetenv("POSTGRES_USER");
	unsetenv("POSTGRES_DB");
	unsetenv("POSTGRES_PASSWORD");
	unsetenv("POSTGRES_PASSWORD_FILE");
	unsetenv("PGSTASH_LOCAL_AUTH");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	rm_rf(tmp);
	free(tmp);
	return 0;
}

/* Loads `text` as an INI file; returns cfg_load's result and the stderr text. */
static int
load_text(const char *text, struct cfg *cfg, char **err)
{
	unit_write(tmp, "pgstash.ini", text);
	char *path = path_join(tmp, "pgstash.ini");
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = cfg_load(cfg, path);
	char *e = unit_stderr_end(&cap);
	if (err)
		*err = e;
	else
		free(e);
	free(path);
	return rc;
}

static void
expect_error(const char *text, const char *needle)
{
	struct cfg cfg;
	char *err;
	int rc = load_text(text, &cfg, &err);
	if (rc != -1 || !strstr(err, needle))
		fail_msg("expected failure containing \"%s\", got rc=%d stderr=%s", needle, rc, err);
	free(err);
	cfg_free(&cfg);
}

/* An empty cache_group means "none" (fuzz/crashes-found: it once reached set_str as NULL). */
static void
test_empty_cache_group(void **state)
{
	(void)state;
	struct cfg cfg;
	assert_int_equal(load_text("[pgstash]\ncache_group =\n", &cfg, NULL), 0);
	assert_null(cfg.cache_group);
	assert_true(cfg.cache_gid == (gid_t)-1);
	cfg_free(&cfg);
}

/* on_change: replace by default, the file's word, the environment over it, a bad word with its line. */
static void
test_on_change(void **state)
{
	(void)state;
	struct cfg cfg;
	assert_int_equal(load_text("[pgstash]\n", &cfg, NULL), 0);
	assert_int_equal(cfg.on_change, CFG_ON_CHANGE_REPLACE);
	cfg_free(&cfg);
	assert_int_equal(load_text("[pgstash]\non_change = migrate\n", &cfg, NULL), 0);
	assert_int_equal(cfg.on_change, CFG_ON_CHANGE_MIGRATE);
	cfg_free(&cfg);
	setenv("PGSTASH_ON_CHANGE", "refuse", 1);
	assert_int_equal(load_text("[pgstash]\non_change = migrate\n", &cfg, NULL), 0);
	assert_int_equal(cfg.on_change, CFG_ON_CHANGE_REFUSE);
	assert_string_equal(cfg_on_change_name(cfg.on_change), "refuse");
	cfg_free(&cfg);
	unsetenv("PGSTASH_ON_CHANGE");
	expect_error("[pgstash]\non_change = keep\n", ":2: bad value \"keep\" for on_change: expected replace, migrate or refuse");
}

/* local_auth: password by default (host mode), peer or trust from the file; the environment wins. */
static void
test_local_auth(void **state)
{
	(void)state;
	struct cfg cfg;
	assert_int_equal(load_text("[pgstash]\n", &cfg, NULL), 0);
	assert_int_equal(cfg.local_auth, CFG_LOCAL_PASSWORD);
	cfg_free(&cfg);
	assert_int_equal(load_text("[pgstash]\nlocal_auth = peer\n", &cfg, NULL), 0);
	assert_int_equal(cfg.local_auth, CFG_LOCAL_PEER);
	cfg_free(&cfg);
	setenv("PGSTASH_LOCAL_AUTH", "trust", 1);
	assert_int_equal(load_text("[pgstash]\nlocal_auth = peer\n", &cfg, NULL), 0);
	assert_int_equal(cfg.local_auth, CFG_LOCAL_TRUST);
	cfg_free(&cfg);
	unsetenv("PGSTASH_LOCAL_AUTH");
	assert_string_equal(cfg_local_auth_name(CFG_LOCAL_PASSWORD), "password");
	expect_error("[pgstash]\nlocal_auth = md5\n", "pgstash.ini:2: bad value \"md5\" for local_auth");
}

static void
test_good_file(void **state)
{
	(void)state;
	unit_write(tmp, "django/app/migrations/0001_initial.py", "x");
	struct cfg cfg;
	char *err;
	int rc = load_text("; a comment\n"
	                   "[pgstash]\n"
	                   "cache_dir = cache      ; relative to the file\n"
	                   "compression = zstd:7\n"
	                   "max_bytes = 2G\n"
	                   "max_entries = 5\n"
	                   "lock_timeout = 60\n"
	                   "[database]\n"
	                   "user = owner\n"
	                   "name = app\n"
	                   "extra = flask_app other\n"
	                   "  third\n"
	                   "[step django]\n"
	                   "root = django\n"
	                   "migrations = */migrations/*.py\n"
	                   "  */migrations/*.sql\n"
	                   "exclude = */__pycache__/*\n"
	                   "run = python3 manage.py\n"
	                   "  migrate --noinput\n"
	                   "database = flask_app\n"
	                   "env = A=1\n"
	                   "env = SECRET=hunter2\n"
	                   "layer = schema\n"
	                   "incremental = yes\n"
	                   "timeout = 600\n",
	                   &cfg, &err);
	if (rc != 0)
		fail_msg("load failed: %s", err);
	free(err);
	char *cache = path_join(tmp, "cache");
	assert_string_equal(cfg.cache_dir, cache);
	free(cache);
	assert_int_equal(cfg.compression, CFG_COMP_ZSTD);
	assert_int_equal(cfg.compression_level, 7);
	assert_true(cfg.max_bytes == 2ULL << 30);
	assert_int_equal(cfg.max_entries, 5);
	assert_int_equal(cfg.lock_timeout, 60);
	assert_string_equal(cfg.db_user, "owner");
	assert_string_equal(cfg.db_name, "app");
	assert_int_equal(cfg.db_extra.n, 3);
	assert_string_equal(cfg.db_extra.v[2], "third");
	assert_int_equal(cfg.n_steps, 1);
	struct cfg_step *st = &cfg.steps[0];
	assert_string_equal(st->name, "django");
	char *root = path_join(tmp, "django");
	assert_string_equal(st->root, root);
	free(root);
	assert_int_equal(st->migrations.n, 2);
	assert_string_equal(st->run, "python3 manage.py migrate --noinput");
	assert_int_equal(st->env.n, 2);
	assert_string_equal(st->env.v[1], "SECRET=hunter2");
	assert_true(st->incremental);
	assert_int_equal(st->timeout, 600);
	assert_int_equal(st->line, 13);
	cfg_free(&cfg);
}

static void
test_defaults_and_env(void **state)
{
	(void)state;
	struct cfg cfg;
	setenv("PGDATA", "/tmp/somewhere", 1);
	setenv("PGSTASH_MAX_BYTES", "512M", 1);
	setenv("POSTGRES_USER", "alice", 1);
	int rc = load_text("[pgstash]\npgdata = /from/file\nmax_bytes = 1G\n", &cfg, NULL);
	assert_int_equal(rc, 0);
	assert_string_equal(cfg.pgdata, "/tmp/somewhere");
	assert_true(cfg.max_bytes == 512ULL << 20);
	assert_string_equal(cfg.db_user, "alice");
	assert_string_equal(cfg.db_name, "alice"); /* the main database defaults to the user, as the official image */
	assert_string_equal(cfg.cache_dir, "/var/cache/pgstash");
	cfg_free(&cfg);
	unsetenv("PGDATA");
	unsetenv("PGSTASH_MAX_BYTES");
	unsetenv("POSTGRES_USER");
}

static void
test_password_file(void **state)
{
	(void)state;
	unit_write(tmp, "secret", "s3cret\n\n");
	char *p = path_join(tmp, "secret");
	setenv("POSTGRES_PASSWORD_FILE", p, 1);
	struct cfg cfg;
	assert_int_equal(load_text("", &cfg, NULL), 0);
	assert_string_equal(cfg.db_password, "s3cret");
	cfg_free(&cfg);

	setenv("POSTGRES_PASSWORD", "other", 1);
	char *err;
	assert_int_equal(load_text("", &cfg, &err), -1);
	assert_non_null(strstr(err, "exclusive"));
	free(err);
	cfg_free(&cfg);
	unsetenv("POSTGRES_PASSWORD");

	char *missing = path_join(tmp, "nope");
	setenv("POSTGRES_PASSWORD_FILE", missing, 1);
	assert_int_equal(load_text("", &cfg, &err), -1);
	assert_non_null(strstr(err, "POSTGRES_PASSWORD_FILE"));
	assert_non_null(strstr(err, "No such file"));
	free(err);
	cfg_free(&cfg);
	unsetenv("POSTGRES_PASSWORD_FILE");
	free(missing);
	free(p);
}

/* PGSTASH_KEY_SECRET_FILE: the key secret, its trailing newline gone; a missing or empty file is an error. */
static void
test_key_secret_file(void **state)
{
	(void)state;
	unit_write(tmp, "ks-env", "from-the-env\n");
	unit_write(tmp, "empty", "\n");
	struct cfg cfg;
	char *p = path_join(tmp, "ks-env");
	setenv("PGSTASH_KEY_SECRET_FILE", p, 1);
	assert_int_equal(load_text("", &cfg, NULL), 0);
	assert_string_equal(cfg.trust.key_secret, "from-the-env");
	cfg_free(&cfg);
	free(p);
	const char *bad[] = {"nope", "empty"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p = path_join(tmp, bad[i]);
		setenv("PGSTASH_KEY_SECRET_FILE", p, 1);
		char *err;
		assert_int_equal(load_text("", &cfg, &err), -1);
		assert_non_null(strstr(err, "PGSTASH_KEY_SECRET_FILE: could not read"));
		free(err);
		cfg_free(&cfg);
		free(p);
	}
	unsetenv("PGSTASH_KEY_SECRET_FILE");
	assert_int_equal(load_text("", &cfg, NULL), 0);
	assert_null(cfg.trust.key_secret);
	cfg_free(&cfg);
}

/* An inotify descriptor that sees every open of `path`. */
static int
watch_opens(const char *path)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	assert_true(fd >= 0);
	assert_true(inotify_add_watch(fd, path, IN_OPEN) >= 0);
	return fd;
}

/* Whether the file watch_opens watches was opened since (the descriptor is closed). */
static bool
was_opened(int fd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	return n > 0;
}

/*
 * The attack: a config file (a pull request can change it) names another
 * secret of the machine as a secret file, e.g. the access key, which goes
 * out in clear to the endpoint the same config chose.  Each such key is an
 * error at its line, saying what to set instead, and its file, readable and
 * well-formed, is never opened; the environment's forms still work.
 */
static void
test_secret_files_only_from_env(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		const char *needle;
	} cases[] = {
		{"[remote]\nurl = s3://bucket/ci\naccess_key_file = marker\n",
		 "pgstash.ini:3: access_key_file: secret files are not read from a config file (a pull request can change "
		 "it and point this at another secret); set AWS_ACCESS_KEY_ID_FILE in the environment instead"},
		{"[remote]\nurl = s3://bucket/ci\n\nsecret_key_file = marker\n",
		 "pgstash.ini:4: secret_key_file: secret files are not read from a config file"},
		{"[trust]\nkey_secret_file = marker\n", "pgstash.ini:2: key_secret_file: secret files are not read"},
	};
	static const char *const vars[] = {"AWS_ACCESS_KEY_ID_FILE", "AWS_SECRET_ACCESS_KEY_FILE",
	                                   "PGSTASH_KEY_SECRET_FILE"};
	unit_write(tmp, "marker", "MARKER-5f3a\n");
	char *marker = path_join(tmp, "marker");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cfg cfg;
		char *err;
		int w = watch_opens(marker);
		int rc = load_text(cases[i].text, &cfg, &err);
		bool opened = was_opened(w);
		if (rc != -1 || !strstr(err, cases[i].needle) || !strstr(err, vars[i]) || strstr(err, "MARKER-5f3a") ||
		    opened)
			fail_msg("case %zu: rc=%d opened=%d stderr=%s", i, rc, opened, err);
		free(err);
		cfg_free(&cfg);
	}
	/* The list of keys [remote] takes no longer offers them. */
	struct cfg cfg;
	char *err;
	assert_int_equal(load_text("[remote]\nfoo = 1\n", &cfg, &err), -1);
	assert_null(strstr(err, "_file"));
	free(err);
	cfg_free(&cfg);
	/* The environment's forms. */
	setenv("PGSTASH_REMOTE_URL", "s3://bucket/ci", 1);
	setenv("AWS_ACCESS_KEY_ID_FILE", marker, 1);
	setenv("AWS_SECRET_ACCESS_KEY_FILE", marker, 1);
	setenv("PGSTASH_KEY_SECRET_FILE", marker, 1);
	assert_int_equal(load_text("", &cfg, NULL), 0);
	assert_string_equal(cfg.remote.access_key, "MARKER-5f3a");
	assert_string_equal(cfg.remote.secret_key, "MARKER-5f3a");
	assert_string_equal(cfg.trust.key_secret, "MARKER-5f3a");
	cfg_free(&cfg);
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	unsetenv("PGSTASH_REMOTE_URL");
	free(marker);
}

static void
test_bad_inputs(void **state)
{
	(void)state;
	expect_error("[pgstash]\nfoo = 1\n", "pgstash.ini:2: unknown key \"foo\" in [pgstash]");
	expect_error("[pgstash]\n[nope]\nx = 1\n", "pgstash.ini:2: unknown section [nope]");
	expect_error("[pgstash]\nmax_bytes = 10X\n", "pgstash.ini:2: bad value \"10X\" for max_bytes");
	expect_error("[pgstash]\nmax_bytes = 99999999999999999999G\n", ":2: bad value");
	expect_error("[pgstash]\nmax_entries = -1\n", ":2: bad value \"-1\" for max_entries");
	expect_error("[pgstash]\nmax_entries = 12abc\n", ":2: bad value");
	expect_error("[pgstash]\nlock_timeout = 99999999999999999999\n", "out of range");
	expect_error("[pgstash]\ncompression = lz4\n", "expected zstd[:LEVEL]");
	expect_error("[pgstash]\ncompression = zstd:30\n", "zstd level must be 1 to 19");
	expect_error("[pgstash]\ncache_dir = a\ncache_dir = b\n", ":3: duplicate key \"cache_dir\"");
	expect_error("[pgstash]\n[pgstash]\n", ":2: duplicate section [pgstash]");
	expect_error("cache_dir = x\n", ":1: key \"cache_dir\" outside any section");
	expect_error("[pgstash]\nthis is not ini\n", ":2: syntax error");
	expect_error("[step]\nrun = x\n", "bad step section [step]");
	expect_error("[step a/b]\nrun = x\n", "bad step section");
	expect_error("[step s]\nroot = /nonexistent-pgstash-root\nmigrations = *.py\nrun = true\n",
	             ":2: step \"s\": root \"/nonexistent-pgstash-root\": No such file or directory");
	expect_error("[step s]\nroot = .\nmigrations = *.py\n", ":1: step \"s\" has no command");
	expect_error("[step s]\nmigrations = *.py\nrun = x\n", "has no root");
	expect_error("[step s]\nroot = .\nrun = x\n", "names no migration files");
	expect_error("[step s]\nroot = .\nmigrations = *.py\nrun = x\nlayer = middle\n", ":5: bad value \"middle\" for layer");
	expect_error("[step s]\nroot = .\nmigrations = *.py\nrun = x\nincremental = perhaps\n", "expected yes or no");
	expect_error("[step s]\nroot = .\nmigrations = *.py\nrun = x\nenv = 1BAD=x\n", ":5: bad env entry");
	expect_error("[step s]\nroot = .\nmigrations = *.py\nrun = x\ndatabase = ghost\n",
	             ":5: step \"s\": database \"ghost\" is not created by pgstash");
	expect_error("[step s]\nroot = .\nmigrations = *.py\nrun = x\n[step s]\n", "duplicate section [step s]");
	expect_error("[step s]\nroot = .\nmigrations = /abs/*.py\nrun = x\n", "must be relative");
	expect_error("[pgstash]\ncache_dir = x\n  more\n", ":3: continuation line for \"cache_dir\"");
	expect_error("[database]\nextra = a a\n", "listed twice");
	/* An empty user leaves no main database name: an error, not a crash (found by fuzzing). */
	expect_error("[database]\nuser =\n[clones]\ncount = 2\n[step s]\nroot = .\nmigrations = *.py\nrun = x\ndatabase = d\n",
	             "database user must be");
	expect_error("[step f]\nroot = .\nmigrations = *.py\nrun = x\nlayer = fixtures\n[step s]\nroot = .\nmigrations = *.py\nrun = x\n",
	             "fixtures steps must come last");
}

static void
test_long_line_and_bytes(void **state)
{
	(void)state;
	struct strbuf sb = {0};
	sb_append(&sb, "[pgstash]\ncache_dir = ");
	for (int i = 0; i < 300; i++)
		sb_appendc(&sb, 'a');
	sb_append(&sb, "\n");
	expect_error(sb_str(&sb), ":2: line too long");
	sb_free(&sb);
	expect_error("[pgstash]\ncache_dir = \xff\xfe\n", ":2: invalid UTF-8");
	expect_error("[pgstash]\ncache_dir = caf\xc3\xa9\nmax_bytes = 1Q\n", ":3: bad value");

	/* A NUL byte: the file is not text. */
	char *path = path_join(tmp, "pgstash.ini");
	FILE *f = fopen(path, "w");
	fwrite("[pgstash]\ncache_dir = a\0b\n", 1, 26, f);
	fclose(f);
	struct cfg cfg;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = cfg_load(&cfg, path);
	char *err = unit_stderr_end(&cap);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, ":2: NUL byte"));
	free(err);
	cfg_free(&cfg);
	free(path);
}

static void
test_missing_file(void **state)
{
	(void)state;
	struct cfg cfg;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = cfg_load(&cfg, "/nonexistent/pgstash.ini");
	char *err = unit_stderr_end(&cap);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, "could not open configuration file \"/nonexistent/pgstash.ini\""));
	free(err);
	cfg_free(&cfg);

	setenv("PGSTASH_CONFIG", "/nonexistent/env.ini", 1);
	unit_stderr_begin(&cap);
	rc = cfg_load(&cfg, NULL);
	err = unit_stderr_end(&cap);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, "/nonexistent/env.ini"));
	free(err);
	cfg_free(&cfg);
	unsetenv("PGSTASH_CONFIG");
}

static void
test_parsers(void **state)
{
	(void)state;
	uint64_t v;
	const char *why;
	assert_int_equal(parse_size("10G", &v, &why), 0);
	assert_true(v == 10ULL << 30);
	assert_int_equal(parse_size("1024", &v, &why), 0);
	assert_true(v == 1024);
	assert_int_equal(parse_size("3MiB", &v, &why), 0);
	assert_true(v == 3ULL << 20);
	assert_int_equal(parse_size("", &v, &why), -1);
	assert_int_equal(parse_size("-1", &v, &why), -1);
	assert_int_equal(parse_size("1.5G", &v, &why), -1);
	assert_int_equal(parse_size("17179869184T", &v, &why), -1);
	long l;
	assert_int_equal(parse_long(" 5", 0, 10, &l, &why), -1);
	assert_int_equal(parse_long("11", 0, 10, &l, &why), -1);
	assert_int_equal(parse_long("10", 0, 10, &l, &why), 0);
	assert_int_equal(l, 10);
	bool b;
	assert_int_equal(parse_bool("Yes", &b, &why), 0);
	assert_true(b);
	assert_int_equal(parse_bool("off", &b, &why), 0);
	assert_false(b);
	assert_int_equal(parse_bool("maybe", &b, &why), -1);
}

/* cfg_validate with `rc` as the [remote] of an otherwise valid config. */
static int
validate_remote(struct remote_cfg rc)
{
	struct cfg cfg;
	cfg_defaults(&cfg);
	cfg.remote = rc;
	int r = cfg_validate(&cfg);
	memset(&cfg.remote, 0, sizeof(cfg.remote)); /* the literals are not ours to free */
	cfg_free(&cfg);
	return r;
}

static void
test_remote_validate(void **state)
{
	(void)state;
	assert_int_equal(validate_remote((struct remote_cfg){.url = "s3://bucket/ci", .endpoint = "http://127.0.0.1:9000",
	                                                     .path_style = true, .access_key = "AK", .secret_key = "SK",
	                                                     .timeout_s = 5}),
	                 0);
	assert_int_equal(validate_remote((struct remote_cfg){.url = "s3://bucket/ci", .region = "eu-west-3"}), 0);
	/* No url: no remote, nothing else is looked at. */
	assert_int_equal(validate_remote((struct remote_cfg){.region = "US EAST"}), 0);

	struct remote_cfg bad[] = {
		{.url = "s3:/bucket"},
		{.url = "s3://bucket", .endpoint = "ftp://host"},
		{.url = "s3://bucket", .endpoint = "http://host:9000/path"},
		{.url = "s3://bucket", .endpoint = "http://user@host"},
		{.url = "s3://bucket", .endpoint = "http://127.0.0.1:9000"},        /* needs path_style */
		{.url = "s3://my.bucket", .endpoint = "https://s3.example.com"},  /* dots over TLS */
		{.url = "s3://bucket", .region = "US EAST"},
		{.url = "s3://bucket", .access_key = "AK"},
		{.url = "s3://bucket", .timeout_s = 99999},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(validate_remote(bad[i]), -1);
}

static void
test_remote_parse_url(void **state)
{
	char *b, *p;
	assert_int_equal(cfg_remote_parse_url("s3://bucket/ci", &b, &p), 0);
	assert_string_equal(b, "bucket");
	assert_string_equal(p, "ci");
	free(b);
	free(p);
	assert_int_equal(cfg_remote_parse_url("s3://my-bucket.x//a/b/", &b, &p), 0);
	assert_string_equal(b, "my-bucket.x");
	assert_string_equal(p, "a/b");
	free(b);
	free(p);
	assert_int_equal(cfg_remote_parse_url("s3://bucket", &b, &p), 0);
	assert_string_equal(p, "");
	free(b);
	free(p);
	const char *bad[] = {"http://bucket/x", "s3://", "s3:///x", "s3://ab/x", "s3://Bucket!/x", "s3://bucket/a//b",
	                     "s3://bucket/a?b", "s3://-bucket/x", "s3://bucket/a\nb", NULL};
	for (size_t i = 0; bad[i]; i++) {
		assert_int_equal(cfg_remote_parse_url(bad[i], &b, &p), -1);
		assert_null(b);
		assert_null(p);
	}
	assert_int_equal(cfg_remote_parse_url(NULL, &b, &p), -1);
}

static void
test_remote_parsers(void **state)
{
	(void)state;
	char *bucket, *prefix;
	assert_int_equal(cfg_remote_parse_url("s3://my-bucket//ci/x/", &bucket, &prefix), 0);
	assert_string_equal(bucket, "my-bucket");
	assert_string_equal(prefix, "ci/x");
	free(bucket);
	free(prefix);
	const char *bad[] = {"s3://", "s3://ab", "s3://-bucket", "s3://bucket/a//b", "s3://bucket/a?b", "http://bucket",
	                     "s3://bu cket", NULL};
	for (size_t i = 0; bad[i]; i++) {
		assert_int_equal(cfg_remote_parse_url(bad[i], &bucket, &prefix), -1);
		assert_null(bucket);
		assert_null(prefix);
	}
	struct remote_cfg rc = {.region = "eu-west-3"};
	struct cfg_endpoint ep;
	const char *why;
	assert_int_equal(cfg_remote_endpoint(&rc, &ep, &why), 0);
	assert_string_equal(ep.scheme, "https");
	assert_string_equal(ep.host, "s3.eu-west-3.amazonaws.com");
	assert_null(ep.port);
	cfg_endpoint_free(&ep);
	rc.endpoint = "http://[::1]:9000";
	assert_int_equal(cfg_remote_endpoint(&rc, &ep, &why), 0);
	assert_string_equal(ep.host, "[::1]");
	assert_string_equal(ep.port, "9000");
	cfg_endpoint_free(&ep);
	assert_string_equal(cfg_remote_region(&(struct remote_cfg){0}), REMOTE_DEFAULT_REGION);
}

static void
test_remote_env(void **state)
{
	(void)state;
	unit_write(tmp, "sk", "topsecret\n");
	char *p = path_join(tmp, "sk");
	setenv("PGSTASH_REMOTE_URL", "s3://bucket/ci", 1);
	setenv("PGSTASH_REMOTE_TIMEOUT", "7", 1);
	setenv("AWS_ACCESS_KEY_ID", "AK", 1);
	setenv("AWS_SECRET_ACCESS_KEY_FILE", p, 1);
	setenv("POSTGRES_USER_FILE", p, 1);
	setenv("POSTGRES_INITDB_ARGS", "--data-checksums", 1);
	struct cfg cfg;
	assert_int_equal(load_text("", &cfg, NULL), 0);
	assert_string_equal(cfg.remote.url, "s3://bucket/ci");
	assert_int_equal(cfg.remote.timeout_s, 7);
	assert_string_equal(cfg.remote.access_key, "AK");
	assert_string_equal(cfg.remote.secret_key, "topsecret");
	assert_string_equal(cfg.db_user, "topsecret");
	assert_string_equal(cfg.db_user_from, "POSTGRES_USER_FILE");
	assert_string_equal(cfg.db_name_from, "POSTGRES_USER_FILE");
	assert_string_equal(cfg.initdb_args_from, "POSTGRES_INITDB_ARGS");
	cfg_free(&cfg);
	unsetenv("POSTGRES_USER_FILE");
	unsetenv("POSTGRES_INITDB_ARGS");

	setenv("PGSTASH_REMOTE_TIMEOUT", "0", 1);
	char *err;
	assert_int_equal(load_text("", &cfg, &err), -1);
	assert_non_null(strstr(err, "environment variable PGSTASH_REMOTE_TIMEOUT: bad value \"0\""));
	free(err);
	cfg_free(&cfg);
	unsetenv("PGSTASH_REMOTE_URL");
	unsetenv("PGSTASH_REMOTE_TIMEOUT");
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY_FILE");
	free(p);
}

/* cfg_load (which validates) of `text` as a file, with the environment as it is; stderr in *err. */
static int
load_only(const char *text, char **err)
{
	struct cfg cfg;
	int rc = load_text(text, &cfg, err);
	cfg_free(&cfg);
	return rc;
}

/* A config file may not have initdb read a password file: its hash would go into the cache entry. */
static void
test_initdb_pwfile(void **state)
{
	(void)state;
	const char *refused[] = {"--pwfile=/run/secrets/pw", "-k --pwfile /run/secrets/pw", "--pwf=/run/secrets/pw",
	                         "--pwfil /run/secrets/pw"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		char *text = xasprintf("[database]\ninitdb_args = %s\n", refused[i]);
		char *err;
		if (load_only(text, &err) == 0 || !strstr(err, "pgstash.ini:2: initdb_args may not name a password file") ||
		    !strstr(err, "POSTGRES_INITDB_ARGS"))
			fail_msg("\"%s\" was not refused: %s", refused[i], err);
		free(err);
		free(text);
	}
	/* A continuation line is the same setting. */
	char *err;
	assert_int_not_equal(load_only("[database]\ninitdb_args = -k\n  --pwfile=/x\n", &err), 0);
	assert_non_null(strstr(err, "pgstash.ini:2: initdb_args may not name a password file (\"--pwfile=/x\")"));
	free(err);
	/* Not an option of that name, or "--pw" (also --pwprompt's prefix: initdb refuses it as ambiguous). */
	assert_int_equal(load_only("[database]\ninitdb_args = -k --waldir=/w --pw --auth=trust\n", &err), 0);
	free(err);
	/* From the environment: whoever sets it may read the file anyway. */
	setenv("POSTGRES_INITDB_ARGS", "--pwfile=/run/secrets/pw", 1);
	assert_int_equal(load_only("[database]\ninitdb_args = -k\n", &err), 0);
	free(err);
	assert_int_equal(load_only("", &err), 0);
	free(err);
	unsetenv("POSTGRES_INITDB_ARGS");
}

/* Issue 18: discover, python, after, full_build. */
static void
test_discover_after_full_build(void **state)
{
	(void)state;
	struct cfg cfg;
	char *err;
	int rc = load_text("[pgstash]\nfull_build = yes\n[database]\nname = app\nextra = other\n"
	                   "[step dj]\nroot = .\ndiscover = django\npython = .venv/bin/python\nrun = x\n"
	                   "[step al]\nroot = .\nmigrations = ?x/*.py\ndiscover = alembic db/alembic.ini\n"
	                   "run = alembic upgrade head\ndatabase = other\nafter = dj\n",
	                   &cfg, &err);
	if (rc != 0)
		fail_msg("%s", err);
	free(err);
	assert_true(cfg.full_build);
	assert_int_equal(cfg.steps[0].discover, CFG_DISCOVER_DJANGO);
	assert_string_equal(cfg.steps[0].python, ".venv/bin/python");
	assert_int_equal(cfg.steps[0].migrations.n, 0); /* discover alone names the files */
	assert_int_equal(cfg.steps[1].discover, CFG_DISCOVER_ALEMBIC);
	assert_string_equal(cfg.steps[1].discover_ini, "db/alembic.ini");
	assert_int_equal(cfg.steps[1].after.n, 1);
	assert_string_equal(cfg.steps[1].after.v[0], "dj");
	cfg_free(&cfg);

	expect_error("[step s]\nroot = .\ndiscover = rails\nrun = x\n",
	             ":3: bad value \"rails\" for discover: expected django, or alembic [INI]");
	expect_error("[step s]\nroot = .\nrun = x\n", "names no migration files: expected migrations = GLOB ... or discover");
	expect_error("[step a]\nroot = .\nmigrations = *\nrun = x\nafter = b\n[step b]\nroot = .\nmigrations = *\nrun = x\n",
	             ":5: step \"a\": after = b: no step of that name before this one");
	expect_error("[step s]\nroot = .\ndiscover = django\nrun = x\nimage = img\n",
	             ":3: step \"s\": discover runs Python on this host, but the step's interpreter is in its image");
	expect_error("[pgstash]\nfull_build = sometimes\n", "full_build");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_discover_after_full_build, setup, teardown),
		cmocka_unit_test_setup_teardown(test_good_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_cache_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_local_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_on_change, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defaults_and_env, setup, teardown),
		cmocka_unit_test_setup_teardown(test_password_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_secret_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secret_files_only_from_env, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_inputs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_line_and_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
		cmocka_unit_test(test_parsers),
		cmocka_unit_test(test_remote_validate),
		cmocka_unit_test(test_remote_parse_url),
		cmocka_unit_test(test_remote_parsers),
		cmocka_unit_test_setup_teardown(test_remote_env, setup, teardown),
		cmocka_unit_test_setup_teardown(test_initdb_pwfile, setup, teardown),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
