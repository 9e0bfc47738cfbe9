/*
 * auth_cli.c — `kassa token issue`: a merchant token for development, signed with kassa's own
 * key (auth_cli.h; docs/auth.md). Flags beat their environment variables, which beat defaults,
 * as everywhere in kassa's command line.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "auth/auth_cli.h"
#include "core/parse.h"
#include "core/clock.h"
#include "core/log.h"

#define CLI_TTL_S_DEFAULT 3600
#define CLI_SUBJECT_DEFAULT "dev"
#define CLI_SIGNING_KEY_DEFAULT "./var/signing.key"
#define CLI_AUDIENCE_DEFAULT "kassa"

enum { EXIT_OK_ = 0, EXIT_RUNTIME = 1, EXIT_USAGE_ = 2 };

enum {
    O_PARTY = 1,
    O_SHOP,
    O_ROLE,
    O_TTL_S,
    O_SUBJECT,
    O_SIGNING_KEY_FILE,
    O_JWT_AUDIENCE,
    O_HELP
};

void ks_auth_cli_usage(FILE *f)
{
    fprintf(f,
            "usage: kassa token issue --party P [--shop S]... [--role R]... [--ttl-s N]\n"
            "                         [--subject NAME] [--signing-key-file FILE]\n"
            "                         [--jwt-audience AUD]\n"
            "\n"
            "Prints a merchant token signed with kassa's own key, for development: `kassa serve`\n"
            "accepts it only with --dev-trust-own-key (KASSA_DEV_TRUST_OWN_KEY=1).\n"
            "\n"
            "  --party P                party id (required)\n"
            "  --shop S                 restrict the token to shop S (repeatable, up to %d;\n"
            "                           none: every shop of the party)\n"
            "  --role R                 grant role R (repeatable): invoices:read, invoices:write,\n"
            "                           payments:write, refunds:write, webhooks:read,\n"
            "                           webhooks:write; none given: all six\n"
            "  --ttl-s N                lifetime in seconds, default %d\n"
            "  --subject NAME           the token's \"sub\", default %s\n"
            "  --signing-key-file FILE  KASSA_SIGNING_KEY_FILE, default %s (created if missing)\n"
            "  --jwt-audience AUD       KASSA_JWT_AUDIENCE, default %s\n"
            "\n"
            "The roles granted are listed on stderr; stdout is the token alone.\n"
            "\n"
            "exit codes: 0 printed, 1 the signing key cannot be read or created, 2 usage error\n",
            KS_AUTH_SHOPS_MAX, CLI_TTL_S_DEFAULT, CLI_SUBJECT_DEFAULT, CLI_SIGNING_KEY_DEFAULT,
            CLI_AUDIENCE_DEFAULT);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "kassa token: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fprintf(stderr, "\n\n");
    ks_auth_cli_usage(stderr);
    return EXIT_USAGE_;
}

/* True if `role` is one of the merchant roles (auth.h). */
static bool role_known(const char *role)
{
    for (int i = 0; i < KS_AUTH_MERCHANT_ROLES_N; i++)
        if (strcmp(role, ks_auth_merchant_roles[i]) == 0)
            return true;
    return false;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v ? v : dflt;
}

