/*
 * auth_int.h — the auth module's private parts, shared by auth.c (tokens) and keys.c (key files).
 * Not for use outside src/auth/ (docs/auth.md describes the design).
 */
#ifndef KS_AUTH_AUTH_INT_H
#define KS_AUTH_AUTH_INT_H

#include <cjose/jwk.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "core/err.h"
#include "core/log.h"

#define KS_AUTH_KID_BYTES_MAX 128            /* a "kid" in a header or a JWK */
#define KS_AUTH_THUMB_BYTES 43               /* RFC 7638 SHA-256 thumbprint, base64url */
#define KS_AUTH_KEY_FILE_BYTES_MAX (1 << 20) /* merchant keys file */
#define KS_AUTH_OWN_KEY_FILE_BYTES_MAX 16384 /* kassa's own key file (one PEM block) */
#define KS_AUTH_RSA_BITS_MIN 2048
#define KS_AUTH_RSA_BITS_MAX 8192
#define KS_AUTH_ES256_SIG_BYTES 64 /* R || S, 32 bytes each */
#define KS_AUTH_SOURCES_FILE_BYTES_MAX (1 << 20) /* the merchant key-sources file */
#define KS_AUTH_SOURCES_MAX 16                   /* merchant key sources (identity providers) */
#define KS_AUTH_SOURCE_PARTIES_MAX 256           /* parties one key source may speak for */
#define KS_AUTH_ISSUER_BYTES_MAX 256             /* an "iss" value */
#define KS_AUTH_ID_BYTES_MAX 64                  /* a party id */

enum ks_auth_key_type { KS_AUTH_KEY_RSA = 1, KS_AUTH_KEY_EC_P256 = 2 };

/* One verification (or, for kassa's own key, signing) key. */
struct ks_auth_key {
    cjose_jwk_t *jwk; /* owned; released (and wiped by OpenSSL) on release */
    enum ks_auth_key_type type;
    char kid[KS_AUTH_KID_BYTES_MAX + 1]; /* the JWK's "kid"; "" for PEM keys */
    char thumb[KS_AUTH_THUMB_BYTES + 1]; /* RFC 7638 thumbprint of the public key */
    size_t sig_bytes;                    /* RSA: modulus bytes; EC P-256: 64 */
    int source;                          /* merchant keys: index of its key source */
};

/* The configured merchant keys, of every source. */
struct ks_auth_keyset {
    struct ks_auth_key keys[KS_AUTH_KEYS_MAX];
    int n;
};

/* One merchant key source: an identity provider, the `iss` its tokens carry and the parties it
 * may speak for. Its keys are the keys of the keyset whose `source` is its index. */
struct ks_auth_source {
    char issuer[KS_AUTH_ISSUER_BYTES_MAX + 1];
    bool any_party; /* "parties": "*" */
    char parties[KS_AUTH_SOURCE_PARTIES_MAX][KS_AUTH_ID_BYTES_MAX + 1];
    int parties_n;
    int keys_n;
};

/* Every merchant key source of the key-sources file (auth.h, ks_auth_sources_load). */
struct ks_auth_sources {
    struct ks_auth_source src[KS_AUTH_SOURCES_MAX];
    int n;
    struct ks_auth_keyset keys;
};

/* Appends every usable key of the key file at `path` (a JWK set {"keys":[...]}, one JWK, or PEM
 * "PUBLIC KEY" / "CERTIFICATE" blocks) to `ks`, tagged with `source`. Unusable JWKs are skipped
 * with a warning on `log` (may be NULL); a file with no usable key, a private key, a PEM block of
 * another kind, or more than KS_AUTH_KEYS_MAX keys in `ks` is refused. Errors: KS_ERR_INVALID,
 * KS_ERR_LIMIT, KS_ERR_IO, KS_ERR_NOMEM, with `why` naming the path. On error `ks` is as it was
 * before the call. */
KS_MUST_USE int ks_auth_keys_load(const char *path, struct ks_auth_keyset *ks, int source,
                                  struct ks_log *log, char *why, size_t whylen);

/* The same for an inline JWK set or JWK `jwks` (borrowed); `label` names it in `why`. */
KS_MUST_USE int ks_auth_keys_add_jwks(json_t *jwks, const char *label, struct ks_auth_keyset *ks,
                                      int source, struct ks_log *log, char *why, size_t whylen);

/* True if `s` is 1..max bytes of printable ASCII without space (claims, kids, issuers). */
bool ks_auth_text_ok(const char *s, size_t max);

/* True if key source `s` may speak for `party_id`. */
bool ks_auth_source_may(const struct ks_auth_source *s, const char *party_id);

/* Releases every key of `ks` and leaves it empty. */
void ks_auth_keys_release(struct ks_auth_keyset *ks);

/* Loads kassa's own ES256 (P-256) private key from the PEM file at `path`, or creates it (mode
 * 0600, parent directories 0700) when the file does not exist; two processes racing to create it
 * end up with the same key. `*created` says whether this call made it. `out->kid` is set to the
 * thumbprint. Errors: KS_ERR_INVALID (not a P-256 private key, or a file that group or others
 * may access: refused, not fixed), KS_ERR_IO, KS_ERR_NOMEM; `why` names the path, never key
 * material. */
KS_MUST_USE int ks_auth_own_key_load(const char *path, struct ks_auth_key *out, int *created,
                                     struct ks_log *log, char *why, size_t whylen);

/* Releases one key (safe on a zeroed key). */
void ks_auth_key_release(struct ks_auth_key *k);

/* Strict base64url (no padding, canonical trailing bits) into `out` (`cap` bytes); `*outlen` is
 * the decoded size. Returns KS_OK, KS_ERR_INVALID (bad text) or KS_ERR_LIMIT (does not fit). */
KS_MUST_USE int ks_auth_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t cap,
                                      size_t *outlen);

/* base64url without padding of `len` bytes into `out` (`cap` bytes, NUL-terminated).
 * Returns KS_OK or KS_ERR_LIMIT. */
KS_MUST_USE int ks_auth_b64url_encode(const unsigned char *in, size_t len, char *out, size_t cap);

#endif
