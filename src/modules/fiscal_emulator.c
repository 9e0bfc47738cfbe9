/*
 * modules/fiscal_emulator.c — the cash-register emulator module (receipts/emulator.h): the
 * test-mode register that documents, numbers and signs receipts without a tax office, and its
 * admin routes (/admin/v1/receipts/emulator/...). Design: docs/receipts-emulator.md.
 *
 * Service it provides: "adapter.fiscal.emulator" (a const struct ks_adapter *), which the
 * receipts module's fiscal unit runs for register groups with "adapter": "emulator". Needs the
 * "vault" service (the registers' signing keys are sealed by it).
 */
#include <stdlib.h>

#include "platform/platform.h"
#include "receipts/emulator.h"
#include "receipts/fiscal.h"

static int emulator_module_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_vault *vault = ks_node_service(node, "vault");
    if (!vault) {
        snprintf(why, whylen, "needs the vault module, opened before it");
        return KS_ERR_INVALID;
    }
    struct ks_emulator *em = NULL;
    int rc = ks_emulator_open(ks_node_store(node), vault, ks_node_log(node), &em, why, whylen);
    if (rc != KS_OK)
        return rc;
    *ctx = em;
    /* The service table holds mutable pointers; the fiscal unit only reads the adapter. */
    return ks_node_provide(node, KS_FISCAL_ADAPTER_SERVICE_PREFIX KS_EMULATOR_ADAPTER_NAME,
                           (void *)ks_emulator_adapter(em));
}

static int emulator_module_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                                  struct ks_http_router *admin, char *why, size_t whylen)
{
    return admin ? ks_emulator_admin_routes(admin, ctx) : KS_OK;
}

static void emulator_module_close(void *ctx)
{
    ks_emulator_close(ctx);
}

const struct ks_module ks_fiscal_emulator_module = {
    .name = "fiscal_emulator",
    .summary = "the cash-register emulator: a test-mode register for fiscal receipts",
    .schema = &ks_fiscal_emulator_schema,
    .open = emulator_module_open,
    .routes = emulator_module_routes,
    .close = emulator_module_close,
};
