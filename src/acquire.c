/*
 * acquire — see acquire.h.
 *
 * Locks: a reader restores under a shared lock on the key, a builder holds
 * it exclusively (so a reader waits for the build to finish); with fixtures
 * the builder takes the full key, then the schema key.
 */
#include "acquire.h"
#include "acquire_int.h"
#include "fingerprint.h"
#include "log.h"
#include "marker.h"
#include "pgbin.h"
#include "remote.h"
#include "sig.h"
#include "snapshot.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How a way to the key's cluster ended. */
enum found {
	FOUND_RESTORED, /* PGDATA holds it */
	FOUND_NOTHING,  /* try the next way */
	FOUND_FAILED,   /* interrupted, or an error that ends the start */
};

static bool cache_writable(const struct acquire *acq);

/*
 * build's steps_starting: the databases the layer's steps do not work on
 * are written into the layer's archive while the steps run (snapshot.h,
 * snap_early).  Without a draft the whole snapshot is written after the
 * steps, as it always was: nothing here is fatal.
 */
static void
begin_early(struct build *bd, const struct strlist *busy, void *arg)
{
	struct acquire *acq = arg;
	const struct cfg *cfg = acq->cfg;
	if (!acq->layer_key || acq->draft.fd >= 0 || !cache_writable(acq))
		return;
	struct strlist oids = {0};
	if (srv_database_oids(&bd->srv, busy->v[0], busy, &oids) == 0 && oids.n > 0)
		store_draft_begin(&acq->store, acq->layer_key, cfg->pgdata, cfg->compression, cfg->compression_level,
		                  &oids, bd->server_since, &acq->draft);
	sl_free(&oids);
}

void
acquire_init(struct acquire *acq, const struct cfg *cfg, const struct pgbin *pg, const struct fp_result *fp)
{
	memset(acq, 0, sizeof(*acq));
	acq->cfg = cfg;
	acq->pg = pg;
	acq->fp = fp;
	acq->lock_fd = -1;
	acq->draft.fd = -1;
	build_init(&acq->build, cfg, pg, fp->key);
	acq->build.steps_starting = begin_early;
	acq->build.steps_starting_arg = acq;
}

/* Reads pending signals first: long library calls (snapshot, prune) do not. */
static bool
interrupted(void)
{
	sig_drain();
	return sig_received != 0;
}

/* A failure, named for what caused it. */
static enum acquire_result
failure(void)
{
	return sig_received ? ACQ_INTERRUPTED : ACQ_FAILED;
}

/* Whether a way to the cluster ended the acquisition (into *rc): restored, or failed.  FOUND_NOTHING goes on. */
static bool
ended(enum found f, enum acquire_result *rc)
{
	switch (f) {
	case FOUND_RESTORED:
		*rc = ACQ_OK;
		return true;
	case FOUND_FAILED:
		*rc = failure();
		return true;
	case FOUND_NOTHING:
		return false;
	}
	return false;
}

static bool
cache_usable(const struct acquire *acq)
{
	return acq->store_open && acq->store.usable;
}

/* May this start write the cache (publish, lock for building, prune, use the remote)?  Not read-only, not off. */
static bool
cache_writable(const struct acquire *acq)
{
	return cache_usable(acq) && !acq->store.read_only;
}

/* ---------- pure decisions ---------- */

size_t
acquire_plan(const struct fp_result *fp, struct layer_plan plan[2])
{
	if (!fp->has_fixtures) {
		plan[0] = (struct layer_plan){.layer = CFG_LAYER_SCHEMA, .key = fp->key, .manifest = fp->manifest, .last = true};
		return 1;
	}
	plan[0] = (struct layer_plan){
		.layer = CFG_LAYER_SCHEMA, .key = fp->schema_key, .manifest = fp->schema_manifest, .try_key = true, .lock = true};
	plan[1] = (struct layer_plan){
		.layer = CFG_LAYER_FIXTURES, .key = fp->key, .parent = fp->schema_key, .manifest = fp->manifest, .last = true};
	return 2;
}

