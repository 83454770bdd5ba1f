/*
 * fuzz_archive — libFuzzer harness for the snapshot reader.
 *
 * The input is an archive file (tar, tar.gz or tar.zst: snap_restore detects
 * the filter).  It is restored with snap_restore into <scratch>/pgdata, which
 * is absent at the start of every run, without a digest to match (so damaged
 * archives get as far as they can) and without a required major version.
 *
 * Beyond what ASan and UBSan catch, each run checks the restore's promises
 * and aborts when one is broken:
 *   - nothing appears in the scratch directory but the input and pgdata
 *     (an entry that escaped PGDATA would land there, or further up);
 *   - a failed restore leaves pgdata empty;
 *   - a successful one leaves pgdata mode 0700 with a PG_VERSION;
 *   - the working directory and the set of open descriptors are unchanged.
 * Run as root (the usual case) the checks cannot see what only an
 * unprivileged restore runs into, such as a directory of mode 0000; run the
 * binary as another user for that.
 * RLIMIT_FSIZE caps every file at 64 MB (SIGXFSZ ignored: the write fails
 * with EFBIG instead), so a decompression bomb costs time, not disk.
 *
 * Not for: where archives live or their metas (fuzz_meta), writing archives.
 */
#include "fuzz_common.h"
#include "snapshot.h"

#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_FILE_LIMIT (64ULL << 20)

static char *scratch;
static char *in_path;
static char *pgdata;
static char cwd_before[PATH_MAX];

static void
setup_once(void)
{
	scratch = xstrdup(fuzz_setup());
	in_path = path_join(scratch, "in.archive");
	pgdata = path_join(scratch, "pgdata");
	struct rlimit rl = {FUZZ_FILE_LIMIT, FUZZ_FILE_LIMIT};
	if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
		fuzz_die("could not set RLIMIT_FSIZE: %s", strerror(errno));
	signal(SIGXFSZ, SIG_IGN);
	if (!getcwd(cwd_before, sizeof(cwd_before)))
		fuzz_die("getcwd: %s", strerror(errno));
}

/* The lowest free descriptor: any descriptor leaked by a run moves it. */
static int
lowest_free_fd(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fuzz_die("could not open /dev/null: %s", strerror(errno));
	close(fd);
	return fd;
}

/* Only "in.archive" and "pgdata" may be in the scratch directory. */
static void
check_scratch(void)
{
	DIR *d = opendir(scratch);
	if (!d)
		fuzz_die("could not open \"%s\": %s", scratch, strerror(errno));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		if (strcmp(n, ".") != 0 && strcmp(n, "..") != 0 && strcmp(n, "in.archive") != 0 &&
		    strcmp(n, "pgdata") != 0)
			fuzz_die("restore wrote \"%s\" outside PGDATA, in \"%s\"", n, scratch);
	}
	closedir(d);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!scratch)
		setup_once();
	fuzz_write(in_path, data, size);
	int fd_before = lowest_free_fd();

	struct snap_stats sst;
	int rc = snap_restore(in_path, NULL, pgdata, (uid_t)-1, (gid_t)-1, 0, NULL, 0, &sst);

	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, cwd_before) != 0)
		fuzz_die("snap_restore (rc %d) left the working directory changed", rc);
	if (lowest_free_fd() != fd_before)
		fuzz_die("snap_restore (rc %d) leaked a file descriptor", rc);
	check_scratch();
	if (rc != 0 && rc != SNAP_BAD_ARCHIVE && rc != SNAP_FAILED)
		fuzz_die("snap_restore returned %d", rc);
	if (rc != 0 && !dir_is_empty(pgdata))
		fuzz_die("failed restore (rc %d) left files in pgdata", rc);
	if (rc == 0) {
		struct stat sb;
		char *pv = path_join(pgdata, "PG_VERSION");
		if (stat(pgdata, &sb) != 0 || !S_ISDIR(sb.st_mode) || (sb.st_mode & 07777) != 0700)
			fuzz_die("restored pgdata is not a directory of mode 0700");
		if (access(pv, R_OK) != 0)
			fuzz_die("restore succeeded without a readable PG_VERSION");
		free(pv);
	}
	fuzz_make_removable(AT_FDCWD, pgdata);
	if (rm_rf(pgdata) != 0)
		fuzz_die("could not remove \"%s\"", pgdata);
	return 0;
}
