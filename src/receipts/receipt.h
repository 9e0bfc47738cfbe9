/*
 * receipt.h — fiscal receipts: the request format (ATOL Online v5's, FFD 1.2), its validation,
 * and the receipt processor. Design note: docs/receipts.md; DESIGN.md "Fiscal receipts".
 *
 * One machine per receipt (namespace "receipt", KS_RECEIPT_NS in fiscal.h). Its public events
 * are ReceiptCreated, ReceiptJournaled, ReceiptRegistered and ReceiptFailed; events whose type
 * starts with "internal." (sessions with the register) are not shown to clients.
 *
 * Amounts. ATOL's protocol carries rubles as JSON numbers with up to 2 decimals and quantities
 * with up to 3. kassa never holds them as floating point: the request text is read with every
 * fractional number turned into its decimal text (ks_receipt_json_load), validated into exact
 * integers (kopecks, thousandths), and kept in the machine as canonical decimal strings
 * ("1200.50", "1.000"). Only the JSON that leaves kassa (replies, the register's request) shows
 * them as numbers again (ks_receipt_public_doc), which is the protocol's encoding, not
 * arithmetic.
 */
#ifndef KS_RECEIPTS_RECEIPT_H
#define KS_RECEIPTS_RECEIPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "engine/engine.h"
#include "receipts/fiscal.h"

/* Bounds of a receipt (FFD 1.2 as ATOL Online v5 carries it). */
#define KS_RECEIPT_ITEMS_MAX 100
#define KS_RECEIPT_PAYMENTS_MAX 10
#define KS_RECEIPT_VATS_MAX 12
#define KS_RECEIPT_ITEM_NAME_CHARS_MAX 128
#define KS_RECEIPT_EXTERNAL_ID_BYTES_MAX 128
#define KS_RECEIPT_TEXT_BYTES_MAX 256   /* addresses, e-mails, names of the client */
#define KS_RECEIPT_AMOUNT_MINOR_MAX 9999999999999LL /* 99,999,999,999.99 rubles */
#define KS_RECEIPT_QUANTITY_MILLI_MAX 99999999LL    /* 99,999.999 */
#define KS_RECEIPT_BODY_BYTES_MAX (256 * 1024)
#define KS_RECEIPT_INQUIRIES_MAX 200     /* inquiries of one session before the receipt fails */
#define KS_RECEIPT_ERROR_BYTES 256

/* The request kinds, as ATOL Online v5 names its operations. */
bool ks_receipt_operation_valid(const char *op);
/* True for sell_correction and buy_correction (their document is "correction"). */
bool ks_receipt_operation_is_correction(const char *op);

/*
 * Parses a request body of `len` bytes the way receipts need: like ks_json_parse (strict UTF-8,
 * no duplicate keys, bounded depth and size), but every number with a fraction or an exponent
 * becomes a string holding its exact text, so that no amount ever passes through a double.
 * KS_ERR_INVALID / KS_ERR_LIMIT with a reason in `why` (never a copy of the input).
 */
KS_MUST_USE int ks_receipt_json_load(const char *body, size_t len, json_t **out, char *why,
                                     size_t whylen);

/*
 * Validates a receipt or correction document (`doc`, the request's "receipt" or "correction"
 * object) for `operation`, with `company_defaults` (the shop's configured company, may be NULL)
 * filling the company fields the request leaves out, at time `now_ms` (the VAT rates in force).
 * On success `*out` is the normalised document (new reference): the same shape, amounts as
 * canonical decimal strings, defaults filled in. On failure KS_ERR_INVALID with the path of the
 * field at fault in `field` (e.g. "receipt.items[2].vat.sum") and a sentence in `why`.
 */
KS_MUST_USE int ks_receipt_validate(const char *operation, const json_t *doc,
                                    const json_t *company_defaults, int64_t now_ms,
                                    json_t **out, char *field, size_t fieldlen, char *why,
                                    size_t whylen);

/* A normalised document as ATOL's JSON: the decimal strings of the amount fields (price, sum,
 * total, quantity) as JSON numbers. New reference, NULL when out of memory. */
json_t *ks_receipt_public_doc(const json_t *doc);

/* "dd.MM.yyyy HH:mm:ss" in Moscow time (UTC+3, the time zone ATOL's protocol uses) into `out`
 * (at least 20 bytes). */
void ks_receipt_timestamp(int64_t ms, char *out, size_t cap);

/* Registers the receipt processor with `e`. */
KS_MUST_USE int ks_receipt_register(struct ks_engine *e);

/*
 * Start args (built by the API from a validated request, or by the invoice processor for an
 * automatic receipt):
 *   {"operation", "externalID"?, "partyID", "shopID", "timestamp", "document": {...normalised},
 *    "group": {"id", "adapter", "options", "credentialsRef"?, "offline": [operations]},
 *    "revision", "callbackUrl"?, "invoice"?: {"invoiceID","paymentID","refundID"?}}
 * The machine's id is the receipt's uuid. It asks the "fiscal" unit at once.
 *
 * Calls:   {"op": "get"}  reply = the public receipt.
 * Signals: task results of unit "fiscal"; "timeout"; "callback" (the register's operator called
 *          back on the session's tag); "journal_synced" {"result": intent} from the journal's
 *          synchroniser; "repair" {"payload": {"op": "fail", "reason"}}.
 */

/* --- automatic receipts (receipt_auto.c; pure) --------------------------------------------- */

/* The register group `id` (configuration `g`) as a receipt pins it: {"id", "adapter", "options",
 * "offline": [operations], "credentialsRef"?}. New reference, NULL when out of memory. */
json_t *ks_receipt_group_pin(const char *id, const json_t *g);

/* A shop's automatic receipts, for an invoice to pin: {"group", "company"?, "item"?}, or NULL
 * when the shop (`shop`, its configuration object) has none or its register group is missing or
 * inactive in `doc`. New reference. */
json_t *ks_receipt_auto_settings(const json_t *doc, const json_t *shop);

/* The start args (without partyID, shopID, revision, invoice) of the automatic receipt of
 * `operation` ("sell" or "sell_refund") for `amount` minor units of `invoice` (the public
 * Invoice): its cart when the amount is the cart's whole, else one line named after the
 * product; VAT from each line's taxMode (else the shop's default); the payer's e-mail or phone
 * (else the shop's e-mail). Validated as any receipt: KS_ERR_INVALID with the reason in `why`. */
KS_MUST_USE int ks_receipt_auto_args(const json_t *settings, const char *operation,
                                     const json_t *invoice, const json_t *payer, int64_t amount,
                                     int64_t now_ms, json_t **args, char *why, size_t whylen);

/* The public receipt (the API's reply) of a receipt machine's state. New reference. */
json_t *ks_receipt_public(const json_t *state);

/* Folds one event of a receipt machine into `state`, which the caller owns (NULL: the state
 * before the first event), and returns it (NULL on memory trouble); an event without a type
 * changes nothing. Replaying a machine's events this way gives its state right after any one of
 * them, as the processor had it (the ReceiptsTopic webhook bodies use it, with
 * ks_receipt_public). Pure; not safe on one `state` from two threads. */
json_t *ks_receipt_apply(json_t *state, const json_t *event);

#endif
