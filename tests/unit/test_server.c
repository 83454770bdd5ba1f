/*
 * test_server — the server module against a real PostgreSQL: initdb, the
 * temporary server, databases, /docker-entrypoint-initdb.d, per-start
 * settings (pg_hba.conf, the password through single-user mode, checked
 * against the stored SCRAM verifier), and the pure helpers.
 *
 * postgres refuses root: run as root (CI), the whole binary drops to the
 * `postgres` user before the tests start.
 */
#include "unit.h"

#include "config.h"
#include "log.h"
#include "pgbin.h"
#include "server.h"
#include "server_int.h"
#include "sig.h"
#include "proc.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <grp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pwd.h>
#include <sys/prctl.h>

/* ---- pure helpers ---- */

static void
test_quote(void **state)
{
	char *s = srv_quote_literal("plain");
	assert_string_equal(s, "E'plain'");
	free(s);
	s = srv_quote_literal("it's a \\ back\nslash\t\x7f");
	assert_string_equal(s, "E'it''s a \\\\ back\\x0aslash\\x09\\x7f'");
	free(s);
	s = srv_quote_literal("");
	assert_string_equal(s, "E''");
	free(s);
	s = srv_quote_ident("we\"ird user");
	assert_string_equal(s, "\"we\"\"ird user\"");
	free(s);
}

static void
test_initdb_argv(void **state)
{
	struct cfg cfg = {0};
	struct pgbin pg = {.bindir = "/pg/bin"};
	cfg.pgdata = "/data";
	cfg.db_user = "owner";
	cfg.db_password = "never-in-argv";
	cfg.initdb_args = "  --data-checksums --locale-provider=icu \"--icu-locale=en-US\"  ";
	cfg.initdb_waldir = "/wal";
	char **argv = srv_initdb_argv(&cfg, &pg);
	assert_non_null(argv);
	const char *want[] = {"/pg/bin/initdb", "-D", "/data", "--username=owner", "--encoding=UTF8",
	                      "--auth-local=trust", "--auth-host=trust", "--no-sync",
	                      "--data-checksums", "--locale-provider=icu", "--icu-locale=en-US", "--waldir=/wal", NULL};
	for (size_t i = 0; want[i]; i++) {
		assert_non_null(argv[i]);
		assert_string_equal(argv[i], want[i]);
		assert_null(strstr(argv[i], "never-in-argv"));
	}
	assert_null(argv[sizeof(want) / sizeof(want[0]) - 1]);
	proc_argv_free(argv);

	cfg.initdb_args = "--foo 'unterminated";
	assert_null(srv_initdb_argv(&cfg, &pg));
	cfg.initdb_args = "";
	cfg.initdb_waldir = NULL;
	argv = srv_initdb_argv(&cfg, &pg);
	assert_string_equal(argv[7], "--no-sync");
	assert_null(argv[8]);
	proc_argv_free(argv);
}

static const char *
env_get(const struct strlist *env, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < env->n; i++)
		if (strncmp(env->v[i], name, n) == 0 && env->v[i][n] == '=')
			return env->v[i] + n + 1;
	return NULL;
}

static void
test_client_env(void **state)
{
	struct cfg cfg = {0};
	cfg.db_user = "ignored";
	struct srv s = {.sockdir = "/tmp/pg sock", .port = 5432, .user = "us@r"};
	struct strlist env = {0};
	sl_add(&env, "PGHOST=old");
	sl_add(&env, "OTHER=1");
	srv_client_env(&s, &cfg, "my db/ü", &env);
	assert_string_equal(env_get(&env, "PGHOST"), "/tmp/pg sock");
	assert_string_equal(env_get(&env, "PGPORT"), "5432");
	assert_string_equal(env_get(&env, "PGUSER"), "us@r");
	/* No password for the temporary server, which trusts its own clients: steps are untrusted code. */
	assert_null(env_get(&env, "PGPASSWORD"));
	assert_string_equal(env_get(&env, "PGDATABASE"), "my db/ü");
	assert_string_equal(env_get(&env, "DATABASE_URL"),
	                    "postgresql://us%40r@/my%20db%2F%C3%BC?host=/tmp/pg%20sock&port=5432");
	assert_string_equal(env_get(&env, "OTHER"), "1");
	size_t hosts = 0;
	for (size_t i = 0; i < env.n; i++)
		hosts += strncmp(env.v[i], "PGHOST=", 7) == 0;
	assert_int_equal(hosts, 1);
	sl_free(&env);

	/* A server with TCP too: host steps still get the socket, never a password. */
	s.tcp = true;
	s.port = 40123;
	s.password = "0ne-time";
	cfg.db_password = "pw";
	srv_client_env(&s, &cfg, "app", &env);
	assert_string_equal(env_get(&env, "PGHOST"), "/tmp/pg sock");
	assert_string_equal(env_get(&env, "PGPORT"), "40123");
	assert_null(env_get(&env, "PGPASSWORD"));
	assert_string_equal(env_get(&env, "DATABASE_URL"), "postgresql://us%40r@/app?host=/tmp/pg%20sock&port=40123");
	sl_free(&env);

	/* A container step: TCP on the private port with the one-time password, never cfg's. */
	srv_container_env(&s, &cfg, "app", &env);
	assert_string_equal(env_get(&env, "PGHOST"), "127.0.0.1");
	assert_string_equal(env_get(&env, "PGPORT"), "40123");
	assert_string_equal(env_get(&env, "PGPASSWORD"), "0ne-time");
	assert_string_equal(env_get(&env, "DATABASE_URL"), "postgresql://us%40r:0ne-time@127.0.0.1:40123/app");
	for (size_t i = 0; i < env.n; i++)
		assert_null(strstr(env.v[i], "=pw"));
	sl_free(&env);
}

