/*
 * keys.c — the keys behind kassa's tokens: the merchant verification keys (a JWK set, one JWK, or
 * PEM public keys and certificates) and kassa's own ES256 signing key (a PEM file created on
 * first start). Design: docs/auth.md ("Keys").
 *
 * Every key becomes a cjose JWK plus what the verifier needs to pick it without asking cjose:
 * its type (RSA or EC P-256), its "kid", its RFC 7638 thumbprint and its signature size. Key
 * files are read whole (with a size bound) into memory that is wiped before it is freed.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjose/jwk.h>
#include <cjose/util.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth/auth_int.h"
#include "core/json.h"
#include "core/secret_file.h"

#define EC_COORD_BYTES 32
#define RSA_MODULUS_BYTES_MAX (KS_AUTH_RSA_BITS_MAX / 8)
#define RSA_EXPONENT_BYTES_MAX 16
#define PEM_BLOCKS_MAX (KS_AUTH_KEYS_MAX + 16) /* bound on the PEM reading loop */
#define DIR_DEPTH_MAX 64                       /* bound on parent directory creation */

/* --- base64url ---------------------------------------------------------------------------- */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int ks_auth_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t cap,
                          size_t *outlen)
{
    assert(in != NULL || inlen == 0);
    assert(out != NULL && outlen != NULL);
    *outlen = 0;
    if (inlen % 4 == 1)
        return KS_ERR_INVALID;
    size_t need = inlen / 4 * 3 + (inlen % 4 ? inlen % 4 - 1 : 0);
    if (need > cap)
        return KS_ERR_LIMIT;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < inlen; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return KS_ERR_INVALID;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Canonical form: the bits left over after the last whole byte are zero. */
    if (acc != 0)
        return KS_ERR_INVALID;
    assert(o == need);
    *outlen = o;
    return KS_OK;
}

int ks_auth_b64url_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    assert(in != NULL || len == 0);
    assert(out != NULL);
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
    if (need + 1 > cap)
        return KS_ERR_LIMIT;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t n = len - i < 3 ? len - i : 3;
        if (n > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (n > 2)
            v |= in[i + 2];
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        if (n > 1)
            out[o++] = b64url_alphabet[(v >> 6) & 63];
        if (n > 2)
            out[o++] = b64url_alphabet[v & 63];
    }
    assert(o == need);
    out[o] = '\0';
    return KS_OK;
}

/* --- files -------------------------------------------------------------------------------- */

/* Frees a file buffer after wiping it (key files hold secrets or, at least, configuration). */
static void buf_wipe_free(char *buf, size_t len)
{
    if (!buf)
        return;
    explicit_bzero(buf, len);
    free(buf);
}

/*
 * Reads the whole file at `path` (at most `max` bytes) into a new NUL-terminated buffer.
 * `*st` gets the file's status (fstat). Returns KS_OK, KS_ERR_NOT_FOUND (no such file),
 * KS_ERR_LIMIT (too large), KS_ERR_IO or KS_ERR_NOMEM, with `why` naming the path.
 */
static int file_read(const char *path, size_t max, char **out, size_t *outlen, struct stat *st_out,
                     char *why, size_t whylen)
{
    *out = NULL;
    *outlen = 0;
    int rc = KS_OK;
    char *buf = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return KS_ERR_NOT_FOUND;
        snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
        return KS_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "%s is not a readable regular file", path);
        rc = KS_ERR_IO;
        goto out_close;
    }
    if (st.st_size < 0 || (size_t)st.st_size > max) {
        snprintf(why, whylen, "%s is larger than %zu bytes", path, max);
        rc = KS_ERR_LIMIT;
        goto out_close;
    }
    *st_out = st;
    buf = malloc(max + 1);
    if (!buf) {
        rc = KS_ERR_NOMEM;
        goto out_close;
    }
    /* Read to the end (not st_size), so a file growing under us is still bounded by `max`. */
    for (;;) {
        ssize_t n = read(fd, buf + len, max + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
            rc = KS_ERR_IO;
            goto out_close;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            snprintf(why, whylen, "%s is larger than %zu bytes", path, max);
            rc = KS_ERR_LIMIT;
            goto out_close;
        }
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
out_close:
    close(fd);
    buf_wipe_free(buf, max + 1);
    return rc;
}

