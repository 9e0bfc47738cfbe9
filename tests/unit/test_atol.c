/*
 * test_atol.c — the ATOL Online v5 adapter (receipts/atol.h) and credentials by reference
 * (receipts/credentials.h). Design note: docs/receipts-atol.md.
 *
 * Suite atol: the pure parts (answers read, verdicts, failure codes, scrubbing, URLs).
 * Suite atol_fake: the adapter's process() against tests/harness/fake_atol.py, started as a
 * child process for each test (the working directory is the repository root, as for the other
 * suites) and steered through its control endpoint. Every intent and error is checked for the
 * password, and so is the adapter's log.
 * Suite atol_credentials: the named secrets on the test store (unit_store.h: SQLite, or the
 * shared PostgreSQL of KASSA_TEST_STORE with random names); the vault that seals them keeps its
 * keys in a private SQLite store, so its master key never meets another test's.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ids.h"
#include "receipts/atol.h"
#include "receipts/credentials.h"
#include "receipts/fiscal.h"
#include "store/sql.h"
#include "store/store.h"
#include "unit_store.h"
#include "vault/vault.h"

#define PASSWORD "pa55-Very-Secret-w0rd"
#define LOGIN "kassa-login"
#define GROUP "group1"
#define FAKE_START_MS 5000
#define STEPS_MAX 10 /* steps one test drives a session through, at most */

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    cr_assert_not_null(v, "%s: %s", text, e.text);
    return v;
}

/* --- pure parts ------------------------------------------------------------------------------ */

static enum ks_atol_verdict verdict_of(long status, const char *body)
{
    struct ks_atol_reply r;
    char why[128];
    cr_assert_eq(ks_atol_reply_parse(body, strlen(body), status, &r, why, sizeof(why)), KS_OK,
                 "%s: %s", body, why);
    enum ks_atol_verdict v = ks_atol_classify(&r);
    ks_atol_reply_release(&r);
    return v;
}

Test(atol, answers_map_to_verdicts)
{
    cr_assert_eq(verdict_of(200, "{\"uuid\":\"u1\",\"status\":\"wait\",\"error\":null}"),
                 KS_ATOL_WAIT);
    cr_assert_eq(verdict_of(200, "{\"uuid\":\"u1\",\"status\":\"done\",\"payload\":{\"total\":1}}"),
                 KS_ATOL_DONE);
    cr_assert_eq(verdict_of(200, "{\"uuid\":\"u1\",\"status\":\"done\"}"), KS_ATOL_RETRY,
                 "done without a payload is not an answer yet");
    cr_assert_eq(verdict_of(200, "{\"uuid\":\"u1\",\"status\":\"fail\",\"error\":{\"code\":1,"
                                 "\"text\":\"x\"}}"),
                 KS_ATOL_FAILED);
    cr_assert_eq(verdict_of(401, "{\"error\":{\"code\":11,\"text\":\"expired\"}}"),
                 KS_ATOL_TOKEN_EXPIRED);
    cr_assert_eq(verdict_of(400, "{\"uuid\":\"u0\",\"error\":{\"code\":33,\"text\":\"x\"}}"),
                 KS_ATOL_DUPLICATE);
    cr_assert_eq(verdict_of(400, "{\"error\":{\"code\":\"34\",\"text\":\"not ready\"}}"),
                 KS_ATOL_WAIT);
    cr_assert_eq(verdict_of(401, "{\"error\":{\"code\":12,\"text\":\"bad login\"}}"),
                 KS_ATOL_FAILED);
    cr_assert_eq(verdict_of(503, "{\"error\":{\"code\":11}}"), KS_ATOL_UNREACHABLE);
    cr_assert_eq(verdict_of(429, "{}"), KS_ATOL_RETRY);
    cr_assert_eq(verdict_of(404, "{}"), KS_ATOL_FAILED);
    cr_assert_eq(verdict_of(200, "{}"), KS_ATOL_RETRY);
    cr_assert_eq(verdict_of(0, "{\"uuid\":\"u1\",\"status\":\"done\",\"payload\":{}}"),
                 KS_ATOL_DONE, "a callback body has no HTTP status");
}

Test(atol, malformed_answers_are_refused_without_quoting_them)
{
    const char *bad[] = {"",
                         "[1]",
                         "not json " PASSWORD,
                         "{\"status\":\"maybe\"}",
                         "{\"error\":\"x\"}",
                         "{\"uuid\":\"a/b\"}",
                         "{\"payload\":[1]}",
                         "{\"uuid\":7}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ks_atol_reply r;
        char why[128] = "";
        cr_expect_eq(ks_atol_reply_parse(bad[i], strlen(bad[i]), 200, &r, why, sizeof(why)),
                     KS_ERR_INVALID, "%s", bad[i]);
        cr_expect_null(strstr(why, PASSWORD));
        ks_atol_reply_release(&r);
    }
}

