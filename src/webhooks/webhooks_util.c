/*
 * webhooks_util.c — the pure parts of the webhooks (webhooks.h): the topics, which invoice and
 * receipt events are which webhook event types, retry schedules and Retry-After, address
 * classes, RS256 keys and signatures.
 */
#include "webhooks/webhooks_int.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "domain/invoice/invoice.h"
#include "receipts/fiscal.h"

#define RSA_BITS 2048
#define RETRY_STEP_MS_MAX (24LL * 3600 * 1000)

const char *const ks_webhook_event_types[KS_WEBHOOK_EVENT_TYPES_N] = {
    "InvoiceCreated",         "InvoicePaid",
    "InvoiceCancelled",       "InvoiceFulfilled",
    "PaymentStarted",         "PaymentProcessed",
    "PaymentCaptured",        "PaymentCancelled",
    "PaymentRefunded",        "PaymentFailed",
    "PaymentRefundCreated",   "PaymentRefundSucceeded",
    "PaymentRefundFailed",    "PaymentUserInteractionRequested",
    "PaymentUserInteractionCompleted",
};

bool ks_webhook_event_type_known(const char *type)
{
    return ks_webhook_topic_type_known(KS_WEBHOOK_TOPIC_INVOICES, type);
}

const char *const ks_webhook_receipt_event_types[KS_WEBHOOK_RECEIPT_EVENT_TYPES_N] = {
    "ReceiptRegistered",
    "ReceiptFailed",
    "ReceiptJournaled",
};

/* A ReceiptsTopic type is the name of the receipt event it stands for. */
static const char *receipt_event_type(const json_t *event)
{
    const char *type = json_is_object(event) ? ks_json_get_str(event, "type") : NULL;
    for (size_t i = 0; type && i < KS_WEBHOOK_RECEIPT_EVENT_TYPES_N; i++)
        if (strcmp(type, ks_webhook_receipt_event_types[i]) == 0)
            return ks_webhook_receipt_event_types[i];
    return NULL;
}

static const struct topic {
    const char *name;
    const char *ns;                /* the machines whose events it carries */
    const char *const *types;
    size_t types_n;
    const char *(*event_type)(const json_t *event);
} topics[KS_WEBHOOK_TOPICS_N] = {
    [KS_WEBHOOK_TOPIC_INVOICES] = {"InvoicesTopic", KS_INVOICE_NS, ks_webhook_event_types,
                                   KS_WEBHOOK_EVENT_TYPES_N, ks_webhook_event_type},
    [KS_WEBHOOK_TOPIC_RECEIPTS] = {"ReceiptsTopic", KS_RECEIPT_NS, ks_webhook_receipt_event_types,
                                   KS_WEBHOOK_RECEIPT_EVENT_TYPES_N, receipt_event_type},
};

static const struct topic *topic_at(enum ks_webhook_topic t)
{
    assert((size_t)t < KS_WEBHOOK_TOPICS_N); /* a topic comes from ks_webhook_topic_parse */
    return &topics[t];
}

const char *ks_webhook_topic_name(enum ks_webhook_topic topic)
{
    return topic_at(topic)->name;
}

int ks_webhook_topic_parse(const char *name, enum ks_webhook_topic *out)
{
    for (size_t i = 0; name && i < KS_WEBHOOK_TOPICS_N; i++) {
        if (strcmp(name, topics[i].name) == 0) {
            *out = (enum ks_webhook_topic)i;
            return KS_OK;
        }
    }
    return KS_ERR_NOT_FOUND;
}

int ks_webhook_topic_of_ns(const char *ns, enum ks_webhook_topic *out)
{
    for (size_t i = 0; ns && i < KS_WEBHOOK_TOPICS_N; i++) {
        if (strcmp(ns, topics[i].ns) == 0) {
            *out = (enum ks_webhook_topic)i;
            return KS_OK;
        }
    }
    return KS_ERR_NOT_FOUND;
}

size_t ks_webhook_topic_types_n(enum ks_webhook_topic topic)
{
    return topic_at(topic)->types_n;
}

bool ks_webhook_topic_type_known(enum ks_webhook_topic topic, const char *type)
{
    const struct topic *t = topic_at(topic);
    for (size_t i = 0; type && i < t->types_n; i++)
        if (strcmp(type, t->types[i]) == 0)
            return true;
    return false;
}

const char *ks_webhook_topic_event_type(enum ks_webhook_topic topic, const json_t *event)
{
    return topic_at(topic)->event_type(event);
}

/* A status change's webhook type: `pairs` is {status, type, status, type, ..., NULL}. */
static const char *by_status(const json_t *event, const char *const *pairs)
{
    const char *status = ks_json_get_str(event, "status");
    for (size_t i = 0; status && pairs[i]; i += 2)
        if (strcmp(status, pairs[i]) == 0)
            return pairs[i + 1];
    return NULL;
}

