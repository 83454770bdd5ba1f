#include "lazylib.h"
#include "lazylib_int.h"

#include "log.h"

/* The variadic two are defined here: curl.h must not wrap them in its type-checking macros. */
#define CURL_DISABLE_TYPECHECK
/*
 * curl_url_get's handle is `CURLU *` in curl 7 and `const CURLU *` in
 * curl 8 (the same ABI): its declaration is kept out of sight, and the
 * definition below takes the const one, which either caller may pass.
 */
#define curl_url_get lazylib_curl_url_get_declared
#include <curl/curl.h>
#undef curl_url_get
#include <libpq-fe.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>

/*
 * Each library's functions, as (return type, name, parameters, arguments,
 * the answer when the library is not there); void ones as (name,
 * parameters, arguments).  One list makes the table of pointers, the
 * lookups and the forwarding functions.
 */
#define PQ_FUNCTIONS(F, V)                                                                                          \
	V(PQclear, (PGresult * res), (res))                                                                         \
	F(PGconn *, PQconnectdbParams, (const char *const *keywords, const char *const *values, int expand_dbname), \
	  (keywords, values, expand_dbname), NULL)                                                                  \
	F(char *, PQencryptPasswordConn, (PGconn * conn, const char *passwd, const char *user, const char *algorithm), \
	  (conn, passwd, user, algorithm), NULL)                                                                    \
	F(char *, PQerrorMessage, (const PGconn *conn), (conn), (char *)PQ_MISSING)                                 \
	F(char *, PQescapeIdentifier, (PGconn * conn, const char *str, size_t len), (conn, str, len), NULL)         \
	F(char *, PQescapeLiteral, (PGconn * conn, const char *str, size_t len), (conn, str, len), NULL)            \
	F(PGresult *, PQexec, (PGconn * conn, const char *query), (conn, query), NULL)                              \
	F(PGresult *, PQexecParams,                                                                                 \
	  (PGconn * conn, const char *command, int nParams, const Oid *paramTypes, const char *const *paramValues,   \
	   const int *paramLengths, const int *paramFormats, int resultFormat),                                      \
	  (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat), NULL)        \
	V(PQfinish, (PGconn * conn), (conn))                                                                        \
	V(PQfreemem, (void *ptr), (ptr))                                                                            \
	F(int, PQgetisnull, (const PGresult *res, int tup_num, int field_num), (res, tup_num, field_num), 1)        \
	F(char *, PQgetvalue, (const PGresult *res, int tup_num, int field_num), (res, tup_num, field_num),         \
	  (char *)"")                                                                                               \
	F(int, PQnfields, (const PGresult *res), (res), 0)                                                          \
	F(int, PQntuples, (const PGresult *res), (res), 0)                                                          \
	F(PGPing, PQpingParams, (const char *const *keywords, const char *const *values, int expand_dbname),        \
	  (keywords, values, expand_dbname), PQPING_NO_ATTEMPT)                                                     \
	F(ExecStatusType, PQresultStatus, (const PGresult *res), (res), PGRES_FATAL_ERROR)                          \
	F(ConnStatusType, PQstatus, (const PGconn *conn), (conn), CONNECTION_BAD)

