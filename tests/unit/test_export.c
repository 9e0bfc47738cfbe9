/*
 * test_export.c — export files (src/export/): which invoice events are operations and what
 * their rows hold, CSV quoting and JSON Lines, manifests and checksums, the window logic, the
 * durable file set and `verify` catching what is wrong; and, on the test store, operations
 * recorded once each and written in exactly one window, late ones included, with a file set
 * renamed before a crash adopted rather than written again.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/ids.h"
#include "export/export_int.h"
#include "store/store.h"
#include "unit_store.h"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kassa-export-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(export, .init = setup, .fini = teardown, .timeout = 120);

/* --- operations from the invoice machine's state ------------------------------------------- */

/* An invoice state as the invoice machine folds it: one payment of 10000 RUB through
 * sandbox/sandbox-1, partially captured for 6000 with a recomputed cash flow, one refund. */
static json_t *state_fixture(void)
{
    const char *text =
        "{\"invoice\":{\"id\":\"inv1\",\"shopID\":\"TEST\",\"status\":\"paid\"},"
        " \"payments\":[{\"public\":{\"id\":\"1\",\"createdAt\":\"2026-12-01T10:00:00.000Z\","
        "   \"amount\":10000,\"currency\":\"RUB\",\"status\":\"captured\","
        "   \"payer\":{\"paymentToolDetails\":{\"cardNumberMask\":\"424242******4242\"}},"
        "   \"transactionInfo\":{\"rrn\":\"602475458484\",\"approvalCode\":\"400410\"}},"
        "  \"route\":{\"provider\":\"sandbox\",\"terminal\":\"sandbox-1\",\"cashflow\":["
        "   {\"from\":\"provider:sandbox:settlement:RUB\",\"to\":\"shop:TEST:settlement:RUB\","
        "    \"amount\":10000,\"currency\":\"RUB\"},"
        "   {\"from\":\"shop:TEST:settlement:RUB\",\"to\":\"system:revenue:RUB\",\"amount\":250,"
        "    \"currency\":\"RUB\"},"
        "   {\"from\":\"system:revenue:RUB\",\"to\":\"provider:sandbox:settlement:RUB\","
        "    \"amount\":100,\"currency\":\"RUB\"}]},"
        "  \"captured\":6000,"
        "  \"captureFlow\":{\"amount\":6000,\"cashflow\":["
        "   {\"from\":\"shop:TEST:settlement:RUB\",\"to\":\"system:revenue:RUB\",\"amount\":150,"
        "    \"currency\":\"RUB\"}]},"
        "  \"refunds\":[{\"public\":{\"id\":\"1\",\"createdAt\":\"2026-12-01T11:00:00.000Z\","
        "    \"amount\":2000,\"currency\":\"RUB\",\"status\":\"succeeded\","
        "    \"transactionInfo\":{\"rrn\":\"sbx_r1\"}},"
        "   \"cashflow\":[{\"from\":\"shop:TEST:settlement:RUB\","
        "    \"to\":\"provider:sandbox:settlement:RUB\",\"amount\":2000,\"currency\":\"RUB\"}]}]},"
        " {\"public\":{\"id\":\"2\",\"createdAt\":\"2026-12-01T09:00:00.000Z\",\"amount\":10000,"
        "   "
        "\"currency\":\"RUB\",\"status\":\"failed\",\"error\":{\"code\":\"authorization_failed\","
        "   \"subError\":{\"code\":\"insufficient_funds\"}}},"
        "  \"route\":{\"provider\":\"sandbox\",\"terminal\":\"sandbox-1\",\"cashflow\":[]},"
        "  \"captured\":0,\"refunds\":[]}]}";
    json_error_t err;
    json_t *s = json_loads(text, 0, &err);
    cr_assert_not_null(s, "fixture: %s", err.text);
    return s;
}

