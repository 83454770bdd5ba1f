/*
 * remote — an S3-compatible bucket behind the local cache volume, shared by a
 * fleet of runners.  Objects mirror the cache layout (README "Cache layout"):
 *
 *   <prefix>/pgstash-v1/<key>.tar.zst   the archive (.tar.gz, .tar: the meta's compression)
 *   <prefix>/pgstash-v1/<key>.meta      the store's meta, byte for byte
 *   <prefix>/pgstash-v1/<key>.lease     "owner = …", "acquired = UNIX", "ttl = S": who is building
 *
 * Writers upload the archive before the meta and pruners delete the meta
 * before the archive, so a meta is never visible without its archive.  Two
 * builders racing on one key may still pair one's meta with the other's
 * archive for a moment: readers compare the archive's SHA-256 with the meta's
 * while downloading, so that costs a local build, never a bad restore.
 *
 * The HTTP and signing side is s3.h's client: every transfer is cut short at
 * once by a terminating signal (sig_received is then set; the functions
 * return their error value and log at info level only).
 *
 * The remote is never essential: every failure is a warning and the caller
 * goes on with the local cache.  Secrets (secret_key) are never logged.
 *
 * Not for: deciding when to download, build or upload (the front end and the
 * pipeline do); publishing into the local cache (store_import does).
 */
#ifndef PGSTASH_REMOTE_H
#define PGSTASH_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Archives larger than this are sent as a multipart upload... */
#define REMOTE_MULTIPART_THRESHOLD (64ull * 1024 * 1024)
/* ...in parts of this size (S3's minimum is 5 MiB, its maximum part count 10000). */
#define REMOTE_PART_SIZE (16ull * 1024 * 1024)
#define REMOTE_MIN_PART_SIZE (5ull * 1024 * 1024)

struct remote_cfg; /* config.h */

/* true when a remote is configured (url set). */
bool remote_enabled(const struct remote_cfg *rc);

/*
 * Downloads entry `key` into two new files in `local_dir_tmp` (the store's
 * .tmp/, so that store_import can rename them into place): first the meta,
 * then the archive it names, its SHA-256 computed while downloading and
 * compared with the meta's archive_sha256 and archive_bytes.  Both temp files
 * are named <key>-<random><suffix> and flocked while written (store_open's
 * sweep leaves locked temp files alone), mode 0644.
 * REMOTE_HIT: *archive_path_out and *meta_path_out set (caller frees the
 * strings and owns the files: store_import them, or unlink them); logs
 * "remote hit".  REMOTE_MISS: no such entry in the remote (logged at info
 * level: "remote miss").  REMOTE_GET_ERROR: logged as a warning (a signal
 * only at info), no file left behind.
 *
 * `accept` (NULL: every meta) judges the meta before the archive is asked
 * for: the archive's size, and so how long its download may take, is the
 * meta's word, which only a signature makes worth anything.  A refused meta
 * is REMOTE_GET_ERROR ("refused, WHY (not downloaded)").
 */
enum remote_get_result {
	REMOTE_GET_ERROR = -1,
	REMOTE_HIT = 0,
	REMOTE_MISS = 1,
};
struct entry_meta; /* entry.h */
typedef bool (*remote_accept_fn)(const struct entry_meta *m, void *ctx, char *why, size_t why_len);
enum remote_get_result remote_get(const struct remote_cfg *rc, const char *key, const char *local_dir_tmp,
                                  remote_accept_fn accept, void *accept_ctx, char **archive_path_out,
                                  char **meta_path_out);

/*
 * Uploads a local entry: the archive first (a multipart upload above the
 * threshold, aborted on failure), then the meta, read from the given files.
 * The meta must name `key` and the archive's size.  Existing objects are
 * overwritten (that is how a damaged remote entry is repaired).
 * 0, or -1 (logged as a warning).
 */
int remote_put(const struct remote_cfg *rc, const char *key, const char *archive_path, const char *meta_path);

