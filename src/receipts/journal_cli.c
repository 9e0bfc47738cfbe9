/*
 * journal_cli.c — `kassa receipts journal verify | export` (contract: journal.h,
 * ks_journal_cli; docs/receipts-journal.md "Command line"). The receipts module's `receipts`
 * command hands argv from "journal" on to ks_journal_cli.
 *
 * The command's own options (--group, --file, --out) are taken out first; the rest are the
 * platform's flags (--store, --vault-master-key-file, --log-*), parsed by ks_cli_open. The vault
 * is opened as the vault module's commands open it, without its sweeper.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/platform.h"
#include "receipts/journal_int.h"
#include "vault/vault.h"

#define CLI_ARGS_MAX 256 /* words after "journal" */

static int usage(const char *msg)
{
    fprintf(stderr, "kassa: receipts journal: %s\n\nusage:\n%s", msg, KS_JOURNAL_CLI_USAGE);
    return KS_EXIT_USAGE;
}

/* The command's own options, taken out before the platform parses the rest. */
enum { OPT_GROUP, OPT_FILE, OPT_OUT, OPTS_N };
static const char *const opt_names[OPTS_N] = {"--group", "--file", "--out"};

/* Which own option the word `w` is (OPTS_N: none) and, for "--name=V", where V starts. */
static int own_option(const char *w, const char **inline_value)
{
    *inline_value = NULL;
    for (int o = 0; o < OPTS_N; o++) {
        size_t n = strlen(opt_names[o]);
        if (strncmp(w, opt_names[o], n) == 0 && (w[n] == '\0' || w[n] == '=')) {
            *inline_value = w[n] == '=' ? w + n + 1 : NULL;
            return o;
        }
    }
    return OPTS_N;
}

struct cli_args {
    bool export;
    const char *group, *file, *out;
    char *rest[CLI_ARGS_MAX + 1]; /* "journal", the subcommand, then the platform's flags */
    int rest_n;
};

static int parse(int argc, char **argv, struct cli_args *a)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (strcmp(sub, "verify") != 0 && strcmp(sub, "export") != 0) {
        char msg[120];
        snprintf(msg, sizeof(msg), "expected verify or export, got '%.40s'", sub);
        return usage(msg);
    }
    if (argc > CLI_ARGS_MAX)
        return usage("too many arguments");
    a->export = strcmp(sub, "export") == 0;
    a->rest[a->rest_n++] = argv[0];
    a->rest[a->rest_n++] = argv[1];
    const char **slot[OPTS_N] = {&a->group, &a->file, &a->out};
    for (int i = 2; i < argc; i++) {
        const char *v;
        int o = own_option(argv[i], &v);
        if (o == OPTS_N) {
            a->rest[a->rest_n++] = argv[i];
            continue;
        }
        /* "--out" then another flag: a missing value, not the flag taken as one */
        if (!v)
            v = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[++i] : "";
        *slot[o] = v;
    }
    a->rest[a->rest_n] = NULL;
    if (a->group && !jr_id_valid(a->group))
        return usage("--group needs a register group id ([A-Za-z0-9._-], 1 to 64 characters)");
    if (a->export && (!a->group || a->file))
        return usage("export takes --group G (and --out F), not --file");
    if (!a->export && !a->group == !a->file)
        return usage("verify takes either --group G or --file F");
    if ((a->file && !a->file[0]) || (a->out && (!a->out[0] || !a->export)))
        return usage("--file and --out need a path, and --out goes with export");
    return KS_EXIT_OK;
}

/* Opens the journal on the node's store with the vault (no sweeper). */
static int journal_on(struct ks_node *node, struct ks_vault **vault, struct ks_journal **j)
{
    struct ks_vault_options vo = {.store = ks_node_store(node),
                                  .master_key_path = ks_node_flag(node, "vault-master-key-file"),
                                  .log = ks_node_log(node)};
    char why[512] = "";
    /* `why` names paths, never key material (vault.h) */
    if (ks_vault_open(&vo, vault, why, sizeof(why)) != KS_OK) {
        fprintf(stderr, "kassa: receipts journal: cannot open the vault: %s\n", why);
        return KS_EXIT_FAILURE;
    }
    if (ks_journal_open(ks_node_store(node), *vault, ks_node_log(node), j, why, sizeof(why)) !=
        KS_OK) {
        fprintf(stderr, "kassa: receipts journal: %s\n", why);
        return KS_EXIT_FAILURE;
    }
    return KS_EXIT_OK;
}