Test(atol, failure_codes_and_texts)
{
    struct ks_atol_reply r;
    char why[64], code[64];
    const char *body = "{\"status\":\"fail\",\"error\":{\"code\":32,\"text\":\"bad\\ninn\"}}";
    cr_assert_eq(ks_atol_reply_parse(body, strlen(body), 200, &r, why, sizeof(why)), KS_OK);
    ks_atol_failure_code(&r, code, sizeof(code));
    cr_assert_str_eq(code, "fiscal_failed:32");
    cr_assert_str_eq(r.text, "bad inn", "control characters are blanked");
    ks_atol_reply_release(&r);
    cr_assert_eq(ks_atol_reply_parse("{}", 2, 404, &r, why, sizeof(why)), KS_OK);
    ks_atol_failure_code(&r, code, sizeof(code));
    cr_assert_str_eq(code, "fiscal_failed:http_404");
    ks_atol_reply_release(&r);
    cr_assert_eq(ks_atol_reply_parse("{\"status\":\"fail\"}", 17, 200, &r, why, sizeof(why)),
                 KS_OK);
    ks_atol_failure_code(&r, code, sizeof(code));
    cr_assert_str_eq(code, "fiscal_failed:unknown");
    ks_atol_reply_release(&r);
}

Test(atol, scrub_hides_secrets_and_bounds_text)
{
    const char *secrets[] = {PASSWORD, "tok123", NULL};
    char out[64];
    ks_atol_scrub("login failed for pass " PASSWORD " with tok123.", secrets, 3, out, sizeof(out));
    cr_assert_str_eq(out, "login failed for pass *** with ***.");
    char tiny[8];
    ks_atol_scrub("abcdefghijkl", NULL, 0, tiny, sizeof(tiny));
    cr_assert_str_eq(tiny, "abcdefg");
    ks_atol_scrub("\xd0\x9e\xd1\x88", NULL, 0, tiny, 4); /* "Ош" cut inside a letter */
    cr_assert_str_eq(tiny, "\xd0\x9e");
    ks_atol_scrub(NULL, NULL, 0, tiny, sizeof(tiny));
    cr_assert_str_eq(tiny, "");
}

Test(atol, urls_are_https_or_loopback_http)
{
    cr_assert(ks_atol_url_allowed("https://online.atol.ru/possystem/v5"));
    cr_assert(ks_atol_url_allowed("http://127.0.0.1:8080/possystem/v5"));
    cr_assert(ks_atol_url_allowed("http://localhost/x"));
    cr_assert(ks_atol_url_allowed("http://[::1]:9/x"));
    cr_assert_not(ks_atol_url_allowed("http://online.atol.ru/possystem/v5"));
    cr_assert_not(ks_atol_url_allowed("http://127.example.com/"));
    cr_assert_not(ks_atol_url_allowed("ftp://127.0.0.1/"));
    cr_assert_not(ks_atol_url_allowed(""));
    cr_assert_not(ks_atol_url_allowed(NULL));
}

/* --- the fake ATOL service ------------------------------------------------------------------ */

static struct fake {
    pid_t pid;
    int port;
    char base[96];    /* ATOL's base URL at the fake */
    char control[64]; /* its control endpoint */
    char log_path[64];
    FILE *log_file;
    struct ks_log log;
} fk;

static void fake_start(void)
{
    memset(&fk, 0, sizeof(fk));
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fk.pid = fork();
    cr_assert(fk.pid >= 0);
    if (fk.pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl("/usr/bin/python3", "python3", "tests/harness/fake_atol.py", "--login", LOGIN,
              "--password", PASSWORD, "--group", GROUP, "--callback-delay-ms", "50", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[32] = "";
    size_t n = 0;
    while (n + 1 < sizeof(line)) { /* the port, alone on the first line */
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        cr_assert_gt(poll(&p, 1, FAKE_START_MS), 0, "fake_atol.py did not start");
        ssize_t got = read(fds[0], line + n, 1);
        cr_assert_eq(got, 1, "fake_atol.py ended before telling its port");
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    close(fds[0]);
    fk.port = atoi(line);
    cr_assert_gt(fk.port, 0, "fake_atol.py said '%s'", line);
    snprintf(fk.base, sizeof(fk.base), "http://127.0.0.1:%d/possystem/v5", fk.port);
    snprintf(fk.control, sizeof(fk.control), "http://127.0.0.1:%d/control", fk.port);
    snprintf(fk.log_path, sizeof(fk.log_path), "/tmp/kassa-atol-log-XXXXXX");
    int fd = mkstemp(fk.log_path);
    cr_assert(fd >= 0);
    fk.log_file = fdopen(fd, "w+");
    cr_assert_not_null(fk.log_file);
    ks_log_init(&fk.log, fk.log_file, KS_LOG_DEBUG);
}

/* Whether the adapter's log holds the password. */
static int log_has_password(void)
{
    fflush(fk.log_file);
    rewind(fk.log_file);
    char line[4096];
    int found = 0;
    for (int i = 0; i < 10000 && fgets(line, sizeof(line), fk.log_file); i++)
        found |= strstr(line, PASSWORD) != NULL;
    return found;
}

static void fake_stop(void)
{
    if (fk.pid > 0) {
        kill(fk.pid, SIGTERM);
        waitpid(fk.pid, NULL, 0);
    }
    if (fk.log_file) {
        cr_expect_not(log_has_password(), "the password is in the adapter's log");
        ks_log_release(&fk.log);
        fclose(fk.log_file);
        unlink(fk.log_path);
    }
}

TestSuite(atol_fake, .init = fake_start, .fini = fake_stop, .timeout = 30);

static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    char *buf = userdata;
    size_t have = strlen(buf), n = size * nmemb;
    if (have + n >= 256 * 1024)
        return 0;
    memcpy(buf + have, ptr, n);
    buf[have + n] = '\0';
    return n;
}

/* POSTs `body` to the fake's control endpoint (GET when NULL); returns the answer's JSON. */
static json_t *fake_control(const char *body)
{
    static char buf[256 * 1024];
    buf[0] = '\0';
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    curl_easy_setopt(c, CURLOPT_URL, fk.control);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, buf);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK, "control %s", body ? body : "GET");
    curl_easy_cleanup(c);
    return J(buf);
}

