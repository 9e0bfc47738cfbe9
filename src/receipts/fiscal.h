/*
 * fiscal.h — the contract between the receipt machine's "fiscal" unit and cash-register adapters
 * (the emulator, the ATOL Online v5 client, remote adapters). Design note: docs/receipts.md.
 *
 * A cash-register adapter is a provider adapter on the platform's session contract
 * (units/adapter.h): a module provides it as the service "adapter.fiscal.<name>" (a const
 * struct ks_adapter *) and the receipts module's fiscal unit runs it. One session registers one
 * receipt:
 *
 *   unit        "fiscal"
 *   operation   the receipt's kind, as ATOL Online v5 names it: sell | sell_refund | buy |
 *               buy_refund | sell_correction | buy_correction
 *   step        "start" (register it), "inquire" (what became of it? after a sleep or a suspend
 *               that ran out), "callback" (the register's operator called back: `callback` is
 *               the body it sent)
 *   session_id  the receipt's id (its uuid): the same for every step and every retry, and the
 *               idempotency key towards the register (ATOL: the external_id it is sent with)
 *   subject     {"ns": "receipt", "id": <receipt id>, "within": {}}
 *   provider_id the register group's id (configuration: registerGroups.<id>)
 *   terminal_id NULL
 *   options     the group's "options" object from configuration (no secrets), with
 *               "credentials" added by the unit when the group names a credentialsRef: the
 *               secret text the operator stored under that name (never logged, never in a
 *               result, an event or an error)
 *   payload     {"external_id": <receipt id>, "timestamp": "dd.MM.yyyy HH:mm:ss",
 *                "receipt": {...}}           for sell, sell_refund, buy, buy_refund
 *               {"external_id", "timestamp", "correction": {...}}   for the corrections
 *               The receipt/correction object is ATOL Online v5's, already validated by kassa
 *               (receipt_validate.c): client, company, items, payments, vats, total, ...
 *
 * Answers (intents):
 *   finish success   registered: trx = {"id": the register's document id,
 *                    "extra": {"payload": {ATOL v5 report payload: "fn_number", "shift_number",
 *                    "fiscal_document_number", "fiscal_document_attribute",
 *                    "fiscal_receipt_number", "ecr_registration_number", "receipt_datetime",
 *                    "ofd_receipt_url", "fns_site", "total"}}}
 *   finish failure   refused for good: failure_code "fiscal_failed:<provider's code>" and the
 *                    provider's text as the reason; or KS_FISCAL_UNREACHABLE (below)
 *   sleep            not ready yet (ATOL's "wait", error 34): ask again with "inquire"
 *   suspend          wait for the operator's callback on the session's callback tag
 *   KS_ERR_RETRY     a transient failure worth retrying soon (the unit backs off)
 *
 * KS_FISCAL_UNREACHABLE: the register (or its operator) could not be reached, so the receipt
 * was not registered — or, when that cannot be known (a request sent and no answer), a replay
 * with the same session id registers it at most once. The fiscal unit then keeps the receipt
 * in the group's offline journal when the group allows that operation offline.
 */
#ifndef KS_RECEIPTS_FISCAL_H
#define KS_RECEIPTS_FISCAL_H

#define KS_FISCAL_UNIT "fiscal"
#define KS_FISCAL_ADAPTER_SERVICE_PREFIX "adapter.fiscal."
#define KS_FISCAL_UNREACHABLE "register_unreachable"
#define KS_FISCAL_FAILED_PREFIX "fiscal_failed"
#define KS_RECEIPT_NS "receipt"

#endif
