/*
 * files.c — export file sets on disk (export_int.h): written under temporary names, fsynced,
 * renamed with the manifest last, the directory fsynced; and the manifests read back. Design
 * note: export.h and docs/export.md ("Guarantees").
 */
#include "export/export_int.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int path_in(char *out, size_t cap, const char *dir, const char *name, const char *pre,
                   const char *post)
{
    int n = snprintf(out, cap, "%s/%s%s%s", dir, pre, name, post);
    return n > 0 && (size_t)n < cap ? KS_OK : KS_ERR_LIMIT;
}

static void hex_of(const unsigned char *md, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

static int hash_final(EVP_MD_CTX *h, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(h, md, &n) != 1 || n != 32)
        return KS_ERR_INTERNAL;
    hex_of(md, hex);
    return KS_OK;
}

static int put_hashed(FILE *f, EVP_MD_CTX *h, const char *data, size_t len, int64_t *bytes)
{
    if (fwrite(data, 1, len, f) != len || EVP_DigestUpdate(h, data, len) != 1)
        return KS_ERR_IO;
    *bytes += (int64_t)len;
    return KS_OK;
}

/* fflush + fsync + fclose; KS_ERR_IO if any fails. Closes in every case. */
static int close_synced(FILE **f)
{
    int rc = KS_OK;
    if (!*f)
        return KS_OK;
    if (fflush(*f) != 0 || fsync(fileno(*f)) != 0)
        rc = KS_ERR_IO;
    if (fclose(*f) != 0)
        rc = KS_ERR_IO;
    *f = NULL;
    return rc;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return KS_ERR_IO;
    int rc = fsync(fd) == 0 ? KS_OK : KS_ERR_IO;
    close(fd);
    return rc;
}

int ex_set_begin(struct ex_set *s, const char *dir, int64_t seq)
{
    assert(s && dir && seq >= 1);
    memset(s, 0, sizeof(*s));
    if (seq > KS_EXPORT_SEQ_MAX)
        return KS_ERR_LIMIT;
    char csv[32], jsonl[32], man[32];
    ks_export_file_names(seq, csv, jsonl, man);
    int rc;
    if (snprintf(s->dir, sizeof(s->dir), "%s", dir) >= (int)sizeof(s->dir) ||
        (rc = path_in(s->csv_tmp, sizeof(s->csv_tmp), dir, csv, ".", ".tmp")) != KS_OK ||
        (rc = path_in(s->jsonl_tmp, sizeof(s->jsonl_tmp), dir, jsonl, ".", ".tmp")) != KS_OK ||
        (rc = path_in(s->man_tmp, sizeof(s->man_tmp), dir, man, ".", ".tmp")) != KS_OK)
        return KS_ERR_LIMIT;
    s->m.seq = seq;
    s->h_csv = EVP_MD_CTX_new();
    s->h_jsonl = EVP_MD_CTX_new();
    if (!s->h_csv || !s->h_jsonl) {
        rc = KS_ERR_NOMEM;
        goto out_fail;
    }
    if (EVP_DigestInit_ex(s->h_csv, EVP_sha256(), NULL) != 1 ||
        EVP_DigestInit_ex(s->h_jsonl, EVP_sha256(), NULL) != 1) {
        rc = KS_ERR_INTERNAL;
        goto out_fail;
    }
    s->csv = fopen(s->csv_tmp, "we");
    s->jsonl = fopen(s->jsonl_tmp, "we");
    if (!s->csv || !s->jsonl) {
        rc = KS_ERR_IO;
        goto out_fail;
    }
    const char *hdr = ks_export_csv_header();
    if ((rc = put_hashed(s->csv, s->h_csv, hdr, strlen(hdr), &s->m.csv_bytes)) != KS_OK)
        goto out_fail;
    return KS_OK;
out_fail:
    ex_set_abort(s);
    return rc;
}

