/*
 * pgbin — finds the PostgreSQL server binaries and their version: the
 * configured pg_bindir, else the directory of the first pg_config on PATH
 * when postgres is beside it (what `pg_config --bindir` would print), else
 * `pg_config --bindir`, else the directory of `postgres` on PATH.  The major
 * version goes into the cache key.
 */
#ifndef PGSTASH_PGBIN_H
#define PGSTASH_PGBIN_H

struct pgbin {
	char *bindir;   /* directory holding postgres, initdb, pg_ctl */
	char *version;  /* "15.18" as `postgres --version` says */
	int major;      /* 15 */
};

/* Fills *pg; 0, or -1 (logged) when no usable postgres is found. Free with pgbin_free. */
int pgbin_find(const char *configured, struct pgbin *pg);
/* Returns malloc'ed "<bindir>/<prog>". */
char *pgbin_path(const struct pgbin *pg, const char *prog);
/*
 * The postgresql.conf.sample initdb copies into a new cluster, found beside
 * pg->bindir (Debian's and a source build's layouts; else pg_config
 * --sharedir); malloc'ed, or NULL when there is none.
 */
char *pgbin_conf_sample(const struct pgbin *pg);
void pgbin_free(struct pgbin *pg);

#endif
