/* test_kafka.c — the Kafka module's pure parts (kafka/kafka.h): the message envelope, topic
 * names, the options ks_kafka_open refuses (a properties file never echoed), and the log sink
 * hook (core/log.h) the log topic rides on. Delivery itself is tested against a broker in
 * tests/blackbox/test_kafka.py. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "kafka/kafka.h"

static struct ks_outbox_row row_of(const char *ns, const char *id, int64_t seq, int64_t at_ms,
                                   char *body)
{
    struct ks_outbox_row r;
    memset(&r, 0, sizeof(r));
    r.pos = 7;
    snprintf(r.ns, sizeof(r.ns), "%s", ns);
    snprintf(r.id, sizeof(r.id), "%s", id);
    r.seq = seq;
    r.at_ms = at_ms;
    r.body = body;
    return r;
}

Test(kafka, envelope_carries_the_event_without_its_type_in_data)
{
    char body[] = "{\"type\":\"PaymentStarted\",\"payment\":{\"id\":\"1\",\"amount\":6000},"
                  "\"currency\":\"RUB\"}";
    struct ks_outbox_row r = row_of("invoice", "inv-42", 3, 1553794892569LL, body);
    char buf[512];
    size_t len = 0;
    cr_assert_eq(ks_kafka_envelope(&r, buf, sizeof(buf), &len), KS_OK);
    cr_assert_gt(len, 0);
    const char want[] = "{\"ns\":\"invoice\",\"id\":\"inv-42\",\"eventID\":3,"
                        "\"occurredAt\":\"2019-03-28T17:41:32.569Z\",\"type\":\"PaymentStarted\","
                        "\"data\":{\"payment\":{\"id\":\"1\",\"amount\":6000},\"currency\":\"RUB\"}}";
    cr_assert_eq(len, strlen(want), "got %.*s", (int)len, buf);
    cr_assert_eq(memcmp(buf, want, len), 0, "got %.*s", (int)len, buf);
    /* An event with nothing but its type has an empty data object. */
    char bare[] = "{\"type\":\"cancelled\"}";
    r = row_of("probe", "m", 1, 0, bare);
    cr_assert_eq(ks_kafka_envelope(&r, buf, sizeof(buf), &len), KS_OK);
    const char want_bare[] = "{\"ns\":\"probe\",\"id\":\"m\",\"eventID\":1,"
                             "\"occurredAt\":\"1970-01-01T00:00:00.000Z\",\"type\":\"cancelled\","
                             "\"data\":{}}";
    cr_assert_eq(len, strlen(want_bare), "got %.*s", (int)len, buf);
    cr_assert_eq(memcmp(buf, want_bare, len), 0);
}