enum layer_start
acquire_layer_start(enum cfg_layer layer, bool prefix_restored)
{
	switch (layer) {
	case CFG_LAYER_SCHEMA:
		return prefix_restored ? LAYER_ON_PREFIX : LAYER_FRESH;
	case CFG_LAYER_FIXTURES:
		return LAYER_ON_SCHEMA;
	}
	return LAYER_FRESH;
}

bool
acquire_wants_prefix(const struct cfg *cfg, enum cfg_layer layer)
{
	if (cfg->full_build)
		return false;
	for (size_t i = 0; i < cfg->n_steps; i++)
		if (cfg->steps[i].layer == layer && cfg->steps[i].incremental)
			return true;
	return false;
}

long
acquire_pick_prefix(const struct entry_meta *all, size_t n, enum cfg_layer layer, const char *manifest,
                    const struct cfg *cfg, size_t *best)
{
	long best_score = -1;
	*best = 0;
	for (size_t i = 0; i < n; i++) {
		if (all[i].layer != layer || !all[i].manifest)
			continue;
		long sc = fp_prefix_score(all[i].manifest, manifest, cfg);
		if (sc > best_score) {
			best_score = sc;
			*best = i;
		}
	}
	return best_score;
}

/* ---------- restore ---------- */

/*
 * Restores `meta` into PGDATA (marked as pgstash's first).  0 restored; -1
 * failed (PGDATA left empty, a bad entry removed by the store).  `what`
 * names the restore in the summary line ("cache hit", "schema layer"...).
 */
static int
restore(struct acquire *acq, struct entry_meta *meta, const char *what)
{
	const struct cfg *cfg = acq->cfg;
	struct snap_stats st;
	char *text = xasprintf("restoring %s", acq->fp->key);
	int rc = mark_write(cfg->pgdata, text, false);
	free(text);
	if (rc != 0)
		return -1;
	char *sample = pgbin_conf_sample(acq->pg);
	rc = store_restore(&acq->store, meta, cfg->pgdata, (uid_t)-1, (gid_t)-1, acq->pg->major, sample, &st);
	free(sample);
	if (rc != 0) {
		empty_dir(cfg->pgdata);
		return -1;
	}
	char size[32];
	/* The time saved is against a full build: an entry built on a prefix took less than that. */
	if (meta->built_from[0])
		log_info("%s %.12s: restored %s in %.2f s (a full build takes about %.1f s; this entry was built on "
		         "%.12s in %.1f s)",
		         what, meta->key, log_bytes(size, st.archive_bytes), st.seconds, entry_full_build_seconds(meta),
		         meta->built_from, meta->build_seconds);
	else
		log_info("%s %.12s: restored %s in %.2f s (building it took %.1f s)", what, meta->key,
		         log_bytes(size, st.archive_bytes), st.seconds, meta->build_seconds);
	return 0;
}

/*
 * Restores the entry `key` when the cache has it (`waited`: another pgstash
 * built it while we waited for the lock, which is said first).  `manifest`:
 * what the entry's manifest must be (NULL for a prefix, whose manifest is
 * its own); an entry with another is refused, not restored.
 */
static enum found
restore_cached(struct acquire *acq, const char *key, const char *manifest, const char *what, bool waited)
{
	struct entry_meta meta;
	if (store_lookup(&acq->store, key, &meta) != 1)
		return FOUND_NOTHING;
	if (manifest && strcmp(meta.manifest ? meta.manifest : "", manifest) != 0) {
		log_warning("cache entry %.12s… is refused, its manifest is not this start's: removing it and building "
		            "instead",
		            key);
		entry_meta_free(&meta);
		store_remove(&acq->store, key);
		return FOUND_NOTHING;
	}
	if (manifest && acq->cfg->full_build && meta.built_from[0]) {
		log_info("cache entry %.12s was built on %.12s and full_build is set: building it in full instead", key,
		         meta.built_from);
		entry_meta_free(&meta);
		store_remove(&acq->store, key);
		return FOUND_NOTHING;
	}
	if (waited)
		log_info("another pgstash built %.12s while we waited", key);
	int r = restore(acq, &meta, what);
	entry_meta_free(&meta);
	if (r == 0)
		return FOUND_RESTORED;
	return sig_received ? FOUND_FAILED : FOUND_NOTHING;
}