static void control(const char *body)
{
    json_decref(fake_control(body));
}

static int64_t seen_int(const char *key)
{
    json_t *v = fake_control(NULL);
    int64_t n = json_integer_value(json_object_get(v, key));
    json_decref(v);
    return n;
}

static size_t seen_documents(void)
{
    json_t *v = fake_control(NULL);
    size_t n = json_array_size(json_object_get(v, "documents"));
    json_decref(v);
    return n;
}

/* One session's steps against the fake. */
struct sess {
    struct ks_atol *atol;
    char id[40];
    const char *operation;
    const char *public_url;
    const char *password;
    int64_t request_timeout_ms;
    const char *url; /* NULL: the fake's */
    json_t *state;   /* adapterState of the last intent */
    char tag[64];
};

static void sess_init(struct sess *s, struct ks_atol *a)
{
    memset(s, 0, sizeof(*s));
    s->atol = a;
    char rnd[17];
    cr_assert_eq(ks_id_random(rnd, 16), KS_OK);
    snprintf(s->id, sizeof(s->id), "r%s", rnd);
    s->operation = "sell";
    s->password = PASSWORD;
    s->request_timeout_ms = 3000;
}

static void no_password(const struct ks_adapter_intent *in, const char *err)
{
    cr_assert_null(strstr(err, PASSWORD), "the password is in an error: %s", err);
    json_t *j = ks_adapter_intent_to_json(in, "fiscal_failed:unknown");
    cr_assert_not_null(j);
    char *text = json_dumps(j, JSON_COMPACT);
    cr_assert_null(strstr(text, PASSWORD), "the password is in an intent: %s", text);
    free(text);
    json_decref(j);
}

/* Runs step `step` of the session (callback: `callback` is the body). Keeps the adapterState.
 * Returns process()'s code; `in` holds the intent (the caller releases it). */
static int run(struct sess *s, const char *step, const json_t *callback,
               struct ks_adapter_intent *in, char *err, size_t errlen)
{
    json_t *options =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:i}", "url", s->url ? s->url : fk.base, "groupCode",
                  GROUP, "login", LOGIN, "credentials", s->password, "requestTimeoutMs",
                  (json_int_t)s->request_timeout_ms, "reportTimeoutMs", 60000);
    json_t *payload = json_pack(
        "{s:s, s:s, s:{s:{s:s}, s:{s:s, s:s, s:s}, s:[{s:s, s:i, s:i, s:i}], "
        "s:[{s:i, s:i}], s:i}}",
        "external_id", s->id, "timestamp", "07.12.2026 12:00:00", "receipt", "client", "email",
        "payer@example.com", "company", "email", "shop@example.com", "inn", "7700000000",
        "payment_address", "https://shop.example", "items", "name", "tea", "price", 250, "quantity",
        2, "sum", 500, "payments", "type", 1, "sum", 500, "total", 500);
    json_t *within = json_object();
    snprintf(s->tag, sizeof(s->tag), "receipt~%s~n%d", s->id, rand() % 1000);
    struct ks_adapter_session ss = {
        .unit = KS_FISCAL_UNIT,
        .operation = s->operation,
        .step = step,
        .session_id = s->id,
        .subject = {.ns = KS_RECEIPT_NS, .id = s->id, .within = within},
        .provider_id = "g1",
        .options = options,
        .payload = payload,
        .callback = callback,
        .adapter_state = s->state,
        .callback_tag = s->tag,
        .public_url = s->public_url,
        .now_ms = 1765108800000LL,
    };
    memset(in, 0, sizeof(*in));
    err[0] = '\0';
    const struct ks_adapter *ad = ks_atol_adapter(s->atol);
    int rc = ad->process(ad->ctx, &ss, in, err, errlen);
    no_password(in, err);
    if (rc == KS_OK && in->adapter_state) {
        json_decref(s->state);
        s->state = json_incref(in->adapter_state);
    }
    json_decref(options);
    json_decref(payload);
    json_decref(within);
    return rc;
}