/* Creates the directories above `path` (mode 0700) that are missing. Failures show up later,
 * when the file itself cannot be created, with a clearer message. */
static void parent_dirs_make(const char *path)
{
    char dir[PATH_MAX];
    int n = snprintf(dir, sizeof(dir), "%s", path);
    if (n <= 0 || (size_t)n >= sizeof(dir))
        return;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return;
    *slash = '\0';
    /* Walk down from the top, creating each level; bounded by the number of levels. */
    int depth = 0;
    for (char *p = dir + 1; *p && depth < DIR_DEPTH_MAX; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        (void)mkdir(dir, 0700);
        *p = '/';
        depth++;
    }
    (void)mkdir(dir, 0700);
}

/* fsyncs the directory holding `path`, so a new name in it survives a crash. */
static void parent_dir_sync(const char *path)
{
    char dir[PATH_MAX];
    int n = snprintf(dir, sizeof(dir), "%s", path);
    if (n <= 0 || (size_t)n >= sizeof(dir))
        return;
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* --- keys --------------------------------------------------------------------------------- */

void ks_auth_key_release(struct ks_auth_key *k)
{
    if (!k)
        return;
    if (k->jwk)
        cjose_jwk_release(k->jwk); /* frees the OpenSSL key, which clears private parts */
    memset(k, 0, sizeof(*k));
}

void ks_auth_keys_release(struct ks_auth_keyset *ks)
{
    assert(ks->n >= 0 && ks->n <= KS_AUTH_KEYS_MAX);
    for (int i = 0; i < ks->n; i++)
        ks_auth_key_release(&ks->keys[i]);
    ks->n = 0;
}

/* SHA-256 of `text`, base64url, into `out` (KS_AUTH_THUMB_BYTES + 1). */
static int thumb_of(const char *text, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return KS_ERR_INTERNAL;
    return ks_auth_b64url_encode(md, mdlen, out, KS_AUTH_THUMB_BYTES + 1);
}

/*
 * Fills type, thumbprint and signature size of `k` from its public JWK (cjose's own export, so
 * the members are canonical base64url). Refuses key types and sizes kassa does not verify with.
 */
static int key_finish(struct ks_auth_key *k, char *why, size_t whylen)
{
    assert(k->jwk != NULL);
    cjose_err err;
    int rc = KS_ERR_INVALID;
    json_t *j = NULL;
    char *pub = cjose_jwk_to_json(k->jwk, false, &err);
    if (!pub) {
        snprintf(why, whylen, "cannot export a public key: %s", err.message);
        return KS_ERR_INTERNAL;
    }
    j = json_loads(pub, 0, NULL);
    cjose_get_dealloc()(pub);
    if (!json_is_object(j)) {
        snprintf(why, whylen, "cannot read an exported public key");
        rc = KS_ERR_INTERNAL;
        goto out;
    }
    const char *kty = ks_json_get_str(j, "kty");
    char canon[2048];
    if (kty && strcmp(kty, "RSA") == 0) {
        const char *n = ks_json_get_str(j, "n"), *e = ks_json_get_str(j, "e");
        unsigned char mod[RSA_MODULUS_BYTES_MAX + 1];
        size_t modlen = 0;
        if (!n || !e || ks_auth_b64url_decode(n, strlen(n), mod, sizeof(mod), &modlen) != KS_OK ||
            modlen == 0 || mod[0] == 0) {
            snprintf(why, whylen, "an RSA key is malformed or larger than %d bits",
                     KS_AUTH_RSA_BITS_MAX);
            goto out;
        }
        size_t bits = (modlen - 1) * 8;
        for (unsigned b = mod[0]; b; b >>= 1)
            bits++;
        if (bits < KS_AUTH_RSA_BITS_MIN || bits > KS_AUTH_RSA_BITS_MAX) {
            snprintf(why, whylen, "an RSA key has %zu bits; kassa accepts %d to %d", bits,
                     KS_AUTH_RSA_BITS_MIN, KS_AUTH_RSA_BITS_MAX);
            goto out;
        }
        int len =
            snprintf(canon, sizeof(canon), "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e, n);
        if (len < 0 || (size_t)len >= sizeof(canon)) {
            snprintf(why, whylen, "an RSA key is too large");
            goto out;
        }
        k->type = KS_AUTH_KEY_RSA;
        k->sig_bytes = modlen;
    } else if (kty && strcmp(kty, "EC") == 0) {
        const char *crv = ks_json_get_str(j, "crv");
        const char *x = ks_json_get_str(j, "x"), *y = ks_json_get_str(j, "y");
        if (!crv || strcmp(crv, "P-256") != 0 || !x || !y || strlen(x) != 43 || strlen(y) != 43) {
            snprintf(why, whylen, "an EC key is not on curve P-256 (ES256)");
            goto out;
        }
        snprintf(canon, sizeof(canon),
                 "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
        k->type = KS_AUTH_KEY_EC_P256;
        k->sig_bytes = KS_AUTH_ES256_SIG_BYTES;
    } else {
        snprintf(why, whylen, "a key is neither RSA nor EC");
        goto out;
    }
    rc = thumb_of(canon, k->thumb);
    if (rc != KS_OK)
        snprintf(why, whylen, "cannot compute a key thumbprint");
out:
    json_decref(j);
    return rc;
}

/* Big number parameter `name` of `pk` into `out` as `len` big-endian bytes (left-padded) when
 * `len` > 0, or minimal bytes (`*outlen`, at most `cap`) when `len` is 0. */
static int pkey_bn(const EVP_PKEY *pk, const char *name, unsigned char *out, size_t cap, size_t len,
                   size_t *outlen)
{
    BIGNUM *bn = NULL;
    int rc = KS_ERR_INVALID;
    if (EVP_PKEY_get_bn_param(pk, name, &bn) != 1 || !bn)
        goto out;
    if (len > 0) {
        if (len > cap || BN_bn2binpad(bn, out, (int)len) != (int)len)
            goto out;
        *outlen = len;
    } else {
        int n = BN_num_bytes(bn);
        if (n <= 0 || (size_t)n > cap)
            goto out;
        *outlen = (size_t)BN_bn2bin(bn, out);
    }
    rc = KS_OK;
out:
    BN_clear_free(bn);
    return rc;
}

/* Converts an OpenSSL key (RSA, or EC P-256; with its private part when `with_private`) into a
 * cjose JWK in `k`, then key_finish. */
static int key_from_pkey(EVP_PKEY *pk, int with_private, struct ks_auth_key *k, char *why,
                         size_t whylen)
{
    cjose_err err;
    int rc = KS_ERR_INVALID;
    int base = EVP_PKEY_get_base_id(pk);
    if (base == EVP_PKEY_RSA && !with_private) {
        unsigned char n[RSA_MODULUS_BYTES_MAX], e[RSA_EXPONENT_BYTES_MAX];
        size_t nlen = 0, elen = 0;
        if (pkey_bn(pk, OSSL_PKEY_PARAM_RSA_N, n, sizeof(n), 0, &nlen) != KS_OK ||
            pkey_bn(pk, OSSL_PKEY_PARAM_RSA_E, e, sizeof(e), 0, &elen) != KS_OK) {
            snprintf(why, whylen, "an RSA key is malformed or larger than %d bits",
                     KS_AUTH_RSA_BITS_MAX);
            return KS_ERR_INVALID;
        }
        cjose_jwk_rsa_keyspec spec = {.n = n, .nlen = nlen, .e = e, .elen = elen};
        k->jwk = cjose_jwk_create_RSA_spec(&spec, &err);
    } else if (base == EVP_PKEY_EC) {
        char group[64] = "";
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
            snprintf(why, whylen, "an EC key is not on curve P-256 (ES256)");
            return KS_ERR_INVALID;
        }
        unsigned char x[EC_COORD_BYTES], y[EC_COORD_BYTES], d[EC_COORD_BYTES];
        size_t xlen = 0, ylen = 0, dlen = 0;
        if (pkey_bn(pk, OSSL_PKEY_PARAM_EC_PUB_X, x, sizeof(x), EC_COORD_BYTES, &xlen) != KS_OK ||
            pkey_bn(pk, OSSL_PKEY_PARAM_EC_PUB_Y, y, sizeof(y), EC_COORD_BYTES, &ylen) != KS_OK ||
            (with_private &&
             pkey_bn(pk, OSSL_PKEY_PARAM_PRIV_KEY, d, sizeof(d), EC_COORD_BYTES, &dlen) != KS_OK)) {
            explicit_bzero(d, sizeof(d));
            snprintf(why, whylen, "an EC P-256 key is malformed%s",
                     with_private ? " or has no private part" : "");
            return KS_ERR_INVALID;
        }
        cjose_jwk_ec_keyspec spec = {.crv = CJOSE_JWK_EC_P_256,
                                     .x = x,
                                     .xlen = xlen,
                                     .y = y,
                                     .ylen = ylen,
                                     .d = with_private ? d : NULL,
                                     .dlen = with_private ? dlen : 0};
        k->jwk = cjose_jwk_create_EC_spec(&spec, &err);
        explicit_bzero(d, sizeof(d));
        explicit_bzero(&spec, sizeof(spec));
    } else {
        snprintf(why, whylen, "%s",
                 with_private ? "kassa's own key must be an EC P-256 key"
                              : "only RSA and EC P-256 keys are accepted");
        return KS_ERR_INVALID;
    }
    if (!k->jwk) {
        snprintf(why, whylen, "cannot import a key: %s", err.message);
        return KS_ERR_INVALID;
    }
    rc = key_finish(k, why, whylen);
    if (rc != KS_OK)
        ks_auth_key_release(k);
    return rc;
}

/* --- merchant keys: JWK ------------------------------------------------------------------- */

/* Imports one JWK object into the next free slot of `ks`. `*skipped` is set (with a warning on
 * `log`) for a key kassa does not verify with; errors refuse the whole file. */
static int jwk_add(json_t *jk, int index, struct ks_auth_keyset *ks, int source, struct ks_log *log,
                   const char *path, char *why, size_t whylen)
{
    if (!json_is_object(jk)) {
        snprintf(why, whylen, "%s: key %d is not a JSON object", path, index);
        return KS_ERR_INVALID;
    }
    if (json_object_get(jk, "d") || json_object_get(jk, "p") || json_object_get(jk, "k")) {
        snprintf(why, whylen,
                 "%s: key %d holds private or secret key material; give public keys "
                 "only",
                 path, index);
        return KS_ERR_INVALID;
    }
    const char *kty = ks_json_get_str(jk, "kty");
    const char *use = ks_json_get_str(jk, "use");
    const char *alg = ks_json_get_str(jk, "alg");
    const char *crv = ks_json_get_str(jk, "crv");
    json_t *kidv = json_object_get(jk, "kid");
    const char *skip = NULL;
    if (!kty)
        skip = "no \"kty\"";
    else if (json_object_get(jk, "use") && (!use || strcmp(use, "sig") != 0))
        skip = "\"use\" is not \"sig\"";
    else if (strcmp(kty, "RSA") == 0) {
        if (json_object_get(jk, "alg") && (!alg || strcmp(alg, "RS256") != 0))
            skip = "RSA key for another algorithm than RS256";
    } else if (strcmp(kty, "EC") == 0) {
        if (!crv || strcmp(crv, "P-256") != 0)
            skip = "EC key not on curve P-256";
        else if (json_object_get(jk, "alg") && (!alg || strcmp(alg, "ES256") != 0))
            skip = "EC key for another algorithm than ES256";
    } else
        skip = "key type is neither RSA nor EC";
    if (!skip && kidv &&
        (!json_is_string(kidv) || !ks_auth_text_ok(json_string_value(kidv), KS_AUTH_KID_BYTES_MAX)))
        skip = "\"kid\" is not 1 to 128 printable characters";
    if (skip) {
        if (log)
            ks_log_json(log, KS_LOG_WARN, NULL, "merchant key skipped",
                        json_pack("{s:s, s:i, s:s}", "path", path, "index", index, "why", skip));
        return KS_OK;
    }
    if (ks->n >= KS_AUTH_KEYS_MAX) {
        snprintf(why, whylen, "%s: more than %d usable keys", path, KS_AUTH_KEYS_MAX);
        return KS_ERR_LIMIT;
    }
    char *text = json_dumps(jk, JSON_COMPACT);
    if (!text)
        return KS_ERR_NOMEM;
    cjose_err err;
    struct ks_auth_key *k = &ks->keys[ks->n];
    memset(k, 0, sizeof(*k));
    k->jwk = cjose_jwk_import(text, strlen(text), &err);
    free(text);
    if (!k->jwk) {
        snprintf(why, whylen, "%s: key %d cannot be imported: %s", path, index, err.message);
        return KS_ERR_INVALID;
    }
    char inner[160] = "";
    int rc = key_finish(k, inner, sizeof(inner));
    if (rc != KS_OK) {
        snprintf(why, whylen, "%s: key %d: %s", path, index, inner);
        ks_auth_key_release(k);
        return rc;
    }
    if (kidv)
        snprintf(k->kid, sizeof(k->kid), "%s", json_string_value(kidv));
    k->source = source;
    ks->n++;
    return KS_OK;
}

/* Adds the keys of a parsed JWK set {"keys":[...]} or single JWK `doc` to `ks`. */
static int jwks_add(json_t *doc, struct ks_auth_keyset *ks, int source, struct ks_log *log,
                    const char *label, char *why, size_t whylen)
{
    int rc = KS_OK;
    json_t *keys = json_object_get(doc, "keys");
    if (json_is_array(keys)) {
        if (json_array_size(keys) > (size_t)KS_AUTH_KEYS_MAX * 4) {
            snprintf(why, whylen, "%s: more than %d keys", label, KS_AUTH_KEYS_MAX * 4);
            return KS_ERR_LIMIT;
        }
        for (size_t i = 0; i < json_array_size(keys) && rc == KS_OK; i++)
            rc = jwk_add(json_array_get(keys, i), (int)i, ks, source, log, label, why, whylen);
    } else if (json_is_object(doc) && json_object_get(doc, "kty")) {
        rc = jwk_add(doc, 0, ks, source, log, label, why, whylen);
    } else {
        snprintf(why, whylen, "%s: neither a JWK set {\"keys\":[...]} nor a JWK", label);
        rc = KS_ERR_INVALID;
    }
    return rc;
}

static int jwks_load(const char *text, size_t len, struct ks_auth_keyset *ks, int source,
                     struct ks_log *log, const char *path, char *why, size_t whylen)
{
    json_t *doc = NULL;
    char jwhy[128] = "";
    int rc = ks_json_parse(text, len, &doc, jwhy, sizeof(jwhy));
    if (rc != KS_OK) {
        snprintf(why, whylen, "%s: not valid JSON: %s", path, jwhy);
        return KS_ERR_INVALID;
    }
    rc = jwks_add(doc, ks, source, log, path, why, whylen);
    json_decref(doc);
    return rc;
}

/* --- merchant keys: PEM ------------------------------------------------------------------- */

static int pem_load(const char *text, size_t len, struct ks_auth_keyset *ks, int source,
                    const char *path, char *why, size_t whylen)
{
    int rc = KS_OK;
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    if (!bio)
        return KS_ERR_NOMEM;
    ERR_clear_error();
    for (int block = 0; block < PEM_BLOCKS_MAX && rc == KS_OK; block++) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        if (PEM_read_bio(bio, &name, &header, &data, &dlen) != 1) {
            unsigned long e = ERR_peek_last_error();
            ERR_clear_error();
            if (ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
                snprintf(why, whylen, "%s: PEM block %d is malformed", path, block);
                rc = KS_ERR_INVALID;
            }
            break;
        }
        EVP_PKEY *pk = NULL;
        const unsigned char *p = data;
        if (strstr(name, "PRIVATE KEY")) {
            snprintf(why, whylen, "%s: PEM block %d is a private key; give public keys only", path,
                     block);
            rc = KS_ERR_INVALID;
        } else if (strcmp(name, "PUBLIC KEY") == 0) {
            pk = d2i_PUBKEY(NULL, &p, dlen);
        } else if (strcmp(name, "CERTIFICATE") == 0) {
            X509 *x = d2i_X509(NULL, &p, dlen);
            if (x)
                pk = X509_get_pubkey(x);
            X509_free(x);
        } else {
            snprintf(why, whylen,
                     "%s: PEM block %d is \"%.40s\"; kassa reads PUBLIC KEY and "
                     "CERTIFICATE blocks",
                     path, block, name);
            rc = KS_ERR_INVALID;
        }
        if (rc == KS_OK && !pk) {
            snprintf(why, whylen, "%s: PEM block %d cannot be decoded", path, block);
            rc = KS_ERR_INVALID;
        }
        if (rc == KS_OK && ks->n >= KS_AUTH_KEYS_MAX) {
            snprintf(why, whylen, "%s: more than %d keys", path, KS_AUTH_KEYS_MAX);
            rc = KS_ERR_LIMIT;
        }
        if (rc == KS_OK) {
            struct ks_auth_key *k = &ks->keys[ks->n];
            memset(k, 0, sizeof(*k));
            char inner[160] = "";
            rc = key_from_pkey(pk, 0, k, inner, sizeof(inner));
            if (rc == KS_OK) {
                k->source = source;
                ks->n++;
            } else
                snprintf(why, whylen, "%s: PEM block %d: %s", path, block, inner);
        }
        EVP_PKEY_free(pk);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        ERR_clear_error();
    }
    BIO_free(bio);
    return rc;
}

/* Releases the keys of `ks` from index `from` on, leaving the ones before. */
static void keys_truncate(struct ks_auth_keyset *ks, int from)
{
    assert(from >= 0 && from <= ks->n && ks->n <= KS_AUTH_KEYS_MAX);
    for (int i = from; i < ks->n; i++)
        ks_auth_key_release(&ks->keys[i]);
    ks->n = from;
}

int ks_auth_keys_load(const char *path, struct ks_auth_keyset *ks, int source, struct ks_log *log,
                      char *why, size_t whylen)
{
    assert(path != NULL && ks != NULL && ks->n >= 0 && ks->n <= KS_AUTH_KEYS_MAX);
    const int before = ks->n;
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    int rc = file_read(path, KS_AUTH_KEY_FILE_BYTES_MAX, &text, &len, &st, why, whylen);
    if (rc == KS_ERR_NOT_FOUND) {
        snprintf(why, whylen, "merchant keys file %s does not exist", path);
        return KS_ERR_IO;
    }
    if (rc != KS_OK)
        return rc;
    size_t at = 0;
    while (at < len &&
           (text[at] == ' ' || text[at] == '\t' || text[at] == '\r' || text[at] == '\n'))
        at++;
    if (at < len && text[at] == '{')
        rc = jwks_load(text, len, ks, source, log, path, why, whylen);
    else
        rc = pem_load(text, len, ks, source, path, why, whylen);
    if (rc == KS_OK && ks->n == before) {
        snprintf(why, whylen, "%s holds no usable RS256 or ES256 key", path);
        rc = KS_ERR_INVALID;
    }
    if (rc != KS_OK)
        keys_truncate(ks, before);
    buf_wipe_free(text, len + 1);
    return rc;
}

int ks_auth_keys_add_jwks(json_t *jwks, const char *label, struct ks_auth_keyset *ks, int source,
                          struct ks_log *log, char *why, size_t whylen)
{
    assert(jwks != NULL && label != NULL && ks != NULL);
    assert(ks->n >= 0 && ks->n <= KS_AUTH_KEYS_MAX);
    const int before = ks->n;
    int rc = jwks_add(jwks, ks, source, log, label, why, whylen);
    if (rc == KS_OK && ks->n == before) {
        snprintf(why, whylen, "%s holds no usable RS256 or ES256 key", label);
        rc = KS_ERR_INVALID;
    }
    if (rc != KS_OK)
        keys_truncate(ks, before);
    return rc;
}

/* --- kassa's own key ---------------------------------------------------------------------- */

/* OpenSSL's passphrase callback: never prompt; an encrypted key file is refused. */
static int pem_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static int own_key_parse(const char *text, size_t len, struct ks_auth_key *out, const char *path,
                         char *why, size_t whylen)
{
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    if (!bio)
        return KS_ERR_NOMEM;
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, pem_no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!pk) {
        snprintf(why, whylen, "%s is not an unencrypted PEM private key", path);
        return KS_ERR_INVALID;
    }
    char inner[160] = "";
    int rc = key_from_pkey(pk, 1, out, inner, sizeof(inner));
    EVP_PKEY_free(pk); /* frees (and clears) the private key */
    if (rc != KS_OK)
        snprintf(why, whylen, "%s: %s", path, inner);
    return rc;
}