/* Looks the key up and restores it under a shared lock. */
static enum found
try_hit(struct acquire *acq)
{
	const char *key = acq->fp->key;
	struct entry_meta meta;
	int found = store_lookup(&acq->store, key, &meta);
	if (found != 1)
		return FOUND_NOTHING;
	int fd = -1;
	enum store_lock_result lr = store_lock(&acq->store, key, false, acq->cfg->lock_timeout, &fd);
	enum found rc = FOUND_NOTHING;
	if (lr == STORE_LOCKED) {
		/* The entry may have been pruned while we waited. */
		rc = restore_cached(acq, key, acq->fp->manifest, "cache hit", false);
		store_unlock(fd);
	} else if (lr == STORE_LOCK_BUSY) {
		log_warning("gave up waiting for the lock on %.12s after %ld s: building without it", key,
		            acq->cfg->lock_timeout);
		acq->lock_gave_up = true;
	}
	entry_meta_free(&meta);
	if (sig_received)
		return FOUND_FAILED;
	return rc;
}

/*
 * Takes the exclusive build lock on the key; whoever held it may have
 * published the key meanwhile: then restores that.
 */
static enum found
wait_for_builder(struct acquire *acq)
{
	const struct cfg *cfg = acq->cfg;
	const char *key = acq->fp->key;
	enum store_lock_result lr = store_lock(&acq->store, key, true, cfg->lock_timeout, &acq->lock_fd);
	if (lr == STORE_LOCK_BUSY)
		log_warning("gave up waiting for another builder of %.12s after %ld s: building too", key,
		            cfg->lock_timeout);
	else if (lr == STORE_LOCK_ERROR || sig_received)
		return FOUND_FAILED;
	if (lr != STORE_LOCKED)
		return FOUND_NOTHING;
	return restore_cached(acq, key, acq->fp->manifest, "cache hit", true);
}

/*
 * Leaves out (manifest freed: acquire_pick_prefix skips it) every candidate
 * of `layer` that may not be used: a prefix is restored as surely as a hit.
 */
static void
drop_unacceptable(struct acquire *acq, struct entry_meta *all, size_t n, enum cfg_layer layer)
{
	char why[256];
	for (size_t i = 0; i < n; i++) {
		if (all[i].layer != layer || !all[i].manifest || store_acceptable(&acq->store, &all[i], why, sizeof(why)))
			continue;
		log_warning("cache entry %.12s… is not a prefix candidate, %s", all[i].key, why);
		free(all[i].manifest);
		all[i].manifest = NULL;
	}
}

/*
 * Prefix reuse: restores the cached entry of `layer` that `manifest` extends
 * the most, when a step of the layer has incremental = yes.  Returns true
 * when PGDATA now holds it (its key in `from`).  One pass over the entries.
 */
static bool
restore_prefix(struct acquire *acq, enum cfg_layer layer, const char *manifest, char *from, size_t from_cap,
               char **from_manifest, double *from_full)
{
	const struct cfg *cfg = acq->cfg;
	if (!acquire_wants_prefix(cfg, layer) || !cache_usable(acq) || acq->fresh)
		return false;
	struct entry_meta *all = NULL;
	size_t n = 0;
	if (store_list(&acq->store, &all, &n) != 0)
		return false;
	drop_unacceptable(acq, all, n, layer);
	size_t best;
	long best_score = acquire_pick_prefix(all, n, layer, manifest, cfg, &best);
	bool ok = false;
	if (best_score >= 0) {
		int fd = -1;
		char key[65];
		snprintf(key, sizeof(key), "%s", all[best].key);
		if (store_lock(&acq->store, key, false, cfg->lock_timeout, &fd) == STORE_LOCKED) {
			ok = restore_cached(acq, key, NULL, "prefix", false) == FOUND_RESTORED;
			store_unlock(fd);
		}
		if (ok) {
			snprintf(from, from_cap, "%s", key);
			*from_manifest = xstrdup(all[best].manifest);
			*from_full = entry_full_build_seconds(&all[best]);
			log_info("starting from cached entry %.12s (%ld migration files already applied)", key, best_score);
		}
	}
	store_list_free(all, n);
	return ok;
}

