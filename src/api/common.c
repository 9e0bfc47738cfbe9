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
