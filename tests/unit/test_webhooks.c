/*
 * test_webhooks.c — the pure parts of the webhooks (webhooks.h): the topics, which invoice and
 * receipt events are which webhook types, the receipt a ReceiptsTopic body shows, retry
 * schedules and Retry-After, address classes, RS256 signatures.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "receipts/receipt.h"
#include "webhooks/webhooks.h"

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    cr_assert_not_null(v, "%s: %s", text, err.text);
    return v;
}

static const char *type_of(const char *event)
{
    json_t *e = J(event);
    const char *t = ks_webhook_event_type(e);
    json_decref(e);
    return t; /* static strings */
}

Test(webhooks, invoice_events_map_to_the_spec_types)
{
    cr_assert_str_eq(type_of("{\"type\":\"InvoiceCreated\"}"), "InvoiceCreated");
    cr_assert_str_eq(type_of("{\"type\":\"InvoiceStatusChanged\",\"status\":\"paid\"}"),
                     "InvoicePaid");
    cr_assert_str_eq(type_of("{\"type\":\"InvoiceStatusChanged\",\"status\":\"fulfilled\"}"),
                     "InvoiceFulfilled");
    cr_assert_str_eq(type_of("{\"type\":\"PaymentStatusChanged\",\"status\":\"captured\"}"),
                     "PaymentCaptured");
    cr_assert_str_eq(type_of("{\"type\":\"PaymentStatusChanged\",\"status\":\"failed\"}"),
                     "PaymentFailed");
    cr_assert_str_eq(type_of("{\"type\":\"RefundStarted\"}"), "PaymentRefundCreated");
    cr_assert_str_eq(type_of("{\"type\":\"RefundStatusChanged\",\"status\":\"succeeded\"}"),
                     "PaymentRefundSucceeded");
    cr_assert_str_eq(type_of("{\"type\":\"PaymentInteractionRequested\"}"),
                     "PaymentUserInteractionRequested");
    cr_assert_null(type_of("{\"type\":\"PaymentStatusChanged\",\"status\":\"pending\"}"));
    cr_assert_null(type_of("{\"type\":\"internal.plan\"}"));
    cr_assert_null(type_of("{\"status\":\"paid\"}"));
    cr_assert_null(ks_webhook_event_type(NULL));
    for (size_t i = 0; i < KS_WEBHOOK_EVENT_TYPES_N; i++)
        cr_assert(ks_webhook_event_type_known(ks_webhook_event_types[i]));
    cr_assert_not(ks_webhook_event_type_known("PaymentExploded"));
    cr_assert_not(ks_webhook_event_type_known(NULL));
}

