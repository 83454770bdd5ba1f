/*
 * Unit tests for fingerprint: what changes the key and what must not.
 */
#include "unit.h"

#include "config.h"
#include "fingerprint.h"
#include "digest.h"
#include "log.h"

#include <utime.h>

/* A config with one step over `root`, as the INI loader would build it. */
static void
make_cfg(struct cfg *cfg, const char *root, const char *run)
{
	cfg_defaults(cfg);
	free(cfg->initdb_d);
	cfg->initdb_d = NULL;
	free(cfg->db_name);
	cfg->db_name = xstrdup("app");
	cfg->steps = xcalloc(1, sizeof(struct cfg_step));
	cfg->n_steps = 1;
	struct cfg_step *st = &cfg->steps[0];
	st->name = xstrdup("django");
	st->file = xstrdup("test.ini");
	st->root = xstrdup(root);
	sl_add(&st->migrations, "*/migrations/*.py");
	sl_add(&st->exclude, "*/__pycache__/*");
	st->run = xstrdup(run);
}

static void
key_of(const char *root, const char *run, int major, char out[65])
{
	struct cfg cfg;
	struct fp_result fp;
	make_cfg(&cfg, root, run);
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = fp_compute(&cfg, major, "x86_64", &fp);
	char *err = unit_stderr_end(&cap);
	if (rc != 0)
		fail_msg("fp_compute failed: %s", err);
	free(err);
	memcpy(out, fp.key, 65);
	fp_result_free(&fp);
	cfg_free(&cfg);
}

static char *
repo(const char *name, bool reverse)
{
	char *root = path_join(unit_tmp, name);
	const char *files[][2] = {
		{"app01/migrations/0001_initial.py", "create table a"},
		{"app01/migrations/0002_more.py", "alter table a"},
		{"app02/migrations/0001_initial.py", "create table b"},
		{"app02/migrations/__init__.py", ""},
	};
	for (int i = 0; i < 4; i++) {
		int k = reverse ? 3 - i : i;
		unit_write(root, files[k][0], files[k][1]);
	}
	return root;
}

static void
test_same_key_anywhere(void **state)
{
	(void)state;
	char *a = repo("checkout-a", false);
	char *b = repo("elsewhere/checkout b with space", true);
	/* Different mtimes too. */
	char *f = path_join(b, "app01/migrations/0001_initial.py");
	struct utimbuf ut = {.actime = 1000000, .modtime = 1000000};
	assert_int_equal(utime(f, &ut), 0);
	char ka[65], kb[65];
	key_of(a, "python3 manage.py migrate", 15, ka);
	key_of(b, "python3 manage.py migrate", 15, kb);
	assert_string_equal(ka, kb);
	assert_int_equal(strlen(ka), 64);
	free(f);
	free(a);
	free(b);
}

static void
test_what_changes_the_key(void **state)
{
	(void)state;
	char *r = repo("r", false);
	char base[65], k[65];
	key_of(r, "python3 manage.py migrate", 15, base);

	key_of(r, "python3 manage.py migrate --noinput", 15, k);
	assert_string_not_equal(base, k);
	key_of(r, "python3 manage.py migrate", 16, k);
	assert_string_not_equal(base, k);

	/* Outside the globs, or excluded: no effect. */
	unit_write(r, "app01/models.py", "class A");
	unit_write(r, "app01/migrations/__pycache__/0001_initial.cpython-311.py", "bytecode");
	unit_write(r, "app01/migrations/notes.txt", "notes");
	key_of(r, "python3 manage.py migrate", 15, k);
	assert_string_equal(base, k);

	/* One byte changed. */
	unit_write(r, "app01/migrations/0002_more.py", "alter table A");
	key_of(r, "python3 manage.py migrate", 15, k);
	assert_string_not_equal(base, k);
	unit_write(r, "app01/migrations/0002_more.py", "alter table a");
	key_of(r, "python3 manage.py migrate", 15, k);
	assert_string_equal(base, k);

	/* Added, removed, renamed. */
	unit_write(r, "app02/migrations/0002_x.py", "x");
	key_of(r, "python3 manage.py migrate", 15, k);
	assert_string_not_equal(base, k);
	char *p = path_join(r, "app02/migrations/0002_x.py");
	unlink(p);
	key_of(r, "python3 manage.py migrate", 15, k);
	assert_string_equal(base, k);
	char *from = path_join(r, "app01/migrations/0002_more.py");
	char *to = path_join(r, "app01/migrations/0002_renamed.py");
	assert_int_equal(rename(from, to), 0);
	key_of(r, "python3 manage.py migrate", 15, k);
	assert_string_not_equal(base, k);
	free(p);
	free(from);
	free(to);
	free(r);
}

