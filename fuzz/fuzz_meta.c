/*
 * fuzz_meta — libFuzzer harness for the cache entry's .meta reader.
 *
 * The meta parser is entry_meta_parse (entry.c), the one the store and the
 * remote share.  It is reached the way pgstash reaches it: a store in the scratch directory
 * holds <KEY>.meta, whose bytes are the input, and a tiny archive under each
 * compression's name; then store_lookup.  A bad meta makes lookup remove the
 * entry (meta and archives), so the archives are put back for every input.
 *
 * When lookup accepts the meta, the harness goes on as the front end would:
 * `ls` (text and JSON), `verify`, and store_touch, which re-encodes the meta
 * (entry_meta_encode).  It then checks the documented round trip: the re-read entry
 * must equal the first one field by field, the manifest byte for byte.  A
 * difference aborts, so libFuzzer saves the input.
 *
 * Not for: restoring (fuzz_archive covers snap_restore), locking, prune.
 */
#include "fuzz_common.h"
#include "cli.h"
#include "store.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The key every input is stored under; the seeds in corpus/meta/ use it. */
#define FUZZ_KEY "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed"
/*
 * The archive's bytes: only their size (13, for lookup) and SHA-256 (for
 * verify) matter to the meta paths; the seeds in corpus/meta/ name both:
 * 60a1a6053583cc371927e4507278965bec2298d94f42f480bc7c04d12f8c1a6c.
 */
static const char archive_bytes[] = "pgstash fuzz\n";

static struct store st;
static char *meta_file;
static char *archives[3];
static FILE *devnull;

static void
setup_once(void)
{
	const char *scratch = fuzz_setup();
	char *cache = path_join(scratch, "cache");
	if (store_open(&st, cache, (gid_t)-1) != 0)
		fuzz_die("could not open a store in \"%s\"", cache);
	free(cache);
	meta_file = xasprintf("%s/%s.meta", st.dir, FUZZ_KEY);
	const enum cfg_compression comps[3] = {CFG_COMP_ZSTD, CFG_COMP_GZIP, CFG_COMP_NONE};
	for (size_t i = 0; i < 3; i++)
		archives[i] = xasprintf("%s/%s%s", st.dir, FUZZ_KEY, entry_suffix(comps[i]));
	/* Nothing may reach stdout: libFuzzer reports on stderr. */
	devnull = fopen("/dev/null", "we");
	if (!devnull || dup2(fileno(devnull), STDOUT_FILENO) < 0)
		fuzz_die("could not open /dev/null");
}

static void
same_or_die(const struct entry_meta *a, const struct entry_meta *b)
{
	const char *field = NULL;
	if (strcmp(a->key, b->key) != 0)
		field = "key";
	else if (strcmp(a->parent, b->parent) != 0)
		field = "parent";
	else if (a->layer != b->layer)
		field = "layer";
	else if (strcmp(a->manifest ? a->manifest : "", b->manifest ? b->manifest : "") != 0)
		field = "manifest";
	else if (strcmp(a->pg_version, b->pg_version) != 0)
		field = "pg_version";
	else if (a->created != b->created)
		field = "created";
	else if (a->archive_bytes != b->archive_bytes)
		field = "archive_bytes";
	else if (strcmp(a->archive_sha256, b->archive_sha256) != 0)
		field = "archive_sha256";
	else if (a->pgdata_bytes != b->pgdata_bytes)
		field = "pgdata_bytes";
	else if (a->compression != b->compression)
		field = "compression";
	/* Written with "%.3f": equal to within half a thousandth (and a double's rounding). */
	else if (fabs(a->build_seconds - b->build_seconds) > 0.0005001 + 1e-15 * fabs(a->build_seconds))
		field = "build_seconds";
	if (field)
		fuzz_die("meta round trip changed %s", field);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!meta_file)
		setup_once();
	for (size_t i = 0; i < 3; i++)
		if (access(archives[i], F_OK) != 0)
			fuzz_write(archives[i], (const uint8_t *)archive_bytes, sizeof(archive_bytes) - 1);
	fuzz_write(meta_file, data, size);

	struct entry_meta first = {0}, again = {0};
	int r = store_lookup(&st, FUZZ_KEY, &first);
	if (r == 1) {
		cli_ls(&st, false, devnull);
		cli_ls(&st, true, devnull);
		const char *keys[] = {FUZZ_KEY};
		cli_verify(&st, keys, 1, devnull);
		/* touch rewrites the meta with meta_text: it must read back the same. */
		if (store_touch(&st, FUZZ_KEY) != 0)
			fuzz_die("store_touch failed on an entry store_lookup accepted");
		r = store_lookup(&st, FUZZ_KEY, &again);
		if (r != 1)
			fuzz_die("the meta written by store_touch does not read back (lookup returned %d)", r);
		same_or_die(&first, &again);
	}
	entry_meta_free(&first);
	entry_meta_free(&again);
	return 0;
}