/* Makes a new P-256 key and publishes it at `path` with link(2), which never replaces an
 * existing file: if another process got there first, `*lost` is set and nothing is changed. */
static int own_key_create(const char *path, char **pem, size_t *pemlen, int *lost, char *why,
                          size_t whylen)
{
    *pem = NULL;
    *pemlen = 0;
    *lost = 0;
    int rc = KS_ERR_IO;
    char tmp[PATH_MAX];
    int fd = -1;
    BIO *bio = NULL;
    EVP_PKEY *pk = NULL;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp)) {
        snprintf(why, whylen, "signing key path is too long");
        return KS_ERR_INVALID;
    }
    parent_dirs_make(path);
    pk = EVP_EC_gen("P-256");
    bio = BIO_new(BIO_s_secmem());
    if (!pk || !bio || PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1) {
        snprintf(why, whylen, "cannot generate a P-256 key");
        rc = KS_ERR_INTERNAL;
        goto out;
    }
    char *data = NULL;
    long dlen = BIO_get_mem_data(bio, &data);
    if (dlen <= 0 || dlen > KS_AUTH_OWN_KEY_FILE_BYTES_MAX) {
        snprintf(why, whylen, "cannot encode a P-256 key");
        rc = KS_ERR_INTERNAL;
        goto out;
    }
    fd = mkstemp(tmp); /* mode 0600 */
    if (fd < 0) {
        snprintf(why, whylen, "cannot create signing key file %s: %s", path, strerror(errno));
        goto out;
    }
    for (long off = 0; off < dlen;) {
        ssize_t n = write(fd, data + off, (size_t)(dlen - off));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, whylen, "cannot write signing key file %s: %s", path, strerror(errno));
            goto out_unlink;
        }
        off += n;
    }
    if (fchmod(fd, 0600) != 0 || fsync(fd) != 0) {
        snprintf(why, whylen, "cannot write signing key file %s: %s", path, strerror(errno));
        goto out_unlink;
    }
    if (link(tmp, path) != 0) {
        if (errno == EEXIST) {
            *lost = 1;
            rc = KS_OK;
        } else {
            snprintf(why, whylen, "cannot create signing key file %s: %s", path, strerror(errno));
        }
        goto out_unlink;
    }
    parent_dir_sync(path);
    *pem = malloc((size_t)dlen + 1);
    if (!*pem) {
        rc = KS_ERR_NOMEM;
        goto out_unlink;
    }
    memcpy(*pem, data, (size_t)dlen);
    (*pem)[dlen] = '\0';
    *pemlen = (size_t)dlen;
    rc = KS_OK;
