/*
 * json.h — strict JSON input and canonical output, on top of jansson.
 *
 * Input from outside is parsed with `ks_json_parse`: UTF-8 checked, duplicate keys rejected,
 * nesting bounded by KS_JSON_DEPTH_MAX (checked before jansson sees the text, because jansson's
 * own bound is compiled in and far larger), integers exact to 64 bits. An HTTP body is also
 * checked with `ks_json_values_check` first, so one request's parse stays small.
 */
#ifndef KS_CORE_JSON_H
#define KS_CORE_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Parses `len` bytes of `text`. On success stores a new reference in `*out`. On failure returns
 * KS_ERR_INVALID (or KS_ERR_LIMIT for too deep nesting) and writes a short reason, with the
 * position, into `why` — never a copy of the input. */
KS_MUST_USE int ks_json_parse(const char *text, size_t len, json_t **out, char *why,
                              size_t whylen);

/* Bounds the memory a parse of `len` bytes of `text` can take, before it starts: jansson spends
 * ~40 bytes on a one-byte number and ~100 on an empty object, so the number of values, not the
 * length, is what counts. Counts objects, arrays and commas outside strings (an upper bound on
 * the values, keys aside). Returns KS_OK, or KS_ERR_LIMIT when that count passes `values_max`.
 * Reads nothing past `len`; thread-safe; one pass, no allocation. Malformed text may pass: the
 * parser refuses it. */
KS_MUST_USE int ks_json_values_check(const char *text, size_t len, size_t values_max);

/* Compact serialisation with sorted keys: equal values give equal strings. Caller frees. */
char *ks_json_canonical(const json_t *v);

/* SHA-256 over the canonical form, as 64 hex digits + NUL into `out` (65 bytes). */
KS_MUST_USE int ks_json_fingerprint(const json_t *v, char out[65]);

/* Reads an integer member; returns KS_ERR_INVALID if present but not an integer, KS_ERR_NOT_FOUND
 * if absent (then `*out` = `dflt`). */
int ks_json_get_int(const json_t *obj, const char *key, int64_t dflt, int64_t *out);
/* String member or NULL when absent or not a string. Borrowed. */
const char *ks_json_get_str(const json_t *obj, const char *key);

#endif
