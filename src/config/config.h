/*
 * config.h — the revisioned domain configuration: parties and shops, contracts and terms (fees,
 * limits), providers and terminals, routing rules, and room for later sections.
 *
 * The document's shape, its validation rules and the fee rounding rule are in
 * docs/configuration-domain.md; the design in ../shared/DESIGN.md ("Domain configuration").
 *
 * The configuration is one engine machine, (KS_CONFIG_NS, KS_CONFIG_MACHINE_ID), driven by the
 * processor that ks_config_register installs. Each accepted change is one event
 *   {"type":"revised","revision":N,"document":{...},"author":"...","reason":"...","at":MS}
 * and the machine's state is the current revision only:
 *   {"revision":N,"document":{...},"author":"...","reason":"...","at":MS}
 * Earlier revisions are read back from their events. A change names the revision it is based
 * on; a stale base is refused (no lost updates). Every document is validated before it is
 * accepted, by the caller's side (for a full error message) and again inside the processor.
 *
 * Three groups of functions:
 *   - lifecycle and storage (take the engine): register, bootstrap, put, current, revision...
 *     They block on the store; safe from any thread once the engine runs.
 *   - validation (pure): ks_config_validate.
 *   - lookups on a document or on pieces of one (pure, no engine): shop, terms, fees, limits,
 *     terminals, routing candidates. They return NEW objects (deep copies) or plain values, so
 *     a payment can pin what it uses: copy the revision number and the returned objects into
 *     its own state, and later revisions cannot change it.
 *
 * Money: amounts are int64_t minor units of an ISO 4217 currency, never negative here, and
 * every computation is overflow-checked. Percentages are exact decimal strings ("2.5"), never
 * floating point.
 */
#ifndef KS_CONFIG_CONFIG_H
#define KS_CONFIG_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/limits.h"
#include "core/log.h"
#include "engine/engine.h"

/* --- names and limits ---------------------------------------------------------------------
 *
 * The module's bounds live here rather than in core/limits.h because nothing else uses them;
 * the one that depends on the engine's bounds is checked against it below. */

#define KS_CONFIG_NS "config"         /* the engine namespace */
#define KS_CONFIG_MACHINE_ID "domain" /* the one configuration machine */

/* A document, serialised compactly. One event carries a whole document, plus its author and
 * reason (each character of which may take 6 bytes escaped), within KS_EVENT_BYTES_MAX. */
#define KS_CONFIG_DOCUMENT_BYTES_MAX (56 * 1024)
#define KS_CONFIG_AUTHOR_BYTES_MAX 128
#define KS_CONFIG_REASON_BYTES_MAX 1000
_Static_assert(KS_CONFIG_DOCUMENT_BYTES_MAX +
                       6 * (KS_CONFIG_AUTHOR_BYTES_MAX + KS_CONFIG_REASON_BYTES_MAX) + 256 <=
                   KS_EVENT_BYTES_MAX,
               "a revision event must fit in one engine event");

#define KS_CONFIG_ID_BYTES_MAX 64       /* every id: [A-Za-z0-9._-]{1,64} */
#define KS_CONFIG_ITEMS_MAX 1000        /* entries of one collection (parties, shops, terms...) */
#define KS_CONFIG_LIST_ITEMS_MAX 256    /* items of one list (currencies, shops in a predicate) */
#define KS_CONFIG_RULES_MAX 256         /* routing rules */
#define KS_CONFIG_NAME_BYTES_MAX 100    /* names */
#define KS_CONFIG_TEXT_BYTES_MAX 1000   /* descriptions, URLs */
#define KS_CONFIG_REF_BYTES_MAX 128     /* credentialsRef */
#define KS_CONFIG_PRIORITY_MAX 1000000  /* routing priority and weight: 0..this */
#define KS_CONFIG_CANDIDATES_MAX 32     /* routing candidates returned for one payment */
#define KS_CONFIG_PER_INVOICE_MAX 32    /* ceiling of terms.perInvoice.*Max (the machine's too) */
#define KS_CONFIG_HISTORY_PAGE_MAX 1000 /* revisions listed at once */
#define KS_CONFIG_FILE_BYTES_MAX (1024 * 1024) /* a document file read by the command line */
#define KS_CONFIG_WHY_BYTES 512                /* a good size for the `why` buffers below */
#define KS_CONFIG_CODE_BYTES 64                /* error codes written by ks_config_shop_check */

