/*
 * entry — see entry.h.
 */
#include "entry.h"
#include "util.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Manifest characters per meta line; keeps lines well inside inih's 200. */
#define MANIFEST_CHUNK 120

const enum cfg_compression entry_all_compressions[3] = {CFG_COMP_ZSTD, CFG_COMP_GZIP, CFG_COMP_NONE};
static const enum cfg_layer all_layers[] = {CFG_LAYER_SCHEMA, CFG_LAYER_FIXTURES};

/* ------------------------------------------------------------ names */

const char *
entry_compression_name(enum cfg_compression c)
{
	switch (c) {
	case CFG_COMP_ZSTD: return "zstd";
	case CFG_COMP_GZIP: return "gzip";
	case CFG_COMP_NONE: return "none";
	}
	return "none";
}

bool
entry_compression_parse(const char *name, enum cfg_compression *out)
{
	for (size_t i = 0; i < sizeof(entry_all_compressions) / sizeof(entry_all_compressions[0]); i++) {
		if (strcmp(name, entry_compression_name(entry_all_compressions[i])) == 0) {
			*out = entry_all_compressions[i];
			return true;
		}
	}
	return false;
}

const char *
entry_layer_name(enum cfg_layer l)
{
	switch (l) {
	case CFG_LAYER_SCHEMA: return "schema";
	case CFG_LAYER_FIXTURES: return "fixtures";
	}
	return "schema";
}

bool
entry_layer_parse(const char *name, enum cfg_layer *out)
{
	for (size_t i = 0; i < sizeof(all_layers) / sizeof(all_layers[0]); i++) {
		if (strcmp(name, entry_layer_name(all_layers[i])) == 0) {
			*out = all_layers[i];
			return true;
		}
	}
	return false;
}

const char *
entry_suffix(enum cfg_compression c)
{
	switch (c) {
	case CFG_COMP_ZSTD: return ".tar.zst";
	case CFG_COMP_GZIP: return ".tar.gz";
	case CFG_COMP_NONE: return ".tar";
	}
	return ".tar";
}

bool
entry_key_valid(const char *key)
{
	if (!key)
		return false;
	size_t i;
	for (i = 0; key[i]; i++)
		if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
			return false;
	return i == ENTRY_KEY_LEN;
}

char *
entry_meta_path(const char *dir, const char *key)
{
	return xasprintf("%s/%s.meta", dir, key);
}

char *
entry_archive_path(const char *dir, const char *key, enum cfg_compression c)
{
	return xasprintf("%s/%s%s", dir, key, entry_suffix(c));
}

/* Is `name` "<key>" followed by exactly `suffix`?  Then copies the key out. */
static bool
key_then(const char *name, const char *suffix, char key[65])
{
	if (strlen(name) <= ENTRY_KEY_LEN || strcmp(name + ENTRY_KEY_LEN, suffix) != 0)
		return false;
	memcpy(key, name, ENTRY_KEY_LEN);
	key[ENTRY_KEY_LEN] = '\0';
	return entry_key_valid(key);
}

bool
entry_archive_name(const char *name, char key[65], enum cfg_compression *comp)
{
	for (size_t i = 0; i < 3; i++) {
		if (key_then(name, entry_suffix(entry_all_compressions[i]), key)) {
			*comp = entry_all_compressions[i];
			return true;
		}
	}
	return false;
}

bool
entry_meta_name(const char *name, char key[65])
{
	return key_then(name, ".meta", key);
}

void
entry_meta_free(struct entry_meta *m)
{
	if (!m)
		return;
	free(m->manifest);
	free(m->archive);
	memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------ encoding */

static bool
manifest_escape(unsigned char c)
{
	return c < 0x20 || c == 0x7f || c == '%' || c == ';' || c == '#' || c == '\\';
}

/* One manifest line (len bytes) as "manifest = " chunks; `last`: no newline follows it. */
static void
encode_manifest_line(struct strbuf *sb, const char *p, size_t len, bool last)
{
	size_t i = 0;
	do {
		sb_append(sb, "manifest = ");
		size_t width = 0;
		bool first = true;
		while (i < len && width < MANIFEST_CHUNK) {
			unsigned char c = (unsigned char)p[i];
			if (manifest_escape(c) || (c == ' ' && (first || i + 1 == len))) {
				sb_appendf(sb, "%%%02X", c);
				width += 3;
			} else {
				sb_appendc(sb, (char)c);
				width++;
			}
			first = false;
			i++;
		}
		if (i < len || last)
			sb_appendc(sb, '\\');
		sb_appendc(sb, '\n');
	} while (i < len);
}

static void
encode_manifest(struct strbuf *sb, const char *m)
{
	const char *p = m ? m : "";
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		encode_manifest_line(sb, p, len, !nl);
		if (!nl)
			break;
		p = nl + 1;
	}
}

