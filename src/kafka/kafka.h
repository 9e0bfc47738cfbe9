/*
 * kafka.h — the Kafka event stream (DESIGN.md "Events out"; operators' guide: docs/kafka.md).
 *
 * A relay (engine/relay.h, cursor "kafka") publishes every committed event with librdkafka's
 * idempotent producer (enable.idempotence, acks=all) to the topic <prefix><ns>, keyed by the
 * machine id so that order holds per machine, as a JSON envelope (ks_kafka_envelope). The cursor
 * moves only past events the broker has acknowledged; a broker that is down makes the relay
 * fail and back off (its lag grows), never the commits it follows.
 *
 * Optionally kassa's own log lines (core/log.h) go to a log topic too, through a log sink that
 * never waits on the broker: a line that does not fit librdkafka's bounded queue is dropped and
 * counted.
 *
 * The producers, the log sink and its polling thread exist only while a `struct ks_kafka` is
 * open; with no brokers configured the kafka module opens none.
 */
#ifndef KS_KAFKA_KAFKA_H
#define KS_KAFKA_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"
#include "engine/relay.h"
#include "store/store.h"

struct ks_log;
struct ks_kafka;

#define KS_KAFKA_RELAY_NAME "kafka"

struct ks_kafka_options {
    const char *brokers;         /* bootstrap.servers: "host:port,..."; non-empty */
    const char *topic_prefix;    /* topics are <prefix><ns>; [A-Za-z0-9._-]* */
    const char *client_id;       /* client.id; non-empty */
    const char *log_topic;       /* "" or NULL: kassa's log lines are not published */
    const char *properties_file; /* "" or NULL: none; else KEY=VALUE lines for librdkafka */
    int64_t delivery_timeout_ms; /* how long a message may wait for its acknowledgement; 0:
                                    KS_KAFKA_DELIVERY_TIMEOUT_MS_DEFAULT; at most
                                    KS_KAFKA_DELIVERY_TIMEOUT_MS_MAX (the relay must answer
                                    within its cursor's lease) */
    struct ks_log *log;          /* borrowed for the life of the handle; gets librdkafka's lines */
};

/*
 * Creates the producers (nothing connects yet: librdkafka connects in its own threads) and, with
 * a log topic, installs the log sink on `o->log`. KS_ERR_INVALID with `why` (never a property's
 * value, which may be a secret) for a bad option or properties file, KS_ERR_LIMIT for an option
 * longer than kassa keeps, KS_ERR_IO when librdkafka cannot create a producer. On error nothing
 * is left open. Called once, from the module's open.
 */
KS_MUST_USE int ks_kafka_open(const struct ks_kafka_options *o, struct ks_kafka **out, char *why,
                              size_t whylen);

/* Fills `*r` with the Kafka relay (name KS_KAFKA_RELAY_NAME, ctx `k`) for
 * ks_engine_register_relay. `k` must stay open until the engine has stopped. */
void ks_kafka_relay(struct ks_kafka *k, struct ks_relay *r);

/* Removes the log sink, waits up to a few seconds for queued messages, logs how many log lines
 * went to the log topic and how many were dropped (queue full, not acknowledged, or still queued
 * at the end), and frees everything. Call after the engine has stopped. NULL is allowed. */
void ks_kafka_close(struct ks_kafka *k);

/*
 * Writes the message value of one outbox row into `buf` (`cap` bytes; not NUL-terminated) and
 * its length into `*len`:
 *
 *   {"ns":"invoice","id":"...","eventID":3,"occurredAt":"2026-12-07T16:25:00.123Z",
 *    "type":"PaymentStarted","data":{...the event's body without "type"...}}
 *
 * In "data", the nonce of each callback tag (engine/callback.h: a capability) is replaced by
 * "redacted". KS_ERR_INVALID when the body is not a JSON object with a string "type",
 * KS_ERR_LIMIT when the envelope needs more than `cap` bytes (KS_KAFKA_ENVELOPE_BYTES_MAX holds
 * any event kassa stores). Pure; thread-safe.
 */
KS_MUST_USE int ks_kafka_envelope(const struct ks_outbox_row *row, char *buf, size_t cap,
                                  size_t *len);

/* Writes "<prefix><ns>" into `out` (`cap` bytes, NUL-terminated). KS_ERR_LIMIT when it does not
 * fit or is longer than KS_KAFKA_TOPIC_BYTES_MAX, KS_ERR_INVALID when it holds a character
 * Kafka refuses in topic names (other than [A-Za-z0-9._-]) or is empty. */
KS_MUST_USE int ks_kafka_topic(const char *prefix, const char *ns, char *out, size_t cap);

#endif