/* ---------- publish ---------- */

/* Uploads the published entry `key` (archive at `archive`) to the remote.  Not fatal. */
static void
upload(struct acquire *acq, const char *key, const char *archive)
{
	char *mp = store_meta_file(&acq->store, key);
	double tu = log_now();
	if (remote_put(&acq->cfg->remote, key, archive, mp) == 0)
		log_info("uploaded %.12s to the remote in %.2f s", key, log_now() - tu);
	free(mp);
}

/* snap_late's ready: the snapshot's last files are final once the build's WAL reset has ended. */
static int
wal_reset_done(void *build)
{
	return build_wait_wal_reset(build);
}

/*
 * Publishes PGDATA (cleanly shut down, its WAL reset still running) as the
 * plan's layer: the snapshot writes what the reset does not touch beside
 * it, and the rest once it has ended.  Not fatal: a cache that cannot take
 * it only costs the caching.  Returns the archive size, 0 when not cached.
 */
static uint64_t
publish(struct acquire *acq, const struct layer_plan *p, double seconds, const char *built_from, double full_seconds)
{
	const struct cfg *cfg = acq->cfg;
	if (!cache_writable(acq))
		return 0;
	struct entry_meta meta;
	memset(&meta, 0, sizeof(meta));
	snprintf(meta.key, sizeof(meta.key), "%s", p->key);
	if (p->parent)
		snprintf(meta.parent, sizeof(meta.parent), "%s", p->parent);
	meta.layer = p->layer;
	meta.manifest = xstrdup(p->manifest);
	snprintf(meta.pg_version, sizeof(meta.pg_version), "%s", acq->pg->version);
	meta.build_seconds = seconds;
	if (*built_from) {
		snprintf(meta.built_from, sizeof(meta.built_from), "%s", built_from);
		meta.full_build_seconds = full_seconds;
	}
	struct snap_stats st;
	double t = log_now();
	uint64_t bytes = 0;
	struct snap_late late = {srv_reset_wal_paths, wal_reset_done, &acq->build};
	/* 1: another pgstash's entry was kept and ours dropped: not cached, nothing of ours to upload. */
	if (store_publish(&acq->store, cfg->pgdata, &meta, cfg->compression, cfg->compression_level, &late, &acq->draft,
	                  &st) == 0) {
		char a[32], b[32];
		log_info("snapshot %.12s written in %.2f s (%s from %s of PGDATA)", p->key, log_now() - t,
		         log_bytes(a, st.archive_bytes), log_bytes(b, st.pgdata_bytes));
		bytes = st.archive_bytes ? st.archive_bytes : 1;
		/* Before the lease goes: waiters on other runners give up when it disappears. */
		if (remote_enabled(&cfg->remote) && strcmp(p->key, acq->fp->key) == 0 && meta.archive)
			upload(acq, p->key, meta.archive);
	}
	entry_meta_free(&meta);
	return bytes;
}

/* ---------- a layer ---------- */

/* The schema layer below fixtures, when cached: restored as is. */
static enum found
restore_layer_key(struct acquire *acq, const struct layer_plan *p)
{
	if (!p->try_key || !cache_usable(acq) || acq->fresh)
		return FOUND_NOTHING;
	return restore_cached(acq, p->key, p->manifest, "schema layer", false);
}

static void
log_layer_built(const struct layer_plan *p, const char *from, double seconds, uint64_t bytes)
{
	char a[32];
	const char *what = p->layer == CFG_LAYER_FIXTURES ? "fixtures loaded" : "migrated";
	if (*from)
		log_info("cache miss %.12s: started from %.12s, %s in %.1f s, %s%s", p->key, from, what, seconds,
		         bytes ? "cached " : "not cached", bytes ? log_bytes(a, bytes) : "");
	else
		log_info("cache miss %.12s: %s in %.1f s, %s%s", p->key, what, seconds, bytes ? "cached " : "not cached",
		         bytes ? log_bytes(a, bytes) : "");
}