/* --- the processor and the machine -------------------------------------------------------- */

/* Registers the "config" processor (before ks_engine_run). Errors: those of
 * ks_engine_register (KS_ERR_CONFLICT if already registered, KS_ERR_LIMIT when full). */
KS_MUST_USE int ks_config_register(struct ks_engine *e);

/* The sandbox configuration embedded in the binary at build time (config/sandbox.json), as
 * NUL-terminated JSON text. Static storage; never freed. */
const char *ks_config_sandbox(void);

/* Installs the sandbox configuration as revision 1 when no configuration exists yet, and logs
 * which revision is current. Safe when several nodes start at once: a node that loses the race
 * just reads the winner's revision. `*revision` (may be NULL) gets the current revision.
 * Errors: KS_ERR_INTERNAL if the embedded sandbox does not validate (a build defect), store and
 * engine errors otherwise. `log` may be NULL. */
KS_MUST_USE int ks_config_bootstrap(struct ks_engine *e, struct ks_log *log, int64_t *revision);

/* The same with another first document: `initial` (borrowed; NULL: the sandbox configuration) is
 * validated and installed as revision 1 when no configuration exists, with "`origin`, installed
 * at first start" as its reason (origin: e.g. the file it came from). A document that does not
 * validate is KS_ERR_REJECTED with the validator's reason in `why`; nothing is stored. */
KS_MUST_USE int ks_config_bootstrap_with(struct ks_engine *e, struct ks_log *log,
                                         const json_t *initial, const char *origin,
                                         int64_t *revision, char *why, size_t whylen);

/* The embedded sandbox configuration, parsed (new reference). KS_OK, or an error only for a
 * build defect. */
KS_MUST_USE int ks_config_sandbox_doc(json_t **out);

/* True if some provider of `doc` uses adapter `adapter` ("sandbox", "http"), whatever its
 * status. kassa serve turns the sandbox acquirer (its adapter and its routes) on only when the
 * configuration it starts with uses it. */
bool ks_config_uses_adapter(const json_t *doc, const char *adapter);

/* Reads and parses a document file of at most KS_CONFIG_FILE_BYTES_MAX bytes (not validated:
 * storing it does that). Errors with a sentence naming the path in `why`: KS_ERR_IO (cannot open
 * or read), KS_ERR_LIMIT (too large), KS_ERR_INVALID (not JSON), KS_ERR_NOMEM. */
KS_MUST_USE int ks_config_load_file(const char *path, json_t **out, char *why, size_t whylen);

/* One revision as stored. `document` is an owned reference (NULL in history listings). */
struct ks_config_rev {
    int64_t revision;
    int64_t created_at_ms;
    char author[KS_CONFIG_AUTHOR_BYTES_MAX + 1];
    char reason[KS_CONFIG_REASON_BYTES_MAX + 1];
    json_t *document;
};
/* Drops the document reference and clears `r`. NULL is allowed. */
void ks_config_rev_release(struct ks_config_rev *r);

/* The current document (new reference, the caller's to change or keep) and its revision.
 * KS_ERR_NOT_FOUND when no configuration exists (before bootstrap). Reads the store, so it
 * sees other nodes' changes; it parses the whole document, so a hot path should keep the
 * document it got for as long as the revision it pinned. */
KS_MUST_USE int ks_config_current(struct ks_engine *e, json_t **doc, int64_t *revision);

/* The document of revision `revision` (>= 1; new reference). KS_ERR_NOT_FOUND if there is no
 * such revision. A revision never changes once written. */
KS_MUST_USE int ks_config_revision(struct ks_engine *e, int64_t revision, json_t **doc);

/* Revision `revision` with its metadata, or the current one when `revision` is 0. `*out` is
 * filled (release it with ks_config_rev_release) only on KS_OK. KS_ERR_NOT_FOUND if absent,
 * KS_ERR_INVALID for a negative revision. */
KS_MUST_USE int ks_config_get(struct ks_engine *e, int64_t revision, struct ks_config_rev *out);

/* Lists revisions after `after` in ascending order, without documents: at most `limit`
 * (1..KS_CONFIG_HISTORY_PAGE_MAX) entries into `out` (an array of at least `limit`), their
 * count in `*n`; `*current` (may be NULL) gets the current revision (0 when none exists). An
 * empty page and KS_OK when no configuration exists. */
KS_MUST_USE int ks_config_history(struct ks_engine *e, int64_t after, size_t limit,
                                  struct ks_config_rev *out, size_t *n, int64_t *current);

