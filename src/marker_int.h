/*
 * marker_int.h — marker's steps that the unit tests reach; not an API.
 */
#ifndef PGSTASH_MARKER_INT_H
#define PGSTASH_MARKER_INT_H

/* How mark_confirm ended. */
enum mark_confirm_result {
	MARK_CONFIRM_FAILED = -1, /* a warning was logged; the marker stays "unsynced" */
	MARK_CONFIRMED = 0,       /* synced, and the marker now says KEY durably */
	MARK_CONFIRM_CHANGED = 1, /* the marker says something else: left alone */
};

/*
 * The background process's work, on directory descriptor dir_fd: syncs, then
 * replaces the marker with `key` durably if it still says `expect`.
 */
enum mark_confirm_result mark_confirm(int dir_fd, const char *expect, const char *key);

#endif
