/*
 * kafka.c — the Kafka event stream and log topic (kafka.h; operators' guide: docs/kafka.md).
 *
 * Two producers: the EVENT producer (idempotent, acks=all) is used by the relay's thread alone:
 * the relay produces a batch, then polls it until every message of the batch has its delivery
 * report (librdkafka reports each message once, by message.timeout.ms at the latest), and
 * confirms the prefix of the batch the broker acknowledged. The LOG producer takes kassa's log
 * lines from the log sink (any thread, never blocking: a full queue drops the line) and is
 * polled by a thread of its own.
 *
 * librdkafka's own log lines come into kassa's log through on_log. The event producer calls it
 * from librdkafka's threads (it then reaches the log sink, which only queues on the other
 * producer); the log producer forwards its lines to its queue (log.queue), served by the poller,
 * so no librdkafka thread ever produces to the handle it belongs to.
 */
#include "kafka/kafka.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/wipe.h"
#include "engine/callback.h"

#define KAFKA_REPORT_MARGIN_MS 2000   /* past message.timeout.ms, for the reports to arrive */
#define KAFKA_POLL_MS 100             /* one wait for delivery reports */
#define KAFKA_LOG_POLL_MS 200         /* the log producer's poller */
#define KAFKA_LOG_DROPS_REPORT_MS 10000 /* how often the poller logs new drops */
#define KAFKA_LOG_TIMEOUT_MS 60000    /* how long a log line may wait for the broker */
#define KAFKA_CLOSE_FLUSH_MS 3000     /* close: waiting for queued messages */
#define KAFKA_RELAY_BACKOFF_MAX_MS 5000 /* a broker back up is caught up within this */
#define KAFKA_REDACT_DEPTH_MAX 32     /* how deep the envelope looks for callback tags */
#define KAFKA_TAG_REDACTED "redacted"

enum { MSG_PENDING = 0, MSG_OK = 1, MSG_FAILED = 2 };

struct kafka_property {
    char *key;
    char *value; /* may be a secret: wiped when freed */
};

struct ks_kafka {
    struct ks_log *log;
    char brokers[1024];
    char prefix[KS_KAFKA_TOPIC_BYTES_MAX + 1];
    char client_id[256];
    char log_topic[KS_KAFKA_TOPIC_BYTES_MAX + 1];
    int64_t delivery_timeout_ms;
    struct kafka_property props[KS_KAFKA_PROPERTIES_MAX];
    size_t props_n;

    /* The event producer and the batch in flight: the relay's thread only (delivery reports
     * are served by its own rd_kafka_poll calls). NULL after a fatal error until recreated. */
    rd_kafka_t *rk;
    uint32_t gen;                     /* the batch's tag in each message's opaque */
    unsigned char status[KS_OUTBOX_PAGE_MAX];
    size_t pending;
    char delivery_error[160];         /* the last failed report's reason */
    char envelope[KS_KAFKA_ENVELOPE_BYTES_MAX];

    /* The log topic. */
    rd_kafka_t *log_rk;
    pthread_t poller;
    int poller_started;
    atomic_int stopping;
    atomic_llong log_produced;
    atomic_llong log_dropped;
};

/* --- envelope and topic ------------------------------------------------------------------ */

/* Replaces the nonce of every callback tag ("{ns}~{id}~{nonce}", engine/callback.h) in `v` by
 * KAFKA_TAG_REDACTED: the nonce is a capability (whoever holds it may call the machine back),
 * and the topics' readers are not the provider it was made for. kassa's own tags sit near the
 * top of its events; below KAFKA_REDACT_DEPTH_MAX is only what merchants nest in their
 * metadata, published as it is (the bound keeps the recursion's stack small). */
static int redact_tags(json_t *v, int depth)
{
    if (depth > KAFKA_REDACT_DEPTH_MAX)
        return 0;
    if (json_is_string(v)) {
        char ns[KS_NS_BYTES_MAX + 1], id[KS_ID_BYTES_MAX + 1];
        char tag[KS_CALLBACK_TAG_BYTES_MAX + 1];
        if (ks_callback_tag_parse(json_string_value(v), ns, id) != KS_OK)
            return 0;
        snprintf(tag, sizeof(tag), "%s~%s~%s", ns, id, KAFKA_TAG_REDACTED);
        return json_string_set(v, tag);
    }
    int rc = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach(v, key, member)
            rc |= redact_tags(member, depth + 1);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
            rc |= redact_tags(item, depth + 1);
    }
    return rc;
}