Test(webhooks, topics_are_parsed_and_each_hears_its_own_machines)
{
    enum ks_webhook_topic t = KS_WEBHOOK_TOPIC_INVOICES;
    cr_assert_eq(ks_webhook_topic_parse("ReceiptsTopic", &t), KS_OK);
    cr_assert_eq(t, KS_WEBHOOK_TOPIC_RECEIPTS);
    cr_assert_str_eq(ks_webhook_topic_name(t), "ReceiptsTopic");
    cr_assert_eq(ks_webhook_topic_parse("InvoicesTopic", &t), KS_OK);
    cr_assert_eq(t, KS_WEBHOOK_TOPIC_INVOICES);
    cr_assert_eq(ks_webhook_topic_parse("CustomersTopic", &t), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_webhook_topic_parse("receiptstopic", &t), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_webhook_topic_parse(NULL, &t), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_webhook_topic_of_ns("receipt", &t), KS_OK);
    cr_assert_eq(t, KS_WEBHOOK_TOPIC_RECEIPTS);
    cr_assert_eq(ks_webhook_topic_of_ns("invoice", &t), KS_OK);
    cr_assert_eq(t, KS_WEBHOOK_TOPIC_INVOICES);
    cr_assert_eq(ks_webhook_topic_of_ns("payout", &t), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_webhook_topic_types_n(KS_WEBHOOK_TOPIC_INVOICES), KS_WEBHOOK_EVENT_TYPES_N);
    cr_assert_eq(ks_webhook_topic_types_n(KS_WEBHOOK_TOPIC_RECEIPTS),
                 KS_WEBHOOK_RECEIPT_EVENT_TYPES_N);
    /* a type of one topic is never one of the other's */
    for (size_t i = 0; i < KS_WEBHOOK_RECEIPT_EVENT_TYPES_N; i++) {
        const char *type = ks_webhook_receipt_event_types[i];
        cr_assert(ks_webhook_topic_type_known(KS_WEBHOOK_TOPIC_RECEIPTS, type));
        cr_assert_not(ks_webhook_topic_type_known(KS_WEBHOOK_TOPIC_INVOICES, type));
    }
    cr_assert_not(ks_webhook_topic_type_known(KS_WEBHOOK_TOPIC_RECEIPTS, "InvoicePaid"));
    cr_assert_not(ks_webhook_topic_type_known(KS_WEBHOOK_TOPIC_RECEIPTS, "ReceiptCreated"));
    cr_assert_not(ks_webhook_topic_type_known(KS_WEBHOOK_TOPIC_RECEIPTS, NULL));
    const char *cases[][2] = {
        {"{\"type\":\"ReceiptRegistered\",\"payload\":{}}", "ReceiptRegistered"},
        {"{\"type\":\"ReceiptFailed\"}", "ReceiptFailed"},
        {"{\"type\":\"ReceiptJournaled\",\"seq\":3}", "ReceiptJournaled"},
        {"{\"type\":\"ReceiptCreated\"}", NULL},
        {"{\"type\":\"internal.session\"}", NULL},
        {"{\"type\":\"InvoiceCreated\"}", NULL},
        {"{}", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *e = J(cases[i][0]);
        const char *got = ks_webhook_topic_event_type(KS_WEBHOOK_TOPIC_RECEIPTS, e);
        if (cases[i][1])
            cr_assert_str_eq(got, cases[i][1], "%s", cases[i][0]);
        else
            cr_assert_null(got, "%s", cases[i][0]);
        json_decref(e);
    }
    cr_assert_null(ks_webhook_topic_event_type(KS_WEBHOOK_TOPIC_RECEIPTS, NULL));
    json_t *inv = J("{\"type\":\"InvoiceCreated\"}");
    cr_assert_str_eq(ks_webhook_topic_event_type(KS_WEBHOOK_TOPIC_INVOICES, inv),
                     "InvoiceCreated");
    json_decref(inv);
}

/* Folds `events` (a JSON array of a receipt machine's events) with ks_receipt_apply, checking
 * the public receipt after each against `statuses` (one per event). */
static json_t *fold_receipt(const char *events, const char *const *statuses)
{
    json_t *list = J(events), *st = NULL;
    size_t i;
    json_t *ev;
    json_array_foreach(list, i, ev) {
        st = ks_receipt_apply(st, ev);
        cr_assert_not_null(st);
        json_t *pub = ks_receipt_public(st);
        cr_assert_not_null(pub, "event %zu", i);
        cr_assert_str_eq(ks_json_get_str(pub, "status"), statuses[i], "event %zu", i);
        json_decref(pub);
    }
    json_decref(list);
    return st;
}

Test(webhooks, a_receipt_body_shows_the_receipt_right_after_its_event)
{
    static const char created[] =
        "{\"type\":\"ReceiptCreated\",\"receipt\":{\"id\":\"r-1\",\"operation\":\"sell\","
        "\"shopID\":\"S\",\"timestamp\":\"07.12.2026 12:00:00\",\"createdAt\":"
        "\"2026-12-07T09:00:00Z\",\"document\":{\"total\":\"201.03\"}},"
        "\"group\":{\"id\":\"emulator\",\"adapter\":\"emulator\"},\"revision\":1}";
    char events[2048];
    snprintf(events, sizeof(events),
             "[%s, {\"type\":\"internal.session\",\"kind\":\"start\",\"tag\":\"t\","
             "\"inquiries\":0}, {\"type\":\"ReceiptJournaled\",\"seq\":7,\"at\":"
             "\"2026-12-07T09:00:01Z\"}, {\"type\":\"ReceiptRegistered\",\"payload\":"
             "{\"fiscal_document_number\":4},\"registeredAt\":\"2026-12-07T09:05:00Z\"}]",
             created);
    static const char *const statuses[] = {"wait", "wait", "wait", "done"};
    json_t *st = fold_receipt(events, statuses);
    json_t *pub = ks_receipt_public(st);
    cr_assert_str_eq(ks_json_get_str(pub, "uuid"), "r-1");
    cr_assert_str_eq(ks_json_get_str(pub, "shopID"), "S");
    cr_assert_str_eq(ks_json_get_str(pub, "group_code"), "emulator");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(pub, "payload"),
                                                    "fiscal_document_number")),
                 4);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(pub, "offline"), "seq")), 7);
    cr_assert_null(json_object_get(pub, "group"), "the group's options are not public");
    json_decref(pub);
    /* an event without a type changes nothing */
    json_t *before = json_deep_copy(st), *odd = J("{\"seq\":1}");
    st = ks_receipt_apply(st, odd);
    cr_assert(json_equal(st, before));
    json_decref(odd);
    json_decref(before);
    json_decref(st);

    snprintf(events, sizeof(events),
             "[%s, {\"type\":\"ReceiptFailed\",\"error\":{\"code\":\"fiscal_failed:234\","
             "\"text\":\"the FN is full\",\"type\":\"agent\"}}]",
             created);
    static const char *const failed[] = {"wait", "fail"};
    st = fold_receipt(events, failed);
    pub = ks_receipt_public(st);
    cr_assert_str_eq(ks_json_get_str(json_object_get(pub, "error"), "code"), "fiscal_failed:234");
    cr_assert(json_is_null(json_object_get(pub, "payload")));
    json_decref(pub);
    json_decref(st);
}