static void sess_release(struct sess *s)
{
    json_decref(s->state);
}

static struct ks_atol *atol_new(void)
{
    struct ks_atol *a = NULL;
    cr_assert_eq(ks_atol_create(&fk.log, &a), KS_OK);
    cr_assert_str_eq(ks_atol_adapter(a)->name, "atol");
    return a;
}

/* Runs inquire steps until the session finishes (at most STEPS_MAX). */
static void until_finish(struct sess *s, struct ks_adapter_intent *in, int *sleeps)
{
    char err[512];
    *sleeps = 0;
    for (int i = 0; i < STEPS_MAX; i++) {
        cr_assert_eq(run(s, "inquire", NULL, in, err, sizeof(err)), KS_OK, "%s", err);
        if (in->kind == KS_INTENT_FINISH)
            return;
        cr_assert_eq(in->kind, KS_INTENT_SLEEP);
        cr_assert_eq(in->sleep_ms, KS_ATOL_POLL_MS);
        ks_adapter_intent_release(in);
        (*sleeps)++;
    }
    cr_assert_fail("no finish after %d inquiries", STEPS_MAX);
}

static void expect_registered(const struct ks_adapter_intent *in, const char *uuid)
{
    cr_assert_eq(in->kind, KS_INTENT_FINISH);
    cr_assert(in->success, "%s: %s", in->failure_code, in->failure_reason);
    cr_assert_str_eq(json_string_value(json_object_get(in->trx, "id")), uuid);
    const json_t *p = json_object_get(json_object_get(in->trx, "extra"), "payload");
    cr_assert(json_is_object(p));
    cr_assert(json_is_integer(json_object_get(p, "fiscal_document_number")));
    cr_assert_str_eq(json_string_value(json_object_get(p, "fns_site")), "www.nalog.gov.ru");
    cr_assert_eq(json_integer_value(json_object_get(p, "total")), 500);
}

static const char *state_uuid(const struct sess *s)
{
    const char *u = json_string_value(json_object_get(s->state, "uuid"));
    cr_assert_not_null(u, "no uuid in adapterState");
    return u;
}

/* The first step of session `s` (made with `a`, or a new adapter when NULL): returns the
 * intent's kind. */
static enum ks_intent_kind begin(struct sess *s, struct ks_atol *a)
{
    sess_init(s, a ? a : atol_new());
    struct ks_adapter_intent in;
    char err[512];
    cr_assert_eq(run(s, "start", NULL, &in, err, sizeof(err)), KS_OK, "%s", err);
    enum ks_intent_kind kind = in.kind;
    ks_adapter_intent_release(&in);
    return kind;
}

/* Inquires until the session finishes and checks it registered; returns the sleeps. */
static int registered(struct sess *s)
{
    struct ks_adapter_intent in;
    int sleeps = 0;
    until_finish(s, &in, &sleeps);
    expect_registered(&in, state_uuid(s));
    ks_adapter_intent_release(&in);
    return sleeps;
}

static void end(struct sess *s, int free_adapter)
{
    sess_release(s);
    if (free_adapter)
        ks_atol_free(s->atol);
}

Test(atol_fake, token_then_sell_then_inquire_gives_the_fiscal_payload)
{
    control("{\"action\":\"wait\",\"polls\":1}");
    struct sess s;
    cr_assert_eq(begin(&s, NULL), KS_INTENT_SLEEP, "no public URL: poll");
    cr_assert_eq(registered(&s), 1, "one 'wait' report before done");

    json_t *seen = fake_control(NULL);
    cr_assert_eq(json_integer_value(json_object_get(seen, "token_calls")), 1, "one token, cached");
    json_t *doc = json_array_get(json_object_get(seen, "documents"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "external_id")), s.id);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "operation")), "sell");
    json_t *body = json_object_get(doc, "body");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(body, "receipt"), "total")),
                 500);
    cr_assert_null(json_object_get(body, "service"), "no callback without a public URL");
    json_decref(seen);
    end(&s, 1);
}

/* Runs a callback step with `body`; returns process()'s code, `in` released unless kept. */
static int callback_step(struct sess *s, const char *body, struct ks_adapter_intent *in)
{
    json_t *cb = J(body);
    char err[512];
    int rc = run(s, "callback", cb, in, err, sizeof(err));
    json_decref(cb);
    return rc;
}

