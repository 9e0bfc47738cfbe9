/* callback.c — callback tags and their delivery (see callback.h). */
#include "engine/callback.h"

#include <stdio.h>
#include <string.h>

#include "core/ids.h"

#define NONCE_BYTES_MAX 24
#define NONCE_CHARS (KS_CHARS_LOWER | KS_CHARS_UPPER | KS_CHARS_DIGIT)

int ks_callback_tag_format(const char *ns, const char *id, const char *nonce, char *out,
                           size_t cap)
{
    if (!ks_ns_valid(ns) || !ks_machine_id_valid(id) ||
        !ks_text_valid(nonce, NONCE_BYTES_MAX, NONCE_CHARS, "") ||
        cap < KS_CALLBACK_TAG_BYTES_MAX + 1)
        return KS_ERR_INVALID;
    snprintf(out, cap, "%s~%s~%s", ns, id, nonce);
    return KS_OK;
}

int ks_callback_tag(const char *ns, const char *id, char *out, size_t cap)
{
    char nonce[17];
    int rc = ks_id_random(nonce, 16);
    if (rc != KS_OK)
        return rc;
    return ks_callback_tag_format(ns, id, nonce, out, cap);
}

int ks_callback_tag_parse(const char *tag, char *ns, char *id)
{
    if (!tag || strlen(tag) > KS_CALLBACK_TAG_BYTES_MAX)
        return KS_ERR_INVALID;
    const char *a = strchr(tag, '~');
    const char *b = a ? strchr(a + 1, '~') : NULL;
    if (!a || !b || strchr(b + 1, '~') || b[1] == '\0')
        return KS_ERR_INVALID;
    size_t ns_len = (size_t)(a - tag), id_len = (size_t)(b - a - 1);
    if (ns_len == 0 || ns_len > KS_NS_BYTES_MAX || id_len == 0 || id_len > KS_ID_BYTES_MAX)
        return KS_ERR_INVALID;
    memcpy(ns, tag, ns_len);
    ns[ns_len] = '\0';
    memcpy(id, a + 1, id_len);
    id[id_len] = '\0';
    /* the tag's own length bounds the nonce */
    if (!ks_text_valid(b + 1, KS_CALLBACK_TAG_BYTES_MAX, NONCE_CHARS, ""))
        return KS_ERR_INVALID;
    return ks_ns_valid(ns) && ks_machine_id_valid(id) ? KS_OK : KS_ERR_INVALID;
}

int ks_callback_deliver(struct ks_engine *e, const char *tag, const json_t *payload)
{
    char ns[KS_NS_BYTES_MAX + 1], id[KS_ID_BYTES_MAX + 1];
    int rc = ks_callback_tag_parse(tag, ns, id);
    if (rc != KS_OK)
        return rc;
    json_t *sig = json_pack("{s:s, s:s, s:O}", "type", "callback", "tag", tag, "payload",
                            payload ? payload : json_null());
    if (!sig)
        return KS_ERR_NOMEM;
    rc = ks_engine_signal(e, ns, id, sig);
    json_decref(sig);
    return rc;
}
