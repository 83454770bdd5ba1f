/*
 * sign — who made a cache entry: Ed25519 signatures over an entry's
 * identity (OpenSSL EVP), the keys of [trust] (README "Trust").
 *
 * A builder with `signing_key` signs the canonical blob of what it publishes
 * (sign_blob: key, SHA-256 of the manifest, archive SHA-256 and bytes, PGDATA
 * bytes, PG version, layer, parent, compression — not the times, which a
 * touch rewrites).  The meta carries the signature and the signer's
 * fingerprint (entry.h).  A reader with `trusted_keys` uses an entry only when
 * its signature verifies against one of them, before anything is extracted;
 * several trusted keys at once allow rotation.
 *
 * The signature binds the archive through its SHA-256, so the archive's digest
 * must be checked before its content is trusted (the store does).
 *
 * Not for: reading metas or archives (entry.h, store.h); deciding what to do
 * with an untrusted entry (store.h).
 */
#ifndef PGSTASH_SIGN_H
#define PGSTASH_SIGN_H

#include "entry.h"

#include <stdbool.h>
#include <stddef.h>

struct strlist;

/* Version of sign_blob's text; a change of the blob's fields changes it. */
#define SIGN_BLOB_VERSION 1

struct sign_keys {
	void *signing;           /* EVP_PKEY *; NULL: builds do not sign */
	char signing_fp[65];     /* its fingerprint */
	void **trusted;          /* EVP_PKEY *[n_trusted] */
	char (*trusted_fp)[65];  /* their fingerprints */
	size_t n_trusted;        /* 0: signatures are not required */
};

/*
 * Loads the PEM Ed25519 private key `signing_key_file` (NULL: none) and the
 * PEM public keys of `trusted_files` (NULL or empty: none) into *k (zeroed
 * first).  0, or -1 (logged, naming the file; *k freed).
 */
int sign_load(struct sign_keys *k, const char *signing_key_file, const struct strlist *trusted_files);
/* Frees the keys; a zeroed or freed *k is fine. */
void sign_free(struct sign_keys *k);

/* Whether entries must be signed by a trusted key (trusted_keys is set). */
bool sign_enforced(const struct sign_keys *k);

/* The canonical, versioned text that is signed for `m` (malloc'ed). */
char *sign_blob(const struct entry_meta *m);

/*
 * Signs `m` with the signing key: fills m->signer and m->signature.  Without
 * a signing key clears them (an unsigned entry).  0, or -1 (logged).
 */
int sign_entry(const struct sign_keys *k, struct entry_meta *m);

/* How sign_verify judged an entry. */
enum sign_check {
	SIGN_TRUSTED,        /* signed by a trusted key, signature valid */
	SIGN_UNSIGNED,       /* no signature */
	SIGN_UNKNOWN_SIGNER, /* signed by a key that is not trusted */
	SIGN_BAD_SIGNATURE,  /* the signer is trusted but the signature does not match the entry */
};
/* Checks m's signature against the trusted keys (with none, only SIGN_UNSIGNED or SIGN_UNKNOWN_SIGNER). */
enum sign_check sign_verify(const struct sign_keys *k, const struct entry_meta *m);
/* A short phrase for a verdict ("unsigned", "signed by an untrusted key"...); static. */
const char *sign_check_name(enum sign_check c);

/*
 * Writes a new Ed25519 key pair: PATH.key (PEM private key, mode 0600, not
 * overwritten) and PATH.pub (PEM public key).  Prints nothing.  0, or -1
 * (logged).  *fp (optional) gets the public key's fingerprint.
 */
int sign_keygen(const char *path, char fp[65]);

#endif