/* The line of `hba` for TYPE DATABASE ADDRESS, its method; "" when absent. */
static void
expect_hba(const char *hba, const char *type, const char *db, const char *address, const char *method)
{
	char *line = xasprintf("\n%-7s %-15s %-15s %-23s %s\n", type, db, "all", address, method);
	unit_expect_contains(hba, line);
	free(line);
}

static void
test_hba_text(void **state)
{
	struct cfg cfg = {0};
	/* Default (host mode): the socket and loopback take the host method, scram-sha-256. */
	char *hba = srv_hba_text(&cfg);
	assert_non_null(hba);
	assert_null(strstr(hba, "trust"));
	expect_hba(hba, "local", "all", "", "scram-sha-256");
	expect_hba(hba, "host", "all", "127.0.0.1/32", "scram-sha-256");
	expect_hba(hba, "host", "all", "::1/128", "scram-sha-256");
	expect_hba(hba, "local", "replication", "", "scram-sha-256");
	expect_hba(hba, "host", "replication", "::1/128", "scram-sha-256");
	unit_expect_contains(hba, "\nhost all all all scram-sha-256\n");
	free(hba);
	assert_int_equal(srv_socket_dir_mode(&cfg), 0750);

	/* An explicit method is the method of every line. */
	cfg.host_auth_method = "md5";
	hba = srv_hba_text(&cfg);
	expect_hba(hba, "local", "all", "", "md5");
	expect_hba(hba, "host", "all", "127.0.0.1/32", "md5");
	assert_null(strstr(hba, "trust"));
	free(hba);

	/* peer: the socket only. */
	cfg.host_auth_method = NULL;
	cfg.local_auth = CFG_LOCAL_PEER;
	hba = srv_hba_text(&cfg);
	expect_hba(hba, "local", "all", "", "peer");
	expect_hba(hba, "local", "replication", "", "peer");
	expect_hba(hba, "host", "all", "127.0.0.1/32", "scram-sha-256");
	assert_null(strstr(hba, "trust"));
	free(hba);
	assert_int_equal(srv_socket_dir_mode(&cfg), 03775);

	/* trust: the official image's socket and loopback. */
	cfg.local_auth = CFG_LOCAL_TRUST;
	hba = srv_hba_text(&cfg);
	expect_hba(hba, "local", "all", "", "trust");
	expect_hba(hba, "host", "all", "127.0.0.1/32", "trust");
	expect_hba(hba, "host", "replication", "::1/128", "trust");
	unit_expect_contains(hba, "\nhost all all all scram-sha-256\n");
	assert_null(strstr(hba, "trust is enabled"));
	free(hba);
	assert_int_equal(srv_socket_dir_mode(&cfg), 03775);

	/* POSTGRES_HOST_AUTH_METHOD=trust wins everywhere, as in the official image. */
	cfg.local_auth = CFG_LOCAL_PASSWORD;
	cfg.host_auth_method = "trust";
	hba = srv_hba_text(&cfg);
	expect_hba(hba, "local", "all", "", "trust");
	expect_hba(hba, "host", "all", "::1/128", "trust");
	unit_expect_contains(hba, "# warning trust is enabled for all connections\n");
	unit_expect_contains(hba, "\nhost all all all trust\n");
	free(hba);
	assert_int_equal(srv_socket_dir_mode(&cfg), 03775);

	cfg.host_auth_method = "md5\nhost all all all trust";
	assert_null(srv_hba_text(&cfg));
}

static void
test_check_auth(void **state)
{
	struct cfg cfg = {0};
	assert_int_equal(srv_check_auth(&cfg), -1);
	cfg.db_password = "";
	assert_int_equal(srv_check_auth(&cfg), -1);
	cfg.host_auth_method = "md5";
	assert_int_equal(srv_check_auth(&cfg), -1);
	cfg.host_auth_method = "trust";
	assert_int_equal(srv_check_auth(&cfg), 0);
	cfg.host_auth_method = NULL;
	cfg.db_password = "secret";
	assert_int_equal(srv_check_auth(&cfg), 0);
}

static void
test_stop_never_started(void **state)
{
	struct srv s = {0};
	assert_int_equal(srv_stop(&s), 0);
	assert_int_equal(srv_stop(&s), 0);
}

/* ---- against a real server ---- */

struct fixture {
	char *dir;
	char *pgdata;
	struct pgbin pg;
	struct cfg cfg;
	struct srv srv; /* stopped by the teardown when an assertion left it running */
};

static struct fixture fx;