static struct ks_export_op op_of(const json_t *state, const char *event_text, bool want)
{
    json_t *ev = json_loads(event_text, 0, NULL);
    cr_assert_not_null(ev);
    struct ks_export_op op;
    memset(&op, 0, sizeof(op));
    bool is_op = !want;
    cr_assert_eq(ks_export_op_from_event(state, "inv1", ev, 1796000000000LL, &op, &is_op), KS_OK);
    cr_assert_eq(is_op, want, "%s", event_text);
    json_decref(ev);
    return op;
}

Test(export, a_partial_capture_takes_its_own_cash_flow_s_fee)
{
    json_t *s = state_fixture();
    struct ks_export_op op = op_of(
        s, "{\"type\":\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":\"captured\"}", true);
    cr_assert_str_eq(op.op_id, "inv1.1.captured");
    cr_assert_str_eq(op.type, "payment.captured");
    cr_assert_str_eq(op.shop, "TEST");
    cr_assert_eq(op.amount, 6000);
    cr_assert_eq(op.gross, 6000);
    cr_assert_eq(op.fee, 150, "the partial capture's flow, not the route's 250");
    cr_assert_eq(op.net, 5850);
    cr_assert_str_eq(op.currency, "RUB");
    cr_assert_str_eq(op.provider, "sandbox");
    cr_assert_str_eq(op.terminal, "sandbox-1");
    cr_assert_str_eq(op.rrn, "602475458484");
    cr_assert_str_eq(op.approval_code, "400410");
    cr_assert_str_eq(op.card_mask, "424242******4242");
    cr_assert_eq(op.finished_ms, 1796000000000LL);
    cr_assert_eq(op.window_ms, 1796000000000LL);
    int64_t created = 0;
    cr_assert_eq(ks_time_parse_rfc3339("2026-12-01T10:00:00.000Z", &created), 0);
    cr_assert_eq(op.created_ms, created);
    json_decref(s);
}

Test(export, refunds_failures_and_other_final_states)
{
    json_t *s = state_fixture();
    struct ks_export_op r = op_of(s,
                                  "{\"type\":\"RefundStatusChanged\",\"paymentID\":\"1\","
                                  "\"refundID\":\"1\",\"status\":\"succeeded\"}",
                                  true);
    cr_assert_str_eq(r.op_id, "inv1.1.r1");
    cr_assert_str_eq(r.type, "refund.succeeded");
    cr_assert_str_eq(r.refund, "1");
    cr_assert_eq(r.amount, 2000);
    cr_assert_eq(r.gross, -2000);
    cr_assert_eq(r.fee, 0);
    cr_assert_eq(r.net, -2000);
    cr_assert_str_eq(r.rrn, "sbx_r1");
    cr_assert_str_eq(r.card_mask, "424242******4242");

    struct ks_export_op f = op_of(
        s, "{\"type\":\"PaymentStatusChanged\",\"paymentID\":\"2\",\"status\":\"failed\"}", true);
    cr_assert_str_eq(f.op_id, "inv1.2.failed");
    cr_assert_str_eq(f.error, "authorization_failed:insufficient_funds");
    cr_assert_eq(f.amount, 10000);
    cr_assert_eq(f.gross, 0);
    cr_assert_eq(f.net, 0);

    struct ks_export_op rf = op_of(
        s, "{\"type\":\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":\"refunded\"}", true);
    cr_assert_str_eq(rf.op_id, "inv1.1.refunded");
    cr_assert_eq(rf.amount, 2000, "the sum refunded");
    cr_assert_eq(rf.gross, 0, "the money moved in the refunds, counted there");

    /* not operations: a payment still moving, a refund still pending, other events */
    op_of(s, "{\"type\":\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":\"processed\"}",
          false);
    op_of(s,
          "{\"type\":\"RefundStatusChanged\",\"paymentID\":\"1\",\"refundID\":\"1\","
          "\"status\":\"pending\"}",
          false);
    op_of(s, "{\"type\":\"InvoiceStatusChanged\",\"status\":\"paid\"}", false);

    /* an event naming a payment the state does not have is an error, not a silent skip */
    json_t *ev = json_loads(
        "{\"type\":\"PaymentStatusChanged\",\"paymentID\":\"9\",\"status\":\"captured\"}", 0, NULL);
    struct ks_export_op op;
    bool is_op = true;
    cr_assert_eq(ks_export_op_from_event(s, "inv1", ev, 1, &op, &is_op), KS_ERR_INVALID);
    cr_assert(!is_op);
    json_decref(ev);
    json_decref(s);
}

