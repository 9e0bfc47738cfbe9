/*
 * modules/receipts.c — the receipts module: fiscal receipts (seed 001). The receipt processor
 * (receipts/receipt.h), the "fiscal" unit that registers receipts with cash-register adapters and
 * keeps an offline journal (receipts/fiscal_unit.h), the receipts API (/v1/receipts and ATOL
 * Online v5's paths under /atol/v5) and the list index's relay. Design: docs/receipts.md.
 *
 * Runs the adapters provided as "adapter.fiscal.<name>" by the modules before it (the emulator),
 * and its own ATOL Online v5 client. Needs the "vault" service: register groups' credentials
 * (`kassa receipts credentials put NAME`) are sealed by it.
 */
#include <stdlib.h>
#include <string.h>

#include "platform/platform.h"
#include "receipts/atol.h"
#include "receipts/credentials.h"
#include "receipts/journal.h"
#include "receipts/receipts_int.h"
#include "store/sql.h"
#include "units/session.h"

extern const struct ks_sql_schema ks_receipts_schema;

static const struct ks_flag receipts_flags[] = {
    {.name = "fiscal-workers", .env = "KASSA_FISCAL_WORKERS", .dflt = "8", .kind = KS_FLAG_INT,
     .min = 1, .max = KS_UNIT_WORKERS_MAX,
     .help = "threads registering receipts with cash registers",
     .doc = "threads registering receipts with cash registers (the \"fiscal\" unit)",
     .dflt_doc = "8"},
};

/* The fiscal unit's hooks into the offline journal. */
static int journal_append_of(void *hooks, const char *group, const char *receipt_id,
                             const json_t *entry, int64_t now_ms, int64_t *seq)
{
    struct ks_receipts *r = hooks;
    return ks_journal_append(r->journal, group, receipt_id, entry, now_ms, seq);
}

static int journal_pending_of(void *hooks, const char *group, int64_t *count)
{
    struct ks_receipts *r = hooks;
    int64_t oldest;
    return ks_journal_pending(r->journal, group, count, &oldest);
}

/* The fiscal unit's hook for a group's credentialsRef: the secret stored under that name. */
static int credentials_of(void *hooks, const char *ref, char *buf, size_t cap, size_t *len)
{
    struct ks_receipts *r = hooks;
    return ks_fiscal_credentials_get(r->store, r->vault, ref, buf, cap, len);
}

static int receipts_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_vault *vault = ks_node_service(node, "vault");
    if (!vault) {
        snprintf(why, whylen, "needs the vault module, opened before it");
        return KS_ERR_INVALID;
    }
    struct ks_receipts *r = calloc(1, sizeof(*r));
    if (!r)
        return KS_ERR_NOMEM;
    *ctx = r;
    r->engine = ks_node_engine(node);
    r->store = ks_node_store(node);
    r->log = ks_node_log(node);
    r->vault = vault;
    int rc = ks_sql_migrate(r->store, &ks_receipts_schema, why, whylen);
    if (rc == KS_OK)
        rc = ks_fiscal_credentials_migrate(r->store, why, whylen);
    if (rc == KS_OK)
        rc = ks_journal_open(r->store, r->vault, r->log, &r->journal, why, whylen);
    if (rc != KS_OK)
        return rc;
    if ((rc = ks_receipt_register(r->engine)) != KS_OK)
        return rc;
    struct ks_fiscal_unit_options fo = {.workers = (int)ks_node_flag_int(node, "fiscal-workers"),
                                        .log = r->log,
                                        .public_url = ks_node_flag(node, "public-url"),
                                        .hooks = r,
                                        .journal_append = journal_append_of,
                                        .journal_pending = journal_pending_of,
                                        .credentials = credentials_of};
    if ((rc = ks_fiscal_unit_create(&fo, &r->unit)) != KS_OK)
        return rc;
    void *adapters[KS_SESSION_ADAPTERS_MAX];
    size_t n = ks_node_services(node, KS_FISCAL_ADAPTER_SERVICE_PREFIX, adapters,
                                KS_SESSION_ADAPTERS_MAX);
    if (n > KS_SESSION_ADAPTERS_MAX) {
        snprintf(why, whylen, "more than %d cash-register adapters", KS_SESSION_ADAPTERS_MAX);
        return KS_ERR_LIMIT;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = ks_fiscal_unit_add_adapter(r->unit, adapters[i])) != KS_OK)
            return rc;
    if ((rc = ks_atol_create(r->log, &r->atol)) != KS_OK ||
        (rc = ks_fiscal_unit_add_adapter(r->unit, ks_atol_adapter(r->atol))) != KS_OK)
        return rc;
    struct ks_unit u;
    ks_fiscal_unit_descriptor(r->unit, &u);
    r->callbacks_allow_loopback = ks_node_flag_on(node, "webhook-allow-loopback");
    r->callbacks_allow_private = ks_node_flag_on(node, "webhook-allow-private");
    if ((rc = ks_engine_register_unit(r->engine, &u)) != KS_OK ||
        (rc = ks_receipts_index_open(r)) != KS_OK || (rc = ks_receipts_callbacks_open(r)) != KS_OK)
        return rc;
    return ks_node_add_route_roles(node, ks_receipts_route_roles, ks_receipts_route_roles_n);
}

