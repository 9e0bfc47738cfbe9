/*
 * clock.h — wall-clock and monotonic time in milliseconds / microseconds.
 *
 * Transitions never read the clock themselves: the engine reads it once per transition and
 * passes it in, so a transition is a pure function of its inputs.
 */
#ifndef KS_CORE_CLOCK_H
#define KS_CORE_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t ks_now_ms(void);
/* Microseconds from an arbitrary origin (CLOCK_MONOTONIC), for durations. */
int64_t ks_mono_us(void);
/* Formats `ms` since the epoch as RFC 3339 UTC with milliseconds ("2026-11-23T08:42:33.123Z")
 * into `out` (at least 25 bytes). */
void ks_time_rfc3339(int64_t ms, char *out, unsigned long outlen);

/* Parses an RFC 3339 date-time ("2019-03-28T17:41:32.569Z", "...+03:00"; fractions of any
 * length, truncated to milliseconds) into milliseconds since the epoch. Returns 0 on success,
 * -1 for anything else (including out-of-range fields). */
int ks_time_parse_rfc3339(const char *s, int64_t *ms);

#endif