Test(kafka, envelope_redacts_the_nonce_of_callback_tags)
{
    char body[] = "{\"type\":\"internal.session\",\"session\":{\"tag\":\"invoice~inv-1~Ab3dE\","
                  "\"all\":[\"probe~m~x9\",\"not~a~tag~at all\",\"a~b\"]},\"plain\":\"x~y~\"}";
    struct ks_outbox_row r = row_of("invoice", "inv-1", 2, 0, body);
    char buf[512];
    size_t len = 0;
    cr_assert_eq(ks_kafka_envelope(&r, buf, sizeof(buf), &len), KS_OK);
    buf[len] = '\0';
    cr_assert(strstr(buf, "Ab3dE") == NULL && strstr(buf, "x9") == NULL, "%s", buf);
    cr_assert(strstr(buf, "\"tag\":\"invoice~inv-1~redacted\"") != NULL, "%s", buf);
    cr_assert(strstr(buf, "[\"probe~m~redacted\",\"not~a~tag~at all\",\"a~b\"]") != NULL, "%s",
              buf);
    cr_assert(strstr(buf, "\"plain\":\"x~y~\"") != NULL, "%s", buf);
    /* Below the depth the redaction looks at is merchants' metadata: published as it is. */
    char deep[256] = "{\"type\":\"t\",\"v\":";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    strcat(deep, "\"a~b~c\"");
    for (int i = 0; i < 40; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    r = row_of("probe", "m", 1, 0, deep);
    cr_assert_eq(ks_kafka_envelope(&r, buf, sizeof(buf), &len), KS_OK);
    buf[len] = '\0';
    cr_assert(strstr(buf, "\"a~b~c\"") != NULL, "%s", buf);
}

/* The largest event kassa stores, made of the shortest strings that parse as callback tags,
 * still fits the envelope once each is redacted (a merchant's metadata cannot stall the stream
 * on KS_ERR_LIMIT). */
Test(kafka, envelope_bound_holds_a_worst_case_event)
{
    char *body = malloc(KS_EVENT_BYTES_MAX + 1);
    cr_assert_not_null(body);
    size_t n = (size_t)snprintf(body, KS_EVENT_BYTES_MAX, "{\"type\":\"t\",\"m\":[");
    while (n + 16 < KS_EVENT_BYTES_MAX)
        n += (size_t)snprintf(body + n, KS_EVENT_BYTES_MAX + 1 - n, "\"a~b~c\",");
    snprintf(body + n - 1, KS_EVENT_BYTES_MAX + 2 - n, "]}");
    cr_assert_leq(strlen(body), KS_EVENT_BYTES_MAX);
    struct ks_outbox_row r = row_of("invoice", "inv-1", 9, 0, body);
    char *buf = malloc(KS_KAFKA_ENVELOPE_BYTES_MAX);
    cr_assert_not_null(buf);
    size_t len = 0;
    cr_assert_eq(ks_kafka_envelope(&r, buf, KS_KAFKA_ENVELOPE_BYTES_MAX, &len), KS_OK);
    cr_assert_gt(len, strlen(body) * 3 / 2);
    free(buf);
    free(body);
}

Test(kafka, envelope_refuses_bodies_without_a_type_and_what_does_not_fit)
{
    char buf[128];
    size_t len = 99;
    char *bad[] = {"{\"kind\":\"x\"}", "{\"type\":3}", "[1,2]", "\"type\"", "{\"type\":", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ks_outbox_row r = row_of("probe", "m", 1, 0, bad[i]);
        cr_assert_eq(ks_kafka_envelope(&r, buf, sizeof(buf), &len), KS_ERR_INVALID, "%s", bad[i]);
        cr_assert_eq(len, 0);
    }
    char big[256];
    snprintf(big, sizeof(big), "{\"type\":\"t\",\"v\":\"%0120d\"}", 0);
    struct ks_outbox_row r = row_of("probe", "m", 1, 0, big);
    cr_assert_eq(ks_kafka_envelope(&r, buf, sizeof(buf), &len), KS_ERR_LIMIT);
    cr_assert_eq(len, 0);
    char fits[512];
    cr_assert_eq(ks_kafka_envelope(&r, fits, sizeof(fits), &len), KS_OK);
    json_t *j = json_loadb(fits, len, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_eq(strlen(json_string_value(json_object_get(json_object_get(j, "data"), "v"))),
                 120);
    json_decref(j);
}

Test(kafka, topic_is_prefix_and_namespace_within_kafkas_rules)
{
    char t[KS_KAFKA_TOPIC_BYTES_MAX + 1];
    cr_assert_eq(ks_kafka_topic("kassa.", "invoice", t, sizeof(t)), KS_OK);
    cr_assert_str_eq(t, "kassa.invoice");
    cr_assert_eq(ks_kafka_topic("", "invoice", t, sizeof(t)), KS_OK);
    cr_assert_str_eq(t, "invoice");
    cr_assert_eq(ks_kafka_topic("kassa/", "invoice", t, sizeof(t)), KS_ERR_INVALID);
    cr_assert_eq(ks_kafka_topic("ka ssa.", "invoice", t, sizeof(t)), KS_ERR_INVALID);
    cr_assert_eq(ks_kafka_topic("", "", t, sizeof(t)), KS_ERR_INVALID);
    cr_assert_eq(ks_kafka_topic("..", "", t, sizeof(t)), KS_ERR_INVALID);
    char longp[KS_KAFKA_TOPIC_BYTES_MAX + 2];
    memset(longp, 'p', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    cr_assert_eq(ks_kafka_topic(longp, "", t, sizeof(t)), KS_ERR_LIMIT);
    cr_assert_str_eq(t, "");
    longp[KS_KAFKA_TOPIC_BYTES_MAX - 1] = '\0';
    cr_assert_eq(ks_kafka_topic(longp, "ab", t, sizeof(t)), KS_ERR_LIMIT);
    cr_assert_eq(ks_kafka_topic(longp, "a", t, sizeof(t)), KS_OK);
}

/* Opens a handle with `props` as the properties file ("" for none); returns the code and why. */
static int open_with(const char *prefix, const char *log_topic, const char *props, char *why,
                     size_t whylen)
{
    struct ks_log lg;
    FILE *logf = tmpfile(); /* librdkafka's lines (nothing listens on 127.0.0.1:1) */
    cr_assert_not_null(logf);
    ks_log_init(&lg, logf, KS_LOG_ERROR);
    char path[] = "/tmp/kassa-kafka-props-XXXXXX";
    int fd = -1;
    if (props[0]) {
        fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, props, strlen(props)), (ssize_t)strlen(props));
        close(fd);
    }
    struct ks_kafka_options o = {.brokers = "127.0.0.1:1", .topic_prefix = prefix,
                                 .client_id = "kassa-test", .log_topic = log_topic,
                                 .properties_file = fd >= 0 ? path : "",
                                 .delivery_timeout_ms = 1000, .log = &lg};
    struct ks_kafka *k = NULL;
    why[0] = '\0';
    int rc = ks_kafka_open(&o, &k, why, whylen);
    cr_assert((rc == KS_OK) == (k != NULL));
    ks_kafka_close(k);
    if (fd >= 0)
        unlink(path);
    ks_log_release(&lg);
    fclose(logf);
    return rc;
}

Test(kafka, open_checks_its_options_and_never_echoes_a_property_value)
{
    char why[256];
    cr_assert_eq(open_with("kassa.", "", "", why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(open_with("kassa.", "kassa-log", "# TLS\n\nsocket.timeout.ms = 5000\n", why,
                           sizeof(why)),
                 KS_OK, "%s", why);
    cr_assert_eq(open_with("kas sa.", "", "", why, sizeof(why)), KS_ERR_INVALID);
    cr_assert(strstr(why, "--kafka-topic-prefix") != NULL, "%s", why);
    cr_assert_eq(open_with("kassa.", "log/topic", "", why, sizeof(why)), KS_ERR_INVALID);
    cr_assert(strstr(why, "--kafka-log-topic") != NULL, "%s", why);
    /* The properties kassa's guarantees rest on cannot be overridden. */
    cr_assert_eq(open_with("kassa.", "", "enable.idempotence=false\n", why, sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert(strstr(why, "line 1") && strstr(why, "enable.idempotence"), "%s", why);
    cr_assert_eq(open_with("kassa.", "", "acks=1\n", why, sizeof(why)), KS_ERR_INVALID);
    /* A value librdkafka refuses is named by its key only: it may be a secret. */
    cr_assert_eq(open_with("kassa.", "", "security.protocol=Sup3rSecretValue\n", why, sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert(strstr(why, "security.protocol") != NULL, "%s", why);
    cr_assert(strstr(why, "Sup3rSecretValue") == NULL, "%s", why);
    cr_assert_eq(open_with("kassa.", "", "no.such.property=Sup3rSecretValue\n", why,
                           sizeof(why)),
                 KS_ERR_INVALID);
    cr_assert(strstr(why, "Sup3rSecretValue") == NULL, "%s", why);
    cr_assert_eq(open_with("kassa.", "", "just words\n", why, sizeof(why)), KS_ERR_INVALID);
    cr_assert(strstr(why, "line 1: expected KEY=VALUE") != NULL, "%s", why);
}

struct sink_seen {
    int lines;
    char last[512];
};

static void sink_record(void *ctx, const char *line, size_t len)
{
    struct sink_seen *s = ctx;
    s->lines++;
    snprintf(s->last, sizeof(s->last), "%.*s", (int)len, line);
}

Test(kafka, the_log_sink_gets_each_line_written_until_removed)
{
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    struct ks_log lg;
    ks_log_init(&lg, f, KS_LOG_INFO);
    struct sink_seen seen = {0};
    ks_log_set_sink(&lg, sink_record, &seen);
    ks_logf(&lg, KS_LOG_INFO, NULL, "first %d", 1);
    ks_logf(&lg, KS_LOG_DEBUG, NULL, "below the level"); /* neither written nor sunk */
    ks_log_json(&lg, KS_LOG_WARN, "trace-1", "second", json_pack("{s:i}", "n", 2));
    cr_assert_eq(seen.lines, 2);
    json_t *j = json_loads(seen.last, 0, NULL);
    cr_assert_not_null(j, "%s", seen.last);
    cr_assert_str_eq(json_string_value(json_object_get(j, "msg")), "second");
    cr_assert_str_eq(json_string_value(json_object_get(j, "trace")), "trace-1");
    cr_assert_eq(json_integer_value(json_object_get(j, "n")), 2);
    json_decref(j);
    ks_log_set_sink(&lg, NULL, NULL);
    ks_logf(&lg, KS_LOG_ERROR, NULL, "after removal");
    cr_assert_eq(seen.lines, 2);
    /* The file got all three lines written. */
    rewind(f);
    char buf[2048];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    cr_assert(strstr(buf, "first 1") && strstr(buf, "second") && strstr(buf, "after removal"));
    cr_assert(strstr(buf, "below the level") == NULL);
    ks_log_release(&lg);
    fclose(f);
}
