/*
 * err.h — kassa's one status vocabulary.
 *
 * Every fallible kassa function returns an `enum ks_err`: 0 is success, every other value is a
 * negative code from the single list below, so a code can be passed up through any layer and
 * still be named (`ks_err_name`) and mapped to an HTTP status (`ks_err_http_status`).
 */
#ifndef KS_CORE_ERR_H
#define KS_CORE_ERR_H

#define KS_ERR_LIST(X)                                                                              \
    X(OK, 0, 200, "ok")                                                                            \
    X(NOMEM, -1, 503, "out of memory")                                                             \
    X(INVALID, -2, 400, "invalid argument")                                                        \
    X(NOT_FOUND, -3, 404, "not found")                                                             \
    X(CONFLICT, -4, 409, "conflict")                                                               \
    X(LIMIT, -5, 413, "limit exceeded")                                                            \
    X(IO, -6, 503, "storage or I/O failure")                                                       \
    X(BUSY, -7, 503, "busy, retry later")                                                          \
    X(REJECTED, -8, 422, "rejected by the business rules")                                         \
    X(MACHINE_FAILED, -9, 409, "machine is failed and needs repair")                               \
    X(PROCESSOR, -10, 500, "processor error")                                                      \
    X(VERSION, -11, 409, "machine changed concurrently")                                           \
    X(IDEM_CONFLICT, -12, 409, "idempotency key bound to a different request")                     \
    X(STOPPED, -13, 503, "shutting down")                                                          \
    X(RETRY, -14, 503, "transient failure, retry")                                                 \
    X(UNAUTHORIZED, -15, 401, "unauthorized")                                                      \
    X(INTERNAL, -16, 500, "internal error")

enum ks_err {
    KS_OK = 0, /* success; KS_ERR_OK is the same value */
#define KS_ERR_ENUM(name, code, http, text) KS_ERR_##name = (code),
    KS_ERR_LIST(KS_ERR_ENUM)
#undef KS_ERR_ENUM
};

/* Stable snake_case name of a code ("not_found"); "unknown" for a value outside the list. */
const char *ks_err_name(int err);
/* One-line English description of a code. */
const char *ks_err_text(int err);
/* The HTTP status a code maps to when it reaches a client. */
int ks_err_http_status(int err);

#define KS_MUST_USE __attribute__((warn_unused_result))

#endif