/*
 * Stores `doc` as a new revision based on `base_revision` (0: the first, when none exists).
 * `author` (1..KS_CONFIG_AUTHOR_BYTES_MAX bytes, e.g. "admin", "cli:alice") and `reason`
 * (0..KS_CONFIG_REASON_BYTES_MAX bytes, may be NULL) are recorded with it; neither may hold
 * control characters. `doc` is borrowed.
 *
 * Returns, with a one-line explanation in `why` on every error:
 *   KS_OK               `*revision` = the new revision (base_revision + 1)
 *   KS_ERR_CONFLICT     base_revision is not the current revision; `*revision` = the current
 *                       one (0 when none exists)
 *   KS_ERR_REJECTED     the document is invalid; `why` names the bad path, e.g.
 *                       `$.parties.P1.shops.S1.currency: unknown currency "RUX"`
 *   KS_ERR_INVALID      bad author, reason or base_revision
 *   other               store or engine errors (nothing was stored)
 * Returns after the new revision is durable. Thread-safe: concurrent puts on the same base
 * give one KS_OK and conflicts.
 */
KS_MUST_USE int ks_config_put(struct ks_engine *e, int64_t base_revision, const json_t *doc,
                              const char *author, const char *reason, int64_t *revision, char *why,
                              size_t whylen);

/* --- validation (pure) -------------------------------------------------------------------- */

/* Checks a whole document (docs/configuration-domain.md lists every rule). KS_OK if valid;
 * KS_ERR_REJECTED with `path: problem` in `why` for the first problem found (documents are
 * checked in a fixed order, so the same document always gives the same message);
 * KS_ERR_NOMEM when out of memory. Thread-safe; `doc` is only read. */
KS_MUST_USE int ks_config_validate(const json_t *doc, char *why, size_t whylen);

/* True if `s` is a valid configuration id: 1..KS_CONFIG_ID_BYTES_MAX of [A-Za-z0-9._-]. */
bool ks_config_id_valid(const char *s);

/* True if `s` is a card payment system kassa knows: visa, mastercard, maestro, mir, unionpay,
 * jcb, amex, dinersclub, discover, elo, rupay (lower case, the names of the public API). */
bool ks_config_payment_system_valid(const char *s);

/* --- fees (pure) ---------------------------------------------------------------------------
 *
 * A fee spec is {"fixed"?: N, "percent"?: "P", "min"?: N, "max"?: N} (N in minor units, P a
 * decimal string with at most 4 decimals, 0..100). The fee of an amount A is
 *
 *     fee = fixed + round_half_up(A * P / 100),   then   fee = max(fee, min),  min(fee, max)
 *
 * computed exactly in integers: P is read as parts per million (P% * 10^4, so "2.5" is 25000)
 * and the percentage part is (A * ppm + 500000) / 1000000 with integer division — a half minor
 * unit rounds up, anything below rounds down. Absent parts count as 0 (fixed, percent) or as no
 * bound (min, max). The fee may exceed A (a fixed fee on a tiny payment); callers decide what
 * that means.
 *
 * A fee table maps currency -> payment system -> fee spec, "*" standing for any. The rule for
 * (currency C, payment system S) is the first present of [C][S], [C]["*"], ["*"][S], ["*"]["*"].
 */

/* Parses a percentage such as "2.5", "0.0125" or "100" into parts per million (25000, 125,
 * 1000000). KS_ERR_INVALID unless it is 1-3 digits, optionally a dot and 1-4 digits, no sign,
 * no exponent, no spaces, at most 100. */
KS_MUST_USE int ks_config_percent_parse(const char *text, int64_t *ppm);

/* The fee of `amount` (>= 0) under `spec` (above). KS_ERR_INVALID for a negative amount or a
 * malformed spec (a validated document has none), KS_ERR_LIMIT if the fee would overflow
 * int64_t. `*fee` is written only on KS_OK. */
KS_MUST_USE int ks_config_fee(const json_t *spec, int64_t amount, int64_t *fee);

/* Picks the rule of fee `table` for (currency, payment_system); `*spec` is borrowed from
 * `table`. KS_ERR_NOT_FOUND if no rule applies (or `table` is NULL). */
KS_MUST_USE int ks_config_fee_select(const json_t *table, const char *currency,
                                     const char *payment_system, const json_t **spec);

