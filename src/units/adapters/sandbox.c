/*
 * sandbox.c — the sandbox acquirer (see sandbox.h; test cards and codes in docs/sandbox.md).
 *
 * One session step is one storage transaction: the row of its session_id is read (and locked),
 * the outcome decided or recalled, the row written, and only then is the answer told to the
 * caller. So whatever the caller retries — a task whose lease ran out, a node that died after the
 * adapter answered — the sandbox holds exactly one operation per session id, and tells it the
 * same way every time.
 *
 * The decision is made from the test card when the authorization is first seen and is final from
 * then on: a "pending" row already holds the outcome (transaction id or failure code) that
 * inquiries will reveal; a 3-D Secure row waits only for the payer's answer or its deadline.
 */
#include "units/adapters/sandbox.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/currency.h"
#include "core/ids.h"
#include "core/json.h"
#include "store/sql.h"
#include "units/adapters/sandbox_int.h"

struct ks_sandbox {
    struct ks_store *store;
    struct ks_log *log;
    const struct ks_sandbox_db *db;
    struct ks_adapter adapter;
};

/* --- the test cards ------------------------------------------------------------------------ */

enum scenario {
    SC_APPROVE,         /* any card not below, and the three success cards */
    SC_DECLINE,         /* generic decline by the issuer */
    SC_INSUFFICIENT,    /* insufficient funds */
    SC_EXPIRED,         /* the issuer says the card has expired */
    SC_CVV,             /* incorrect CVC */
    SC_TRANSIENT,       /* the first attempts fail transiently, then approved */
    SC_UNAVAILABLE,     /* the acquirer cannot reach the issuer: a definite failure */
    SC_3DS,             /* 3-D Secure: the payer confirms or refuses on kassa's page */
    SC_UNKNOWN_APPROVE, /* outcome unknown at first; approved, revealed at the 1st inquiry */
    SC_UNKNOWN_DECLINE, /* outcome unknown at first; declined, revealed at the 2nd inquiry */
};

static const struct scenario_def {
    const char *name; /* recorded in the row and shown in docs/sandbox.md */
    const char *code; /* failure code, or NULL when approved */
    const char *reason;
} scenarios[] = {
    [SC_APPROVE] = {"approve", NULL, NULL},
    [SC_DECLINE] = {"decline", "authorization_failed:rejected_by_issuer",
                    "the issuer declined the payment"},
    [SC_INSUFFICIENT] = {"insufficient_funds", "authorization_failed:insufficient_funds",
                         "insufficient funds on the card's account"},
    [SC_EXPIRED] = {"expired_card",
                    "authorization_failed:payment_tool_rejected:bank_card_rejected:card_expired",
                    "the issuer reports the card as expired"},
    [SC_CVV] = {"incorrect_cvc",
                "authorization_failed:payment_tool_rejected:bank_card_rejected:cvv_invalid",
                "the card's security code is incorrect"},
    [SC_TRANSIENT] = {"transient_error", NULL, NULL},
    [SC_UNAVAILABLE] = {"acquirer_unavailable", "authorization_failed:temporarily_unavailable",
                        "the acquirer could not reach the issuer"},
    [SC_3DS] = {"three_ds", NULL, NULL},
    [SC_UNKNOWN_APPROVE] = {"unknown_then_approved", NULL, NULL},
    [SC_UNKNOWN_DECLINE] = {"unknown_then_declined", "authorization_failed:rejected_by_issuer",
                            "the issuer declined the payment"},
};

/* Card numbers with a scenario; every other valid number is approved. Keep docs/sandbox.md in
 * step. The numbers pass the Luhn check, so the vault tokenizes them. */
static const struct test_card {
    const char *pan;
    enum scenario scenario;
} test_cards[] = {
    {"4242424242424242", SC_APPROVE},
    {"5555555555554444", SC_APPROVE},
    {"2200000000000004", SC_APPROVE},
    {"4000000000001000", SC_DECLINE},
    {"4000000000002008", SC_INSUFFICIENT},
    {"4000000000003006", SC_EXPIRED},
    {"4000000000004004", SC_CVV},
    {"4000000000005001", SC_TRANSIENT},
    {"4000000000006009", SC_UNAVAILABLE},
    {"4000000000007007", SC_3DS},
    {"4000000000008005", SC_UNKNOWN_APPROVE},
    {"4000000000009003", SC_UNKNOWN_DECLINE},
};

/* Inquiries it takes before a pending outcome is revealed. */
static int64_t reveal_after(const char *scenario)
{
    return strcmp(scenario, scenarios[SC_UNKNOWN_DECLINE].name) == 0 ? 2 : 1;
}

