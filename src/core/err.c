/* err.c — names, texts and HTTP statuses of kassa's status codes (see err.h). */
#include "core/err.h"

const char *ks_err_name(int err)
{
    switch (err) {
    case KS_ERR_OK: return "ok";
    case KS_ERR_NOMEM: return "out_of_memory";
    case KS_ERR_INVALID: return "invalid_argument";
    case KS_ERR_NOT_FOUND: return "not_found";
    case KS_ERR_CONFLICT: return "conflict";
    case KS_ERR_LIMIT: return "limit_exceeded";
    case KS_ERR_IO: return "storage_failure";
    case KS_ERR_BUSY: return "busy";
    case KS_ERR_REJECTED: return "rejected";
    case KS_ERR_MACHINE_FAILED: return "machine_failed";
    case KS_ERR_PROCESSOR: return "processor_error";
    case KS_ERR_VERSION: return "concurrent_change";
    case KS_ERR_IDEM_CONFLICT: return "idempotency_conflict";
    case KS_ERR_STOPPED: return "stopped";
    case KS_ERR_RETRY: return "retry";
    case KS_ERR_UNAUTHORIZED: return "unauthorized";
    case KS_ERR_INTERNAL: return "internal_error";
    default: return "unknown";
    }
}

const char *ks_err_text(int err)
{
    switch (err) {
#define KS_ERR_TEXT(name, code, http, text)                                                        \
    case (code): return text;
        KS_ERR_LIST(KS_ERR_TEXT)
#undef KS_ERR_TEXT
    default: return "unknown error";
    }
}

int ks_err_http_status(int err)
{
    switch (err) {
#define KS_ERR_HTTP(name, code, http, text)                                                        \
    case (code): return http;
        KS_ERR_LIST(KS_ERR_HTTP)
#undef KS_ERR_HTTP
    default: return 500;
    }
}
