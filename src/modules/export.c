/*
 * modules/export.c — the export module (export/export.h): completed operations written
 * periodically as CSV and JSON Lines files under --export-dir (its relay "export" records them,
 * a thread writes the windows), and the commands `kassa export run` and `kassa export verify`.
 * Operators' guide: docs/export.md.
 *
 * Uses no service; reads the invoice machines' states through the engine, so it comes after
 * the payments module in the list.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "engine/engine.h"
#include "engine/relay.h"
#include "export/export.h"
#include "platform/platform.h"

static const struct ks_flag export_flags[] = {
    {.name = "export-dir",
     .env = "KASSA_EXPORT_DIR",
     .dflt = "",
     .kind = KS_FLAG_TEXT,
     .help = "write completed operations as export files in this directory (empty: off)",
     .doc = "directory the export files go to: completed operations as CSV and JSON Lines with a "
            "manifest per file set, each operation exactly once ([export.md](export.md)). Empty "
            "turns the export off. Run it on one node of a shared store",
     .dflt_doc = "empty (off)"},
    {.name = "export-period-s",
     .env = "KASSA_EXPORT_PERIOD_S",
     .dflt = "3600",
     .kind = KS_FLAG_INT,
     .min = 1,
     .max = 7LL * 24 * 3600,
     .help = "length of an export window in seconds; windows end on multiples of it",
     .doc = "length of an export window in seconds: windows end on multiples of it (UTC), and "
            "one file set is written per window (a writer that was down catches up with one)",
     .dflt_doc = "3600 (hourly)"},
    {.name = "export-grace-ms",
     .env = "KASSA_EXPORT_GRACE_MS",
     .dflt = "10000",
     .kind = KS_FLAG_INT,
     .min = 0,
     .max = 3600LL * 1000,
     .help = "wait after a window's end before writing it",
     .doc = "how long after a window's end its file set waits, so that operations finished "
            "just before the end are recorded in it; it is then written once the relay has "
            "caught up with the outbox",
     .dflt_doc = "10000 (10 s)"},
};

static int export_module_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    const char *dir = ks_node_flag(node, "export-dir");
    if (!dir[0])
        return KS_OK; /* off */
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot create the export directory %.200s: %s", dir,
                 strerror(errno));
        return KS_ERR_IO;
    }
    struct ks_export_options o = {.dir = dir,
                                  .period_ms = ks_node_flag_int(node, "export-period-s") * 1000,
                                  .grace_ms = ks_node_flag_int(node, "export-grace-ms"),
                                  .log = ks_node_log(node)};
    struct ks_export *ex = NULL;
    int rc = ks_export_open(ks_node_store(node), ks_node_engine(node), &o, &ex);
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot open the export: %s", ks_err_text(rc));
        return rc;
    }
    *ctx = ex;
    struct ks_relay r;
    ks_export_relay(ex, &r);
    if ((rc = ks_engine_register_relay(ks_node_engine(node), &r)) != KS_OK)
        snprintf(why, whylen, "cannot register the export relay: %s", ks_err_text(rc));
    return rc;
}

static int export_module_start(void *ctx, struct ks_node *node, char *why, size_t whylen)
{
    int rc = ctx ? ks_export_start(ctx) : KS_OK;
    if (rc != KS_OK)
        snprintf(why, whylen, "cannot start the export writer: %s", ks_err_text(rc));
    return rc;
}

static void export_module_close(void *ctx)
{
    ks_export_close(ctx);
}

/* --- commands ------------------------------------------------------------------------------ */

enum { EXIT_EXPORT_BROKEN = 3 };

static int usage(const char *msg)
{
    fprintf(stderr, "kassa: export: %s\n\n", msg);
    ks_platform_usage(stderr);
    return KS_EXIT_USAGE;
}