char *
entry_meta_encode(const struct entry_meta *m)
{
	struct strbuf sb = {0};
	sb_append(&sb, "; pgstash cache entry (" STORE_DIR_NAME "); written by pgstash, read with inih\n");
	sb_appendf(&sb, "key = %s\n", m->key);
	sb_appendf(&sb, "parent = %s\n", m->parent);
	sb_appendf(&sb, "layer = %s\n", entry_layer_name(m->layer));
	sb_appendf(&sb, "compression = %s\n", entry_compression_name(m->compression));
	sb_appendf(&sb, "pg_version = %s\n", m->pg_version);
	sb_appendf(&sb, "created = %" PRId64 "\n", m->created);
	sb_appendf(&sb, "last_used = %" PRId64 "\n", m->last_used);
	sb_appendf(&sb, "archive_bytes = %" PRIu64 "\n", m->archive_bytes);
	sb_appendf(&sb, "archive_sha256 = %s\n", m->archive_sha256);
	sb_appendf(&sb, "pgdata_bytes = %" PRIu64 "\n", m->pgdata_bytes);
	sb_appendf(&sb, "build_seconds = %.3f\n", m->build_seconds);
	if (m->built_from[0]) {
		/* Provenance: only prefix builds carry it, so a full build's meta is what it always was. */
		sb_appendf(&sb, "built_from = %s\n", m->built_from);
		sb_appendf(&sb, "full_build_seconds = %.3f\n", m->full_build_seconds);
	}
	if (m->signature[0]) {
		sb_appendf(&sb, "signer = %s\n", m->signer);
		sb_appendf(&sb, "signature = %s\n", m->signature);
	}
	encode_manifest(&sb, m->manifest);
	return sb_take(&sb);
}

double
entry_full_build_seconds(const struct entry_meta *m)
{
	return m->built_from[0] && m->full_build_seconds > 0 ? m->full_build_seconds : m->build_seconds;
}

/* ------------------------------------------------------------ parsing */

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
decode_manifest_chunk(struct strbuf *sb, const char *v)
{
	size_t len = strlen(v);
	bool cont = len > 0 && v[len - 1] == '\\';
	if (cont)
		len--;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '%') {
			if (i + 2 >= len)
				return -1;
			int hi = hexval(v[i + 1]), lo = hexval(v[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			sb_appendc(sb, (char)(hi * 16 + lo));
			i += 2;
		} else if (v[i] == '\\') {
			return -1;
		} else {
			sb_appendc(sb, v[i]);
		}
	}
	if (!cont)
		sb_appendc(sb, '\n');
	return 0;
}

struct meta_parse {
	struct entry_meta *m;
	struct strbuf manifest;
	unsigned seen;
	char why[160];
};

