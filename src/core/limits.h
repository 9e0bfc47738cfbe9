/*
 * limits.h — every bound kassa enforces, in one place (units last in each name).
 *
 * Hitting one of these gives the caller a clear error (KS_ERR_LIMIT or a 4xx), never a crash or
 * a silent truncation. Runtime-tunable bounds have their default here and a flag in main.c.
 */
#ifndef KS_CORE_LIMITS_H
#define KS_CORE_LIMITS_H

/* Identifiers. */
#define KS_NS_BYTES_MAX 32          /* namespace name: [a-z0-9_]{1,32} */
#define KS_ID_BYTES_MAX 64          /* machine id: [A-Za-z0-9._-]{1,64} */
#define KS_TASK_ID_BYTES 22         /* random base62 task id */
#define KS_UNIT_BYTES_MAX 32        /* unit name */
#define KS_EVENT_TYPE_BYTES_MAX 64  /* event "type" string */
#define KS_REASON_BYTES_MAX 1024    /* failure / repair reason */
#define KS_IDEM_SCOPE_BYTES_MAX 256 /* idempotency scope (party, shop, operation) */
#define KS_IDEM_KEY_BYTES_MAX 128   /* idempotency key (X-Request-ID, externalID) */
#define KS_CONSUMER_BYTES_MAX 64    /* outbox consumer name */

/* Machines and transitions. */
#define KS_TRANSITION_EVENTS_MAX 64       /* events one transition may append */
#define KS_TRANSITION_TASKS_MAX 16        /* tasks one transition may emit */
#define KS_EVENT_BYTES_MAX (64 * 1024)    /* one serialised event */
#define KS_SNAPSHOT_BYTES_MAX (1024 * 1024) /* one serialised state */
#define KS_HISTORY_PAGE_MAX 1000          /* events per history read */
#define KS_CONFLICT_RETRIES_MAX 16        /* re-runs of a transition after a concurrent change */

/* Group commit. */
#define KS_COMMIT_BATCH_MAX_DEFAULT 512   /* transitions sharing one durable write */
#define KS_COMMIT_QUEUE_MAX 65536         /* transitions waiting for the committer */

/* Machine cache. */
#define KS_CACHE_MACHINES_MAX_DEFAULT 100000

/* Timers and tasks. */
#define KS_TIMER_POLL_MS_DEFAULT 100
#define KS_TIMERS_PER_POLL_MAX 256
#define KS_TASK_POLL_MS_DEFAULT 50 /* an idle worker's first look at the store */
#define KS_TASK_POLL_IDLE_MS_MAX 400 /* ... doubling while it finds nothing, up to this */
#define KS_UNIT_HANDOFF_MAX 1024   /* tasks handed off in memory and waiting, per unit */
#define KS_TASKS_PER_CLAIM_MAX 32
#define KS_TASK_LEASE_MS_DEFAULT 30000
#define KS_TASK_ATTEMPTS_MAX_DEFAULT 8
#define KS_TASK_BACKOFF_BASE_MS_DEFAULT 200
#define KS_TASK_BACKOFF_MAX_MS_DEFAULT 60000
#define KS_UNIT_WORKERS_MAX 64
#define KS_UNITS_MAX 32
#define KS_PROCESSORS_MAX 32

/* Outbox and idempotency. */
#define KS_OUTBOX_PAGE_MAX 1000
#define KS_RELAYS_MAX 16                   /* relays one engine runs */
#define KS_RELAY_BATCH_DEFAULT 100         /* rows per relay handler call */
#define KS_RELAY_POLL_MS_DEFAULT 200       /* idle relay: look for other nodes' commits */
#define KS_RELAY_BACKOFF_BASE_MS_DEFAULT 500
#define KS_RELAY_BACKOFF_MAX_MS_DEFAULT 60000
#define KS_RELAY_LEASE_MS_DEFAULT 15000    /* a relay cursor's lease, renewed as it advances */
#define KS_RELAY_LINGER_MS_MAX 5000        /* the longest a relay may let rows gather */
#define KS_IDEM_TTL_MS_DEFAULT (24LL * 3600 * 1000)
#define KS_IDEM_SWEEP_INTERVAL_MS (60LL * 1000)
#define KS_IDEM_OUTCOME_BYTES_MAX (256 * 1024)

/* Kafka (docs/kafka.md). */
/* One event's message value: the event, its envelope, and room for the redaction of callback
 * tags, which at most doubles a string ("a~b~c" -> "a~b~redacted"). */
