/*
 * cli.c — `kassa config get | put | validate | history` (docs/configuration-domain.md,
 * "The command line").
 *
 * The commands open the store (--store / KASSA_STORE, as `kassa serve`) and run an engine in
 * this process without background threads, so they work beside a running server: a put made
 * here is seen by the server's next read, and the server's own puts re-check the store.
 *
 * `get` prints {"revision","createdAt","author","reason","document"}; `put` accepts that same
 * wrapper (taking --base from its "revision" unless given) or a bare document, so
 *   kassa config get > c.json; $EDITOR c.json; kassa config put c.json
 * refuses the edit if someone else changed the configuration meanwhile.
 */
#include "config/config_int.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/parse.h"
#include "core/clock.h"
#include "core/json.h"
#include "store/store.h"

enum {
    CLI_OK = 0,
    CLI_FAILURE = 1, /* runtime: store, file, no such revision */
    CLI_USAGE = 2,
    CLI_INVALID = 3,  /* the document is invalid */
    CLI_CONFLICT = 4, /* the base revision is not the current one */
};

enum { F_STORE = 1, F_REVISION, F_DOCUMENT, F_BASE, F_REASON, F_AUTHOR, F_AFTER, F_LIMIT };

struct cli {
    const char *cmd;
    const char *store;
    const char *file;
    const char *reason;
    const char *author;
    int64_t revision; /* get: 0 = current */
    int64_t base;     /* put: -1 = not given */
    int64_t after;
    int64_t limit;
    int document_only;
    unsigned seen; /* flags given, as bits (1u << F_*) */
};

/* The default store URL of `kassa serve`, for the help text (set by ks_config_cli). */
static const char *usage_store_default = "";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kassa config <command> [flags]\n"
            "\n"
            "commands:\n"
            "  get [--revision N] [--document]\n"
            "      print the current configuration (or revision N) as JSON:\n"
            "      {revision, createdAt, author, reason, document}; --document: the document only\n"
            "  put FILE [--base N] [--reason TEXT] [--author NAME]\n"
            "      validate FILE and store it as a new revision based on revision N; prints the\n"
            "      new revision. FILE is a document or the output of `get` (then N defaults to\n"
            "      its revision). --author defaults to cli:$USER\n"
            "  validate FILE\n"
            "      check FILE without storing it (no store needed)\n"
            "  history [--after N] [--limit N]\n"
            "      list revisions after N (default 0), at most --limit (default 100), without\n"
            "      their documents\n"
            "\n"
            "flags:\n"
            "  --store URL   KASSA_STORE, default %s\n"
            "\n"
            "exit codes:\n"
            "  0  success\n"
            "  1  runtime failure (store, file, no such revision)\n"
            "  2  usage error\n"
            "  3  the document is invalid (the message names the bad path)\n"
            "  4  the base revision is not the current one (someone changed it meanwhile)\n",
            usage_store_default);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kassa config: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n\n");
    va_end(ap);
    usage(stderr);
    return CLI_USAGE;
}