Test(export, a_provider_s_overlong_reference_is_cut_visibly_not_refused)
{
    json_t *s = state_fixture();
    json_t *ti = json_object_get(
        json_object_get(json_array_get(json_object_get(s, "payments"), 0), "public"),
        "transactionInfo");
    /* longer than the column, with a two-byte character where the cut falls */
    char rrn[300];
    memset(rrn, 'R', 124);
    memcpy(rrn + 124, "\xc3\xa9", 2); /* é at bytes 124..125: the cut (125 kept) splits it */
    memset(rrn + 126, 'R', 100);
    rrn[226] = '\0';
    json_object_set_new(ti, "rrn", json_string(rrn));
    struct ks_export_op op = op_of(
        s, "{\"type\":\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":\"captured\"}", true);
    size_t n = strlen(op.rrn);
    cr_assert(n <= KS_EXPORT_REF_BYTES_MAX, "%zu", n);
    cr_assert_str_eq(op.rrn + n - 3, "...");
    cr_assert_eq(strncmp(op.rrn, rrn, n - 3), 0);
    cr_assert_eq(n - 3, 124, "cut before the character, not inside it");
    /* the row is still valid JSON (UTF-8 kept whole) */
    char line[KS_EXPORT_LINE_BYTES_MAX];
    size_t len = 0;
    cr_assert_eq(ks_export_jsonl_row(&op, line, sizeof(line), &len), KS_OK);
    json_decref(s);
}

/* --- CSV and JSON Lines -------------------------------------------------------------------- */

Test(export, csv_fields_are_quoted_when_they_must_be)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"", ""},
        {"a,b", "\"a,b\""},
        {"say \"hi\"", "\"say \"\"hi\"\"\""},
        {"two\nlines", "\"two\nlines\""},
        {"cr\rhere", "\"cr\rhere\""},
        {"\"", "\"\"\"\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64] = "x=";
        size_t len = 2;
        cr_assert_eq(ks_export_csv_field(cases[i].in, out, sizeof(out), &len), KS_OK);
        cr_assert_str_eq(out + 2, cases[i].out, "case %zu", i);
        cr_assert_eq(len, 2 + strlen(cases[i].out));
    }
    /* a field that does not fit leaves the buffer as it was */
    char small[8] = "ab";
    size_t len = 2;
    cr_assert_eq(ks_export_csv_field("a,\"long\"", small, sizeof(small), &len), KS_ERR_LIMIT);
    cr_assert_eq(len, 2);
    cr_assert_str_eq(small, "ab");
    /* exactly full: 7 bytes and the NUL */
    len = 0;
    cr_assert_eq(ks_export_csv_field("1234567", small, sizeof(small), &len), KS_OK);
    cr_assert_eq(len, 7);
}

static struct ks_export_op sample_op(const char *id, const char *currency, int64_t gross,
                                     int64_t fee, int64_t window_ms)
{
    struct ks_export_op o;
    memset(&o, 0, sizeof(o));
    snprintf(o.op_id, sizeof(o.op_id), "%s", id);
    snprintf(o.type, sizeof(o.type), "payment.captured");
    snprintf(o.invoice, sizeof(o.invoice), "inv,\"1\"");
    snprintf(o.payment, sizeof(o.payment), "1");
    snprintf(o.shop, sizeof(o.shop), "TEST");
    snprintf(o.currency, sizeof(o.currency), "%s", currency);
    snprintf(o.provider, sizeof(o.provider), "sandbox");
    snprintf(o.card_mask, sizeof(o.card_mask), "424242******4242");
    o.created_ms = window_ms - 10;
    o.finished_ms = o.window_ms = window_ms;
    o.amount = gross;
    o.gross = gross;
    o.fee = fee;
    o.net = gross - fee;
    return o;
}

