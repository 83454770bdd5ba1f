/*
 * digest — see digest.h.  A thin layer over EVP so that every SHA-256 in
 * pgstash is computed one way and encoded with util's hex_encode.
 */
#include "digest.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdnoreturn.h>
#include <unistd.h>

/* Large enough that read(2) per file costs little next to hashing. */
#define DIGEST_BUF (256 * 1024)

struct digest {
	EVP_MD_CTX *ctx;
};

noreturn static void
fail(void)
{
	fputs("pgstash: error: could not compute SHA-256\n", stderr);
	abort();
}

void
digest_hex(const void *data, size_t len, char out[DIGEST_HEX_SIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		fail();
	hex_encode(md, 32, out);
}

void
digest_hmac_hex(const void *key, size_t key_len, const void *data, size_t len, char out[DIGEST_HEX_SIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	size_t mdlen = 0;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data, len, md, sizeof(md), &mdlen) ||
	    mdlen != 32)
		fail();
	hex_encode(md, 32, out);
	explicit_bzero(md, sizeof(md));
}

int
digest_scram_verifier(const char *password, const unsigned char *salt, size_t salt_len, int iterations,
                      char out[DIGEST_SCRAM_SIZE])
{
	unsigned char salted[32], client[EVP_MAX_MD_SIZE], server[EVP_MAX_MD_SIZE], stored[32];
	/* Base64 of at most 64 bytes is 88 characters; of 32, 44. */
	unsigned char salt64[89], stored64[45], server64[45];
	unsigned int client_len = 0, server_len = 0;
	int rc = -1;
	if (salt_len > 64 ||
	    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations, EVP_sha256(),
	                      sizeof(salted), salted) != 1 ||
	    !HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Client Key", 10, client, &client_len) ||
	    !HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Server Key", 10, server, &server_len) ||
	    client_len != 32 || server_len != 32 || !SHA256(client, 32, stored))
		goto out;
	EVP_EncodeBlock(salt64, salt, (int)salt_len);
	EVP_EncodeBlock(stored64, stored, 32);
	EVP_EncodeBlock(server64, server, 32);
	snprintf(out, DIGEST_SCRAM_SIZE, "SCRAM-SHA-256$%d:%s$%s:%s", iterations, salt64, stored64, server64);
	rc = 0;
out:
	explicit_bzero(stored64, sizeof(stored64));
	explicit_bzero(server64, sizeof(server64));
	explicit_bzero(salted, sizeof(salted));
	explicit_bzero(client, sizeof(client));
	explicit_bzero(server, sizeof(server));
	explicit_bzero(stored, sizeof(stored));
	return rc;
}

struct digest *
digest_new(void)
{
	struct digest *d = xcalloc(1, sizeof(*d));
	d->ctx = EVP_MD_CTX_new();
	if (!d->ctx)
		fail();
	digest_reset(d);
	return d;
}

void
digest_reset(struct digest *d)
{
	if (EVP_DigestInit_ex(d->ctx, EVP_sha256(), NULL) != 1)
		fail();
}

void
digest_update(struct digest *d, const void *data, size_t len)
{
	if (EVP_DigestUpdate(d->ctx, data, len) != 1)
		fail();
}

void
digest_final(struct digest *d, char out[DIGEST_HEX_SIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (EVP_DigestFinal_ex(d->ctx, md, &len) != 1 || len != 32) {
		out[0] = '\0';
		return;
	}
	hex_encode(md, 32, out);
}

void
digest_free(struct digest *d)
{
	if (!d)
		return;
	EVP_MD_CTX_free(d->ctx);
	free(d);
}

int
digest_file(const char *path, void *buf, size_t buf_len, char out[DIGEST_HEX_SIZE], uint64_t *bytes)
{
	void *own = NULL;
	uint64_t total = 0;
	int rc = -1;

	/*
	 * Regular files only, and the open never blocks: what was a file when a
	 * caller looked may be a FIFO by now (a leftover process of a step).
	 */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -1;
	struct stat st;
	int bad = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : !S_ISREG(st.st_mode) ? EINVAL : 0;
	if (bad) {
		close(fd);
		errno = bad;
		return -1;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (!buf) {
		buf = own = xmalloc(DIGEST_BUF);
		buf_len = DIGEST_BUF;
	}
	struct digest *d = digest_new();
	for (;;) {
		ssize_t n = read(fd, buf, buf_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto cleanup;
		if (n == 0)
			break;
		digest_update(d, buf, (size_t)n);
		total += (uint64_t)n;
	}
	digest_final(d, out);
	if (bytes)
		*bytes = total;
	rc = 0;
cleanup:;
	int e = errno;
	digest_free(d);
	free(own);
	close(fd);
	errno = e;
	return rc;
}

int
digest_range(int fd, uint64_t off, uint64_t len, char out[DIGEST_HEX_SIZE])
{
	size_t cap = 1024 * 1024;
	char *buf = xmalloc(cap);
	struct digest *d = digest_new();
	int rc = -1;

	while (len > 0) {
		size_t want = len < cap ? (size_t)len : cap;
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			goto cleanup;
		}
		digest_update(d, buf, (size_t)n);
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	digest_final(d, out);
	rc = 0;
cleanup:;
	int e = errno;
	digest_free(d);
	free(buf);
	errno = e;
	return rc;
}
