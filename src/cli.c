/*
 * cli — see cli.h.
 */
#include "cli.h"
#include "entry.h"
#include "log.h"
#include "remote.h"
#include "store.h"
#include "util.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Prints arr (NULL: could not be built) as indented JSON and a newline, and frees it.  0 or -1 (not logged). */
static int
print_array(cJSON *arr, FILE *out)
{
	char *text = arr ? cJSON_Print(arr) : NULL;
	cJSON_Delete(arr);
	if (!text)
		return -1;
	fputs(text, out);
	fputc('\n', out);
	cJSON_free(text);
	return 0;
}

static int
print_json(const struct entry_meta *v, size_t n, FILE *out)
{
	cJSON *arr = cJSON_CreateArray();
	if (!arr)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct entry_meta *m = &v[i];
		cJSON *o = cJSON_CreateObject();
		if (!o) {
			cJSON_Delete(arr);
			return -1;
		}
		cJSON_AddItemToArray(arr, o);
		cJSON_AddStringToObject(o, "key", m->key);
		if (m->parent[0])
			cJSON_AddStringToObject(o, "parent", m->parent);
		else
			cJSON_AddNullToObject(o, "parent");
		cJSON_AddStringToObject(o, "layer", entry_layer_name(m->layer));
		cJSON_AddNumberToObject(o, "created", (double)m->created);
		cJSON_AddNumberToObject(o, "last_used", (double)m->last_used);
		cJSON_AddNumberToObject(o, "archive_bytes", (double)m->archive_bytes);
		cJSON_AddNumberToObject(o, "pgdata_bytes", (double)m->pgdata_bytes);
		cJSON_AddStringToObject(o, "pg_version", m->pg_version);
		cJSON_AddNumberToObject(o, "build_seconds", m->build_seconds);
		if (m->built_from[0])
			cJSON_AddStringToObject(o, "built_from", m->built_from);
		else
			cJSON_AddNullToObject(o, "built_from");
		cJSON_AddNumberToObject(o, "full_build_seconds", entry_full_build_seconds(m));
		cJSON_AddStringToObject(o, "compression", entry_compression_name(m->compression));
		cJSON_AddStringToObject(o, "archive_sha256", m->archive_sha256);
		cJSON_AddStringToObject(o, "archive", m->archive);
		if (m->signature[0])
			cJSON_AddStringToObject(o, "signer", m->signer);
		else
			cJSON_AddNullToObject(o, "signer");
	}
	return print_array(arr, out);
}

int
cli_ls(struct store *st, bool json, FILE *out)
{
	struct entry_meta *v;
	size_t n;
	if (!st->usable) {
		log_error("cache is not usable");
		return -1;
	}
	if (store_list(st, &v, &n) != 0)
		return -1;
	if (n > 1)
		qsort(v, n, sizeof(*v), store_cmp_recent_first);
	int rc = 0;
	if (json) {
		rc = print_json(v, n, out);
		if (rc != 0)
			log_error("could not build the JSON listing");
	} else {
		fprintf(out, "%-64s  %-8s  %-12s  %-20s  %-20s  %10s  %-8s  %9s  %-16s  %s\n", "KEY", "LAYER", "PARENT",
		        "CREATED", "LAST USED", "SIZE", "PG", "BUILD", "SIGNER", "BUILT FROM");
		for (size_t i = 0; i < n; i++) {
			char c[32], u[32], b[32], parent[13], signer[17], from[64];
			snprintf(parent, sizeof(parent), "%.12s", v[i].parent[0] ? v[i].parent : "-");
			/* The signer it claims; `verify` checks the claim against trusted_keys. */
			snprintf(signer, sizeof(signer), "%.16s", v[i].signature[0] ? v[i].signer : "unsigned");
			/* A prefix build: its base, and what a full build takes next to this build's BUILD time. */
			if (v[i].built_from[0])
				snprintf(from, sizeof(from), "%.12s (full build %.1f s)", v[i].built_from,
				         entry_full_build_seconds(&v[i]));
			else
				snprintf(from, sizeof(from), "-");
			fprintf(out, "%-64s  %-8s  %-12s  %-20s  %-20s  %10s  %-8s  %7.1f s  %-16s  %s\n", v[i].key,
			        entry_layer_name(v[i].layer), parent, iso_time(c, v[i].created), iso_time(u, v[i].last_used),
			        log_bytes(b, v[i].archive_bytes), v[i].pg_version, v[i].build_seconds, signer, from);
		}
	}
	store_list_free(v, n);
	if (fflush(out) != 0)
		rc = -1;
	return rc;
}