/*
 * Fleet-wide single flight for building `key`: creates <key>.lease with
 * If-None-Match: * (S3's conditional write, AWS since 2024, MinIO, moto).  A
 * lease older than its ttl (by the acquired time it holds) is taken over
 * with If-Match on its ETag; a lease already naming `owner` is ours again.
 * Best effort where the server ignores the conditions: every write is read
 * back and only counts when the owner read is ours (two writers a few ms
 * apart may then both build; the result is extra work, not a bad entry).
 * A server answering 501 to the condition gets a read-then-write instead.
 * `owner`: printable, no newline (e.g. "host:pid"); ttl_s > 0.
 * REMOTE_LEASED: acquired; REMOTE_LEASE_HELD: held by another owner (fresh);
 * REMOTE_LEASE_ERROR: error (warning).
 */
enum remote_lease_result {
	REMOTE_LEASE_ERROR = -1,
	REMOTE_LEASED = 0,
	REMOTE_LEASE_HELD = 1,
};
enum remote_lease_result remote_lease(const struct remote_cfg *rc, const char *key, const char *owner, long ttl_s);
/*
 * Removes <key>.lease when it still names `owner` (If-Match on its ETag).
 * Works after a terminating signal too (its requests are not interruptible
 * and take at most ~10 s each): a cancelled builder must not leave the fleet
 * waiting for its ttl.
 * REMOTE_RELEASED: removed or absent; REMOTE_RELEASE_NOT_OURS: another owner
 * holds it (left alone); REMOTE_RELEASE_ERROR: error (warning).
 */
enum remote_release_result {
	REMOTE_RELEASE_ERROR = -1,
	REMOTE_RELEASED = 0,
	REMOTE_RELEASE_NOT_OURS = 1,
};
enum remote_release_result remote_lease_release(const struct remote_cfg *rc, const char *key, const char *owner);

/*
 * Waits for another runner's upload of `key`: polls the meta with HEAD every
 * 2 s for up to timeout_s seconds, logging progress every 30 s.  Gives up
 * early when the builder's lease disappears or expires while the meta is
 * still missing (the builder failed or went away).  Request errors are
 * warned about once and polling goes on.
 * REMOTE_WAIT_APPEARED: the meta appeared (remote_get it);
 * REMOTE_WAIT_GAVE_UP: timeout or builder gone; REMOTE_WAIT_SIGNAL: a signal.
 */
enum remote_wait_result {
	REMOTE_WAIT_SIGNAL = -1,
	REMOTE_WAIT_APPEARED = 0,
	REMOTE_WAIT_GAVE_UP = 1,
};
enum remote_wait_result remote_wait_for(const struct remote_cfg *rc, const char *key, long timeout_s);

/* One entry of the remote, from its objects' names (what `ls --remote` shows). */
struct remote_entry {
	char key[65];
	const char *suffix;     /* of the archive (static), NULL when none */
	uint64_t archive_bytes;
	int64_t archive_mtime;
	bool has_archive, has_meta, has_lease;
	uint64_t meta_bytes;
	int64_t meta_mtime;
	int64_t lease_mtime;
	char *archive;          /* object name of the archive (owned), NULL when none */
};
/*
 * The entries under <prefix>/pgstash-v1/ (ListObjectsV2, all pages), most
 * recently uploaded first.  0 (free *out with remote_entries_free) or -1
 * (logged as an error).
 */
int remote_entries(const struct remote_cfg *rc, struct remote_entry **out, size_t *n);
void remote_entries_free(struct remote_entry *v, size_t n);
/* The entry's last modification: the newest of its meta and archive. */
int64_t remote_entry_mtime(const struct remote_entry *e);
/* "ok", "no meta" (an upload in progress or an orphan), "no archive" or "lease only"; static. */
const char *remote_entry_state(const struct remote_entry *e);

/*
 * `pgstash prune --remote`: removes the oldest complete entries (by the meta's
 * LastModified, i.e. upload time) until at most max_entries remain and their
 * archives total at most max_bytes (0: no limit), deleting each meta before
 * its archive.  Also removes orphans older than an hour (archive or meta
 * alone, leases of absent entries) unless dry_run.  Reports each removal
 * ("removed KEY …" or "would remove KEY …") on `out`.  Returns the number of
 * entries removed (or that would be), -1 on error (logged).
 */
int remote_prune(const struct remote_cfg *rc, uint64_t max_bytes, long max_entries, bool dry_run, FILE *out);

#endif
