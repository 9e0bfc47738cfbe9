/*
 * loadgen_json.c — the bounded JSON scanner, the string writer and the readers of kassa's
 * replies for kassa-loadgen (contracts in loadgen_json.h).
 */
#include "loadgen_json.h"

#include <assert.h>
#include <string.h>

#include "core/ids.h"

/* --- scanner --------------------------------------------------------------------------------- */

void kb_lg_json_init(struct kb_lg_json *j, const char *text, size_t len)
{
    assert(text != NULL || len == 0);
    j->p = text;
    j->end = text + len;
    j->depth = 0;
    j->objects = j->started = 0;
    j->failed = 0;
}

static int fail(struct kb_lg_json *j)
{
    j->failed = 1;
    return -1;
}

static void skip_ws(struct kb_lg_json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

enum kb_lg_json_type kb_lg_json_type(struct kb_lg_json *j)
{
    if (j->failed)
        return KB_LG_JSON_BAD;
    skip_ws(j);
    if (j->p == j->end)
        return KB_LG_JSON_BAD;
    switch (*j->p) {
    case '{': return KB_LG_JSON_OBJECT;
    case '[': return KB_LG_JSON_ARRAY;
    case '"': return KB_LG_JSON_STRING;
    case 't': return KB_LG_JSON_TRUE;
    case 'f': return KB_LG_JSON_FALSE;
    case 'n': return KB_LG_JSON_NULL;
    default:
        return *j->p == '-' || (*j->p >= '0' && *j->p <= '9') ? KB_LG_JSON_NUMBER : KB_LG_JSON_BAD;
    }
}

int kb_lg_json_enter(struct kb_lg_json *j)
{
    enum kb_lg_json_type t = kb_lg_json_type(j);
    if ((t != KB_LG_JSON_OBJECT && t != KB_LG_JSON_ARRAY) || j->depth >= KB_LG_JSON_DEPTH_MAX)
        return fail(j);
    uint64_t bit = (uint64_t)1 << j->depth;
    if (t == KB_LG_JSON_OBJECT)
        j->objects |= bit;
    else
        j->objects &= ~bit;
    j->started &= ~bit;
    j->depth++;
    j->p++;
    return 0;
}

int kb_lg_json_next(struct kb_lg_json *j)
{
    assert(j->depth > 0 && "next is called inside a container");
    if (j->failed)
        return -1;
    skip_ws(j);
    if (j->p == j->end)
        return fail(j);
    uint64_t bit = (uint64_t)1 << (j->depth - 1);
    char close = (j->objects & bit) ? '}' : ']';
    if (*j->p == close) {
        j->p++;
        j->depth--;
        return 0;
    }
    if (j->started & bit) {
        if (*j->p != ',')
            return fail(j);
        j->p++; /* a value must follow: "[1,]" fails when it is read */
    }
    j->started |= bit;
    return 1;
}

static int hex4(const char *p, unsigned *v)
{
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        int d = ks_hex_value(p[i]);
        if (d < 0)
            return -1;
        x = x * 16 + (unsigned)d;
    }
    *v = x;
    return 0;
}

/* The length of the UTF-8 sequence at p (at most n bytes), or 0 when it is not valid UTF-8
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/* Appends the code point cp in UTF-8 to out (room checked by the caller: 4 bytes). */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Appends piece[0..len) to buf (cap) at *n; when it does not fit, marks the string long after
 * taking what fits of it if it is ASCII (`ascii`: any cut is between characters). */
static void put_piece(char *buf, size_t cap, size_t *n, int *long_, const void *piece, size_t len,
                      int ascii)
{
    if (buf == NULL || *long_)
        return;
    size_t room = cap - 1 - *n;
    if (len > room) {
        *long_ = 1;
        if (!ascii)
            return;
        len = room;
    }
    memcpy(buf + *n, piece, len);
    *n += len;
}

