/* test_loadgen_json.c — kassa-loadgen's JSON (bench/loadgen_json.c): the scanner accepts and
 * refuses what jansson does (a differential test over tricky texts), the string writer, and the
 * readers of kassa's replies — above all that the events verdict is not fooled by a field of
 * the same name elsewhere in the reply. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/loadgen_json.h"

/* Whether the scanner takes text as one JSON document whose top is an object or an array. */
static int scanner_accepts(const char *text, size_t len)
{
    struct kb_lg_json j;
    kb_lg_json_init(&j, text, len);
    enum kb_lg_json_type t = kb_lg_json_type(&j);
    if (t != KB_LG_JSON_OBJECT && t != KB_LG_JSON_ARRAY)
        return 0;
    return kb_lg_json_skip(&j) == 0 && kb_lg_json_done(&j) == 0;
}

Test(loadgen, json_scanner_agrees_with_jansson)
{
    const char *texts[] = {
        "{}",
        "[]",
        " [ ] ",
        "{\"a\":1}",
        "[1,2,3]",
        "[1,]",
        "[,1]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{\"a\":}",
        "{1:2}",
        "[01]",
        "[-0]",
        "[-]",
        "[1.]",
        "[.5]",
        "[1e5]",
        "[1E+5]",
        "[1e]",
        "[0.5e-3]",
        "[true,false,null]",
        "[tru]",
        "[nul]",
        "[True]",
        "\"top\"",
        "12",
        "true",
        "",
        " ",
        "[\"\\u0041\"]",
        "[\"\\u00e9\"]",
        "[\"\\ud83d\\ude00\"]",
        "[\"\\ud83d\"]",
        "[\"\\ude00\"]",
        "[\"\\ud83dx\"]",
        "[\"\\u0000\"]",
        "[\"\\x\"]",
        "[\"\\u12\"]",
        "[\"a\tb\"]",
        "[\"a\nb\"]",
        "[\"\xc3\xa9\"]",
        "[\"\xc3\"]",
        "[\"\xc0\xaf\"]",
        "[\"\xed\xa0\x80\"]",
        "[\"\xf4\x90\x80\x80\"]",
        "[\"\xf0\x9f\x98\x80\"]",
        "[\"\xff\"]",
        "[\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"]",
        "[1] x",
        "[1] [2]",
        "{\"a\":[{\"b\":{}}]}",
        "[[[[]]]]",
        "[[[[]]]",
        "{\"a\":1}}",
        "[\"unterminated]",
        "[9223372036854775807]",
        "[-9223372036854775808]",
        "[9223372036854775808]",
        "[-9223372036854775809]",
        "[123456789012345678901234567890]",
        "{\"a\":1,\"a\":2}",
        "[1 2]",
        "[\"a\" \"b\"]",
        "{\"a\":1 \"b\":2}",
        "\n\r\t[\n]\n",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        size_t len = strlen(texts[i]);
        json_t *jt = json_loadb(texts[i], len, 0, NULL);
        int jansson_ok = jt != NULL;
        json_decref(jt);
        cr_assert_eq(scanner_accepts(texts[i], len), jansson_ok, "%zu: %s: jansson says %d", i,
                     texts[i], jansson_ok);
    }
    /* \u0000 and raw NUL bytes are refused, as by jansson without JSON_ALLOW_NUL */
    cr_assert_eq(scanner_accepts("[\"a\0b\"]", 7), 0);
}

Test(loadgen, json_depth_is_bounded)
{
    char deep[2 * (KB_LG_JSON_DEPTH_MAX + 1) + 1];
    size_t n = 0;
    for (int i = 0; i < KB_LG_JSON_DEPTH_MAX; i++)
        deep[n++] = '[';
    for (int i = 0; i < KB_LG_JSON_DEPTH_MAX; i++)
        deep[n++] = ']';
    cr_assert_eq(scanner_accepts(deep, n), 1, "at the bound");
    n = 0;
    for (int i = 0; i <= KB_LG_JSON_DEPTH_MAX; i++)
        deep[n++] = '[';
    for (int i = 0; i <= KB_LG_JSON_DEPTH_MAX; i++)
        deep[n++] = ']';
    cr_assert_eq(scanner_accepts(deep, n), 0, "over the bound: refused, no overflow");
}

