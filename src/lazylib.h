/*
 * lazylib — libpq and libcurl, loaded by the first call that needs them
 * rather than by the dynamic linker at every exec.
 *
 * The two libraries and what they bring with them (Kerberos, LDAP, SASL,
 * GnuTLS, nghttp2, ssh2, ...) are 27 of the 39 shared objects pgstash
 * would otherwise map and relocate before main(): 4-5 ms of every
 * start, measured, where a hit needs neither (the restore and the password
 * step use libarchive and single-user postgres; only a build's temporary
 * server, the healthcheck, S3 and the Docker Engine use them).
 *
 * This module defines the functions of both libraries that pgstash calls,
 * with the prototypes of libpq-fe.h and curl/curl.h (the compiler checks
 * them), and each forwards to the library's own function, loaded once
 * (dlopen of the soname, every symbol resolved at that moment; thread-safe).
 * Callers include the libraries' headers and call the functions as usual.
 *
 * When a library cannot be loaded (or lacks a function), the error is
 * logged once, naming it, and every function answers as the library does
 * for an unusable handle: NULL connections, handles and strings,
 * CONNECTION_BAD, PGRES_FATAL_ERROR, PQPING_NO_ATTEMPT, CURLE_FAILED_INIT,
 * CURLM_BAD_HANDLE, CURLUE_BAD_HANDLE; freeing does nothing.
 *
 * Not for: other libraries (libcrypto, libarchive, inih and cJSON are used
 * on every start and stay linked).
 */
#ifndef PGSTASH_LAZYLIB_H
#define PGSTASH_LAZYLIB_H

/* The sonames loaded: the ABI versions the headers describe. */
#define LAZYLIB_PQ_SONAME "libpq.so.5"
#define LAZYLIB_CURL_SONAME "libcurl.so.4"

#endif
