/*
 * modules/remote.c — the remote adapters module (units/adapters/remote.h): the adapter kind
 * "http", which forwards each session step as JSON over HTTP to an adapter process in any
 * language, and `kassa adapter check URL`, which drives such a process through the protocol's
 * cases. Design: docs/adapter-protocol.md, "Remote adapters".
 *
 * Service it provides: "adapter.acquiring.http" (a const struct ks_adapter *), which the
 * payments module's acquiring unit runs for providers configured with "adapter": "http".
 */
#include <stdio.h>

#include "platform/platform.h"
#include "units/adapter_check.h"
#include "units/adapters/remote.h"

static int remote_module_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_remote *r = NULL;
    int rc = ks_remote_open(ks_node_log(node), &r);
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot start the HTTP client for remote adapters");
        return rc;
    }
    *ctx = r;
    /* The service table holds mutable pointers; the acquiring unit only reads the adapter. */
    return ks_node_provide(node, "adapter.acquiring." KS_REMOTE_ADAPTER_NAME,
                           (void *)ks_remote_adapter(r));
}

static void remote_module_close(void *ctx)
{
    ks_remote_close(ctx);
}

static const struct ks_command remote_commands[] = {
    {"adapter",
     "  adapter check URL  run the adapter protocol's cases against a remote adapter\n",
     ks_adapter_check_cli},
};

const struct ks_module ks_remote_module = {
    .name = "remote",
    .summary = "remote adapters: provider adapters in other processes, over HTTP/JSON",
    .commands = remote_commands,
    .commands_n = 1,
    .open = remote_module_open,
    .close = remote_module_close,
};
