/*
 * platform.h — the `kassa` command line built from the modules (platform/module.h): the flag
 * table, usage, `serve`, `migrate`, and what a module's own command needs to parse flags and
 * open the store. Design note: docs/modules.md; the flags: docs/configuration.md.
 */
#ifndef KS_PLATFORM_PLATFORM_H
#define KS_PLATFORM_PLATFORM_H

#include <stdio.h>

#include "platform/module.h"

#define KASSA_VERSION "0.1.0"

/* Exit codes (printed by `kassa help`). */
enum {
    KS_EXIT_OK = 0,      /* success; serve: stopped by SIGINT/SIGTERM and shut down cleanly */
    KS_EXIT_FAILURE = 1, /* a runtime failure: store, listener, token file, log file */
    KS_EXIT_USAGE = 2,   /* unknown command, bad flag or environment variable */
};

/* A command a module adds to `kassa` (`kassa vault rotate`). `run` gets argv from the command's
 * name on and returns an exit code; it parses its flags with ks_cli_open. */
struct ks_command {
    const char *name;  /* the first word after `kassa` */
    const char *usage; /* usage lines for `kassa help`, each "  NAME ...  what it does\n" */
    int (*run)(int argc, char **argv);
};

/* The whole command line: dispatches argv[1] to serve, migrate, a module's command, version or
 * help. Returns the process's exit code. */
int ks_platform_main(int argc, char **argv);

/* Turns core dumps off for a process that holds card data, keys and tokens (the dumpable flag
 * and RLIMIT_CORE). KS_EXIT_OK, or KS_EXIT_FAILURE after printing why. */
int ks_platform_core_dumps_off(void);

/* The default text of flag `name` (the core's or any module's); "" for an unknown name. */
const char *ks_platform_flag_default(const char *name);

/* Prints the usage (commands, every module's flags, exit codes) to `f`. */
void ks_platform_usage(FILE *f);

/* What ks_cli_open opens besides parsing the flags. */
#define KS_CLI_LOG 1u   /* the log (--log-file, --log-level) */
#define KS_CLI_STORE 3u /* the log and the store (--store; migrations applied) */

/*
 * For a module's command: parses `argv` (flags after the command's words; `skip` words are
 * skipped first), then opens what `what` asks for. On success `*out` is a node without an
 * engine (ks_node_engine is NULL) to pass to the module's functions; release it with
 * ks_cli_close. Returns KS_EXIT_OK, KS_EXIT_USAGE (after printing why and the usage) or
 * KS_EXIT_FAILURE (after printing why).
 */
int ks_cli_open(int argc, char **argv, int skip, unsigned what, struct ks_node **out);
void ks_cli_close(struct ks_node *n);

#endif