/* A string at j->p: decoded into buf when buf is not NULL (see kb_lg_json_string). */
static int scan_string(struct kb_lg_json *j, char *buf, size_t cap, size_t *len_out)
{
    if (kb_lg_json_type(j) != KB_LG_JSON_STRING)
        return fail(j);
    assert(buf == NULL || cap > 0);
    const unsigned char *p = (const unsigned char *)j->p + 1, *end = (const unsigned char *)j->end;
    size_t n = 0;
    int long_ = 0;
    /* Bounded by the text: each turn consumes at least one byte. */
    for (;;) {
        /* The common case first: a run of printable ASCII, copied at once. */
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        put_piece(buf, cap, &n, &long_, run, (size_t)(p - run), 1);
        if (p == end)
            return fail(j);
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(j);
        if (c >= 0x80) {
            size_t plen = utf8_len(p, (size_t)(end - p));
            if (plen == 0)
                return fail(j);
            put_piece(buf, cap, &n, &long_, p, plen, 0);
            p += plen;
            continue;
        }
        /* an escape */
        if (end - p < 2)
            return fail(j);
        char tmp[4];
        size_t plen = 1;
        unsigned cp;
        switch (p[1]) {
        case '"': tmp[0] = '"'; break;
        case '\\': tmp[0] = '\\'; break;
        case '/': tmp[0] = '/'; break;
        case 'b': tmp[0] = '\b'; break;
        case 'f': tmp[0] = '\f'; break;
        case 'n': tmp[0] = '\n'; break;
        case 'r': tmp[0] = '\r'; break;
        case 't': tmp[0] = '\t'; break;
        case 'u':
            if (end - p < 6 || hex4((const char *)p + 2, &cp) != 0 || cp == 0 ||
                (cp >= 0xdc00 && cp <= 0xdfff))
                return fail(j);                 /* \u0000 and a lone low surrogate are refused */
            if (cp >= 0xd800 && cp <= 0xdbff) { /* a high surrogate: its pair follows */
                unsigned low;
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
                    hex4((const char *)p + 8, &low) != 0 || low < 0xdc00 || low > 0xdfff)
                    return fail(j);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                p += 6;
            }
            plen = put_utf8(tmp, cp);
            p += 4;
            break;
        default: return fail(j);
        }
        p += 2;
        put_piece(buf, cap, &n, &long_, tmp, plen, 0);
    }
    j->p = (const char *)p + 1;
    if (buf != NULL)
        buf[n] = '\0';
    if (len_out != NULL)
        *len_out = n;
    return long_;
}

int kb_lg_json_string(struct kb_lg_json *j, char *buf, size_t cap, size_t *len)
{
    assert(buf != NULL && cap > 0);
    return scan_string(j, buf, cap, len);
}

int kb_lg_json_key(struct kb_lg_json *j, char *buf, size_t cap)
{
    assert(j->depth > 0 && (j->objects & ((uint64_t)1 << (j->depth - 1))));
    int rc = scan_string(j, buf, cap, NULL);
    if (rc < 0)
        return rc;
    skip_ws(j);
    if (j->p == j->end || *j->p != ':')
        return fail(j);
    j->p++;
    return rc;
}

static int is_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

/* A number at j->p: 0 integer (*v when v is not NULL), 1 with a fraction or exponent, -1. */
static int scan_number(struct kb_lg_json *j, int64_t *v)
{
    if (kb_lg_json_type(j) != KB_LG_JSON_NUMBER)
        return fail(j);
    const char *p = j->p, *end = j->end;
    int neg = *p == '-';
    if (neg)
        p++;
    if (!is_digit(p, end))
        return fail(j);
    uint64_t mag = 0;
    int over = 0;
    if (*p == '0') {
        p++;
    } else {
        for (; is_digit(p, end); p++) {
            unsigned d = (unsigned)(*p - '0');
            if (mag > (UINT64_MAX - d) / 10)
                over = 1;
            else
                mag = mag * 10 + d;
        }
    }
    int real = 0;
    if (p < end && *p == '.') {
        p++;
        if (!is_digit(p, end))
            return fail(j);
        while (is_digit(p, end))
            p++;
        real = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!is_digit(p, end))
            return fail(j);
        while (is_digit(p, end))
            p++;
        real = 1;
    }
    j->p = p;
    if (real)
        return 1;
    if (over || mag > (uint64_t)INT64_MAX + (uint64_t)neg)
        return fail(j); /* like jansson: an integer out of range is not accepted */
    if (v != NULL)
        *v = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return 0;
}

int kb_lg_json_int(struct kb_lg_json *j, int64_t *v)
{
    return scan_number(j, v);
}

static int scan_literal(struct kb_lg_json *j, const char *word, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return fail(j);
    j->p += n;
    return 0;
}

/* One scalar value. */
static int skip_scalar(struct kb_lg_json *j, enum kb_lg_json_type t)
{
    switch (t) {
    case KB_LG_JSON_STRING: return scan_string(j, NULL, 0, NULL);
    case KB_LG_JSON_NUMBER: return scan_number(j, NULL) < 0 ? -1 : 0;
    case KB_LG_JSON_TRUE: return scan_literal(j, "true", 4);
    case KB_LG_JSON_FALSE: return scan_literal(j, "false", 5);
    case KB_LG_JSON_NULL: return scan_literal(j, "null", 4);
    case KB_LG_JSON_OBJECT:
    case KB_LG_JSON_ARRAY:
    case KB_LG_JSON_BAD: break;
    }
    return fail(j);
}

