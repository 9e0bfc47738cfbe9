/*
 * invoice.h — the invoice processor: invoices, payments inside them, refunds inside payments
 * (DESIGN.md "Payments"; docs/payments.md).
 *
 * One machine per invoice (namespace "invoice"). Its events are the public API's invoice changes
 * (type = changeType: InvoiceCreated, InvoiceStatusChanged, PaymentStarted, PaymentStatusChanged,
 * PaymentInteractionRequested, PaymentInteractionCompleted, RefundStarted, RefundStatusChanged)
 * plus internal ones whose type starts with "internal." (sessions, ledger plans, deadlines),
 * which the public events endpoint does not show.
 *
 * The processor is pure. Everything it needs from configuration (terms, routes, cash flows) is
 * resolved by the API layer and passed in, and pinned in the machine's state: a payment keeps the
 * route and cash flow it started with whatever later revisions say.
 *
 * Side effects run as tasks:
 *   unit "ledger"     {"op":"hold"|"commit"|"rollback","plan","batch","postings"}
 *   unit "acquiring"  a provider session (see units/acquiring.h): authorize, capture, cancel,
 *                     refund, inquire, callback
 *   unit "vault"      {"op":"release","resource"}: delete a payment resource's card (vault.h)
 * Payment phases: holding -> authorizing -> (processed) -> capturing | cancelling -> done;
 * a failure rolls the ledger plan back; a refund: holding -> refunding -> done.
 */
#ifndef KS_DOMAIN_INVOICE_H
#define KS_DOMAIN_INVOICE_H

#include "engine/engine.h"

#define KS_INVOICE_NS "invoice"
#define KS_INVOICE_PAYMENTS_MAX 32      /* attempts within one invoice: paymentsMax ceiling */
#define KS_INVOICE_RESOURCES_MAX 32     /* cards within one invoice: paymentResourcesMax ceiling */
#define KS_INVOICE_PAYMENTS_DEFAULT 10  /* terms.perInvoice.paymentsMax when not set */
#define KS_INVOICE_RESOURCES_DEFAULT 10 /* terms.perInvoice.paymentResourcesMax when not set */
#define KS_INVOICE_REFUNDS_MAX 32       /* refunds within one payment */
#define KS_INVOICE_SESSION_ATTEMPTS_MAX 5 /* inquiries of an unknown outcome before giving up */

/* In an invoice's state: the payment with public id `pid` (borrowed), or NULL. */
json_t *ks_invoice_payment(const json_t *state, const char *pid);
/* In a payment of that state: the refund with public id `rid` (borrowed), or NULL. */
json_t *ks_invoice_refund(const json_t *payment, const char *rid);

/* Folds one event of an invoice machine into `state`, which the caller owns (NULL: the state
 * before the first event), and returns it (NULL on memory trouble). Replaying a machine's events
 * this way gives its state right after any one of them (webhook bodies use it). */
json_t *ks_invoice_apply(json_t *state, const json_t *event);

/* Registers the invoice processor with `e`. */
KS_MUST_USE int ks_invoice_register(struct ks_engine *e);

/*
 * Start args (built by the API from a validated request):
 *   {"invoice": {id, shopID, createdAt, dueDate, amount, currency, product, description?, cart?,
 *                metadata, externalID?},       -- the public Invoice without status
 *    "partyID": "...", "dueAt": ms, "revision": N, "terms": {...pinned shop terms...}}
 *
 * Calls:
 *   {"op":"add_payment_resource","validUntilMs"}  an unpaid invoice reserves a disposable payment
 *                                             resource; reply {"resource":{"id","validUntilMs"}},
 *                                             id "{invoice}.{n}". At most the pinned terms'
 *                                             perInvoice.paymentResourcesMax (default 10), then
 *                                             KS_ERR_LIMIT "paymentResourcesExceeded". When it
 *                                             expires unused, a "vault" task releases its card.
 *   {"op":"rescind","reason"}                 unpaid and nothing in flight -> cancelled
 *   {"op":"fulfill","reason"}                 paid -> fulfilled
 *   {"op":"create_payment","payment":{flow, payer, externalID?, metadata?}, "resource": id,
 *    "routes":[{provider, terminal, adapter, options}...],   candidates in order (cascade)
 *    "cashflow":[posting...], "revision": N}
 *                                             spends the resource (unknown, spent or expired:
 *                                             KS_ERR_REJECTED "invalidPaymentToolToken"); at most
 *                                             perInvoice.paymentsMax attempts (default 10), then
 *                                             KS_ERR_LIMIT "paymentAttemptsExceeded". The payer
 *                                             must not carry the token: events name the resource.
 *                                             Once the payment's authorization is over (processed
 *                                             or failed) a "vault" task releases the card.
 *   {"op":"capture","payment","amount"?,"reason","cashflow"?}  processed hold -> capturing
 *   {"op":"cancel","payment","reason"}        processed hold -> cancelling
 *   {"op":"create_refund","payment","refund":{amount?, reason?, externalID?},"cashflow":[...]}
 *   {"op":"get"}                              reply = state
 * Replies carry the public object concerned ({"invoice"}, {"payment"}, {"refund"}).
 * A posting is {"from","to","amount","currency"} with account ids.
 */

#endif
