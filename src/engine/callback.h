/*
 * callback.h — routing a provider's or payer's callback to the machine that waits for it.
 *
 * A session that suspends waits on a tag. The tag names its machine, so whoever receives the
 * callback (a provider notification endpoint, the sandbox's 3-D Secure page) can deliver it
 * without any lookup table: "{ns}~{machine id}~{nonce}" ('~' never occurs in a namespace or a
 * machine id, and is safe in a URL path). The machine receives the signal
 *   {"type":"callback","tag":"...","payload":{...}}
 * and decides, from its own state, whether that tag is one it is still waiting for.
 */
#ifndef KS_ENGINE_CALLBACK_H
#define KS_ENGINE_CALLBACK_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"
#include "engine/engine.h"

#define KS_CALLBACK_TAG_BYTES_MAX (KS_NS_BYTES_MAX + KS_ID_BYTES_MAX + 2 + 24)

/* Builds a fresh tag for a session of machine (ns, id) into `out` (KS_CALLBACK_TAG_BYTES_MAX + 1
 * bytes). The nonce is random, so a tag cannot be guessed from the machine id. */
KS_MUST_USE int ks_callback_tag(const char *ns, const char *id, char *out, size_t cap);
/* The same from a nonce the caller drew ([A-Za-z0-9]{1,24}): a processor makes its tags from its
 * transition's entropy this way, so it stays pure. KS_ERR_INVALID for a bad part or a small
 * `out`. */
KS_MUST_USE int ks_callback_tag_format(const char *ns, const char *id, const char *nonce,
                                       char *out, size_t cap);

/* Splits a tag into its namespace and machine id (buffers of KS_NS_BYTES_MAX + 1 and
 * KS_ID_BYTES_MAX + 1 bytes). KS_ERR_INVALID for anything that is not a well-formed tag. */
KS_MUST_USE int ks_callback_tag_parse(const char *tag, char *ns, char *id);

/* Delivers `payload` to the machine named by `tag` as a callback signal. Returns the engine's
 * code: KS_ERR_INVALID for a malformed tag, KS_ERR_NOT_FOUND for an unknown machine. */
KS_MUST_USE int ks_callback_deliver(struct ks_engine *e, const char *tag, const json_t *payload);

#endif