Test(export, a_row_in_csv_and_in_json_lines)
{
    struct ks_export_op o = sample_op("inv.1.captured", "RUB", 6000, 150, 1796000000000LL);
    char line[KS_EXPORT_LINE_BYTES_MAX];
    size_t len = 0;
    cr_assert_eq(ks_export_csv_row(&o, line, sizeof(line), &len), KS_OK);
    cr_assert_eq(strlen(line), len);
    cr_assert_str_eq(line, "inv.1.captured,payment.captured,\"inv,\"\"1\"\"\",1,,TEST,"
                           "2026-11-30T00:53:19.990Z,2026-11-30T00:53:20.000Z,"
                           "2026-11-30T00:53:20.000Z,6000,6000,150,5850,RUB,sandbox,,,,"
                           "424242******4242,\r\n");
    /* as many fields as the header */
    const char *hdr = ks_export_csv_header();
    size_t commas = 0;
    for (const char *c = hdr; *c; c++)
        commas += *c == ',';
    cr_assert_eq(commas, 19);

    cr_assert_eq(ks_export_jsonl_row(&o, line, sizeof(line), &len), KS_OK);
    cr_assert_eq(line[len - 1], '\n');
    json_t *j = json_loads(line, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "invoice_id")), "inv,\"1\"");
    cr_assert_eq(json_integer_value(json_object_get(j, "net")), 5850);
    cr_assert(json_is_integer(json_object_get(j, "gross")), "money is an integer");
    cr_assert_eq(json_object_size(j), 20);
    json_decref(j);

    /* a row that does not fit is refused, not cut */
    cr_assert_eq(ks_export_csv_row(&o, line, 40, &len), KS_ERR_LIMIT);
    cr_assert_eq(ks_export_jsonl_row(&o, line, 40, &len), KS_ERR_LIMIT);
}

/* --- manifests ----------------------------------------------------------------------------- */

