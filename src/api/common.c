/* common.c — small helpers shared by the API handlers (see api.h). */
#include "api/api.h"

#include "core/clock.h"

json_t *ks_api_time(int64_t ms)
{
    if (ms == 0)
        return json_null();
    char buf[40];
    ks_time_rfc3339(ms, buf, sizeof(buf));
    return json_string(buf);
}

json_t *ks_api_stored_json(const char *text, struct ks_log *log, const char *trace)
{
    if (!text)
        return json_null();
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v) {
        ks_logf(log, KS_LOG_ERROR, trace, "stored JSON does not parse: %s", e.text);
        return json_null();
    }
    return v;
}

int ks_api_callback_status(int rc, const char **code, const char **message)
{
    switch (rc) {
    case KS_OK:
        *code = "ok";
        *message = "Delivered.";
        return 200;
    case KS_ERR_INVALID:
        *code = "invalidRequest";
        *message = "This confirmation link is not valid.";
        return 400;
    case KS_ERR_NOT_FOUND:
        *code = "notFound";
        *message = "No payment waits for this confirmation.";
        return 404;
    case KS_ERR_REJECTED:
    case KS_ERR_CONFLICT:
    case KS_ERR_MACHINE_FAILED:
        *code = "operationNotPermitted";
        *message = "This payment no longer waits for a confirmation.";
        return 409;
    case KS_ERR_LIMIT:
        *code = "limitExceeded";
        *message = "The payment has too much history.";
        return 413;
    case KS_ERR_NOMEM:
    case KS_ERR_IO:
    case KS_ERR_BUSY:
    case KS_ERR_STOPPED:
    case KS_ERR_RETRY:
    case KS_ERR_VERSION:
        *code = "unavailable";
        *message = "The payment could not be reached just now; please try again.";
        return 503;
    default:
        *code = "internalError";
        *message = "Something went wrong.";
        return 500;
    }
}
