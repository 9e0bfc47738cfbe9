/*
 * webhooks.h — merchant webhooks (DESIGN.md "Events out"; docs/webhooks.md).
 *
 * A party sets up a webhook for one shop's events of one TOPIC: its invoices (the reference
 * API's POST /processing/webhooks with an InvoicesTopic scope) or its fiscal receipts
 * (ReceiptsTopic, kassa's own addition). A relay reads the outbox, turns each event of an
 * invoice or receipt machine that a webhook listens to into a durable DELIVERY (one row per
 * webhook and event, body fixed then), and a dispatcher thread POSTs the due deliveries with
 * libcurl's multi interface, never a thread per delivery:
 *
 *   - the body is the event as the spec's Event has it (eventID, occuredAt) with the invoice,
 *     payment and refund as they were right after the event; for ReceiptsTopic, with the public
 *     receipt as it was right after the event;
 *   - each delivery is signed with the webhook's own RSA-2048 key (`Content-Signature: alg=RS256;
 *     digest=<base64url signature of the body>`) and carries `webhook-id` (the delivery id, the
 *     same on every attempt) and `webhook-timestamp` (this attempt, Unix seconds);
 *   - only a 2xx within the timeout counts; other answers are retried on a schedule (default
 *     30 s, 5 min, 15 min, 1 h, then hourly) until the horizon (default 24 h), then the delivery
 *     is dead-lettered and shown to operators, who may redeliver it; `Retry-After` is honoured;
 *     `410 Gone` disables the webhook;
 *   - order is kept per machine (invoice or receipt): a later event of a machine waits until
 *     the earlier ones for the same webhook are delivered (or dead-lettered);
 *   - URLs that resolve to loopback, private or link-local addresses are refused, when the
 *     webhook is set up and again at every connection, unless configuration allows them.
 *
 * The private keys are sealed by the vault (vault.h, ks_vault_secret_seal); no key, token or
 * card number ever reaches a log, an error or a body.
 */
#ifndef KS_WEBHOOKS_WEBHOOKS_H
#define KS_WEBHOOKS_WEBHOOKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "api/roles.h"
#include "core/err.h"

struct ks_store;
struct ks_engine;
struct ks_vault;
struct ks_log;
struct ks_http_router;
struct ks_sql_schema;

#define KS_WEBHOOK_RETRY_STEPS_MAX 16         /* entries of a retry schedule */
#define KS_WEBHOOK_ID_BYTES 24                /* "wh" + 22 base62 characters */
#define KS_WEBHOOK_URL_BYTES_MAX 1000         /* Webhook.url maxLength */
#define KS_WEBHOOK_EVENT_TYPES_N 15           /* InvoicesTopic.eventTypes */
#define KS_WEBHOOK_RECEIPT_EVENT_TYPES_N 3    /* ReceiptsTopic.eventTypes */
#define KS_WEBHOOK_SIGNATURE_BYTES_MAX 512    /* base64url of an RSA-2048 signature, and more */

/* The webhooks' own tables (src/webhooks/migrations/). */
extern const struct ks_sql_schema ks_webhooks_schema;

/* The role each webhook route needs (docs/auth.md), for the public listener's authorizer. */
extern const struct ks_api_route_role ks_webhooks_route_roles[];
extern const size_t ks_webhooks_route_roles_n;

/* The InvoicesTopic event types, in the spec's order. */
extern const char *const ks_webhook_event_types[KS_WEBHOOK_EVENT_TYPES_N];
/* The ReceiptsTopic event types: the receipt machine's public events of the same names, but
 * ReceiptCreated (the merchant made the receipt and has it in the reply). */
extern const char *const ks_webhook_receipt_event_types[KS_WEBHOOK_RECEIPT_EVENT_TYPES_N];

/* What a webhook hears: the events of one kind of machine, of one shop. */
enum ks_webhook_topic {
    KS_WEBHOOK_TOPIC_INVOICES = 0, /* "InvoicesTopic": invoice machines (KS_INVOICE_NS) */
    KS_WEBHOOK_TOPIC_RECEIPTS = 1, /* "ReceiptsTopic": receipt machines (KS_RECEIPT_NS) */
};
#define KS_WEBHOOK_TOPICS_N 2

struct ks_webhooks_options {
    struct ks_store *store;  /* borrowed */
    struct ks_engine *engine; /* borrowed: the relay is registered with it, machines read */
    struct ks_vault *vault;  /* borrowed: seals the signing keys */
    struct ks_log *log;      /* borrowed, may be NULL */
    bool allow_loopback;     /* URLs on 127.0.0.0/8 and ::1 may be used (tests, one host) */
    bool allow_private;      /* also private, link-local and other non-public addresses */
    int64_t timeout_ms;      /* a delivery's whole HTTP exchange; 0: 10 s */
    int64_t retry_ms[KS_WEBHOOK_RETRY_STEPS_MAX]; /* delays after attempt 1, 2, ...; the last */
    size_t retry_n;                               /* repeats; retry_n == 0: the default */
    int64_t horizon_ms;      /* dead-letter after this long since the event; 0: 24 h */
    int per_shop_max;        /* webhooks one shop may have; 0: 10 */
    int per_party_max;       /* webhooks one party may have; 0: 100 */
    int concurrency;         /* deliveries in flight on this node; 0: 64 */
};