#define CURL_FUNCTIONS(F, V)                                                                                        \
	V(curl_easy_cleanup, (CURL * curl), (curl))                                                                 \
	F(char *, curl_easy_escape, (CURL * handle, const char *string, int length), (handle, string, length), NULL) \
	F(CURL *, curl_easy_init, (void), (), NULL)                                                                 \
	F(CURLcode, curl_easy_perform, (CURL * curl), (curl), CURLE_FAILED_INIT)                                    \
	F(const char *, curl_easy_strerror, (CURLcode code), (code), CURL_MISSING)                                  \
	V(curl_free, (void *p), (p))                                                                                \
	V(curl_global_cleanup, (void), ())                                                                          \
	F(CURLcode, curl_global_init, (long flags), (flags), CURLE_FAILED_INIT)                                     \
	F(CURLMcode, curl_multi_add_handle, (CURLM * multi, CURL * easy), (multi, easy), CURLM_BAD_HANDLE)          \
	F(CURLMcode, curl_multi_cleanup, (CURLM * multi), (multi), CURLM_BAD_HANDLE)                                \
	F(CURLMsg *, curl_multi_info_read, (CURLM * multi, int *msgs_in_queue), (multi, msgs_in_queue), NULL)      \
	F(CURLM *, curl_multi_init, (void), (), NULL)                                                               \
	F(CURLMcode, curl_multi_perform, (CURLM * multi, int *running), (multi, running), CURLM_BAD_HANDLE)         \
	F(CURLMcode, curl_multi_poll,                                                                               \
	  (CURLM * multi, struct curl_waitfd extra_fds[], unsigned int extra_nfds, int timeout_ms, int *ret),       \
	  (multi, extra_fds, extra_nfds, timeout_ms, ret), CURLM_BAD_HANDLE)                                        \
	F(CURLMcode, curl_multi_remove_handle, (CURLM * multi, CURL * easy), (multi, easy), CURLM_BAD_HANDLE)       \
	F(const char *, curl_multi_strerror, (CURLMcode code), (code), CURL_MISSING)                                \
	F(struct curl_slist *, curl_slist_append, (struct curl_slist * list, const char *data), (list, data), NULL) \
	V(curl_slist_free_all, (struct curl_slist * list), (list))                                                  \
	F(CURLU *, curl_url, (void), (), NULL)                                                                      \
	V(curl_url_cleanup, (CURLU * handle), (handle))                                                             \
	F(CURLUcode, curl_url_get, (const CURLU *handle, CURLUPart what, char **part, unsigned int flags),          \
	  (handle, what, part, flags), CURLUE_BAD_HANDLE)                                                           \
	F(CURLUcode, curl_url_set, (CURLU * handle, CURLUPart what, const char *part, unsigned int flags),          \
	  (handle, what, part, flags), CURLUE_BAD_HANDLE)

/* The two that take one more argument whose type the option or info says: forwarded by hand, below. */
#define CURL_VARIADIC(F)                                                 \
	F(CURLcode, curl_easy_setopt, (CURL * curl, CURLoption option, ...)) \
	F(CURLcode, curl_easy_getinfo, (CURL * curl, CURLINFO info, ...))

#define PQ_MISSING "libpq (" LAZYLIB_PQ_SONAME ") could not be loaded\n"
#define CURL_MISSING "libcurl (" LAZYLIB_CURL_SONAME ") could not be loaded"

/* The pointers, named as the functions. */
#define POINTER(ret, name, params, args, missing) ret(*name) params;
#define VOID_POINTER(name, params, args) void(*name) params;
#define VARIADIC_POINTER(ret, name, params) ret(*name) params;
static struct {
	PQ_FUNCTIONS(POINTER, VOID_POINTER)
} pq_fn;
static struct {
	CURL_FUNCTIONS(POINTER, VOID_POINTER)
	CURL_VARIADIC(VARIADIC_POINTER)
} curl_fn;

static pthread_once_t pq_once = PTHREAD_ONCE_INIT, curl_once = PTHREAD_ONCE_INIT;
static bool pq_ok, curl_ok;

struct lazylib lazylib_pq = {LAZYLIB_PQ_SONAME, "libpq, for the temporary server and the healthcheck"};
struct lazylib lazylib_curl = {LAZYLIB_CURL_SONAME, "libcurl, for the S3 cache and the Docker Engine"};

#define LAZYLIB_MAX_FUNCTIONS 32

/*
 * Opens lib and fills `table` (a struct of function pointers, in the order
 * of `names`, n of them) from it; true when every one resolved (else logged
 * once, and the library stays unused).  RTLD_NOW: every symbol is bound
 * here, as -z now binds the rest of the program.
 */
static bool
load(const struct lazylib *lib, const char *const *names, size_t n, void *table)
{
	void *ptrs[LAZYLIB_MAX_FUNCTIONS];
	void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		log_error("could not load %s: %s", lib->what, dlerror());
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		ptrs[i] = dlsym(h, names[i]);
		if (!ptrs[i]) {
			log_error("could not load %s: %s has no function %s", lib->what, lib->soname, names[i]);
			dlclose(h);
			return false;
		}
	}
	/* dlsym's void * into function pointers: POSIX's sanctioned copy. */
	memcpy(table, ptrs, n * sizeof(ptrs[0]));
	log_debug("loaded %s", lib->soname);
	return true;
}

