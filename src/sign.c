/*
 * sign — see sign.h.
 */
#include "sign.h"
#include "digest.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIG_BYTES 64
#define RAW_KEY_BYTES 32

/* OpenSSL's last error as text, for messages. */
static const char *
ssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	if (!e)
		return "not an Ed25519 key";
	ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* The fingerprint of a key: hex SHA-256 of its raw public key.  0 or -1. */
static int
fingerprint(EVP_PKEY *pk, char fp[65])
{
	unsigned char raw[RAW_KEY_BYTES];
	size_t len = sizeof(raw);
	if (EVP_PKEY_get_raw_public_key(pk, raw, &len) != 1 || len != sizeof(raw))
		return -1;
	digest_hex(raw, len, fp);
	return 0;
}

/* Reads a PEM key from `path` (private or public); NULL (logged) when it is not an Ed25519 key. */
static EVP_PKEY *
read_key(const char *path, bool private, const char *what)
{
	char err[256];
	FILE *f = fopen(path, "re");
	if (!f) {
		log_error("%s \"%s\": %s", what, path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *pk = private ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (pk && EVP_PKEY_get_id(pk) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(pk);
		pk = NULL;
		ERR_clear_error();
	}
	if (!pk)
		log_error("%s \"%s\" is not a PEM Ed25519 %s key: %s", what, path, private ? "private" : "public",
		          ssl_error(err, sizeof(err)));
	return pk;
}

int
sign_load(struct sign_keys *k, const char *signing_key_file, const struct strlist *trusted_files)
{
	memset(k, 0, sizeof(*k));
	if (signing_key_file && *signing_key_file) {
		k->signing = read_key(signing_key_file, true, "signing_key");
		if (!k->signing || fingerprint(k->signing, k->signing_fp) != 0)
			goto fail;
	}
	size_t n = trusted_files ? trusted_files->n : 0;
	if (n) {
		k->trusted = xcalloc(n, sizeof(*k->trusted));
		k->trusted_fp = xcalloc(n, sizeof(*k->trusted_fp));
	}
	for (size_t i = 0; i < n; i++) {
		EVP_PKEY *pk = read_key(trusted_files->v[i], false, "trusted_keys");
		if (!pk)
			goto fail;
		k->trusted[k->n_trusted] = pk;
		if (fingerprint(pk, k->trusted_fp[k->n_trusted++]) != 0)
			goto fail;
	}
	return 0;
fail:
	sign_free(k);
	return -1;
}

void
sign_free(struct sign_keys *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->signing);
	for (size_t i = 0; i < k->n_trusted; i++)
		EVP_PKEY_free(k->trusted[i]);
	free(k->trusted);
	free(k->trusted_fp);
	memset(k, 0, sizeof(*k));
}

bool
sign_enforced(const struct sign_keys *k)
{
	return k && k->n_trusted > 0;
}

char *
sign_blob(const struct entry_meta *m)
{
	char manifest_sha[65];
	const char *man = m->manifest ? m->manifest : "";
	digest_hex(man, strlen(man), manifest_sha);
	/* One field a line, each named: no field can run into the next. */
	return xasprintf("pgstash-entry-signature %d\n"
	                 "key %s\n"
	                 "manifest-sha256 %s\n"
	                 "archive-sha256 %s\n"
	                 "archive-bytes %" PRIu64 "\n"
	                 "pgdata-bytes %" PRIu64 "\n"
	                 "pg-version %s\n"
	                 "layer %s\n"
	                 "parent %s\n"
	                 "compression %s\n",
	                 SIGN_BLOB_VERSION, m->key, manifest_sha, m->archive_sha256, m->archive_bytes,
	                 m->pgdata_bytes, m->pg_version, entry_layer_name(m->layer), m->parent[0] ? m->parent : "-",
	                 entry_compression_name(m->compression));
}

int
sign_entry(const struct sign_keys *k, struct entry_meta *m)
{
	m->signer[0] = m->signature[0] = '\0';
	if (!k || !k->signing)
		return 0;
	char *blob = sign_blob(m);
	unsigned char sig[SIG_BYTES];
	size_t len = sizeof(sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->signing) == 1 &&
	         EVP_DigestSign(ctx, sig, &len, (const unsigned char *)blob, strlen(blob)) == 1 && len == SIG_BYTES;
	EVP_MD_CTX_free(ctx);
	free(blob);
	if (!ok) {
		char err[256];
		log_error("could not sign cache entry %.12s: %s", m->key, ssl_error(err, sizeof(err)));
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		snprintf(m->signature + 2 * i, 3, "%02x", sig[i]);
	memcpy(m->signer, k->signing_fp, sizeof(m->signer));
	return 0;
}

static int
unhex(const char *s, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return 0;
}

enum sign_check
sign_verify(const struct sign_keys *k, const struct entry_meta *m)
{
	if (!m->signature[0] || !m->signer[0])
		return SIGN_UNSIGNED;
	EVP_PKEY *pk = NULL;
	for (size_t i = 0; k && i < k->n_trusted && !pk; i++)
		if (strcmp(k->trusted_fp[i], m->signer) == 0)
			pk = k->trusted[i];
	if (!pk)
		return SIGN_UNKNOWN_SIGNER;
	unsigned char sig[SIG_BYTES];
	if (strlen(m->signature) != 2 * SIG_BYTES || unhex(m->signature, sig, sizeof(sig)) != 0)
		return SIGN_BAD_SIGNATURE;
	char *blob = sign_blob(m);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
	         EVP_DigestVerify(ctx, sig, sizeof(sig), (const unsigned char *)blob, strlen(blob)) == 1;
	EVP_MD_CTX_free(ctx);
	free(blob);
	ERR_clear_error();
	return ok ? SIGN_TRUSTED : SIGN_BAD_SIGNATURE;
}

const char *
sign_check_name(enum sign_check c)
{
	switch (c) {
	case SIGN_TRUSTED: return "signed by a trusted key";
	case SIGN_UNSIGNED: return "unsigned";
	case SIGN_UNKNOWN_SIGNER: return "signed by a key that is not in trusted_keys";
	case SIGN_BAD_SIGNATURE: return "its signature does not match the entry (tampered)";
	}
	return "unsigned";
}

/* Writes `pk` as PEM (private or public) to a new file `path` with `mode`.  0 or -1 (logged). */
static int
write_pem(const char *path, EVP_PKEY *pk, bool private, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		log_error("could not create \"%s\": %s", path, strerror(errno));
		return -1;
	}
	FILE *f = fdopen(fd, "w");
	if (!f) {
		log_error("could not open \"%s\": %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	int ok = private ? PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) : PEM_write_PUBKEY(f, pk);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	if (fclose(f) != 0)
		ok = 0;
	if (ok != 1) {
		log_error("could not write \"%s\"", path);
		unlink(path);
		return -1;
	}
	return 0;
}

int
sign_keygen(const char *path, char fp[65])
{
	char err[256];
	int rc = -1;
	char *priv = xasprintf("%s.key", path);
	char *pub = xasprintf("%s.pub", path);
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!pk) {
		log_error("could not generate an Ed25519 key: %s", ssl_error(err, sizeof(err)));
		goto cleanup;
	}
	if (write_pem(priv, pk, true, 0600) != 0)
		goto cleanup;
	if (write_pem(pub, pk, false, 0644) != 0) {
		unlink(priv);
		goto cleanup;
	}
	char local[65];
	if (fingerprint(pk, fp ? fp : local) != 0)
		goto cleanup;
	rc = 0;
cleanup:
	EVP_PKEY_free(pk);
	free(priv);
	free(pub);
	return rc;
}
