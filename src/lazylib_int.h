/*
 * lazylib internals for tests: which soname each library is loaded from
 * (a test points one at a name that does not exist, before the first call).
 */
#ifndef PGSTASH_LAZYLIB_INT_H
#define PGSTASH_LAZYLIB_INT_H

#include <stdbool.h>

struct lazylib {
	const char *soname;
	const char *what; /* what it is for, in the error message */
};
extern struct lazylib lazylib_pq, lazylib_curl;

/* Whether the library is loaded (false before the first call, or when it could not be); one thread only. */
bool lazylib_pq_loaded(void);
bool lazylib_curl_loaded(void);

#endif