static int
setup_cluster(void **state)
{
	fx.dir = unit_tmpdir();
	fx.pgdata = path_join(fx.dir, "data");
	if (pgbin_find(NULL, &fx.pg) != 0)
		return -1;
	fx.cfg.pgdata = fx.pgdata;
	fx.cfg.db_user = "tester";
	fx.cfg.db_name = "appdb";
	sl_add(&fx.cfg.db_extra, "second");
	sl_add(&fx.cfg.db_extra, "appdb");
	double t0 = log_now();
	if (srv_initdb(&fx.cfg, &fx.pg) != 0)
		return -1;
	printf("timing: initdb %.3f s\n", log_now() - t0);
	return 0;
}

static int
teardown_cluster(void **state)
{
	srv_stop(&fx.srv);
	rm_rf(fx.dir);
	free(fx.dir);
	free(fx.pgdata);
	sl_free(&fx.cfg.db_extra);
	pgbin_free(&fx.pg);
	return 0;
}

/* Runs one query returning one row and column; returns its value (malloc'ed) or NULL on error. */
static char *
query1(const struct srv *s, const char *db, const char *sql)
{
	PGconn *conn = srv_connect(s, db);
	if (!conn)
		return NULL;
	char *out = NULL;
	PGresult *res = PQexec(conn, sql);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1)
		out = xstrdup(PQgetvalue(res, 0, 0));
	else
		fprintf(stderr, "query failed: %s", PQerrorMessage(conn));
	PQclear(res);
	PQfinish(conn);
	return out;
}

static void
expect_query(const struct srv *s, const char *db, const char *sql, const char *want)
{
	char *got = query1(s, db, sql);
	if (!got || strcmp(got, want) != 0)
		fail_msg("%s on %s: got [%s], want [%s]", sql, db, got ? got : "(error)", want);
	free(got);
}

static void
write_compressed(const char *path, const char *data, int filter)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	assert_int_equal(archive_write_add_filter(a, filter), ARCHIVE_OK);
	assert_int_equal(archive_write_set_format_raw(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	archive_entry_set_pathname(e, "data");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_size(e, (la_int64_t)strlen(data));
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, data, strlen(data)), (la_ssize_t)strlen(data));
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_entry_free(e);
	archive_write_free(a);
}

static void
test_stop_start_fails_fast(void **state)
{
	struct cfg cfg = fx.cfg;
	char *missing = path_join(fx.dir, "no-such-data");
	cfg.pgdata = missing;
	struct srv s;
	double t0 = log_now();
	assert_int_equal(srv_start_temp(&s, &cfg, &fx.pg, false, false), -1);
	assert_true(log_now() - t0 < 10.0);
	assert_int_equal(s.pid, 0);
	assert_null(s.sockdir);
	assert_int_equal(srv_stop(&s), 0);
	free(missing);
}

