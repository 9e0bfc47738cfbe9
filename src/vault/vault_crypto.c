/*
 * vault_crypto.c — AES-256-GCM sealing for the vault (OpenSSL 3 EVP). One format for every
 * record and for wrapped data keys: a fresh 96-bit random nonce, the ciphertext, the 128-bit
 * tag. The caller's AAD binds a record to its place (token, table, key id), so a ciphertext
 * copied to another row fails authentication instead of decrypting. Design: docs/vault.md.
 */
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "vault/vault_int.h"

int ks_vault_seal(const unsigned char key[KS_VAULT_KEY_BYTES], const void *aad, size_t aadlen,
                  const void *pt, size_t ptlen, unsigned char *out, size_t cap, size_t *outlen)
{
    *outlen = 0;
    if (ptlen > INT_MAX || aadlen > INT_MAX ||
        cap < KS_VAULT_NONCE_BYTES + ptlen + KS_VAULT_TAG_BYTES)
        return KS_ERR_LIMIT;
    int rc = KS_ERR_INTERNAL, len = 0;
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    if (!cx)
        return KS_ERR_NOMEM;
    unsigned char *nonce = out, *ct = out + KS_VAULT_NONCE_BYTES, *tag = ct + ptlen;
    if (RAND_bytes(nonce, KS_VAULT_NONCE_BYTES) != 1)
        goto out_free;
    if (EVP_EncryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, KS_VAULT_NONCE_BYTES, NULL) != 1 ||
        EVP_EncryptInit_ex(cx, NULL, NULL, key, nonce) != 1)
        goto out_free;
    if (aadlen && EVP_EncryptUpdate(cx, NULL, &len, aad, (int)aadlen) != 1)
        goto out_free;
    if (EVP_EncryptUpdate(cx, ct, &len, pt, (int)ptlen) != 1 || (size_t)len != ptlen)
        goto out_free;
    if (EVP_EncryptFinal_ex(cx, ct + len, &len) != 1 || len != 0)
        goto out_free;
    if (EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_GET_TAG, KS_VAULT_TAG_BYTES, tag) != 1)
        goto out_free;
    *outlen = KS_VAULT_NONCE_BYTES + ptlen + KS_VAULT_TAG_BYTES;
    rc = KS_OK;
out_free:
    EVP_CIPHER_CTX_free(cx); /* wipes the expanded key schedule */
    if (rc != KS_OK)
        OPENSSL_cleanse(out, cap);
    return rc;
}

int ks_vault_unseal(const unsigned char key[KS_VAULT_KEY_BYTES], const void *aad, size_t aadlen,
                    const unsigned char *in, size_t inlen, unsigned char *pt, size_t cap,
                    size_t *ptlen)
{
    *ptlen = 0;
    if (inlen < KS_VAULT_NONCE_BYTES + KS_VAULT_TAG_BYTES || inlen > INT_MAX || aadlen > INT_MAX)
        return KS_ERR_INTERNAL;
    size_t ctlen = inlen - KS_VAULT_NONCE_BYTES - KS_VAULT_TAG_BYTES;
    if (cap < ctlen)
        return KS_ERR_LIMIT;
    const unsigned char *nonce = in, *ct = in + KS_VAULT_NONCE_BYTES, *tag = ct + ctlen;
    int rc = KS_ERR_INTERNAL, len = 0;
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    if (!cx)
        return KS_ERR_NOMEM;
    if (EVP_DecryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, KS_VAULT_NONCE_BYTES, NULL) != 1 ||
        EVP_DecryptInit_ex(cx, NULL, NULL, key, nonce) != 1)
        goto out_free;
    if (aadlen && EVP_DecryptUpdate(cx, NULL, &len, aad, (int)aadlen) != 1)
        goto out_free;
    if (EVP_DecryptUpdate(cx, pt, &len, ct, (int)ctlen) != 1 || (size_t)len != ctlen)
        goto out_free;
    /* OpenSSL's API takes a non-const tag pointer for the SET call; it only reads it. */
    if (EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_TAG, KS_VAULT_TAG_BYTES, (void *)tag) != 1)
        goto out_free;
    if (EVP_DecryptFinal_ex(cx, pt + len, &len) != 1)
        goto out_free; /* authentication failed: the plaintext is wiped below */
    *ptlen = ctlen;
    rc = KS_OK;
out_free:
    EVP_CIPHER_CTX_free(cx);
    if (rc != KS_OK)
        OPENSSL_cleanse(pt, cap);
    return rc;
}
