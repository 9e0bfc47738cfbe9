/*
 * module.h — kassa's modules and the node they are opened on. Design note: docs/modules.md.
 *
 * A MODULE is one descriptor (nginx's ngx_module_t is the model): its name, its flags (each with
 * an environment variable, a default and help), the schema of the tables it owns, and hooks that
 * `kassa serve` calls in a fixed order:
 *
 *   open     register processors, units and relays with the engine; provide services to the
 *            modules after it (ks_node_provide); keep everything in a context of its own
 *   start    the engine runs: work that needs it (installing the initial configuration)
 *   routes   add routes to the public and admin listeners (admin is NULL when it is off)
 *   serving  the listeners are bound (their URLs are known)
 *   stopping the listeners have stopped and the engine is about to: stop the module's own
 *            threads that call the engine (in reverse order, for every opened module, whether
 *            or not its `start` ran)
 *   close    the listeners and the engine have stopped: release the context (also called
 *            when `open` failed, with whatever context it had set, maybe NULL)
 *
 * The modules are one static list (platform/modules.c, plus the test-only modules a build links
 * in); serve opens them in order and closes them in reverse. A module reaches another only
 * through the engine (machines, tasks, child machines) or a service it looks up by name and
 * uses through that module's small public header; there is no catch-all context.
 *
 * The NODE is what a module is opened with: the store, the engine, the log, the token verifier,
 * every flag's value, the services, and the public URL. The node is built and owned by
 * platform/serve.c; modules borrow it for the whole run.
 */
#ifndef KS_PLATFORM_MODULE_H
#define KS_PLATFORM_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct ks_store;
struct ks_engine;
struct ks_log;
struct ks_auth;
struct ks_http_router;
struct ks_sql_schema;
struct ks_api_route_role;
struct ks_command; /* platform/platform.h */

/* --- flags -------------------------------------------------------------------------------- */

enum ks_flag_kind {
    KS_FLAG_TEXT = 0, /* any text (bounded by the command line) */
    KS_FLAG_INT,      /* a decimal integer in [min, max] (core/parse.h) */
    KS_FLAG_SWITCH,   /* on: "1" or "true" or the flag alone; off: "0", "false" or empty */
    KS_FLAG_CHOICE,   /* one of `choices`, '|'-separated ("full|normal") */
    KS_FLAG_HTTP_URL, /* empty, or starting with http:// or https:// */
    KS_FLAG_ADDRESS,  /* HOST:PORT or [IPV6]:PORT (port 0: any free port) */
};

#define KS_FLAG_NONEMPTY 1u  /* an empty value is refused */
#define KS_FLAG_MAY_EMPTY 2u /* KS_FLAG_ADDRESS: empty turns the thing off */

struct ks_flag {
    const char *name;  /* without the dashes: "payment-hold-ms" */
    const char *env;   /* "KASSA_PAYMENT_HOLD_MS" */
    const char *dflt;  /* the default, as text */
    enum ks_flag_kind kind;
    int64_t min, max;  /* KS_FLAG_INT */
    const char *choices; /* KS_FLAG_CHOICE */
    unsigned opts;     /* KS_FLAG_NONEMPTY | KS_FLAG_MAY_EMPTY */
    const char *help;  /* one line for `kassa help` */
    const char *doc;   /* the docs table's "meaning" (Markdown); NULL: `help` */
    const char *dflt_doc; /* the docs table's "default" (Markdown); NULL: `dflt` in backticks */
};

/* --- modules ------------------------------------------------------------------------------ */

struct ks_node;

struct ks_module {
    const char *name;    /* [a-z0-9_]+, unique */
    const char *summary; /* one line: what it adds */
    const struct ks_flag *flags;
    size_t flags_n;
    /* The tables it owns (store/sql.h), applied by `kassa migrate` and before `open`; NULL when
     * it owns none. */
    const struct ks_sql_schema *schema;
    /* Commands it adds to `kassa` (platform/platform.h), or none. */
    const struct ks_command *commands;
    size_t commands_n;
    /* Linked only into test and bench builds: left out of docs/configuration.md's table. */
    bool test_only;
    /* Each hook may be NULL. A hook that fails returns an error and writes why (no secrets) into
     * `why`; serve then stops what it started and exits 1. `ctx` is what `open` set. */
    int (*open)(struct ks_node *node, void **ctx, char *why, size_t whylen);
    int (*start)(void *ctx, struct ks_node *node, char *why, size_t whylen);
    int (*routes)(void *ctx, struct ks_node *node, struct ks_http_router *public_router,
                  struct ks_http_router *admin_router, char *why, size_t whylen);
    void (*serving)(void *ctx, struct ks_node *node);
    void (*stopping)(void *ctx);
    void (*close)(void *ctx);
};

#define KS_MODULES_MAX 32

/* The modules of this build, in opening order, NULL-terminated: platform/modules.c's list, then
 * the build's extra (test-only) modules. Static data. */
const struct ks_module *const *ks_modules(void);

/* --- the node ----------------------------------------------------------------------------- */

/* Borrowed for the whole run; set before the first `open`. */
struct ks_store *ks_node_store(const struct ks_node *n);
struct ks_engine *ks_node_engine(const struct ks_node *n);
struct ks_log *ks_node_log(const struct ks_node *n);
struct ks_auth *ks_node_auth(const struct ks_node *n);

/* The checked value of flag `name` (any module's): the flag, else its variable, else its
 * default. A name no module declares is a programmer error (assert). Borrowed for the run. */
const char *ks_node_flag(const struct ks_node *n, const char *name);
/* The value of a KS_FLAG_INT flag (checked in range at parse time). */
int64_t ks_node_flag_int(const struct ks_node *n, const char *name);
/* Whether a KS_FLAG_SWITCH flag is on. */
bool ks_node_flag_on(const struct ks_node *n, const char *name);

/* Offers `service` under `name` (e.g. "vault", "adapter.acquiring.sandbox") to the modules
 * opened after this one; `service` is borrowed and must live until the provider's close.
 * KS_ERR_CONFLICT if the name is taken, KS_ERR_LIMIT past KS_NODE_SERVICES_MAX. */
#define KS_NODE_SERVICES_MAX 64
KS_MUST_USE int ks_node_provide(struct ks_node *n, const char *name, void *service);
/* The service named `name`, or NULL. */
void *ks_node_service(const struct ks_node *n, const char *name);
/* The services whose names start with `prefix`, in the order they were provided: up to `cap`
 * of them into `out`; returns how many there are (which may exceed `cap`). */
size_t ks_node_services(const struct ks_node *n, const char *prefix, void **out, size_t cap);

/* Adds a table of route roles (api/roles.h) for routes a module adds to the public listener:
 * the listener's authorizer refuses a merchant token without the route's role before it reads
 * the body. `rows` is static data. KS_ERR_LIMIT past KS_NODE_ROLE_TABLES_MAX. */
#define KS_NODE_ROLE_TABLES_MAX 16
KS_MUST_USE int ks_node_add_route_roles(struct ks_node *n, const struct ks_api_route_role *rows,
                                        size_t rows_n);
/* The role row of a public route, from every table added, or NULL. */
const struct ks_api_route_role *ks_node_route_role(const struct ks_node *n, const char *method,
                                                   const char *pattern);

/* kassa's public base URL for pages payers are sent to: --public-url, or once the public
 * listener is bound its own URL (before that, ""). Copies into `buf` (`cap` bytes, cut to fit).
 * Thread-safe. */
void ks_node_public_url(const struct ks_node *n, char *buf, size_t cap);

#endif
