/*
 * export_int.h — what the export's files share inside src/export/ (and with its unit tests):
 * writing one file set durably and reading the manifests of a directory (files.c, used by the
 * writer's restart, `export run` and `export verify`), and the store steps (export.c).
 */
#ifndef KS_EXPORT_EXPORT_INT_H
#define KS_EXPORT_EXPORT_INT_H

#include <openssl/evp.h>
#include <stdio.h>

#include "export/export.h"

/* One file set being written: NNNNNN.csv and NNNNNN.jsonl under temporary names, hashed as they
 * are written. */
struct ex_set {
    char dir[KS_EXPORT_PATH_BYTES_MAX];
    char csv_tmp[KS_EXPORT_PATH_BYTES_MAX], jsonl_tmp[KS_EXPORT_PATH_BYTES_MAX];
    char man_tmp[KS_EXPORT_PATH_BYTES_MAX];
    FILE *csv, *jsonl;
    EVP_MD_CTX *h_csv, *h_jsonl;
    struct ks_export_manifest m;
};

/* Starts file set `seq` in `dir`: creates the temporary files (truncating what a crashed attempt
 * left) and writes the CSV header. KS_ERR_IO (errno kept), KS_ERR_NOMEM, KS_ERR_LIMIT for a path
 * too long. On error nothing is left open. */
KS_MUST_USE int ex_set_begin(struct ex_set *s, const char *dir, int64_t seq);
/* Appends one operation to both files and to the manifest's totals. */
KS_MUST_USE int ex_set_add(struct ex_set *s, const struct ks_export_op *op);
/* Finishes the set for window [from, to): fsyncs the data files, writes and fsyncs the manifest,
 * renames the data files and then the manifest into place (the manifest last: it marks the set
 * complete), and fsyncs the directory. Closes everything, also on error. */
KS_MUST_USE int ex_set_commit(struct ex_set *s, int64_t from_ms, int64_t to_ms, int64_t now_ms);
/* Abandons a set: closes and removes its temporary files. */
void ex_set_abort(struct ex_set *s);

/* Reads `dir`/NNNNNN.manifest.json of `seq`: KS_ERR_NOT_FOUND when there is none, KS_ERR_INVALID
 * (with `why`) when it is not a manifest of that sequence, KS_ERR_IO. */
KS_MUST_USE int ex_manifest_read(const char *dir, int64_t seq, struct ks_export_manifest *m,
                                 char *why, size_t whylen);
/* Checks that the data files of `m` in `dir` have the sizes and SHA-256 it names: KS_OK, or
 * KS_ERR_INVALID with `why`. */
KS_MUST_USE int ex_manifest_check_files(const char *dir, const struct ks_export_manifest *m,
                                        char *why, size_t whylen);
/* The sequence numbers of the manifests in `dir`, ascending, up to `cap` into `seqs`; `*n` how
 * many there are (KS_ERR_LIMIT past `cap`). A missing directory has none. */
KS_MUST_USE int ex_manifest_list(const char *dir, int64_t *seqs, size_t cap, size_t *n);

/* Records `ops` in export_operations in one transaction, each at most once (by op_id), its
 * window time max(finished, the seal read under the seal's lock). The relay's effect; also
 * called by tests. */
KS_MUST_USE int ex_record(struct ks_store *store, const struct ks_export_op *ops, size_t n,
                          int64_t now_ms);
/* Raises export_state.sealed_ms to `to_ms` (never lowers it), durably. */
KS_MUST_USE int ex_seal(struct ks_store *store, int64_t to_ms, int64_t now_ms);
/* Writes the operations recorded in [from, to) as file set `seq` of `dir` (created if missing);
 * `*rows` gets their number. The window must be sealed. */
KS_MUST_USE int ex_write_window(struct ks_store *store, const char *dir, int64_t seq,
                                int64_t from_ms, int64_t to_ms, int64_t now_ms, int64_t *rows);

/* SHA-256 of a whole file as hex, with its size. KS_ERR_IO. */
KS_MUST_USE int ex_file_sha256(const char *path, char hex[65], int64_t *bytes);

#endif
