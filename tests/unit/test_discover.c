/*
 * Unit tests for discover: which interpreter a step's run line names, the
 * child's answer format, and a real Django and Alembic asked for their files
 * (Debian's python3-django / python3-alembic; skipped, visibly, without them).
 */
#include "unit.h"

#include "config.h"
#include "discover.h"
#include "proc.h"

#include <sys/stat.h>

static void
make_step(struct cfg_step *st, const char *root, const char *run)
{
	memset(st, 0, sizeof(*st));
	st->name = xstrdup("app");
	st->file = xstrdup("test.ini");
	st->line = 1;
	st->root = xstrdup(root);
	st->run = run ? xstrdup(run) : NULL;
}

static void
free_step(struct cfg_step *st)
{
	free(st->name);
	free(st->file);
	free(st->root);
	free(st->run);
	free(st->python);
	free(st->discover_ini);
	sl_free(&st->env);
}

/* The interpreter and script dir for `run`, as "PYTHON|DIR", or "ERROR: why". */
static char *
interp(const char *root, const char *run, const char *path)
{
	struct cfg_step st;
	make_step(&st, root, run);
	struct strlist env = {0};
	char *pe = xasprintf("PATH=%s", path);
	sl_add(&env, pe);
	char *py = NULL, *dir = NULL;
	const char *why = NULL;
	char *res;
	if (discover_interpreter(&st, &env, &py, &dir, &why) == 0)
		res = xasprintf("%s|%s", py, dir ? dir : "");
	else
		res = xasprintf("ERROR: %s", why);
	free(py);
	free(dir);
	free(pe);
	sl_free(&env);
	free_step(&st);
	return res;
}

static void
test_refused_as_root(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	struct cfg_step st;
	make_step(&st, "/tmp", "python3 manage.py migrate");
	st.discover = CFG_DISCOVER_DJANGO;
	struct discover_result r;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	assert_int_equal(discover_files(&st, &r), -1);
	char *err = unit_stderr_end(&cap);
	unit_expect_contains(err, "never does as root");
	free(err);
	free_step(&st);
	/* The rest runs Python, which needs a user that is not root. */
	assert_int_equal(unit_drop_root(), 0);
}

