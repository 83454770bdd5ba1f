/*
 * cli — what the cache sub-commands print: `ls` (local and --remote, text
 * columns or JSON) and `verify`'s verdicts.  The data comes from store and
 * remote; only the front end calls these.
 *
 * Not for: argument parsing and exit codes (entrypoint/main.c), deciding what
 * is kept or removed (store_prune, remote_prune report their own removals).
 */
#ifndef PGSTASH_CLI_H
#define PGSTASH_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct store;
struct remote_cfg;

/*
 * `pgstash ls`: most recently used first; text columns or (json) an array of
 * objects with raw numbers.  0 or -1 (logged).
 */
int cli_ls(struct store *st, bool json, FILE *out);

/*
 * `pgstash ls --remote`: key, archive size, last modified, state ("ok", "no
 * meta", "no archive", "lease only") and whether a lease is present, most
 * recently uploaded first; or (json) an array of objects with raw numbers.
 * 0 or -1 (logged as an error).
 */
int cli_ls_remote(const struct remote_cfg *rc, bool json, FILE *out);

/* true for what `verify` takes: a key or a prefix of one, 4 to 64 lowercase hex digits. */
bool cli_key_prefix_ok(const char *s);

/*
 * `pgstash verify`: checks each entry's archive (every entry when n == 0;
 * each of keys[] may be a unique prefix of at least 4 characters, an
 * ambiguous one is a bad entry) and prints "ok KEY" or "BAD KEY: reason" on
 * `out`.  Returns the number of bad entries, or -1 on error (logged).  Bad
 * entries are reported, not removed.
 */
int cli_verify(struct store *st, const char *const *keys, size_t n, FILE *out);

#endif