struct ks_webhooks;

/* Opens the webhooks: registers the relay with the engine (before it runs). The dispatcher
 * starts with ks_webhooks_start. `why` names what failed, never a secret. */
KS_MUST_USE int ks_webhooks_open(const struct ks_webhooks_options *opt, struct ks_webhooks **out,
                                 char *why, size_t whylen);
/* Starts the dispatcher thread (the engine runs). */
KS_MUST_USE int ks_webhooks_start(struct ks_webhooks *w);
/* Stops the dispatcher (deliveries in flight are abandoned: their leases end and they are sent
 * again) and frees everything. NULL is fine. */
void ks_webhooks_close(struct ks_webhooks *w);

/* Adds the merchant routes (/v2/processing/webhooks...) to `pub` and, when `admin` is not NULL,
 * the operators' routes (/admin/v1/webhooks...). `w` must outlive the routers. */
KS_MUST_USE int ks_webhooks_routes(struct ks_webhooks *w, struct ks_http_router *pub,
                                   struct ks_http_router *admin);

/* --- pure parts (webhooks_util.c), tested on their own ---------------------------------------- */

/* The webhook event type an invoice machine event stands for ("PaymentCaptured"), or NULL when
 * no webhook hears about it (internal events, statuses without a type). */
const char *ks_webhook_event_type(const json_t *event);
/* True if `type` is one of ks_webhook_event_types. */
bool ks_webhook_event_type_known(const char *type);

/* The scope name of `topic` ("InvoicesTopic", "ReceiptsTopic"); a static string. */
const char *ks_webhook_topic_name(enum ks_webhook_topic topic);
/* The topic a scope names: KS_OK with `*out`, or KS_ERR_NOT_FOUND for NULL or an unknown name. */
KS_MUST_USE int ks_webhook_topic_parse(const char *name, enum ks_webhook_topic *out);
/* The topic whose events are those of machines of namespace `ns`: KS_OK with `*out`, or
 * KS_ERR_NOT_FOUND when no topic carries that namespace's events. */
KS_MUST_USE int ks_webhook_topic_of_ns(const char *ns, enum ks_webhook_topic *out);
/* How many event types `topic` has: the most a scope of it may list. */
size_t ks_webhook_topic_types_n(enum ks_webhook_topic topic);
/* True if `type` is an event type of `topic` (NULL is none). */
bool ks_webhook_topic_type_known(enum ks_webhook_topic topic, const char *type);
/* The event type of `topic` that `event` (an event of a machine of the topic's namespace) stands
 * for, or NULL when no webhook of the topic hears about it. A static string. */
const char *ks_webhook_topic_event_type(enum ks_webhook_topic topic, const json_t *event);

/* Parses a retry schedule, "30s,5m,15m,1h" (units ms, s, m, h; 1..KS_WEBHOOK_RETRY_STEPS_MAX
 * entries, each 1 ms .. 24 h), into `ms`. KS_ERR_INVALID with `why` on a bad one. */
KS_MUST_USE int ks_webhook_retry_parse(const char *text, int64_t ms[KS_WEBHOOK_RETRY_STEPS_MAX],
                                       size_t *n, char *why, size_t whylen);
/* The delay before the attempt after attempt number `attempts` (1 = the first failed): the
 * schedule's entry, its last entry once past the end. */
int64_t ks_webhook_retry_delay(const int64_t *ms, size_t n, int attempts);
/* The delay a Retry-After header asks for (delta-seconds or an HTTP-date), in ms from `now_ms`
 * (0 for a date in the past), or -1 when the value is absent or malformed. */
int64_t ks_webhook_retry_after(const char *value, int64_t now_ms);

enum ks_webhook_addr {
    KS_WEBHOOK_ADDR_PUBLIC = 0,
    KS_WEBHOOK_ADDR_LOOPBACK, /* 127.0.0.0/8, ::1 */
    KS_WEBHOOK_ADDR_PRIVATE,  /* RFC 1918, link-local, CGNAT, ULA, unspecified, multicast... */
};
/* Classifies an IPv4 or IPv6 address (an IPv4-mapped IPv6 address as its IPv4 one). */
enum ks_webhook_addr ks_webhook_addr_class(const struct sockaddr *sa);
/* May a webhook connect to `sa` under these allowances? */
bool ks_webhook_addr_allowed(const struct sockaddr *sa, bool allow_loopback, bool allow_private);

/* Makes an RSA-2048 key pair: `*public_pem` (SubjectPublicKeyInfo) and `*private_pem` (PKCS#8),
 * malloc'd; the caller wipes and frees the private one. */
KS_MUST_USE int ks_webhook_keypair(char **public_pem, char **private_pem);
/* Signs `len` bytes of `body` with RS256 (RSASSA-PKCS1-v1_5, SHA-256) under the PKCS#8 PEM
 * private key, writing base64url without padding into `out` (`cap` bytes, NUL-terminated). */
KS_MUST_USE int ks_webhook_sign(const char *private_pem, const char *body, size_t len, char *out,
                                size_t cap);
/* True if `sig` (base64url) is a valid RS256 signature of `body` under `public_pem`. */
bool ks_webhook_verify(const char *public_pem, const char *body, size_t len, const char *sig);

#endif