int kb_lg_json_skip(struct kb_lg_json *j)
{
    enum kb_lg_json_type t = kb_lg_json_type(j);
    if (t != KB_LG_JSON_OBJECT && t != KB_LG_JSON_ARRAY)
        return skip_scalar(j, t);
    unsigned base = j->depth;
    if (kb_lg_json_enter(j) != 0)
        return -1;
    /* Bounded by the text: each turn consumes at least one byte. */
    while (j->depth > base) {
        int more = kb_lg_json_next(j);
        if (more < 0)
            return -1;
        if (more == 0)
            continue;
        if ((j->objects & ((uint64_t)1 << (j->depth - 1))) && kb_lg_json_key(j, NULL, 0) < 0)
            return -1;
        t = kb_lg_json_type(j);
        if (t == KB_LG_JSON_OBJECT || t == KB_LG_JSON_ARRAY) {
            if (kb_lg_json_enter(j) != 0)
                return -1;
        } else if (skip_scalar(j, t) != 0) {
            return -1;
        }
    }
    return 0;
}

int kb_lg_json_done(struct kb_lg_json *j)
{
    if (j->failed || j->depth != 0)
        return -1;
    skip_ws(j);
    return j->p == j->end ? 0 : fail(j);
}

/* --- writer ---------------------------------------------------------------------------------- */

int kb_lg_json_put_string(char *buf, size_t cap, size_t *at, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = *at;
    assert(o <= cap);
    if (cap - o < 1)
        return -1;
    buf[o++] = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t en = 0;
        const char *piece = esc;
        size_t len = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            en = 2;
        } else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            en = 6;
        } else {
            len = utf8_len((const unsigned char *)s + i, n - i);
            if (len == 0)
                return -1;
            piece = s + i;
            en = len;
        }
        if (cap - o < en)
            return -1;
        memcpy(buf + o, piece, en);
        o += en;
        i += len;
    }
    if (cap - o < 1)
        return -1;
    buf[o++] = '"';
    *at = o;
    return 0;
}

/* --- kassa's replies ------------------------------------------------------------------------- */

/* What a looked-up field turned out to be. */
enum field { F_ABSENT, F_STRING, F_LONG, F_OTHER };

/* The value next in j into buf when it is a string; anything else is skipped. 0, or -1 when the
 * text is malformed. */
static int read_field(struct kb_lg_json *j, char *buf, size_t cap, enum field *f)
{
    if (kb_lg_json_type(j) != KB_LG_JSON_STRING) {
        *f = F_OTHER;
        return kb_lg_json_skip(j);
    }
    int rc = kb_lg_json_string(j, buf, cap, NULL);
    if (rc < 0)
        return -1;
    *f = rc == 0 ? F_STRING : F_LONG;
    return 0;
}

/* The members of the object next in j: for each whose key is one of keys[0..n), its value is
 * read into bufs[i]; the others are skipped. An object read again (a duplicate key) starts
 * afresh. A value that is not an object leaves every field absent. 0, or -1 when malformed. */
static int read_object(struct kb_lg_json *j, size_t n, const char *const *keys, char *const *bufs,
                       const size_t *caps, enum field *f)
{
    for (size_t i = 0; i < n; i++)
        f[i] = F_ABSENT;
    if (kb_lg_json_type(j) != KB_LG_JSON_OBJECT)
        return kb_lg_json_skip(j);
    if (kb_lg_json_enter(j) != 0)
        return -1;
    int more;
    /* Bounded by the text: each member consumes bytes. */
    while ((more = kb_lg_json_next(j)) == 1) {
        char key[32];
        int rc = kb_lg_json_key(j, key, sizeof(key));
        if (rc < 0)
            return -1;
        size_t i = 0;
        while (rc == 0 && i < n && strcmp(key, keys[i]) != 0)
            i++;
        if (rc == 0 && i < n)
            rc = read_field(j, bufs[i], caps[i], &f[i]);
        else
            rc = kb_lg_json_skip(j);
        if (rc != 0)
            return -1;
    }
    return more;
}

/* After the top-level value: KB_LG_REPLY_NOT_JSON, or `rc`. */
static int finish(struct kb_lg_json *j, int rc)
{
    return kb_lg_json_done(j) == 0 ? rc : KB_LG_REPLY_NOT_JSON;
}