static int int_flag(const char *name, const char *text, int64_t min, int64_t max, int64_t *out)
{
    if (ks_parse_int64(text, min, max, out) != KS_OK) {
        fprintf(stderr, "kassa config: --%s must be an integer from %lld to %lld\n\n", name,
                (long long)min, (long long)max);
        usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* Parses argv (argv[0] = "config"). */
static int cli_parse(int argc, char **argv, const char *store_default, struct cli *c)
{
    static const struct option longs[] = {
        {"store", required_argument, NULL, F_STORE},
        {"revision", required_argument, NULL, F_REVISION},
        {"document", no_argument, NULL, F_DOCUMENT},
        {"base", required_argument, NULL, F_BASE},
        {"reason", required_argument, NULL, F_REASON},
        {"author", required_argument, NULL, F_AUTHOR},
        {"after", required_argument, NULL, F_AFTER},
        {"limit", required_argument, NULL, F_LIMIT},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    memset(c, 0, sizeof(*c));
    c->base = -1;
    c->limit = 100;
    if (argc < 2)
        return usage_error("%s", "a command is required (get, put, validate, history)");
    c->cmd = argv[1];
    if (strcmp(c->cmd, "help") == 0 || strcmp(c->cmd, "--help") == 0 || strcmp(c->cmd, "-h") == 0) {
        usage(stdout);
        exit(CLI_OK);
    }
    /* getopt sees the command as its argv[0]; it moves positional arguments to the end. */
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    optind = 0;
    opterr = 0;
    int rc;
    for (int guard = 0; guard <= sub_argc; guard++) {
        int ch = getopt_long(sub_argc, sub_argv, "h", longs, NULL);
        if (ch == -1)
            break;
        if (ch == 'h') {
            usage(stdout);
            exit(CLI_OK);
        }
        if (ch < F_STORE || ch > F_LIMIT)
            return usage_error("unknown flag or missing value: %s",
                               optind - 1 < sub_argc ? sub_argv[optind - 1] : "?");
        c->seen |= 1u << ch;
        switch (ch) {
        case F_STORE: c->store = optarg; break;
        case F_DOCUMENT: c->document_only = 1; break;
        case F_REASON: c->reason = optarg; break;
        case F_AUTHOR: c->author = optarg; break;
        case F_REVISION:
            if ((rc = int_flag("revision", optarg, 1, INT64_MAX, &c->revision)) != CLI_OK)
                return rc;
            break;
        case F_BASE:
            if ((rc = int_flag("base", optarg, 0, INT64_MAX, &c->base)) != CLI_OK)
                return rc;
            break;
        case F_AFTER:
            if ((rc = int_flag("after", optarg, 0, INT64_MAX, &c->after)) != CLI_OK)
                return rc;
            break;
        case F_LIMIT:
            if ((rc = int_flag("limit", optarg, 1, KS_CONFIG_HISTORY_PAGE_MAX, &c->limit)) !=
                CLI_OK)
                return rc;
            break;
        }
    }
    int positional = sub_argc - optind;
    unsigned allowed;
    int files = 0;
    if (strcmp(c->cmd, "get") == 0) {
        allowed = 1u << F_STORE | 1u << F_REVISION | 1u << F_DOCUMENT;
    } else if (strcmp(c->cmd, "put") == 0) {
        allowed = 1u << F_STORE | 1u << F_BASE | 1u << F_REASON | 1u << F_AUTHOR;
        files = 1;
    } else if (strcmp(c->cmd, "validate") == 0) {
        allowed = 0;
        files = 1;
    } else if (strcmp(c->cmd, "history") == 0) {
        allowed = 1u << F_STORE | 1u << F_AFTER | 1u << F_LIMIT;
    } else {
        return usage_error("unknown command: %s", c->cmd);
    }
    if (c->seen & ~allowed)
        return usage_error("a flag given does not apply to `%s`", c->cmd);
    if (positional != files)
        return files ? usage_error("`%s` takes one FILE", c->cmd)
                     : usage_error("`%s` takes no arguments", c->cmd);
    if (files)
        c->file = sub_argv[optind];
    if (!c->store)
        c->store = getenv("KASSA_STORE");
    if (!c->store)
        c->store = store_default;
    if (!c->store || !c->store[0])
        return usage_error("%s", "--store must not be empty");
    return CLI_OK;
}

/* Reads and parses a JSON file of at most KS_CONFIG_FILE_BYTES_MAX bytes. */
static int file_load(const char *path, json_t **out)
{
    char why[512] = "";
    int rc = ks_config_load_file(path, out, why, sizeof(why));
    if (rc == KS_OK)
        return CLI_OK;
    fprintf(stderr, "kassa config: %s\n", why);
    return rc == KS_ERR_LIMIT || rc == KS_ERR_INVALID ? CLI_INVALID : CLI_FAILURE;
}

/* A file printed by `get` is {revision, createdAt, author, reason, document}: unwrap it. A
 * bare document cannot have a "document" member (it is no section), so the two never mix. */
static int unwrap(json_t *file, const json_t **doc, int64_t *revision)
{
    static const char *const keys[] = {"revision", "createdAt", "author",
                                       "reason",   "document",  NULL};
    *doc = file;
    *revision = -1;
    json_t *inner = json_is_object(file) ? json_object_get(file, "document") : NULL;
    if (!inner)
        return CLI_OK;
    const char *key;
    json_t *val;
    json_object_foreach(file, key, val)
    {
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], key) != 0)
            i++;
        if (!keys[i]) {
            fprintf(stderr,
                    "kassa config: the file has \"document\" and also \"%.64s\": give a "
                    "bare document or the output of `kassa config get`\n",
                    key);
            return CLI_INVALID;
        }
    }
    json_t *rev = json_object_get(file, "revision");
    if (rev && (!json_is_integer(rev) || json_integer_value(rev) < 0)) {
        fprintf(stderr, "kassa config: \"revision\" in the file must be a non-negative integer\n");
        return CLI_INVALID;
    }
    *doc = inner;
    if (rev)
        *revision = (int64_t)json_integer_value(rev);
    return CLI_OK;
}