static void
test_manifest_form_and_secrets(void **state)
{
	(void)state;
	char *r = repo("r", false);
	struct cfg cfg;
	make_cfg(&cfg, r, "python3 manage.py migrate --noinput");
	sl_add(&cfg.steps[0].env, "DJANGO_SETTINGS_MODULE=proj.settings");
	sl_add(&cfg.steps[0].env, "API_TOKEN=hunter2-secret");
	cfg.db_password = xstrdup("pw-very-secret");
	struct fp_result fp;
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	const char *m = fp.manifest;
	const char *head = "pgstash-manifest 1\npostgres 15 x86_64\ninitdb --encoding=UTF8\nsuperuser postgres\n";
	assert_true(strncmp(m, head, strlen(head)) == 0);
	assert_non_null(strstr(m, "\ndatabase app owner postgres\n"));
	assert_non_null(strstr(m, "\nstep django layer=schema run=\"python3 manage.py migrate --noinput\" image=- "
	                          "database=app env=DJANGO_SETTINGS_MODULE,API_TOKEN env-sha256="));
	assert_non_null(strstr(m, "\nfile django app01/migrations/0001_initial.py sha256="));
	assert_null(strstr(m, "hunter2"));
	assert_null(strstr(m, "proj.settings"));
	assert_null(strstr(m, "pw-very-secret"));
	/* Files in bytewise order. */
	const char *a = strstr(m, "app01/migrations/0001");
	const char *b = strstr(m, "app01/migrations/0002");
	const char *c = strstr(m, "app02/migrations/0001");
	const char *d = strstr(m, "app02/migrations/__init__");
	assert_true(a && b && c && d && a < b && b < c && c < d);
	/* The key is the SHA-256 of the manifest. */
	char hex[65];
	digest_hex(m, strlen(m), hex);
	assert_string_equal(hex, fp.key);
	assert_false(fp.has_fixtures);
	fp_result_free(&fp);

	/* A changed env value changes the key without showing it. */
	char k1[65];
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	memcpy(k1, fp.key, 65);
	fp_result_free(&fp);
	free(cfg.steps[0].env.v[1]);
	cfg.steps[0].env.v[1] = xstrdup("API_TOKEN=other");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	assert_string_not_equal(k1, fp.key);
	fp_result_free(&fp);
	/* The password is not part of the key at all. */
	free(cfg.db_password);
	cfg.db_password = xstrdup("another");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	fp_result_free(&fp);
	cfg_free(&cfg);
	free(r);
}

/* TZ, LANG and LC_* in clear; key_env only by digest; each changes the key (issue 16). */
static void
test_environment_and_key_env(void **state)
{
	(void)state;
	char *r = repo("r", false);
	struct cfg cfg;
	make_cfg(&cfg, r, "python3 manage.py migrate --noinput");
	struct fp_result fp;
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	char k0[65];
	memcpy(k0, fp.key, 65);
	fp_result_free(&fp);

	sl_add(&cfg.start_env, "LANG=en_US.utf8");
	sl_add(&cfg.start_env, "TZ=Europe/Berlin");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	assert_non_null(strstr(fp.manifest, "\ninitdb --encoding=UTF8\nenvironment LANG=en_US.utf8\n"
	                                    "environment TZ=Europe/Berlin\nsuperuser "));
	char k1[65];
	memcpy(k1, fp.key, 65);
	assert_string_not_equal(k0, k1);
	fp_result_free(&fp);

	sl_add(&cfg.key_env, "PGSTASH_UT_APP_PASSWORD");
	unsetenv("PGSTASH_UT_APP_PASSWORD");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	assert_non_null(strstr(fp.manifest, "\nkey_env PGSTASH_UT_APP_PASSWORD unset\n"));
	char k2[65];
	memcpy(k2, fp.key, 65);
	assert_string_not_equal(k1, k2);
	fp_result_free(&fp);

	setenv("PGSTASH_UT_APP_PASSWORD", "hunter2-app", 1);
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	assert_non_null(strstr(fp.manifest, "\nkey_env PGSTASH_UT_APP_PASSWORD sha256="));
	assert_null(strstr(fp.manifest, "hunter2"));
	char k3[65];
	memcpy(k3, fp.key, 65);
	assert_string_not_equal(k2, k3);
	fp_result_free(&fp);

	setenv("PGSTASH_UT_APP_PASSWORD", "other", 1);
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	assert_string_not_equal(k3, fp.key);
	fp_result_free(&fp);
	unsetenv("PGSTASH_UT_APP_PASSWORD");
	cfg_free(&cfg);
	free(r);
}