/* Checks the rest of a reply whose top-level value is not what a reader wants: like jansson,
 * only an object or an array is a JSON reply. */
static int wrong_top(struct kb_lg_json *j)
{
    enum kb_lg_json_type t = kb_lg_json_type(j);
    if (t != KB_LG_JSON_OBJECT && t != KB_LG_JSON_ARRAY)
        return KB_LG_REPLY_NOT_JSON;
    return kb_lg_json_skip(j) == 0 ? finish(j, KB_LG_REPLY_SHAPE) : KB_LG_REPLY_NOT_JSON;
}

int kb_lg_reply_invoice(const char *body, size_t len, char *id, size_t id_cap, char *token,
                        size_t token_cap)
{
    struct kb_lg_json j;
    kb_lg_json_init(&j, body, len);
    if (kb_lg_json_type(&j) != KB_LG_JSON_OBJECT)
        return wrong_top(&j);
    static const char *const id_key[] = {"id"}, *const token_key[] = {"payload"};
    enum field fid = F_ABSENT, ftok = F_ABSENT;
    if (kb_lg_json_enter(&j) != 0)
        return KB_LG_REPLY_NOT_JSON;
    int more;
    while ((more = kb_lg_json_next(&j)) == 1) {
        char key[32];
        int rc = kb_lg_json_key(&j, key, sizeof(key));
        if (rc == 0 && strcmp(key, "invoice") == 0)
            rc = read_object(&j, 1, id_key, &id, &id_cap, &fid);
        else if (rc == 0 && strcmp(key, "invoiceAccessToken") == 0)
            rc = read_object(&j, 1, token_key, &token, &token_cap, &ftok);
        else if (rc >= 0)
            rc = kb_lg_json_skip(&j);
        if (rc != 0)
            return KB_LG_REPLY_NOT_JSON;
    }
    if (more < 0)
        return KB_LG_REPLY_NOT_JSON;
    return finish(&j, fid == F_STRING && ftok == F_STRING ? KB_LG_REPLY_OK : KB_LG_REPLY_SHAPE);
}

/* The top-level object of a reply: its string members k0 and k1 into b0 and b1. */
static int read_top(const char *body, size_t len, const char *k0, char *b0, size_t c0,
                    const char *k1, char *b1, size_t c1, enum field f[2])
{
    const char *const keys[] = {k0, k1};
    char *const bufs[] = {b0, b1};
    const size_t caps[] = {c0, c1};
    struct kb_lg_json j;
    kb_lg_json_init(&j, body, len);
    if (kb_lg_json_type(&j) != KB_LG_JSON_OBJECT)
        return wrong_top(&j);
    if (read_object(&j, 2, keys, bufs, caps, f) != 0)
        return KB_LG_REPLY_NOT_JSON;
    return finish(&j, KB_LG_REPLY_OK);
}

int kb_lg_reply_resource(const char *body, size_t len, char *tool, size_t tool_cap, char *session,
                         size_t session_cap)
{
    enum field f[2];
    int rc = read_top(body, len, "paymentToolToken", tool, tool_cap, "paymentSession", session,
                      session_cap, f);
    if (rc != 0)
        return rc;
    return f[0] == F_STRING && f[1] == F_STRING ? KB_LG_REPLY_OK : KB_LG_REPLY_SHAPE;
}

int kb_lg_reply_payment(const char *body, size_t len, char *id, size_t id_cap, char *status,
                        size_t status_cap)
{
    enum field f[2];
    int rc = read_top(body, len, "id", id, id_cap, "status", status, status_cap, f);
    if (rc != 0)
        return rc;
    /* A status cut short is still a status: it is just none of those looked for. */
    return f[0] == F_STRING && (f[1] == F_STRING || f[1] == F_LONG) ? KB_LG_REPLY_OK
                                                                    : KB_LG_REPLY_SHAPE;
}

/* What one change of an event says of our payment. */
enum change { CH_OTHER, CH_CAPTURED, CH_FAILED, CH_SHAPE, CH_NOT_JSON };