Test(webhooks, retry_schedules_parse_and_repeat_their_last_step)
{
    int64_t ms[KS_WEBHOOK_RETRY_STEPS_MAX];
    size_t n = 0;
    char why[200];
    cr_assert_eq(ks_webhook_retry_parse("30s,5m,15m,1h", ms, &n, why, sizeof(why)), KS_OK);
    cr_assert_eq(n, 4);
    cr_assert_eq(ms[0], 30000);
    cr_assert_eq(ms[3], 3600000);
    cr_assert_eq(ks_webhook_retry_delay(ms, n, 1), 30000);
    cr_assert_eq(ks_webhook_retry_delay(ms, n, 2), 300000);
    cr_assert_eq(ks_webhook_retry_delay(ms, n, 9), 3600000);
    cr_assert_eq(ks_webhook_retry_parse("250ms", ms, &n, why, sizeof(why)), KS_OK);
    cr_assert_eq(ms[0], 250);
    const char *bad[] = {"", "5", "5x", "0s", "25h", "1s,", ",1s", "1s,,2s", "-1s", "1s 2s",
                         "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ks_webhook_retry_parse(bad[i], ms, &n, why, sizeof(why)), KS_ERR_INVALID,
                     "%s", bad[i]);
}

Test(webhooks, retry_after_takes_seconds_or_a_date)
{
    int64_t now = 1700000000000LL; /* 2023-11-14T22:13:20Z */
    cr_assert_eq(ks_webhook_retry_after("120", now), 120000);
    cr_assert_eq(ks_webhook_retry_after(" 0 ", now), 0);
    cr_assert_eq(ks_webhook_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now), 60000);
    cr_assert_eq(ks_webhook_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now), 0);
    cr_assert_eq(ks_webhook_retry_after(NULL, now), -1);
    cr_assert_eq(ks_webhook_retry_after("soon", now), -1);
    cr_assert_eq(ks_webhook_retry_after("12abc", now), -1);
    cr_assert_eq(ks_webhook_retry_after("99999999999999999999", now), -1);
}

static enum ks_webhook_addr class_of(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        cr_assert_eq(inet_pton(AF_INET6, text, &a->sin6_addr), 1, "%s", text);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        cr_assert_eq(inet_pton(AF_INET, text, &a->sin_addr), 1, "%s", text);
    }
    return ks_webhook_addr_class((struct sockaddr *)&ss);
}

