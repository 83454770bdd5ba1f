/*
 * pgdata_int.h — pgdata's decision, pure, exposed for tests only.
 */
#ifndef PGSTASH_PGDATA_INT_H
#define PGSTASH_PGDATA_INT_H

#include <stdbool.h>

/* What PGDATA holds, as pgdata_claim found it. */
struct pgdata_facts {
	const char *key;       /* this start's key */
	bool server_running;   /* postmaster.pid names a live process that is not us or our parent */
	const char *marker;    /* the marker's line, NULL when there is none */
	bool has_pg_version;   /* PGDATA/PG_VERSION exists */
	const char *boot_id;   /* the running kernel's boot id, NULL when unknown */
	bool empty;            /* PGDATA has no entries */
};

enum pgdata_verdict {
	PGDATA_IN_USE,            /* a live server: neither reuse nor wipe under it */
	PGDATA_REUSE,             /* the marker says this key: complete and on disk */
	PGDATA_REUSE_UNSYNCED,    /* this key, not yet on disk, written under this kernel */
	PGDATA_REDO_REBOOTED,     /* this key, never on disk, and the host restarted since */
	PGDATA_REDO_UNFINISHED,   /* a building, restoring or unsynced marker, or an empty one */
	PGDATA_REPLACE,           /* another key's cluster */
	PGDATA_TAKE_EMPTY,        /* no marker, no entries */
	PGDATA_FOREIGN_CLUSTER,   /* no marker, a PG_VERSION: a cluster pgstash did not create */
	PGDATA_FOREIGN_FILES,     /* no marker, some entries, no cluster */
};

enum pgdata_verdict pgdata_decide(const struct pgdata_facts *f);

struct cfg;

/* What on_change makes of PGDATA_REPLACE. */
enum pgdata_change {
	PGDATA_CHANGE_REPLACE,  /* wipe, with the warning */
	PGDATA_CHANGE_MIGRATE,  /* keep the cluster and run the steps on it */
	PGDATA_CHANGE_FALLBACK, /* on_change = migrate, but it cannot be: wipe, with a warning saying why */
	PGDATA_CHANGE_REFUSE,   /* leave it untouched, exit 2 */
};

/*
 * The policy's answer for a cluster recorded with manifest `old` (NULL when
 * none is recorded) and this start's `cur`: migrate only when `old` is
 * `cur` (an interrupted migrate) or a prefix of it (fp_prefix_score with
 * cfg's incremental steps).
 */
enum pgdata_change pgdata_on_change(const struct cfg *cfg, const char *old, const char *cur);

/*
 * PGDATA's recorded manifest when its digest is `named` (the marker's key)
 * or `key` (this start's: a migrate that stopped before its marker), else
 * NULL.  Caller frees.
 */
char *pgdata_read_manifest(const char *dir, const char *named, const char *key);

/* A process that exists and is not a zombie waiting to be reaped. */
bool pgdata_process_alive(long pid);

#endif