#define NAME(ret, name, params, args, missing) #name,
#define VOID_NAME(name, params, args) #name,
#define VARIADIC_NAME(ret, name, params) #name,
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
/* A table holds one pointer per name, and load's buffer room for all of them. */
#define TABLE_FITS(table, names) (sizeof(table) == COUNT(names) * sizeof(void *) && COUNT(names) <= LAZYLIB_MAX_FUNCTIONS)

static void
load_pq(void)
{
	static const char *const names[] = {PQ_FUNCTIONS(NAME, VOID_NAME)};
	_Static_assert(TABLE_FITS(pq_fn, names), "one pointer per function");
	pq_ok = load(&lazylib_pq, names, COUNT(names), &pq_fn);
}

static void
load_curl(void)
{
	static const char *const names[] = {CURL_FUNCTIONS(NAME, VOID_NAME) CURL_VARIADIC(VARIADIC_NAME)};
	_Static_assert(TABLE_FITS(curl_fn, names), "one pointer per function");
	curl_ok = load(&lazylib_curl, names, COUNT(names), &curl_fn);
}

bool
lazylib_pq_loaded(void)
{
	return pq_ok;
}

bool
lazylib_curl_loaded(void)
{
	return curl_ok;
}

/* The forwarding functions of library `lib` (pq or curl); curl's variadic two are written out below. */
#define FORWARD(lib, ret, name, params, args, missing)           \
	ret name params                                          \
	{                                                        \
		pthread_once(&lib##_once, load_##lib);           \
		return lib##_ok ? lib##_fn.name args : (missing); \
	}
#define VOID_FORWARD(lib, name, params, args)          \
	void name params                               \
	{                                              \
		pthread_once(&lib##_once, load_##lib); \
		if (lib##_ok)                          \
			lib##_fn.name args;            \
	}
#define PQ_FORWARD(...) FORWARD(pq, __VA_ARGS__)
#define PQ_VOID_FORWARD(...) VOID_FORWARD(pq, __VA_ARGS__)
#define CURL_FORWARD(...) FORWARD(curl, __VA_ARGS__)
#define CURL_VOID_FORWARD(...) VOID_FORWARD(curl, __VA_ARGS__)
PQ_FUNCTIONS(PQ_FORWARD, PQ_VOID_FORWARD)
CURL_FUNCTIONS(CURL_FORWARD, CURL_VOID_FORWARD)

/*
 * The option's number says the type of its argument (curl.h's
 * CURLOPTTYPE_* ranges, as curl's own setopt reads it): a long, an object
 * or string pointer, a function pointer, a curl_off_t, a blob pointer.
 */
CURLcode
curl_easy_setopt(CURL *handle, CURLoption option, ...)
{
	pthread_once(&curl_once, load_curl);
	if (!curl_ok)
		return CURLE_FAILED_INIT;
	va_list ap;
	va_start(ap, option);
	CURLcode r;
	if (option < CURLOPTTYPE_OBJECTPOINT)
		r = curl_fn.curl_easy_setopt(handle, option, va_arg(ap, long));
	else if (option < CURLOPTTYPE_FUNCTIONPOINT)
		r = curl_fn.curl_easy_setopt(handle, option, va_arg(ap, void *));
	else if (option < CURLOPTTYPE_OFF_T)
		r = curl_fn.curl_easy_setopt(handle, option, va_arg(ap, void (*)(void)));
	else if (option < CURLOPTTYPE_BLOB)
		r = curl_fn.curl_easy_setopt(handle, option, va_arg(ap, curl_off_t));
	else
		r = curl_fn.curl_easy_setopt(handle, option, va_arg(ap, void *));
	va_end(ap);
	return r;
}

/* Every CURLINFO_* takes a pointer to where the answer goes. */
CURLcode
curl_easy_getinfo(CURL *handle, CURLINFO info, ...)
{
	pthread_once(&curl_once, load_curl);
	if (!curl_ok)
		return CURLE_FAILED_INIT;
	va_list ap;
	va_start(ap, info);
	CURLcode r = curl_fn.curl_easy_getinfo(handle, info, va_arg(ap, void *));
	va_end(ap);
	return r;
}
