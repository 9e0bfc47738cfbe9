/*
 * modules/vault.c — the card vault module (vault/vault.h): the vault itself with its CVV and
 * card sweeps, the unit that releases the cards of spent and expired payment resources, and
 * `kassa vault rotate | sweep-cvv`. Design: docs/vault.md.
 *
 * Service it provides: "vault" (struct ks_vault *), for the payments module.
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "platform/platform.h"
#include "vault/vault.h"

static const struct ks_flag vault_flags[] = {
    {.name = "vault-master-key-file", .env = "KASSA_VAULT_MASTER_KEY_FILE",
     .dflt = "./var/vault-master.key", .opts = KS_FLAG_NONEMPTY,
     .help = "card vault master key; created (mode 0600) if missing, shared by every node "
             "(docs/vault.md)",
     .doc = "the card vault's master key: 64 hex digits, created (mode 0600) if missing; refused "
            "if group or others can read it; every node on one store needs the same file "
            "([vault.md](vault.md)). Also used by `kassa vault rotate` and `kassa vault "
            "sweep-cvv`"},
};

/* Opens the vault on the node's store; `sweep` starts its sweeper thread (serve only). */
static int vault_start_on(struct ks_node *node, int sweep, struct ks_vault **out, char *why,
                          size_t whylen)
{
    struct ks_vault_options vo = {
        .store = ks_node_store(node),
        .master_key_path = ks_node_flag(node, "vault-master-key-file"),
        .log = ks_node_log(node),
        .cvv_sweep_interval_ms = sweep ? KS_VAULT_CVV_SWEEP_INTERVAL_MS_DEFAULT : 0};
    char vwhy[512] = "";
    /* `vwhy` names the path, never key material (vault.h). */
    int rc = ks_vault_open(&vo, out, vwhy, sizeof(vwhy));
    if (rc != KS_OK)
        snprintf(why, whylen, "cannot open the vault: %s", vwhy);
    return rc;
}

static int vault_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_vault *v = NULL;
    int rc = vault_start_on(node, 1, &v, why, whylen);
    if (rc != KS_OK)
        return rc;
    *ctx = v;
    struct ks_unit u; /* releases the cards of spent and expired payment resources */
    ks_vault_unit(v, &u);
    if ((rc = ks_engine_register_unit(ks_node_engine(node), &u)) != KS_OK)
        return rc;
    return ks_node_provide(node, "vault", v);
}

static void vault_close(void *ctx)
{
    ks_vault_close(ctx);
}

/* `kassa vault rotate | sweep-cvv [flags]` */
static int vault_command(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    int rotate = strcmp(sub, "rotate") == 0;
    if (!rotate && strcmp(sub, "sweep-cvv") != 0) {
        fprintf(stderr, "kassa: vault: expected rotate or sweep-cvv, got '%s'\n\n", sub);
        ks_platform_usage(stderr);
        return KS_EXIT_USAGE;
    }
    int rc = ks_platform_core_dumps_off(); /* rotation decrypts every card */
    if (rc != KS_EXIT_OK)
        return rc;
    struct ks_node *node = NULL;
    if ((rc = ks_cli_open(argc, argv, 1, KS_CLI_STORE, &node)) != KS_EXIT_OK)
        return rc;
    struct ks_vault *vault = NULL;
    char why[600] = "";
    if (vault_start_on(node, 0, &vault, why, sizeof(why)) != KS_OK) {
        ks_logf(ks_node_log(node), KS_LOG_ERROR, NULL, "%s", why);
        fprintf(stderr, "kassa: %s\n", why);
        rc = KS_EXIT_FAILURE;
        goto out;
    }
    int64_t n = 0;
    int vrc = rotate ? ks_vault_rotate(vault, &n) : ks_vault_sweep_cvv(vault, ks_now_ms(), &n);
    printf(rotate ? "vault rotate: %lld records re-encrypted\n"
                  : "vault sweep-cvv: %lld CVVs erased\n",
           (long long)n);
    if (vrc != KS_OK) {
        fprintf(stderr, "kassa: vault %s: %s (see the log)\n", sub, ks_err_text(vrc));
        rc = KS_EXIT_FAILURE;
    }
out:
    ks_vault_close(vault);
    ks_cli_close(node);
    return rc;
}

static const struct ks_command vault_commands[] = {
    {"vault",
     "  vault rotate     new card data key; re-encrypt every card under it\n"
     "  vault sweep-cvv  erase the CVVs older than their lifetime\n",
     vault_command},
};

const struct ks_module ks_vault_module = {
    .name = "vault",
    .schema = &ks_vault_schema,
    .summary = "the card vault: encrypted cards, payment resources, key rotation",
    .flags = vault_flags,
    .flags_n = sizeof(vault_flags) / sizeof(vault_flags[0]),
    .commands = vault_commands,
    .commands_n = 1,
    .open = vault_open,
    .close = vault_close,
};
