/*
 * format.c — the pure half of export files (export.h): which invoice events complete an
 * operation and what its row holds, the CSV and JSON Lines encodings, the manifest, and the
 * periodic writer's windows. No I/O here, so all of it is tested as plain functions
 * (tests/unit/test_export.c). Columns and their meaning: docs/export.md.
 */
#include "export/export.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/currency.h"

/* --- operations ---------------------------------------------------------------------------- */

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int64_t jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Copies `s` (NULL reads as "") into a column of `cap` bytes; KS_ERR_LIMIT when it is longer. */
static int put(char *dst, size_t cap, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n >= cap)
        return KS_ERR_LIMIT;
    memcpy(dst, s ? s : "", n);
    dst[n] = '\0';
    return KS_OK;
}

/* For text a provider chose (an RRN, an approval code, a failure code): copies `s` into `cap`
 * bytes, and when it is longer cuts it at a UTF-8 character boundary and ends it in "...", so
 * the cut is visible and one odd provider answer cannot hold the export back. */
static void put_cut(char *dst, size_t cap, const char *s)
{
    assert(cap >= 8);
    size_t n = s ? strlen(s) : 0;
    if (n < cap) {
        memcpy(dst, s ? s : "", n + 1);
        return;
    }
    size_t keep = cap - 4;
    while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
        keep--; /* s[keep] would start the cut: never split a character */
    memcpy(dst, s, keep);
    memcpy(dst + keep, "...", 4);
}

static int64_t rfc3339_ms(const char *s)
{
    int64_t ms = 0;
    return s && ks_time_parse_rfc3339(s, &ms) == 0 ? ms : 0;
}

/* What the shop pays kassa in a cash flow: postings from a shop account to a system account
 * (docs/ledger.md's accounts: "shop:..." -> "system:revenue:..."). */
static int flow_fee(const json_t *flow, int64_t *fee)
{
    int64_t sum = 0;
    size_t i;
    json_t *p;
    json_array_foreach(flow, i, p)
    {
        const char *from = jstr(p, "from"), *to = jstr(p, "to");
        if (from && to && strncmp(from, "shop:", 5) == 0 && strncmp(to, "system:", 7) == 0 &&
            !ks_amount_add(sum, jint(p, "amount"), &sum))
            return KS_ERR_INVALID;
    }
    *fee = sum;
    return KS_OK;
}

/* "authorization_failed" + subError chain -> "authorization_failed:insufficient_funds". */
static void error_chain(const json_t *err, char *out, size_t cap)
{
    char chain[4 * KS_EXPORT_ERROR_BYTES_MAX];
    size_t len = 0;
    chain[0] = '\0';
    for (int depth = 0; err && depth < 8; depth++, err = json_object_get(err, "subError")) {
        const char *code = jstr(err, "code");
        if (!code)
            break;
        int n = snprintf(chain + len, sizeof(chain) - len, "%s%s", len ? ":" : "", code);
        if (n < 0 || (size_t)n >= sizeof(chain) - len)
            break; /* longer than any column: put_cut shows the cut */
        len += (size_t)n;
    }
    put_cut(out, cap, chain);
}

static const json_t *find_by_id(const json_t *arr, const char *id)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *v = jstr(json_object_get(o, "public"), "id");
        if (v && id && strcmp(v, id) == 0)
            return o;
    }
    return NULL;
}

/* The columns an operation takes from its payment (and its refund, when it is one). */
static int fill_common(struct ks_export_op *op, const json_t *state, const char *invoice_id,
                       const json_t *p, const json_t *owner_pub)
{
    const json_t *pub = json_object_get(p, "public");
    const json_t *route = json_object_get(p, "route");
    const json_t *ti = json_object_get(owner_pub, "transactionInfo");
    const json_t *card = json_object_get(json_object_get(pub, "payer"), "paymentToolDetails");
    int rc;
    if ((rc = put(op->invoice, sizeof(op->invoice), invoice_id)) != KS_OK ||
        (rc = put(op->payment, sizeof(op->payment), jstr(pub, "id"))) != KS_OK ||
        (rc = put(op->shop, sizeof(op->shop), jstr(json_object_get(state, "invoice"), "shopID"))) !=
            KS_OK ||
        (rc = put(op->currency, sizeof(op->currency), jstr(pub, "currency"))) != KS_OK ||
        (rc = put(op->provider, sizeof(op->provider), jstr(route, "provider"))) != KS_OK ||
        (rc = put(op->terminal, sizeof(op->terminal), jstr(route, "terminal"))) != KS_OK ||
        (rc = put(op->card_mask, sizeof(op->card_mask), jstr(card, "cardNumberMask"))) != KS_OK)
        return rc;
    put_cut(op->rrn, sizeof(op->rrn), jstr(ti, "rrn"));
    put_cut(op->approval_code, sizeof(op->approval_code), jstr(ti, "approvalCode"));
    error_chain(json_object_get(owner_pub, "error"), op->error, sizeof(op->error));
    op->created_ms = rfc3339_ms(jstr(owner_pub, "createdAt"));
    return ks_currency_valid(op->currency) ? KS_OK : KS_ERR_INVALID;
}

