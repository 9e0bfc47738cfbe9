/*
 * config_int.h — the configuration module's private parts (see config.h).
 *
 * The storage functions of config.h act on the one machine (KS_CONFIG_NS, KS_CONFIG_MACHINE_ID).
 * These variants take the machine id, so the unit tests can give every test its own
 * configuration machine on a shared database. Nothing outside src/config/ and tests/ uses them.
 */
#ifndef KS_CONFIG_CONFIG_INT_H
#define KS_CONFIG_CONFIG_INT_H

#include "config/config.h"

KS_MUST_USE int ks_config_bootstrap_id(struct ks_engine *e, const char *id, struct ks_log *log,
                                       int64_t *revision);
KS_MUST_USE int ks_config_bootstrap_with_id(struct ks_engine *e, const char *id,
                                            struct ks_log *log, const json_t *initial,
                                            const char *origin, int64_t *revision, char *why,
                                            size_t whylen);
KS_MUST_USE int ks_config_get_id(struct ks_engine *e, const char *id, int64_t revision,
                                 struct ks_config_rev *out);
KS_MUST_USE int ks_config_history_id(struct ks_engine *e, const char *id, int64_t after,
                                     size_t limit, struct ks_config_rev *out, size_t *n,
                                     int64_t *current);
KS_MUST_USE int ks_config_put_id(struct ks_engine *e, const char *id, int64_t base_revision,
                                 const json_t *doc, const char *author, const char *reason,
                                 int64_t *revision, char *why, size_t whylen);

/* The sandbox configuration's JSON text, generated from config/sandbox.json at build time by
 * scripts/embed-text.sh (build/<variant>/gen/sandbox_config.c). */
extern const char ks_config_sandbox_json[];

/* The status of a configuration object: its "status" string, "active" when absent. */
const char *ks_config_status_of(const json_t *obj);

/* Checks an author or reason text: at most `max` bytes, no control characters, (for author)
 * not empty. Returns KS_OK or KS_ERR_INVALID with a sentence in `why`. */
KS_MUST_USE int ks_config_text_check(const char *what, const char *s, size_t max, int required,
                                     char *why, size_t whylen);

#endif