static enum change read_change(struct kb_lg_json *j, const char *payment_id)
{
    if (kb_lg_json_type(j) != KB_LG_JSON_OBJECT)
        return kb_lg_json_skip(j) == 0 ? CH_SHAPE : CH_NOT_JSON;
    static const char *const keys[] = {"changeType", "paymentID", "status"};
    char type[32], pid[128], status[32];
    char *const bufs[] = {type, pid, status};
    const size_t caps[] = {sizeof(type), sizeof(pid), sizeof(status)};
    enum field f[3];
    if (read_object(j, 3, keys, bufs, caps, f) != 0)
        return CH_NOT_JSON;
    if (f[0] != F_STRING && f[0] != F_LONG)
        return CH_SHAPE;
    if (f[0] != F_STRING || strcmp(type, "PaymentStatusChanged") != 0 || f[1] != F_STRING ||
        strcmp(pid, payment_id) != 0)
        return CH_OTHER;
    if (f[2] != F_STRING && f[2] != F_LONG)
        return CH_SHAPE;
    if (f[2] != F_STRING) /* cut short: none of the statuses below */
        return CH_OTHER;
    if (strcmp(status, "captured") == 0)
        return CH_CAPTURED;
    return strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0 ? CH_FAILED : CH_OTHER;
}

/* One event (see kb_lg_reply_events): *decided becomes CH_SHAPE or CH_FAILED when it decides,
 * *captured 1 when a change says so. 0, or -1 when the text is malformed. */
static int read_event(struct kb_lg_json *j, const char *payment_id, long long *last_event,
                      enum change *decided, int *captured)
{
    if (kb_lg_json_type(j) != KB_LG_JSON_OBJECT) {
        *decided = CH_SHAPE;
        return kb_lg_json_skip(j);
    }
    int has_id = 0, has_changes = 0, got = 0;
    enum change first = CH_OTHER; /* the first change that decides, of the last "changes" */
    int64_t id = 0;
    if (kb_lg_json_enter(j) != 0)
        return -1;
    int more;
    /* Bounded by the text: each member consumes bytes. */
    while ((more = kb_lg_json_next(j)) == 1) {
        char key[32];
        int rc = kb_lg_json_key(j, key, sizeof(key));
        if (rc == 0 && strcmp(key, "id") == 0) {
            has_id = 0;
            if (kb_lg_json_type(j) == KB_LG_JSON_NUMBER) {
                rc = kb_lg_json_int(j, &id);
                has_id = rc == 0; /* 1: a number, but not an integer */
            } else {
                rc = kb_lg_json_skip(j);
            }
        } else if (rc == 0 && strcmp(key, "changes") == 0) {
            has_changes = kb_lg_json_type(j) == KB_LG_JSON_ARRAY;
            first = CH_OTHER;
            got = 0;
            rc = has_changes ? kb_lg_json_enter(j) : kb_lg_json_skip(j);
            int c = 0;
            while (rc == 0 && has_changes && (c = kb_lg_json_next(j)) == 1) {
                enum change v = first != CH_OTHER
                                    ? (kb_lg_json_skip(j) == 0 ? CH_OTHER : CH_NOT_JSON)
                                    : read_change(j, payment_id);
                if (v == CH_NOT_JSON)
                    rc = -1;
                else if (v == CH_SHAPE || v == CH_FAILED)
                    first = v;
                else if (v == CH_CAPTURED)
                    got = 1;
            }
            if (c < 0)
                rc = -1;
        } else if (rc >= 0) {
            rc = kb_lg_json_skip(j);
        }
        if (rc < 0)
            return -1;
    }
    if (more < 0)
        return -1;
    if (!has_id || !has_changes) {
        *decided = CH_SHAPE;
        return 0;
    }
    if (id > *last_event)
        *last_event = id;
    if (first != CH_OTHER)
        *decided = first;
    else if (got)
        *captured = 1;
    return 0;
}

int kb_lg_reply_events(const char *body, size_t len, const char *payment_id, long long *last_event,
                       int *verdict)
{
    struct kb_lg_json j;
    kb_lg_json_init(&j, body, len);
    *verdict = 0;
    if (kb_lg_json_type(&j) != KB_LG_JSON_ARRAY)
        return wrong_top(&j);
    if (kb_lg_json_enter(&j) != 0)
        return KB_LG_REPLY_NOT_JSON;
    enum change decided = CH_OTHER;
    int captured = 0, more;
    /* Bounded by the text: each event consumes bytes. Once decided, the rest is only checked. */
    while ((more = kb_lg_json_next(&j)) == 1) {
        int rc = decided != CH_OTHER ? kb_lg_json_skip(&j)
                                     : read_event(&j, payment_id, last_event, &decided, &captured);
        if (rc != 0)
            return KB_LG_REPLY_NOT_JSON;
    }
    if (more < 0 || kb_lg_json_done(&j) != 0)
        return KB_LG_REPLY_NOT_JSON;
    if (decided == CH_SHAPE)
        return KB_LG_REPLY_SHAPE;
    *verdict = decided == CH_FAILED ? -1 : captured;
    return KB_LG_REPLY_OK;
}