/* Stops and removes the layer's draft archive when publish did not take it. */
static void
drop_draft(struct acquire *acq)
{
	acq->layer_key = NULL;
	if (acq->draft.fd >= 0 || acq->draft.early)
		store_draft_drop(&acq->store, &acq->draft);
}

/*
 * Brings PGDATA to the plan's layer: restores its key when asked, else
 * starts from a prefix entry or from scratch (schema) / from the schema
 * layer already in PGDATA (fixtures), runs the layer's steps and publishes.
 */
static enum acquire_result
obtain_layer(struct acquire *acq, const struct layer_plan *p)
{
	enum acquire_result rc;
	if (ended(restore_layer_key(acq, p), &rc))
		return rc;
	char from[65] = "";
	char *from_manifest = NULL;
	double from_full = 0;
	bool prefix = p->layer == CFG_LAYER_SCHEMA &&
	              restore_prefix(acq, p->layer, p->manifest, from, sizeof(from), &from_manifest, &from_full);
	if (sig_received)
		return failure();
	enum layer_start start = acquire_layer_start(p->layer, prefix);
	if (start == LAYER_FRESH)
		log_info("cache miss %.12s: building (initdb + %s steps)", p->key, entry_layer_name(p->layer));
	else if (start == LAYER_ON_PREFIX)
		log_info("cache miss %.12s: running the %s steps on %.12s", p->key, entry_layer_name(p->layer), from);
	else
		log_info("cache miss %.12s: running the %s steps on the schema layer", p->key, entry_layer_name(p->layer));
	double seconds = 0;
	/* Steps whose inputs the prefix already has are skipped (build.h). */
	acq->build.base_manifest = from_manifest;
	acq->build.base_key = from;
	acq->build.manifest = p->manifest;
	acq->layer_key = p->key;
	enum build_result br = build_layer(&acq->build, p->layer, start == LAYER_FRESH, p->last, &seconds);
	acq->build.base_manifest = acq->build.base_key = acq->build.manifest = NULL;
	free(from_manifest);
	if (br != BUILD_OK) {
		drop_draft(acq);
		if (br == BUILD_FAILED)
			return failure();
		return sig_received ? ACQ_INTERRUPTED : ACQ_STEP_FAILED;
	}
	/* A prefix build's full time is its base's plus this one's: what a build from scratch would take. */
	uint64_t bytes = publish(acq, p, seconds, from, *from ? from_full + seconds : seconds);
	drop_draft(acq);
	if (build_wait_wal_reset(&acq->build) != 0 || interrupted())
		return failure();
	log_layer_built(p, from, seconds, bytes);
	return ACQ_OK;
}

/* Every layer of the plan, bottom first, each under its lock when asked. */
static enum acquire_result
obtain_layers(struct acquire *acq)
{
	struct layer_plan plan[2];
	size_t n = acquire_plan(acq->fp, plan);
	enum acquire_result rc = ACQ_OK;
	for (size_t i = 0; i < n && rc == ACQ_OK; i++) {
		int fd = -1;
		if (plan[i].lock && cache_writable(acq) &&
		    store_lock(&acq->store, plan[i].key, true, acq->cfg->lock_timeout, &fd) == STORE_LOCK_ERROR)
			return failure();
		rc = obtain_layer(acq, &plan[i]);
		if (fd >= 0)
			store_unlock(fd);
	}
	return rc;
}

/* ---------- the remote ---------- */

/* Downloads the key into the local cache and restores it. */
static enum found
remote_hit(struct acquire *acq, char *archive, char *meta_file)
{
	const char *key = acq->fp->key;
	enum found f = FOUND_NOTHING;
	if (store_import(&acq->store, key, archive, meta_file) == 0)
		f = restore_cached(acq, key, acq->fp->manifest, "remote hit", false);
	free(archive);
	free(meta_file);
	if (sig_received)
		return FOUND_FAILED;
	return f;
}