/*
 * With PGSTASH_KEY_SECRET_FILE, env values are digested by HMAC-SHA256 under
 * the secret: the manifest holds neither the value nor its plain SHA-256 (a
 * guessable value could be found from that), and the key follows the secret.
 */
static void
test_key_secret_keys_env_digests(void **state)
{
	(void)state;
	char *r = repo("r", false);
	struct cfg cfg;
	make_cfg(&cfg, r, "migrate");
	sl_add(&cfg.steps[0].env, "SECRET_KEY=changeme");
	sl_add(&cfg.key_env, "PGSTASH_UT_GUESSABLE");
	setenv("PGSTASH_UT_GUESSABLE", "changeme", 1);
	char plain_step[65], plain_env[65], hmac_step[65], hmac_env[65];
	digest_hex("SECRET_KEY=changeme\n", 20, plain_step);
	digest_hex("PGSTASH_UT_GUESSABLE=changeme", 29, plain_env);
	digest_hmac_hex("s3cret", 6, "SECRET_KEY=changeme\n", 20, hmac_step);
	digest_hmac_hex("s3cret", 6, "PGSTASH_UT_GUESSABLE=changeme", 29, hmac_env);

	struct fp_result fp;
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	/* Unkeyed: a dictionary of likely values finds it. */
	assert_non_null(strstr(fp.manifest, plain_step));
	assert_non_null(strstr(fp.manifest, plain_env));
	char k0[65];
	memcpy(k0, fp.key, 65);
	fp_result_free(&fp);

	cfg.trust.key_secret = xstrdup("s3cret");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	char *want = xasprintf(" env=SECRET_KEY env-hmac-sha256=%s\n", hmac_step);
	assert_non_null(strstr(fp.manifest, want));
	free(want);
	want = xasprintf("\nkey_env PGSTASH_UT_GUESSABLE hmac-sha256=%s", hmac_env);
	assert_non_null(strstr(fp.manifest, want));
	free(want);
	assert_null(strstr(fp.manifest, plain_step));
	assert_null(strstr(fp.manifest, plain_env));
	assert_null(strstr(fp.manifest, "changeme"));
	char k1[65];
	memcpy(k1, fp.key, 65);
	assert_string_not_equal(k0, k1);
	fp_result_free(&fp);

	free(cfg.trust.key_secret);
	cfg.trust.key_secret = xstrdup("another");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	assert_string_not_equal(k1, fp.key);
	assert_string_not_equal(k0, fp.key);
	fp_result_free(&fp);
	unsetenv("PGSTASH_UT_GUESSABLE");
	cfg_free(&cfg);
	free(r);
}

static void
test_fixtures_layer_chains(void **state)
{
	(void)state;
	char *r = repo("r", false);
	unit_write(r, "fixtures/data.json", "[1]");
	struct cfg cfg;
	make_cfg(&cfg, r, "migrate");
	cfg.steps = xrealloc(cfg.steps, 2 * sizeof(struct cfg_step));
	cfg.n_steps = 2;
	struct cfg_step *fx = &cfg.steps[1];
	memset(fx, 0, sizeof(*fx));
	fx->name = xstrdup("fixtures");
	fx->root = xstrdup(r);
	sl_add(&fx->migrations, "fixtures/*.json");
	fx->run = xstrdup("loaddata");
	fx->layer = CFG_LAYER_FIXTURES;
	struct fp_result fp1, fp2;
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp1), 0);
	assert_true(fp1.has_fixtures);
	assert_string_not_equal(fp1.key, fp1.schema_key);
	assert_non_null(strstr(fp1.manifest, fp1.schema_key));
	assert_null(strstr(fp1.schema_manifest, "fixtures/data.json"));
	unit_write(r, "fixtures/data.json", "[2]");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp2), 0);
	assert_string_equal(fp1.schema_key, fp2.schema_key);
	assert_string_not_equal(fp1.key, fp2.key);
	fp_result_free(&fp1);
	fp_result_free(&fp2);
	cfg_free(&cfg);
	free(r);
}