Test(atol_fake, with_a_public_url_it_suspends_and_reads_the_callback)
{
    struct sess s;
    sess_init(&s, atol_new());
    s.public_url = "http://127.0.0.1:9"; /* nothing listens: the fake's callback POST fails */
    struct ks_adapter_intent in;
    char err[512];
    cr_assert_eq(run(&s, "start", NULL, &in, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_eq(in.kind, KS_INTENT_SUSPEND);
    cr_assert_str_eq(in.tag, s.tag);
    cr_assert_eq(in.timeout_ms, 60000);
    ks_adapter_intent_release(&in);
    char want[160];
    snprintf(want, sizeof(want), "http://127.0.0.1:9/v2/callbacks/%s", s.tag);
    json_t *seen = fake_control(NULL);
    json_t *doc = json_array_get(json_object_get(seen, "documents"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(doc, "body"), "service"), "callback_url")),
                     want);
    json_decref(seen);

    /* what ATOL posts to the callback URL: the report */
    char report[512];
    snprintf(report, sizeof(report),
             "{\"uuid\":\"%s\",\"status\":\"done\",\"error\":null,\"external_id\":\"%s\","
             "\"payload\":{\"fiscal_document_number\":7,\"fns_site\":\"www.nalog.gov.ru\","
             "\"total\":500}}",
             state_uuid(&s), s.id);
    cr_assert_eq(callback_step(&s, report, &in), KS_OK);
    expect_registered(&in, state_uuid(&s));
    ks_adapter_intent_release(&in);
    cr_assert_eq(callback_step(&s, "{\"uuid\":\"else\",\"status\":\"done\",\"payload\":{}}", &in),
                 KS_ERR_CONFLICT, "a report about another document");
    ks_adapter_intent_release(&in);
    cr_assert_eq(callback_step(&s, "{\"uuid\":\"x\",\"status\":\"maybe\"}", &in), KS_ERR_INVALID);
    ks_adapter_intent_release(&in);
    end(&s, 1);
}

Test(atol_fake, an_expired_token_is_fetched_again_once)
{
    struct sess s;
    begin(&s, NULL);
    cr_assert_eq(seen_int("token_calls"), 1);
    control("{\"action\":\"expire_tokens\"}");
    registered(&s);
    cr_assert_eq(seen_int("token_calls"), 2, "one new token after error 11");
    end(&s, 1);
}

Test(atol_fake, a_repeated_start_reads_the_first_document_33)
{
    control("{\"action\":\"wait\",\"polls\":0}");
    struct sess s;
    begin(&s, NULL);
    char first[KS_ATOL_UUID_BYTES_MAX + 1];
    snprintf(first, sizeof(first), "%s", state_uuid(&s));
    /* the same session started again (a lease ran out): ATOL answers 33 with the uuid */
    json_decref(s.state);
    s.state = NULL;
    struct ks_adapter_intent in;
    char err[512];
    cr_assert_eq(run(&s, "start", NULL, &in, err, sizeof(err)), KS_OK, "%s", err);
    expect_registered(&in, first);
    ks_adapter_intent_release(&in);
    cr_assert_eq(seen_documents(), 1, "registered once");
    end(&s, 1);
}

Test(atol_fake, not_ready_34_sleeps)
{
    control("{\"action\":\"wait\",\"polls\":2,\"style\":\"error34\"}");
    struct sess s;
    begin(&s, NULL);
    cr_assert_eq(registered(&s), 2, "each 34 is a sleep");
    end(&s, 1);
}