static void
test_databases_and_initdb_d(void **state)
{
	struct srv *s = &fx.srv;
	double t0 = log_now();
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, false), 0);
	printf("timing: temporary server start %.3f s\n", log_now() - t0);
	assert_true(s->pid > 0);

	assert_int_equal(srv_setup_databases(s, &fx.cfg), 0);
	/* Idempotent: the databases exist now. */
	assert_int_equal(srv_setup_databases(s, &fx.cfg), 0);
	expect_query(s, "postgres",
	             "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname IN ('appdb', 'second')",
	             "appdb,second");
	expect_query(s, "appdb", "SELECT current_user", "tester");
	expect_query(s, "appdb", "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user", "true");

	/* initdb.d: every kind of file the official image knows. */
	char *d = path_join(fx.dir, "initdb.d");
	char *marker = path_join(fx.dir, "markers");
	assert_int_equal(mkdir_p(marker, 0700), 0);
	setenv("MARKER_DIR", marker, 1);
	unit_write(d, "01-exec.sh",
	           "#!/bin/sh\nset -e\npsql -v ON_ERROR_STOP=1 -q -c 'CREATE TABLE from_exec_sh (x int)'\n"
	           "echo \"$POSTGRES_USER $POSTGRES_DB $PGDATABASE $PGUSER\" > \"$MARKER_DIR/exec.out\"\n");
	char *p = path_join(d, "01-exec.sh");
	chmod(p, 0755);
	free(p);
	unit_write(d, "02-sourced.sh", "psql -v ON_ERROR_STOP=1 -q -c 'CREATE TABLE from_sourced_sh (x int)'\n"
	                               "touch \"$MARKER_DIR/sourced.out\"\n");
	unit_write(d, "03-plain.sql", "CREATE TABLE from_sql (x int);\nINSERT INTO from_sql VALUES (1);\n");
	/* Big enough to take many pipe writes. */
	struct strbuf big = {0};
	for (int i = 0; i < 20000; i++)
		sb_appendf(&big, "-- padding line %d to make the decompressed stream larger than a pipe\n", i);
	sb_append(&big, "CREATE TABLE from_gz (x int);\n");
	p = path_join(d, "04-gz.sql.gz");
	write_compressed(p, big.buf, ARCHIVE_FILTER_GZIP);
	free(p);
	sb_free(&big);
	p = path_join(d, "05-zst.sql.zst");
	write_compressed(p, "CREATE TABLE from_zst (x int);\n", ARCHIVE_FILTER_ZSTD);
	free(p);
	p = path_join(d, "06-xz.sql.xz");
	write_compressed(p, "CREATE TABLE from_xz (x int);\n", ARCHIVE_FILTER_XZ);
	free(p);
	unit_write(d, "07-README.txt", "not run\n");
	unit_write(d, ".hidden.sql", "CREATE TABLE from_hidden (x int);\n");
	fx.cfg.initdb_d = d;
	assert_int_equal(srv_run_initdb_d(s, &fx.cfg), 0);
	expect_query(s, "appdb",
	             "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE tablename LIKE 'from%'",
	             "from_exec_sh,from_gz,from_sourced_sh,from_sql,from_xz,from_zst");
	char *out_path = path_join(marker, "exec.out");
	char *out = read_file(out_path, NULL);
	assert_non_null(out);
	assert_string_equal(out, "tester appdb appdb tester\n");
	free(out);
	free(out_path);
	out_path = path_join(marker, "sourced.out");
	assert_int_equal(access(out_path, F_OK), 0);
	free(out_path);

	/* A failing file stops the run: later files are not run. */
	char *bad = path_join(fx.dir, "initdb-bad.d");
	unit_write(bad, "01-bad.sql", "SELECT * FROM no_such_table;\n");
	unit_write(bad, "02-after.sql", "CREATE TABLE after_bad (x int);\n");
	fx.cfg.initdb_d = bad;
	assert_int_equal(srv_run_initdb_d(s, &fx.cfg), -1);
	expect_query(s, "appdb", "SELECT count(*)::text FROM pg_tables WHERE tablename = 'after_bad'", "0");
	rm_rf(bad);
	unit_write(bad, "01-bad.sh", "#!/bin/sh\nexit 3\n");
	fx.cfg.initdb_d = bad;
	assert_int_equal(srv_run_initdb_d(s, &fx.cfg), -1);
	rm_rf(bad);
	unit_write(bad, "01-bad.sql.gz", "this is not gzip at all, yet raw reading passes it through;\n");
	fx.cfg.initdb_d = bad;
	assert_int_equal(srv_run_initdb_d(s, &fx.cfg), -1);
	/*
	 * A truncated compressed file: the error comes after SQL went through,
	 * so psql must be stopped before it sees EOF and runs a partial script.
	 */
	rm_rf(bad);
	assert_int_equal(mkdir_p(bad, 0700), 0);
	struct strbuf sql = {0};
	for (int i = 0; i < 3; i++)
		sb_appendf(&sql, "CREATE TABLE IF NOT EXISTS from_corrupt_%d (x int);\n", i);
	p = path_join(bad, "01-corrupt.sql.gz");
	write_compressed(p, sql.buf, ARCHIVE_FILTER_GZIP);
	sb_free(&sql);
	size_t len = 0;
	char *gz = read_file(p, &len);
	assert_non_null(gz);
	len -= 12;
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(gz, 1, len, f), len);
	fclose(f);
	free(gz);
	free(p);
	fx.cfg.initdb_d = bad;
	assert_int_equal(srv_run_initdb_d(s, &fx.cfg), -1);
	/* A missing directory is nothing to do. */
	rm_rf(bad);
	fx.cfg.initdb_d = bad;
	assert_int_equal(srv_run_initdb_d(s, &fx.cfg), 0);
	fx.cfg.initdb_d = NULL;
	free(bad);

	char *sockdir = xstrdup(s->sockdir);
	t0 = log_now();
	assert_int_equal(srv_stop(s), 0);
	printf("timing: temporary server stop %.3f s\n", log_now() - t0);
	assert_int_equal(access(sockdir, F_OK), -1);
	assert_int_equal(srv_stop(s), 0);
	/* A clean shutdown leaves no postmaster.pid. */
	char *pid_path = path_join(fx.pgdata, "postmaster.pid");
	assert_int_equal(access(pid_path, F_OK), -1);
	free(pid_path);
	free(sockdir);
	unsetenv("MARKER_DIR");
	rm_rf(marker);
	free(marker);
	rm_rf(d);
	free(d);
}

/* Decodes base64 into out (at most cap bytes); returns the length or -1. */
static int
b64(const char *in, size_t len, unsigned char *out, size_t cap)
{
	if (len % 4 != 0 || len / 4 * 3 > cap)
		return -1;
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0)
		return -1;
	for (size_t i = len; i > 0 && in[i - 1] == '='; i--)
		n--;
	return n;
}

/* True when `verifier` (SCRAM-SHA-256$iter:salt$stored:server) was made from `password`. */
static bool
scram_matches(const char *verifier, const char *password)
{
	long iter;
	char salt64[128], stored64[128], server64[128];
	if (sscanf(verifier, "SCRAM-SHA-256$%ld:%127[^$]$%127[^:]:%127s", &iter, salt64, stored64, server64) != 4)
		return false;
	unsigned char salt[96], stored[96], server[96];
	int salt_len = b64(salt64, strlen(salt64), salt, sizeof(salt));
	if (salt_len <= 0 || b64(stored64, strlen(stored64), stored, sizeof(stored)) != 32 ||
	    b64(server64, strlen(server64), server, sizeof(server)) != 32)
		return false;
	unsigned char salted[32], client_key[32], stored_key[32], server_key[32];
	unsigned int l = 32;
	if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, salt_len, (int)iter, EVP_sha256(), 32, salted) != 1)
		return false;
	HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, client_key, &l);
	SHA256(client_key, 32, stored_key);
	HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10, server_key, &l);
	return memcmp(stored_key, stored, 32) == 0 && memcmp(server_key, server, 32) == 0;
}