int ks_kafka_envelope(const struct ks_outbox_row *row, char *buf, size_t cap, size_t *len)
{
    assert(row != NULL && buf != NULL && len != NULL);
    *len = 0;
    int rc = KS_ERR_INVALID;
    json_t *env = NULL;
    json_t *body = json_loads(row->body ? row->body : "", 0, NULL);
    const char *type = json_string_value(json_object_get(body, "type"));
    if (!json_is_object(body) || !type)
        goto out;
    char at[32];
    ks_time_rfc3339(row->at_ms, at, sizeof(at));
    rc = KS_ERR_NOMEM;
    env = json_object();
    if (!env)
        goto out;
    int bad = json_object_set_new(env, "ns", json_string(row->ns));
    bad |= json_object_set_new(env, "id", json_string(row->id));
    bad |= json_object_set_new(env, "eventID", json_integer(row->seq));
    bad |= json_object_set_new(env, "occurredAt", json_string(at));
    bad |= json_object_set_new(env, "type", json_string(type)); /* copied before the del */
    bad |= json_object_del(body, "type");
    bad |= redact_tags(body, 0);
    bad |= json_object_set(env, "data", body);
    if (bad) {
        rc = KS_ERR_INVALID; /* an id or namespace that is not UTF-8 */
        goto out;
    }
    size_t n = json_dumpb(env, buf, cap, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (n == 0)
        goto out;
    if (n > cap) {
        rc = KS_ERR_LIMIT;
        goto out;
    }
    *len = n;
    rc = KS_OK;
out:
    json_decref(env);
    json_decref(body);
    return rc;
}

static int topic_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

/* Whether `s` holds only characters Kafka takes in a topic name. */
static int topic_text_ok(const char *s)
{
    for (; *s; s++)
        if (!topic_char_ok(*s))
            return 0;
    return 1;
}

int ks_kafka_topic(const char *prefix, const char *ns, char *out, size_t cap)
{
    assert(prefix != NULL && ns != NULL && out != NULL && cap > 0);
    out[0] = '\0';
    int n = snprintf(out, cap, "%s%s", prefix, ns);
    if (n < 0 || (size_t)n >= cap || n > KS_KAFKA_TOPIC_BYTES_MAX) {
        out[0] = '\0';
        return KS_ERR_LIMIT;
    }
    if (n == 0 || !topic_text_ok(out) || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
        out[0] = '\0';
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

/* --- the properties file ----------------------------------------------------------------- */

/* Properties kassa sets itself: the delivery guarantees rest on them (docs/kafka.md). */
static const char *const owned_properties[] = {
    "bootstrap.servers", "metadata.broker.list", "client.id", "enable.idempotence", "acks",
    "request.required.acks", "message.timeout.ms", "delivery.timeout.ms", "log.queue",
    "max.in.flight.requests.per.connection", "max.in.flight", "enable.gapless.guarantee",
    "retries", "message.send.max.retries", "queue.buffering.max.messages",
};

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static void props_free(struct ks_kafka *k)
{
    for (size_t i = 0; i < k->props_n; i++) {
        ks_wipe_free(k->props[i].key);
        ks_wipe_free(k->props[i].value);
    }
    k->props_n = 0;
}

/* Reads KEY=VALUE lines ('#' starts a comment line) into k->props. Errors name the line and
 * the key, never a value. */
static int props_read(struct ks_kafka *k, const char *path, char *why, size_t whylen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, whylen, "cannot open --kafka-properties-file: %s", strerror(errno));
        return KS_ERR_INVALID;
    }
    char line[KS_KAFKA_PROPERTY_BYTES_MAX + 2];
    int rc = KS_OK;
    for (int no = 1; fgets(line, sizeof(line), f); no++) {
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(why, whylen, "--kafka-properties-file line %d: longer than %d bytes", no,
                     KS_KAFKA_PROPERTY_BYTES_MAX);
            rc = KS_ERR_INVALID;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(why, whylen, "--kafka-properties-file line %d: expected KEY=VALUE", no);
            rc = KS_ERR_INVALID;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        char shown[64];
        ks_log_text(key, shown, sizeof(shown));
        if (!*key) {
            snprintf(why, whylen, "--kafka-properties-file line %d: empty key", no);
            rc = KS_ERR_INVALID;
            break;
        }
        for (size_t i = 0; i < sizeof(owned_properties) / sizeof(owned_properties[0]); i++)
            if (strcmp(key, owned_properties[i]) == 0) {
                snprintf(why, whylen,
                         "--kafka-properties-file line %d: %s is kassa's own (its flags or "
                         "its delivery guarantees)", no, shown);
                rc = KS_ERR_INVALID;
            }
        if (rc == KS_OK && k->props_n >= KS_KAFKA_PROPERTIES_MAX) {
            snprintf(why, whylen, "--kafka-properties-file: more than %d properties",
                     KS_KAFKA_PROPERTIES_MAX);
            rc = KS_ERR_LIMIT;
        }
        if (rc != KS_OK)
            break;
        struct kafka_property *p = &k->props[k->props_n];
        p->key = strdup(key);
        p->value = strdup(value);
        if (!p->key || !p->value) {
            ks_wipe_free(p->key);
            ks_wipe_free(p->value);
            rc = KS_ERR_NOMEM;
            break;
        }
        k->props_n++;
    }
    explicit_bzero(line, sizeof(line));
    fclose(f);
    return rc;
}

/* --- librdkafka callbacks ---------------------------------------------------------------- */

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct ks_kafka *k = rd_kafka_opaque(rk);
    enum ks_log_level lvl = level <= 3 ? KS_LOG_ERROR : level == 4 ? KS_LOG_WARN
                          : level <= 6 ? KS_LOG_INFO : KS_LOG_DEBUG;
    char facility[64], detail[512];
    ks_log_json(k->log, lvl, NULL, "kafka client",
                json_pack("{s:s, s:s, s:s}", "client", rd_kafka_name(rk), "facility",
                          ks_log_text(fac, facility, sizeof(facility)), "detail",
                          ks_log_text(buf, detail, sizeof(detail))));
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct ks_kafka *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT)
        return; /* librdkafka has logged the connection's failure itself (on_log) */
    char text[512];
    ks_log_json(k->log, KS_LOG_WARN, NULL, "kafka error",
                json_pack("{s:s, s:s, s:s}", "client", rd_kafka_name(rk), "error",
                          rd_kafka_err2name((rd_kafka_resp_err_t)err), "detail",
                          ks_log_text(reason, text, sizeof(text))));
}