Test(atol_fake, a_permanent_error_fails_with_its_code_and_text)
{
    control("{\"action\":\"fail_next\",\"code\":40,\"text\":\"Invalid INN (" PASSWORD ")\"}");
    struct sess s;
    begin(&s, NULL);
    struct ks_adapter_intent in;
    int sleeps = 0;
    until_finish(&s, &in, &sleeps);
    cr_assert_not(in.success);
    cr_assert_str_eq(in.failure_code, "fiscal_failed:40");
    cr_assert_str_eq(in.failure_reason, "Invalid INN (***)", "the echoed password is hidden");
    ks_adapter_intent_release(&in);
    end(&s, 0);

    control("{\"action\":\"fail_next\",\"code\":32,\"text\":\"bad document\",\"at\":\"accept\"}");
    sess_init(&s, s.atol);
    char err[512];
    cr_assert_eq(run(&s, "start", NULL, &in, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_eq(in.kind, KS_INTENT_FINISH);
    cr_assert_str_eq(in.failure_code, "fiscal_failed:32");
    cr_assert_str_eq(in.failure_reason, "bad document");
    ks_adapter_intent_release(&in);
    end(&s, 1);
}

/* Starts session `s` and expects it to finish failed with `code`. */
static void expect_failed(struct sess *s, const char *code)
{
    struct ks_adapter_intent in;
    char err[512];
    cr_assert_eq(run(s, "start", NULL, &in, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_eq(in.kind, KS_INTENT_FINISH);
    cr_assert_not(in.success);
    cr_assert_str_eq(in.failure_code, code);
    ks_adapter_intent_release(&in);
}

Test(atol_fake, a_wrong_password_fails_without_showing_it)
{
    struct sess s;
    sess_init(&s, atol_new());
    s.password = "not-the-" PASSWORD;
    expect_failed(&s, "fiscal_failed:12");
    cr_assert_eq(seen_int("tokens_refused"), 1);
    cr_assert_eq(seen_documents(), 0);
    end(&s, 0);

    sess_init(&s, s.atol);
    s.password = "";
    struct ks_adapter_intent in;
    char err[512];
    cr_assert_eq(run(&s, "start", NULL, &in, err, sizeof(err)), KS_ERR_INVALID);
    cr_assert(strstr(err, "credentialsRef") != NULL, "%s", err);
    ks_adapter_intent_release(&in);
    end(&s, 1);
}

Test(atol_fake, a_service_that_is_down_is_register_unreachable)
{
    struct ks_atol *a = atol_new();
    struct sess s;
    const char *modes[] = {"{\"action\":\"down\",\"mode\":\"refuse\"}",
                           "{\"action\":\"down\",\"mode\":\"503\"}",
                           "{\"action\":\"down\",\"mode\":\"hang\"}"};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        control(modes[i]);
        sess_init(&s, a);
        s.request_timeout_ms = 300;
        expect_failed(&s, KS_FISCAL_UNREACHABLE);
        end(&s, 0);
    }
    /* nothing listening at all: the connection is refused */
    sess_init(&s, a);
    s.url = "http://127.0.0.1:9/possystem/v5";
    expect_failed(&s, KS_FISCAL_UNREACHABLE);
    end(&s, 0);
    /* back up: the same adapter registers again */
    control("{\"action\":\"down\",\"mode\":\"up\"}");
    cr_assert_eq(begin(&s, a), KS_INTENT_SLEEP);
    end(&s, 1);
}

Test(atol_fake, an_inquiry_without_a_uuid_sends_again_safely)
{
    struct sess s;
    begin(&s, NULL);
    json_decref(s.state);
    s.state = NULL;
    registered(&s);
    cr_assert_eq(seen_documents(), 1);
    end(&s, 1);
}

/* --- credentials by reference --------------------------------------------------------------- */

static struct cred_fx {
    char url[1024], dir[64];
    char vdir[64], vault_url[128], key_path[128];
    struct ks_store *store, *vault_store;
    struct ks_vault *vault;
    char prefix[16]; /* names unique to this run, on a shared store */
} cx;

static void cred_setup(void)
{
    memset(&cx, 0, sizeof(cx));
    unit_store_url(cx.url, sizeof(cx.url), cx.dir, sizeof(cx.dir));
    char why[512] = "";
    cr_assert_eq(ks_store_open(cx.url, NULL, &cx.store, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(ks_fiscal_credentials_migrate(cx.store, why, sizeof(why)), KS_OK, "%s", why);
    snprintf(cx.vdir, sizeof(cx.vdir), "/tmp/kassa-fcred-XXXXXX");
    cr_assert_not_null(mkdtemp(cx.vdir));
    snprintf(cx.vault_url, sizeof(cx.vault_url), "sqlite:%s/vault.db", cx.vdir);
    snprintf(cx.key_path, sizeof(cx.key_path), "%s/master.key", cx.vdir);
    cr_assert_eq(ks_store_open(cx.vault_url, NULL, &cx.vault_store, why, sizeof(why)), KS_OK, "%s",
                 why);
    struct ks_vault_options vo = {.store = cx.vault_store, .master_key_path = cx.key_path};
    cr_assert_eq(ks_vault_open(&vo, &cx.vault, why, sizeof(why)), KS_OK, "%s", why);
    char rnd[9];
    cr_assert_eq(ks_id_random(rnd, 8), KS_OK);
    snprintf(cx.prefix, sizeof(cx.prefix), "t%s", rnd);
}

static void cred_teardown(void)
{
    ks_vault_close(cx.vault);
    ks_store_close(cx.vault_store);
    ks_store_close(cx.store);
    unit_store_remove(cx.dir);
    unit_store_remove(cx.vdir);
}

TestSuite(atol_credentials, .init = cred_setup, .fini = cred_teardown, .timeout = 30);

struct sealed_arg {
    const char *name;
    char sealed[4096];
};

static int sealed_rx(struct ks_sql *db, void *p)
{
    struct sealed_arg *a = p;
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "SELECT sealed FROM fiscal_credentials WHERE name = ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->name);
    rc = ks_sql_step(q) == KS_SQL_ROW && ks_sql_col_copy(q, 0, a->sealed, sizeof(a->sealed))
             ? KS_OK
             : KS_ERR_NOT_FOUND;
    int done = ks_sql_done(q);
    return rc != KS_OK ? rc : done;
}

struct names {
    char prefix[16];
    int n;
    char first[80];
};

static int name_seen(void *ctx, const char *name)
{
    struct names *ns = ctx;
    if (strncmp(name, ns->prefix, strlen(ns->prefix)) == 0) {
        if (!ns->n)
            snprintf(ns->first, sizeof(ns->first), "%s", name);
        ns->n++;
    }
    return KS_OK;
}

Test(atol_credentials, put_get_list_delete)
{
    char a[80], b[80], buf[128];
    snprintf(a, sizeof(a), "%s.atol-main", cx.prefix);
    snprintf(b, sizeof(b), "%s.atol-spare", cx.prefix);
    size_t len = 0;
    cr_assert_eq(ks_fiscal_credentials_get(cx.store, cx.vault, a, buf, sizeof(buf), &len),
                 KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, a, PASSWORD, strlen(PASSWORD)),
                 KS_OK);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, b, "old", 3), KS_OK);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, b, "new-one", 7), KS_OK,
                 "put replaces");
    cr_assert_eq(ks_fiscal_credentials_get(cx.store, cx.vault, a, buf, sizeof(buf), &len), KS_OK);
    cr_assert_eq(len, strlen(PASSWORD));
    cr_assert_str_eq(buf, PASSWORD);
    cr_assert_eq(ks_fiscal_credentials_get(cx.store, cx.vault, b, buf, sizeof(buf), &len), KS_OK);
    cr_assert_str_eq(buf, "new-one");
    cr_assert_eq(ks_fiscal_credentials_get(cx.store, cx.vault, a, buf, 4, &len), KS_ERR_LIMIT);

    /* only cipher text in the table */
    struct sealed_arg sa = {.name = a};
    cr_assert_eq(ks_sql_read(cx.store, sealed_rx, &sa), KS_OK);
    cr_assert(strlen(sa.sealed) > 0);
    cr_assert_null(strstr(sa.sealed, PASSWORD));

    struct names ns = {.n = 0};
    snprintf(ns.prefix, sizeof(ns.prefix), "%s", cx.prefix);
    int more = -1;
    cr_assert_eq(ks_fiscal_credentials_list(cx.store, name_seen, &ns, &more), KS_OK);
    cr_assert_eq(ns.n, 2);
    cr_assert_str_eq(ns.first, a, "in name order");
    cr_assert_eq(more, 0);

    cr_assert_eq(ks_fiscal_credentials_delete(cx.store, a), KS_OK);
    cr_assert_eq(ks_fiscal_credentials_delete(cx.store, a), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_fiscal_credentials_get(cx.store, cx.vault, a, buf, sizeof(buf), &len),
                 KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_fiscal_credentials_delete(cx.store, b), KS_OK);
}

