/*
 * entry — what a cache entry is, wherever it is kept (the local cache volume,
 * the remote bucket): the key's shape, the names of its files, and the meta
 * (its one text format, encoded and parsed here only).
 *
 *   <dir>/pgstash-v1/<key>.tar.zst   the snapshot; .tar.gz or .tar by the
 *                                    entry's compression (meta says which)
 *   <dir>/pgstash-v1/<key>.meta      INI read with inih, see below
 *
 * Meta format: one "name = value" per line, no section.  The manifest is
 * written as one or more "manifest = " lines per manifest line, in order:
 * bytes below 0x20, 0x7f, '%', ';', '#' and '\\' are %XX-escaped, as is a
 * space that starts a chunk or ends a line (inih strips blanks); lines longer
 * than 120 characters are cut into chunks, each but the last ending in a bare
 * '\\' meaning "continued, no newline".  A final manifest line without a
 * newline also ends in '\\'.  The round trip is exact and the meta stays
 * readable (and within inih's 200-character line limit).  Unknown names are
 * a newer pgstash's fields and ignored.
 *
 * Also the names of the enums a meta holds (compression, layer): one switch
 * each, no default, so that a new value is flagged by the compiler.
 *
 * Not for: locking, publishing, downloading (store.h, remote.h).
 */
#ifndef PGSTASH_ENTRY_H
#define PGSTASH_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * How an archive is compressed, and which layer an entry holds.  The config
 * names them too (compression =, layer =), through the tables below.
 */
enum cfg_compression {
	CFG_COMP_NONE,
	CFG_COMP_GZIP,
	CFG_COMP_ZSTD,
};

enum cfg_layer {
	CFG_LAYER_SCHEMA,
	CFG_LAYER_FIXTURES,
};

/* The versioned directory of entries, locally under cache_dir and remotely under the prefix. */
#define STORE_DIR_NAME "pgstash-v1"
/* Length of a key (hex SHA-256). */
#define ENTRY_KEY_LEN 64

struct entry_meta {
	char key[65];
	char parent[65];                 /* key this layer was built on; "" when none */
	enum cfg_layer layer;
	char *manifest;                  /* owned; the exact manifest text (NULL reads as "") */
	char pg_version[32];             /* "15.18" */
	int64_t created;                 /* unix seconds */
	int64_t last_used;               /* unix seconds */
	uint64_t archive_bytes;
	char archive_sha256[65];
	uint64_t pgdata_bytes;
	double build_seconds;            /* this build's time (on top of built_from when set) */
	char built_from[65];             /* prefix build: the entry it started from; "" for a full build */
	double full_build_seconds;       /* with built_from: about what a full build takes (0: unknown) */
	enum cfg_compression compression;
	char signer[65];                 /* fingerprint of the key that signed it (sign.h); "" when unsigned */
	char signature[129];             /* hex Ed25519 signature of sign_blob(); "" when unsigned */
	char *archive;                   /* owned; full path of the archive, set by the store */
};

/* Frees the owned strings and zeroes *m; NULL is fine. */
void entry_meta_free(struct entry_meta *m);

/* How long a full build of `m` takes: full_build_seconds for a prefix build, else build_seconds. */
double entry_full_build_seconds(const struct entry_meta *m);

/* true for a key: 64 lowercase hex digits (also the shape of an archive_sha256). */
bool entry_key_valid(const char *key);

/* "zstd", "gzip", "none"; static. */
const char *entry_compression_name(enum cfg_compression c);
/* Exact name to value: true and *out set, or false. */
bool entry_compression_parse(const char *name, enum cfg_compression *out);
/* "schema", "fixtures"; static. */
const char *entry_layer_name(enum cfg_layer l);
bool entry_layer_parse(const char *name, enum cfg_layer *out);
/* The file name suffix of an archive: ".tar.zst", ".tar.gz" or ".tar"; static. */
const char *entry_suffix(enum cfg_compression c);
/* Every compression, for loops over the possible archive names. */
extern const enum cfg_compression entry_all_compressions[3];

/* "<dir>/<key>.meta" and "<dir>/<key><suffix>"; malloc'ed. */
char *entry_meta_path(const char *dir, const char *key);
char *entry_archive_path(const char *dir, const char *key, enum cfg_compression c);
/*
 * Is `name` "<key><suffix>" for an archive suffix?  Then sets key and *comp
 * (when the key is valid).
 */
bool entry_archive_name(const char *name, char key[65], enum cfg_compression *comp);
/* Is `name` "<key>.meta"?  Then sets key. */
bool entry_meta_name(const char *name, char key[65]);

/* The meta's fields, as bits of what entry_meta_parse saw. */
enum entry_field {
	ENTRY_F_KEY = 1 << 0,
	ENTRY_F_PARENT = 1 << 1,
	ENTRY_F_LAYER = 1 << 2,
	ENTRY_F_COMP = 1 << 3,
	ENTRY_F_PGV = 1 << 4,
	ENTRY_F_CREATED = 1 << 5,
	ENTRY_F_LAST = 1 << 6,
	ENTRY_F_ABYTES = 1 << 7,
	ENTRY_F_SHA = 1 << 8,
	ENTRY_F_PBYTES = 1 << 9,
	ENTRY_F_BUILD = 1 << 10,
	ENTRY_F_SIGNER = 1 << 11,
	ENTRY_F_SIGNATURE = 1 << 12,
	ENTRY_F_BUILT_FROM = 1 << 13,
	ENTRY_F_FULL_BUILD = 1 << 14,
};
/* What a complete local entry's meta holds (parent and build_seconds are optional). */
#define ENTRY_F_REQUIRED                                                                                     \
	(ENTRY_F_KEY | ENTRY_F_LAYER | ENTRY_F_COMP | ENTRY_F_PGV | ENTRY_F_CREATED | ENTRY_F_LAST |       \
	 ENTRY_F_ABYTES | ENTRY_F_SHA | ENTRY_F_PBYTES)
/* What a download needs: which archive, and how to check it. */
#define ENTRY_F_DOWNLOAD (ENTRY_F_KEY | ENTRY_F_COMP | ENTRY_F_ABYTES | ENTRY_F_SHA)

/* The meta's text (malloc'ed), as described above. */
char *entry_meta_encode(const struct entry_meta *m);

/* How entry_meta_parse ended. */
enum entry_parse {
	ENTRY_PARSE_OK,
	ENTRY_PARSE_BINARY,  /* a NUL inside, or larger than ENTRY_META_MAX_BYTES: not a meta */
	ENTRY_PARSE_SYNTAX,  /* a bad line: *line set, why says what */
	ENTRY_PARSE_MISSING, /* a field of `required` is missing */
};
/* A meta or a lease larger than this is not one of ours. */
#define ENTRY_META_MAX_BYTES (1u * 1024 * 1024)

/*
 * Parses meta text (len bytes) into *m (zeroed first; m->archive stays
 * NULL).  ENTRY_PARSE_OK when every field of `required` (ENTRY_F_* bits) was
 * present; otherwise *m is freed, why (a short reason, no path) filled and
 * for ENTRY_PARSE_SYNTAX *line set.  Does not compare the key with anything.
 */
enum entry_parse entry_meta_parse(const char *text, size_t len, unsigned required, struct entry_meta *m,
                                  int *line, char *why, size_t why_len);

#endif
