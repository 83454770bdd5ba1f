/*
 * server_int — what the unit tests of server reach that the rest of pgstash
 * must not call (libarchive's archive_private.h habit).
 */
#ifndef PGSTASH_SERVER_INT_H
#define PGSTASH_SERVER_INT_H

#include <libpq-fe.h>

struct srv;

/*
 * Connects to `dbname` on the temporary server.  Returns a connection with
 * CONNECTION_OK (caller PQfinish'es) or NULL (logged).
 */
PGconn *srv_connect(const struct srv *s, const char *dbname);

/*
 * Returns the SQL literal E'...' for `s` (malloc'ed), independent of
 * standard_conforming_strings and free of raw control characters.  For
 * single-user mode, where libpq's escaping is not available.
 */
char *srv_quote_literal(const char *s);
/* Returns the quoted identifier "..." for `s` (malloc'ed). */
char *srv_quote_ident(const char *s);

#endif