/* remote_get's judge of a meta before its archive is downloaded: the store's, of any entry. */
static bool
remote_meta_acceptable(const struct entry_meta *m, void *ctx, char *why, size_t why_len)
{
	const struct acquire *acq = ctx;
	return store_acceptable(&acq->store, m, why, why_len);
}

/*
 * Read-only (cache_mode): the remote's entry is downloaded into a private
 * temp directory and restored from there, checked as a local one; nothing
 * is written to the cache or the bucket (read-only bucket credentials do).
 */
static enum found
remote_read_only(struct acquire *acq)
{
	const char *key = acq->fp->key;
	char dir[] = "/tmp/pgstash-download-XXXXXX";
	if (!mkdtemp(dir)) {
		log_warning("could not create a download directory: %s", strerror(errno));
		return FOUND_NOTHING;
	}
	char *a = NULL, *m = NULL, *text = NULL;
	enum found f = FOUND_NOTHING;
	struct entry_meta meta = {0};
	if (remote_get(&acq->cfg->remote, key, dir, remote_meta_acceptable, acq, &a, &m) != REMOTE_HIT)
		goto cleanup;
	size_t len = 0;
	int line;
	char why[200];
	text = read_file(m, &len);
	if (!text || entry_meta_parse(text, len, ENTRY_F_REQUIRED, &meta, &line, why, sizeof(why)) != ENTRY_PARSE_OK ||
	    strcmp(meta.key, key) != 0 || strcmp(meta.manifest ? meta.manifest : "", acq->fp->manifest) != 0) {
		log_warning("remote entry %.12s… is refused: its meta is not valid for this start", key);
		goto cleanup;
	}
	meta.archive = xstrdup(a);
	if (restore(acq, &meta, "remote hit") == 0)
		f = FOUND_RESTORED;
cleanup:
	entry_meta_free(&meta);
	free(text);
	if (a)
		unlink(a);
	if (m)
		unlink(m);
	free(a);
	free(m);
	rmdir(dir);
	return sig_received ? FOUND_FAILED : f;
}

/*
 * The shared remote, on a local miss: download the entry (digest checked
 * while downloading), import it into the local cache and restore it; or take
 * the fleet lease and build; or wait for another runner's build.
 */
static enum found
try_remote(struct acquire *acq)
{
	const struct remote_cfg *rc = &acq->cfg->remote;
	const char *key = acq->fp->key;
	long timeout = acq->cfg->lock_timeout;
	if (!remote_enabled(rc) || !cache_usable(acq))
		return FOUND_NOTHING;
	/* Leases and imports are writes (of the bucket, of the cache). */
	if (acq->store.read_only)
		return remote_read_only(acq);
	if (!acq->lease_owner) {
		char host[256] = "";
		gethostname(host, sizeof(host) - 1);
		acq->lease_owner = xasprintf("%s:%ld", *host ? host : "pgstash", (long)getpid());
	}
	for (int round = 0; round < 2; round++) {
		char *a = NULL, *m = NULL;
		enum remote_get_result g =
		    remote_get(rc, key, store_download_dir(&acq->store), remote_meta_acceptable, acq, &a, &m);
		if (g == REMOTE_HIT)
			return remote_hit(acq, a, m);
		if (sig_received)
			return FOUND_FAILED;
		if (g == REMOTE_GET_ERROR || round == 1)
			return FOUND_NOTHING;
		enum remote_lease_result l = remote_lease(rc, key, acq->lease_owner, timeout);
		if (l == REMOTE_LEASED) {
			acq->leased = true;
			return FOUND_NOTHING;
		}
		if (l == REMOTE_LEASE_ERROR)
			return sig_received ? FOUND_FAILED : FOUND_NOTHING;
		log_info("another runner is building %.12s: waiting for it on the remote", key);
		enum remote_wait_result w = remote_wait_for(rc, key, timeout);
		if (w == REMOTE_WAIT_SIGNAL)
			return FOUND_FAILED;
		if (w == REMOTE_WAIT_GAVE_UP) {
			acq->leased = remote_lease(rc, key, acq->lease_owner, timeout) == REMOTE_LEASED;
			return FOUND_NOTHING;
		}
	}
	return FOUND_NOTHING;
}

