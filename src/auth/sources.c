/*
 * sources.c — the merchant key-sources file: which identity providers kassa trusts, the `iss`
 * each one's tokens carry, the parties each may speak for, and its keys (auth.h,
 * ks_auth_sources_load; docs/auth.md, "Configuring the keys").
 *
 * A key is bound to exactly one source, so the key that verifies a token names the source whose
 * issuer and parties the token's claims are then held to (auth.c). The file is validated
 * strictly: an unknown member is more likely a typo that would silently widen or narrow trust
 * than something to ignore.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "core/ids.h"
#include "core/json.h"

#define OWN_ISSUER "kassa" /* the iss of kassa's own tokens: no key source may claim it */

bool ks_auth_source_may(const struct ks_auth_source *s, const char *party_id)
{
    if (!s || !party_id)
        return false;
    assert(s->parties_n >= 0 && s->parties_n <= KS_AUTH_SOURCE_PARTIES_MAX);
    if (s->any_party)
        return true;
    for (int i = 0; i < s->parties_n; i++)
        if (strcmp(s->parties[i], party_id) == 0)
            return true;
    return false;
}

/* `file` relative to the directory of `base` (unless absolute) into `out`. */
static int path_beside(const char *base, const char *file, char *out, size_t cap)
{
    const char *slash = strrchr(base, '/');
    int n;
    if (file[0] == '/' || !slash)
        n = snprintf(out, cap, "%s", file);
    else
        n = snprintf(out, cap, "%.*s/%s", (int)(slash - base), base, file);
    return n > 0 && (size_t)n < cap ? KS_OK : KS_ERR_LIMIT;
}

static int parties_parse(const json_t *v, struct ks_auth_source *s, const char *where, char *why,
                         size_t whylen)
{
    if (json_is_string(v) && strcmp(json_string_value(v), "*") == 0) {
        s->any_party = true;
        return KS_OK;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 ||
        json_array_size(v) > KS_AUTH_SOURCE_PARTIES_MAX) {
        snprintf(why, whylen,
                 "%s: \"parties\" must be a list of 1 to %d party ids, or \"*\" for every party",
                 where, KS_AUTH_SOURCE_PARTIES_MAX);
        return json_is_array(v) && json_array_size(v) > 0 ? KS_ERR_LIMIT : KS_ERR_INVALID;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        const char *p = json_string_value(json_array_get(v, i));
        if (!p || !ks_machine_id_valid(p)) {
            snprintf(why, whylen, "%s: parties[%zu] is not a party id ([A-Za-z0-9._-]{1,64})",
                     where, i);
            return KS_ERR_INVALID;
        }
        if (ks_auth_source_may(s, p)) {
            snprintf(why, whylen, "%s: party \"%s\" is listed twice", where, p);
            return KS_ERR_INVALID;
        }
        snprintf(s->parties[s->parties_n++], sizeof(s->parties[0]), "%s", p);
    }
    return KS_OK;
}