int ks_auth_cli_token(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing subcommand%s (try: kassa token issue --party P)", NULL);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        ks_auth_cli_usage(stdout);
        return EXIT_OK_;
    }
    if (strcmp(argv[1], "issue") != 0)
        return usage_error("unknown subcommand: %s", argv[1]);

    const char *party = NULL, *subject = NULL, *ttl_text = NULL;
    const char *key_file = NULL, *audience = NULL;
    const char *shops[KS_AUTH_SHOPS_MAX], *roles[KS_AUTH_MERCHANT_ROLES_N];
    int shops_n = 0, roles_n = 0;
    static const struct option longs[] = {
        {"party", required_argument, NULL, O_PARTY},
        {"shop", required_argument, NULL, O_SHOP},
        {"role", required_argument, NULL, O_ROLE},
        {"ttl-s", required_argument, NULL, O_TTL_S},
        {"subject", required_argument, NULL, O_SUBJECT},
        {"signing-key-file", required_argument, NULL, O_SIGNING_KEY_FILE},
        {"jwt-audience", required_argument, NULL, O_JWT_AUDIENCE},
        {"help", no_argument, NULL, O_HELP},
        {0},
    };
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    optind = 1;
    opterr = 0;
    for (;;) {
        int ch = getopt_long(sub_argc, sub_argv, "+", longs, NULL);
        if (ch == -1)
            break;
        switch (ch) {
        case O_PARTY: party = optarg; break;
        case O_SUBJECT: subject = optarg; break;
        case O_TTL_S: ttl_text = optarg; break;
        case O_SIGNING_KEY_FILE: key_file = optarg; break;
        case O_JWT_AUDIENCE: audience = optarg; break;
        case O_SHOP:
            if (shops_n >= KS_AUTH_SHOPS_MAX)
                return usage_error("too many --shop flags%s", NULL);
            shops[shops_n++] = optarg;
            break;
        case O_ROLE:
            if (roles_n >= KS_AUTH_MERCHANT_ROLES_N)
                return usage_error("too many --role flags%s", NULL);
            if (!role_known(optarg))
                return usage_error("--role %s is not a merchant role (docs/auth.md lists them)",
                                   optarg);
            roles[roles_n++] = optarg;
            break;
        case O_HELP: ks_auth_cli_usage(stdout); return EXIT_OK_;
        default:
            return usage_error("unknown flag or missing value: %s",
                               optind - 1 < sub_argc ? sub_argv[optind - 1] : "?");
        }
    }
    if (optind < sub_argc)
        return usage_error("unexpected argument: %s", sub_argv[optind]);
    if (!party)
        return usage_error("--party is required%s", NULL);
    if (roles_n == 0) { /* roles are deny by default: grant an explicit, printed set */
        for (int i = 0; i < KS_AUTH_MERCHANT_ROLES_N; i++)
            roles[roles_n++] = ks_auth_merchant_roles[i];
    }
    if (!subject)
        subject = CLI_SUBJECT_DEFAULT;
    if (!key_file)
        key_file = env_or("KASSA_SIGNING_KEY_FILE", CLI_SIGNING_KEY_DEFAULT);
    if (!audience)
        audience = env_or("KASSA_JWT_AUDIENCE", CLI_AUDIENCE_DEFAULT);
    if (!key_file[0])
        return usage_error("--signing-key-file must not be empty%s", NULL);
    int64_t ttl_s = CLI_TTL_S_DEFAULT;
    if (ttl_text && ks_parse_int64(ttl_text, 1, KS_AUTH_TTL_S_MAX, &ttl_s) != KS_OK)
        return usage_error("--ttl-s must be a whole number of seconds from 1 to 34560000%s", NULL);

    struct ks_log lg;
    ks_log_init(&lg, stderr, KS_LOG_ERROR); /* only failures: stdout is the token */
    struct ks_auth_options opt = {.audience = audience, .signing_key_path = key_file, .log = &lg};
    struct ks_auth *a = NULL;
    char why[256] = "";
    int rc = ks_auth_open(&opt, &a, why, sizeof(why));
    if (rc == KS_ERR_INVALID && strstr(why, "audience")) {
        ks_log_release(&lg);
        return usage_error("--jwt-audience: %s", why);
    }
    if (rc != KS_OK) {
        fprintf(stderr, "kassa token: %s\n", why);
        ks_log_release(&lg);
        return EXIT_RUNTIME;
    }
    char token[KS_AUTH_TOKEN_BYTES_MAX + 1];
    int64_t now_ms = ks_now_ms();
    rc = ks_auth_issue_merchant_token_shops(a, subject, party, shops, shops_n, roles, roles_n,
                                            now_ms, now_ms + ttl_s * 1000, token, sizeof(token));
    ks_auth_close(a);
    ks_log_release(&lg);
    if (rc == KS_ERR_INVALID)
        return usage_error("%s", "--subject, --party, --shop or --role is malformed (ids: "
                                 "[A-Za-z0-9._-]{1,64}; subject and roles: printable ASCII "
                                 "without spaces)");
    if (rc != KS_OK) {
        fprintf(stderr, "kassa token: cannot issue the token: %s\n", ks_err_text(rc));
        return EXIT_RUNTIME;
    }
    printf("%s\n", token);
    if (fflush(stdout) != 0)
        return EXIT_RUNTIME;
    fprintf(stderr, "kassa token: granted roles:");
    for (int i = 0; i < roles_n; i++)
        fprintf(stderr, " %s", roles[i]);
    fprintf(stderr, "\n");
    return EXIT_OK_;
}
