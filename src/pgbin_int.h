/*
 * pgbin_int — what the unit tests of pgbin reach that the rest of pgstash
 * must not call.
 */
#ifndef PGSTASH_PGBIN_INT_H
#define PGSTASH_PGBIN_INT_H

/* Parses "postgres (PostgreSQL) 15.18 (Debian ...)" → version "15.18" (malloc'ed), major 15; 0 or -1. */
int pgbin_parse_version(const char *text, char **version, int *major);

/*
 * The version `postgres --version` would print, read from the binary's bytes
 * (its version literal); 0, or -1 when it is not there, not unique, or the
 * file may not be read (see pgbin.c).
 */
int pgbin_version_in_binary(const char *path, char **version, int *major);

#endif