/* Prints the outcome of a verification and gives the exit code. */
static int report(int rc, const char *what, int64_t entries, const char *why)
{
    if (rc == KS_OK) {
        printf("receipts journal: %s: %lld entries verified\n", what, (long long)entries);
        return KS_EXIT_OK;
    }
    if (rc == KS_ERR_INVALID)
        fprintf(stderr, "kassa: receipts journal: %s: %s\n", what, why);
    else if (rc == KS_ERR_NOT_FOUND)
        fprintf(stderr, "kassa: receipts journal: %s: no journal for that group in this store\n",
                what);
    else
        fprintf(stderr, "kassa: receipts journal: %s: %s\n", what, ks_err_text(rc));
    return KS_EXIT_FAILURE;
}

static int run(struct ks_journal *j, const struct cli_args *a)
{
    char why[KS_JOURNAL_WHY_BYTES] = "", what[600];
    int64_t entries = 0, bad_seq = 0;
    if (!a->export && a->group) {
        snprintf(what, sizeof(what), "group %s", a->group);
        int rc = ks_journal_verify(j, a->group, &entries, &bad_seq, why, sizeof(why));
        return report(rc, what, entries, why);
    }
    if (!a->export) {
        bool std = strcmp(a->file, "-") == 0;
        FILE *in = std ? stdin : fopen(a->file, "r");
        if (!in) {
            fprintf(stderr, "kassa: receipts journal: cannot open %s\n", a->file);
            return KS_EXIT_FAILURE;
        }
        char group[KS_JOURNAL_GROUP_BYTES_MAX + 1];
        int rc = ks_journal_verify_file(j, in, group, &entries, &bad_seq, why, sizeof(why));
        if (!std)
            fclose(in);
        snprintf(what, sizeof(what), "%.400s%s%s", a->file, group[0] ? ", group " : "", group);
        return report(rc, what, entries, why);
    }
    bool std = !a->out || strcmp(a->out, "-") == 0;
    FILE *out = std ? stdout : fopen(a->out, "w");
    if (!out) {
        fprintf(stderr, "kassa: receipts journal: cannot create %s\n", a->out);
        return KS_EXIT_FAILURE;
    }
    int rc = ks_journal_export(j, a->group, out);
    if (!std && fclose(out) != 0 && rc == KS_OK)
        rc = KS_ERR_IO;
    if (rc == KS_OK)
        return KS_EXIT_OK;
    snprintf(what, sizeof(what), "export of group %s", a->group);
    return report(rc, what, 0, "");
}

int ks_journal_cli(int argc, char **argv)
{
    struct cli_args *a = calloc(1, sizeof(*a));
    if (!a) {
        fprintf(stderr, "kassa: receipts journal: out of memory\n");
        return KS_EXIT_FAILURE;
    }
    struct ks_node *node = NULL;
    struct ks_vault *vault = NULL;
    struct ks_journal *j = NULL;
    int rc = parse(argc, argv, a);
    /* the vault's master key is in memory from here on */
    if (rc == KS_EXIT_OK)
        rc = ks_platform_core_dumps_off();
    if (rc == KS_EXIT_OK)
        rc = ks_cli_open(a->rest_n, a->rest, 1, KS_CLI_STORE, &node);
    if (rc == KS_EXIT_OK)
        rc = journal_on(node, &vault, &j);
    if (rc == KS_EXIT_OK)
        rc = run(j, a);
    ks_journal_close(j);
    ks_vault_close(vault);
    if (node)
        ks_cli_close(node);
    free(a);
    return rc;
}
