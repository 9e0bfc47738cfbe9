/* router.c — method + path pattern dispatch (see router.h). */
#include "http/router.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

_Static_assert(8 + KS_HTTP_PATH_SEGMENTS_MAX <= 32, "KS_HTTP_ROUTE_SECRET_PARAM bits fit");

void ks_http_router_init(struct ks_http_router *r)
{
    memset(r, 0, sizeof(*r));
}

static int method_valid(const char *m, size_t cap)
{
    size_t n = strlen(m);
    if (n == 0 || n >= cap)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return 0;
    return 1;
}

int ks_http_router_add(struct ks_http_router *r, const char *method, const char *pattern,
                       unsigned flags, ks_http_handler handler, void *ctx)
{
    assert(r != NULL);
    if (!method || !pattern || !handler || pattern[0] != '/')
        return KS_ERR_INVALID;
    if (r->routes_n >= KS_HTTP_ROUTES_MAX)
        return KS_ERR_LIMIT;
    struct ks_http_route *rt = &r->routes[r->routes_n];
    memset(rt, 0, sizeof(*rt));
    if (!method_valid(method, sizeof(rt->method)) || strlen(pattern) >= sizeof(rt->pattern))
        return KS_ERR_INVALID;
    memcpy(rt->method, method, strlen(method) + 1);
    memcpy(rt->pattern, pattern, strlen(pattern) + 1);

    const char *p = pattern + 1;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || len >= sizeof(rt->segments[0]) ||
            rt->segments_n >= KS_HTTP_PATH_SEGMENTS_MAX)
            return KS_ERR_INVALID;
        char *seg = rt->segments[rt->segments_n];
        if (p[0] == '{') {
            if (len < 3 || p[len - 1] != '}')
                return KS_ERR_INVALID;
            memcpy(seg, p + 1, len - 2);
            seg[len - 2] = '\0';
            rt->is_param[rt->segments_n] = 1;
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len))
                return KS_ERR_INVALID;
            memcpy(seg, p, len);
            seg[len] = '\0';
        }
        rt->segments_n++;
        if (!end)
            break;
        p = end + 1;
        if (*p == '\0') /* trailing slash */
            return KS_ERR_INVALID;
    }
    size_t params_n = 0;
    for (size_t i = 0; i < rt->segments_n; i++)
        params_n += rt->is_param[i];
    if (params_n < KS_HTTP_PATH_SEGMENTS_MAX && (flags >> 8) >> params_n != 0)
        return KS_ERR_INVALID; /* a secret parameter the pattern does not have */
    for (size_t i = 0; i < r->routes_n; i++)
        if (strcmp(r->routes[i].method, method) == 0 && strcmp(r->routes[i].pattern, pattern) == 0)
            return KS_ERR_CONFLICT;
    rt->flags = flags;
    rt->handler = handler;
    rt->ctx = ctx;
    r->routes_n++;
    return KS_OK;
}

/* Splits `path` in place into segments. Returns the count, or -1 if the path is not absolute,
 * has an empty segment, or has too many segments. "/" has zero segments. */
static int split_path(char *path, char *segs[KS_HTTP_PATH_SEGMENTS_MAX])
{
    if (path[0] != '/')
        return -1;
    if (path[1] == '\0')
        return 0;
    int n = 0;
    char *p = path + 1;
    for (;;) {
        if (n >= KS_HTTP_PATH_SEGMENTS_MAX)
            return -1;
        char *end = strchr(p, '/');
        if (end == p || *p == '\0')
            return -1;
        segs[n++] = p;
        if (!end)
            return n;
        *end = '\0';
        p = end + 1;
    }
}

/* How well `rt` matches the segments: -1 no match, else the number of literal segments (more
 * literals = more specific). */
static int route_score(const struct ks_http_route *rt, char *const *segs, int n)
{
    if ((size_t)n != rt->segments_n)
        return -1;
    int literals = 0;
    for (int i = 0; i < n; i++) {
        if (rt->is_param[i])
            continue;
        if (strcmp(rt->segments[i], segs[i]) != 0)
            return -1;
        literals++;
    }
    return literals;
}

