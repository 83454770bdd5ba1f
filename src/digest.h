/*
 * digest — the one SHA-256 (OpenSSL EVP), in lowercase hex: of a buffer, of a
 * file streamed in large reads, of a byte range by pread, and incrementally
 * for writers that hash bytes on their way past (a snapshot, a download).
 *
 * Also HMAC-SHA256, for values hashed under a secret (the manifest's env
 * digests when PGSTASH_KEY_SECRET_FILE is set), and the SCRAM-SHA-256
 * verifier PostgreSQL stores for a password (RFC 5802 and 7677).
 *
 * Not for: what a digest is compared with, or other algorithms (request
 * signing is libcurl's SigV4).
 */
#ifndef PGSTASH_DIGEST_H
#define PGSTASH_DIGEST_H

#include <stddef.h>
#include <stdint.h>

/* Hex digits of a SHA-256, with the NUL: char out[DIGEST_HEX_SIZE]. */
#define DIGEST_HEX_SIZE 65

/* Hex SHA-256 of a buffer.  Aborts when OpenSSL fails (it does not, short of memory). */
void digest_hex(const void *data, size_t len, char out[DIGEST_HEX_SIZE]);

/* Hex HMAC-SHA256 of a buffer under `key` (key_len bytes).  Aborts when OpenSSL fails. */
void digest_hmac_hex(const void *key, size_t key_len, const void *data, size_t len, char out[DIGEST_HEX_SIZE]);

/* The longest text digest_scram_verifier writes, with the NUL. */
#define DIGEST_SCRAM_SIZE 208

/*
 * The verifier PostgreSQL stores for `password` under SCRAM-SHA-256,
 * "SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY" (base64), as its
 * scram_build_secret makes it: PBKDF2-HMAC-SHA256 of the password, as it
 * is, over the salt (salt_len bytes).  Only for a password that SASLprep
 * leaves alone, which PostgreSQL's does for ASCII text.  0, or -1 when
 * OpenSSL refuses (a FIPS provider's PBKDF2 takes no password under 8
 * bytes): the caller then lets the server compute it.
 */
int digest_scram_verifier(const char *password, const unsigned char *salt, size_t salt_len, int iterations,
                          char out[DIGEST_SCRAM_SIZE]);

/*
 * Hex SHA-256 of a whole file, streamed; *bytes optional.  `buf` (buf_len
 * bytes) is the read buffer, so that hashing many files allocates once; NULL:
 * one of 256 KiB is allocated.  0, or -1 with errno set (not logged).
 */
int digest_file(const char *path, void *buf, size_t buf_len, char out[DIGEST_HEX_SIZE], uint64_t *bytes);

/* Hex SHA-256 of `len` bytes of fd from `off`, by pread.  0, or -1 with errno set (EIO: short file). */
int digest_range(int fd, uint64_t off, uint64_t len, char out[DIGEST_HEX_SIZE]);

/* An incremental SHA-256; opaque. */
struct digest;
/* A fresh context; aborts when OpenSSL cannot make one.  Free with digest_free. */
struct digest *digest_new(void);
void digest_update(struct digest *d, const void *data, size_t len);
/* Starts over, as if new. */
void digest_reset(struct digest *d);
/* Writes the hex digest of what was fed ("" if OpenSSL failed); d must be reset before reuse. */
void digest_final(struct digest *d, char out[DIGEST_HEX_SIZE]);
/* NULL is fine. */
void digest_free(struct digest *d);

#endif
