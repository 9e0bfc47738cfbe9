/*
 * platform_int.h — the node's insides, shared by platform/node.c (flags, services, usage) and
 * platform/serve.c (serve, migrate); not for modules, which use platform/module.h.
 */
#ifndef KS_PLATFORM_PLATFORM_INT_H
#define KS_PLATFORM_PLATFORM_INT_H

#include <pthread.h>

#include "api/api.h"
#include "core/log.h"
#include "platform/platform.h"

#define KS_NODE_FLAGS_MAX 96 /* the flags of the core and every module together */
#define KS_NODE_PUBLIC_URL_BYTES_MAX 255

/* One flag of the table: its definition, who declared it, and its checked value. */
struct ks_node_flag {
    const struct ks_flag *def;
    const char *owner;  /* "core" or a module's name */
    const char *value;  /* borrowed from argv, the environment or the definition */
    int64_t number;     /* KS_FLAG_INT: the value; KS_FLAG_SWITCH: 0 or 1 */
};

struct ks_node_service {
    const char *name;
    void *service;
};

struct ks_node_role_table {
    const struct ks_api_route_role *rows;
    size_t n;
};

struct ks_node {
    struct ks_node_flag flags[KS_NODE_FLAGS_MAX];
    size_t flags_n;
    struct ks_log log;
    bool log_open;
    struct ks_store *store;
    struct ks_engine *engine;
    struct ks_auth *auth;
    struct ks_node_service services[KS_NODE_SERVICES_MAX];
    size_t services_n;
    struct ks_node_role_table roles[KS_NODE_ROLE_TABLES_MAX];
    size_t roles_n;
    pthread_mutex_t url_mu;
    char public_url[KS_NODE_PUBLIC_URL_BYTES_MAX + 1]; /* guarded by url_mu */
};

/* The core's own flags (store, listeners, log, engine, tokens): platform/node.c. */
extern const struct ks_flag ks_core_flags[];
extern const size_t ks_core_flags_n;

/* Allocates a node and fills its flag table from argv (after the command name and `skip` more
 * words), the environment and the defaults, checking each value. Returns KS_EXIT_OK,
 * KS_EXIT_USAGE after printing why and the usage on stderr; `--help` prints the usage on stdout
 * and exits 0. */
int ks_node_parse(int argc, char **argv, int skip, struct ks_node **out);
/* Opens the log the flags name. KS_EXIT_OK or KS_EXIT_FAILURE (after saying why on stderr). */
int ks_node_open_log(struct ks_node *n);
/* Opens the store the flags name (its engine migrations applied) and every module's schema.
 * KS_EXIT_OK or KS_EXIT_FAILURE (after logging and printing why). */
int ks_node_open_store(struct ks_node *n);
/* Closes what the node opened (store, log, auth) and frees it. NULL is a no-op. */
void ks_node_free(struct ks_node *n);

/* `kassa serve`, `kassa migrate` (platform/serve.c); argv starts at the command's name. */
int ks_platform_serve(int argc, char **argv);
int ks_platform_migrate(int argc, char **argv);

#endif