static int payment_op(struct ks_export_op *op, const json_t *state, const char *invoice_id,
                      const json_t *p, const char *status)
{
    const json_t *pub = json_object_get(p, "public");
    int rc = fill_common(op, state, invoice_id, p, pub);
    if (rc != KS_OK)
        return rc;
    snprintf(op->type, sizeof(op->type), "payment.%s", status);
    op->amount = jint(pub, "amount");
    op->gross = op->fee = op->net = 0;
    if (strcmp(status, "captured") == 0) {
        /* a partial capture holds a recomputed cash flow; a full one the route's */
        int64_t captured = jint(p, "captured");
        const json_t *cf = json_object_get(p, "captureFlow");
        const json_t *flow = cf && jint(cf, "amount") == captured
                                 ? json_object_get(cf, "cashflow")
                                 : json_object_get(json_object_get(p, "route"), "cashflow");
        op->amount = captured;
        op->gross = captured;
        if ((rc = flow_fee(flow, &op->fee)) != KS_OK)
            return rc;
        if (!ks_amount_sub(op->gross, op->fee, &op->net))
            return KS_ERR_INVALID;
    } else if (strcmp(status, "refunded") == 0) {
        /* the money moved in the refunds, each an operation of its own */
        int64_t sum = 0;
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(p, "refunds"), i, r)
        {
            const json_t *rp = json_object_get(r, "public");
            const char *rs = jstr(rp, "status");
            if (rs && strcmp(rs, "succeeded") == 0 && !ks_amount_add(sum, jint(rp, "amount"), &sum))
                return KS_ERR_INVALID;
        }
        op->amount = sum;
    }
    int n = snprintf(op->op_id, sizeof(op->op_id), "%s.%s.%s", op->invoice, op->payment, status);
    return n > 0 && (size_t)n < sizeof(op->op_id) ? KS_OK : KS_ERR_LIMIT;
}

static int refund_op(struct ks_export_op *op, const json_t *state, const char *invoice_id,
                     const json_t *p, const json_t *r, const char *status)
{
    const json_t *rpub = json_object_get(r, "public");
    int rc = fill_common(op, state, invoice_id, p, rpub);
    if (rc != KS_OK || (rc = put(op->refund, sizeof(op->refund), jstr(rpub, "id"))) != KS_OK)
        return rc;
    snprintf(op->type, sizeof(op->type), "refund.%s", status);
    op->amount = jint(rpub, "amount");
    op->gross = op->fee = op->net = 0;
    if (strcmp(status, "succeeded") == 0) {
        op->gross = -op->amount;
        if ((rc = flow_fee(json_object_get(r, "cashflow"), &op->fee)) != KS_OK)
            return rc;
        if (!ks_amount_sub(op->gross, op->fee, &op->net))
            return KS_ERR_INVALID;
    }
    int n =
        snprintf(op->op_id, sizeof(op->op_id), "%s.%s.r%s", op->invoice, op->payment, op->refund);
    return n > 0 && (size_t)n < sizeof(op->op_id) ? KS_OK : KS_ERR_LIMIT;
}

