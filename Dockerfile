# pgstash — a drop-in for the official postgres image whose entrypoint restores
# a cached, already-migrated PGDATA instead of running migrations on every start.
#
#   make image PG_MAJOR=15      # pgstash:15, on Debian bookworm (makes the base when absent)
#   make image PG_MAJOR=17      # pgstash:17, on Debian trixie
#   docker build --build-arg PG_MAJOR=17 --build-arg DEBIAN_SUITE=trixie -t pgstash:17 .
#
# Built on Debian's own PostgreSQL packages, so PG_MAJOR must be the version
# DEBIAN_SUITE ships: 15 in bookworm, 17 in trixie.  Where no registry is
# reachable, docker/build-base.sh creates debian:SUITE-slim locally with
# debootstrap; the same Dockerfile builds against the real image anywhere else.
# Build arguments APT_MIRROR / APT_PROXY point apt at a local mirror or proxy
# for the build only (docker/apt-install.sh).

ARG DEBIAN_SUITE=bookworm

FROM debian:${DEBIAN_SUITE}-slim AS build
ARG APT_MIRROR=
ARG APT_PROXY=
COPY docker/apt-install.sh /usr/local/lib/pgstash/apt-install.sh
RUN /usr/local/lib/pgstash/apt-install.sh build-essential pkg-config \
	libpq-dev libarchive-dev libssl-dev libinih-dev libcurl4-openssl-dev libcjson-dev \
	libzstd-dev liblz4-dev liblzma-dev libbz2-dev zlib1g-dev nettle-dev
WORKDIR /usr/src/pgstash
COPY Makefile VERSION ./
COPY src/ src/
COPY entrypoint/ entrypoint/
# No .git in the context: the revision comes from the build argument.
ARG PGSTASH_REVISION=unknown
RUN make -j"$(nproc)" pgstash GIT_REV="$PGSTASH_REVISION" && strip pgstash && ./pgstash --version
# The tests name their checkout here: the legacy builder keeps this stage as an
# untagged image, which `make clean-images` and the tests then find by label.
ARG PGSTASH_TEST_CHECKOUT=
LABEL pgstash.test.checkout=$PGSTASH_TEST_CHECKOUT

FROM debian:${DEBIAN_SUITE}-slim
ARG APT_MIRROR=
ARG APT_PROXY=
ARG PG_MAJOR=15
ENV PG_MAJOR=$PG_MAJOR

# The official image's uid/gid (999), so volumes move between the two images
# without a chown; Debian's package would otherwise pick a dynamic system id.
RUN set -eu; \
	groupadd -r postgres --gid=999; \
	useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres; \
	mkdir -p /var/lib/postgresql; \
	chown -R postgres:postgres /var/lib/postgresql

COPY docker/apt-install.sh /usr/local/lib/pgstash/apt-install.sh
# postgresql-common first, so that installing the server creates no
# "main" cluster: pgstash runs initdb itself, into $PGDATA.
RUN set -eu; \
	/usr/local/lib/pgstash/apt-install.sh postgresql-common; \
	sed -ri 's/#? *(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf; \
	grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf; \
	. /etc/os-release; \
	case "$VERSION_CODENAME" in \
	bookworm) libs="libarchive13 libssl3 libcurl4" ;; \
	*) libs="libarchive13t64 libssl3t64 libcurl4t64" ;; \
	esac; \
	/usr/local/lib/pgstash/apt-install.sh "postgresql-$PG_MAJOR" libpq5 libinih1 libcjson1 $libs; \
	rm -rf /var/lib/postgresql/$PG_MAJOR /etc/postgresql/$PG_MAJOR; \
	sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" /usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample; \
	grep -F "listen_addresses = '*'" /usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample; \
	postgres --version 2>/dev/null || /usr/lib/postgresql/$PG_MAJOR/bin/postgres --version

# As the official image: the locales package with en_US.UTF-8 generated and
# LANG=en_US.utf8 by default (initdb takes its locale from LANG and LC_*), so
# POSTGRES_INITDB_ARGS=--locale=... and a `localedef` in a derived image work.
# libnss-wrapper, as there too, for `docker run --user UID:GID` with a uid
# that has no passwd entry: pgstash preloads it into initdb and postgres,
# which want a name for the uid (at /usr/lib/libnss_wrapper.so, the path the
# official entrypoint checks).
RUN set -eu; \
	if [ -f /etc/dpkg/dpkg.cfg.d/docker ]; then sed -ri '/\/usr\/share\/locale/d' /etc/dpkg/dpkg.cfg.d/docker; fi; \
	/usr/local/lib/pgstash/apt-install.sh locales libnss-wrapper; \
	lib="$(find /usr/lib -name libnss_wrapper.so -print -quit)"; \
	test -n "$lib"; \
	[ "$lib" = /usr/lib/libnss_wrapper.so ] || ln -s "$lib" /usr/lib/libnss_wrapper.so; \
	echo 'en_US.UTF-8 UTF-8' >> /etc/locale.gen; \
	locale-gen; \
	locale -a | grep -qx 'en_US.utf8'

ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:$PATH \
	PGDATA=/var/lib/postgresql/data \
	LANG=en_US.utf8

# As the official image: a socket directory anyone may use, a PGDATA that
# works under an arbitrary --user, the init-script directory.
RUN set -eu; \
	mkdir -p /var/run/postgresql "$PGDATA" /var/cache/pgstash /docker-entrypoint-initdb.d /etc/pgstash; \
	chown postgres:postgres /var/run/postgresql "$PGDATA" /var/cache/pgstash; \
	chmod 3777 /var/run/postgresql; \
	chmod 1777 "$PGDATA"
VOLUME /var/lib/postgresql/data /var/cache/pgstash

# As the official image: the socket and loopback are trusted, so `docker exec
# db psql -U postgres` works without a password (README "Host mode": a bare
# pgstash on a host asks for the password there).
ENV PGSTASH_LOCAL_AUTH=trust

COPY docker/pgstash.ini /etc/pgstash/pgstash.ini
COPY --from=build /usr/src/pgstash/pgstash /usr/local/bin/pgstash

ENTRYPOINT ["pgstash"]
# Postgres' fast shutdown, as the official image (docker stop sends it to
# postgres itself: pgstash execs it as PID 1).
STOPSIGNAL SIGINT
# Healthy once bootstrap is done and the final server answers.  The start
# period covers a cache miss that runs every migration (lock_timeout's
# default); a hit turns healthy within a second or two.
HEALTHCHECK --interval=1s --timeout=5s --start-period=900s --retries=5 CMD ["pgstash", "healthcheck"]
EXPOSE 5432
CMD ["postgres"]