/* Starts the temporary server on the fixture's cluster: its superuser's stored password is `password`'s. */
static void
expect_stored_password(const struct cfg *cfg, const char *password)
{
	struct srv *s = &fx.srv;
	assert_int_equal(srv_start_temp(s, cfg, &fx.pg, false, false), 0);
	char *verifier = query1(s, "postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = current_user");
	assert_non_null(verifier);
	assert_true(scram_matches(verifier, password));
	free(verifier);
	assert_int_equal(srv_stop(s), 0);
}

static void
test_per_start(void **state)
{
	/* Quotes, backslashes, a newline, a statement terminator and UTF-8: all must arrive intact. */
	const char *password = "p'a\\ss\"w;ord\n\n$x é";
	struct cfg cfg = fx.cfg;
	cfg.db_password = (char *)password;

	/* Not durable (after a restore): single-user mode runs with fsync=off, and the password still lands. */
	double t0 = log_now();
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, false, NULL, NULL), 0);
	printf("timing: per-start with password, not durable (pg_hba + single-user, fsync=off) %.3f s\n",
	       log_now() - t0);

	char *hba_path = path_join(fx.pgdata, "pg_hba.conf");
	char *hba = read_file(hba_path, NULL);
	/* Host mode (local_auth = password): nothing is trusted, the socket neither. */
	unit_expect_contains(hba, "\nlocal   all             all                                     scram-sha-256\n");
	unit_expect_contains(hba, "\nhost    all             all             127.0.0.1/32            scram-sha-256\n");
	unit_expect_contains(hba, "\nhost    replication     all             ::1/128                 scram-sha-256\n");
	unit_expect_contains(hba, "\nhost all all all scram-sha-256\n");
	assert_null(strstr(hba, "trust"));
	free(hba);

	struct srv *s = &fx.srv;
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, false, false), 0);
	char *verifier = query1(s, "postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = current_user");
	assert_non_null(verifier);
	assert_true(strncmp(verifier, "SCRAM-SHA-256$", 14) == 0);
	assert_true(scram_matches(verifier, password));
	assert_false(scram_matches(verifier, "p'a\\ss\"w;ord"));
	free(verifier);
	/* The server log never saw the password. */
	char *log = read_file(s->logfile, NULL);
	assert_non_null(log);
	assert_null(strstr(log, "ss\"w;ord"));
	free(log);
	assert_int_equal(srv_stop(s), 0);

	/* Trust, no password: the hba line changes and the stored password stays. */
	cfg.db_password = NULL;
	cfg.host_auth_method = "trust";
	t0 = log_now();
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, true, NULL, NULL), 0);
	printf("timing: per-start without password, durable (pg_hba, fsynced) %.3f s\n", log_now() - t0);
	hba = read_file(hba_path, NULL);
	unit_expect_contains(hba, "# warning trust is enabled for all connections\n");
	unit_expect_contains(hba, "\nhost all all all trust\n");
	free(hba);
	cfg.host_auth_method = "md5\nhost all all all trust";
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, false, NULL, NULL), -1);

	/* Timing, a few runs each way: durable (postgres' fsyncs) and not (fsync=off). */
	cfg.host_auth_method = NULL;
	cfg.db_password = "another";
	log_min_level = LOG_DEBUG; /* prints the single-user time separately */
	for (int i = 0; i < 4; i++) {
		bool durable = i % 2 == 0;
		t0 = log_now();
		assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, durable, NULL, NULL), 0);
		printf("timing: per-start with password, %s, run %d: %.3f s\n", durable ? "durable" : "fsync=off", i / 2 + 1,
		       log_now() - t0);
	}
	log_min_level = LOG_INFO;

	/* The other superusers come from the same single-user session: none, then two (any bytes in a name). */
	struct strlist su = {0};
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, false, &su, NULL), 0);
	assert_int_equal(su.n, 0);
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, false, false), 0);
	char *one = query1(s, "postgres",
	                   "CREATE ROLE evil SUPERUSER; CREATE ROLE \"we\"\"ird é\" SUPERUSER LOGIN; CREATE ROLE plain; "
	                   "SELECT 1");
	assert_non_null(one);
	free(one);
	assert_int_equal(srv_stop(s), 0);
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, false, &su, NULL), 0);
	assert_int_equal(su.n, 2);
	assert_string_equal(su.v[0], "evil");
	assert_string_equal(su.v[1], "we\"ird é");
	sl_free(&su);

	/* Durable: the password set with postgres' own fsyncs is there too. */
	expect_stored_password(&cfg, "another");

	/*
	 * A session started ahead: postgres waits for its configuration (a FIFO
	 * in its directory) and sets the password once handed the cluster; the
	 * process and its directory are gone after.
	 */
	struct srv_single ahead;
	cfg.db_password = "ahead";
	srv_single_start(&ahead, &cfg, &fx.pg);
	assert_true(ahead.p.pid > 0);
	char *fifo = path_join(ahead.dir, "postgresql.conf");
	struct stat st;
	assert_int_equal(stat(fifo, &st), 0);
	assert_true(S_ISFIFO(st.st_mode));
	char *dir = xstrdup(ahead.dir);
	t0 = log_now();
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, false, NULL, &ahead), 0);
	printf("timing: per-start with password, a session started ahead: %.3f s\n", log_now() - t0);
	assert_int_equal(ahead.p.pid, 0);
	assert_null(ahead.dir);
	assert_int_equal(access(dir, F_OK), -1);
	expect_stored_password(&cfg, "ahead");
	free(dir);
	free(fifo);

	/* Durable: the one started ahead (fsync=off) is not used, a new session keeps postgres' fsyncs. */
	cfg.db_password = "durable-ahead";
	srv_single_start(&ahead, &cfg, &fx.pg);
	assert_true(ahead.p.pid > 0);
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, true, NULL, &ahead), 0);
	assert_int_equal(ahead.p.pid, 0);
	assert_null(ahead.dir);
	expect_stored_password(&cfg, "durable-ahead");

	/* Cancelled: killed and reaped, its directory removed; twice is harmless.  No password: none. */
	srv_single_start(&ahead, &cfg, &fx.pg);
	pid_t pid = ahead.p.pid;
	assert_true(pid > 0);
	srv_single_cancel(&ahead);
	srv_single_cancel(&ahead);
	assert_int_equal(kill(pid, 0), -1);
	assert_null(ahead.dir);
	cfg.db_password = NULL;
	srv_single_start(&ahead, &cfg, &fx.pg);
	assert_int_equal(ahead.p.pid, 0);
	assert_null(ahead.dir);
	cfg.db_password = "another";

	/* Single-user mode fails on a running cluster: reported, password not shown. */
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, false, false), 0);
	cfg.db_password = "visible-if-leaked";
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, true, NULL, NULL), -1);
	assert_int_equal(srv_stop(s), 0);
	free(hba_path);
}