static const char code_3ds_refused[] = "preauthorization_failed:authentication_failed";
static const char code_3ds_timeout[] = "preauthorization_failed:timeout";
static const char code_closed[] = "authorization_failed:temporarily_unavailable";

/* --- small helpers ------------------------------------------------------------------------- */

int ks_sandbox_copy(char *dst, size_t cap, const char *src)
{
    assert(dst != NULL && cap > 0);
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) {
        dst[0] = '\0';
        return KS_ERR_INVALID;
    }
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
    return KS_OK;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the adapter's error text (kassa's own words and ids, never card data). */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int digits_only(const char *s, size_t min, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] < '0' || s[n] > '9' || n >= max)
            return 0;
    return n >= min;
}

/* Printable ASCII without spaces, 1..max bytes. */
static int token_ok(const char *s, size_t max)
{
    if (!s || !*s)
        return 0;
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] <= 0x20 || s[n] >= 0x7f || n >= max)
            return 0;
    return 1;
}

static const char *payment_system_of(const char *pan)
{
    int p2 = (pan[0] - '0') * 10 + (pan[1] - '0');
    int p4 = p2 * 100 + (pan[2] - '0') * 10 + (pan[3] - '0');
    if (pan[0] == '4')
        return "visa";
    if (p4 >= 2200 && p4 <= 2204)
        return "mir";
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
        return "mastercard";
    if (p2 == 34 || p2 == 37)
        return "amex";
    if (p4 >= 3528 && p4 <= 3589)
        return "jcb";
    if (p2 == 62)
        return "unionpay";
    if (p2 == 50 || (p2 >= 56 && p2 <= 69))
        return "maestro";
    return "unknown";
}

int ks_sandbox_card_mask(const char *pan, char *out, size_t cap, char *system, size_t system_cap)
{
    assert(out != NULL && system != NULL);
    if (!pan || !digits_only(pan, 12, 19) || cap < 20 || system_cap < 12)
        return KS_ERR_INVALID;
    size_t n = strlen(pan);
    memcpy(out, pan, 6);
    memset(out + 6, '*', n - 10);
    memcpy(out + n - 4, pan + n - 4, 4);
    out[n] = '\0';
    snprintf(system, system_cap, "%s", payment_system_of(pan));
    return KS_OK;
}

/* Random digits (or base62 when `digits` is 0) for transaction ids and codes. */
static int random_text(char *out, size_t len, int digits)
{
    if (!digits)
        return ks_id_random(out, len);
    unsigned char b[32];
    assert(len < sizeof(b));
    int rc = ks_random_bytes(b, len);
    if (rc != KS_OK)
        return rc;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)('0' + b[i] % 10);
    out[len] = '\0';
    return KS_OK;
}

/* Gives an approved operation its transaction id (and, for an authorization, an RRN and an
 * approval code). */
static int approve(struct ks_sandbox_op *op)
{
    char id[21];
    int rc = random_text(id, 20, 0);
    if (rc != KS_OK)
        return rc;
    snprintf(op->provider_trx, sizeof(op->provider_trx), "sbx_%s", id);
    if (strcmp(op->kind, "authorize") == 0) {
        if ((rc = random_text(op->rrn, 12, 1)) != KS_OK ||
            (rc = random_text(op->approval_code, 6, 1)) != KS_OK)
            return rc;
    }
    return KS_OK;
}

static void decline(struct ks_sandbox_op *op, const char *status, const char *code,
                    const char *reason)
{
    snprintf(op->status, sizeof(op->status), "%s", status);
    snprintf(op->failure_code, sizeof(op->failure_code), "%s", code);
    snprintf(op->failure_reason, sizeof(op->failure_reason), "%s", reason);
}

/* --- options ------------------------------------------------------------------------------- */

struct sb_opts {
    int64_t three_ds_timeout_ms;
    int64_t pending_sleep_ms;
    int64_t transient_failures;
};

static int opt_int(const json_t *options, const char *key, int64_t min, int64_t max, int64_t dflt,
                   int64_t *out, char *err, size_t errlen)
{
    int rc = ks_json_get_int(options, key, dflt, out);
    if (rc == KS_ERR_NOT_FOUND || (rc == KS_OK && *out >= min && *out <= max))
        return KS_OK;
    set_err(err, errlen, "sandbox option %s is out of range", key);
    return KS_ERR_INVALID;
}