/* One element of "sources": its issuer, parties and keys (appended to `all->keys`). */
static int source_parse(const char *path, json_t *js, int index, struct ks_auth_sources *all,
                        struct ks_log *log, char *why, size_t whylen)
{
    char where[PATH_MAX + 32];
    snprintf(where, sizeof(where), "%s: sources[%d]", path, index);
    if (!json_is_object(js)) {
        snprintf(why, whylen, "%s is not an object", where);
        return KS_ERR_INVALID;
    }
    const char *member;
    json_t *v;
    json_object_foreach(js, member, v)
    {
        if (strcmp(member, "issuer") != 0 && strcmp(member, "parties") != 0 &&
            strcmp(member, "keys_file") != 0 && strcmp(member, "jwks") != 0) {
            snprintf(why, whylen,
                     "%s: unknown member \"%.64s\" (expected issuer, parties, and keys_file or "
                     "jwks)",
                     where, member);
            return KS_ERR_INVALID;
        }
    }
    struct ks_auth_source *s = &all->src[index];
    const char *iss = ks_json_get_str(js, "issuer");
    if (!iss || !ks_auth_text_ok(iss, KS_AUTH_ISSUER_BYTES_MAX)) {
        snprintf(why, whylen,
                 "%s: \"issuer\" (the iss of its tokens) must be 1 to %d printable characters "
                 "without spaces",
                 where, KS_AUTH_ISSUER_BYTES_MAX);
        return KS_ERR_INVALID;
    }
    if (strcmp(iss, OWN_ISSUER) == 0) {
        snprintf(why, whylen, "%s: the issuer \"%s\" is kassa's own", where, OWN_ISSUER);
        return KS_ERR_INVALID;
    }
    for (int i = 0; i < index; i++)
        if (strcmp(all->src[i].issuer, iss) == 0) {
            snprintf(why, whylen, "%s: issuer %s is already sources[%d]'s", where, iss, i);
            return KS_ERR_INVALID;
        }
    snprintf(s->issuer, sizeof(s->issuer), "%s", iss);
    int rc = parties_parse(json_object_get(js, "parties"), s, where, why, whylen);
    if (rc != KS_OK)
        return rc;

    json_t *file = json_object_get(js, "keys_file"), *inline_set = json_object_get(js, "jwks");
    const int before = all->keys.n;
    if ((file != NULL) == (inline_set != NULL)) {
        snprintf(why, whylen, "%s: give exactly one of \"keys_file\" and \"jwks\"", where);
        return KS_ERR_INVALID;
    }
    if (file) {
        char keys_path[PATH_MAX];
        if (!json_is_string(file) || json_string_length(file) == 0 ||
            path_beside(path, json_string_value(file), keys_path, sizeof(keys_path)) != KS_OK) {
            snprintf(why, whylen, "%s: \"keys_file\" must be a file path", where);
            return KS_ERR_INVALID;
        }
        char inner[PATH_MAX + 160] = "";
        rc = ks_auth_keys_load(keys_path, &all->keys, index, log, inner, sizeof(inner));
        if (rc != KS_OK)
            snprintf(why, whylen, "%s: %s", where, inner);
    } else {
        if (!json_is_object(inline_set)) {
            snprintf(why, whylen, "%s: \"jwks\" must be a JWK set {\"keys\":[...]}", where);
            return KS_ERR_INVALID;
        }
        char label[PATH_MAX + 40];
        snprintf(label, sizeof(label), "%s.jwks", where);
        rc = ks_auth_keys_add_jwks(inline_set, label, &all->keys, index, log, why, whylen);
    }
    if (rc != KS_OK)
        return rc;
    s->keys_n = all->keys.n - before;
    assert(s->keys_n > 0);
    return KS_OK;
}

/* One key in two sources would let either provider's tokens pass as the other's. */
static int keys_distinct(const struct ks_auth_sources *all, const char *path, char *why,
                         size_t whylen)
{
    const struct ks_auth_keyset *ks = &all->keys;
    for (int i = 0; i < ks->n; i++)
        for (int j = i + 1; j < ks->n; j++)
            if (ks->keys[i].source != ks->keys[j].source &&
                strcmp(ks->keys[i].thumb, ks->keys[j].thumb) == 0) {
                snprintf(why, whylen, "%s: sources[%d] and sources[%d] hold the same key", path,
                         ks->keys[i].source, ks->keys[j].source);
                return KS_ERR_INVALID;
            }
    return KS_OK;
}