/* Connects to the temporary server over TCP with `password` (NULL: none); true when it got in. */
static bool
tcp_login(const struct srv *s, const char *password)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", s->port);
	const char *const kw[] = {"host", "port", "dbname", "user", "password", "connect_timeout", NULL};
	const char *const val[] = {"127.0.0.1", port, "postgres", s->user, password ? password : "", "5", NULL};
	PGconn *conn = PQconnectdbParams(kw, val, 0);
	bool ok = PQstatus(conn) == CONNECTION_OK;
	PQfinish(conn);
	return ok;
}

static char *
stored_verifier(const struct srv *s)
{
	return query1(s, "postgres",
	              "SELECT coalesce(rolpassword, 'NULL') FROM pg_authid WHERE rolname = current_user");
}

/* Whether a regular file under `dir` holds `needle`. */
static bool
tree_contains(const char *dir, const char *needle)
{
	DIR *d = opendir(dir);
	if (!d)
		return false;
	bool found = false;
	struct dirent *de;
	while (!found && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *p = path_join(dir, de->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
			found = tree_contains(p, needle);
		} else if (S_ISREG(st.st_mode)) {
			size_t len = 0;
			char *text = read_file(p, &len);
			if (text && memmem(text, len, needle, strlen(needle))) {
				printf("found in %s\n", p);
				found = true;
			}
			free(text);
		}
		free(p);
	}
	closedir(d);
	return found;
}