const char *ks_webhook_event_type(const json_t *event)
{
    static const char *const invoice[] = {"paid",      "InvoicePaid",      "cancelled",
                                          "InvoiceCancelled", "fulfilled", "InvoiceFulfilled",
                                          NULL};
    static const char *const payment[] = {
        "processed", "PaymentProcessed", "captured", "PaymentCaptured", "cancelled",
        "PaymentCancelled", "refunded", "PaymentRefunded", "failed", "PaymentFailed", NULL};
    static const char *const refund[] = {"succeeded", "PaymentRefundSucceeded", "failed",
                                         "PaymentRefundFailed", NULL};
    const char *type = json_is_object(event) ? ks_json_get_str(event, "type") : NULL;
    if (!type)
        return NULL;
    if (strcmp(type, "InvoiceCreated") == 0)
        return "InvoiceCreated";
    if (strcmp(type, "InvoiceStatusChanged") == 0)
        return by_status(event, invoice);
    if (strcmp(type, "PaymentStarted") == 0)
        return "PaymentStarted";
    if (strcmp(type, "PaymentStatusChanged") == 0)
        return by_status(event, payment);
    if (strcmp(type, "RefundStarted") == 0)
        return "PaymentRefundCreated";
    if (strcmp(type, "RefundStatusChanged") == 0)
        return by_status(event, refund);
    if (strcmp(type, "PaymentInteractionRequested") == 0)
        return "PaymentUserInteractionRequested";
    if (strcmp(type, "PaymentInteractionCompleted") == 0)
        return "PaymentUserInteractionCompleted";
    return NULL;
}

/* --- retries ------------------------------------------------------------------------------ */

int ks_webhook_retry_parse(const char *text, int64_t ms[KS_WEBHOOK_RETRY_STEPS_MAX], size_t *n,
                           char *why, size_t whylen)
{
    *n = 0;
    const char *p = text ? text : "";
    while (*p) {
        if (*n >= KS_WEBHOOK_RETRY_STEPS_MAX) {
            snprintf(why, whylen, "a retry schedule has at most %d entries",
                     KS_WEBHOOK_RETRY_STEPS_MAX);
            return KS_ERR_INVALID;
        }
        int64_t v = 0;
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 12) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        int64_t unit = 0;
        if (strncmp(p, "ms", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (*p == 's' || *p == 'm' || *p == 'h') {
            unit = *p == 's' ? 1000 : *p == 'm' ? 60000 : 3600000;
            p++;
        }
        if (!digits || !unit || (*p && *p != ',') || v * unit < 1 || v * unit > RETRY_STEP_MS_MAX) {
            snprintf(why, whylen, "a retry schedule is a comma-separated list of delays such as "
                                  "30s,5m,15m,1h (units ms, s, m, h; each at most 24h)");
            return KS_ERR_INVALID;
        }
        ms[(*n)++] = v * unit;
        if (*p == ',' && !*++p) {
            snprintf(why, whylen, "a retry schedule must not end with a comma");
            return KS_ERR_INVALID;
        }
    }
    if (*n == 0) {
        snprintf(why, whylen, "a retry schedule needs at least one delay");
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

int64_t ks_webhook_retry_delay(const int64_t *ms, size_t n, int attempts)
{
    if (n == 0)
        return 0;
    size_t i = attempts < 1 ? 0 : (size_t)(attempts - 1);
    return ms[i < n ? i : n - 1];
}

int64_t ks_webhook_retry_after(const char *value, int64_t now_ms)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        int64_t s = 0;
        const char *p = value;
        while (isdigit((unsigned char)*p)) {
            if (s > 100LL * 365 * 24 * 3600)
                return -1;
            s = s * 10 + (*p++ - '0');
        }
        while (*p == ' ' || *p == '\t')
            p++;
        return *p ? -1 : s * 1000;
    }
    /* IMF-fixdate, the form RFC 9110 says senders use: "Sun, 06 Nov 1994 08:49:37 GMT". */
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    time_t at = timegm(&tm);
    if (at == (time_t)-1)
        return -1;
    int64_t delay = (int64_t)at * 1000 - now_ms;
    return delay > 0 ? delay : 0;
}

/* --- addresses ---------------------------------------------------------------------------- */

static enum ks_webhook_addr v4_class(uint32_t a)
{
    uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16);
    if (b0 == 127)
        return KS_WEBHOOK_ADDR_LOOPBACK;
    if (b0 == 0 || b0 == 10 || (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168) ||
        (b0 == 169 && b1 == 254) || (b0 == 100 && (b1 & 0xc0) == 64) || /* CGNAT */
        (b0 == 192 && b1 == 0 && (uint8_t)(a >> 8) == 0) ||              /* IETF protocol */
        (b0 == 198 && (b1 & 0xfe) == 18) ||                             /* benchmarking */
        b0 >= 224)                                                      /* multicast, reserved */
        return KS_WEBHOOK_ADDR_PRIVATE;
    return KS_WEBHOOK_ADDR_PUBLIC;
}