Test(webhooks, addresses_are_classified_before_any_connection)
{
    const char *pub[] = {"8.8.8.8", "93.184.216.34", "2606:4700::1111", "172.32.0.1",
                         "100.128.0.1"};
    const char *loop[] = {"127.0.0.1", "127.255.255.254", "::1", "::ffff:127.0.0.1"};
    const char *priv[] = {"10.0.0.1",    "172.16.5.4", "192.168.1.1", "169.254.169.254",
                          "0.0.0.0",     "100.64.0.1", "224.0.0.1",   "255.255.255.255",
                          "fe80::1",     "fc00::1",    "fd12::1",     "::",
                          "::ffff:10.1.2.3", "ff02::1", "2001:db8::1", "198.18.0.1"};
    for (size_t i = 0; i < sizeof(pub) / sizeof(pub[0]); i++)
        cr_assert_eq(class_of(pub[i]), KS_WEBHOOK_ADDR_PUBLIC, "%s", pub[i]);
    for (size_t i = 0; i < sizeof(loop) / sizeof(loop[0]); i++)
        cr_assert_eq(class_of(loop[i]), KS_WEBHOOK_ADDR_LOOPBACK, "%s", loop[i]);
    for (size_t i = 0; i < sizeof(priv) / sizeof(priv[0]); i++)
        cr_assert_eq(class_of(priv[i]), KS_WEBHOOK_ADDR_PRIVATE, "%s", priv[i]);
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    struct sockaddr_in ten = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000001)};
    cr_assert_not(ks_webhook_addr_allowed((struct sockaddr *)&lo, false, false));
    cr_assert(ks_webhook_addr_allowed((struct sockaddr *)&lo, true, false));
    cr_assert_not(ks_webhook_addr_allowed((struct sockaddr *)&ten, true, false));
    cr_assert(ks_webhook_addr_allowed((struct sockaddr *)&ten, false, true));
    cr_assert_eq(ks_webhook_addr_class(NULL), KS_WEBHOOK_ADDR_PRIVATE);
}

Test(webhooks, deliveries_are_signed_rs256_and_checked_with_the_public_key)
{
    char *pub = NULL, *priv = NULL, *pub2 = NULL, *priv2 = NULL;
    cr_assert_eq(ks_webhook_keypair(&pub, &priv), KS_OK);
    cr_assert_eq(ks_webhook_keypair(&pub2, &priv2), KS_OK);
    cr_assert(strncmp(pub, "-----BEGIN PUBLIC KEY-----", 26) == 0);
    cr_assert(strncmp(priv, "-----BEGIN PRIVATE KEY-----", 27) == 0);
    const char body[] = "{\"eventID\":1,\"eventType\":\"InvoicePaid\"}";
    char sig[KS_WEBHOOK_SIGNATURE_BYTES_MAX];
    cr_assert_eq(ks_webhook_sign(priv, body, strlen(body), sig, sizeof(sig)), KS_OK);
    cr_assert_eq(strlen(sig), 342, "base64url of 256 bytes, no padding: %s", sig);
    cr_assert_null(strpbrk(sig, "+/="));
    cr_assert(ks_webhook_verify(pub, body, strlen(body), sig));
    cr_assert_not(ks_webhook_verify(pub2, body, strlen(body), sig), "another webhook's key");
    cr_assert_not(ks_webhook_verify(pub, body, strlen(body) - 1, sig), "a changed body");
    char bent[KS_WEBHOOK_SIGNATURE_BYTES_MAX];
    strcpy(bent, sig);
    bent[10] = bent[10] == 'A' ? 'B' : 'A';
    cr_assert_not(ks_webhook_verify(pub, body, strlen(body), bent));
    cr_assert_not(ks_webhook_verify(pub, body, strlen(body), "not+base64url"));
    cr_assert_not(ks_webhook_verify(pub, body, strlen(body), ""));
    char small[16];
    cr_assert_eq(ks_webhook_sign(priv, body, strlen(body), small, sizeof(small)), KS_ERR_LIMIT);
    cr_assert_eq(ks_webhook_sign("not a key", body, strlen(body), sig, sizeof(sig)),
                 KS_ERR_INVALID);
    free(pub);
    free(priv);
    free(pub2);
    free(priv2);
}