/* A message's opaque: the batch's generation and the row's index in it. */
static void *msg_tag(uint32_t gen, size_t idx)
{
    return (void *)(((uintptr_t)gen << 16) | (uintptr_t)idx);
}

/* Event producer: runs inside the relay's rd_kafka_poll calls. Reports of an earlier batch
 * (one that gave up waiting) are ignored: their rows come again anyway. */
static void on_event_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct ks_kafka *k = opaque;
    uintptr_t tag = (uintptr_t)m->_private;
    size_t idx = tag & 0xffff;
    if ((uint32_t)(tag >> 16) != k->gen || idx >= KS_OUTBOX_PAGE_MAX ||
        k->status[idx] != MSG_PENDING)
        return;
    assert(k->pending > 0);
    k->status[idx] = m->err ? MSG_FAILED : MSG_OK;
    k->pending--;
    if (m->err)
        snprintf(k->delivery_error, sizeof(k->delivery_error), "%s", rd_kafka_err2str(m->err));
}

static void on_log_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct ks_kafka *k = opaque;
    if (m->err)
        atomic_fetch_add(&k->log_dropped, 1);
    else
        atomic_fetch_add(&k->log_produced, 1);
}

/* The log sink (core/log.h): under the log's lock, from any thread; never blocks (no
 * RD_KAFKA_MSG_F_BLOCK: a full queue fails at once). */
static void log_sink(void *ctx, const char *line, size_t len)
{
    struct ks_kafka *k = ctx;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        k->log_rk, RD_KAFKA_V_TOPIC(k->log_topic), RD_KAFKA_V_KEY(k->client_id, strlen(k->client_id)),
        RD_KAFKA_V_VALUE((void *)line, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    if (err)
        atomic_fetch_add(&k->log_dropped, 1);
}

/* --- producers --------------------------------------------------------------------------- */

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *why,
                    size_t whylen)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return KS_OK;
    char shown[64];
    snprintf(why, whylen, "librdkafka refuses the property %s", ks_log_text(key, shown,
                                                                           sizeof(shown)));
    return KS_ERR_INVALID;
}