Test(atol_credentials, options_get_the_credentials_added)
{
    char name[80];
    snprintf(name, sizeof(name), "%s.opts", cx.prefix);
    json_t *options = J("{\"url\":\"https://online.atol.ru/possystem/v5\",\"login\":\"l\"}");
    json_t *with = NULL;
    cr_assert_eq(ks_fiscal_credentials_options(cx.store, cx.vault, options, name, &with),
                 KS_ERR_NOT_FOUND);
    cr_assert_null(with);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, name, PASSWORD, strlen(PASSWORD)),
                 KS_OK);
    cr_assert_eq(ks_fiscal_credentials_options(cx.store, cx.vault, options, name, &with), KS_OK);
    cr_assert_str_eq(json_string_value(json_object_get(with, "credentials")), PASSWORD);
    cr_assert_str_eq(json_string_value(json_object_get(with, "login")), "l");
    cr_assert_null(json_object_get(options, "credentials"), "the group's options stay as they are");
    json_decref(with);
    json_t *array = J("[]");
    cr_assert_eq(ks_fiscal_credentials_options(cx.store, cx.vault, array, name, &with),
                 KS_ERR_INVALID);
    json_decref(array);
    json_decref(options);
    cr_assert_eq(ks_fiscal_credentials_delete(cx.store, name), KS_OK);
}

Test(atol_credentials, names_and_secrets_are_checked)
{
    cr_assert(ks_fiscal_credentials_name_ok("atol.main_1-x"));
    const char *bad[] = {
        "",  "a b", "a/b",
        "ä", NULL,  "12345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_not(ks_fiscal_credentials_name_ok(bad[i]));
        cr_expect_eq(ks_fiscal_credentials_put(cx.store, cx.vault, bad[i], "x", 1), KS_ERR_INVALID);
    }
    char name[80];
    snprintf(name, sizeof(name), "%s.x", cx.prefix);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, name, "", 0), KS_ERR_INVALID);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, name, "a\0b", 3), KS_ERR_INVALID);
    static char big[KS_FISCAL_CREDENTIAL_BYTES_MAX + 1];
    memset(big, 'x', sizeof(big));
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, name, big, sizeof(big)),
                 KS_ERR_LIMIT);
}

Test(atol_credentials, a_row_moved_to_another_name_does_not_open)
{
    char a[80], b[80], buf[64];
    snprintf(a, sizeof(a), "%s.a", cx.prefix);
    snprintf(b, sizeof(b), "%s.b", cx.prefix);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, a, "secret-a", 8), KS_OK);
    cr_assert_eq(ks_fiscal_credentials_put(cx.store, cx.vault, b, "secret-b", 8), KS_OK);
    struct sealed_arg sa = {.name = a};
    cr_assert_eq(ks_sql_read(cx.store, sealed_rx, &sa), KS_OK);
    size_t len = 0;
    unsigned char *plain = NULL;
    size_t n = 0;
    cr_assert_neq(
        ks_vault_secret_open(cx.vault, KS_FISCAL_CREDENTIALS_PURPOSE, b, sa.sealed, &plain, &n),
        KS_OK, "sealed for a, opened as b");
    free(plain);
    cr_assert_eq(ks_fiscal_credentials_get(cx.store, cx.vault, b, buf, sizeof(buf), &len), KS_OK);
    cr_assert_str_eq(buf, "secret-b");
    cr_assert_eq(ks_fiscal_credentials_delete(cx.store, a), KS_OK);
    cr_assert_eq(ks_fiscal_credentials_delete(cx.store, b), KS_OK);
}

