# kassa — build, run, test, bench.
#
#   make run     install what is missing, build (release), start kassa on ./var with the sandbox
#   make test    install what is missing, build every variant (sanitizers for the tests, release,
#                bench), run every test, then smoke-test `make run` itself
#   make bench   build (optimised, with the bench processor), run the benchmarks
#
# Variants live in build/<variant>/: release (make run), san (tests: sanitizers + the probe
# processor), bench (optimised + the probe processor).

VARIANT ?= release
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
PKGS    := libmicrohttpd jansson sqlite3 libpq libcrypto cjose
CC      ?= cc
BUILD   := build/$(VARIANT)

CFLAGS_COMMON := -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
                 -Wno-unused-parameter -Isrc -Itests -I$(BUILD)/gen \
                 $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -pthread -g
LDLIBS        := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread -lm

ifeq ($(VARIANT),san)
  CFLAGS_VARIANT := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
                    -fno-sanitize-recover=undefined -DKASSA_WITH_PROBE=1 -DKASSA_CHECK_FOLDS=1
  LDFLAGS_VARIANT := -fsanitize=address,undefined
else ifeq ($(VARIANT),bench)
  CFLAGS_VARIANT := -O2 -DKASSA_WITH_PROBE=1
else
  CFLAGS_VARIANT := -O2
endif
CFLAGS  := $(CFLAGS_COMMON) $(CFLAGS_VARIANT) $(EXTRA_CFLAGS)
LDFLAGS := $(LDFLAGS_VARIANT)

LIB_SRC  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
ifneq ($(filter san bench,$(VARIANT)),)
  LIB_SRC += $(shell find tests/probe -name '*.c' | sort)
endif
LIB_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(BUILD)/obj/gen/migrations.o \
            $(BUILD)/obj/gen/module_migrations.o \
            $(BUILD)/obj/gen/sandbox_config.o $(BUILD)/obj/gen/openapi_json.o
UNIT_SRC := $(shell find tests/unit -name '*.c' 2>/dev/null | sort)
UNIT_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(UNIT_SRC))
BENCH_SRC := $(shell find bench -name '*.c' 2>/dev/null | sort)
MIGRATIONS := $(shell find src/store/migrations -name '*.sql' | sort)
# Each module's own migrations folder (store/sql.h): NAME=DIR gives ks_NAME_schema.
MODULE_MIGRATION_DIRS := ledger=src/ledger/migrations vault=src/vault/migrations \
                         sandbox=src/units/adapters/sandbox_migrations
MODULE_MIGRATIONS := $(shell find $(foreach d,$(MODULE_MIGRATION_DIRS),$(lastword $(subst =, ,$(d)))) \
                       -name '*.sql' | sort)

.PHONY: all run test bench deps build unit blackbox clean format san release help FORCE

all: build

help:
	@sed -n '2,10p' Makefile

deps:
	@bash scripts/install-deps.sh

build: $(BUILD)/kassa

$(BUILD)/gen/migrations.c: $(MIGRATIONS) scripts/embed-sql.sh
	@mkdir -p $(dir $@)
	bash scripts/embed-sql.sh src/store/migrations > $@

$(BUILD)/obj/gen/migrations.o: $(BUILD)/gen/migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/module_migrations.c: $(MODULE_MIGRATIONS) scripts/embed-sql.sh Makefile
	@mkdir -p $(dir $@)
	bash scripts/embed-sql.sh --modules $(MODULE_MIGRATION_DIRS) > $@

$(BUILD)/obj/gen/module_migrations.o: $(BUILD)/gen/module_migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/sandbox_config.c: config/sandbox.json scripts/embed-text.sh
	@mkdir -p $(dir $@)
	bash scripts/embed-text.sh ks_config_sandbox_json config/sandbox.json > $@

$(BUILD)/obj/gen/sandbox_config.o: $(BUILD)/gen/sandbox_config.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/openapi_json.c: docs/openapi.json scripts/embed-text.sh
	@mkdir -p $(dir $@)
	bash scripts/embed-text.sh ks_api_openapi_json docs/openapi.json > $@

$(BUILD)/obj/gen/openapi_json.o: $(BUILD)/gen/openapi_json.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# Objects depend on the flags they were built with: the stamp is rewritten only when the flags
# change (a variant's defines, pkg-config's answer), and then everything is rebuilt.
$(BUILD)/cflags.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo '$(CFLAGS)' | cmp -s - $@ || echo '$(CFLAGS)' > $@

$(BUILD)/obj/%.o: %.c $(BUILD)/cflags.stamp
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libkassa.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/kassa: $(BUILD)/obj/src/main.o $(BUILD)/libkassa.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(BUILD)/libkassa.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs criterion)

$(BUILD)/kassa-bench: $(patsubst %.c,$(BUILD)/obj/%.o,$(BENCH_SRC)) $(BUILD)/libkassa.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# --- the two commands -------------------------------------------------------------------------

run: deps
	@$(MAKE) --no-print-directory VARIANT=release build
	@./scripts/run.sh build/release/kassa

# Every variant a user runs is compiled here, so that CI (which runs only `make test`) fails when
# `make run` or `make bench` would: they build at -O2, where GCC warns about things -O1 does not.
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) VARIANT=san build/san/kassa build/san/unit-tests
	@$(MAKE) --no-print-directory -j$(JOBS) VARIANT=release build
	@$(MAKE) --no-print-directory -j$(JOBS) VARIANT=bench build/bench/kassa build/bench/kassa-bench
	@./tests/run-all.sh build/san

bench: deps
	@$(MAKE) --no-print-directory VARIANT=bench build/bench/kassa build/bench/kassa-bench
	@./bench/run.sh build/bench

format:
	clang-format -i $$(find src tests bench -name '*.[ch]')

clean:
	rm -rf build