/* A new producer: the events' (idempotent) or the log's. */
static int producer_new(struct ks_kafka *k, int for_log, rd_kafka_t **out, char *why,
                        size_t whylen)
{
    *out = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char timeout[32], queue_max[32];
    snprintf(timeout, sizeof(timeout), "%" PRId64,
             for_log ? (int64_t)KAFKA_LOG_TIMEOUT_MS : k->delivery_timeout_ms);
    snprintf(queue_max, sizeof(queue_max), "%d", KS_KAFKA_LOG_QUEUE_MAX);
    int rc = KS_OK;
    /* The operator's properties first: kassa's own settings below may not be overridden. */
    for (size_t i = 0; rc == KS_OK && i < k->props_n; i++)
        rc = conf_set(conf, k->props[i].key, k->props[i].value, why, whylen);
    if (rc == KS_OK)
        rc = conf_set(conf, "bootstrap.servers", k->brokers, why, whylen);
    if (rc == KS_OK)
        rc = conf_set(conf, "client.id", k->client_id, why, whylen);
    if (rc == KS_OK)
        rc = conf_set(conf, "message.timeout.ms", timeout, why, whylen);
    if (rc == KS_OK)
        rc = conf_set(conf, "log.connection.close", "false", why, whylen);
    if (rc == KS_OK && !for_log) {
        rc = conf_set(conf, "enable.idempotence", "true", why, whylen);
        if (rc == KS_OK)
            rc = conf_set(conf, "acks", "all", why, whylen);
    }
    if (rc == KS_OK && for_log) {
        rc = conf_set(conf, "queue.buffering.max.messages", queue_max, why, whylen);
        if (rc == KS_OK)
            rc = conf_set(conf, "log.queue", "true", why, whylen);
    }
    if (rc != KS_OK) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_dr_msg_cb(conf, for_log ? on_log_delivery : on_event_delivery);
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        char shown[256];
        snprintf(why, whylen, "cannot create the Kafka producer: %s",
                 ks_log_text(err, shown, sizeof(shown)));
        return KS_ERR_IO;
    }
    if (for_log && rd_kafka_set_log_queue(rk, NULL) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(rk);
        snprintf(why, whylen, "cannot route the Kafka log producer's own lines");
        return KS_ERR_IO;
    }
    *out = rk;
    return KS_OK;
}

static void *log_poller(void *arg)
{
    struct ks_kafka *k = arg;
    int64_t reported = 0;
    int64_t next_report_ms = ks_mono_us() / 1000 + KAFKA_LOG_DROPS_REPORT_MS;
    while (!atomic_load(&k->stopping)) {
        rd_kafka_poll(k->log_rk, KAFKA_LOG_POLL_MS);
        int64_t now_ms = ks_mono_us() / 1000;
        if (now_ms < next_report_ms)
            continue;
        next_report_ms = now_ms + KAFKA_LOG_DROPS_REPORT_MS;
        int64_t dropped = atomic_load(&k->log_dropped);
        if (dropped > reported) {
            ks_log_json(k->log, KS_LOG_WARN, NULL, "kafka log lines dropped",
                        json_pack("{s:s, s:I, s:I}", "topic", k->log_topic, "dropped",
                                  (json_int_t)(dropped - reported), "droppedTotal",
                                  (json_int_t)dropped));
            reported = dropped;
        }
    }
    return NULL;
}

static int copy_option(char *dst, size_t cap, const char *src, const char *flag, char *why,
                       size_t whylen)
{
    if (strlen(src) >= cap) {
        snprintf(why, whylen, "--%s is longer than %zu bytes", flag, cap - 1);
        return KS_ERR_LIMIT;
    }
    memcpy(dst, src, strlen(src) + 1);
    return KS_OK;
}

