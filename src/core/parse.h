/*
 * parse.h — numbers in text from outside: query parameters, flags, environment variables.
 */
#ifndef KS_CORE_PARSE_H
#define KS_CORE_PARSE_H

#include <stdint.h>

#include "core/err.h"

/* Parses a whole decimal int64 in [min, max]: digits with an optional leading '-' and nothing
 * else ("+1", " 1", "1x", "" and overflow are refused). Returns KS_OK (then `*out` is set) or
 * KS_ERR_INVALID. */
KS_MUST_USE int ks_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);

#endif
