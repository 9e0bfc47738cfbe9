/*
 * auth_cli.h — the `kassa token` command (docs/auth.md, "Development tokens").
 */
#ifndef KS_AUTH_AUTH_CLI_H
#define KS_AUTH_AUTH_CLI_H

#include <stdio.h>

/*
 * Runs `kassa token issue --party P [--shop S]... [--role R]... [--ttl-s N] [--subject NAME]
 * [--signing-key-file FILE] [--jwt-audience AUD]`: prints on stdout one merchant token signed
 * with kassa's own key (created if missing), which `kassa serve --dev-trust-own-key` accepts.
 * `argv[0]` is "token". Returns the process exit code: 0, 1 (the key file cannot be read or made)
 * or 2 (usage; the usage goes to stderr).
 */
int ks_auth_cli_token(int argc, char **argv);

/* Prints the command's usage to `f`. */
void ks_auth_cli_usage(FILE *f);

#endif