/* --- the command ----------------------------------------------------------------------------
 * On a private SQLite store: the command opens the vault on --store, whose data keys belong to
 * the master key it is given. */

/* Runs `kassa receipts credentials ARGS...` with `input` on standard input; returns its exit
 * code. argv gets --store and --vault-master-key-file of the fixture. */
static int cli(const char *input, const char *w1, const char *w2)
{
    char store[160], key[160];
    snprintf(store, sizeof(store), "--store=%s", cx.vault_url);
    snprintf(key, sizeof(key), "--vault-master-key-file=%s", cx.key_path);
    char *argv[8];
    int argc = 0;
    argv[argc++] = "credentials";
    argv[argc++] = (char *)w1;
    if (w2)
        argv[argc++] = (char *)w2;
    argv[argc++] = store;
    argv[argc++] = key;
    argv[argc++] = "--log-level=error";
    argv[argc] = NULL;
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    ssize_t w = write(fds[1], input, strlen(input));
    cr_assert_eq(w, (ssize_t)strlen(input));
    close(fds[1]);
    int saved = dup(STDIN_FILENO);
    cr_assert_eq(dup2(fds[0], STDIN_FILENO), STDIN_FILENO);
    close(fds[0]);
    clearerr(stdin);
    int rc = ks_fiscal_credentials_cli(argc, argv);
    cr_assert_eq(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
    clearerr(stdin);
    return rc;
}

Test(atol_credentials, the_command_puts_lists_and_deletes)
{
    cr_assert_eq(cli(PASSWORD "\n", "put", "atol-main"), 0);
    cr_assert_eq(cli("", "list", NULL), 0);
    char buf[128];
    size_t len = 0;
    cr_assert_eq(ks_fiscal_credentials_migrate(cx.vault_store, buf, sizeof(buf)), KS_OK);
    cr_assert_eq(
        ks_fiscal_credentials_get(cx.vault_store, cx.vault, "atol-main", buf, sizeof(buf), &len),
        KS_OK);
    cr_assert_str_eq(buf, PASSWORD, "the line end is not part of the secret");
    cr_assert_eq(cli("", "put", "atol-main"), 2, "no secret on stdin");
    cr_assert_eq(cli("x\n", "put", "bad/name"), 2);
    cr_assert_eq(cli("", "rotate", NULL), 2);
    cr_assert_eq(cli("", "delete", "atol-main"), 0);
    cr_assert_eq(cli("", "delete", "atol-main"), 1, "nothing left to delete");
}

/* --- many workers, one adapter --------------------------------------------------------------- */

#define WORKERS_N 4

struct worker {
    struct ks_atol *a;
    int ok;
};

static void *worker_run(void *p)
{
    struct worker *w = p;
    struct sess s;
    sess_init(&s, w->a);
    struct ks_adapter_intent in;
    char err[512];
    w->ok = run(&s, "start", NULL, &in, err, sizeof(err)) == KS_OK && in.kind == KS_INTENT_SLEEP;
    ks_adapter_intent_release(&in);
    for (int i = 0; w->ok && i < STEPS_MAX; i++) {
        w->ok = run(&s, "inquire", NULL, &in, err, sizeof(err)) == KS_OK;
        int done = in.kind == KS_INTENT_FINISH && in.success;
        ks_adapter_intent_release(&in);
        if (done)
            break;
    }
    sess_release(&s);
    return NULL;
}

Test(atol_fake, workers_share_the_adapter_and_its_token)
{
    struct ks_atol *a = atol_new();
    struct sess warm; /* one token first, so that every worker finds it cached */
    cr_assert_eq(begin(&warm, a), KS_INTENT_SLEEP);
    end(&warm, 0);
    struct worker w[WORKERS_N];
    pthread_t th[WORKERS_N];
    for (int i = 0; i < WORKERS_N; i++) {
        w[i] = (struct worker){.a = a};
        cr_assert_eq(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < WORKERS_N; i++) {
        pthread_join(th[i], NULL);
        cr_expect(w[i].ok, "worker %d", i);
    }
    cr_assert_eq(seen_int("token_calls"), 1);
    cr_assert_eq(seen_documents(), WORKERS_N + 1);
    ks_atol_free(a);
}

Test(atol_fake, an_unknown_operation_is_refused_before_any_request)
{
    struct sess s;
    sess_init(&s, atol_new());
    s.operation = "sell/../x";
    struct ks_adapter_intent in;
    char err[512];
    cr_assert_eq(run(&s, "start", NULL, &in, err, sizeof(err)), KS_ERR_INVALID);
    ks_adapter_intent_release(&in);
    cr_assert_eq(seen_int("token_calls"), 0);
    end(&s, 1);
}