static void
test_empty_globs(void **state)
{
	(void)state;
	char *r = repo("r", false);
	struct cfg cfg;
	make_cfg(&cfg, r, "migrate");
	cfg.steps[0].migrations_line = 7;
	sl_add(&cfg.steps[0].migrations, "nothing/*.sql");
	struct fp_result fp;
	struct unit_capture cap;
	/* A glob that stops matching (python3.11 -> python3.12 in a path) is an error with file:line, not a warning. */
	unit_stderr_begin(&cap);
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), -1);
	char *err = unit_stderr_end(&cap);
	unit_expect_contains(err, "error: test.ini:7: step \"django\": \"nothing/*.sql\" matches no file under");
	unit_expect_contains(err, "write ?nothing/*.sql");
	free(err);
	cfg_free(&cfg);

	/* Marked optional: fine, and the key is the one without it. */
	char base[65];
	key_of(r, "migrate", 15, base);
	make_cfg(&cfg, r, "migrate");
	sl_add(&cfg.steps[0].migrations, "?nothing/*.sql");
	unit_stderr_begin(&cap);
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), 0);
	err = unit_stderr_end(&cap);
	assert_string_equal(fp.key, base);
	free(err);
	fp_result_free(&fp);
	cfg_free(&cfg);

	make_cfg(&cfg, r, "migrate");
	sl_free(&cfg.steps[0].migrations);
	sl_add(&cfg.steps[0].migrations, "?nothing/*.sql");
	unit_stderr_begin(&cap);
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &fp), -1);
	err = unit_stderr_end(&cap);
	assert_non_null(strstr(err, "error: step \"django\": no migration file matches"));
	free(err);
	cfg_free(&cfg);
	free(r);
}

/* The files of one step, as "rel" lines. */
static char *
listed(const char *root, const char *const *globs, const char *const *excludes)
{
	struct cfg cfg;
	make_cfg(&cfg, root, "migrate");
	sl_free(&cfg.steps[0].migrations);
	sl_free(&cfg.steps[0].exclude);
	for (; *globs; globs++)
		sl_add(&cfg.steps[0].migrations, *globs);
	for (; excludes && *excludes; excludes++)
		sl_add(&cfg.steps[0].exclude, *excludes);
	struct fp_step_files f;
	struct strbuf sb = {0};
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = fp_step_files(&cfg.steps[0], &f);
	free(unit_stderr_end(&cap));
	if (rc == 0) {
		for (size_t i = 0; i < f.n; i++) {
			sb_append(&sb, f.files[i].rel);
			sb_appendc(&sb, '\n');
		}
		fp_step_files_free(&f);
	} else
		sb_append(&sb, "ERROR");
	cfg_free(&cfg);
	return sb_take(&sb);
}

