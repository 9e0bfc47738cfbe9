/*
 * modules/kafka.c — the kafka module (kafka/kafka.h): every committed event published to Kafka
 * by a relay with its own cursor ("kafka"), and kassa's log lines to a log topic behind a flag.
 * Operators' guide: docs/kafka.md.
 *
 * With --kafka-brokers empty (the default) the module opens nothing: no producer, no relay, no
 * thread.
 */
#include <stdio.h>

#include "engine/engine.h"
#include "kafka/kafka.h"
#include "platform/platform.h"

static const struct ks_flag kafka_flags[] = {
    {.name = "kafka-brokers", .env = "KASSA_KAFKA_BROKERS", .dflt = "",
     .help = "Kafka bootstrap brokers, host:port[,host:port...]; empty: no Kafka",
     .doc = "Kafka bootstrap brokers (`host:port,...`): every committed event is published "
            "([kafka.md](kafka.md)); empty: Kafka is off and no Kafka code runs",
     .dflt_doc = "empty (off)"},
    {.name = "kafka-topic-prefix", .env = "KASSA_KAFKA_TOPIC_PREFIX", .dflt = "kassa.",
     .help = "events go to the topic <prefix><namespace> (kassa.invoice, ...)",
     .doc = "events go to the topic `<prefix><namespace>` (`kassa.invoice`, ...); "
            "`[A-Za-z0-9._-]`"},
    {.name = "kafka-client-id", .env = "KASSA_KAFKA_CLIENT_ID", .dflt = "kassa",
     .opts = KS_FLAG_NONEMPTY,
     .help = "the Kafka client.id (brokers' logs and quotas); the key of the log topic's lines",
     .doc = "the Kafka `client.id` (brokers' logs, quotas, ACLs); also the key of this node's "
            "lines on the log topic"},
    {.name = "kafka-log-topic", .env = "KASSA_KAFKA_LOG_TOPIC", .dflt = "",
     .help = "also publish kassa's JSON log lines to this topic (never waiting on the broker)",
     .doc = "also publish kassa's JSON log lines to this topic; a line that finds the producer's "
            "queue full is dropped and counted, never waited for",
     .dflt_doc = "empty (off)"},
    {.name = "kafka-properties-file", .env = "KASSA_KAFKA_PROPERTIES_FILE", .dflt = "",
     .help = "librdkafka properties, KEY=VALUE a line (TLS, SASL: keep secrets out of argv)",
     .doc = "a file of librdkafka properties, `KEY=VALUE` a line, `#` comments (TLS, SASL: "
            "secrets stay out of the command line); the properties kassa sets itself are refused",
     .dflt_doc = "empty (none)"},
    {.name = "kafka-delivery-timeout-ms", .env = "KASSA_KAFKA_DELIVERY_TIMEOUT_MS",
     .dflt = "10000", .kind = KS_FLAG_INT, .min = 1000, .max = KS_KAFKA_DELIVERY_TIMEOUT_MS_MAX,
     .help = "how long a batch of events may wait for the broker's acknowledgement before the "
             "relay backs off and publishes it again",
     .doc = "how long a batch of events may wait for the broker's acknowledgement "
            "(`message.timeout.ms`) before the relay backs off and publishes it again; at most "
            "10000, under the relay's 15 s lease"},
};

static int kafka_module_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    const char *brokers = ks_node_flag(node, "kafka-brokers");
    if (!brokers[0])
        return KS_OK; /* Kafka is off */
    struct ks_kafka_options o = {
        .brokers = brokers,
        .topic_prefix = ks_node_flag(node, "kafka-topic-prefix"),
        .client_id = ks_node_flag(node, "kafka-client-id"),
        .log_topic = ks_node_flag(node, "kafka-log-topic"),
        .properties_file = ks_node_flag(node, "kafka-properties-file"),
        .delivery_timeout_ms = ks_node_flag_int(node, "kafka-delivery-timeout-ms"),
        .log = ks_node_log(node),
    };
    struct ks_kafka *k = NULL;
    int rc = ks_kafka_open(&o, &k, why, whylen);
    if (rc != KS_OK)
        return rc;
    *ctx = k;
    struct ks_relay r;
    ks_kafka_relay(k, &r);
    if ((rc = ks_engine_register_relay(ks_node_engine(node), &r)) != KS_OK)
        snprintf(why, whylen, "cannot register the Kafka relay");
    return rc;
}

static void kafka_module_close(void *ctx)
{
    ks_kafka_close(ctx);
}

const struct ks_module ks_kafka_module = {
    .name = "kafka",
    .summary = "the Kafka event stream (a relay) and log topic",
    .flags = kafka_flags,
    .flags_n = sizeof(kafka_flags) / sizeof(kafka_flags[0]),
    .open = kafka_module_open,
    .close = kafka_module_close,
};