static int
print_remote_json(const struct remote_entry *v, size_t n, FILE *out)
{
	cJSON *arr = cJSON_CreateArray();
	for (size_t i = 0; arr && i < n; i++) {
		cJSON *o = cJSON_CreateObject();
		if (!o)
			break;
		cJSON_AddItemToArray(arr, o);
		cJSON_AddStringToObject(o, "key", v[i].key);
		cJSON_AddStringToObject(o, "state", remote_entry_state(&v[i]));
		cJSON_AddBoolToObject(o, "complete", v[i].has_meta && v[i].has_archive);
		cJSON_AddNumberToObject(o, "archive_bytes", (double)v[i].archive_bytes);
		cJSON_AddNumberToObject(o, "meta_bytes", (double)v[i].meta_bytes);
		cJSON_AddNumberToObject(o, "last_modified", (double)remote_entry_mtime(&v[i]));
		cJSON_AddBoolToObject(o, "leased", v[i].has_lease);
		if (v[i].archive)
			cJSON_AddStringToObject(o, "archive", v[i].archive);
		else
			cJSON_AddNullToObject(o, "archive");
	}
	if (print_array(arr, out) != 0) {
		log_error("could not build the JSON listing");
		return -1;
	}
	return 0;
}

int
cli_ls_remote(const struct remote_cfg *rc, bool json, FILE *out)
{
	struct remote_entry *v;
	size_t n;
	int ret = 0;

	if (remote_entries(rc, &v, &n) != 0)
		return -1;
	if (json) {
		ret = print_remote_json(v, n, out);
	} else {
		fprintf(out, "%-64s  %10s  %-20s  %-10s  %s\n", "KEY", "SIZE", "LAST MODIFIED", "STATE", "LEASE");
		for (size_t i = 0; i < n; i++) {
			char b[32], t[32];
			fprintf(out, "%-64s  %10s  %-20s  %-10s  %s\n", v[i].key, log_bytes(b, v[i].archive_bytes),
			        iso_time(t, remote_entry_mtime(&v[i])), remote_entry_state(&v[i]), v[i].has_lease ? "yes" : "-");
		}
	}
	if (ret == 0 && fflush(out) != 0)
		ret = -1;
	remote_entries_free(v, n);
	return ret;
}

bool
cli_key_prefix_ok(const char *s)
{
	size_t len = strlen(s);
	return len >= 4 && len <= ENTRY_KEY_LEN && strspn(s, "0123456789abcdef") == len;
}

/* Checks one entry and prints the verdict; 0 ok, 1 bad. */
static int
verify_one(struct store *st, const char *key, FILE *out)
{
	char why[512] = "";
	int bad = store_check(st, key, why, sizeof(why)) != 0;
	if (bad)
		fprintf(out, "BAD %s: %s\n", key, why);
	else
		fprintf(out, "ok %s\n", key);
	fflush(out);
	return bad;
}

/* The one key of `all` that starts with `want`; NULL with *matches 0 or > 1 otherwise. */
static const char *
resolve_prefix(const struct strlist *all, const char *want, size_t *matches)
{
	size_t wl = strlen(want);
	const char *found = NULL;
	*matches = 0;
	for (size_t j = 0; j < all->n && wl >= 4; j++) {
		if (strncmp(all->v[j], want, wl) == 0) {
			found = all->v[j];
			(*matches)++;
		}
	}
	return *matches == 1 ? found : NULL;
}

int
cli_verify(struct store *st, const char *const *keys, size_t n, FILE *out)
{
	struct strlist all = {0};
	int nbad = 0;

	if (!st->usable) {
		log_error("cache is not usable");
		return -1;
	}
	if (store_keys(st, &all) != 0)
		return -1;
	for (size_t i = 0; n == 0 && i < all.n; i++)
		nbad += verify_one(st, all.v[i], out);
	for (size_t i = 0; i < n; i++) {
		size_t matches;
		const char *found = resolve_prefix(&all, keys[i], &matches);
		if (found) {
			nbad += verify_one(st, found, out);
		} else {
			fprintf(out, "BAD %s: %s\n", keys[i], matches > 1 ? "ambiguous key prefix" : "no such entry");
			nbad++;
		}
	}
	fflush(out);
	sl_free(&all);
	return nbad;
}