int ks_kafka_open(const struct ks_kafka_options *o, struct ks_kafka **out, char *why,
                  size_t whylen)
{
    assert(o != NULL && out != NULL && o->log != NULL);
    *out = NULL;
    struct ks_kafka *k = calloc(1, sizeof(*k));
    if (!k)
        return KS_ERR_NOMEM;
    k->log = o->log;
    k->delivery_timeout_ms = o->delivery_timeout_ms > 0 ? o->delivery_timeout_ms
                                                        : KS_KAFKA_DELIVERY_TIMEOUT_MS_DEFAULT;
    const char *log_topic = o->log_topic ? o->log_topic : "";
    int rc = KS_ERR_INVALID;
    if (k->delivery_timeout_ms > KS_KAFKA_DELIVERY_TIMEOUT_MS_MAX) {
        snprintf(why, whylen, "--kafka-delivery-timeout-ms must be at most %d",
                 KS_KAFKA_DELIVERY_TIMEOUT_MS_MAX);
        goto out_free;
    }
    if (!o->brokers || !o->brokers[0] || !o->client_id || !o->client_id[0]) {
        snprintf(why, whylen, "--kafka-brokers and --kafka-client-id must not be empty");
        goto out_free;
    }
    if ((rc = copy_option(k->brokers, sizeof(k->brokers), o->brokers, "kafka-brokers", why,
                          whylen)) != KS_OK ||
        (rc = copy_option(k->client_id, sizeof(k->client_id), o->client_id, "kafka-client-id",
                          why, whylen)) != KS_OK)
        goto out_free;
    /* The longest namespace must still give a valid topic. */
    char probe[KS_KAFKA_TOPIC_BYTES_MAX + 1];
    char longest_ns[KS_NS_BYTES_MAX + 1];
    memset(longest_ns, 'a', KS_NS_BYTES_MAX);
    longest_ns[KS_NS_BYTES_MAX] = '\0';
    const char *prefix = o->topic_prefix ? o->topic_prefix : "";
    if (!topic_text_ok(prefix) ||
        ks_kafka_topic(prefix, longest_ns, probe, sizeof(probe)) != KS_OK) {
        snprintf(why, whylen, "--kafka-topic-prefix must be [A-Za-z0-9._-] and at most %d bytes",
                 KS_KAFKA_TOPIC_BYTES_MAX - KS_NS_BYTES_MAX);
        rc = KS_ERR_INVALID;
        goto out_free;
    }
    memcpy(k->prefix, prefix, strlen(prefix) + 1);
    if (log_topic[0] && ks_kafka_topic(log_topic, "", k->log_topic, sizeof(k->log_topic)) !=
                            KS_OK) {
        snprintf(why, whylen, "--kafka-log-topic must be [A-Za-z0-9._-]{1,%d}",
                 KS_KAFKA_TOPIC_BYTES_MAX);
        rc = KS_ERR_INVALID;
        goto out_free;
    }
    if (o->properties_file && o->properties_file[0] &&
        (rc = props_read(k, o->properties_file, why, whylen)) != KS_OK)
        goto out_free;
    if ((rc = producer_new(k, 0, &k->rk, why, whylen)) != KS_OK)
        goto out_free;
    if (k->log_topic[0]) {
        if ((rc = producer_new(k, 1, &k->log_rk, why, whylen)) != KS_OK)
            goto out_free;
        if (pthread_create(&k->poller, NULL, log_poller, k) != 0) {
            snprintf(why, whylen, "cannot start the Kafka log poller");
            rc = KS_ERR_IO;
            goto out_free;
        }
        k->poller_started = 1;
        ks_log_set_sink(k->log, log_sink, k);
    }
    *out = k;
    return KS_OK;
out_free:
    ks_kafka_close(k);
    return rc;
}

void ks_kafka_close(struct ks_kafka *k)
{
    if (!k)
        return;
    if (k->log_rk)
        ks_log_set_sink(k->log, NULL, NULL); /* no line reaches the log producer after this */
    if (k->poller_started) {
        atomic_store(&k->stopping, 1);
        pthread_join(k->poller, NULL);
    }
    if (k->rk) {
        rd_kafka_flush(k->rk, KAFKA_CLOSE_FLUSH_MS);
        rd_kafka_destroy(k->rk);
    }
    if (k->log_rk) {
        rd_kafka_flush(k->log_rk, KAFKA_CLOSE_FLUSH_MS);
        /* What the flush left queued is dropped by the destroy, without a report. */
        atomic_fetch_add(&k->log_dropped, rd_kafka_outq_len(k->log_rk));
        rd_kafka_destroy(k->log_rk);
        ks_log_json(k->log, KS_LOG_INFO, NULL, "kafka log topic closed",
                    json_pack("{s:s, s:I, s:I}", "topic", k->log_topic, "produced",
                              (json_int_t)atomic_load(&k->log_produced), "dropped",
                              (json_int_t)atomic_load(&k->log_dropped)));
    }
    props_free(k);
    free(k);
}

