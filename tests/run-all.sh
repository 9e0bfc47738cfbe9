#!/usr/bin/env bash
# Runs every kassa test against the binaries in BUILD_DIR (default build/san):
#   1. C unit and conformance suites on SQLite
#   2. a throwaway PostgreSQL cluster; the same conformance suites on it
#   3. black-box HTTP tests against the real binary, on SQLite and on PostgreSQL
#   4. crash tests (SIGKILL under load), on SQLite and on PostgreSQL
#   5. the smoke test of `make run` itself (tests/smoke/make_run.py: the README's first payment
#      against a fresh `make run` in a throwaway copy, using build/release)
#   6. the smoke test of `make bench`: bench/run.sh on build/bench with one-second runs, so the
#      harness and the bench build keep working (the figures printed are not measurements)
#   7. the browser test of the API documentation page (tests/browser/test_docs.mjs: /docs in
#      Debian's headless chromium through playwright-core), bounded in time
# Set KASSA_TEST_ONLY=unit|blackbox|crash|smoke|browser to run one part (smoke: 5 and 6).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/san}
only=${KASSA_TEST_ONLY:-all}
py=/usr/bin/python3
export KASSA_BIN="$PWD/$build/kassa"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}

work=$(mktemp -d /tmp/kassa-test-XXXXXX)
chmod 755 "$work"
pgdir="$work/pg"
cleanup() {
  if [ -d "$pgdir" ]; then tests/harness/pg.sh stop "$pgdir" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# Servers that share a store share its card-vault master key (docs/vault.md).
export KASSA_VAULT_MASTER_KEY_FILE=${KASSA_VAULT_MASTER_KEY_FILE:-$work/vault-master.key}

step() { printf '\n=== %s\n' "$*"; }
t0=$(date +%s)

if [ "$only" = all ] || [ "$only" = unit ]; then
  step "unit + conformance suites on SQLite"
  KASSA_TEST_STORE="" "$build/unit-tests" -j2 --short-filename
fi

if [ "$only" != smoke ] && [ "$only" != browser ]; then
  step "starting a throwaway PostgreSQL cluster"
  pg_url=$(tests/harness/pg.sh start "$pgdir")
  echo "PostgreSQL at ${pg_url}"
  export KASSA_TEST_PG_URL="$pg_url"
fi

if [ "$only" = all ] || [ "$only" = unit ]; then
  step "conformance suites on PostgreSQL"
  KASSA_TEST_STORE="$pg_url" "$build/unit-tests" -j2 --short-filename
fi

if [ "$only" = all ] || [ "$only" = blackbox ]; then
  step "black-box HTTP tests on SQLite"
  KASSA_TEST_STORE_URL="" $py -m pytest -q -p no:cacheprovider tests/blackbox
  step "black-box HTTP tests on PostgreSQL"
  KASSA_TEST_STORE_URL="$pg_url" $py -m pytest -q -p no:cacheprovider tests/blackbox
fi

if [ "$only" = all ] || [ "$only" = crash ]; then
  step "crash tests (SIGKILL under load) on SQLite and PostgreSQL"
  $py -m pytest -q -p no:cacheprovider tests/crash
fi

if [ "$only" = all ] || [ "$only" = smoke ]; then
  step "smoke test of make run (the README's first payment)"
  $py tests/smoke/make_run.py
  step "smoke test of make bench (one-second runs; not a measurement)"
  bench_log="$work/bench-smoke.log"
  if ! KASSA_BENCH_SECONDS=1 KASSA_BENCH_PAYMENTS_SECONDS=2 KASSA_BENCH_PGBENCH_SECONDS=2 \
       KASSA_BENCH_SEARCH_PAYMENTS=2000 \
       bench/run.sh "${KASSA_TEST_BENCH_BUILD:-build/bench}" >"$bench_log" 2>&1; then
    tail -40 "$bench_log"
    echo "make bench smoke test FAILED" >&2
    exit 1
  fi
  echo "bench/run.sh completed ($(grep -c '^|' "$bench_log") table rows)"
fi

if [ "$only" = all ] || [ "$only" = browser ]; then
  step "browser test of /docs (Swagger UI in headless chromium)"
  timeout --kill-after=10 240 node tests/browser/test_docs.mjs "$build/kassa"
fi

step "all tests passed in $(( $(date +%s) - t0 ))s"