Test(loadgen, json_strings_and_integers_decode)
{
    const char *text = "[\"caf\\u00e9 \\\"q\\\" \\ud83d\\ude00\", \"long string\", 42, -7, 1.5]";
    struct kb_lg_json j;
    kb_lg_json_init(&j, text, strlen(text));
    cr_assert_eq(kb_lg_json_enter(&j), 0);
    char buf[32];
    size_t len = 0;
    cr_assert_eq(kb_lg_json_next(&j), 1);
    cr_assert_eq(kb_lg_json_string(&j, buf, sizeof(buf), &len), 0);
    cr_assert_str_eq(buf, "caf\xc3\xa9 \"q\" \xf0\x9f\x98\x80");
    cr_assert_eq(len, strlen(buf));
    cr_assert_eq(kb_lg_json_next(&j), 1);
    cr_assert_eq(kb_lg_json_string(&j, buf, 5, &len), 1, "longer than the buffer");
    cr_assert_str_eq(buf, "long", "cut, NUL-terminated");
    int64_t v = 0;
    cr_assert_eq(kb_lg_json_next(&j), 1);
    cr_assert_eq(kb_lg_json_int(&j, &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(kb_lg_json_next(&j), 1);
    cr_assert_eq(kb_lg_json_int(&j, &v), 0);
    cr_assert_eq(v, -7);
    cr_assert_eq(kb_lg_json_next(&j), 1);
    cr_assert_eq(kb_lg_json_int(&j, &v), 1, "not an integer");
    cr_assert_eq(kb_lg_json_next(&j), 0);
    cr_assert_eq(kb_lg_json_done(&j), 0);
}

Test(loadgen, json_writer_escapes_and_is_bounded)
{
    char buf[64];
    size_t at = 0;
    cr_assert_eq(kb_lg_json_put_string(buf, sizeof(buf), &at, "a\"b\\c\n\x01\xc3\xa9", 9), 0);
    buf[at] = '\0';
    cr_assert_str_eq(buf, "\"a\\\"b\\\\c\\u000a\\u0001\xc3\xa9\"");
    /* what it writes reads back the same */
    struct kb_lg_json j;
    kb_lg_json_init(&j, buf, at);
    char back[32];
    cr_assert_eq(kb_lg_json_string(&j, back, sizeof(back), NULL), 0);
    cr_assert_str_eq(back, "a\"b\\c\n\x01\xc3\xa9");
    at = 0;
    cr_assert_eq(kb_lg_json_put_string(buf, sizeof(buf), &at, "\xff", 1), -1, "not UTF-8");
    cr_assert_eq(at, 0);
    cr_assert_eq(kb_lg_json_put_string(buf, 5, &at, "abc", 3), 0, "exactly fits");
    cr_assert_eq(at, 5);
    at = 0;
    cr_assert_eq(kb_lg_json_put_string(buf, 4, &at, "abc", 3), -1, "one byte short");
    cr_assert_eq(at, 0);
}

/* --- kassa's replies ------------------------------------------------------------------------ */

Test(loadgen, json_invoice_reply)
{
    const char *ok = "{\"invoice\":{\"id\":\"uoSrG27JQwUg\",\"shopID\":\"TEST\",\"metadata\":"
                     "{\"id\":\"nested\"},\"status\":\"unpaid\"},\"invoiceAccessToken\":"
                     "{\"payload\":\"eyJ.a-b_c.d\"}}";
    char id[96], tok[64];
    cr_assert_eq(kb_lg_reply_invoice(ok, strlen(ok), id, sizeof(id), tok, sizeof(tok)), 0);
    cr_assert_str_eq(id, "uoSrG27JQwUg", "not the id nested in metadata");
    cr_assert_str_eq(tok, "eyJ.a-b_c.d");
    /* an "id" elsewhere is not invoice.id */
    const char *elsewhere = "{\"id\":\"top\",\"x\":{\"invoice\":{\"id\":\"deep\"}},"
                            "\"invoiceAccessToken\":{\"payload\":\"t\"}}";
    cr_assert_eq(
        kb_lg_reply_invoice(elsewhere, strlen(elsewhere), id, sizeof(id), tok, sizeof(tok)),
        KB_LG_REPLY_SHAPE);
    const char *not_string = "{\"invoice\":{\"id\":7},\"invoiceAccessToken\":{\"payload\":\"t\"}}";
    cr_assert_eq(
        kb_lg_reply_invoice(not_string, strlen(not_string), id, sizeof(id), tok, sizeof(tok)),
        KB_LG_REPLY_SHAPE);
    const char *dup = "{\"invoice\":{\"id\":\"first\"},\"invoice\":{\"no\":1},"
                      "\"invoiceAccessToken\":{\"payload\":\"t\"}}";
    cr_assert_eq(kb_lg_reply_invoice(dup, strlen(dup), id, sizeof(id), tok, sizeof(tok)),
                 KB_LG_REPLY_SHAPE, "the last of duplicate keys counts, as in jansson");
    const char *long_tok = "{\"invoice\":{\"id\":\"i\"},\"invoiceAccessToken\":{\"payload\":"
                           "\"0123456789012345678901234567890123456789012345678901234567890123"
                           "\"}}";
    cr_assert_eq(kb_lg_reply_invoice(long_tok, strlen(long_tok), id, sizeof(id), tok, sizeof(tok)),
                 KB_LG_REPLY_SHAPE, "longer than its buffer");
    const char *broken = "{\"invoice\":{\"id\":\"i\"},\"invoiceAccessToken\":{\"payload\":\"t\"}";
    cr_assert_eq(kb_lg_reply_invoice(broken, strlen(broken), id, sizeof(id), tok, sizeof(tok)),
                 KB_LG_REPLY_NOT_JSON, "the fields were there, but the reply is cut");
    cr_assert_eq(kb_lg_reply_invoice("\"x\"", 3, id, sizeof(id), tok, sizeof(tok)),
                 KB_LG_REPLY_NOT_JSON);
    cr_assert_eq(kb_lg_reply_invoice("[1]", 3, id, sizeof(id), tok, sizeof(tok)),
                 KB_LG_REPLY_SHAPE);
}

Test(loadgen, json_resource_and_payment_replies)
{
    const char *res = "{\"paymentToolToken\":\"WVWl\",\"paymentSession\":\"wQgM\","
                      "\"paymentToolDetails\":{\"paymentSession\":\"nested\"}}";
    char tool[64], session[64];
    cr_assert_eq(
        kb_lg_reply_resource(res, strlen(res), tool, sizeof(tool), session, sizeof(session)), 0);
    cr_assert_str_eq(tool, "WVWl");
    cr_assert_str_eq(session, "wQgM");
    const char *no_session = "{\"paymentToolToken\":\"WVWl\",\"x\":{\"paymentSession\":\"s\"}}";
    cr_assert_eq(kb_lg_reply_resource(no_session, strlen(no_session), tool, sizeof(tool), session,
                                      sizeof(session)),
                 KB_LG_REPLY_SHAPE);
    const char *pay = "{\"id\":\"1\",\"payer\":{\"id\":\"p\",\"status\":\"captured\"},"
                      "\"status\":\"pending\"}";
    char id[96], st[32];
    cr_assert_eq(kb_lg_reply_payment(pay, strlen(pay), id, sizeof(id), st, sizeof(st)), 0);
    cr_assert_str_eq(id, "1");
    cr_assert_str_eq(st, "pending", "not the status nested in payer");
    const char *no_status = "{\"id\":\"1\",\"status\":null}";
    cr_assert_eq(kb_lg_reply_payment(no_status, strlen(no_status), id, sizeof(id), st, sizeof(st)),
                 KB_LG_REPLY_SHAPE);
}

/* The events of one payment as kassa sends them (docs/payments.md), with changes[] swapped. */
static int events(const char *text, const char *pid, long long *last)
{
    int v = 99;
    int rc = kb_lg_reply_events(text, strlen(text), pid, last, &v);
    return rc != 0 ? rc * 100 : v; /* -100 shape, -200 not JSON */
}

Test(loadgen, json_events_verdict_reads_only_status_changes_of_our_payment)
{
    const char *real =
        "[{\"id\":1,\"createdAt\":\"2026-12-07T13:48:11.453Z\",\"changes\":[{\"invoice\":"
        "{\"id\":\"uoSrG27JQwUg\",\"status\":\"unpaid\"},\"changeType\":\"InvoiceCreated\"}]},"
        "{\"id\":5,\"changes\":[{\"payment\":{\"id\":\"1\",\"status\":\"pending\",\"payer\":"
        "{\"paymentSession\":\"wQgM\"}},\"changeType\":\"PaymentStarted\"}]},"
        "{\"id\":13,\"changes\":[{\"paymentID\":\"1\",\"status\":\"processed\",\"changeType\":"
        "\"PaymentStatusChanged\"}]},"
        "{\"id\":21,\"changes\":[{\"paymentID\":\"1\",\"status\":\"captured\",\"changeType\":"
        "\"PaymentStatusChanged\"}]},"
        "{\"id\":24,\"changes\":[{\"status\":\"paid\",\"changeType\":\"InvoiceStatusChanged\"}]}]";
    long long last = 0;
    cr_assert_eq(events(real, "1", &last), 1);
    cr_assert_eq(last, 24);
    last = 0;
    cr_assert_eq(events(real, "2", &last), 0, "another payment's");
    cr_assert_eq(last, 24);
    cr_assert_eq(events("[]", "1", &last), 0);

    /* A PaymentStatusChanged nested inside another change is not one. */
    const char *nested =
        "[{\"id\":30,\"changes\":[{\"changeType\":\"PaymentStarted\",\"payment\":"
        "{\"changeType\":\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":\"captured\"}}]}]";
    cr_assert_eq(events(nested, "1", &last), 0);
    /* ... nor one inside a string */
    const char *in_string =
        "[{\"id\":31,\"changes\":[{\"changeType\":\"InvoiceCreated\",\"product\":"
        "\"{\\\"changeType\\\":\\\"PaymentStatusChanged\\\",\\\"paymentID\\\":\\\"1\\\","
        "\\\"status\\\":\\\"captured\\\"}\"}]}]";
    cr_assert_eq(events(in_string, "1", &last), 0);
    /* ... nor a status beside the event rather than in its change */
    const char *beside = "[{\"id\":32,\"status\":\"captured\",\"paymentID\":\"1\",\"changes\":"
                         "[{\"changeType\":\"PaymentStatusChanged\",\"paymentID\":\"1\","
                         "\"status\":\"processed\"}]}]";
    cr_assert_eq(events(beside, "1", &last), 0);
    /* ... nor a paymentID that only begins like ours */
    const char *prefix = "[{\"id\":33,\"changes\":[{\"changeType\":\"PaymentStatusChanged\","
                         "\"paymentID\":\"10\",\"status\":\"captured\"}]}]";
    cr_assert_eq(events(prefix, "1", &last), 0);
    /* Keys in any order, escaped values decoded. */
    const char *escaped = "[{\"changes\":[{\"status\":\"captur\\u0065d\",\"paymentID\":\"1\","
                          "\"changeType\":\"PaymentStatusChanged\"}],\"id\":40}]";
    last = 0;
    cr_assert_eq(events(escaped, "1", &last), 1);
    cr_assert_eq(last, 40);
}

Test(loadgen, json_events_verdict_failures_and_malformed_replies)
{
    long long last = 0;
    const char *failed = "[{\"id\":1,\"changes\":[{\"changeType\":\"PaymentStatusChanged\","
                         "\"paymentID\":\"1\",\"status\":\"captured\"},{\"changeType\":"
                         "\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":\"failed\"}]}]";
    cr_assert_eq(events(failed, "1", &last), -1, "a failure decides");
    const char *cancelled = "[{\"id\":1,\"changes\":[{\"changeType\":\"PaymentStatusChanged\","
                            "\"paymentID\":\"1\",\"status\":\"cancelled\"}]}]";
    cr_assert_eq(events(cancelled, "1", &last), -1);
    /* the first event that decides wins: malformed before failed, failed before malformed */
    const char *bad_then_failed = "[{\"changes\":[]},{\"id\":2,\"changes\":[{\"changeType\":"
                                  "\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":"
                                  "\"failed\"}]}]";
    cr_assert_eq(events(bad_then_failed, "1", &last), -100);
    const char *failed_then_bad = "[{\"id\":2,\"changes\":[{\"changeType\":"
                                  "\"PaymentStatusChanged\",\"paymentID\":\"1\",\"status\":"
                                  "\"failed\"}]},{\"changes\":[]}]";
    cr_assert_eq(events(failed_then_bad, "1", &last), -1);
    const char *shapes[] = {
        "{\"id\":1}",                                       /* not an array */
        "[1]",                                              /* an event not an object */
        "[{\"id\":1}]",                                     /* no changes */
        "[{\"id\":\"1\",\"changes\":[]}]",                  /* id a string */
        "[{\"id\":1.0,\"changes\":[]}]",                    /* id not an integer */
        "[{\"id\":1,\"changes\":{}}]",                      /* changes not an array */
        "[{\"id\":1,\"changes\":[7]}]",                     /* a change not an object */
        "[{\"id\":1,\"changes\":[{\"paymentID\":\"1\"}]}]", /* no changeType */
        "[{\"id\":1,\"changes\":[{\"changeType\":\"PaymentStatusChanged\",\"paymentID\":\"1\"}]}]",
        "[{\"id\":1,\"changes\":[{\"changeType\":\"PaymentStatusChanged\",\"paymentID\":\"1\","
        "\"status\":2}]}]",
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        cr_assert_eq(events(shapes[i], "1", &last), -100, "%zu: %s", i, shapes[i]);
    const char *not_json[] = {
        "",
        "[{\"id\":1,\"changes\":[]}",
        "[{\"id\":1,\"changes\":[]}] trailing",
        "[{\"id\":99999999999999999999,\"changes\":[]}]",
        "[{\"id\":1,\"changes\":[{\"changeType\":\"PaymentStatusChanged\",\"paymentID\":\"1\","
        "\"status\":\"captured\"}]},{\"id\":2,\"changes\":[}]",
        "\"captured\"",
    };
    for (size_t i = 0; i < sizeof(not_json) / sizeof(not_json[0]); i++)
        cr_assert_eq(events(not_json[i], "1", &last), -200, "%zu: %s", i, not_json[i]);
}