/* The offline journals are synchronised once the engine runs. */
static int receipts_start(void *ctx, struct ks_node *node, char *why, size_t whylen)
{
    struct ks_receipts *r = ctx;
    int rc = ks_journal_sync_start(r, &r->sync);
    if (rc != KS_OK)
        snprintf(why, whylen, "cannot start the offline journals' synchroniser");
    return rc;
}

static void receipts_stopping(void *ctx)
{
    struct ks_receipts *r = ctx;
    if (!r)
        return;
    ks_journal_sync_stop(r->sync);
    r->sync = NULL;
}

static int receipts_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                           struct ks_http_router *admin, char *why, size_t whylen)
{
    return ks_receipts_routes(ctx, pub, admin);
}

static void receipts_serving(void *ctx, struct ks_node *node)
{
    struct ks_receipts *r = ctx;
    char url[256];
    ks_node_public_url(node, url, sizeof(url));
    ks_fiscal_unit_set_public_url(r->unit, url);
}

static void receipts_close(void *ctx)
{
    struct ks_receipts *r = ctx;
    if (!r)
        return;
    ks_journal_sync_stop(r->sync);
    ks_fiscal_unit_free(r->unit);
    ks_atol_free(r->atol);
    ks_journal_close(r->journal);
    free(r);
}

/* `kassa receipts atol-login ...` */
static int receipts_command(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (strcmp(sub, "atol-login") == 0)
        return ks_receipts_atol_login_cli(argc - 1, argv + 1);
    if (strcmp(sub, "credentials") == 0)
        return ks_fiscal_credentials_cli(argc - 1, argv + 1);
    if (strcmp(sub, "journal") == 0)
        return ks_journal_cli(argc - 1, argv + 1);
    fprintf(stderr, "kassa: receipts: expected atol-login, credentials or journal, got '%s'\n\n",
            sub);
    ks_platform_usage(stderr);
    return KS_EXIT_USAGE;
}

static const struct ks_command receipts_commands[] = {
    {"receipts",
     "  receipts atol-login add LOGIN PARTY [SHOP...]  a login for ATOL Online v5's token flow\n"
     "  receipts atol-login list | delete LOGIN        the logins; remove one and its tokens\n"
     "  receipts credentials put NAME | list | delete NAME  a register group's secret (stdin)\n"
     KS_JOURNAL_CLI_USAGE,
     receipts_command},
};

const struct ks_module ks_receipts_module = {
    .name = "receipts",
    .summary = "fiscal receipts: /v1/receipts, ATOL Online v5's API, cash registers, offline "
               "journal",
    .flags = receipts_flags,
    .flags_n = sizeof(receipts_flags) / sizeof(receipts_flags[0]),
    .schema = &ks_receipts_schema,
    .commands = receipts_commands,
    .commands_n = 1,
    .open = receipts_open,
    .start = receipts_start,
    .routes = receipts_routes,
    .stopping = receipts_stopping,
    .serving = receipts_serving,
    .close = receipts_close,
};