static int opts_read(const json_t *options, struct sb_opts *o, char *err, size_t errlen)
{
    o->three_ds_timeout_ms = KS_SANDBOX_3DS_TIMEOUT_MS_DEFAULT;
    o->pending_sleep_ms = KS_SANDBOX_PENDING_SLEEP_MS_DEFAULT;
    o->transient_failures = KS_SANDBOX_TRANSIENT_FAILURES_DEFAULT;
    if (!json_is_object(options))
        return KS_OK; /* no options (or JSON null): the defaults */
    int rc;
    if ((rc = opt_int(options, "threeDSTimeoutMs", 1000, KS_SANDBOX_TIMEOUT_MS_MAX,
                      o->three_ds_timeout_ms, &o->three_ds_timeout_ms, err, errlen)) != KS_OK ||
        (rc = opt_int(options, "pendingSleepMs", 1, KS_SANDBOX_TIMEOUT_MS_MAX, o->pending_sleep_ms,
                      &o->pending_sleep_ms, err, errlen)) != KS_OK ||
        (rc = opt_int(options, "transientFailures", 0, KS_SANDBOX_TRANSIENT_FAILURES_MAX,
                      o->transient_failures, &o->transient_failures, err, errlen)) != KS_OK)
        return rc;
    return KS_OK;
}

/* --- one session step ---------------------------------------------------------------------- */

/* What is known about the card, without the card: computed before the transaction. */
struct card_facts {
    enum scenario scenario;
    char mask[24];
    char system[16];
};

/* An acquiring session step as the sandbox reads it: the generic session (units/adapter.h)
 * flattened with the acquiring unit's subject and payload. Everything borrowed from it. */
struct acq {
    const char *kind; /* the operation of a start step, else the step: inquire | callback */
    const char *session_id;
    const char *invoice_id; /* subject.id */
    const char *payment_id; /* subject.within.payment */
    const char *refund_id;  /* subject.within.refund (refunds) */
    int64_t amount;         /* payload.amount, minor units; -1 when absent or not an integer */
    const char *currency;   /* payload.currency */
    const struct ks_card *card;
    const json_t *callback;
    const json_t *adapter_state;
    const char *callback_tag;
    const char *public_url;
    int64_t now_ms;
};

static void acq_of(const struct ks_adapter_session *s, struct acq *a)
{
    const json_t *amount = json_object_get(s->payload, "amount");
    *a = (struct acq){
        .kind = s->step && strcmp(s->step, "start") != 0 ? s->step : s->operation,
        .session_id = s->session_id,
        .invoice_id = s->subject.id,
        .payment_id = ks_json_get_str(s->subject.within, "payment"),
        .refund_id = ks_json_get_str(s->subject.within, "refund"),
        .amount = json_is_integer(amount) ? json_integer_value(amount) : -1,
        .currency = ks_json_get_str(s->payload, "currency"),
        .card = s->secrets.card,
        .callback = s->callback,
        .adapter_state = s->adapter_state,
        .callback_tag = s->callback_tag,
        .public_url = s->public_url,
        .now_ms = s->now_ms,
    };
}

struct step {
    struct ks_sandbox *sb;
    const struct acq *s;
    const struct sb_opts *o;
    const struct card_facts *card; /* authorize only */
    const char *target;            /* inquire / callback: the session asked about */
    struct ks_sandbox_op op;       /* the row after the step: what is told */
    int retry;                     /* the transient card failed this attempt */
    char *err;
    size_t errlen;
};

static int card_facts_of(const struct ks_card *card, int64_t now_ms, struct card_facts *f)
{
    memset(f, 0, sizeof(*f));
    int rc =
        ks_sandbox_card_mask(card->pan, f->mask, sizeof(f->mask), f->system, sizeof(f->system));
    if (rc != KS_OK)
        return rc;
    f->scenario = SC_APPROVE;
    for (size_t i = 0; i < sizeof(test_cards) / sizeof(test_cards[0]); i++)
        if (strcmp(test_cards[i].pan, card->pan) == 0) {
            f->scenario = test_cards[i].scenario;
            break;
        }
    /* An issuer declines a card past its expiry month whatever its number says. The vault
     * refuses such cards at tokenization, so this only matters for a card that expired since. */
    if (digits_only(card->exp_month, 2, 2) && digits_only(card->exp_year, 4, 4)) {
        time_t t = (time_t)(now_ms / 1000);
        struct tm tm;
        if (gmtime_r(&t, &tm)) {
            const char *y = card->exp_year, *m = card->exp_month;
            int year = (y[0] - '0') * 1000 + (y[1] - '0') * 100 + (y[2] - '0') * 10 + (y[3] - '0');
            int month = (m[0] - '0') * 10 + (m[1] - '0');
            if (month >= 1 && month <= 12 &&
                year * 12 + month - 1 < (tm.tm_year + 1900) * 12 + tm.tm_mon)
                f->scenario = SC_EXPIRED;
        }
    }
    return KS_OK;
}