static void print_json(const json_t *v)
{
    char *text = json_dumps(v, JSON_INDENT(2));
    if (text) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
}

static json_t *time_json(int64_t ms)
{
    char buf[40];
    ks_time_rfc3339(ms, buf, sizeof(buf));
    return json_string(buf);
}

/* --- the commands ------------------------------------------------------------------------- */

struct session {
    struct ks_log log;
    struct ks_store *store;
    struct ks_engine *engine;
};

static int session_open(const struct cli *c, struct session *s)
{
    memset(s, 0, sizeof(*s));
    ks_log_init(&s->log, stderr, KS_LOG_WARN);
    char why[256] = "";
    struct ks_store_options so = {.readers = 2, .sqlite_synchronous_full = 1};
    if (ks_store_open(c->store, &so, &s->store, why, sizeof(why)) != KS_OK) {
        fprintf(stderr, "kassa config: cannot open the store: %s\n", why);
        goto fail;
    }
    struct ks_engine_options eo = {.store = s->store, .log = &s->log};
    int rc = ks_engine_create(&eo, &s->engine);
    if (rc == KS_OK)
        rc = ks_config_register(s->engine);
    if (rc == KS_OK)
        rc = ks_engine_run(s->engine, 0);
    if (rc != KS_OK) {
        fprintf(stderr, "kassa config: cannot start the engine: %s\n", ks_err_text(rc));
        goto fail;
    }
    return CLI_OK;
fail:
    if (s->engine)
        ks_engine_free(s->engine);
    ks_store_close(s->store);
    ks_log_release(&s->log);
    return CLI_FAILURE;
}

static void session_close(struct session *s)
{
    ks_engine_free(s->engine);
    ks_store_close(s->store);
    ks_log_release(&s->log);
}

static int cmd_get(const struct cli *c)
{
    struct session s;
    if (session_open(c, &s) != CLI_OK)
        return CLI_FAILURE;
    struct ks_config_rev r;
    int rc = ks_config_get(s.engine, c->revision, &r);
    int ret = CLI_OK;
    if (rc == KS_ERR_NOT_FOUND) {
        if (c->revision)
            fprintf(stderr, "kassa config: there is no revision %lld\n", (long long)c->revision);
        else
            fprintf(stderr, "kassa config: no configuration yet (`kassa serve` installs the "
                            "sandbox one; or `kassa config put FILE --base 0`)\n");
        ret = CLI_FAILURE;
    } else if (rc != KS_OK) {
        fprintf(stderr, "kassa config: cannot read the configuration: %s\n", ks_err_text(rc));
        ret = CLI_FAILURE;
    } else {
        json_t *out = c->document_only ? json_incref(r.document)
                                       : json_pack("{s:I, s:o, s:s, s:s, s:O}", "revision",
                                                   (json_int_t)r.revision, "createdAt",
                                                   time_json(r.created_at_ms), "author", r.author,
                                                   "reason", r.reason, "document", r.document);
        if (out)
            print_json(out);
        else
            ret = CLI_FAILURE;
        json_decref(out);
        ks_config_rev_release(&r);
    }
    session_close(&s);
    return ret;
}

static int cmd_validate(const struct cli *c)
{
    json_t *file;
    int rc = file_load(c->file, &file);
    if (rc != CLI_OK)
        return rc;
    const json_t *doc;
    int64_t revision;
    if ((rc = unwrap(file, &doc, &revision)) == CLI_OK) {
        char why[KS_CONFIG_WHY_BYTES];
        int vrc = ks_config_validate(doc, why, sizeof(why));
        if (vrc == KS_OK) {
            printf("valid\n");
        } else {
            fprintf(stderr, "kassa config: %s\n", vrc == KS_ERR_REJECTED ? why : ks_err_text(vrc));
            rc = vrc == KS_ERR_REJECTED ? CLI_INVALID : CLI_FAILURE;
        }
    }
    json_decref(file);
    return rc;
}

