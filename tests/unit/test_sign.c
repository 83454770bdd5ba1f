/*
 * Unit tests for sign: keygen writes a usable pair (private key 0600),
 * signatures verify, survive the meta round trip, and break when any field of
 * the blob changes; unknown signers, unsigned entries, rotation, bad key
 * files; and the cost of a check (issue 14: at most 5 ms per hit).
 */
#include "unit.h"

#include "entry.h"
#include "sign.h"
#include "util.h"

#include <sys/stat.h>
#include <time.h>

#define KEY_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KEY_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

static void
sample(struct entry_meta *m)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->key, sizeof(m->key), "%s", KEY_A);
	m->manifest = xstrdup("pgstash-manifest 1\nfile a sha256=x\n");
	snprintf(m->archive_sha256, sizeof(m->archive_sha256), "%s", SHA_C);
	m->archive_bytes = 1234;
	m->pgdata_bytes = 56789;
	snprintf(m->pg_version, sizeof(m->pg_version), "15.18");
	m->layer = CFG_LAYER_SCHEMA;
	m->compression = CFG_COMP_ZSTD;
	m->created = m->last_used = 1000;
}

/* Writes a pair under unit_tmp/name and loads it as signing key and as the only trusted key. */
static void
load_pair(const char *name, struct sign_keys *k, char fp[65])
{
	char *base = xasprintf("%s/%s", unit_tmp, name);
	assert_int_equal(sign_keygen(base, fp), 0);
	char *priv = xasprintf("%s.key", base), *pub = xasprintf("%s.pub", base);
	struct strlist trusted = {0};
	sl_add(&trusted, pub);
	assert_int_equal(sign_load(k, priv, &trusted), 0);
	sl_free(&trusted);
	free(priv);
	free(pub);
	free(base);
}

