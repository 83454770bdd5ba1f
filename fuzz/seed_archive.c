/*
 * seed_archive — writes a directory as a pgstash snapshot, for the seeds of
 * fuzz_archive: `seed_archive DIR OUT zstd|gzip|none`.  The archive is what
 * snap_write makes of a PGDATA, so the seeds start where real entries are.
 *
 * Not for: anything but fuzz/make-seeds.py.
 */
#include "log.h"
#include "snapshot.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: seed_archive DIR OUT zstd|gzip|none\n");
		return 2;
	}
	enum cfg_compression comp;
	if (strcmp(argv[3], "zstd") == 0)
		comp = CFG_COMP_ZSTD;
	else if (strcmp(argv[3], "gzip") == 0)
		comp = CFG_COMP_GZIP;
	else if (strcmp(argv[3], "none") == 0)
		comp = CFG_COMP_NONE;
	else {
		fprintf(stderr, "seed_archive: unknown compression \"%s\"\n", argv[3]);
		return 2;
	}
	int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	struct snap_stats st;
	/* Level 19 and 9: the smallest seeds. */
	int rc = snap_write(argv[1], fd, argv[2], comp, comp == CFG_COMP_ZSTD ? 19 : comp == CFG_COMP_GZIP ? 9 : 0, NULL,
	                    &st);
	if (close(fd) != 0)
		rc = -1;
	if (rc == 0)
		printf("%s %llu %s\n", st.sha256, (unsigned long long)st.archive_bytes, argv[2]);
	return rc == 0 ? 0 : 1;
}
