# pgstash — plain Makefile.
#   make            build ./pgstash (release flags; add WERROR=1 to fail on warnings)
#   make test       unit + integration suites, on the release and the sanitizer builds
#   make demo       host-mode run on the example repos: a miss, then a hit
#   make bench      side-by-side benchmark (QUICK=1 for the short form)
#   make asan       build build/asan/pgstash (ASan+UBSan)
#   make deps       install what `make test` needs (scripts/install-deps --test; demo/test call it first)
#   make check-layers  fail when a module uses one above it (docs/ARCHITECTURE.md)
#   make test-fresh the README's two commands in a fresh debian:bookworm-slim container (slow)
#   make clean-images  remove the Docker images the tests of this checkout built

CC      ?= cc
PKGS    := libpq libarchive libcrypto inih libcurl libcjson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libarchive is linked in statically, and --gc-sections keeps only the tar
# and filter code pgstash calls: the shared library would load
# libxml2 and ICU (for formats pgstash never reads) before main() at every
# start, 2-4 ms of the ~10 ms that mapping 47 libraries takes.  The
# compression libraries it calls stay shared.
ARCHIVE_LIBS := -Wl,--gc-sections $(shell pkg-config --variable=libdir libarchive 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)/libarchive.a \
	-lnettle -llzma -lzstd -llz4 -lbz2 -lz
# libpq and libcurl are not linked at all: src/lazylib.c loads them when a
# function of theirs is first called (a hit calls none).
PKG_LIBS   := $(shell pkg-config --libs libcrypto inih libcjson 2>/dev/null || echo -lcrypto -linih -lcjson) \
	$(ARCHIVE_LIBS) -pthread

OPT     ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Wformat=2 -Wshadow -Wno-missing-field-initializers
ifeq ($(WERROR),1)
WARN    += -Werror
endif
HARDEN  := -fstack-protector-strong
BASE_CPPFLAGS := -D_GNU_SOURCE -Isrc $(PKG_CFLAGS)
BASE_LDFLAGS  := -Wl,-z,relro -Wl,-z,now