#define KS_KAFKA_ENVELOPE_BYTES_MAX (2 * KS_EVENT_BYTES_MAX + 1024)
#define KS_KAFKA_TOPIC_BYTES_MAX 249         /* Kafka's own bound on a topic name */
#define KS_KAFKA_LOG_QUEUE_MAX 10000         /* log lines waiting for the broker; more are dropped */
#define KS_KAFKA_PROPERTIES_MAX 64           /* lines of --kafka-properties-file */
#define KS_KAFKA_PROPERTY_BYTES_MAX 1024     /* one such line */
#define KS_KAFKA_DELIVERY_TIMEOUT_MS_DEFAULT 10000
#define KS_KAFKA_DELIVERY_TIMEOUT_MS_MAX 10000 /* plus 2 s for the reports: under the relay's lease */

/* Storage connections. */
#define KS_STORE_READERS_DEFAULT 8
#define KS_STORE_READERS_MAX 64

/* HTTP. */
/* Request bodies: the public listener's, and the admin listener's (whole configuration
 * documents). */
#define KS_HTTP_BODY_BYTES_MAX_DEFAULT (64 * 1024)
#define KS_HTTP_ADMIN_BODY_BYTES_MAX_DEFAULT (1024 * 1024)
/* JSON values one body may hold (ks_json_values_check): a value costs the parser 40 to 100
 * times its one or two bytes, so this, not the body size, bounds a parse's memory (~1 MiB on the
 * public listener). The payments API's largest body (an invoice of 100 cart lines) needs under
 * a thousand; a domain configuration document a few hundred. */
#define KS_HTTP_JSON_VALUES_MAX 8192
#define KS_HTTP_ADMIN_JSON_VALUES_MAX 262144
#define KS_HTTP_PER_IP_CONNECTIONS_MAX_DEFAULT 256 /* open connections from one address */
/* From a connection's start (or its previous request's end) to a complete request head, idle
 * or not. */
#define KS_HTTP_HEAD_DEADLINE_S_DEFAULT 10
#define KS_HTTP_HEAD_DEADLINE_S_MAX 3600
#define KS_HTTP_REAPER_PERIOD_MS_MAX 1000 /* how often overdue heads are looked for, at most */
#define KS_HTTP_LOG_PATH_BYTES_MAX 1024   /* a request path in the access log, escaped */
#define KS_HTTP_HEADER_BYTES_MAX 16384     /* per-connection memory for the request head */
#define KS_HTTP_CONNECTIONS_MAX_DEFAULT 1024
#define KS_HTTP_THREADS_DEFAULT 32
#define KS_HTTP_TIMEOUT_S_DEFAULT 30
#define KS_HTTP_PATH_SEGMENTS_MAX 16
#define KS_HTTP_ROUTES_MAX 128
#define KS_JSON_DEPTH_MAX 32
#define KS_TRACE_ID_BYTES 16
#define KS_HTTP_BODY_BYTES_MAX_CEIL (64 * 1024 * 1024) /* highest --http-body-max-bytes */
#define KS_HTTP_BODY_DRAIN_BYTES_MAX (8 * 1024 * 1024) /* past the body limit: read and dropped
                                                         so the client can read its 413 */
#define KS_HTTP_THREADS_MAX 1024
#define KS_HTTP_CONNECTIONS_MAX_CEIL 65536
#define KS_HTTP_TIMEOUT_S_MAX 3600
#define KS_HTTP_QUERY_PARAMS_MAX 16       /* query parameters one request may carry */
#define KS_HTTP_PAGE_DEFAULT 100          /* list size when ?limit= is absent */
#define KS_HTTP_PAGE_MAX 1000             /* largest ?limit= */
#define KS_ADMIN_TOKEN_BYTES 32           /* generated admin token: base62 characters */
#define KS_ADMIN_TOKEN_BYTES_MAX 256      /* longest admin token read from its file */
#define KS_ADMIN_TOKEN_BYTES_MIN 32       /* shortest admin token read from its file */

/* Remote adapters (units/adapters/remote.h): one POST per session step. */
#define KS_REMOTE_URL_BYTES_MAX 2048          /* options.url */
#define KS_REMOTE_REPLY_BYTES_MAX (64 * 1024) /* an adapter's reply; a longer one is refused */
#define KS_REMOTE_TIMEOUT_MS_DEFAULT 10000    /* the whole call, when options.timeoutMs is unset */
#define KS_REMOTE_TIMEOUT_MS_MIN 100
#define KS_REMOTE_TIMEOUT_MS_MAX 60000
#define KS_REMOTE_CONNECT_TIMEOUT_MS_MAX 3000 /* the connection's share of the call's bound */
#define KS_REMOTE_MESSAGE_BYTES_MAX 160       /* an adapter's error message quoted in errors */

#endif