out_unlink:
    unlink(tmp);
out:
    if (fd >= 0)
        close(fd);
    if (bio) {
        char *data2 = NULL;
        long n2 = BIO_get_mem_data(bio, &data2);
        if (data2 && n2 > 0)
            explicit_bzero(data2, (size_t)n2);
        BIO_free(bio);
    }
    EVP_PKEY_free(pk);
    return rc;
}

int ks_auth_own_key_load(const char *path, struct ks_auth_key *out, int *created,
                         struct ks_log *log, char *why, size_t whylen)
{
    assert(path != NULL && out != NULL && created != NULL);
    memset(out, 0, sizeof(*out));
    *created = 0;
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    int rc = file_read(path, KS_AUTH_OWN_KEY_FILE_BYTES_MAX, &text, &len, &st, why, whylen);
    if (rc == KS_ERR_NOT_FOUND) {
        int lost = 0;
        rc = own_key_create(path, &text, &len, &lost, why, whylen);
        if (rc == KS_OK && lost) /* another process made it first: use theirs */
            rc = file_read(path, KS_AUTH_OWN_KEY_FILE_BYTES_MAX, &text, &len, &st, why, whylen);
        else if (rc == KS_OK)
            *created = 1;
        if (rc == KS_ERR_NOT_FOUND) {
            snprintf(why, whylen, "signing key file %s vanished while being created", path);
            rc = KS_ERR_IO;
        }
    }
    if (rc != KS_OK)
        goto out;
    /* As the vault's master key: whoever reads this key can mint invoice tokens. (A key this
     * call created is 0600 already.) */
    if (!*created &&
        (rc = ks_secret_file_check(&st, "signing key file", path, why, whylen)) != KS_OK)
        goto out;
    rc = own_key_parse(text, len, out, path, why, whylen);
    if (rc == KS_OK)
        snprintf(out->kid, sizeof(out->kid), "%s", out->thumb);
out:
    buf_wipe_free(text, len + 1);
    return rc;
}
