#!/bin/sh
# build-base.sh — make the base image the Dockerfile's FROM names
# (debian:bookworm-slim) on a machine that cannot pull from a registry.
#
# The image is a debootstrap --variant=minbase rootfs, trimmed the way the
# official slim image is (no apt lists, docs, man pages or locales), loaded with
# `docker import`.  The tag is the official one on purpose: where a registry is
# reachable the very same Dockerfile builds against the real image, and here it
# builds against this look-alike.
#
# Idempotent: does nothing when the image already exists (--force rebuilds it).
# The trimmed rootfs tarball is kept in the cache directory, so a second
# machine state (docker data wiped, CI runner restored from cache) only pays for
# the import, not for debootstrap.
#
# Usage: docker/build-base.sh [--force] [--rebuild-rootfs]
# Environment:
#   PGSTASH_BASE_IMAGE   tag to create            (default debian:bookworm-slim)
#   PGSTASH_BASE_SUITE   Debian suite             (default bookworm)
#   PGSTASH_BASE_CACHE   cache directory          (default /var/cache/pgstash-base)
#   PGSTASH_BASE_MIRROR  mirror for debootstrap   (default: the host's apt source
#                        for Debian, else http://deb.debian.org/debian)
set -eu

image=${PGSTASH_BASE_IMAGE:-debian:bookworm-slim}
suite=${PGSTASH_BASE_SUITE:-bookworm}
cache=${PGSTASH_BASE_CACHE:-/var/cache/pgstash-base}
force=0
rebuild_rootfs=0
for arg in "$@"; do
	case $arg in
	--force) force=1 ;;
	--rebuild-rootfs) force=1; rebuild_rootfs=1 ;;
	-h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "build-base.sh: unknown argument \"$arg\"" >&2; exit 2 ;;
	esac
done

say() { echo "build-base: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

# The mirror the host's apt already uses for Debian (deb822 or one-line
# format), so a host behind a local mirror or proxy builds the same way.
host_mirror() {
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f"
	done | head -n 1
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' "$f"
	done | head -n 1
}

command -v docker >/dev/null || { say "docker is not installed"; exit 1; }
if [ $force -eq 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
	say "image $image exists ($(docker image inspect -f '{{.Id}}' "$image" | cut -c1-19)), nothing to do"
	exit 0
fi

start=$(now)
mkdir -p "$cache"
tarball="$cache/$suite-minbase.tar"
# One builder at a time per cache directory (parallel CI jobs on one host).
exec 9>"$cache/.lock"
flock 9

if [ $rebuild_rootfs -eq 1 ] || [ ! -s "$tarball" ]; then
	command -v debootstrap >/dev/null || { say "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
	mirror=${PGSTASH_BASE_MIRROR:-$(host_mirror)}
	mirror=${mirror:-http://deb.debian.org/debian}
	rootfs="$cache/rootfs.tmp"
	rm -rf "$rootfs" "$tarball.tmp"
	say "debootstrap --variant=minbase $suite from $mirror"
	t=$(now)
	debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
		say "debootstrap failed; last lines of $cache/debootstrap.log:"
		tail -n 20 "$cache/debootstrap.log" >&2
		exit 1
	}
	say "debootstrap done in $(since "$t")"

	t=$(now)
	# What the official slim image sets up: dpkg skips docs/man/locales on
	# later installs, apt keeps no package cache, no recommends.
	mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d" "$rootfs/etc/apt/apt.conf.d"
	cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
	cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
	cat >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CFG
	echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
	cat >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes" <<'CFG'
Acquire::GzipIndexes "true";
Acquire::CompressionTypes::Order:: "gz";
CFG
	# The official image's sources, not the build host's mirror: the image
	# must work wherever it runs.  A build behind a mirror passes its own
	# through the Dockerfile's APT_MIRROR build argument.
	rm -f "$rootfs/etc/apt/sources.list"
	cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
	rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
		"$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* \
		"$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/groff/* \
		"$rootfs"/usr/share/lintian/* "$rootfs"/usr/share/linda/*
	find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
	find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
	mkdir -p "$rootfs/var/lib/apt/lists/partial"
	# Host names belong to the container runtime.
	: >"$rootfs/etc/hostname"
	: >"$rootfs/etc/resolv.conf"
	tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	rm -rf "$rootfs"
	say "trimmed and packed $(du -h "$tarball" | cut -f1) in $(since "$t")"
else
	say "reusing cached rootfs $tarball ($(du -h "$tarball" | cut -f1))"
fi

t=$(now)
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--message "pgstash build-base.sh: debootstrap --variant=minbase $suite" \
	"$tarball" "$image" >/dev/null
say "imported $image in $(since "$t") ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
# A rebuild leaves the previous image untagged; drop it unless something uses it.
new=$(docker image inspect -f '{{.Id}}' "$image")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
	docker image rm "$old" >/dev/null 2>&1 || true
fi
say "total $(since "$start")"