static bool one_of(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

static const char *const payment_final[] = {"captured", "cancelled", "failed", "refunded", NULL};
static const char *const refund_final[] = {"succeeded", "failed", NULL};

bool ks_export_event_completes(const json_t *event)
{
    const char *type = jstr(event, "type"), *status = jstr(event, "status");
    if (!type)
        return false;
    if (strcmp(type, "PaymentStatusChanged") == 0)
        return one_of(status, payment_final);
    return strcmp(type, "RefundStatusChanged") == 0 && one_of(status, refund_final);
}

int ks_export_op_from_event(const json_t *state, const char *invoice_id, const json_t *event,
                            int64_t at_ms, struct ks_export_op *op, bool *is_op)
{
    assert(op && is_op && invoice_id);
    *is_op = false;
    if (!ks_export_event_completes(event))
        return KS_OK;
    const char *status = jstr(event, "status");
    bool pay = strcmp(jstr(event, "type"), "PaymentStatusChanged") == 0;
    const json_t *p = find_by_id(json_object_get(state, "payments"), jstr(event, "paymentID"));
    if (!p)
        return KS_ERR_INVALID;
    struct ks_export_op o;
    memset(&o, 0, sizeof(o));
    int rc;
    if (pay) {
        rc = payment_op(&o, state, invoice_id, p, status);
    } else {
        const json_t *r = find_by_id(json_object_get(p, "refunds"), jstr(event, "refundID"));
        rc = r ? refund_op(&o, state, invoice_id, p, r, status) : KS_ERR_INVALID;
    }
    if (rc != KS_OK)
        return rc;
    o.finished_ms = at_ms;
    o.window_ms = at_ms;
    *op = o;
    *is_op = true;
    return KS_OK;
}

/* --- CSV and JSON Lines -------------------------------------------------------------------- */

#define COLUMNS                                                                                    \
    "operation_id,type,invoice_id,payment_id,refund_id,shop_id,created_at,finished_at,window_at,"  \
    "amount,gross,fee,net,currency,provider,terminal,rrn,approval_code,card_mask,error"

const char *ks_export_csv_header(void)
{
    return COLUMNS "\r\n";
}

int ks_export_csv_field(const char *s, char *out, size_t cap, size_t *len)
{
    assert(out && len && *len < cap);
    size_t at = *len;
    bool quote = strpbrk(s, ",\"\r\n") != NULL;
    if (quote) {
        if (at + 1 >= cap)
            goto out_limit;
        out[at++] = '"';
    }
    for (const char *c = s; *c; c++) {
        size_t need = (*c == '"') ? 2 : 1;
        if (at + need >= cap)
            goto out_limit;
        if (*c == '"')
            out[at++] = '"';
        out[at++] = *c;
    }
    if (quote) {
        if (at + 1 >= cap)
            goto out_limit;
        out[at++] = '"';
    }
    out[at] = '\0';
    *len = at;
    return KS_OK;
out_limit:
    out[*len] = '\0';
    return KS_ERR_LIMIT;
}

/* Appends raw text (no quoting needed: numbers, times, commas). */
static int raw(const char *s, char *out, size_t cap, size_t *len)
{
    size_t n = strlen(s);
    if (*len + n >= cap)
        return KS_ERR_LIMIT;
    memcpy(out + *len, s, n + 1);
    *len += n;
    return KS_OK;
}

static void time_text(int64_t ms, char buf[40])
{
    if (ms > 0)
        ks_time_rfc3339(ms, buf, 40);
    else
        buf[0] = '\0';
}

int ks_export_csv_row(const struct ks_export_op *op, char *out, size_t cap, size_t *len)
{
    char created[40], finished[40], window[40], amount[24], gross[24], fee[24], net[24];
    time_text(op->created_ms, created);
    time_text(op->finished_ms, finished);
    time_text(op->window_ms, window);
    snprintf(amount, sizeof(amount), "%" PRId64, op->amount);
    snprintf(gross, sizeof(gross), "%" PRId64, op->gross);
    snprintf(fee, sizeof(fee), "%" PRId64, op->fee);
    snprintf(net, sizeof(net), "%" PRId64, op->net);
    const char *fields[] = {
        op->op_id,     op->type,     op->invoice,  op->payment,  op->refund, op->shop,
        created,       finished,     window,       amount,       gross,      fee,
        net,           op->currency, op->provider, op->terminal, op->rrn,    op->approval_code,
        op->card_mask, op->error};
    size_t at = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if ((i > 0 && raw(",", out, cap, &at) != KS_OK) ||
            ks_export_csv_field(fields[i], out, cap, &at) != KS_OK)
            return KS_ERR_LIMIT;
    }
    if (raw("\r\n", out, cap, &at) != KS_OK)
        return KS_ERR_LIMIT;
    *len = at;
    return KS_OK;
}

