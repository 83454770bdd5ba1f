/*
 * pgdata — see pgdata.h.
 */
#include "pgdata.h"
#include "pgdata_int.h"
#include "config.h"
#include "digest.h"
#include "durable.h"
#include "fingerprint.h"
#include "log.h"
#include "marker.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void
pgdata_init(struct pgdata *pd, const struct cfg *cfg)
{
	memset(pd, 0, sizeof(*pd));
	pd->cfg = cfg;
	pd->dir = cfg->pgdata;
	pd->waldir = cfg->initdb_waldir;
	pd->lock_timeout = cfg->lock_timeout;
	pd->lock = -1;
}

/* A marker of a start that did not finish: "building KEY", "restoring KEY", "unsynced…", or empty. */
static bool
marker_unfinished(const char *marker)
{
	return strncmp(marker, "building ", 9) == 0 || strncmp(marker, "restoring ", 10) == 0 ||
	       strncmp(marker, "unsynced", 8) == 0 || !*marker;
}

enum pgdata_verdict
pgdata_decide(const struct pgdata_facts *f)
{
	if (f->server_running)
		return PGDATA_IN_USE;
	switch (mark_holding(f->marker != NULL, f->has_pg_version, f->empty)) {
	case MARK_HOLDS_NOTHING:
		return PGDATA_TAKE_EMPTY;
	case MARK_HOLDS_FOREIGN_CLUSTER:
		return PGDATA_FOREIGN_CLUSTER;
	case MARK_HOLDS_FOREIGN_FILES:
		return PGDATA_FOREIGN_FILES;
	case MARK_HOLDS_MARKER:
		break;
	}
	char key[MARK_KEY_MAX + 1], boot[MARK_BOOT_ID_LEN + 1];
	bool unsynced = mark_parse_unsynced(f->marker, key, boot);
	const char *named = unsynced ? key : f->marker;
	/*
	 * This key's cluster: reuse it, also after an unclean stop (postgres
	 * recovers it; the stale postmaster.pid is its own business).  One not
	 * yet confirmed on disk only under the kernel that wrote it: the page
	 * cache then still holds every write.
	 */
	if (strcmp(named, f->key) == 0 && f->has_pg_version) {
		if (!unsynced)
			return PGDATA_REUSE;
		if (f->boot_id && strcmp(f->boot_id, boot) == 0)
			return PGDATA_REUSE_UNSYNCED;
		return PGDATA_REDO_REBOOTED;
	}
	if (!unsynced && marker_unfinished(f->marker))
		return PGDATA_REDO_UNFINISHED;
	return PGDATA_REPLACE;
}

bool
pgdata_process_alive(long pid)
{
	/* A killed postmaster is a zombie for a while: not alive. */
	if (kill((pid_t)pid, 0) != 0 && errno != EPERM)
		return false;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	char *stat = read_file(path, NULL);
	if (!stat)
		return true;
	/* "pid (comm) S ...": the state follows the last ')'. */
	const char *close = strrchr(stat, ')');
	bool zombie = close && close[1] == ' ' && close[2] == 'Z';
	free(stat);
	return !zombie;
}

static bool
file_exists(const char *dir, const char *name)
{
	char *p = path_join(dir, name);
	bool ok = access(p, F_OK) == 0;
	free(p);
	return ok;
}