static int
meta_bad(struct meta_parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
meta_bad(struct meta_parse *p, const char *fmt, ...)
{
	if (!p->why[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->why, sizeof(p->why), fmt, ap);
		va_end(ap);
	}
	return 0; /* inih: failure */
}

/* The text fields: key, parent, layer, compression, pg_version.  0: not one of them; 1 ok; -1 bad (why set). */
static int
text_field(struct meta_parse *p, const char *name, const char *value, unsigned *bit)
{
	struct entry_meta *m = p->m;
	if (strcmp(name, "key") == 0) {
		*bit = ENTRY_F_KEY;
		if (!entry_key_valid(value))
			return meta_bad(p, "bad key"), -1;
		memcpy(m->key, value, 65);
	} else if (strcmp(name, "built_from") == 0) {
		*bit = ENTRY_F_BUILT_FROM;
		if (!entry_key_valid(value))
			return meta_bad(p, "bad built_from"), -1;
		memcpy(m->built_from, value, 65);
	} else if (strcmp(name, "parent") == 0) {
		*bit = ENTRY_F_PARENT;
		if (*value && !entry_key_valid(value))
			return meta_bad(p, "bad parent"), -1;
		snprintf(m->parent, sizeof(m->parent), "%s", value);
	} else if (strcmp(name, "layer") == 0) {
		*bit = ENTRY_F_LAYER;
		if (!entry_layer_parse(value, &m->layer))
			return meta_bad(p, "bad layer \"%.40s\"", value), -1;
	} else if (strcmp(name, "compression") == 0) {
		*bit = ENTRY_F_COMP;
		if (!entry_compression_parse(value, &m->compression))
			return meta_bad(p, "bad compression \"%.40s\"", value), -1;
	} else if (strcmp(name, "pg_version") == 0) {
		*bit = ENTRY_F_PGV;
		/* Only what a version looks like: it is written back on every touch. */
		if (!*value || strlen(value) >= sizeof(m->pg_version) ||
		    strspn(value, "0123456789.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-+~") != strlen(value))
			return meta_bad(p, "bad pg_version"), -1;
		memcpy(m->pg_version, value, strlen(value) + 1);
	} else if (strcmp(name, "archive_sha256") == 0) {
		*bit = ENTRY_F_SHA;
		if (!entry_key_valid(value)) /* the same shape: 64 lowercase hex digits */
			return meta_bad(p, "bad archive_sha256"), -1;
		memcpy(m->archive_sha256, value, 65);
	} else if (strcmp(name, "signer") == 0) {
		*bit = ENTRY_F_SIGNER;
		if (!entry_key_valid(value)) /* a SHA-256 fingerprint: the same shape */
			return meta_bad(p, "bad signer"), -1;
		memcpy(m->signer, value, 65);
	} else if (strcmp(name, "signature") == 0) {
		*bit = ENTRY_F_SIGNATURE;
		if (strlen(value) != sizeof(m->signature) - 1 || strspn(value, "0123456789abcdef") != strlen(value))
			return meta_bad(p, "bad signature"), -1;
		memcpy(m->signature, value, sizeof(m->signature));
	} else {
		return 0;
	}
	return 1;
}

/* The number fields; as text_field. */
static int
number_field(struct meta_parse *p, const char *name, const char *value, unsigned *bit)
{
	struct entry_meta *m = p->m;
	uint64_t u;
	if (strcmp(name, "created") == 0 || strcmp(name, "last_used") == 0) {
		bool created = name[0] == 'c';
		*bit = created ? ENTRY_F_CREATED : ENTRY_F_LAST;
		if (parse_u64(value, &u) != 0 || u > (uint64_t)INT64_MAX)
			return meta_bad(p, "bad %s", name), -1;
		*(created ? &m->created : &m->last_used) = (int64_t)u;
	} else if (strcmp(name, "archive_bytes") == 0 || strcmp(name, "pgdata_bytes") == 0) {
		bool arch = name[0] == 'a';
		*bit = arch ? ENTRY_F_ABYTES : ENTRY_F_PBYTES;
		/* pgdata_bytes 0 would leave a restore's expansion unbounded: a cluster is never empty. */
		if (parse_u64(value, &u) != 0 || (!arch && u == 0))
			return meta_bad(p, "bad %s", name), -1;
		*(arch ? &m->archive_bytes : &m->pgdata_bytes) = u;
	} else if (strcmp(name, "build_seconds") == 0 || strcmp(name, "full_build_seconds") == 0) {
		bool full = name[0] == 'f';
		*bit = full ? ENTRY_F_FULL_BUILD : ENTRY_F_BUILD;
		char *end;
		errno = 0;
		double d = strtod(value, &end);
		/* Bounded, so that writing it back stays a short line (a year is plenty). */
		if (!*value || *end || errno || !isfinite(d) || d < 0 || d > 366.0 * 86400)
			return meta_bad(p, "bad %s", name), -1;
		*(full ? &m->full_build_seconds : &m->build_seconds) = d;
	} else {
		return 0;
	}
	return 1;
}

static int
meta_handler(void *user, const char *section, const char *name, const char *value)
{
	struct meta_parse *p = user;
	unsigned bit = 0;

	if (*section)
		return meta_bad(p, "unexpected section [%s]", section);
	if (strcmp(name, "manifest") == 0) {
		if (decode_manifest_chunk(&p->manifest, value) != 0)
			return meta_bad(p, "bad manifest line");
		return 1;
	}
	int r = text_field(p, name, value, &bit);
	if (r == 0)
		r = number_field(p, name, value, &bit);
	if (r < 0)
		return 0;
	if (r == 0)
		return 1; /* a newer pgstash's field: ignored */
	if (p->seen & bit)
		return meta_bad(p, "duplicate %s", name);
	p->seen |= bit;
	return 1;
}

enum entry_parse
entry_meta_parse(const char *text, size_t len, unsigned required, struct entry_meta *m, int *line, char *why,
                 size_t why_len)
{
	struct meta_parse p = {.m = m};
	enum entry_parse rc;

	memset(m, 0, sizeof(*m));
	*line = 0;
	if (memchr(text, '\0', len)) {
		snprintf(why, why_len, "not a meta (binary or too large)");
		return ENTRY_PARSE_BINARY;
	}
	*line = ini_parse_string(text, meta_handler, &p);
	if (*line != 0) {
		snprintf(why, why_len, "%s", p.why[0] ? p.why : "syntax error");
		rc = ENTRY_PARSE_SYNTAX;
	} else if ((p.seen & required) != required) {
		snprintf(why, why_len, "lacks required fields");
		rc = ENTRY_PARSE_MISSING;
	} else {
		m->manifest = sb_take(&p.manifest);
		return ENTRY_PARSE_OK;
	}
	sb_free(&p.manifest);
	entry_meta_free(m);
	return rc;
}