/* The value of --name V or --name=V at argv[*i] (advancing *i past it), or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc)
        return "";
    return argv[++*i];
}

static int time_arg(const char *flag, const char *v, int64_t *ms)
{
    char msg[300];
    if (!v) {
        snprintf(msg, sizeof(msg), "export run needs %s TIME (RFC 3339, e.g. 2026-12-01T00:00:00Z)",
                 flag);
        return usage(msg);
    }
    if (ks_time_parse_rfc3339(v, ms) != 0) {
        snprintf(msg, sizeof(msg),
                 "%s: '%.60s' is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)", flag, v);
        return usage(msg);
    }
    return KS_EXIT_OK;
}

/* `kassa export run --from T --to T [flags] DIR` */
static int export_run(int argc, char **argv)
{
    const char *from = NULL, *to = NULL, *dir = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    if (!rest)
        return KS_EXIT_FAILURE;
    int rest_n = 0, rc = KS_EXIT_OK;
    rest[rest_n++] = argv[0];
    rest[rest_n++] = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--from")) != NULL)
            from = v;
        else if ((v = opt_value(argc, argv, &i, "--to")) != NULL)
            to = v;
        else if (i == argc - 1 && argv[i][0] != '-')
            dir = argv[i];
        else
            rest[rest_n++] = argv[i];
    }
    int64_t from_ms = 0, to_ms = 0;
    if ((rc = time_arg("--from", from, &from_ms)) != KS_EXIT_OK ||
        (rc = time_arg("--to", to, &to_ms)) != KS_EXIT_OK)
        goto out;
    if (!dir || !dir[0]) {
        rc = usage("export run needs the directory to write to, last");
        goto out;
    }
    struct ks_node *node = NULL;
    if ((rc = ks_cli_open(rest_n, rest, 1, KS_CLI_STORE, &node)) != KS_EXIT_OK)
        goto out;
    char why[512] = "";
    struct ks_export_run_report rep;
    int erc = ks_sql_migrate(ks_node_store(node), &ks_export_schema, why, sizeof(why));
    if (erc == KS_OK)
        erc = ks_export_run_range(ks_node_store(node), dir, from_ms, to_ms, ks_now_ms(), &rep, why,
                                  sizeof(why));
    if (erc != KS_OK) {
        fprintf(stderr, "kassa: export run: %s\n", why[0] ? why : ks_err_text(erc));
        rc = erc == KS_ERR_INVALID || erc == KS_ERR_CONFLICT ? KS_EXIT_USAGE : KS_EXIT_FAILURE;
    } else {
        printf("file set %06lld: %lld operation(s) in [%s, %s) written to %s\n", (long long)rep.seq,
               (long long)rep.rows, from, to, dir);
    }
    ks_cli_close(node);
out:
    free(rest);
    return rc;
}

/* `kassa export verify DIR` */
static int export_verify(int argc, char **argv)
{
    if (argc != 3 || argv[2][0] == '-' || !argv[2][0])
        return usage("export verify takes one argument: the directory to check");
    const char *dir = argv[2];
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "kassa: export verify: %s is not a directory\n", dir);
        return KS_EXIT_FAILURE;
    }
    struct ks_export_verify_report *r = calloc(1, sizeof(*r));
    int erc = r ? ks_export_verify(dir, r) : KS_ERR_NOMEM;
    int rc = KS_EXIT_OK;
    if (erc != KS_OK) {
        fprintf(stderr, "kassa: export verify: %s: %s\n", dir, ks_err_text(erc));
        rc = KS_EXIT_FAILURE;
        goto out;
    }
    size_t kept = r->problems_n < KS_EXPORT_VERIFY_PROBLEMS_MAX ? r->problems_n
                                                                : KS_EXPORT_VERIFY_PROBLEMS_MAX;
    for (size_t i = 0; i < kept; i++)
        printf("problem: %s\n", r->problems[i]);
    printf("%lld file set(s), %lld operation(s) checked in %s\n", (long long)r->files,
           (long long)r->rows, dir);
    if (r->problems_n > 0) {
        fprintf(stderr, "kassa: export verify: %zu problem(s)%s\n", r->problems_n,
                r->problems_n > kept ? ", the first listed above" : ", listed above");
        rc = EXIT_EXPORT_BROKEN;
    }
out:
    free(r);
    return rc;
}

static int export_command(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (strcmp(sub, "run") == 0)
        return export_run(argc, argv);
    if (strcmp(sub, "verify") == 0)
        return export_verify(argc, argv);
    char msg[120];
    snprintf(msg, sizeof(msg), "expected run or verify, got '%.40s'", sub);
    return usage(msg);
}

static const struct ks_command export_commands[] = {
    {"export",
     "  export run --from T --to T DIR\n"
     "                   write the operations of [T, T) (RFC 3339) as the next file set of DIR\n"
     "  export verify DIR\n"
     "                   check DIR's export files; exit 3 naming what is wrong\n",
     export_command},
};

const struct ks_module ks_export_module = {
    .name = "export",
    .summary = "export files: completed operations as CSV and JSON Lines, each exactly once",
    .flags = export_flags,
    .flags_n = sizeof(export_flags) / sizeof(export_flags[0]),
    .schema = &ks_export_schema,
    .commands = export_commands,
    .commands_n = 1,
    .open = export_module_open,
    .start = export_module_start,
    .close = export_module_close,
};