/* --- the relay --------------------------------------------------------------------------- */

/* After a fatal error (the idempotent producer can no longer keep its guarantees) the producer
 * is replaced; the rows it did not confirm are published again by the new one. */
static void producer_check_fatal(struct ks_kafka *k)
{
    char err[256];
    if (rd_kafka_fatal_error(k->rk, err, sizeof(err)) == RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    char shown[256];
    ks_log_json(k->log, KS_LOG_ERROR, NULL, "kafka producer failed; replacing it",
                json_pack("{s:s}", "detail", ks_log_text(err, shown, sizeof(shown))));
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
}

static int relay_handle(void *ctx, const struct ks_outbox_row *rows, size_t n, size_t *done,
                        char *why, size_t whylen)
{
    struct ks_kafka *k = ctx;
    assert(n >= 1 && n <= KS_OUTBOX_PAGE_MAX);
    *done = 0;
    if (!k->rk && producer_new(k, 0, &k->rk, why, whylen) != KS_OK)
        return KS_ERR_IO;
    k->gen++;
    k->pending = 0;
    k->delivery_error[0] = '\0';
    int64_t deadline_ms = ks_mono_us() / 1000 + k->delivery_timeout_ms + KAFKA_REPORT_MARGIN_MS;
    int rc = KS_OK;
    size_t produced = 0;
    for (; produced < n; produced++) {
        const struct ks_outbox_row *row = &rows[produced];
        char topic[KS_KAFKA_TOPIC_BYTES_MAX + 1];
        size_t len = 0;
        rc = ks_kafka_topic(k->prefix, row->ns, topic, sizeof(topic));
        if (rc == KS_OK)
            rc = ks_kafka_envelope(row, k->envelope, sizeof(k->envelope), &len);
        if (rc != KS_OK) {
            snprintf(why, whylen, "the event at position %" PRId64 " cannot be published: %s",
                     row->pos, ks_err_name(rc));
            break;
        }
        rd_kafka_resp_err_t err;
        for (;;) {
            err = rd_kafka_producev(
                k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(row->id, strlen(row->id)),
                RD_KAFKA_V_VALUE(k->envelope, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_OPAQUE(msg_tag(k->gen, produced)), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || ks_mono_us() / 1000 >= deadline_ms)
                break;
            rd_kafka_poll(k->rk, KAFKA_POLL_MS); /* the queue drains as reports come */
        }
        if (err) {
            snprintf(why, whylen, "cannot queue the event at position %" PRId64 ": %s", row->pos,
                     rd_kafka_err2str(err));
            rc = KS_ERR_IO;
            break;
        }
        k->status[produced] = MSG_PENDING;
        k->pending++;
    }
    /* Every message gets its report by message.timeout.ms; the margin covers the poll. */
    for (int64_t now_ms = ks_mono_us() / 1000; k->pending > 0 && now_ms < deadline_ms;
         now_ms = ks_mono_us() / 1000) {
        int64_t wait_ms = deadline_ms - now_ms;
        rd_kafka_poll(k->rk, (int)(wait_ms < KAFKA_POLL_MS ? wait_ms : KAFKA_POLL_MS));
    }
    size_t ok = 0;
    while (ok < produced && k->status[ok] == MSG_OK)
        ok++;
    *done = ok;
    if (rc == KS_OK && ok < n) {
        rc = KS_ERR_IO;
        if (k->pending > 0)
            snprintf(why, whylen, "Kafka did not report on %zu of %zu events within %" PRId64
                     " ms", k->pending, n, k->delivery_timeout_ms + KAFKA_REPORT_MARGIN_MS);
        else
            snprintf(why, whylen, "Kafka did not take %zu of %zu events: %s", n - ok, n,
                     k->delivery_error[0] ? k->delivery_error : "no reason given");
    }
    producer_check_fatal(k);
    return rc;
}

void ks_kafka_relay(struct ks_kafka *k, struct ks_relay *r)
{
    assert(k != NULL && r != NULL);
    memset(r, 0, sizeof(*r));
    r->name = KS_KAFKA_RELAY_NAME;
    r->ctx = k;
    r->handle = relay_handle;
    r->backoff_max_ms = KAFKA_RELAY_BACKOFF_MAX_MS;
}
