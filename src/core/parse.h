/*
 * parse.h — values in text from outside: numbers in query parameters, flags and environment
 * variables; URLs in configuration.
 */
#ifndef KS_CORE_PARSE_H
#define KS_CORE_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Parses a whole decimal int64 in [min, max]: digits with an optional leading '-' and nothing
 * else ("+1", " 1", "1x", "" and overflow are refused). Returns KS_OK (then `*out` is set) or
 * KS_ERR_INVALID. */
KS_MUST_USE int ks_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);

/* Whether `url` is an absolute http:// or https:// URL of 1..`max` bytes with a host, printable
 * ASCII without spaces, and no user information (credentials never go in a URL). Syntax only:
 * the host is not resolved. */
int ks_parse_http_url(const char *url, size_t max);

#endif