static void allow_add(char *allow, size_t cap, const char *method)
{
    /* Skip a method already listed (two patterns of one path shape). */
    size_t mlen = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += mlen)
        if ((p == allow || p[-1] == ' ') && (p[mlen] == ',' || p[mlen] == '\0'))
            return;
    size_t used = strlen(allow);
    size_t need = (used ? 2 : 0) + mlen;
    if (used + need + 1 > cap)
        return;
    if (used) {
        memcpy(allow + used, ", ", 2);
        used += 2;
    }
    memcpy(allow + used, method, mlen + 1);
}

int ks_http_router_match(const struct ks_http_router *r, const char *method, char *path,
                         struct ks_http_match *m)
{
    assert(r != NULL && method != NULL && path != NULL && m != NULL);
    memset(m, 0, sizeof(*m));
    char *segs[KS_HTTP_PATH_SEGMENTS_MAX];
    int n = split_path(path, segs);
    if (n < 0)
        return KS_ERR_NOT_FOUND;

    const struct ks_http_route *best = NULL;
    int best_score = -1, path_known = 0;
    for (size_t i = 0; i < r->routes_n; i++) {
        const struct ks_http_route *rt = &r->routes[i];
        int score = route_score(rt, segs, n);
        if (score < 0)
            continue;
        path_known = 1;
        if (strcmp(rt->method, method) != 0) {
            allow_add(m->allow, sizeof(m->allow), rt->method);
            continue;
        }
        if (score > best_score) {
            best = rt;
            best_score = score;
        }
    }
    if (!best)
        return path_known ? KS_ERR_CONFLICT : KS_ERR_NOT_FOUND;

    m->route = best;
    for (int i = 0; i < n; i++)
        if (best->is_param[i])
            m->params[m->params_n++] = segs[i];
    return KS_OK;
}

/* A segment of a path being redacted: borrowed bytes, not NUL-terminated. */
struct seg {
    const char *p;
    size_t len;
};

/* Bit i set: the path's i-th segment sits where `rt` has a secret parameter, and every literal
 * of `rt` up to there (or up to the path's end) equals the path's segment. */
static uint32_t route_secrets(const struct ks_http_route *rt, const struct seg *segs, size_t n)
{
    uint32_t mask = 0;
    size_t k = n < rt->segments_n ? n : rt->segments_n, param = 0;
    for (size_t i = 0; i < k; i++) {
        if (rt->is_param[i]) {
            if (rt->flags & KS_HTTP_ROUTE_SECRET_PARAM(param))
                mask |= 1u << i;
            param++;
        } else if (strlen(rt->segments[i]) != segs[i].len ||
                   memcmp(rt->segments[i], segs[i].p, segs[i].len) != 0) {
            return 0;
        }
    }
    return mask;
}

int ks_http_router_redact(const struct ks_http_router *r, const char *path, char *out, size_t cap)
{
    assert(r != NULL && path != NULL && out != NULL && cap > 0);
    struct seg segs[KS_HTTP_PATH_SEGMENTS_MAX];
    size_t n = 0;
    /* Leading segments only: no pattern is longer, so later ones are never secret. Empty
     * segments count, as they do not match any literal. */
    for (const char *p = path; *p == '/' && n < KS_HTTP_PATH_SEGMENTS_MAX; n++) {
        const char *end = strchr(p + 1, '/');
        segs[n].p = p + 1;
        segs[n].len = end ? (size_t)(end - p - 1) : strlen(p + 1);
        p = segs[n].p + segs[n].len;
    }
    uint32_t mask = 0;
    for (size_t i = 0; i < r->routes_n; i++)
        if (r->routes[i].flags >> 8)
            mask |= route_secrets(&r->routes[i], segs, n);

    size_t w = 0, len = strlen(path);
    const char *from = path;
    for (size_t i = 0; i < n; i++) {
        if (!(mask & (1u << i)))
            continue;
        size_t keep = (size_t)(segs[i].p - from), mlen = strlen(KS_HTTP_LOG_REDACTED);
        if (w + keep + mlen >= cap)
            goto out_limit;
        memcpy(out + w, from, keep);
        memcpy(out + w + keep, KS_HTTP_LOG_REDACTED, mlen);
        w += keep + mlen;
        from = segs[i].p + segs[i].len;
    }
    size_t rest = len - (size_t)(from - path);
    if (w + rest >= cap)
        goto out_limit;
    memcpy(out + w, from, rest + 1);
    return KS_OK;

out_limit:
    out[0] = '\0';
    return KS_ERR_LIMIT;
}