static int is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

/* A fresh row for the session, before its outcome is decided. */
static int op_new(const struct step *st, const char *scenario, struct ks_sandbox_op *op)
{
    const struct acq *s = st->s;
    memset(op, 0, sizeof(*op));
    if (ks_sandbox_copy(op->session_id, sizeof(op->session_id), s->session_id) ||
        ks_sandbox_copy(op->kind, sizeof(op->kind), s->kind) ||
        ks_sandbox_copy(op->invoice_id, sizeof(op->invoice_id), s->invoice_id) ||
        ks_sandbox_copy(op->payment_id, sizeof(op->payment_id), s->payment_id) ||
        ks_sandbox_copy(op->refund_id, sizeof(op->refund_id),
                        is(s->kind, "refund") ? s->refund_id : NULL) ||
        ks_sandbox_copy(op->currency, sizeof(op->currency), s->currency) ||
        ks_sandbox_copy(op->scenario, sizeof(op->scenario), scenario))
        return KS_ERR_INVALID; /* session_check has bounded every field: a bug if reached */
    op->amount = s->amount;
    op->attempts = 1;
    op->created_ms = op->updated_ms = s->now_ms;
    return KS_OK;
}

/* Whether a repeated session id asks for what it asked the first time. */
static int same_request(const struct ks_sandbox_op *op, const struct acq *s,
                        const struct card_facts *card)
{
    const char *rid = is(s->kind, "refund") && s->refund_id ? s->refund_id : "";
    return is(op->kind, s->kind) && is(op->invoice_id, s->invoice_id) &&
           is(op->payment_id, s->payment_id) && is(op->refund_id, rid) && op->amount == s->amount &&
           is(op->currency, s->currency) && (!card || is(op->card_mask, card->mask));
}

static int conflict(struct step *st)
{
    set_err(st->err, st->errlen, "session id %s was used for a different request",
            st->s->session_id);
    return KS_ERR_CONFLICT;
}