static void
test_recursive_globs(void **state)
{
	(void)state;
	char *r = path_join(unit_tmp, "deep");
	unit_write(r, "site-packages/wagtail/migrations/0001_initial.py", "a");
	unit_write(r, "site-packages/wagtail/contrib/forms/migrations/0001_initial.py", "b");
	unit_write(r, "site-packages/wagtail/contrib/forms/migrations/__pycache__/0001_initial.cpython-311.py", "c");
	unit_write(r, "site-packages/.hidden/migrations/0001_initial.py", "d");
	unit_write(r, "migrations/0001_top.py", "e");
	unit_write(r, "__pycache__/x.py", "f");
	char *link = path_join(r, "site-packages/wagtail/contrib/loop");
	assert_int_equal(symlink(r, link), 0); /* a link to a directory above: not followed, no cycle */

	const char *g1[] = {"**/migrations/*.py", NULL};
	const char *x1[] = {"**/__pycache__/*", NULL};
	char *got = listed(r, g1, x1);
	assert_string_equal(got, "migrations/0001_top.py\n"
	                         "site-packages/wagtail/contrib/forms/migrations/0001_initial.py\n"
	                         "site-packages/wagtail/migrations/0001_initial.py\n");
	free(got);

	/* A head before the double star, and a trailing one (every file below). */
	const char *g2[] = {"site-packages/*/**/migrations/0001_*.py", NULL};
	got = listed(r, g2, NULL);
	assert_string_equal(got, "site-packages/wagtail/contrib/forms/migrations/0001_initial.py\n"
	                         "site-packages/wagtail/migrations/0001_initial.py\n");
	free(got);
	const char *g3[] = {"site-packages/wagtail/contrib/**", NULL};
	const char *x3[] = {"**/__pycache__/*", NULL};
	got = listed(r, g3, x3);
	assert_string_equal(got, "site-packages/wagtail/contrib/forms/migrations/0001_initial.py\n");
	free(got);
	/* The top-level __pycache__ is excluded by the same pattern: a double star may match no directory. */
	const char *g4[] = {"**/*.py", NULL};
	got = listed(r, g4, x1);
	assert_null(strstr(got, "__pycache__"));
	unit_expect_contains(got, "migrations/0001_top.py\n");
	free(got);
	assert_true(fp_exclude_match("**/__pycache__/*", "__pycache__/x.py"));
	assert_true(fp_exclude_match("a/**/b/*", "a/b/c"));
	assert_true(fp_exclude_match("a/**/b/*", "a/x/y/b/c"));
	assert_false(fp_exclude_match("a/**/b/*", "ab/c"));
	free(link);
	free(r);
}

static void
test_run_keyed_relative_to_root(void **state)
{
	(void)state;
	char *a = repo("checkout-a", false);
	char *b = repo("other/checkout-b", false);
	char *run_a = xasprintf("%s/.venv/bin/python manage.py migrate", a);
	char *run_b = xasprintf("%s/.venv/bin/python manage.py migrate", b);
	char ka[65], kb[65], kr[65];
	key_of(a, run_a, 15, ka);
	key_of(b, run_b, 15, kb);
	key_of(a, "./.venv/bin/python manage.py migrate", 15, kr);
	assert_string_equal(ka, kb);
	assert_string_equal(ka, kr);
	/* Only a word that starts with the root: a path that merely contains it stays as written. */
	char *k = fp_keyed_command("'/r/x/bin/py' /r/xy --to=/r/x/z /r/x", "/r/x/");
	assert_string_equal(k, "'./bin/py' /r/xy --to=/r/x/z /r/x");
	free(k);
	free(run_a);
	free(run_b);
	free(a);
	free(b);
}

static void
test_glob_metachars_in_root(void **state)
{
	(void)state;
	char *r = repo("we[ir]d*root", false);
	char k1[65], k2[65];
	key_of(r, "m", 15, k1);
	char *r2 = repo("plain", false);
	key_of(r2, "m", 15, k2);
	assert_string_equal(k1, k2);
	free(r);
	free(r2);
}

static void
test_initdb_d_in_key(void **state)
{
	(void)state;
	char *r = repo("r", false);
	char *d = path_join(unit_tmp, "initdb.d");
	mkdir_p(d, 0755);
	struct cfg cfg;
	make_cfg(&cfg, r, "m");
	cfg.initdb_d = xstrdup(d);
	struct fp_result a, b;
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &a), 0);
	unit_write(d, "01-ext.sql", "create extension citext;");
	assert_int_equal(fp_compute(&cfg, 15, "x86_64", &b), 0);
	assert_string_not_equal(a.key, b.key);
	assert_non_null(strstr(b.manifest, "\ninitdb.d 01-ext.sql mode=- sha256="));
	fp_result_free(&a);
	fp_result_free(&b);
	cfg_free(&cfg);
	free(d);
	free(r);
}