static void
test_interpreter_from_run(void **state)
{
	(void)state;
	char *r = path_join(unit_tmp, "proj");
	unit_write(r, "bin/flask", "#!/opt/venv/bin/python3.12\nimport flask\n");
	unit_write(r, "bin/alembic", "#!/usr/bin/env python3\nimport alembic\n");
	unit_write(r, "bin/envs", "#! /usr/bin/env -S python3 -u\n");
	unit_write(r, "bin/tool", "#!/bin/sh\nexec true\n");
	unit_write(r, "src/manage.py", "#!/usr/bin/python3\n");
	const char *names[] = {"bin/flask", "bin/alembic", "bin/envs", "bin/tool", "src/manage.py"};
	for (size_t i = 0; i < 5; i++) {
		char *p = path_join(r, names[i]);
		chmod(p, 0755);
		free(p);
	}
	char *bin = path_join(r, "bin");
	struct {
		const char *run, *want;
	} cases[] = {
		{"python3 manage.py migrate --noinput", "python3|"},
		{"python3 src/manage.py migrate", "python3|src"},
		{"python3 -W ignore -m flask db upgrade", "python3|"},
		{"/usr/bin/python3.11 -B ./tools/manage.py migrate", "/usr/bin/python3.11|./tools"},
		{".venv/bin/python manage.py migrate", ".venv/bin/python|"},
		{"flask db upgrade", "/opt/venv/bin/python3.12|"},
		{"alembic upgrade head", "python3|"},
		{"envs", "python3|"},
		{"./src/manage.py migrate", "/usr/bin/python3|./src"},
		{"tool migrate", "ERROR: run starts neither with python nor with a Python script: name the interpreter "
		                 "with python = PATH"},
		{"nosuch migrate", "ERROR: run starts neither with python nor with a Python script: name the interpreter "
		                   "with python = PATH"},
		{"pythonic x", "ERROR: run starts neither with python nor with a Python script: name the interpreter "
		               "with python = PATH"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = interp(r, cases[i].run, bin);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("run = %s: got \"%s\", want \"%s\"", cases[i].run, got, cases[i].want);
		free(got);
	}
	/* python = PATH wins over the run line. */
	struct cfg_step st;
	make_step(&st, r, "tool migrate");
	st.python = xstrdup(".venv/bin/python");
	struct strlist env = {0};
	char *py = NULL, *dir = NULL;
	const char *why = NULL;
	assert_int_equal(discover_interpreter(&st, &env, &py, &dir, &why), 0);
	assert_string_equal(py, ".venv/bin/python");
	assert_null(dir);
	free(py);
	free_step(&st);
	free(bin);
	free(r);
}

static void
test_parse(void **state)
{
	(void)state;
	struct discover_result r;
	const char *why = NULL;
	static const char good[] = "django:auth\0django/contrib/auth/migrations/0001_initial.py\0/usr/lib/x/0001.py\0"
	                           "alembic:migrations\0versions/a b.py\0/p/versions/a b.py\0";
	assert_int_equal(discover_parse(good, sizeof(good) - 1, &r, &why), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.v[0].origin, "django:auth");
	assert_string_equal(r.v[1].rel, "versions/a b.py");
	assert_string_equal(r.v[1].path, "/p/versions/a b.py");
	discover_result_free(&r);
	assert_int_equal(discover_parse("", 0, &r, &why), 0);
	assert_int_equal(r.n, 0);

	struct {
		const char *buf;
		size_t len;
		const char *why;
	} bad[] = {
		{"o\0r.py\0/p", 9, "the answer ends in the middle of an entry"},
		{"\0r.py\0/p\0", 9, "an entry has no origin"},
		{"o\0/etc/passwd\0/p\0", 17, "an entry's path is not a plain relative path"},
		{"o\0a/../../b\0/p\0", 15, "an entry's path is not a plain relative path"},
		{"o\0a//b\0/p\0", 10, "an entry's path is not a plain relative path"},
		{"o\0a/\0/p\0", 8, "an entry's path is not a plain relative path"},
		{"o\0\0/p\0", 6, "an entry's path is not a plain relative path"},
		{"o\0a.py\0rel\0", 11, "an entry's file is not an absolute path"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		assert_int_equal(discover_parse(bad[i].buf, bad[i].len, &r, &why), -1);
		assert_string_equal(why, bad[i].why);
		assert_null(r.v);
	}
}

static bool
python_has(const char *module)
{
	char *cmd = xasprintf("/usr/bin/python3 -c 'import %s' 2>/dev/null", module);
	int rc = system(cmd);
	free(cmd);
	return rc == 0;
}

/* "ORIGIN REL" lines of what discovery found. */
static char *
found(const struct discover_result *r)
{
	struct strbuf sb = {0};
	for (size_t i = 0; i < r->n; i++)
		sb_appendf(&sb, "%s %s\n", r->v[i].origin, r->v[i].rel);
	return sb_take(&sb);
}

static void
test_real_django(void **state)
{
	(void)state;
	if (!python_has("django")) {
		fprintf(stderr, "SKIP: /usr/bin/python3 has no django (python3-django)\n");
		skip();
	}
	char *r = path_join(unit_tmp, "proj");
	char *lib = path_join(unit_tmp, "lib");
	unit_write(r, "proj/__init__.py", "");
	unit_write(r, "proj/settings.py",
	           "SECRET_KEY = 'x'\nINSTALLED_APPS = ['django.contrib.contenttypes', 'shop', 'extpkg', 'nomig']\n"
	           "DATABASES = {}\n");
	unit_write(r, "shop/__init__.py", "");
	unit_write(r, "shop/migrations/__init__.py", "");
	unit_write(r, "shop/migrations/0001_initial.py", "# shop\n");
	unit_write(r, "shop/migrations/_helper.py", "# not a migration\n");
	unit_write(r, "nomig/__init__.py", "");
	/* An installed package outside the root, on PYTHONPATH through the step's env. */
	unit_write(lib, "extpkg/__init__.py", "");
	unit_write(lib, "extpkg/migrations/__init__.py", "");
	unit_write(lib, "extpkg/migrations/0001_initial.py", "# ext\n");
	unit_write(lib, "extpkg/migrations/0002_more.py", "# ext 2\n");

	struct cfg_step st;
	make_step(&st, r, "/usr/bin/python3 manage.py migrate");
	st.discover = CFG_DISCOVER_DJANGO;
	sl_add(&st.env, "DJANGO_SETTINGS_MODULE=proj.settings");
	char *pp = xasprintf("PYTHONPATH=%s", lib);
	sl_add(&st.env, pp);
	struct discover_result res;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = discover_files(&st, &res);
	char *err = unit_stderr_end(&cap);
	if (rc != 0)
		fail_msg("discover failed: %s", err);
	free(err);
	char *got = found(&res);
	assert_string_equal(got, "django:contenttypes django/contrib/contenttypes/migrations/0001_initial.py\n"
	                         "django:contenttypes django/contrib/contenttypes/migrations/0002_remove_content_type_name.py\n"
	                         "django:shop shop/migrations/0001_initial.py\n"
	                         "django:extpkg extpkg/migrations/0001_initial.py\n"
	                         "django:extpkg extpkg/migrations/0002_more.py\n");
	for (size_t i = 0; i < res.n; i++)
		assert_true(res.v[i].path[0] == '/');
	free(got);
	discover_result_free(&res);

	/* Broken settings: the framework's own message, and no answer. */
	unit_write(r, "proj/settings.py", "import nosuchmodule_for_pgstash\n");
	unit_stderr_begin(&cap);
	assert_int_equal(discover_files(&st, &res), -1);
	err = unit_stderr_end(&cap);
	unit_expect_contains(err, "[step app discover] ModuleNotFoundError: No module named 'nosuchmodule_for_pgstash'");
	unit_expect_contains(err, "error: step \"app\": discover = django failed (exit status 1): ModuleNotFoundError: "
	                          "No module named 'nosuchmodule_for_pgstash'");
	free(err);
	assert_null(res.v);

	/* What settings print goes to the messages, not into the answer. */
	unit_write(r, "proj/settings.py", "print('hello from settings')\nSECRET_KEY = 'x'\n"
	                                  "INSTALLED_APPS = ['shop']\n");
	unit_stderr_begin(&cap);
	assert_int_equal(discover_files(&st, &res), 0);
	free(unit_stderr_end(&cap));
	got = found(&res);
	assert_string_equal(got, "django:shop shop/migrations/0001_initial.py\n");
	free(got);
	discover_result_free(&res);
	free(pp);
	free_step(&st);
	free(lib);
	free(r);
}

static void
test_real_alembic(void **state)
{
	(void)state;
	if (!python_has("alembic")) {
		fprintf(stderr, "SKIP: /usr/bin/python3 has no alembic (python3-alembic)\n");
		skip();
	}
	char *r = path_join(unit_tmp, "proj");
	unit_write(r, "db/alembic.ini", "[alembic]\nscript_location = %(here)s/../schema/revs\n");
	unit_write(r, "schema/revs/env.py", "# env\n");
	unit_write(r, "schema/revs/script.py.mako", "");
	unit_write(r, "schema/revs/versions/aaa_first.py",
	           "revision = 'aaa'\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n");
	unit_write(r, "schema/revs/versions/bbb_second.py",
	           "revision = 'bbb'\ndown_revision = 'aaa'\nbranch_labels = None\ndepends_on = None\n");
	struct cfg_step st;
	make_step(&st, r, "/usr/bin/python3 -m alembic -c db/alembic.ini upgrade head");
	st.discover = CFG_DISCOVER_ALEMBIC;
	st.discover_ini = xstrdup("db/alembic.ini");
	struct discover_result res;
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	int rc = discover_files(&st, &res);
	char *err = unit_stderr_end(&cap);
	if (rc != 0)
		fail_msg("discover failed: %s", err);
	free(err);
	char *got = found(&res);
	assert_string_equal(got, "alembic:schema/revs env.py\n"
	                         "alembic:schema/revs versions/bbb_second.py\n"
	                         "alembic:schema/revs versions/aaa_first.py\n");
	free(got);
	discover_result_free(&res);

	/* The default alembic.ini is missing: an error, not an empty key. */
	free(st.discover_ini);
	st.discover_ini = NULL;
	unit_stderr_begin(&cap);
	assert_int_equal(discover_files(&st, &res), -1);
	err = unit_stderr_end(&cap);
	unit_expect_contains(err, "discover = alembic failed (exit status 1): alembic: no configuration file");
	free(err);
	free_step(&st);
	free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_as_root),
		cmocka_unit_test_setup_teardown(test_interpreter_from_run, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test(test_parse),
		cmocka_unit_test_setup_teardown(test_real_django, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_real_alembic, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests_name("discover", tests, NULL, NULL);
}
