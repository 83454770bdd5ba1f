#!/bin/sh
# apt-install.sh — install Debian packages in an image layer and leave nothing
# behind: no apt lists, no package cache, no recommends, and no trace of the
# build-time mirror or proxy.
#
# Usage: apt-install.sh PACKAGE...
# Build arguments it honours (pass them through with `docker build --build-arg`):
#   APT_MIRROR  replaces http://deb.debian.org for this install only
#               (e.g. http://mirror.local, or a snapshot.debian.org URL prefix)
#   APT_PROXY   Acquire::http::Proxy for this install only (e.g. http://10.0.0.1:3142)
# Derived images can use it too: RUN /usr/local/lib/pgstash/apt-install.sh python3
set -eu
[ $# -gt 0 ] || { echo "usage: apt-install.sh PACKAGE..." >&2; exit 2; }

conf=/etc/apt/apt.conf.d/00pgstash-build
sources=/etc/apt/sources.list.d/debian.sources
restore() {
	rm -f "$conf"
	if [ -f "$sources.pgstash-orig" ]; then mv "$sources.pgstash-orig" "$sources"; fi
	rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
}
trap restore EXIT

if [ -n "${APT_PROXY:-}" ]; then
	echo "Acquire::http::Proxy \"$APT_PROXY\";" >"$conf"
fi
if [ -n "${APT_MIRROR:-}" ] && [ -f "$sources" ]; then
	cp -p "$sources" "$sources.pgstash-orig"
	sed -i "s#http://deb.debian.org#${APT_MIRROR%/}#g" "$sources"
	# Snapshot mirrors serve Release files whose Valid-Until has passed.
	echo 'Acquire::Check-Valid-Until "false";' >>"$conf"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
