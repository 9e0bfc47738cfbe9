/*
 * adapter_check.h — `kassa adapter check URL`: drives a remote adapter (units/adapters/remote.h)
 * through the cases of the protocol (docs/adapter-protocol.md, "Checking an adapter") with the
 * sandbox test cards of docs/sandbox.md — approve, declines, an idempotent repeat, a session id
 * reused for another request, a transient failure, 3-D Secure suspend and callback, sleep and
 * inquire, capture / cancel / refund within and beyond their limits, an inquiry about an unknown
 * session, malformed steps — and prints one line per case: "ok" or "FAIL" with why.
 *
 * It talks to the adapter only: no store, no kassa server. Each run uses fresh invoice ids, so it
 * can run again against the same adapter. The card data it sends are the public test cards.
 */
#ifndef KS_UNITS_ADAPTER_CHECK_H
#define KS_UNITS_ADAPTER_CHECK_H

#include <stdint.h>
#include <stdio.h>

/* Runs every case against the adapter at `url` (each call bounded by `timeout_ms`), printing the
 * report to `out`. Returns the number of cases that failed (0: conformant), or -1 when the run
 * could not start (a bad URL, out of memory; the reason is printed). */
int ks_adapter_check_run(const char *url, int64_t timeout_ms, FILE *out);

/* `kassa adapter check URL [--timeout-ms N]`; argv[0] is "adapter". Exit 0 when every case
 * passes, 1 when one fails or the adapter cannot be reached, 2 for a usage error. */
int ks_adapter_check_cli(int argc, char **argv);

#endif