/* ---------- hit, miss ---------- */

/* Every layer built (or restored) and published, then the cache pruned. */
static enum acquire_result
build_and_prune(struct acquire *acq)
{
	enum acquire_result rc = obtain_layers(acq);
	if (rc == ACQ_OK && cache_writable(acq))
		store_prune(&acq->store, acq->cfg->max_bytes, acq->cfg->max_entries, false, acq->fp->key, NULL);
	return rc;
}

static enum acquire_result
miss(struct acquire *acq)
{
	/* After a hit's lock timed out, one lock_timeout is all a start waits. */
	enum found f = cache_writable(acq) && !acq->lock_gave_up ? wait_for_builder(acq) : FOUND_NOTHING;
	if (f == FOUND_NOTHING)
		f = try_remote(acq);
	acq->restored_hit = f == FOUND_RESTORED;
	enum acquire_result rc;
	if (ended(f, &rc))
		return rc;
	return build_and_prune(acq);
}

enum acquire_result
acquire_run(struct acquire *acq)
{
	const struct trust_cfg *t = &acq->cfg->trust;
	if (sign_load(&acq->sign, t->signing_key, &t->trusted_keys) != 0)
		return ACQ_FAILED;
	switch (acq->cfg->cache_mode) {
	case CFG_CACHE_READ_WRITE:
		store_open(&acq->store, acq->cfg->cache_dir, acq->cfg->cache_gid);
		break;
	case CFG_CACHE_READ_ONLY:
		store_open_read_only(&acq->store, acq->cfg->cache_dir);
		break;
	case CFG_CACHE_OFF:
		log_info("cache_mode = off: building without the cache");
		break;
	}
	acq->store_open = true;
	acq->store.sign = &acq->sign;
	enum acquire_result rc;
	enum found f = acq->store.usable ? try_hit(acq) : FOUND_NOTHING;
	acq->restored_hit = f == FOUND_RESTORED;
	if (ended(f, &rc))
		return rc;
	return miss(acq);
}

enum acquire_result
acquire_rebuild(struct acquire *acq)
{
	const char *key = acq->fp->key;
	acq->restored_hit = false;
	acq->fresh = true;
	if (empty_dir(acq->cfg->pgdata) != 0)
		return ACQ_FAILED;
	/* As prune: an entry is removed under its exclusive lock only, never under a reader. */
	if (cache_writable(acq) && acq->lock_fd < 0) {
		enum store_lock_result lr = store_lock(&acq->store, key, true, acq->cfg->lock_timeout, &acq->lock_fd);
		if (lr == STORE_LOCK_ERROR)
			return failure();
		if (lr == STORE_LOCK_BUSY)
			log_warning("gave up waiting for the lock on %.12s after %ld s: the bad entry stays for now", key,
			            acq->cfg->lock_timeout);
	}
	if (acq->lock_fd >= 0 || acq->store.read_only)
		store_remove(&acq->store, key);
	if (interrupted())
		return failure();
	return build_and_prune(acq);
}

void
acquire_abort(struct acquire *acq)
{
	drop_draft(acq);
	build_abort(&acq->build);
}

void
acquire_finish(struct acquire *acq)
{
	if (acq->lock_fd >= 0) {
		store_unlock(acq->lock_fd);
		acq->lock_fd = -1;
	}
	if (acq->store_open) {
		store_close(&acq->store);
		acq->store_open = false;
	}
}

void
acquire_free(struct acquire *acq)
{
	if (acq->leased) {
		remote_lease_release(&acq->cfg->remote, acq->fp->key, acq->lease_owner);
		acq->leased = false;
	}
	free(acq->lease_owner);
	acq->lease_owner = NULL;
	acquire_finish(acq);
	build_free(&acq->build);
	sign_free(&acq->sign);
}
