/*
 * durable_int.h — durable's helpers that the unit tests reach; not an API.
 */
#ifndef PGSTASH_DURABLE_INT_H
#define PGSTASH_DURABLE_INT_H

#include <stdbool.h>

/* true when fd is still the file at `path` (same device and inode). */
bool durable_same_file(int fd, const char *path);

#endif