/* ks_config_fee_select then ks_config_fee. KS_ERR_NOT_FOUND if no rule applies: a validated
 * document has a rule in terms "fees" and terminal "fees" for every currency they accept;
 * "refundFees" may have none, which means no refund fee. */
KS_MUST_USE int ks_config_fee_for(const json_t *table, const char *currency,
                                  const char *payment_system, int64_t amount, int64_t *fee);

/* --- lookups (pure) ----------------------------------------------------------------------- */

/*
 * Resolves a shop in `doc` into a new object that holds everything a payment needs to pin:
 *   {"partyID", "partyStatus", "shopID", "shop": {...}, "contractID", "contractStatus",
 *    "termsID", "terms": {...}}
 * ("shop" and "terms" are deep copies; statuses are filled in, "active" when absent.)
 * `party_id` may be NULL (any party); when given, the shop must belong to it. KS_ERR_NOT_FOUND
 * if there is no such shop (for that party); KS_ERR_NOMEM.
 */
KS_MUST_USE int ks_config_shop(const json_t *doc, const char *party_id, const char *shop_id,
                               json_t **out);

/* Checks that a resolved shop (ks_config_shop) may take a payment of `amount` in `currency`:
 * the party, shop and contract are active, the currency is the shop's, and the amount lies in
 * the terms' limits. KS_OK, or KS_ERR_REJECTED with the public API's error code in `code`
 * ("invalidPartyStatus", "invalidShopStatus", "invalidContractStatus", "invoiceTermsViolated")
 * and a sentence in `why`. */
KS_MUST_USE int ks_config_shop_check(const json_t *shop, const char *currency, int64_t amount,
                                     char code[KS_CONFIG_CODE_BYTES], char *why, size_t whylen);

/* The amount limits of `terms` for `currency` (inclusive). KS_ERR_NOT_FOUND if the terms do
 * not accept the currency. */
KS_MUST_USE int ks_config_terms_limits(const json_t *terms, const char *currency, int64_t *min,
                                       int64_t *max);

/* True if `terms` accept cards of `payment_system`. */
bool ks_config_terms_accept(const json_t *terms, const char *payment_system);

/* Resolves a terminal into a new object:
 *   {"terminalID", "terminal": {...}, "providerID", "provider": {... without "terminals"}}
 * (deep copies; "status" filled in). KS_ERR_NOT_FOUND if absent. */
KS_MUST_USE int ks_config_terminal(const json_t *doc, const char *terminal_id, json_t **out);

/* Risk levels, as the inspector will grade a payment. */
enum ks_config_risk { KS_CONFIG_RISK_LOW = 0, KS_CONFIG_RISK_HIGH = 1, KS_CONFIG_RISK_FATAL = 2 };
/* "low" | "high" | "fatal" -> the level, -1 for anything else. */
int ks_config_risk_parse(const char *s);

/* What routing needs to know about a payment. Strings are borrowed. */
struct ks_config_route_query {
    const char *party_id;       /* required */
    const char *shop_id;        /* required */
    const char *currency;       /* required */
    int64_t amount;             /* >= 0 */
    const char *payment_system; /* required */
    const char *card_country;   /* ISO 3166-1 alpha-3 of the card's issuer, or NULL if unknown
                                   (then rules with a cardCountries predicate do not match) */
    enum ks_config_risk risk;
};

/*
 * The routing candidates of a payment: a new array of
 *   {"terminalID", "providerID", "adapter", "priority", "weight", "rule" (its index),
 *    "ruleID"?, "terminal": {...}, "provider": {... without "terminals"}}
 * for every rule whose predicates match, whose terminal and provider are active and whose
 * terminal takes the currency and payment system. Order: priority descending, then weight
 * descending, then rule order; a terminal appears once (its best rule). At most
 * KS_CONFIG_CANDIDATES_MAX entries. A fatal risk gets no candidates. Empty array when nothing
 * matches. KS_ERR_INVALID for a query missing a required field; KS_ERR_NOMEM.
 */
KS_MUST_USE int ks_config_route(const json_t *doc, const struct ks_config_route_query *q,
                                json_t **candidates);

/* --- the command line --------------------------------------------------------------------- */

/* `kassa config get|put|validate|history ...` (main.c passes argv from "config" on and the
 * default store URL). Prints usage and returns 2 on bad usage; see docs/configuration-domain.md
 * for the commands and exit codes. */
int ks_config_cli(int argc, char **argv, const char *store_default);

#endif