/* cli:$USER when $USER is a plain name, else cli. */
static void default_author(char *out, size_t outlen)
{
    const char *user = getenv("USER");
    char why[64];
    if (user && *user && strlen(user) <= 64 &&
        ks_config_text_check("user", user, 64, 1, why, sizeof(why)) == KS_OK)
        snprintf(out, outlen, "cli:%s", user);
    else
        snprintf(out, outlen, "cli");
}

static int cmd_put(const struct cli *c)
{
    json_t *file;
    int rc = file_load(c->file, &file);
    if (rc != CLI_OK)
        return rc;
    const json_t *doc;
    int64_t file_revision, base = c->base;
    if ((rc = unwrap(file, &doc, &file_revision)) != CLI_OK)
        goto out_file;
    if (base < 0)
        base = file_revision;
    if (base < 0) {
        json_decref(file);
        return usage_error("%s", "--base N is required: the revision your file was edited "
                                 "from (`kassa config get` prints it; 0 for the first)");
    }
    char author_buf[KS_CONFIG_AUTHOR_BYTES_MAX + 1];
    const char *author = c->author;
    if (!author) {
        default_author(author_buf, sizeof(author_buf));
        author = author_buf;
    }

    struct session s;
    if (session_open(c, &s) != CLI_OK) {
        rc = CLI_FAILURE;
        goto out_file;
    }
    char why[KS_CONFIG_WHY_BYTES] = "";
    int64_t revision = 0;
    int prc = ks_config_put(s.engine, base, doc, author, c->reason, &revision, why, sizeof(why));
    switch (prc) {
    case KS_OK:
        printf("%lld\n", (long long)revision);
        rc = CLI_OK;
        break;
    case KS_ERR_REJECTED:
        fprintf(stderr, "kassa config: invalid configuration: %s\n", why);
        rc = CLI_INVALID;
        break;
    case KS_ERR_CONFLICT:
        fprintf(stderr, "kassa config: revision conflict: %s\n", why);
        rc = CLI_CONFLICT;
        break;
    case KS_ERR_INVALID:
        fprintf(stderr, "kassa config: %s\n", why);
        rc = CLI_USAGE;
        break;
    default:
        fprintf(stderr, "kassa config: cannot store the configuration: %s\n",
                why[0] ? why : ks_err_text(prc));
        rc = CLI_FAILURE;
    }
    session_close(&s);
out_file:
    json_decref(file);
    return rc;
}

static int cmd_history(const struct cli *c)
{
    struct session s;
    if (session_open(c, &s) != CLI_OK)
        return CLI_FAILURE;
    int ret = CLI_FAILURE;
    size_t n = 0;
    int64_t current = 0;
    struct ks_config_rev *revs = calloc((size_t)c->limit, sizeof(*revs));
    if (!revs) {
        fprintf(stderr, "kassa config: out of memory\n");
        goto out;
    }
    int rc = ks_config_history(s.engine, c->after, (size_t)c->limit, revs, &n, &current);
    if (rc != KS_OK) {
        fprintf(stderr, "kassa config: cannot read the history: %s\n", ks_err_text(rc));
        goto out;
    }
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *item = json_pack("{s:I, s:o, s:s, s:s}", "revision", (json_int_t)revs[i].revision,
                                 "createdAt", time_json(revs[i].created_at_ms), "author",
                                 revs[i].author, "reason", revs[i].reason);
        if (!item || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *out = json_pack("{s:I, s:o}", "current", (json_int_t)current, "revisions", list);
    if (out) {
        print_json(out);
        ret = CLI_OK;
    }
    json_decref(out);
out:
    free(revs);
    session_close(&s);
    return ret;
}

int ks_config_cli(int argc, char **argv, const char *store_default)
{
    struct cli c;
    usage_store_default = store_default ? store_default : "";
    int rc = cli_parse(argc, argv, store_default, &c);
    if (rc != CLI_OK)
        return rc;
    if (strcmp(c.cmd, "get") == 0)
        return cmd_get(&c);
    if (strcmp(c.cmd, "put") == 0)
        return cmd_put(&c);
    if (strcmp(c.cmd, "validate") == 0)
        return cmd_validate(&c);
    return cmd_history(&c);
}
