/*
 * atol.h — the "atol" cash-register adapter: a client of ATOL Online v5 on the fiscal unit's
 * session contract (receipts/fiscal.h, units/adapter.h). Design note: docs/receipts-atol.md.
 *
 * One session registers one receipt:
 *   start     POST {url}/{groupCode}/{operation} with the step's payload (external_id =
 *             the session id, so ATOL refuses a second document for it with error 33, which
 *             carries the first one's uuid); "wait" -> suspend on the callback tag (kassa has a
 *             public URL: ATOL posts the report to it) or sleep and poll;
 *   inquire   GET {url}/{groupCode}/report/{uuid} (the uuid kept in adapterState);
 *   callback  the report ATOL posted to the callback URL.
 * Each request carries the token of POST {url}/getToken {login, pass}, cached per (url,
 * login) and fetched again once when an answer says it expired (error 11).
 *
 * The password comes in options.credentials (added by the fiscal unit from the group's
 * credentialsRef); it and the token never appear in a log, an error, an intent or a state.
 */
#ifndef KS_RECEIPTS_ATOL_H
#define KS_RECEIPTS_ATOL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/log.h"
#include "units/adapter.h"

#define KS_ATOL_ADAPTER_NAME "atol"

/* Bounds (units last). */
#define KS_ATOL_URL_BYTES_MAX 1024                /* options.url and every URL built from it */
#define KS_ATOL_NAME_BYTES_MAX 128                /* options.groupCode, options.login */
#define KS_ATOL_PASSWORD_BYTES_MAX 256            /* options.credentials */
#define KS_ATOL_TOKEN_BYTES_MAX 1024              /* a token ATOL hands out */
#define KS_ATOL_UUID_BYTES_MAX 64                 /* a document's uuid */
#define KS_ATOL_REPLY_BYTES_MAX (64 * 1024)       /* one answer; a longer one is refused */
#define KS_ATOL_TEXT_BYTES_MAX 200                /* ATOL's error text quoted in a failure */
#define KS_ATOL_TOKENS_MAX 64                     /* (url, login) pairs whose token is cached */
#define KS_ATOL_TOKEN_TTL_MS (23LL * 3600 * 1000) /* ATOL's tokens live 24 h: renew before */
#define KS_ATOL_REQUEST_TIMEOUT_MS_DEFAULT 10000
#define KS_ATOL_REQUEST_TIMEOUT_MS_MIN 100
#define KS_ATOL_REQUEST_TIMEOUT_MS_MAX 60000
#define KS_ATOL_CONNECT_TIMEOUT_MS_MAX 3000 /* the connection's share of a request's bound */
#define KS_ATOL_REPORT_TIMEOUT_MS_DEFAULT (5LL * 60 * 1000) /* wait for the callback */
#define KS_ATOL_REPORT_TIMEOUT_MS_MIN 1000
#define KS_ATOL_POLL_MS 1000 /* sleep between reports when no callback can come */

/* ATOL Online v5 error codes kassa acts on (docs/receipts-atol.md lists what is confirmed). */
#define KS_ATOL_ERR_TOKEN_EXPIRED 11
#define KS_ATOL_ERR_BAD_CREDENTIALS 12
#define KS_ATOL_ERR_EXTERNAL_ID_EXISTS 33
#define KS_ATOL_ERR_NOT_READY 34

struct ks_atol;

/* Makes the adapter; `log` is borrowed (may be NULL) and must outlive it. KS_ERR_NOMEM,
 * KS_ERR_INTERNAL when libcurl cannot start. */
KS_MUST_USE int ks_atol_create(struct ks_log *log, struct ks_atol **out);
/* The adapter (name "atol", no card secrets), to provide as the service
 * KS_FISCAL_ADAPTER_SERVICE_PREFIX "atol". Borrowed from `a`. */
const struct ks_adapter *ks_atol_adapter(struct ks_atol *a);
/* Frees the adapter and wipes its cached tokens. No step may be running. NULL is allowed. */
void ks_atol_free(struct ks_atol *a);
/* Forgets every cached token (an operator changed a password; tests). Thread-safe. */
void ks_atol_forget_tokens(struct ks_atol *a);

/* --- the pure parts, for tests ------------------------------------------------------------ */

/* An ATOL answer (getToken, an operation, a report or a callback body), read. */
struct ks_atol_reply {
    long http_status;                      /* 0 for a callback body */
    int has_error;                         /* "error" is an object */
    int64_t code;                          /* error.code (0 when none) */
    char text[KS_ATOL_TEXT_BYTES_MAX + 1]; /* error.text, printable ASCII or UTF-8, bounded */
    char status[8];                        /* "wait" | "done" | "fail" | "" */
    char uuid[KS_ATOL_UUID_BYTES_MAX + 1];
    const json_t *payload; /* the report's payload object (borrowed from `doc`) */
    const char *token;     /* getToken's token (borrowed from `doc`), or NULL */
    json_t *doc;           /* the parsed answer, owned */
};

/* Reads `len` bytes of `body` (an answer with HTTP status `http_status`; 0 for a callback).
 * KS_ERR_INVALID when it is not a JSON object or a member has the wrong type (`why` says
 * which, never quoting the body). Release `out` with ks_atol_reply_release whatever the
 * result. */
KS_MUST_USE int ks_atol_reply_parse(const char *body, size_t len, long http_status,
                                    struct ks_atol_reply *out, char *why, size_t whylen);
void ks_atol_reply_release(struct ks_atol_reply *r);

/* What an answer means for the session. */
enum ks_atol_verdict {
    KS_ATOL_DONE = 0,      /* registered: payload present */
    KS_ATOL_WAIT,          /* accepted or not ready yet ("wait", error 34) */
    KS_ATOL_DUPLICATE,     /* error 33: the document exists under `uuid` */
    KS_ATOL_TOKEN_EXPIRED, /* error 11: fetch a token again */
    KS_ATOL_FAILED,        /* refused for good: "fail" or a permanent error */
    KS_ATOL_UNREACHABLE,   /* 5xx: the service is not there */
    KS_ATOL_RETRY,         /* transient trouble (408, 429, a malformed 2xx) */
};

/* The verdict of a parsed answer. Pure. */
enum ks_atol_verdict ks_atol_classify(const struct ks_atol_reply *r);

/* The failure code of a refused answer into `out`: "fiscal_failed:<code>", or
 * "fiscal_failed:http_<status>" without an error object, or "fiscal_failed:unknown". */
void ks_atol_failure_code(const struct ks_atol_reply *r, char *out, size_t cap);

/* Copies `text` into `out` (`cap` bytes) fit to quote to people: control characters replaced,
 * bounded, and every occurrence of each non-empty string of `secrets` (n of them; the password,
 * the token) replaced by "***", so a provider that echoes them leaks nothing. */
void ks_atol_scrub(const char *text, const char *const *secrets, size_t n, char *out, size_t cap);

/* Whether `url` may be used as ATOL's base: https://, or http:// to a loopback host
 * (127.0.0.0/8, ::1, localhost), for tests. */
int ks_atol_url_allowed(const char *url);

#endif
