/*
 * modules/ledger.c — the ledger module (ledger/ledger.h): the double-entry ledger and its unit
 * (posting plans emitted by processors), its admin routes (/admin/v1/ledger) and `kassa ledger
 * verify`. Design: docs/ledger.md.
 *
 * Service it provides: "ledger" (struct ks_ledger *).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "ledger/ledger.h"
#include "platform/platform.h"

static int ledger_module_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_ledger_options lo = {.log = ks_node_log(node)};
    struct ks_ledger *l = NULL;
    int rc = ks_ledger_open(ks_node_store(node), &lo, &l);
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot open the ledger");
        return rc;
    }
    *ctx = l;
    struct ks_unit u;
    ks_ledger_unit(l, 0, &u);
    if ((rc = ks_engine_register_unit(ks_node_engine(node), &u)) != KS_OK)
        return rc;
    return ks_node_provide(node, "ledger", l);
}

static int ledger_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                         struct ks_http_router *admin, char *why, size_t whylen)
{
    return admin ? ks_api_ledger_routes(admin, ctx) : KS_OK;
}

static void ledger_module_close(void *ctx)
{
    ks_ledger_close(ctx);
}

/* `kassa ledger verify [flags]`: the ledger's invariants (docs/ledger.md). */
static int ledger_command(int argc, char **argv)
{
    enum { EXIT_LEDGER_BROKEN = 3 };
    const char *sub = argc > 1 ? argv[1] : "";
    if (strcmp(sub, "verify") != 0) {
        fprintf(stderr, "kassa: ledger: expected verify, got '%s'\n\n", sub);
        ks_platform_usage(stderr);
        return KS_EXIT_USAGE;
    }
    struct ks_node *node = NULL;
    int rc = ks_cli_open(argc, argv, 1, KS_CLI_STORE, &node);
    if (rc != KS_EXIT_OK)
        return rc;
    struct ks_ledger *ledger = NULL;
    struct ks_ledger_verify_report *report = calloc(1, sizeof(*report));
    int lrc = report ? ks_ledger_open(ks_node_store(node), NULL, &ledger) : KS_ERR_NOMEM;
    if (lrc == KS_OK)
        lrc = ks_ledger_verify(ledger, report);
    if (lrc != KS_OK) {
        fprintf(stderr, "kassa: ledger verify: %s\n", ks_err_text(lrc));
        rc = KS_EXIT_FAILURE;
        goto out;
    }
    ks_ledger_verify_print(report, stdout);
    if (report->problems_n > 0) {
        fprintf(stderr, "kassa: ledger verify: %zu problem(s), listed above\n",
                report->problems_n);
        rc = EXIT_LEDGER_BROKEN;
    }
out:
    free(report);
    ks_ledger_close(ledger);
    ks_cli_close(node);
    return rc;
}

static const struct ks_command ledger_commands[] = {
    {"ledger", "  ledger verify    check the ledger's invariants; exit 3 naming what is wrong\n",
     ledger_command},
};

const struct ks_module ks_ledger_module = {
    .name = "ledger",
    .schema = &ks_ledger_schema,
    .summary = "the double-entry ledger: accounts, posting plans",
    .commands = ledger_commands,
    .commands_n = 1,
    .open = ledger_module_open,
    .routes = ledger_routes,
    .close = ledger_module_close,
};
