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
PKGS    := libmicrohttpd jansson sqlite3 libpq libcrypto cjose libcurl rdkafka
CC      ?= cc
BUILD   := build/$(VARIANT)

CFLAGS_COMMON := -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
                 -Wno-unused-parameter -Isrc -Itests -I$(BUILD)/gen \
                 $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -pthread -g
LDLIBS        := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread -lm

ifeq ($(VARIANT),san)
  CFLAGS_VARIANT := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
                    -fno-sanitize-recover=undefined -DKASSA_CHECK_FOLDS=1
  LDFLAGS_VARIANT := -fsanitize=address,undefined
else ifeq ($(VARIANT),bench)
  CFLAGS_VARIANT := -O2
else
  CFLAGS_VARIANT := -O2
endif
CFLAGS  := $(CFLAGS_COMMON) $(CFLAGS_VARIANT) $(EXTRA_CFLAGS)
LDFLAGS := $(LDFLAGS_VARIANT)

# Test and bench builds link the test-only modules too (tests/probe: the probe processor, its
# routes and relay); src/ never includes tests/. The list of extra modules is generated per
# variant (build/gen/extra_modules.c), after the modules of modules/modules.c.
LIB_SRC  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
ifneq ($(filter san bench,$(VARIANT)),)
  LIB_SRC += $(shell find tests/probe -name '*.c' | sort)
  EXTRA_MODULES := probe
endif
LIB_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(BUILD)/obj/gen/migrations.o \
            $(BUILD)/obj/gen/sandbox_config.o $(BUILD)/obj/gen/openapi_json.o \
            $(BUILD)/obj/gen/extra_modules.o $(BUILD)/obj/gen/module_migrations.o \
            $(BUILD)/obj/gen/docs_ui.o
UNIT_SRC := $(shell find tests/unit -name '*.c' 2>/dev/null | sort) bench/loadgen_stats.c \
            bench/loadgen_http.c bench/loadgen_json.c
UNIT_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(UNIT_SRC))
BENCH_SRC := $(filter-out bench/loadgen%.c,$(shell find bench -name '*.c' 2>/dev/null | sort))
LOADGEN_SRC := bench/loadgen.c bench/loadgen_stats.c bench/loadgen_http.c bench/loadgen_json.c \
               src/core/ids.c
MIGRATIONS := $(shell find src/store/migrations -name '*.sql' | sort)
# Each module's own migrations folder (store/sql.h): NAME=DIR gives ks_NAME_schema.
MODULE_MIGRATION_DIRS := ledger=src/ledger/migrations vault=src/vault/migrations \
                         sandbox=src/units/adapters/sandbox_migrations \
                         webhooks=src/webhooks/migrations search=src/search/migrations \
                         export=src/export/migrations receipts=src/receipts/migrations \
                         fiscal_emulator=src/receipts/emulator_migrations \
                         receipts_credentials=src/receipts/credentials_migrations \
                         receipts_journal=src/receipts/journal_migrations
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

$(BUILD)/gen/extra_modules.c: scripts/extra-modules.sh $(BUILD)/cflags.stamp
	@mkdir -p $(dir $@)
	bash scripts/extra-modules.sh $(EXTRA_MODULES) > $@

$(BUILD)/obj/gen/extra_modules.o: $(BUILD)/gen/extra_modules.c
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

# GET /docs (src/api/docs_ui.c): kassa's page and Swagger UI's files from npm's swagger-ui-dist,
# which `make deps` installs into node_modules (scripts/install-deps.sh: npm ci). A build on a
# fresh clone installs them first: the vendor files are remade by the npm stamp's rule.
NPM_STAMP := node_modules/.package-lock.json
DOCS_UI_VENDOR := node_modules/swagger-ui-dist/swagger-ui.css \
                  node_modules/swagger-ui-dist/swagger-ui-bundle.js
DOCS_UI_ASSETS := ks_docs_ui_page_html=web/docs/index.html ks_docs_ui_init_js=web/docs/init.js \
                  ks_docs_ui_css=node_modules/swagger-ui-dist/swagger-ui.css \
                  ks_docs_ui_bundle_js=node_modules/swagger-ui-dist/swagger-ui-bundle.js

$(NPM_STAMP): package.json package-lock.json
	bash scripts/install-deps.sh
	@touch $@

$(DOCS_UI_VENDOR): $(NPM_STAMP) ;

$(BUILD)/gen/docs_ui.c: web/docs/index.html web/docs/init.js $(DOCS_UI_VENDOR) \
                        scripts/embed-assets.sh scripts/embed-text.sh Makefile
	@mkdir -p $(dir $@)
	bash scripts/embed-assets.sh --header api/docs_ui_int.h $(DOCS_UI_ASSETS) > $@

$(BUILD)/obj/gen/docs_ui.o: $(BUILD)/gen/docs_ui.c
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

# kafka-mock: librdkafka's mock cluster as a Kafka broker for the black-box tests
# (tests/harness/kafka_mock.c, tests/blackbox/test_kafka.py).
$(BUILD)/kafka-mock: $(BUILD)/obj/tests/harness/kafka_mock.o
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs rdkafka) -pthread

# kassa-loadgen: the open-loop payments generator, a plain HTTP client of kassa with its own
# HTTP/1.1 client (loadgen_http.c) and reply scanner (loadgen_json.c); jansson writes its report.
# Its parts but loadgen.c are in the unit tests too.
$(BUILD)/kassa-loadgen: $(patsubst %.c,$(BUILD)/obj/%.o,$(LOADGEN_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs jansson) -pthread -lm

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# --- the two commands -------------------------------------------------------------------------

run: deps
	@$(MAKE) --no-print-directory VARIANT=release build
	@./scripts/run.sh build/release/kassa

# Every variant a user runs is compiled here, so that CI (which runs only `make test`) fails when
# `make run` or `make bench` would: they build at -O2, where GCC warns about things -O1 does not.
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) VARIANT=san build/san/kassa build/san/unit-tests \
	  build/san/kafka-mock
	@$(MAKE) --no-print-directory -j$(JOBS) VARIANT=release build
	@$(MAKE) --no-print-directory -j$(JOBS) VARIANT=bench build/bench/kassa build/bench/kassa-bench \
	  build/bench/kassa-loadgen build/bench/kafka-mock
	@./tests/run-all.sh build/san

bench: deps
	@$(MAKE) --no-print-directory VARIANT=bench build/bench/kassa build/bench/kassa-bench \
	  build/bench/kassa-loadgen build/bench/kafka-mock
	@./bench/run.sh build/bench

format:
	clang-format -i $$(find src tests bench -name '*.[ch]')

clean:
	rm -rf build
