/*
 * pgbin_int — what the unit tests of pgbin reach that the rest of pgstash
 * must not call.
 */
#ifndef PGSTASH_PGBIN_INT_H
#define PGSTASH_PGBIN_INT_H

/* Parses "postgres (PostgreSQL) 15.18 (Debian ...)" → version "15.18" (malloc'ed), major 15; 0 or -1. */
int pgbin_parse_version(const char *text, char **version, int *major);

#endif