int ks_export_jsonl_row(const struct ks_export_op *op, char *out, size_t cap, size_t *len)
{
    char created[40], finished[40], window[40];
    time_text(op->created_ms, created);
    time_text(op->finished_ms, finished);
    time_text(op->window_ms, window);
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s, s:s, s:s,"
        " s:s, s:s, s:s}",
        "operation_id", op->op_id, "type", op->type, "invoice_id", op->invoice, "payment_id",
        op->payment, "refund_id", op->refund, "shop_id", op->shop, "created_at", created,
        "finished_at", finished, "window_at", window, "amount", (json_int_t)op->amount, "gross",
        (json_int_t)op->gross, "fee", (json_int_t)op->fee, "net", (json_int_t)op->net, "currency",
        op->currency, "provider", op->provider, "terminal", op->terminal, "rrn", op->rrn,
        "approval_code", op->approval_code, "card_mask", op->card_mask, "error", op->error);
    if (!o)
        return KS_ERR_INVALID; /* text that is not UTF-8 */
    size_t n = json_dumpb(o, out, cap, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n == 0 || n + 2 > cap)
        return KS_ERR_LIMIT;
    out[n] = '\n';
    out[n + 1] = '\0';
    *len = n + 1;
    return KS_OK;
}

/* --- manifests ----------------------------------------------------------------------------- */

int ks_export_manifest_add(struct ks_export_manifest *m, const struct ks_export_op *op)
{
    struct ks_export_total *t = NULL;
    for (size_t i = 0; i < m->totals_n && !t; i++)
        if (strcmp(m->totals[i].currency, op->currency) == 0)
            t = &m->totals[i];
    if (!t) {
        if (m->totals_n >= KS_EXPORT_CURRENCIES_MAX)
            return KS_ERR_LIMIT;
        /* kept in ascending currency order, so a manifest reads the same however rows came */
        size_t at = 0;
        while (at < m->totals_n && strcmp(m->totals[at].currency, op->currency) < 0)
            at++;
        memmove(&m->totals[at + 1], &m->totals[at], (m->totals_n - at) * sizeof(m->totals[0]));
        t = &m->totals[at];
        memset(t, 0, sizeof(*t));
        snprintf(t->currency, sizeof(t->currency), "%s", op->currency);
        m->totals_n++;
    }
    if (!ks_amount_add(t->gross, op->gross, &t->gross) ||
        !ks_amount_add(t->fee, op->fee, &t->fee) || !ks_amount_add(t->net, op->net, &t->net))
        return KS_ERR_INVALID;
    t->rows++;
    m->rows++;
    return KS_OK;
}

void ks_export_file_names(int64_t seq, char csv[32], char jsonl[32], char manifest[32])
{
    assert(seq >= 1 && seq <= KS_EXPORT_SEQ_MAX);
    snprintf(csv, 32, "%06" PRId64 ".csv", seq);
    snprintf(jsonl, 32, "%06" PRId64 ".jsonl", seq);
    snprintf(manifest, 32, "%06" PRId64 ".manifest.json", seq);
}

char *ks_export_manifest_json(const struct ks_export_manifest *m)
{
    char from[40], to[40], written[40], csv[32], jsonl[32], man[32];
    ks_time_rfc3339(m->from_ms, from, sizeof(from));
    ks_time_rfc3339(m->to_ms, to, sizeof(to));
    ks_time_rfc3339(m->written_ms, written, sizeof(written));
    ks_export_file_names(m->seq, csv, jsonl, man);
    json_t *totals = json_array();
    for (size_t i = 0; totals && i < m->totals_n; i++) {
        const struct ks_export_total *t = &m->totals[i];
        json_array_append_new(totals,
                              json_pack("{s:s, s:I, s:I, s:I, s:I}", "currency", t->currency,
                                        "rows", (json_int_t)t->rows, "gross", (json_int_t)t->gross,
                                        "fee", (json_int_t)t->fee, "net", (json_int_t)t->net));
    }
    json_t *o = json_pack(
        "{s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:s, s:[{s:s, s:s, s:I, s:s}, {s:s, s:s, s:I, s:s}],"
        " s:o}",
        "format", KS_EXPORT_FORMAT, "sequence", (json_int_t)m->seq, "from", from, "to", to,
        "fromMs", (json_int_t)m->from_ms, "toMs", (json_int_t)m->to_ms, "rows", (json_int_t)m->rows,
        "writtenAt", written, "files", "kind", "csv", "name", csv, "bytes",
        (json_int_t)m->csv_bytes, "sha256", m->csv_sha256, "kind", "jsonl", "name", jsonl, "bytes",
        (json_int_t)m->jsonl_bytes, "sha256", m->jsonl_sha256, "totals", totals);
    if (!o)
        return NULL;
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

static bool hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return KS_ERR_INVALID;
}