static void
test_temp_server_tcp(void **state)
{
	struct srv *s = &fx.srv;
	struct cfg cfg = fx.cfg;
	/* The role has a password of its own (what a restored layer could hold): it comes back after. */
	cfg.db_password = "own-password";
	assert_int_equal(srv_apply_per_start(&cfg, &fx.pg, false, NULL, NULL), 0);
	/* PGDATA's pg_hba.conf, which trusts all, must not be the temporary server's. */
	unit_write(fx.pgdata, "pg_hba.conf", "local all all trust\nhost all all all trust\n");
	setenv("PGPORT", "5433", 1);

	double t0 = log_now();
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, true, false), 0);
	printf("timing: temporary server with TCP and a one-time password %.3f s\n", log_now() - t0);
	unsetenv("PGPORT");
	/* Not where a client looks for the real server. */
	assert_true(s->port > 1024 && s->port != 5432 && s->port != 5433);
	assert_non_null(s->password);
	assert_int_equal(strlen(s->password), 48);
	char *hba = read_file(s->hba, NULL);
	assert_non_null(hba);
	assert_true(strncmp(s->hba, s->sockdir, strlen(s->sockdir)) == 0);
	/* No trust on TCP: every host line takes SCRAM. */
	struct strlist lines = {0};
	sl_split_lines(hba, &lines);
	size_t host_lines = 0;
	for (size_t i = 0; i < lines.n; i++) {
		if (strncmp(lines.v[i], "host", 4) == 0) {
			host_lines++;
			assert_null(strstr(lines.v[i], "trust"));
			unit_expect_contains(lines.v[i], "scram-sha-256");
		}
	}
	assert_int_equal(host_lines, 1);
	sl_free(&lines);
	free(hba);
	/* Only the one-time password gets in: none, a wrong one or the role's own don't. */
	assert_true(tcp_login(s, s->password));
	assert_false(tcp_login(s, NULL));
	assert_false(tcp_login(s, "own-password"));
	assert_false(tcp_login(s, "0123456789abcdef0123456789abcdef0123456789abcdef"));
	/* The socket is trusted (the private directory is the owner's only). */
	expect_query(s, "postgres", "SELECT 1", "1");
	/* The server never saw the password itself: only its verifier. */
	char *v = stored_verifier(s);
	assert_true(scram_matches(v, s->password));
	free(v);
	char *password = xstrdup(s->password);
	char *log = read_file(s->logfile, NULL);
	assert_null(strstr(log, password));
	free(log);

	char *verifier = stored_verifier(s);

	/* Stopping puts the role's own password back. */
	assert_int_equal(srv_stop(s), 0);
	/* No trace in the cluster a build snapshots (after its WAL reset): not even a dead row of pg_authid. */
	struct srv_tool reset;
	assert_int_equal(srv_reset_wal_start(&cfg, &fx.pg, &reset), 0);
	assert_int_equal(srv_tool_wait(&reset), 0);
	assert_false(tree_contains(fx.pgdata, verifier));
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, false, false), 0);
	assert_int_equal(s->port, SRV_PORT);
	v = stored_verifier(s);
	assert_true(scram_matches(v, "own-password"));
	assert_false(scram_matches(v, password));
	free(v);
	assert_int_equal(srv_stop(s), 0);

	/* A role without a password gets none back; one a step set itself stays. */
	cfg.db_password = NULL;
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, false, false), 0);
	expect_query(s, "postgres", "ALTER ROLE tester PASSWORD NULL; SELECT 1", "1");
	assert_int_equal(srv_stop(s), 0);
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, true, false), 0);
	assert_int_equal(srv_stop(s), 0);
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, false, false), 0);
	expect_query(s, "postgres", "SELECT coalesce(rolpassword, 'NULL') FROM pg_authid WHERE rolname = 'tester'", "NULL");
	assert_int_equal(srv_stop(s), 0);
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, true, false), 0);
	expect_query(s, "postgres", "ALTER ROLE tester PASSWORD 'set-by-a-step'; SELECT 1", "1");
	assert_int_equal(srv_stop(s), 0);
	assert_int_equal(srv_start_temp(s, &cfg, &fx.pg, false, false), 0);
	v = stored_verifier(s);
	assert_true(scram_matches(v, "set-by-a-step"));
	free(v);
	assert_int_equal(srv_stop(s), 0);

	free(verifier);
	free(password);
}

/*
 * A build's temporary server writes no WAL for what a step creates and fills
 * (wal_level=minimal) unless the conf files name the WAL's level or users;
 * a migration in place keeps the conf's level.
 */
static void
test_temp_server_wal_level(void **state)
{
	struct srv *s = &fx.srv;
	char *conf = unit_read(fx.pgdata, "postgresql.conf");
	assert_non_null(conf);
	const char *kept[][2] = {
		{"wal_level = logical\n", "logical"},
		{"  WAL_LEVEL='logical' # a derived image's sample\n", "logical"},
		{"max_wal_senders = 3\n", "replica"},
		{"include_if_exists = 'extra.conf'\n", "replica"},
		{"#wal_level = logical\n", "minimal"},
		/* Cut in two by a 1 KiB read, "wal" + "_level" would look like neither. */
		{"                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                                                                                                    "
		 "                  wal_level = logical\n",
		 "logical"},
		{"", "minimal"},
	};
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
		char *text = xasprintf("%s%s", conf, kept[i][0]);
		unit_write(fx.pgdata, "postgresql.conf", text);
		free(text);
		assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, false), 0);
		char *got = query1(s, "postgres", "SELECT current_setting('wal_level') || ' ' || current_setting('max_wal_senders')");
		assert_non_null(got);
		if (strncmp(got, kept[i][1], strlen(kept[i][1])) != 0)
			fail_msg("with [%s]: wal_level and max_wal_senders [%s], want %s", kept[i][0], got, kept[i][1]);
		if (strcmp(kept[i][1], "minimal") == 0)
			assert_string_equal(got, "minimal 0");
		free(got);
		assert_int_equal(srv_stop(s), 0);
	}
	/* postgresql.auto.conf counts too (ALTER SYSTEM in an initdb.d script of a prefix build's cluster). */
	unit_write(fx.pgdata, "postgresql.auto.conf", "wal_level = 'logical'\n");
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, false), 0);
	expect_query(s, "postgres", "SELECT current_setting('wal_level')", "logical");
	assert_int_equal(srv_stop(s), 0);
	unit_write(fx.pgdata, "postgresql.auto.conf", "");
	/* A slot in the cluster (a prefix built before): the level it needs, or the server would not start. */
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, true), 0);
	expect_query(s, "postgres", "SELECT 'made' FROM pg_create_physical_replication_slot('kept')", "made");
	assert_int_equal(srv_stop(s), 0);
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, false), 0);
	expect_query(s, "postgres", "SELECT current_setting('wal_level')", "replica");
	expect_query(s, "postgres", "SELECT 'dropped' FROM pg_drop_replication_slot('kept')", "dropped");
	assert_int_equal(srv_stop(s), 0);
	/* In place: the conf's own level (the default here), durability on. */
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, true), 0);
	expect_query(s, "postgres", "SELECT current_setting('wal_level') || ' ' || current_setting('fsync')", "replica on");
	assert_int_equal(srv_stop(s), 0);
	/* A build: durability off, autovacuum off. */
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, false), 0);
	expect_query(s, "postgres",
	             "SELECT concat_ws(' ', current_setting('fsync'), current_setting('synchronous_commit'), "
	             "current_setting('full_page_writes'), current_setting('autovacuum'))",
	             "off off off off");
	assert_int_equal(srv_stop(s), 0);
	unit_write(fx.pgdata, "postgresql.conf", conf);
	free(conf);
}