int ex_set_add(struct ex_set *s, const struct ks_export_op *op)
{
    char line[KS_EXPORT_LINE_BYTES_MAX];
    size_t len = 0;
    int rc;
    if (s->m.rows >= KS_EXPORT_FILE_ROWS_MAX)
        return KS_ERR_LIMIT;
    if ((rc = ks_export_csv_row(op, line, sizeof(line), &len)) != KS_OK ||
        (rc = put_hashed(s->csv, s->h_csv, line, len, &s->m.csv_bytes)) != KS_OK ||
        (rc = ks_export_jsonl_row(op, line, sizeof(line), &len)) != KS_OK ||
        (rc = put_hashed(s->jsonl, s->h_jsonl, line, len, &s->m.jsonl_bytes)) != KS_OK)
        return rc;
    return ks_export_manifest_add(&s->m, op);
}

int ex_set_commit(struct ex_set *s, int64_t from_ms, int64_t to_ms, int64_t now_ms)
{
    assert(from_ms < to_ms);
    char csv[32], jsonl[32], man[32], path[KS_EXPORT_PATH_BYTES_MAX];
    char *text = NULL;
    FILE *mf = NULL;
    int rc;
    s->m.from_ms = from_ms;
    s->m.to_ms = to_ms;
    s->m.written_ms = now_ms;
    if ((rc = hash_final(s->h_csv, s->m.csv_sha256)) != KS_OK ||
        (rc = hash_final(s->h_jsonl, s->m.jsonl_sha256)) != KS_OK)
        goto out;
    if ((rc = close_synced(&s->csv)) != KS_OK || (rc = close_synced(&s->jsonl)) != KS_OK)
        goto out;
    if (!(text = ks_export_manifest_json(&s->m))) {
        rc = KS_ERR_NOMEM;
        goto out;
    }
    if (!(mf = fopen(s->man_tmp, "we")) || fputs(text, mf) < 0 || fputc('\n', mf) == EOF) {
        rc = KS_ERR_IO;
        goto out;
    }
    if ((rc = close_synced(&mf)) != KS_OK)
        goto out;
    ks_export_file_names(s->m.seq, csv, jsonl, man);
    /* data files first, the manifest last: a set counts once its manifest is in place */
    if ((rc = path_in(path, sizeof(path), s->dir, csv, "", "")) != KS_OK ||
        rename(s->csv_tmp, path) != 0 ||
        (rc = path_in(path, sizeof(path), s->dir, jsonl, "", "")) != KS_OK ||
        rename(s->jsonl_tmp, path) != 0 ||
        (rc = path_in(path, sizeof(path), s->dir, man, "", "")) != KS_OK ||
        rename(s->man_tmp, path) != 0) {
        rc = rc != KS_OK ? rc : KS_ERR_IO;
        goto out;
    }
    rc = fsync_dir(s->dir);
out:
    if (mf)
        fclose(mf);
    free(text);
    if (rc != KS_OK)
        ex_set_abort(s);
    EVP_MD_CTX_free(s->h_csv);
    EVP_MD_CTX_free(s->h_jsonl);
    s->h_csv = s->h_jsonl = NULL;
    return rc;
}

void ex_set_abort(struct ex_set *s)
{
    if (s->csv)
        fclose(s->csv);
    if (s->jsonl)
        fclose(s->jsonl);
    s->csv = s->jsonl = NULL;
    if (s->csv_tmp[0])
        unlink(s->csv_tmp);
    if (s->jsonl_tmp[0])
        unlink(s->jsonl_tmp);
    if (s->man_tmp[0])
        unlink(s->man_tmp);
    EVP_MD_CTX_free(s->h_csv);
    EVP_MD_CTX_free(s->h_jsonl);
    s->h_csv = s->h_jsonl = NULL;
}

