/*
 * ids.h — random base62 identifiers and name validation.
 *
 * Ids are drawn from the operating system's CSPRNG (getrandom, read a few KiB at a time per
 * thread), so they are unguessable and safe to hand to clients. Thread-safe.
 */
#ifndef KS_CORE_IDS_H
#define KS_CORE_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Writes `len` random base62 characters and a NUL into `out` (which holds len + 1 bytes). */
KS_MUST_USE int ks_id_random(char *out, size_t len);

/* Fills `out` with `len` random bytes from the CSPRNG above. */
KS_MUST_USE int ks_random_bytes(void *out, size_t len);

/* Character classes for ks_text_valid. */
#define KS_CHARS_LOWER 1u /* a-z */
#define KS_CHARS_UPPER 2u /* A-Z */
#define KS_CHARS_DIGIT 4u /* 0-9 */

/* True if `s` holds 1..max_bytes characters, each in one of `classes` or in `punct` (ASCII
 * punctuation allowed besides, "" for none). The one rule behind every name kassa checks:
 * namespaces, machine ids, relay names, nonces. NULL is false. */
bool ks_text_valid(const char *s, size_t max_bytes, unsigned classes, const char *punct);

/* True if `s` is a valid namespace: 1..KS_NS_BYTES_MAX of [a-z0-9_]. */
bool ks_ns_valid(const char *s);
/* True if `s` is a valid machine id: 1..KS_ID_BYTES_MAX of [A-Za-z0-9._-]. */
bool ks_machine_id_valid(const char *s);

/* Hex-encodes `len` bytes of `in` into `out` (2 * len + 1 bytes). */
void ks_hex(const unsigned char *in, size_t len, char *out);
/* The value of one hexadecimal digit (either case), or -1 for any other character. */
int ks_hex_value(char c);

#endif