Test(export, a_manifest_sums_per_currency_and_reads_back)
{
    struct ks_export_manifest m;
    memset(&m, 0, sizeof(m));
    m.seq = 7;
    m.from_ms = 1796000000000LL;
    m.to_ms = m.from_ms + 3600000;
    m.written_ms = m.to_ms + 5;
    struct ks_export_op a = sample_op("a", "USD", 1000, 30, m.from_ms);
    struct ks_export_op b = sample_op("b", "RUB", 6000, 150, m.from_ms);
    struct ks_export_op c = sample_op("c", "RUB", -2000, 0, m.from_ms);
    cr_assert_eq(ks_export_manifest_add(&m, &a), KS_OK);
    cr_assert_eq(ks_export_manifest_add(&m, &b), KS_OK);
    cr_assert_eq(ks_export_manifest_add(&m, &c), KS_OK);
    cr_assert_eq(m.rows, 3);
    cr_assert_eq(m.totals_n, 2);
    cr_assert_str_eq(m.totals[0].currency, "RUB", "ascending by currency");
    cr_assert_eq(m.totals[0].rows, 2);
    cr_assert_eq(m.totals[0].gross, 4000);
    cr_assert_eq(m.totals[0].fee, 150);
    cr_assert_eq(m.totals[0].net, 3850);
    cr_assert_eq(m.totals[1].net, 970);
    memset(m.csv_sha256, 'a', 64);
    memset(m.jsonl_sha256, 'b', 64);
    m.csv_bytes = 10;
    m.jsonl_bytes = 20;

    char *text = ks_export_manifest_json(&m);
    cr_assert_not_null(text);
    struct ks_export_manifest back;
    char why[200] = "";
    cr_assert_eq(ks_export_manifest_parse(text, &back, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(back.seq, 7);
    cr_assert_eq(back.from_ms, m.from_ms);
    cr_assert_eq(back.to_ms, m.to_ms);
    cr_assert_eq(back.rows, 3);
    cr_assert_eq(back.csv_bytes, 10);
    cr_assert_str_eq(back.jsonl_sha256, m.jsonl_sha256);
    cr_assert_eq(back.totals_n, 2);
    cr_assert_eq(back.totals[1].net, 970);
    cr_assert(strstr(text, "\"name\": \"000007.csv\""));

    /* what is not a manifest is refused with a reason */
    cr_assert_eq(ks_export_manifest_parse("{}", &back, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert(strstr(why, "format"));
    char *bad = strdup(text);
    char *sha = strstr(bad, "aaaa");
    sha[0] = 'X';
    cr_assert_eq(ks_export_manifest_parse(bad, &back, why, sizeof(why)), KS_ERR_INVALID);
    free(bad);
    free(text);

    /* an overflowing total is an error, never a wrapped sum */
    struct ks_export_op huge = sample_op("h", "RUB", INT64_MAX, 0, m.from_ms);
    cr_assert_eq(ks_export_manifest_add(&m, &huge), KS_ERR_INVALID);
}

/* --- windows ------------------------------------------------------------------------------- */

Test(export, windows_end_on_period_boundaries_after_the_grace)
{
    const int64_t H = 3600000, T0 = 1796000400000LL; /* T0 is a multiple of an hour */
    cr_assert_eq(T0 % H, 0);
    int64_t from = 0, to = 0;
    /* the first window: the hour before the last due boundary */
    cr_assert(ks_export_window_due(T0 + 10000, H, 10000, 0, 0, &from, &to));
    cr_assert_eq(from, T0 - H);
    cr_assert_eq(to, T0);
    /* within the grace it is not due yet */
    cr_assert(!ks_export_window_due(T0 + 9999, H, 10000, T0 - H, 0, &from, &to));
    /* ... and with operations older than that, the first window reaches back to them */
    cr_assert(ks_export_window_due(T0 + 10000, H, 10000, 0, T0 - 3 * H + 5, &from, &to));
    cr_assert_eq(from, T0 - 3 * H);
    cr_assert_eq(to, T0);
    /* the next window starts where the last one ended */
    cr_assert(!ks_export_window_due(T0 + H + 9999, H, 10000, T0, 0, &from, &to));
    cr_assert(ks_export_window_due(T0 + H + 10000, H, 10000, T0, 0, &from, &to));
    cr_assert_eq(from, T0);
    cr_assert_eq(to, T0 + H);
    /* a writer that was down catches up in one window, [last end, last due boundary) */
    cr_assert(ks_export_window_due(T0 + 5 * H + 20000, H, 10000, T0, 0, &from, &to));
    cr_assert_eq(from, T0);
    cr_assert_eq(to, T0 + 5 * H);
    /* a clock that went back writes nothing */
    cr_assert(!ks_export_window_due(T0 - H, H, 0, T0, 0, &from, &to));
}

/* --- file sets and verify ------------------------------------------------------------------ */

static void write_set(const char *dir, int64_t seq, int64_t from, int64_t to,
                      const struct ks_export_op *ops, size_t n)
{
    struct ex_set s;
    cr_assert_eq(ex_set_begin(&s, dir, seq), KS_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ex_set_add(&s, &ops[i]), KS_OK);
    cr_assert_eq(ex_set_commit(&s, from, to, to + 1), KS_OK);
}

static struct ks_export_verify_report *verify(const char *dir)
{
    static struct ks_export_verify_report r;
    cr_assert_eq(ks_export_verify(dir, &r), KS_OK);
    return &r;
}

static bool has_problem(const struct ks_export_verify_report *r, const char *text)
{
    for (size_t i = 0; i < r->problems_n && i < KS_EXPORT_VERIFY_PROBLEMS_MAX; i++)
        if (strstr(r->problems[i], text))
            return true;
    return false;
}

static void flip_byte(const char *dir, const char *name, long at)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r+");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, at, SEEK_SET), 0);
    int c = fgetc(f);
    cr_assert_eq(fseek(f, at, SEEK_SET), 0);
    fputc(c == '1' ? '2' : '1', f);
    fclose(f);
}

Test(export, a_file_set_is_durable_checked_and_verified)
{
    const int64_t T = 1796000400000LL;
    struct ks_export_op ops[3] = {sample_op("i1.1.captured", "RUB", 6000, 150, T + 1),
                                  sample_op("i2.1.captured", "RUB", 1000, 25, T + 2),
                                  sample_op("i3.1.captured", "USD", 700, 0, T + 3)};
    write_set(tmpdir, 1, T, T + 1000, ops, 2);
    write_set(tmpdir, 2, T + 1000, T + 2000, NULL, 0);
    ops[2].window_ms = T + 2500;
    write_set(tmpdir, 3, T + 2000, T + 3000, &ops[2], 1);
    /* no temporary file is left behind */
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s/.000001.csv.tmp", tmpdir);
    cr_assert_neq(access(tmp, F_OK), 0);

    struct ks_export_manifest m;
    char why[256] = "";
    cr_assert_eq(ex_manifest_read(tmpdir, 1, &m, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(m.rows, 2);
    cr_assert_eq(m.totals[0].net, 6825);
    cr_assert_eq(ex_manifest_check_files(tmpdir, &m, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(ex_manifest_read(tmpdir, 4, &m, why, sizeof(why)), KS_ERR_NOT_FOUND);

    struct ks_export_verify_report *r = verify(tmpdir);
    cr_assert_eq(r->problems_n, 0, "%s", r->problems[0]);
    cr_assert_eq(r->files, 3);
    cr_assert_eq(r->rows, 3);

    /* one byte changed in a data file: the checksum catches it */
    flip_byte(tmpdir, "000001.jsonl", 30);
    cr_assert_eq(ex_manifest_read(tmpdir, 1, &m, why, sizeof(why)), KS_OK);
    cr_assert_eq(ex_manifest_check_files(tmpdir, &m, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert(strstr(why, "000001.jsonl"), "%s", why);
    r = verify(tmpdir);
    cr_assert(has_problem(r, "000001.jsonl does not match its manifest"), "%s", r->problems[0]);
}

Test(export, verify_finds_gaps_duplicates_and_lying_manifests)
{
    const int64_t T = 1796000400000LL;
    struct ks_export_op a = sample_op("dup.1.captured", "RUB", 6000, 150, T + 1);
    struct ks_export_op b = sample_op("other.1.captured", "RUB", 100, 0, T + 1500);
    write_set(tmpdir, 1, T, T + 1000, &a, 1);
    a.window_ms = T + 1001;
    struct ks_export_op two[2] = {a, b};
    write_set(tmpdir, 2, T + 1000, T + 2000, two, 2);
    struct ks_export_verify_report *r = verify(tmpdir);
    cr_assert(has_problem(r, "operation dup.1.captured appears twice"), "%zu %s", r->problems_n,
              r->problems[0]);
    cr_assert_eq(r->problems_n, 1);

    /* a missing set in the middle */
    write_set(tmpdir, 4, T + 3000, T + 4000, NULL, 0);
    r = verify(tmpdir);
    cr_assert(has_problem(r, "file set 000003 is missing"));

    /* a manifest whose totals are not its rows' (rewritten with a consistent checksum) */
    char dir2[300];
    snprintf(dir2, sizeof(dir2), "%s/d2", tmpdir);
    cr_assert_eq(mkdir(dir2, 0700), 0);
    write_set(dir2, 5, T, T + 1000, &b, 1);       /* an archive may start past 1 */
    b.window_ms = T + 1001;                       /* outside its window [T, T + 1000)... */
    write_set(dir2, 6, T + 500, T + 1500, &b, 1); /* ...and overlapping the one before */
    r = verify(dir2);
    cr_assert(has_problem(r, "outside the file's window"));
    cr_assert(has_problem(r, "starts before the previous one ends"));
    cr_assert(has_problem(r, "appears twice"));
    cr_assert(!has_problem(r, "missing"), "%s", r->problems[0]);

    char path[512];
    snprintf(path, sizeof(path), "%s/000005.manifest.json", dir2);
    FILE *f = fopen(path, "r");
    char text[8192];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *net = strstr(text, "\"net\": 100");
    cr_assert_not_null(net);
    net[8] = '9';
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    r = verify(dir2);
    cr_assert(has_problem(r, "totals are not the sums"), "%s", r->problems[0]);
}

Test(export, verify_reads_quoted_csv_and_catches_a_cut_one)
{
    const int64_t T = 1796000400000LL;
    struct ks_export_op a = sample_op("q.1.captured", "RUB", 10, 0, T + 1);
    snprintf(a.error, sizeof(a.error), "line one\nline \"two\", end");
    write_set(tmpdir, 1, T, T + 1000, &a, 1);
    struct ks_export_verify_report *r = verify(tmpdir);
    cr_assert_eq(r->problems_n, 0, "%s", r->problems[0]);
    /* cut the CSV and make its manifest agree: the parser still sees the cut record */
    char path[512];
    snprintf(path, sizeof(path), "%s/000001.csv", tmpdir);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(truncate(path, sb.st_size - 4), 0);
    struct ks_export_manifest m;
    char why[200];
    cr_assert_eq(ex_manifest_read(tmpdir, 1, &m, why, sizeof(why)), KS_OK);
    cr_assert_eq(ex_file_sha256(path, m.csv_sha256, &m.csv_bytes), KS_OK);
    char *text = ks_export_manifest_json(&m);
    snprintf(path, sizeof(path), "%s/000001.manifest.json", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    r = verify(tmpdir);
    cr_assert(has_problem(r, "000001.csv"), "%zu %s", r->problems_n, r->problems[0]);
}

/* --- on the store: exactly once across windows, late operations, a crash ------------------- */

static size_t count_in_dir(const char *dir, const char *op_id)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cat '%s'/*.jsonl 2>/dev/null | grep -c '\"operation_id\":\"%s\"'",
             dir, op_id);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = 0;
    cr_assert_eq(fscanf(p, "%zu", &n), 1);
    pclose(p);
    return n;
}

/* One test, not several: on a shared store (PostgreSQL) the export's state is one row that
 * every writer moves, so its steps must not interleave with another test's. */
Test(export, every_operation_in_exactly_one_window_across_late_records_and_a_crash)
{
    char url[512], sdir[256], why[256];
    unit_store_url(url, sizeof(url), sdir, sizeof(sdir));
    struct ks_store *store = NULL;
    cr_assert_eq(ks_store_open(url, NULL, &store, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(ks_sql_migrate(store, &ks_export_schema, why, sizeof(why)), KS_OK, "%s", why);
    char outdir[300];
    snprintf(outdir, sizeof(outdir), "%s/out", tmpdir);
    /* real time: a shared store's windows may already reach up to now */
    const int64_t P = 1000, now = (ks_now_ms() / P + 2) * P;
    struct ks_export_options o = {.dir = outdir, .period_ms = P, .grace_ms = 0};
    struct ks_export *ex = NULL;
    cr_assert_eq(ks_export_open(store, NULL, &o, &ex), KS_OK);

    char run[16], ids[4][64];
    cr_assert_eq(ks_id_random(run, 12), KS_OK);
    for (int i = 0; i < 4; i++)
        snprintf(ids[i], sizeof(ids[i]), "u%s.%d.captured", run, i);
    struct ks_export_op a = sample_op(ids[0], "RUB", 100, 1, now - P + 10);
    struct ks_export_op b = sample_op(ids[1], "RUB", 200, 2, now + 10);
    cr_assert_eq(ex_record(store, &a, 1, now), KS_OK);
    cr_assert_eq(ex_record(store, &b, 1, now), KS_OK);
    cr_assert_eq(ex_record(store, &a, 1, now), KS_OK, "a repeat is not an error...");

    bool written = false;
    for (int i = 0; i < 20 && ks_export_tick(ex, now + 1, &written) == KS_OK && written; i++)
        ;
    cr_assert_eq(count_in_dir(outdir, ids[0]), 1, "...nor a second row");
    cr_assert_eq(count_in_dir(outdir, ids[1]), 0, "its window is not closed yet");

    /* an operation that finished in a window already written is recorded late: it goes to the
     * next window, not into the past, and not nowhere */
    struct ks_export_op late = sample_op(ids[2], "RUB", 300, 3, now - P + 20);
    cr_assert_eq(ex_record(store, &late, 1, now + 2), KS_OK);
    for (int i = 0; i < 20 && ks_export_tick(ex, now + P + 1, &written) == KS_OK && written; i++)
        ;
    cr_assert_eq(count_in_dir(outdir, ids[1]), 1);
    cr_assert_eq(count_in_dir(outdir, ids[2]), 1);

    /* a crash after the file set was renamed but before the store moved on: the next tick finds
     * the set in place, checks it and adopts it instead of writing the window again */
    struct ks_export_op c = sample_op(ids[3], "RUB", 400, 4, now + P + 10);
    cr_assert_eq(ex_record(store, &c, 1, now + P + 11), KS_OK);
    int64_t seqs[64];
    size_t n = 0;
    cr_assert_eq(ex_manifest_list(outdir, seqs, 64, &n), KS_OK);
    cr_assert(n > 0);
    struct ks_export_manifest last;
    cr_assert_eq(ex_manifest_read(outdir, seqs[n - 1], &last, why, sizeof(why)), KS_OK);
    cr_assert_eq(ex_seal(store, now + 2 * P, now + 2 * P), KS_OK);
    int64_t rows = 0;
    cr_assert_eq(ex_write_window(store, outdir, seqs[n - 1] + 1, last.to_ms, now + 2 * P,
                                 now + 2 * P, &rows),
                 KS_OK);
    cr_assert(rows >= 1);
    /* the "restarted" writer */
    ks_export_close(ex);
    cr_assert_eq(ks_export_open(store, NULL, &o, &ex), KS_OK);
    cr_assert_eq(ks_export_tick(ex, now + 2 * P + 1, &written), KS_OK);
    cr_assert(written, "adopted");
    for (int i = 0; i < 20 && ks_export_tick(ex, now + 2 * P + 1, &written) == KS_OK && written;
         i++)
        ;
    cr_assert_eq(count_in_dir(outdir, ids[3]), 1);
    size_t n2 = 0;
    cr_assert_eq(ex_manifest_list(outdir, seqs, 64, &n2), KS_OK);
    cr_assert_eq(n2, n + 1, "nothing written after the adopted set: its window is the last due");

    struct ks_export_verify_report *r = verify(outdir);
    cr_assert_eq(r->problems_n, 0, "%s", r->problems[0]);

    /* `export run` on another directory: the range, once; an overlapping range is refused */
    char rundir[300];
    snprintf(rundir, sizeof(rundir), "%s/run", tmpdir);
    struct ks_export_run_report rep;
    cr_assert_eq(ks_export_run_range(store, rundir, now - P, now + 2 * P, now + 3 * P, &rep, why,
                                     sizeof(why)),
                 KS_OK, "%s", why);
    cr_assert_eq(rep.seq, 1);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(count_in_dir(rundir, ids[i]), 1, "%s", ids[i]);
    cr_assert_eq(
        ks_export_run_range(store, rundir, now, now + P, now + 3 * P, &rep, why, sizeof(why)),
        KS_ERR_CONFLICT);
    cr_assert(strstr(why, "overlaps file set 1"), "%s", why);
    cr_assert_eq(
        ks_export_run_range(store, rundir, now + P, now, now + 3 * P, &rep, why, sizeof(why)),
        KS_ERR_INVALID);
    cr_assert_eq(ks_export_run_range(store, rundir, now + 3 * P, now + 5 * P, now + 4 * P, &rep,
                                     why, sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert(strstr(why, "future"), "%s", why);

    ks_export_close(ex);
    ks_store_close(store);
    unit_store_remove(sdir);
}