int ex_file_sha256(const char *path, char hex[65], int64_t *bytes)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return KS_ERR_IO;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    int rc = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1 ? KS_OK : KS_ERR_NOMEM;
    char buf[64 * 1024];
    size_t n;
    *bytes = 0;
    while (rc == KS_OK && (n = fread(buf, 1, sizeof(buf), f)) > 0) {
        if (EVP_DigestUpdate(h, buf, n) != 1)
            rc = KS_ERR_INTERNAL;
        *bytes += (int64_t)n;
    }
    if (rc == KS_OK && ferror(f))
        rc = KS_ERR_IO;
    if (rc == KS_OK)
        rc = hash_final(h, hex);
    EVP_MD_CTX_free(h);
    fclose(f);
    return rc;
}

int ex_manifest_read(const char *dir, int64_t seq, struct ks_export_manifest *m, char *why,
                     size_t whylen)
{
    char csv[32], jsonl[32], man[32], path[KS_EXPORT_PATH_BYTES_MAX];
    ks_export_file_names(seq, csv, jsonl, man);
    if (path_in(path, sizeof(path), dir, man, "", "") != KS_OK)
        return KS_ERR_LIMIT;
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT ? KS_ERR_NOT_FOUND : KS_ERR_IO;
    char *text = malloc(KS_EXPORT_MANIFEST_BYTES_MAX + 1);
    int rc = KS_ERR_NOMEM;
    if (text) {
        size_t n = fread(text, 1, KS_EXPORT_MANIFEST_BYTES_MAX + 1, f);
        text[n > KS_EXPORT_MANIFEST_BYTES_MAX ? KS_EXPORT_MANIFEST_BYTES_MAX : n] = '\0';
        if (ferror(f))
            rc = KS_ERR_IO;
        else if (n > KS_EXPORT_MANIFEST_BYTES_MAX)
            rc = KS_ERR_INVALID,
            snprintf(why, whylen, "larger than %d bytes", KS_EXPORT_MANIFEST_BYTES_MAX);
        else
            rc = ks_export_manifest_parse(text, m, why, whylen);
    }
    if (rc == KS_OK && m->seq != seq) {
        snprintf(why, whylen, "its sequence is %" PRId64 ", its name says %" PRId64, m->seq, seq);
        rc = KS_ERR_INVALID;
    }
    free(text);
    fclose(f);
    return rc;
}

int ex_manifest_check_files(const char *dir, const struct ks_export_manifest *m, char *why,
                            size_t whylen)
{
    char names[3][32], path[KS_EXPORT_PATH_BYTES_MAX], hex[65];
    ks_export_file_names(m->seq, names[0], names[1], names[2]);
    for (int i = 0; i < 2; i++) {
        int64_t bytes = 0;
        const char *want = i == 0 ? m->csv_sha256 : m->jsonl_sha256;
        int64_t want_bytes = i == 0 ? m->csv_bytes : m->jsonl_bytes;
        if (path_in(path, sizeof(path), dir, names[i], "", "") != KS_OK)
            return KS_ERR_LIMIT;
        if (ex_file_sha256(path, hex, &bytes) != KS_OK) {
            snprintf(why, whylen, "%s cannot be read", names[i]);
            return KS_ERR_INVALID;
        }
        if (bytes != want_bytes || strcmp(hex, want) != 0) {
            snprintf(why, whylen,
                     "%s does not match its manifest: %" PRId64 " bytes, SHA-256 %.16s..., the "
                     "manifest says %" PRId64 " bytes, %.16s...",
                     names[i], bytes, hex, want_bytes, want);
            return KS_ERR_INVALID;
        }
    }
    return KS_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int ex_manifest_list(const char *dir, int64_t *seqs, size_t cap, size_t *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? KS_OK : KS_ERR_IO;
    int rc = KS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        size_t digits = strspn(name, "0123456789");
        if (digits < 6 || digits > 9 || strcmp(name + digits, ".manifest.json") != 0)
            continue;
        if (*n >= cap) {
            rc = KS_ERR_LIMIT;
            break;
        }
        seqs[(*n)++] = strtoll(name, NULL, 10);
    }
    closedir(d);
    qsort(seqs, *n, sizeof(*seqs), cmp_i64);
    return rc;
}