static void
test_keygen(void **state)
{
	(void)state;
	char fp[65];
	char *base = xasprintf("%s/ci", unit_tmp);
	assert_int_equal(sign_keygen(base, fp), 0);
	assert_true(entry_key_valid(fp));
	struct stat sb;
	char *priv = xasprintf("%s.key", base);
	assert_int_equal(stat(priv, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	char *pub = unit_read(unit_tmp, "ci.pub");
	unit_expect_contains(pub, "BEGIN PUBLIC KEY");
	free(pub);
	/* Never overwrites a key. */
	assert_int_equal(sign_keygen(base, NULL), -1);
	free(priv);
	free(base);
}

static void
test_sign_and_verify(void **state)
{
	(void)state;
	struct sign_keys k;
	char fp[65];
	load_pair("a", &k, fp);
	struct entry_meta m;
	sample(&m);
	assert_int_equal(sign_verify(&k, &m), SIGN_UNSIGNED);
	assert_int_equal(sign_entry(&k, &m), 0);
	assert_string_equal(m.signer, fp);
	assert_int_equal(strlen(m.signature), 128);
	assert_int_equal(sign_verify(&k, &m), SIGN_TRUSTED);

	/* The meta round trip keeps it; the times are not signed (a touch rewrites them). */
	char *text = entry_meta_encode(&m);
	struct entry_meta back;
	int line;
	char why[128];
	assert_int_equal(entry_meta_parse(text, strlen(text), ENTRY_F_REQUIRED, &back, &line, why, sizeof(why)),
	                 ENTRY_PARSE_OK);
	back.last_used = 99999;
	assert_int_equal(sign_verify(&k, &back), SIGN_TRUSTED);
	free(text);
	entry_meta_free(&back);
	entry_meta_free(&m);
	sign_free(&k);
}

/* Each field of the blob, changed after signing, breaks the signature. */
static void
test_tampered_fields(void **state)
{
	(void)state;
	struct sign_keys k;
	char fp[65];
	load_pair("a", &k, fp);
	for (int field = 0; field < 10; field++) {
		struct entry_meta m;
		sample(&m);
		assert_int_equal(sign_entry(&k, &m), 0);
		switch (field) {
		case 0: m.key[0] = 'b'; break;
		case 1: free(m.manifest), m.manifest = xstrdup("pgstash-manifest 1\nfile b sha256=x\n"); break;
		case 2: m.archive_sha256[63] = 'd'; break;
		case 3: m.archive_bytes++; break;
		case 4: m.pgdata_bytes--; break;
		case 5: snprintf(m.pg_version, sizeof(m.pg_version), "15.19"); break;
		case 6: m.layer = CFG_LAYER_FIXTURES; break;
		case 7: snprintf(m.parent, sizeof(m.parent), "%s", KEY_B); break;
		case 8: m.compression = CFG_COMP_NONE; break;
		case 9: m.signature[10] = m.signature[10] == '0' ? '1' : '0'; break;
		}
		if (sign_verify(&k, &m) != SIGN_BAD_SIGNATURE)
			fail_msg("field %d: tampering not detected", field);
		entry_meta_free(&m);
	}
	sign_free(&k);
}

/* Another key's signature is "unknown signer"; two trusted keys at once = rotation. */
static void
test_unknown_signer_and_rotation(void **state)
{
	(void)state;
	struct sign_keys a, b;
	char fpa[65], fpb[65];
	load_pair("a", &a, fpa);
	load_pair("b", &b, fpb);
	struct entry_meta m;
	sample(&m);
	assert_int_equal(sign_entry(&a, &m), 0);
	assert_int_equal(sign_verify(&b, &m), SIGN_UNKNOWN_SIGNER);
	/* A claimed signer that is trusted, with another key's signature: bad. */
	struct entry_meta forged;
	sample(&forged);
	assert_int_equal(sign_entry(&a, &forged), 0);
	memcpy(forged.signer, fpb, sizeof(forged.signer));
	assert_int_equal(sign_verify(&b, &forged), SIGN_BAD_SIGNATURE);

	struct strlist both = {0};
	char *pa = xasprintf("%s/a.pub", unit_tmp), *pb = xasprintf("%s/b.pub", unit_tmp);
	sl_add(&both, pa);
	sl_add(&both, pb);
	struct sign_keys rot;
	assert_int_equal(sign_load(&rot, NULL, &both), 0);
	assert_true(sign_enforced(&rot));
	assert_int_equal(sign_verify(&rot, &m), SIGN_TRUSTED);
	struct entry_meta m2;
	sample(&m2);
	assert_int_equal(sign_entry(&b, &m2), 0);
	assert_int_equal(sign_verify(&rot, &m2), SIGN_TRUSTED);
	/* Without a signing key an entry is published unsigned. */
	assert_int_equal(sign_entry(&rot, &m2), 0);
	assert_string_equal(m2.signature, "");
	sl_free(&both);
	free(pa);
	free(pb);
	entry_meta_free(&m);
	entry_meta_free(&m2);
	entry_meta_free(&forged);
	sign_free(&a);
	sign_free(&b);
	sign_free(&rot);
}

static void
test_bad_key_files(void **state)
{
	(void)state;
	struct sign_keys k;
	char fp[65];
	char *base = xasprintf("%s/c", unit_tmp);
	assert_int_equal(sign_keygen(base, fp), 0);
	unit_write(unit_tmp, "junk.pem", "not a key\n");
	struct strlist l = {0};
	char *junk = xasprintf("%s/junk.pem", unit_tmp), *missing = xasprintf("%s/missing.pub", unit_tmp);
	char *priv = xasprintf("%s.key", base), *pub = xasprintf("%s.pub", base);
	struct unit_capture cap;
	unit_stderr_begin(&cap);
	sl_add(&l, junk);
	assert_int_equal(sign_load(&k, NULL, &l), -1);
	sl_free(&l);
	sl_add(&l, missing);
	assert_int_equal(sign_load(&k, NULL, &l), -1);
	sl_free(&l);
	/* A public key is not a signing key, nor a private key a trusted one. */
	assert_int_equal(sign_load(&k, pub, NULL), -1);
	sl_add(&l, priv);
	assert_int_equal(sign_load(&k, NULL, &l), -1);
	char *err = unit_stderr_end(&cap);
	unit_expect_contains(err, "junk.pem");
	unit_expect_contains(err, "missing.pub");
	free(err);
	assert_false(sign_enforced(&k));
	sl_free(&l);
	free(junk);
	free(missing);
	free(priv);
	free(pub);
	free(base);
}

/* Issue 14: a signature check costs at most 5 ms per hit; measured over 200. */
static void
test_verify_cost(void **state)
{
	(void)state;
	struct sign_keys k;
	char fp[65];
	load_pair("a", &k, fp);
	struct entry_meta m;
	sample(&m);
	/* A realistic manifest: a few hundred migration files. */
	struct strbuf sb = {0};
	for (int i = 0; i < 500; i++)
		sb_appendf(&sb, "file app migrations/%04d_x.py sha256=%s\n", i, SHA_C);
	free(m.manifest);
	m.manifest = sb_take(&sb);
	assert_int_equal(sign_entry(&k, &m), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 200; i++)
		assert_int_equal(sign_verify(&k, &m), SIGN_TRUSTED);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double per = ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9) / 200;
	print_message("sign_verify: %.3f ms per check\n", per * 1000);
	assert_true(per < 0.005);
	entry_meta_free(&m);
	sign_free(&k);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_keygen, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_sign_and_verify, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_tampered_fields, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_unknown_signer_and_rotation, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_bad_key_files, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_verify_cost, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
