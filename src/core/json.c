/* json.c — strict parsing and canonical output (see json.h). */
#include "core/json.h"

#include <assert.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/ids.h"
#include "core/limits.h"

/* What json_scan found first, if anything. */
enum json_scan_result { SCAN_OK = 0, SCAN_TOO_DEEP, SCAN_TOO_MANY_VALUES };

/* Measures `text` without parsing it: the nesting depth, and a bound on the number of values
 * (objects and arrays, plus commas: every element or member after a container's first follows
 * one, so values <= containers + commas + 1). Brackets and commas inside strings do not count.
 * Stops at the first bound crossed. Malformed text is left for the parser to refuse; this scan
 * only has to be right about well-formed text. */
static enum json_scan_result json_scan(const char *text, size_t len, int depth_max,
                                       size_t values_max)
{
    int depth = 0, in_str = 0, esc = 0;
    size_t values = 1;
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
            if (++depth > depth_max)
                return SCAN_TOO_DEEP;
            if (++values > values_max)
                return SCAN_TOO_MANY_VALUES;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',') {
            if (++values > values_max)
                return SCAN_TOO_MANY_VALUES;
        }
    }
    return SCAN_OK;
}

int ks_json_values_check(const char *text, size_t len, size_t values_max)
{
    assert(text != NULL || len == 0);
    /* Depth is not this check's business: INT_MAX keeps it out of the way. */
    return json_scan(text, len, INT_MAX, values_max) == SCAN_TOO_MANY_VALUES ? KS_ERR_LIMIT : KS_OK;
}

int ks_json_parse(const char *text, size_t len, json_t **out, char *why, size_t whylen)
{
    *out = NULL;
    if (json_scan(text, len, KS_JSON_DEPTH_MAX, SIZE_MAX) != SCAN_OK) {
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
