/*
 * Unit tests for digest: the FIPS 180-2 SHA-256 vectors through each entry
 * point (buffer, file with and without a caller's buffer, byte range,
 * incremental with a reset), and errors.
 */
#include "unit.h"

#include "digest.h"

#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define TWO_BLOCKS "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
#define SHA_TWO_BLOCKS "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
#define SHA_MILLION_A "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

static void
test_buffer(void **state)
{
	char hex[DIGEST_HEX_SIZE];
	digest_hex("", 0, hex);
	assert_string_equal(hex, SHA_EMPTY);
	digest_hex("abc", 3, hex);
	assert_string_equal(hex, SHA_ABC);
	digest_hex(TWO_BLOCKS, strlen(TWO_BLOCKS), hex);
	assert_string_equal(hex, SHA_TWO_BLOCKS);
}

/* RFC 4231, test cases 1 and 2 (HMAC-SHA-256). */
static void
test_hmac(void **state)
{
	(void)state;
	char hex[DIGEST_HEX_SIZE];
	unsigned char key1[20];
	memset(key1, 0x0b, sizeof(key1));
	digest_hmac_hex(key1, sizeof(key1), "Hi There", 8, hex);
	assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	digest_hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
	assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void
test_incremental(void **state)
{
	char hex[DIGEST_HEX_SIZE];
	struct digest *d = digest_new();
	digest_update(d, "junk", 4);
	digest_reset(d);
	char a[1000];
	memset(a, 'a', sizeof(a));
	for (int i = 0; i < 1000; i++)
		digest_update(d, a, sizeof(a));
	digest_final(d, hex);
	assert_string_equal(hex, SHA_MILLION_A);
	digest_reset(d);
	digest_update(d, "ab", 2);
	digest_update(d, "c", 1);
	digest_final(d, hex);
	assert_string_equal(hex, SHA_ABC);
	digest_free(d);
	digest_free(NULL);
}

static void
test_file(void **state)
{
	char hex[DIGEST_HEX_SIZE];
	uint64_t n = 0;
	unit_write(unit_tmp, "two", TWO_BLOCKS);
	char *p = path_join(unit_tmp, "two");
	assert_int_equal(digest_file(p, NULL, 0, hex, &n), 0);
	assert_string_equal(hex, SHA_TWO_BLOCKS);
	assert_true(n == strlen(TWO_BLOCKS));
	/* A tiny caller buffer: many reads, one digest. */
	char buf[7];
	assert_int_equal(digest_file(p, buf, sizeof(buf), hex, NULL), 0);
	assert_string_equal(hex, SHA_TWO_BLOCKS);

	unit_write(unit_tmp, "empty", "");
	char *e = path_join(unit_tmp, "empty");
	assert_int_equal(digest_file(e, NULL, 0, hex, &n), 0);
	assert_string_equal(hex, SHA_EMPTY);
	assert_true(n == 0);

	errno = 0;
	assert_int_equal(digest_file("/nonexistent/x", NULL, 0, hex, &n), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(digest_file(unit_tmp, NULL, 0, hex, &n), -1); /* a directory */
	assert_int_equal(errno, EISDIR);
	/* A FIFO in a file's place: refused at once, never a blocked open. */
	char *fifo = path_join(unit_tmp, "fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(digest_file(fifo, NULL, 0, hex, &n), -1);
	assert_int_equal(errno, EINVAL);
	free(fifo);
	free(p);
	free(e);
}

static void
test_range(void **state)
{
	char hex[DIGEST_HEX_SIZE];
	unit_write(unit_tmp, "r", "xxabcyy");
	char *p = path_join(unit_tmp, "r");
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(digest_range(fd, 2, 3, hex), 0);
	assert_string_equal(hex, SHA_ABC);
	assert_int_equal(digest_range(fd, 7, 0, hex), 0);
	assert_string_equal(hex, SHA_EMPTY);
	errno = 0;
	assert_int_equal(digest_range(fd, 5, 10, hex), -1); /* past the end */
	assert_int_equal(errno, EIO);
	close(fd);
	free(p);
}

/*
 * Issue 19: the SCRAM-SHA-256 verifier PostgreSQL stores, for a salt of
 * bytes 0..15; the expected texts were computed by Python's hashlib and
 * hmac from RFC 5802's definitions (PBKDF2-HMAC-SHA256, HMAC "Client Key"
 * and "Server Key", SHA-256 of the client key, base64).
 */
static void
test_scram_verifier(void **state)
{
	(void)state;
	unsigned char salt[16];
	for (int i = 0; i < 16; i++)
		salt[i] = (unsigned char)i;
	char v[DIGEST_SCRAM_SIZE];
	assert_int_equal(digest_scram_verifier("pencil", salt, sizeof(salt), 4096, v), 0);
	assert_string_equal(v, "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y="
	                       ":dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE=");
	assert_int_equal(digest_scram_verifier("it's a \"pass\\word\" $HOME; --", salt, 3, 2, v), 0);
	assert_string_equal(v, "SCRAM-SHA-256$2:AAEC$w6L+Fm91P26P+yxlNi0eBoJUSkPwt7TwxMuuFUKE0ac=:D4aUtrGI5r5iTHuCaH3zMrxwTJOYZfQNvjv6gXpmcmg=");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buffer),
		cmocka_unit_test(test_hmac),
		cmocka_unit_test(test_scram_verifier),
		cmocka_unit_test(test_incremental),
		cmocka_unit_test_setup_teardown(test_file, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_range, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
