/*
 * loadgen_json.h — JSON for kassa-loadgen's hot path (bench/loadgen.c): a bounded pull scanner,
 * a string writer, and the readers of the four replies a payment reads.
 *
 * Why not jansson there: it builds a tree of allocated nodes for every reply (an events reply
 * holds whole invoices and payments) when a payment needs three or four fields of it. The
 * scanner walks the text once, allocates nothing, and still checks all of it: a reply that is
 * not JSON (RFC 8259, UTF-8; like jansson, \u0000 is refused) is an error, not a partial
 * success. The readers look fields up at their place in the document only — a "status" or a
 * "paymentID" nested deeper, or inside a string, is not taken for the one they want — and,
 * like jansson's lookups, take the last of duplicate keys. tests/unit/test_loadgen_json.c.
 *
 * Pure: no I/O, no allocation, no global state.
 */
#ifndef KB_BENCH_LOADGEN_JSON_H
#define KB_BENCH_LOADGEN_JSON_H

#include <stddef.h>
#include <stdint.h>

#define KB_LG_JSON_DEPTH_MAX 64 /* nesting of arrays and objects (kassa's replies: < 10) */

/* --- scanner ---------------------------------------------------------------------------------
 * Reads one JSON text value by value. After kb_lg_json_enter, call kb_lg_json_next before each
 * element (and, in an object, kb_lg_json_key before its value), and consume each value whole
 * (read it, enter it, or skip it). Every call returns a negative number once the text is found
 * malformed. */
enum kb_lg_json_type {
    KB_LG_JSON_BAD, /* none: malformed, or nothing left */
    KB_LG_JSON_OBJECT,
    KB_LG_JSON_ARRAY,
    KB_LG_JSON_STRING,
    KB_LG_JSON_NUMBER,
    KB_LG_JSON_TRUE,
    KB_LG_JSON_FALSE,
    KB_LG_JSON_NULL,
};

struct kb_lg_json {
    const char *p, *end;
    unsigned depth;
    uint64_t objects; /* bit d: the container at depth d + 1 is an object */
    uint64_t started; /* bit d: the container at depth d + 1 has had an element */
    int failed;
};

/* Scans text[0..len) (borrowed for the scan). */
void kb_lg_json_init(struct kb_lg_json *j, const char *text, size_t len);
/* The type of the next value (white space skipped), without consuming it. */
enum kb_lg_json_type kb_lg_json_type(struct kb_lg_json *j);
/* Consumes the '{' or '[' that comes next. 0, or -1. */
int kb_lg_json_enter(struct kb_lg_json *j) __attribute__((warn_unused_result));
/* In the container entered last: 1 when an element follows, 0 when the container ended (it is
 * left), -1 when malformed. */
int kb_lg_json_next(struct kb_lg_json *j) __attribute__((warn_unused_result));
/* A string (a key, with the ':' after it, for kb_lg_json_key), decoded into buf (cap bytes,
 * NUL-terminated, *len its length without the NUL when len is not NULL): 0; 1 when it is a
 * valid string of cap bytes or more (consumed; buf then holds as much of its start as fits
 * whole characters); -1 when malformed or not a string. */
int kb_lg_json_string(struct kb_lg_json *j, char *buf, size_t cap, size_t *len)
    __attribute__((warn_unused_result));
int kb_lg_json_key(struct kb_lg_json *j, char *buf, size_t cap) __attribute__((warn_unused_result));
/* A number: 0 with *v when it is an integer in int64_t; 1 when it is a number with a fraction
 * or an exponent (consumed); -1 when malformed, not a number, or an integer out of range. */
int kb_lg_json_int(struct kb_lg_json *j, int64_t *v) __attribute__((warn_unused_result));
/* Consumes the next value whole, checking it. 0, or -1. */
int kb_lg_json_skip(struct kb_lg_json *j) __attribute__((warn_unused_result));
/* 0 when the top-level value was consumed whole and only white space follows, else -1. */
int kb_lg_json_done(struct kb_lg_json *j) __attribute__((warn_unused_result));

/* --- writer --------------------------------------------------------------------------------
 * Appends s[0..n) as a JSON string, quotes included, at buf + *at (cap bytes in all), escaping
 * '"', '\\' and control characters. 0, or -1 when it does not fit or s is not UTF-8 (*at is
 * then unchanged). */
int kb_lg_json_put_string(char *buf, size_t cap, size_t *at, const char *s, size_t n)
    __attribute__((warn_unused_result));

/* --- kassa's replies -------------------------------------------------------------------------
 * Each reader checks the whole reply, then gives what it found. Return: 0; KB_LG_REPLY_SHAPE
 * when it is JSON but a field is missing, not a string, or longer than its buffer; or
 * KB_LG_REPLY_NOT_JSON. Out buffers hold NUL-terminated strings when 0 is returned. */
enum { KB_LG_REPLY_OK = 0, KB_LG_REPLY_SHAPE = -1, KB_LG_REPLY_NOT_JSON = -2 };

/* POST /v2/processing/invoices: invoice.id and invoiceAccessToken.payload. */
int kb_lg_reply_invoice(const char *body, size_t len, char *id, size_t id_cap, char *token,
                        size_t token_cap) __attribute__((warn_unused_result));
/* POST /v2/processing/payment-resources: paymentToolToken and paymentSession. */
int kb_lg_reply_resource(const char *body, size_t len, char *tool, size_t tool_cap, char *session,
                         size_t session_cap) __attribute__((warn_unused_result));
/* POST /v2/processing/invoices/{id}/payments: id and status (a status longer than its buffer
 * is cut, which no status the generator looks for is). */
int kb_lg_reply_payment(const char *body, size_t len, char *id, size_t id_cap, char *status,
                        size_t status_cap) __attribute__((warn_unused_result));
/* GET /v2/processing/invoices/{id}/events: what it says of payment `payment_id`, into *verdict:
 * 1 captured, -1 failed or cancelled, 0 neither yet. The reply is an array of events, each an
 * object with an integer "id" and an array "changes" of objects with a string "changeType";
 * a change whose changeType is "PaymentStatusChanged" and whose "paymentID" is payment_id must
 * have a string "status". Events are read in order: the first that is malformed
 * (KB_LG_REPLY_SHAPE) or says failed or cancelled decides; else captured when one says so.
 * *last_event rises to the highest event id read before that. */
int kb_lg_reply_events(const char *body, size_t len, const char *payment_id, long long *last_event,
                       int *verdict) __attribute__((warn_unused_result));

#endif
