/* json.c — strict parsing and canonical output (see json.h). */
#include "core/json.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "core/ids.h"
#include "core/limits.h"

/* Measures the nesting depth of `text` without parsing it fully: brackets inside strings do not
 * count. Stops early once the bound is crossed. */
static int json_depth_exceeds(const char *text, size_t len, int max)
{
    int depth = 0, in_str = 0, esc = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"')
            in_str = 1;
        else if (c == '{' || c == '[') {
            if (++depth > max)
                return 1;
        } else if (c == '}' || c == ']')
            depth--;
    }
    return 0;
}

int ks_json_parse(const char *text, size_t len, json_t **out, char *why, size_t whylen)
{
    *out = NULL;
    if (json_depth_exceeds(text, len, KS_JSON_DEPTH_MAX)) {
        snprintf(why, whylen, "JSON nesting deeper than %d levels", KS_JSON_DEPTH_MAX);
        return KS_ERR_LIMIT;
    }
    json_error_t e;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    if (!v) {
        /* jansson's text names the problem; it quotes at most a token of the input, which we
         * drop to keep secrets (card numbers in a body) out of error messages. */
        const char *msg = "malformed JSON";
        if (strstr(e.text, "duplicate object key"))
            msg = "duplicate object key";
        else if (strstr(e.text, "UTF-8") || strstr(e.text, "unable to decode"))
            msg = "invalid UTF-8";
        else if (strstr(e.text, "end of file"))
            msg = "unexpected end of input";
        snprintf(why, whylen, "%s at line %d column %d", msg, e.line, e.column);
        return KS_ERR_INVALID;
    }
    *out = v;
    return KS_OK;
}

char *ks_json_canonical(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

int ks_json_fingerprint(const json_t *v, char out[65])
{
    char *text = ks_json_canonical(v);
    if (!text)
        return KS_ERR_NOMEM;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)text, strlen(text), md);
    free(text);
    ks_hex(md, sizeof(md), out);
    return KS_OK;
}

int ks_json_get_int(const json_t *obj, const char *key, int64_t dflt, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v)
        return KS_ERR_NOT_FOUND;
    if (!json_is_integer(v))
        return KS_ERR_INVALID;
    *out = json_integer_value(v);
    return KS_OK;
}

const char *ks_json_get_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