/* One line per entry below `dir` ("rel inode size mtime ctime"), recursively. */
static void
tree_state(const char *dir, const char *rel, struct strlist *out)
{
	char *path = *rel ? path_join(dir, rel) : xstrdup(dir);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *sub = *rel ? xasprintf("%s/%s", rel, de->d_name) : xstrdup(de->d_name);
		char *full = path_join(dir, sub);
		struct stat st;
		assert_int_equal(lstat(full, &st), 0);
		sl_add_owned(out, xasprintf("%s %lu %lld %lld.%09ld %lld.%09ld", sub, (unsigned long)st.st_ino,
		                            (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
		                            (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec));
		if (S_ISDIR(st.st_mode))
			tree_state(dir, sub, out);
		free(full);
		free(sub);
	}
	closedir(d);
	free(path);
}

/* Whether the state line `line` is of a path srv_reset_wal_paths names, or one below them. */
static bool
reset_path(const char *line)
{
	size_t n = strcspn(line, " ");
	for (const char *const *p = srv_reset_wal_paths; *p; p++)
		if ((n == strlen(*p) || (n > strlen(*p) && line[strlen(*p)] == '/')) && strncmp(line, *p, strlen(*p)) == 0)
			return true;
	return false;
}

/*
 * A snapshot writes everything else while pg_resetwal runs: it must change
 * nothing outside srv_reset_wal_paths (checked against the PostgreSQL the
 * tests run, 15 and 17 in CI).  It refuses a running cluster.
 */
static void
test_reset_wal_changes_only_its_paths(void **state)
{
	struct srv *s = &fx.srv;
	struct srv_tool t;
	memset(&t, 0, sizeof(t));
	t.logfd = -1;
	assert_int_equal(srv_tool_wait(&t), -1); /* none ran */

	/* Some WAL to replace. */
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, false), 0);
	expect_query(s, "appdb", "CREATE TABLE walfill AS SELECT generate_series(1, 50000) AS x; SELECT 1", "1");
	assert_int_equal(srv_reset_wal_start(&fx.cfg, &fx.pg, &t), 0);
	assert_int_equal(srv_tool_wait(&t), -1); /* the server runs: refused */
	assert_int_equal(t.pid, 0);
	assert_int_equal(srv_stop(s), 0);

	struct strlist before = {0}, after = {0};
	tree_state(fx.pgdata, "", &before);
	assert_int_equal(srv_reset_wal_start(&fx.cfg, &fx.pg, &t), 0);
	assert_true(t.pid > 0);
	assert_int_equal(srv_tool_wait(&t), 0);
	tree_state(fx.pgdata, "", &after);
	size_t changed = 0;
	for (int pass = 0; pass < 2; pass++) {
		const struct strlist *a = pass ? &after : &before, *b = pass ? &before : &after;
		for (size_t i = 0; i < a->n; i++) {
			if (sl_contains(b, a->v[i]))
				continue;
			changed++;
			if (!reset_path(a->v[i]))
				fail_msg("pg_resetwal changed \"%s\", outside srv_reset_wal_paths", a->v[i]);
		}
	}
	assert_true(changed > 0); /* it did something: pg_control and a new segment */
	sl_free(&before);
	sl_free(&after);
	/* And the cluster starts from what it left. */
	assert_int_equal(srv_start_temp(s, &fx.cfg, &fx.pg, false, false), 0);
	expect_query(s, "appdb", "SELECT count(*) FROM walfill", "50000");
	expect_query(s, "appdb", "DROP TABLE walfill; SELECT 1", "1");
	assert_int_equal(srv_stop(s), 0);
}

int
main(void)
{
	if (unit_drop_root() != 0 || sig_init() != 0)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_initdb_argv),
		cmocka_unit_test(test_client_env),
		cmocka_unit_test(test_check_auth),
		cmocka_unit_test(test_hba_text),
		cmocka_unit_test(test_stop_never_started),
	};
	const struct CMUnitTest cluster[] = {
		cmocka_unit_test(test_stop_start_fails_fast),
		cmocka_unit_test(test_databases_and_initdb_d),
		cmocka_unit_test(test_per_start),
		cmocka_unit_test(test_temp_server_tcp),
		cmocka_unit_test(test_temp_server_wal_level),
		cmocka_unit_test(test_reset_wal_changes_only_its_paths),
	};
	int failed = cmocka_run_group_tests_name("server helpers", pure, NULL, NULL);
	failed += cmocka_run_group_tests_name("server cluster", cluster, setup_cluster, teardown_cluster);
	return failed;
}