/* The file is a bare key file (today's JWK set or PEM), not a key-sources file. */
static int bare_key_file(const char *path, char *why, size_t whylen)
{
    snprintf(why, whylen,
             "%s is a key file, not a key-sources file: name the issuer and the parties its "
             "keys may speak for, as {\"sources\":[{\"issuer\":\"...\",\"parties\":[...],"
             "\"keys_file\":\"%s\"}]} (docs/auth.md, \"Configuring the keys\")",
             path, strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
    return KS_ERR_INVALID;
}

static int sources_parse(const char *path, const char *text, size_t len,
                         struct ks_auth_sources *all, struct ks_log *log, char *why, size_t whylen)
{
    json_t *doc = NULL;
    char jwhy[128] = "";
    size_t at = 0;
    while (at < len && strchr(" \t\r\n", text[at]))
        at++;
    if (at == len || text[at] != '{')
        return bare_key_file(path, why, whylen);
    if (ks_json_parse(text, len, &doc, jwhy, sizeof(jwhy)) != KS_OK) {
        snprintf(why, whylen, "%s: not valid JSON: %s", path, jwhy);
        return KS_ERR_INVALID;
    }
    int rc = KS_ERR_INVALID;
    json_t *list = json_object_get(doc, "sources");
    if (!list && (json_object_get(doc, "keys") || json_object_get(doc, "kty"))) {
        rc = bare_key_file(path, why, whylen);
        goto out;
    }
    if (!json_is_object(doc) || json_object_size(doc) != 1 || !json_is_array(list) ||
        json_array_size(list) == 0) {
        snprintf(why, whylen, "%s: expected {\"sources\":[...]} with one or more key sources",
                 path);
        goto out;
    }
    if (json_array_size(list) > KS_AUTH_SOURCES_MAX) {
        snprintf(why, whylen, "%s: more than %d key sources", path, KS_AUTH_SOURCES_MAX);
        rc = KS_ERR_LIMIT;
        goto out;
    }
    rc = KS_OK;
    for (size_t i = 0; i < json_array_size(list) && rc == KS_OK; i++) {
        rc = source_parse(path, json_array_get(list, i), (int)i, all, log, why, whylen);
        if (rc == KS_OK)
            all->n++;
    }
    if (rc == KS_OK)
        rc = keys_distinct(all, path, why, whylen);
out:
    json_decref(doc);
    return rc;
}

/* Reads at most `max` bytes of `path` into a new NUL-terminated buffer. */
static int text_read(const char *path, size_t max, char **out, size_t *outlen, char *why,
                     size_t whylen)
{
    *out = NULL;
    *outlen = 0;
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(why, whylen, "cannot open merchant key-sources file %s: %s", path,
                 strerror(errno));
        return KS_ERR_IO;
    }
    int rc = KS_OK;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    if (!buf) {
        rc = KS_ERR_NOMEM;
    } else if (ferror(f)) {
        snprintf(why, whylen, "cannot read merchant key-sources file %s", path);
        rc = KS_ERR_IO;
    } else if (n > max) {
        snprintf(why, whylen, "%s is larger than %zu bytes", path, max);
        rc = KS_ERR_LIMIT;
    }
    fclose(f);
    if (rc != KS_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return KS_OK;
}

int ks_auth_sources_load(const char *path, struct ks_log *log, struct ks_auth_sources **out,
                         char *why, size_t whylen)
{
    assert(path != NULL && out != NULL);
    *out = NULL;
    if (!path[0]) {
        snprintf(why, whylen, "the merchant key-sources path is empty");
        return KS_ERR_INVALID;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = text_read(path, KS_AUTH_SOURCES_FILE_BYTES_MAX, &text, &len, why, whylen);
    if (rc != KS_OK)
        return rc;
    struct ks_auth_sources *all = calloc(1, sizeof(*all));
    if (!all) {
        free(text);
        return KS_ERR_NOMEM;
    }
    rc = sources_parse(path, text, len, all, log, why, whylen);
    free(text);
    if (rc != KS_OK) {
        ks_auth_sources_free(all);
        return rc;
    }
    assert(all->n >= 1 && all->keys.n >= all->n);
    *out = all;
    return KS_OK;
}

void ks_auth_sources_free(struct ks_auth_sources *s)
{
    if (!s)
        return;
    ks_auth_keys_release(&s->keys);
    free(s);
}