SRC     := $(sort $(wildcard src/*.c))
MAIN    := entrypoint/main.c
HDRS    := $(wildcard src/*.h) $(wildcard entrypoint/*.h)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))

# Two variants share the rules: release (./pgstash) and asan (build/asan/pgstash).
REL_DIR  := build/release
ASAN_DIR := build/asan
REL_FLAGS  := $(OPT) -D_FORTIFY_SOURCE=2 $(HARDEN)
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_REV := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
VER_DEFS := -DPGSTASH_VERSION='"$(VERSION)"' -DPGSTASH_REVISION='"$(GIT_REV)"'
# Rewritten only when the revision changes, so that main.o (which prints it) follows new commits.
REV_STAMP := build/revision
$(shell mkdir -p build && { echo '$(GIT_REV)' | cmp -s - $(REV_STAMP) || echo '$(GIT_REV)' >$(REV_STAMP); })

.PHONY: all asan unit unit-asan test test-unit test-integration demo bench clean install fuzz \
	deps deps-build test-fresh clean-images check-layers

all: pgstash

define variant
$(1)_OBJ := $$(patsubst src/%.c,$(2)/src/%.o,$$(SRC))
$(2)/src/%.o: src/%.c $$(HDRS) | $(2)/src
	$$(CC) $$(WARN) $(3) $$(BASE_CPPFLAGS) $$(CPPFLAGS) $$(CFLAGS) -c -o $$@ $$<
$(2)/main.o: $$(MAIN) $$(HDRS) VERSION $(REV_STAMP) | $(2)/src
	$$(CC) $$(WARN) $(3) $$(BASE_CPPFLAGS) $$(VER_DEFS) $$(CPPFLAGS) $$(CFLAGS) -c -o $$@ $$<
$(2)/pgstash: $(2)/main.o $$($(1)_OBJ)
	$$(CC) $(3) $$(BASE_LDFLAGS) $$(LDFLAGS) -o $$@ $$^ $$(PKG_LIBS) $$(LDLIBS)
$(2)/tests/%: tests/unit/%.c $$($(1)_OBJ) $$(HDRS) tests/unit/unit.h | $(2)/tests
	$$(CC) $$(WARN) -Wno-unused-parameter $(3) $$(BASE_CPPFLAGS) -Itests/unit $$(CPPFLAGS) $$(CFLAGS) $$(BASE_LDFLAGS) $$(LDFLAGS) \
		-o $$@ $$< $$($(1)_OBJ) $$(PKG_LIBS) -lcmocka $$(LDLIBS)
$(2)/src $(2)/tests:
	mkdir -p $$@
$(1)_UNIT := $$(patsubst tests/unit/%.c,$(2)/tests/%,$$(UNIT_SRC))
endef

$(eval $(call variant,REL,$(REL_DIR),$(REL_FLAGS)))
$(eval $(call variant,ASAN,$(ASAN_DIR),$(ASAN_FLAGS)))
# test_main compiles entrypoint/main.c in (the exit-code table and the dispatch).
$(REL_DIR)/tests/test_main $(ASAN_DIR)/tests/test_main: $(MAIN)

pgstash: $(REL_DIR)/pgstash
	cp $< $@

asan: $(ASAN_DIR)/pgstash

unit: $(REL_UNIT)
unit-asan: $(ASAN_UNIT)

# What the README's two commands need, from the one list (scripts/install-deps):
# checked before anything compiles; installed when root, else the command to run
# is printed and make stops.  SKIP_DEPS=1 skips the check.
deps:
	$(if $(SKIP_DEPS),@true,scripts/install-deps --test)
deps-build:
	$(if $(SKIP_DEPS),@true,scripts/install-deps --build)

# The whole suite CI runs.  tests/run drives everything and prints the
# closing "N passed, N failed" line.  The build is a sub-make, so that it
# starts after `deps` (also under -j) and sees the pkg-config it installed.
test: deps
	$(MAKE) pgstash asan unit unit-asan
	scripts/check-layers
	tests/run

# Every call and #include points down the layers of docs/ARCHITECTURE.md.
check-layers: pgstash
	scripts/check-layers

test-unit: unit unit-asan
	tests/run --unit-only

test-integration: pgstash asan
	tests/run --integration-only

demo: deps-build
	$(MAKE) pgstash
	SKIP_DEPS=1 examples/demo.sh

# The README's promise, tested: a fresh Debian container, the checkout copied
# in, only git and make installed, then `make demo` and `make test`.
test-fresh: deps
	PGSTASH_TEST_FRESH=1 /usr/bin/python3 -m pytest -p no:cacheprovider -rA -s tests/integration/test_fresh_machine.py

# Every image the integration tests built from this checkout (tagged
# pgstash-it/NAME:<checkout hash>, labelled pgstash.test.checkout=<hash>),
# dangling ones included.  The base image debian:bookworm-slim stays.
clean-images:
	tests/integration/images.py --clean

bench: pgstash
	bench/run.sh $(if $(QUICK),--quick)

install: pgstash
	install -D -m 0755 pgstash $(DESTDIR)/usr/local/bin/pgstash

clean:
	rm -rf build pgstash
# The image for one PostgreSQL major: pgstash:$(PG_MAJOR) on the Debian suite
# that ships it, making the base image with debootstrap when it is absent.
PG_MAJOR ?= 15
DEBIAN_SUITE_15 = bookworm
DEBIAN_SUITE_17 = trixie
DEBIAN_SUITE ?= $(DEBIAN_SUITE_$(PG_MAJOR))
image:
	@test -n "$(DEBIAN_SUITE)" || { echo "make image: no Debian suite ships PostgreSQL $(PG_MAJOR) (15: bookworm, 17: trixie)" >&2; exit 2; }
	docker image inspect debian:$(DEBIAN_SUITE)-slim >/dev/null 2>&1 || \
		PGSTASH_BASE_IMAGE=debian:$(DEBIAN_SUITE)-slim PGSTASH_BASE_SUITE=$(DEBIAN_SUITE) docker/build-base.sh
	docker build --build-arg PG_MAJOR=$(PG_MAJOR) --build-arg DEBIAN_SUITE=$(DEBIAN_SUITE) \
		--build-arg PGSTASH_REVISION=$(GIT_REV) -t pgstash:$(PG_MAJOR) .

.PHONY: image

# Optional: the image build copies only what the binary needs.
-include fuzz/fuzz.mk