static int tag_take(struct step *st, struct ks_sandbox_op *op)
{
    if (ks_sandbox_copy(op->callback_tag, sizeof(op->callback_tag), st->s->callback_tag) != KS_OK ||
        !op->callback_tag[0]) {
        set_err(st->err, st->errlen, "3-D Secure needs the session's callback tag");
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

/* authorize: decide from the card the first time, recall the decision afterwards. */
static int authorize_tx(struct ks_sql *conn, void *arg)
{
    struct step *st = arg;
    const struct acq *s = st->s;
    const struct ks_sandbox_db *db = st->sb->db;
    struct ks_sandbox_op *op = &st->op;
    int rc = db->load(conn, s->session_id, 1, op);
    if (rc == KS_OK) {
        if (!same_request(op, s, st->card))
            return conflict(st);
        op->attempts++;
        op->updated_ms = s->now_ms;
        if (is(op->status, "processing")) {
            if (op->attempts > st->o->transient_failures) {
                if ((rc = approve(op)) != KS_OK)
                    return rc;
                snprintf(op->status, sizeof(op->status), "authorized");
            } else {
                st->retry = 1;
            }
        } else if (is(op->status, "awaiting_3ds")) {
            if (s->now_ms >= op->deadline_ms)
                decline(op, "declined", code_3ds_timeout, "the payer did not answer 3-D Secure");
            else if ((rc = tag_take(st, op)) != KS_OK) /* the tag this attempt suspends on */
                return rc;
        }
        return db->update(conn, op);
    }
    if (rc != KS_ERR_NOT_FOUND)
        return rc;

    const struct card_facts *card = st->card;
    const struct scenario_def *def = &scenarios[card->scenario];
    if ((rc = op_new(st, def->name, op)) != KS_OK)
        return rc;
    snprintf(op->card_mask, sizeof(op->card_mask), "%s", card->mask);
    snprintf(op->payment_system, sizeof(op->payment_system), "%s", card->system);
    switch (card->scenario) {
    case SC_APPROVE:
        snprintf(op->status, sizeof(op->status), "authorized");
        rc = approve(op);
        break;
    case SC_TRANSIENT:
        if (st->o->transient_failures == 0) {
            snprintf(op->status, sizeof(op->status), "authorized");
            rc = approve(op);
        } else {
            snprintf(op->status, sizeof(op->status), "processing");
            st->retry = 1;
        }
        break;
    case SC_3DS:
        snprintf(op->status, sizeof(op->status), "awaiting_3ds");
        op->deadline_ms = s->now_ms + st->o->three_ds_timeout_ms;
        rc = tag_take(st, op);
        break;
    case SC_UNKNOWN_APPROVE:
        /* Approved now; the caller just does not learn it until it asks again. */
        snprintf(op->status, sizeof(op->status), "pending");
        rc = approve(op);
        break;
    case SC_UNKNOWN_DECLINE: decline(op, "pending", def->code, def->reason); break;
    default:
        assert(def->code != NULL);
        decline(op, "declined", def->code, def->reason);
        break;
    }
    if (rc != KS_OK)
        return rc;
    return db->insert(conn, op);
}

/* capture, cancel, refund: checked against the payment's authorization, under its lock. */
static int money_tx(struct ks_sql *conn, void *arg)
{
    struct step *st = arg;
    const struct acq *s = st->s;
    const struct ks_sandbox_db *db = st->sb->db;
    struct ks_sandbox_op *op = &st->op;
    int rc = db->load(conn, s->session_id, 1, op);
    if (rc == KS_OK) {
        if (!same_request(op, s, NULL))
            return conflict(st);
        op->attempts++;
        op->updated_ms = s->now_ms;
        return db->update(conn, op);
    }
    if (rc != KS_ERR_NOT_FOUND)
        return rc;

    struct ks_sandbox_op auth;
    int auth_rc = db->load_auth(conn, s->invoice_id, s->payment_id, 1, &auth);
    if (auth_rc != KS_OK && auth_rc != KS_ERR_NOT_FOUND)
        return auth_rc;
    if ((rc = op_new(st, "operation", op)) != KS_OK)
        return rc;
    struct ks_sandbox_totals tot = {0};
    const char *why = NULL, *reason = NULL;
    if (auth_rc == KS_ERR_NOT_FOUND || !is(auth.status, "authorized")) {
        why = "not_authorized";
        reason = "the payment has no approved authorization";
    } else if (!is(auth.currency, s->currency)) {
        why = "currency_mismatch";
        reason = "the currency differs from the authorization's";
    } else if ((rc = db->totals(conn, s->invoice_id, s->payment_id, &tot)) != KS_OK) {
        return rc;
    } else if (is(s->kind, "capture")) {
        int64_t after;
        if (tot.cancelled) {
            why = "authorization_cancelled";
            reason = "the authorization was cancelled";
        } else if (!ks_amount_add(tot.captured, s->amount, &after) || after > auth.amount) {
            why = "amount_exceeded";
            reason = "captures would exceed the authorized amount";
        }
    } else if (is(s->kind, "cancel")) {
        if (tot.cancelled) {
            why = "already_cancelled";
            reason = "the authorization was already cancelled";
        } else if (tot.captured > 0) {
            why = "already_captured";
            reason = "the authorization has captures; refund them instead";
        }
    } else {
        int64_t after;
        if (tot.captured == 0) {
            why = "not_captured";
            reason = "nothing was captured to refund";
        } else if (!ks_amount_add(tot.refunded, s->amount, &after) || after > tot.captured) {
            why = "amount_exceeded";
            reason = "refunds would exceed the captured amount";
        }
    }
    if (why) {
        char code[64];
        snprintf(code, sizeof(code), "%s_failed:%s", s->kind, why);
        decline(op, "refused", code, reason);
    } else {
        snprintf(op->status, sizeof(op->status), "succeeded");
        if ((rc = approve(op)) != KS_OK)
            return rc;
    }
    return db->insert(conn, op);
}

/* inquire and callback: continue the session named by st->target. */
static int follow_tx(struct ks_sql *conn, void *arg)
{
    struct step *st = arg;
    const struct acq *s = st->s;
    const struct ks_sandbox_db *db = st->sb->db;
    struct ks_sandbox_op *op = &st->op;
    int rc = db->load(conn, st->target, 1, op);
    if (rc == KS_ERR_NOT_FOUND) {
        /* Nothing was done under that id: a definite answer, but not an outcome to invent. */
        set_err(st->err, st->errlen, "the sandbox has no operation for session %s", st->target);
        return rc;
    }
    if (rc != KS_OK)
        return rc;
    int auth = is(op->kind, "authorize");
    if (is(s->kind, "inquire")) {
        op->inquiries++;
        op->updated_ms = s->now_ms;
        if (auth && is(op->status, "pending")) {
            if (op->inquiries >= reveal_after(op->scenario))
                snprintf(op->status, sizeof(op->status), "%s",
                         op->failure_code[0] ? "declined" : "authorized");
        } else if (auth && is(op->status, "awaiting_3ds")) {
            if (s->now_ms >= op->deadline_ms)
                decline(op, "declined", code_3ds_timeout, "the payer did not answer 3-D Secure");
        } else if (auth && is(op->status, "processing")) {
            /* Asked about an authorization still failing transiently: the acquirer closes it
             * as failed, and every later question (or retry) gets that answer. */
            decline(op, "declined", code_closed, "the authorization was never completed");
        }
        return db->update(conn, op);
    }

    assert(is(s->kind, "callback"));
    if (!auth) {
        set_err(st->err, st->errlen, "session %s is not an authorization", st->target);
        return KS_ERR_INVALID;
    }
    if (!is(op->status, "awaiting_3ds"))
        return KS_OK; /* already answered (or never asked): tell the recorded outcome */
    const char *decision = ks_json_get_str(s->callback, "decision");
    if (!is(decision, "confirm") && !is(decision, "refuse")) {
        set_err(st->err, st->errlen, "a 3-D Secure callback needs decision confirm or refuse");
        return KS_ERR_INVALID;
    }
    op->updated_ms = s->now_ms;
    if (s->now_ms >= op->deadline_ms) {
        decline(op, "declined", code_3ds_timeout, "the payer did not answer 3-D Secure in time");
    } else if (is(decision, "confirm")) {
        snprintf(op->status, sizeof(op->status), "authorized");
        if ((rc = approve(op)) != KS_OK)
            return rc;
    } else {
        decline(op, "declined", code_3ds_refused, "the payer refused 3-D Secure");
    }
    return db->update(conn, op);
}

/* --- telling the outcome ------------------------------------------------------------------ */

static json_t *trx_json(const struct ks_sandbox_op *op)
{
    json_t *extra = is(op->kind, "authorize")
                        ? json_pack("{s:s, s:s}", "rrn", op->rrn, "approvalCode", op->approval_code)
                        : json_pack("{s:s}", "operation", op->kind);
    if (!extra)
        return NULL;
    return json_pack("{s:s, s:o}", "id", op->provider_trx, "extra", extra);
}

/* The 3-D Secure redirect: the payer's browser posts a form to kassa's sandbox page. */
static json_t *interaction_json(const struct acq *s, const struct ks_sandbox_op *op)
{
    char url[512];
    const char *base = s->public_url ? s->public_url : "";
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    int n = snprintf(url, sizeof(url), "%.*s/v2/sandbox/3ds/%s", (int)bl, base, op->callback_tag);
    if (n < 0 || (size_t)n >= sizeof(url))
        return NULL;
    return json_pack("{s:s, s:{s:s, s:s, s:[{s:s, s:s}]}}", "interactionType", "Redirect",
                     "request", "requestType", "BrowserPostRequest", "uriTemplate", url, "form",
                     "key", "session", "template", op->session_id);
}

static int tell(const struct step *st, struct ks_adapter_intent *out)
{
    const struct ks_sandbox_op *op = &st->op;
    const struct acq *s = st->s;
    if (is(op->status, "authorized") || is(op->status, "succeeded")) {
        out->kind = KS_INTENT_FINISH;
        out->success = 1;
        out->trx = trx_json(op);
        return out->trx ? KS_OK : KS_ERR_NOMEM;
    }
    if (is(op->status, "declined") || is(op->status, "refused")) {
        out->kind = KS_INTENT_FINISH;
        out->success = 0;
        snprintf(out->failure_code, sizeof(out->failure_code), "%s", op->failure_code);
        snprintf(out->failure_reason, sizeof(out->failure_reason), "%s", op->failure_reason);
        return KS_OK;
    }
    out->adapter_state = json_pack("{s:s, s:s}", "session", op->session_id, "stage", op->status);
    if (!out->adapter_state)
        return KS_ERR_NOMEM;
    if (is(op->status, "pending")) {
        out->kind = KS_INTENT_SLEEP;
        out->sleep_ms = st->o->pending_sleep_ms;
        return KS_OK;
    }
    if (is(op->status, "awaiting_3ds")) {
        int64_t left = op->deadline_ms - s->now_ms;
        if (left < 1)
            left = 1;
        if (!is(s->kind, "authorize")) {
            /* An inquiry cannot suspend on its own tag: the payer holds the first one. Ask
             * again when the payer's window closes. */
            out->kind = KS_INTENT_SLEEP;
            out->sleep_ms = left;
            return KS_OK;
        }
        out->kind = KS_INTENT_SUSPEND;
        snprintf(out->tag, sizeof(out->tag), "%s", op->callback_tag);
        out->timeout_ms = left;
        out->interaction = interaction_json(s, op);
        return out->interaction ? KS_OK : KS_ERR_NOMEM;
    }
    return KS_ERR_INTERNAL; /* "processing" is told as a retry before we get here */
}

/* --- the adapter --------------------------------------------------------------------------- */

static int session_check(const struct acq *s, char *err, size_t errlen)
{
    const char *k = s->kind;
    if (!is(k, "authorize") && !is(k, "capture") && !is(k, "cancel") && !is(k, "refund") &&
        !is(k, "inquire") && !is(k, "callback")) {
        set_err(err, errlen, "unknown session kind");
        return KS_ERR_INVALID;
    }
    if (!token_ok(s->session_id, KS_SANDBOX_SESSION_ID_BYTES_MAX)) {
        set_err(err, errlen, "session id must be 1 to 200 printable characters");
        return KS_ERR_INVALID;
    }
    if (is(k, "inquire") || is(k, "callback"))
        return KS_OK; /* they continue a recorded session: its fields are already checked */
    if (!token_ok(s->invoice_id, KS_ID_BYTES_MAX) || !token_ok(s->payment_id, KS_ID_BYTES_MAX) ||
        (is(k, "refund") && !token_ok(s->refund_id, KS_ID_BYTES_MAX))) {
        set_err(err, errlen, "invoice, payment and refund ids must be 1 to 64 characters");
        return KS_ERR_INVALID;
    }
    if (!s->currency || !ks_currency_valid(s->currency)) {
        set_err(err, errlen, "unknown currency");
        return KS_ERR_INVALID;
    }
    if (s->amount < (is(k, "cancel") ? 0 : 1)) {
        set_err(err, errlen, "amount must be positive");
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

static void log_step(struct ks_sandbox *sb, const struct step *st)
{
    if (!sb->log || sb->log->level > KS_LOG_INFO)
        return;
    const struct ks_sandbox_op *op = &st->op;
    json_t *f =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "session", op->session_id, "step",
                  st->s->kind, "operation", op->kind, "invoice", op->invoice_id, "payment",
                  op->payment_id, "status", op->status, "attempts", (json_int_t)op->attempts);
    if (f && op->failure_code[0])
        json_object_set_new(f, "failure", json_string(op->failure_code));
    ks_log_json(sb->log, KS_LOG_INFO, NULL, "sandbox acquirer", f);
}

static int sandbox_process(void *ctx, const struct ks_adapter_session *session,
                           struct ks_adapter_intent *out, char *err, size_t errlen)
{
    struct ks_sandbox *sb = ctx;
    assert(sb != NULL && session != NULL && out != NULL);
    if (err && errlen)
        err[0] = '\0';
    if (!session->unit || strcmp(session->unit, "acquiring") != 0) {
        set_err(err, errlen, "the sandbox acquirer runs acquiring sessions only");
        return KS_ERR_INVALID;
    }
    struct acq acq;
    acq_of(session, &acq);
    const struct acq *s = &acq;
    int rc = session_check(s, err, errlen);
    if (rc != KS_OK)
        return rc;
    struct sb_opts o;
    if ((rc = opts_read(session->options, &o, err, errlen)) != KS_OK)
        return rc;

    struct card_facts card;
    struct step st = {.sb = sb, .s = s, .o = &o, .err = err, .errlen = errlen};
    ks_sql_fn fn;
    if (is(s->kind, "authorize")) {
        if (!s->card || card_facts_of(s->card, s->now_ms, &card) != KS_OK) {
            set_err(err, errlen, "authorize needs a card number of 12 to 19 digits");
            return KS_ERR_INVALID;
        }
        st.card = &card;
        fn = authorize_tx;
    } else if (is(s->kind, "inquire") || is(s->kind, "callback")) {
        const char *named = ks_json_get_str(s->adapter_state, "session");
        st.target = token_ok(named, KS_SANDBOX_SESSION_ID_BYTES_MAX) ? named : s->session_id;
        fn = follow_tx;
    } else {
        fn = money_tx;
    }

    rc = ks_sql_tx(sb->store, fn, &st);
    if (rc == KS_ERR_IO || rc == KS_ERR_BUSY || rc == KS_ERR_NOMEM || rc == KS_ERR_STOPPED ||
        rc == KS_ERR_VERSION)
        rc = KS_ERR_RETRY; /* nothing was written: the store may answer next time */
    if (rc != KS_OK) {
        if (err && errlen && !err[0])
            snprintf(err, errlen, "sandbox: %s", ks_err_text(rc));
        return rc;
    }
    log_step(sb, &st);
    if (st.retry) {
        set_err(err, errlen, "sandbox: transient processing error (test card), try again");
        return KS_ERR_RETRY;
    }
    rc = tell(&st, out);
    if (rc != KS_OK) {
        /* The step is recorded: the retry is told the same outcome. */
        ks_adapter_intent_release(out);
        set_err(err, errlen, "sandbox: out of memory");
        return KS_ERR_RETRY;
    }
    return KS_OK;
}

/* --- lifecycle and reads ------------------------------------------------------------------- */

int ks_sandbox_open(struct ks_store *store, struct ks_log *log, struct ks_sandbox **out)
{
    assert(store != NULL && out != NULL);
    *out = NULL;
    char why[256];
    int rc = ks_sql_migrate(store, &ks_sandbox_schema, why, sizeof(why));
    if (rc != KS_OK) {
        ks_logf(log, KS_LOG_ERROR, NULL, "sandbox: %s", why);
        return rc;
    }
    struct ks_sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return KS_ERR_NOMEM;
    sb->store = store;
    sb->log = log;
    sb->db = &ks_sandbox_sql_db;
    sb->adapter.name = KS_SANDBOX_ADAPTER_NAME;
    sb->adapter.ctx = sb;
    sb->adapter.secrets = KS_ADAPTER_SECRET_CARD; /* it decides by the card number */
    sb->adapter.process = sandbox_process;
    *out = sb;
    return KS_OK;
}

void ks_sandbox_close(struct ks_sandbox *sb)
{
    free(sb);
}

const struct ks_adapter *ks_sandbox_adapter(struct ks_sandbox *sb)
{
    assert(sb != NULL);
    return &sb->adapter;
}

struct list_arg {
    const struct ks_sandbox_db *db;
    const struct ks_sandbox_filter *f;
    struct ks_sandbox_op *rows;
    size_t n;
};

static int list_read(struct ks_sql *conn, void *arg)
{
    struct list_arg *a = arg;
    return a->db->list(conn, a->f, a->rows, &a->n);
}

int ks_sandbox_operations_list(struct ks_sandbox *sb, const struct ks_sandbox_filter *f,
                               struct ks_sandbox_op **out, size_t *n)
{
    assert(sb != NULL && f != NULL && out != NULL && n != NULL);
    *out = NULL;
    *n = 0;
    if (f->limit < 1 || f->limit > KS_SANDBOX_LIST_MAX || f->after_pos < 0 ||
        (f->invoice_id && strlen(f->invoice_id) > KS_ID_BYTES_MAX) ||
        (f->payment_id && strlen(f->payment_id) > KS_ID_BYTES_MAX) ||
        (f->session_id && strlen(f->session_id) > KS_SANDBOX_SESSION_ID_BYTES_MAX))
        return KS_ERR_INVALID;
    struct list_arg a = {.db = sb->db, .f = f, .rows = calloc(f->limit, sizeof(*a.rows))};
    if (!a.rows)
        return KS_ERR_NOMEM;
    int rc = ks_sql_read(sb->store, list_read, &a);
    if (rc != KS_OK || a.n == 0) {
        free(a.rows);
        return rc;
    }
    *out = a.rows;
    *n = a.n;
    return KS_OK;
}

struct tag_arg {
    const struct ks_sandbox_db *db;
    const char *tag;
    struct ks_sandbox_op *out;
};

static int tag_read(struct ks_sql *conn, void *arg)
{
    struct tag_arg *a = arg;
    return a->db->load_by_tag(conn, a->tag, a->out);
}

int ks_sandbox_operation_by_tag(struct ks_sandbox *sb, const char *tag, struct ks_sandbox_op *out)
{
    assert(sb != NULL && out != NULL);
    if (!tag || !*tag || strlen(tag) > KS_CALLBACK_TAG_BYTES_MAX)
        return KS_ERR_NOT_FOUND;
    struct tag_arg a = {.db = sb->db, .tag = tag, .out = out};
    return ks_sql_read(sb->store, tag_read, &a);
}