enum ks_webhook_addr ks_webhook_addr_class(const struct sockaddr *sa)
{
    if (!sa)
        return KS_WEBHOOK_ADDR_PRIVATE;
    if (sa->sa_family == AF_INET)
        return v4_class(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6)
        return KS_WEBHOOK_ADDR_PRIVATE;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    const uint8_t *b = a->s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
        uint32_t v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return v4_class(v4);
    }
    if (IN6_IS_ADDR_LOOPBACK(a))
        return KS_WEBHOOK_ADDR_LOOPBACK;
    if (IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_SITELOCAL(a) ||
        IN6_IS_ADDR_MULTICAST(a) || (b[0] & 0xfe) == 0xfc || /* ULA fc00::/7 */
        (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) || /* documentation */
        (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b))   /* NAT64 */
        return KS_WEBHOOK_ADDR_PRIVATE;
    return KS_WEBHOOK_ADDR_PUBLIC;
}

bool ks_webhook_addr_allowed(const struct sockaddr *sa, bool allow_loopback, bool allow_private)
{
    switch (ks_webhook_addr_class(sa)) {
    case KS_WEBHOOK_ADDR_PUBLIC:
        return true;
    case KS_WEBHOOK_ADDR_LOOPBACK:
        return allow_loopback || allow_private;
    default:
        return allow_private;
    }
}

/* --- keys and signatures ------------------------------------------------------------------ */

/* The contents of a memory BIO as a malloc'd string. */
static char *bio_text(BIO *b)
{
    char *data = NULL;
    long len = BIO_get_mem_data(b, &data);
    if (len <= 0)
        return NULL;
    char *out = malloc((size_t)len + 1);
    if (out) {
        memcpy(out, data, (size_t)len);
        out[len] = '\0';
    }
    return out;
}

int ks_webhook_keypair(char **public_pem, char **private_pem)
{
    *public_pem = *private_pem = NULL;
    EVP_PKEY *key = EVP_RSA_gen(RSA_BITS);
    BIO *pub = BIO_new(BIO_s_mem()), *priv = BIO_new(BIO_s_mem());
    int rc = KS_ERR_INTERNAL;
    if (key && pub && priv && PEM_write_bio_PUBKEY(pub, key) == 1 &&
        PEM_write_bio_PrivateKey(priv, key, NULL, NULL, 0, NULL, NULL) == 1) {
        *public_pem = bio_text(pub);
        *private_pem = bio_text(priv);
        rc = *public_pem && *private_pem ? KS_OK : KS_ERR_NOMEM;
    }
    if (rc != KS_OK) {
        free(*public_pem);
        if (*private_pem)
            OPENSSL_cleanse(*private_pem, strlen(*private_pem));
        free(*private_pem);
        *public_pem = *private_pem = NULL;
    }
    char *data = NULL;
    long len = priv ? BIO_get_mem_data(priv, &data) : 0;
    if (len > 0)
        OPENSSL_cleanse(data, (size_t)len);
    BIO_free(pub);
    BIO_free(priv);
    EVP_PKEY_free(key);
    return rc;
}

EVP_PKEY *ks_webhook_key_load(const char *private_pem)
{
    BIO *b = BIO_new_mem_buf(private_pem, -1);
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return key;
}

/* base64url without padding of `len` bytes. */
static int b64url(const unsigned char *in, size_t len, char *out, size_t cap)
{
    size_t need = 4 * ((len + 2) / 3) + 1;
    if (cap < need)
        return KS_ERR_LIMIT;
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return KS_OK;
}

int ks_webhook_sign_key(EVP_PKEY *key, const char *body, size_t len, char *out, size_t cap)
{
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, sig, &siglen, (const unsigned char *)body, len) == 1;
    EVP_MD_CTX_free(md);
    return ok ? b64url(sig, siglen, out, cap) : KS_ERR_INTERNAL;
}

int ks_webhook_sign(const char *private_pem, const char *body, size_t len, char *out, size_t cap)
{
    EVP_PKEY *key = ks_webhook_key_load(private_pem);
    if (!key)
        return KS_ERR_INVALID;
    int rc = ks_webhook_sign_key(key, body, len, out, cap);
    EVP_PKEY_free(key);
    return rc;
}

bool ks_webhook_verify(const char *public_pem, const char *body, size_t len, const char *sig)
{
    size_t slen = sig ? strlen(sig) : 0;
    if (slen == 0 || slen > KS_WEBHOOK_SIGNATURE_BYTES_MAX)
        return false;
    char b64[KS_WEBHOOK_SIGNATURE_BYTES_MAX + 4];
    size_t n = 0;
    for (; n < slen; n++) {
        char c = sig[n];
        if (!isalnum((unsigned char)c) && c != '-' && c != '_')
            return false;
        b64[n] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    while (n % 4)
        b64[n++] = '=';
    b64[n] = '\0';
    unsigned char raw[KS_WEBHOOK_SIGNATURE_BYTES_MAX];
    int rawlen = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
    if (rawlen < 0)
        return false;
    rawlen -= (int)(n - slen); /* EVP_DecodeBlock counts the padding */
    BIO *b = BIO_new_mem_buf(public_pem, -1);
    EVP_PKEY *key = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = key && md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestVerify(md, raw, (size_t)rawlen, (const unsigned char *)body, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    BIO_free(b);
    return ok;
}