static void
test_quote(void **state)
{
	(void)state;
	struct strbuf sb = {0};
	fp_quote(&sb, "plain/path-1.py");
	sb_appendc(&sb, '|');
	fp_quote(&sb, "a b\"c\\d\ne\x01");
	sb_appendc(&sb, '|');
	fp_quote(&sb, "");
	assert_string_equal(sb_str(&sb), "plain/path-1.py|\"a b\\\"c\\\\d\\ne\\x01\"|\"\"");
	sb_free(&sb);
}

/* What changed between two manifests, for on_change's messages. */
static void
test_manifest_diff(void **state)
{
	(void)state;
	const char *old = "pgstash-manifest 1\npostgres 15 x86_64\ninitdb --encoding=UTF8\nenvironment TZ=UTC\n"
	                  "initdb.d 01.sql mode=- sha256=11\nfile app 0001.sql sha256=aa\nfile app 0002.sql sha256=bb\n"
	                  "file app \"a b.sql\" sha256=cc\n";
	const char *cur = "pgstash-manifest 1\npostgres 17 x86_64\ninitdb --encoding=UTF8\nenvironment TZ=Europe/Berlin\n"
	                  "initdb.d 01.sql mode=x sha256=11\nfile app 0001.sql sha256=aa\nfile app 0002.sql sha256=b2\n"
	                  "file app 0003.sql sha256=dd\n";
	struct strbuf sb = {0};
	fp_manifest_diff(old, cur, &sb);
	assert_string_equal(sb_str(&sb),
	                    "PostgreSQL: 15 x86_64 -> 17 x86_64; added: migration file app 0003.sql; changed: initdb.d "
	                    "script 01.sql, migration file app 0002.sql; removed: migration file app \"a b.sql\"; "
	                    "settings: +\"environment TZ=Europe/Berlin\", -\"environment TZ=UTC\"");
	sb_free(&sb);
	/* The same: nothing. */
	fp_manifest_diff(old, old, &sb);
	assert_int_equal(sb.len, 0);
	/* Long lists are cut. */
	struct strbuf many = {0};
	sb_append(&many, "pgstash-manifest 1\n");
	for (int i = 0; i < 8; i++)
		sb_appendf(&many, "file app %d.sql sha256=aa\n", i);
	fp_manifest_diff("pgstash-manifest 1\n", sb_str(&many), &sb);
	assert_string_equal(sb_str(&sb), "added: migration file app 0.sql, migration file app 1.sql, migration file app "
	                                 "2.sql, migration file app 3.sql, migration file app 4.sql and 3 more");
	sb_free(&sb);
	sb_free(&many);
}

static void
test_step_unchanged(void **state)
{
	(void)state;
	const char *entry = "pgstash-manifest 1\n"
	                    "step a layer=schema run=x\nfile a m/1.py sha256=11\n"
	                    "step ab layer=schema run=y\nfile ab m/1.sql sha256=22\n";
	const char *added = "pgstash-manifest 1\n"
	                    "step a layer=schema run=x\nfile a m/1.py sha256=11\n"
	                    "step ab layer=schema run=y\nfile ab m/1.sql sha256=22\nfile ab m/2.sql sha256=33\n";
	assert_true(fp_step_unchanged(entry, added, "a"));   /* "ab" lines are not a's */
	assert_false(fp_step_unchanged(entry, added, "ab")); /* a file more */
	assert_false(fp_step_unchanged(entry, entry, "c"));  /* no such step: never skipped */
	const char *edited = "pgstash-manifest 1\n"
	                     "step a layer=schema run=x\nfile a m/1.py sha256=99\n"
	                     "step ab layer=schema run=y\nfile ab m/1.sql sha256=22\n";
	assert_false(fp_step_unchanged(entry, edited, "a"));
	assert_true(fp_step_unchanged(entry, edited, "ab"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_same_key_anywhere, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_what_changes_the_key, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_manifest_form_and_secrets, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_environment_and_key_env, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_key_secret_keys_env_digests, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_fixtures_layer_chains, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_empty_globs, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_glob_metachars_in_root, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_recursive_globs, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_run_keyed_relative_to_root, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_initdb_d_in_key, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_manifest_diff),
		cmocka_unit_test(test_step_unchanged),
	};
	return cmocka_run_group_tests_name("fingerprint", tests, NULL, NULL);
}
