/*
 * marker_int.h — marker's steps that the unit tests reach; not an API.
 */
#ifndef PGSTASH_MARKER_INT_H
#define PGSTASH_MARKER_INT_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Whether `line` (without its newline) is a marker: "building KEY",
 * "restoring KEY", "unsynced KEY BOOT_ID", KEY, or empty (torn by a crash).
 */
bool mark_parse_line(const char *line);

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

/*
 * The bytes of the large regular files under dir_fd (no links followed) and,
 * when `write`, writes them back a slice at a time, waiting for each
 * (sync_file_range), before mark_confirm's syncfs: no journal commit
 * meanwhile waits for more than one slice.  *all_bytes (when not NULL): the
 * bytes of every regular file.  Best effort.
 */
uint64_t mark_pace(int dir_fd, bool write, uint64_t *all_bytes);

/* What dir_fd/postmaster.pid says (its 8th line). */
enum mark_server_state {
	MARK_SERVER_NONE,     /* no postmaster.pid */
	MARK_SERVER_STARTING, /* "starting", or not written that far yet */
	MARK_SERVER_UP,       /* "ready", "standby" or "stopping" */
};
enum mark_server_state mark_server_state(int dir_fd);

#endif