int ks_export_manifest_parse(const char *text, struct ks_export_manifest *m, char *why,
                             size_t whylen)
{
    json_error_t jerr;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    int rc = KS_OK;
    memset(m, 0, sizeof(*m));
    if (!json_is_object(o)) {
        rc = bad(why, whylen, "not JSON: %s", jerr.text);
        goto out;
    }
    const char *fmt = jstr(o, "format");
    if (!fmt || strcmp(fmt, KS_EXPORT_FORMAT) != 0) {
        rc = bad(why, whylen, "format is not %s", KS_EXPORT_FORMAT);
        goto out;
    }
    const char *const ints[] = {"sequence", "fromMs", "toMs", "rows"};
    for (size_t i = 0; i < 4; i++)
        if (!json_is_integer(json_object_get(o, ints[i]))) {
            rc = bad(why, whylen, "%s is not an integer", ints[i]);
            goto out;
        }
    m->seq = jint(o, "sequence");
    m->from_ms = jint(o, "fromMs");
    m->to_ms = jint(o, "toMs");
    m->rows = jint(o, "rows");
    m->written_ms = rfc3339_ms(jstr(o, "writtenAt"));
    if (m->seq < 1 || m->seq > KS_EXPORT_SEQ_MAX || m->from_ms < 0 || m->to_ms <= m->from_ms ||
        m->rows < 0) {
        rc = bad(why, whylen, "sequence, window or rows out of range");
        goto out;
    }
    const json_t *files = json_object_get(o, "files");
    char csv[32], jsonl[32], man[32];
    ks_export_file_names(m->seq, csv, jsonl, man);
    if (json_array_size(files) != 2) {
        rc = bad(why, whylen, "files must list the csv and the jsonl file");
        goto out;
    }
    for (size_t i = 0; i < 2; i++) {
        const json_t *f = json_array_get(files, i);
        const char *want = i == 0 ? csv : jsonl, *name = jstr(f, "name"), *sha = jstr(f, "sha256");
        if (!name || strcmp(name, want) != 0 || !hex64(sha) ||
            !json_is_integer(json_object_get(f, "bytes")) || jint(f, "bytes") < 0) {
            rc = bad(why, whylen, "files[%zu] must be {kind, name \"%s\", bytes, sha256}", i, want);
            goto out;
        }
        snprintf(i == 0 ? m->csv_sha256 : m->jsonl_sha256, 65, "%s", sha);
        *(i == 0 ? &m->csv_bytes : &m->jsonl_bytes) = jint(f, "bytes");
    }
    const json_t *totals = json_object_get(o, "totals");
    if (!json_is_array(totals) || json_array_size(totals) > KS_EXPORT_CURRENCIES_MAX) {
        rc = bad(why, whylen, "totals must be an array of at most %d currencies",
                 KS_EXPORT_CURRENCIES_MAX);
        goto out;
    }
    size_t i;
    json_t *t;
    json_array_foreach(totals, i, t)
    {
        struct ks_export_total *mt = &m->totals[m->totals_n++];
        if (!ks_currency_valid(jstr(t, "currency") ? jstr(t, "currency") : "")) {
            rc = bad(why, whylen, "totals[%zu].currency is not a currency", i);
            goto out;
        }
        snprintf(mt->currency, sizeof(mt->currency), "%s", jstr(t, "currency"));
        mt->rows = jint(t, "rows");
        mt->gross = jint(t, "gross");
        mt->fee = jint(t, "fee");
        mt->net = jint(t, "net");
    }
out:
    json_decref(o);
    return rc;
}

/* --- windows ------------------------------------------------------------------------------- */

static int64_t floor_to(int64_t t, int64_t period)
{
    int64_t q = t / period;
    if (t % period < 0)
        q--;
    return q * period;
}

bool ks_export_window_due(int64_t now_ms, int64_t period_ms, int64_t grace_ms, int64_t written_ms,
                          int64_t first_ms, int64_t *from, int64_t *to)
{
    assert(period_ms > 0 && grace_ms >= 0);
    int64_t end = floor_to(now_ms - grace_ms, period_ms); /* the last boundary that is due */
    int64_t start = written_ms;
    if (start <= 0) {
        start = end - period_ms;
        if (first_ms > 0 && floor_to(first_ms, period_ms) < start)
            start = floor_to(first_ms, period_ms);
    }
    if (end <= start)
        return false;
    *from = start;
    *to = end;
    return true;
}
