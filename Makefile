# pgstash — plain Makefile.
#   make            build ./pgstash (release flags; add WERROR=1 to fail on warnings)
#   make test       unit + integration suites, on the release and the sanitizer builds
#   make demo       host-mode run on the example repos: a miss, then a hit
#   make bench      side-by-side benchmark (QUICK=1 for the short form)
#   make asan       build build/asan/pgstash (ASan+UBSan)

CC      ?= cc
PKGS    := libpq libarchive libcrypto inih libcurl libcjson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lpq -larchive -lcrypto -linih -lcurl -lcjson) -pthread

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

.PHONY: all asan unit unit-asan test test-unit test-integration demo bench clean install fuzz

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

# The whole suite CI runs.  tests/run drives everything and prints the
# closing "N passed, N failed" line.
test: pgstash asan unit unit-asan
	tests/run

test-unit: unit unit-asan
	tests/run --unit-only

test-integration: pgstash asan
	tests/run --integration-only

demo: pgstash
	examples/demo.sh

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
