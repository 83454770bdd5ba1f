# fuzz/fuzz.mk — libFuzzer harnesses and the Valgrind check (issue 8).
# Included at the end of the Makefile; uses its SRC, HDRS, WARN, BASE_CPPFLAGS,
# PKG_LIBS and REL_UNIT.  See fuzz/README.md.
#
#   make fuzz-build      build/fuzz/fuzz_{config,meta,archive} (clang, libFuzzer, ASan+UBSan)
#   make fuzz            each fuzzer for FUZZ_SECONDS (600) in turn, on build/fuzz/corpus-*
#   make fuzz-ci         each fuzzer for 30 s: the bounded CI run, one summary line each
#   make valgrind        unit tests and a key/prepare/prepare/ls/verify scenario under memcheck
#
# FUZZERS picks a subset (make fuzz FUZZERS=meta FUZZ_SECONDS=3600); FUZZ_ARGS
# adds libFuzzer flags (-jobs=2 -workers=2, -dict=..., ...).

FUZZ_CC      ?= clang
FUZZ_DIR     := build/fuzz
FUZZERS      ?= config meta archive
FUZZ_SECONDS ?= 600
FUZZ_ARGS    ?=
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
# clang's -Wformat=2 also flags log.c's vsnprintf on a va_list (gcc's does not).
FUZZ_FLAGS   := -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) -Wno-format-nonliteral
FUZZ_OBJ     := $(patsubst src/%.c,$(FUZZ_DIR)/src/%.o,$(SRC))
FUZZ_ALL     := $(patsubst fuzz/%.c,$(FUZZ_DIR)/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BINS    := $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZERS))

.PHONY: fuzz-build fuzz fuzz-ci valgrind

fuzz-build: $(FUZZ_BINS)

# The library is instrumented for coverage (fuzzer-no-link); only the
# harnesses link libFuzzer's main.
$(FUZZ_DIR)/src/%.o: src/%.c $(HDRS) | $(FUZZ_DIR)/src
	$(FUZZ_CC) $(WARN) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(BASE_CPPFLAGS) -c -o $@ $<

$(FUZZ_ALL): $(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(FUZZ_OBJ) $(HDRS)
	$(FUZZ_CC) $(WARN) $(FUZZ_FLAGS) -fsanitize=fuzzer $(BASE_CPPFLAGS) -o $@ $< $(FUZZ_OBJ) $(PKG_LIBS)

$(FUZZ_DIR)/src:
	mkdir -p $@

fuzz: $(FUZZ_BINS)
	@for f in $(FUZZERS); do \
		fuzz/run-fuzzer.sh $$f $(FUZZ_SECONDS) $(FUZZ_ARGS) || exit 1; \
	done

# First the inputs that once crashed (fuzz/crashes-found/<fuzzer>-*), replayed
# as regression tests; then a bounded run of each fuzzer (fixed seed: CI must
# not pass or fail by chance).
fuzz-ci: $(FUZZ_BINS)
	@rc=0; for f in $(FUZZERS); do \
		set -- fuzz/crashes-found/$$f-*; \
		if [ -e "$$1" ]; then \
			$(FUZZ_DIR)/fuzz_$$f "$$@" >$(FUZZ_DIR)/regress-$$f.log 2>&1 \
				&& echo "fuzz regress $$f: $$# inputs ok" \
				|| { echo "fuzz regress $$f: FAILED (see $(FUZZ_DIR)/regress-$$f.log)"; rc=1; }; \
		fi; \
		fuzz/run-fuzzer.sh $$f 30 -seed=1 $(FUZZ_ARGS) || rc=1; \
	done; exit $$rc

valgrind: pgstash $(REL_UNIT)
	fuzz/valgrind.sh ./pgstash $(REL_UNIT)

# Rewrites fuzz/corpus/ (a maintainer's step; the seeds are committed):
# REAL_META=path/to/<key>.meta to take a fresh one from `make valgrind KEEP=1`.
.PHONY: fuzz-seeds
$(FUZZ_DIR)/seed_archive: fuzz/seed_archive.c $(REL_OBJ) $(HDRS) | $(FUZZ_DIR)/src
	$(CC) $(WARN) $(REL_FLAGS) $(BASE_CPPFLAGS) $(BASE_LDFLAGS) -o $@ $< $(REL_OBJ) $(PKG_LIBS)

fuzz-seeds: $(FUZZ_DIR)/seed_archive
	fuzz/make-seeds.py $(FUZZ_DIR)/seed_archive $(REAL_META)