/* PGDATA exists (created when missing), is a directory and is writable.  0, or -1 (logged). */
static int
ensure_dir(const char *dir)
{
	struct stat st;
	if (stat(dir, &st) != 0) {
		if (errno != ENOENT) {
			log_error("could not access PGDATA \"%s\": %s", dir, strerror(errno));
			return -1;
		}
		return mkdir_p(dir, 0700);
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("PGDATA \"%s\" is not a directory", dir);
		return -1;
	}
	if (access(dir, W_OK) != 0) {
		log_error("PGDATA \"%s\" is not writable by this user (uid %ld): %s", dir, (long)getuid(), strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * From here on nobody else changes PGDATA: the background syncer of an
 * earlier start still at work (tens of milliseconds, usually), or a second
 * start on the same PGDATA, finishes first.  0, or -1 (logged).
 */
static int
take_lock(struct pgdata *pd)
{
	enum mark_lock_result lr = mark_lock(pd->dir, pd->lock_timeout, &pd->lock);
	if (lr == MARK_LOCK_TIMEOUT)
		log_error("PGDATA \"%s\" is locked by another pgstash process for more than %ld s", pd->dir,
		          pd->lock_timeout);
	return lr == MARK_LOCKED ? 0 : -1;
}

/*
 * The pid in postmaster.pid when it names a live process other than us, else
 * 0.  In a restarted container the stale pid is often 1: ours now, as
 * postgres does it.
 */
static long
running_postmaster(const char *dir)
{
	char *pidpath = path_join(dir, "postmaster.pid");
	char *pidtext = read_file(pidpath, NULL);
	free(pidpath);
	if (!pidtext)
		return 0;
	long pm = strtol(pidtext, NULL, 10);
	free(pidtext);
	if (pm > 0 && pm != (long)getpid() && pm != (long)getppid() && pgdata_process_alive(pm))
		return pm;
	return 0;
}

/* Says why, for each verdict; `pm` the running postmaster for PGDATA_IN_USE. */
static void
report(const struct pgdata *pd, enum pgdata_verdict v, const struct pgdata_facts *f, long pm)
{
	char key[MARK_KEY_MAX + 1] = "", boot[MARK_BOOT_ID_LEN + 1] = "";
	if (f->marker)
		mark_parse_unsynced(f->marker, key, boot);
	switch (v) {
	case PGDATA_IN_USE:
		log_error("PGDATA \"%s\" is in use by a running server (pid %ld, from postmaster.pid)", pd->dir, pm);
		break;
	case PGDATA_REUSE:
		break;
	case PGDATA_REUSE_UNSYNCED:
		log_info("PGDATA's cluster of %.12s is not confirmed on disk yet, but the host has not restarted since "
		         "it was written: reusing it",
		         key);
		break;
	case PGDATA_REDO_REBOOTED:
		log_info("PGDATA's cluster of %.12s was never confirmed on disk and the host has restarted since (boot id "
		         "%.8s, now %.8s): it may be incomplete, starting it over",
		         key, boot, f->boot_id ? f->boot_id : "unknown");
		break;
	case PGDATA_REDO_UNFINISHED:
		log_info("PGDATA holds an unfinished bootstrap: starting it over");
		break;
	case PGDATA_REPLACE:
		/* With a cluster, changed_cluster says what happens to it, and what changed. */
		if (!f->has_pg_version)
			log_info("PGDATA holds pgstash's marker but no cluster: starting it over");
		break;
	case PGDATA_TAKE_EMPTY:
		break;
	case PGDATA_FOREIGN_CLUSTER:
		mark_log_refusal(pd->dir, MARK_HOLDS_FOREIGN_CLUSTER);
		break;
	case PGDATA_FOREIGN_FILES:
		mark_log_refusal(pd->dir, MARK_HOLDS_FOREIGN_FILES);
		break;
	}
}

/* Acts on the verdict: marks what is ours and wipes what must start over. */
static enum pgdata_claim
act(struct pgdata *pd, enum pgdata_verdict v)
{
	switch (v) {
	case PGDATA_IN_USE:
	case PGDATA_FOREIGN_CLUSTER:
	case PGDATA_FOREIGN_FILES:
		return PGDATA_CLAIM_REFUSED;
	case PGDATA_REUSE:
		pd->durable = true;
		return PGDATA_CLAIM_REUSE;
	case PGDATA_REUSE_UNSYNCED:
		/* Its sync is left to the marker this start writes at its end. */
		return PGDATA_CLAIM_REUSE;
	case PGDATA_REDO_REBOOTED:
	case PGDATA_REDO_UNFINISHED:
	case PGDATA_REPLACE: /* changed_cluster's, by on_change */
		pd->ours = true;
		return empty_dir(pd->dir) == 0 ? PGDATA_CLAIM_EMPTY : PGDATA_CLAIM_REFUSED;
	case PGDATA_TAKE_EMPTY:
		pd->ours = true;
		return PGDATA_CLAIM_EMPTY;
	}
	return PGDATA_CLAIM_REFUSED;
}

enum pgdata_change
pgdata_on_change(const struct cfg *cfg, const char *old, const char *cur)
{
	switch (cfg->on_change) {
	case CFG_ON_CHANGE_REPLACE:
		return PGDATA_CHANGE_REPLACE;
	case CFG_ON_CHANGE_REFUSE:
		return PGDATA_CHANGE_REFUSE;
	case CFG_ON_CHANGE_MIGRATE:
		if (old && (strcmp(old, cur) == 0 || fp_prefix_score(old, cur, cfg) >= 0))
			return PGDATA_CHANGE_MIGRATE;
		return PGDATA_CHANGE_FALLBACK;
	}
	return PGDATA_CHANGE_REFUSE;
}

char *
pgdata_read_manifest(const char *dir, const char *named, const char *key)
{
	char *p = path_join(dir, PGDATA_MANIFEST_FILE);
	size_t len = 0;
	char *text = read_small_file(p, PGDATA_MANIFEST_MAX, &len);
	free(p);
	if (!text)
		return NULL;
	char hex[DIGEST_HEX_SIZE];
	digest_hex(text, len, hex);
	if (strcmp(hex, named) == 0 || strcmp(hex, key) == 0)
		return text;
	free(text);
	return NULL;
}

/*
 * A finished cluster of another key, which has run as a database and may
 * hold data nobody can rebuild: never wiped without a warning that says
 * what changed, and not at all under on_change = refuse.
 */
static enum pgdata_claim
changed_cluster(struct pgdata *pd, const char *named, const char *key, const char *manifest)
{
	char *old = pgdata_read_manifest(pd->dir, named, key);
	struct strbuf what = {0};
	if (!old)
		sb_append(&what, "what changed is unknown: PGDATA records no manifest for it");
	else
		fp_manifest_diff(old, manifest, &what);
	if (what.len == 0)
		sb_append(&what, "nothing in the manifest: a migration in place did not finish");
	enum pgdata_change c = pgdata_on_change(pd->cfg, old, manifest);
	enum pgdata_claim rc = PGDATA_CLAIM_EMPTY;
	bool wipe = false;
	switch (c) {
	case PGDATA_CHANGE_REFUSE:
		log_error("PGDATA \"%s\" holds the cluster of key %.12s, which has run as a database, and this start's key is "
		          "%.12s (%s); on_change = refuse: leaving it untouched (set on_change = replace or migrate, or use "
		          "another PGDATA)",
		          pd->dir, named, key, sb_str(&what));
		rc = PGDATA_CLAIM_CHANGED;
		break;
	case PGDATA_CHANGE_MIGRATE:
		log_info("PGDATA holds the cluster of key %.12s; this start's key %.12s extends it (%s): migrating it in "
		         "place, its data kept (on_change = migrate)",
		         named, key, sb_str(&what));
		rc = PGDATA_CLAIM_MIGRATE;
		break;
	case PGDATA_CHANGE_FALLBACK:
		log_warning("PGDATA holds the cluster of key %.12s, which has run as a database; this start's key %.12s "
		            "does not extend it (%s), so on_change = migrate cannot apply (only steps with incremental = "
		            "yes may gain files, nothing else may change): replacing it, its data is lost",
		            named, key, sb_str(&what));
		wipe = true;
		break;
	case PGDATA_CHANGE_REPLACE:
		log_warning("PGDATA holds the cluster of key %.12s, which has run as a database; this start's key is %.12s "
		            "(%s): replacing it, its data is lost (on_change = replace; migrate or refuse keep it)",
		            named, key, sb_str(&what));
		wipe = true;
		break;
	}
	sb_free(&what);
	free(old);
	return wipe ? act(pd, PGDATA_REPLACE) : rc;
}

int
pgdata_record_manifest(struct pgdata *pd, const char *manifest)
{
	char *p = path_join(pd->dir, PGDATA_MANIFEST_FILE);
	char *now = read_small_file(p, PGDATA_MANIFEST_MAX, NULL);
	int rc = 0;
	if (!now || strcmp(now, manifest) != 0)
		rc = durable_write_file(p, manifest, strlen(manifest), 0600, pd->durable);
	free(now);
	free(p);
	return rc;
}

enum pgdata_claim
pgdata_claim(struct pgdata *pd, const char *key, const char *manifest)
{
	if (ensure_dir(pd->dir) != 0 || take_lock(pd) != 0)
		return PGDATA_CLAIM_REFUSED;
	long pm = running_postmaster(pd->dir);
	char *marker = pm ? NULL : mark_read(pd->dir);
	char now[MARK_BOOT_ID_LEN + 1];
	struct pgdata_facts f = {
		.key = key,
		.server_running = pm != 0,
		.marker = marker,
		.has_pg_version = file_exists(pd->dir, "PG_VERSION"),
		.boot_id = mark_boot_id(now) == 0 ? now : NULL,
		.empty = dir_is_empty(pd->dir),
	};
	enum pgdata_verdict v = pgdata_decide(&f);
	report(pd, v, &f, pm);
	enum pgdata_claim rc;
	/* A marker without a cluster (PG_VERSION gone) holds no data to keep. */
	if (v == PGDATA_REPLACE && f.has_pg_version) {
		char named[MARK_KEY_MAX + 1], boot[MARK_BOOT_ID_LEN + 1];
		if (!mark_parse_unsynced(marker, named, boot))
			snprintf(named, sizeof(named), "%s", marker);
		rc = changed_cluster(pd, named, key, manifest);
	} else
		rc = act(pd, v);
	free(marker);
	return rc;
}

void
pgdata_rollback(struct pgdata *pd)
{
	if (!pd->ours || pd->done)
		return;
	log_info("removing the unfinished cluster from PGDATA \"%s\"", pd->dir);
	empty_dir(pd->dir);
	if (pd->waldir)
		empty_dir(pd->waldir);
}

void
pgdata_release(struct pgdata *pd)
{
	if (pd->lock >= 0)
		close(pd->lock);
	pd->lock = -1;
}
