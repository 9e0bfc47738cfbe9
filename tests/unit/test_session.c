/*
 * test_session.c — the generic provider session contract (units/adapter.h: the JSON forms of a
 * step and an intent), the session unit (units/session.h: adapters by name, secrets resolved
 * only for adapters that may receive them, retries, the answered hook), the acquiring unit's
 * mapping (units/acquiring.h), and the remote adapter's HTTP client (units/adapters/remote.h)
 * against a small HTTP server in this file (127.0.0.1, bounded in connections and time).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/json.h"
#include "units/acquiring.h"
#include "units/adapter.h"
#include "units/adapters/remote.h"
#include "units/session.h"

/* --- the JSON forms ------------------------------------------------------------------------ */

static json_t *step_json(const char *extra)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"unit\":\"acquiring\",\"operation\":\"authorize\",\"step\":\"start\","
             "\"session\":\"inv1.1.authorize.0\",\"subject\":{\"namespace\":\"invoice\","
             "\"id\":\"inv1\",\"within\":{\"payment\":\"1\"}},\"provider\":\"p\","
             "\"terminal\":\"t\",\"adapter\":\"fake\",\"options\":{},\"payload\":{\"amount\":"
             "100,\"currency\":\"RUB\"},\"callbackTag\":\"invoice~inv1~N1\"%s}",
             extra ? extra : "");
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    cr_assert_not_null(j, "%s", e.text);
    return j;
}

Test(session_json, a_step_reads_back_and_bad_members_are_named)
{
    json_t *j = step_json(NULL);
    struct ks_adapter_session s;
    char err[256];
    cr_assert_eq(ks_adapter_session_from_json(j, &s, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_str_eq(s.operation, "authorize");
    cr_assert_str_eq(s.subject.id, "inv1");
    cr_assert_str_eq(ks_json_get_str(s.subject.within, "payment"), "1");
    cr_assert_eq(json_integer_value(json_object_get(s.payload, "amount")), 100);
    cr_assert_null(s.secrets.card);
    json_decref(j);

    static const struct {
        const char *key;
        const char *value;
        const char *why;
    } bad[] = {
        {"step", "\"later\"", "step must be start, inquire or callback"},
        {"session", "\"a b\"", "session must be a string"},
        {"payload", "[]", "payload must be an object"},
        {"subject", "{\"namespace\":\"invoice\"}", "id is missing"},
        {"options", "7", "options must be an object"},
        {"unit", "null", "unit must be a string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = step_json(NULL);
        json_error_t e;
        json_object_set_new(j, bad[i].key, json_loads(bad[i].value, JSON_DECODE_ANY, &e));
        cr_assert_eq(ks_adapter_session_from_json(j, &s, err, sizeof(err)), KS_ERR_INVALID, "%s",
                     bad[i].key);
        cr_assert(strstr(err, bad[i].why) != NULL, "%s: %s", bad[i].key, err);
        json_decref(j);
    }
    j = step_json(NULL);
    json_object_set_new(j, "step", json_string("callback"));
    cr_assert_eq(ks_adapter_session_from_json(j, &s, err, sizeof(err)), KS_ERR_INVALID);
    cr_assert(strstr(err, "callback") != NULL, "%s", err);
    json_decref(j);
}

Test(session_json, the_wire_form_carries_the_card_only_when_resolved)
{
    json_t *j = step_json(NULL);
    struct ks_adapter_session s;
    char err[256];
    cr_assert_eq(ks_adapter_session_from_json(j, &s, err, sizeof(err)), KS_OK, "%s", err);
    json_t *out = NULL;
    cr_assert_eq(ks_adapter_session_to_json(&s, "https://k/v2/callbacks/x", &out), KS_OK);
    cr_assert_eq(json_object_size(json_object_get(out, "secrets")), 0);
    cr_assert_str_eq(ks_json_get_str(out, "callbackUrl"), "https://k/v2/callbacks/x");
    cr_assert_eq(json_integer_value(json_object_get(out, "protocol")), 1);
    /* what kassa sends, kassa reads back */
    struct ks_adapter_session again;
    cr_assert_eq(ks_adapter_session_from_json(out, &again, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_str_eq(again.session_id, s.session_id);
    json_decref(out);
    struct ks_card card = {
        .pan = "4242424242424242", .exp_month = "12", .exp_year = "2031", .cvv = "123"};
    s.secrets.card = &card;
    cr_assert_eq(ks_adapter_session_to_json(&s, NULL, &out), KS_OK);
    json_t *c = json_object_get(json_object_get(out, "secrets"), "card");
    cr_assert_str_eq(ks_json_get_str(c, "pan"), "4242424242424242");
    cr_assert_str_eq(ks_json_get_str(c, "cvv"), "123");
    cr_assert_null(json_object_get(out, "callbackUrl"));
    json_decref(out);
    json_decref(j);
}

static int intent_of(const char *text, struct ks_adapter_intent *in, char *err, size_t errlen)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    cr_assert_not_null(j, "%s", text);
    memset(in, 0, sizeof(*in));
    int rc = ks_adapter_intent_from_json(j, in, err, errlen);
    json_decref(j);
    return rc;
}

Test(session_json, intents_are_read_strictly_and_written_back_the_same)
{
    static const char *const good[] = {
        "{\"intent\":\"finish\",\"success\":true,\"trx\":{\"id\":\"t1\",\"extra\":{\"rrn\":\"1\"}}"
        "}",
        "{\"intent\":\"finish\",\"success\":false,\"failure\":{\"code\":\"a:b\",\"reason\":\"r\"}}",
        "{\"intent\":\"sleep\",\"sleepMs\":2000,\"adapterState\":{\"s\":1}}",
        "{\"intent\":\"suspend\",\"tag\":\"invoice~i~n\",\"timeoutMs\":1000,\"interaction\":"
        "{\"interactionType\":\"Redirect\"},\"adapterState\":{\"s\":1}}",
    };
    char err[256];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct ks_adapter_intent in;
        cr_assert_eq(intent_of(good[i], &in, err, sizeof(err)), KS_OK, "%s: %s", good[i], err);
        json_t *back = ks_adapter_intent_to_json(&in, "x:unknown");
        json_error_t e;
        json_t *orig = json_loads(good[i], 0, &e);
        cr_assert(json_equal(back, orig), "%s", good[i]);
        json_decref(back);
        json_decref(orig);
        ks_adapter_intent_release(&in);
    }
    static const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"[]", "must be a JSON object"},
        {"{}", "intent is missing"},
        {"{\"intent\":\"wait\"}", "intent must be finish, sleep or suspend"},
        {"{\"intent\":\"finish\"}", "finish needs success"},
        {"{\"intent\":\"finish\",\"success\":false}", "needs failure {code, reason}"},
        {"{\"intent\":\"finish\",\"success\":false,\"failure\":{\"code\":\"\"}}", "failure.code"},
        {"{\"intent\":\"finish\",\"success\":true,\"failure\":{\"code\":\"a\"}}", "has no failure"},
        {"{\"intent\":\"finish\",\"success\":true,\"trx\":{}}", "trx must be an object {id"},
        {"{\"intent\":\"finish\",\"success\":true,\"card\":1}", "unknown member \"card\""},
        {"{\"intent\":\"sleep\",\"sleepMs\":0}", "sleepMs must be an integer of 1 to"},
        {"{\"intent\":\"sleep\",\"sleepMs\":86400001}", "sleepMs must be"},
        {"{\"intent\":\"suspend\",\"timeoutMs\":5}", "suspend.tag"},
        {"{\"intent\":\"suspend\",\"tag\":\"t\",\"timeoutMs\":5,\"interaction\":[]}",
         "interaction must be an object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ks_adapter_intent in;
        cr_assert_eq(intent_of(bad[i].text, &in, err, sizeof(err)), KS_ERR_INVALID, "%s",
                     bad[i].text);
        cr_assert(strstr(err, bad[i].why) != NULL, "%s: %s", bad[i].text, err);
        ks_adapter_intent_release(&in);
    }
    char url[64];
    cr_assert_eq(ks_adapter_callback_url("https://k.example/", "invoice~i~n", url, sizeof(url)),
                 KS_OK);
    cr_assert_str_eq(url, "https://k.example/v2/callbacks/invoice~i~n");
    cr_assert_eq(ks_adapter_callback_url("", "t", url, sizeof(url)), KS_ERR_INVALID);
    cr_assert_eq(ks_adapter_callback_url("https://k.example", "t", url, 10), KS_ERR_LIMIT);
}

/* --- the session unit ---------------------------------------------------------------------- */

static struct {
    int calls;
    int rc; /* what process returns */
    int saw_card;
    char pan[20];
    int resolves;
    int resolve_rc;
    int answered;
    unsigned answered_resolved;
} fake;

static int fake_process(void *ctx, const struct ks_adapter_session *s,
                        struct ks_adapter_intent *out, char *err, size_t errlen)
{
    fake.calls++;
    fake.saw_card = s->secrets.card != NULL;
    if (s->secrets.card)
        snprintf(fake.pan, sizeof(fake.pan), "%s", s->secrets.card->pan);
    if (fake.rc != KS_OK) {
        snprintf(err, errlen, "fake says no");
        return fake.rc;
    }
    out->kind = KS_INTENT_FINISH;
    out->success = 0; /* no code: the unit's default applies */
    return KS_OK;
}

static unsigned only_with_flag(void *ctx, const json_t *options)
{
    return json_is_true(json_object_get(options, "cards")) ? KS_ADAPTER_SECRET_CARD : 0;
}

static int fake_resolve(void *ctx, unsigned kind, const char *ref, int64_t now_ms,
                        struct ks_session_secret_values *out)
{
    fake.resolves++;
    if (fake.resolve_rc != KS_OK)
        return fake.resolve_rc;
    cr_assert_eq(kind, KS_ADAPTER_SECRET_CARD);
    cr_assert_str_eq(ref, "res-1");
    snprintf(out->card.pan, sizeof(out->card.pan), "4242424242424242");
    return KS_OK;
}

static void fake_answered(void *ctx, const char *task_id, const json_t *step,
                          const struct ks_adapter_session *s, unsigned resolved,
                          const struct ks_adapter_intent *in)
{
    fake.answered++;
    fake.answered_resolved = resolved;
}

static struct ks_session_unit *unit_with(const struct ks_adapter *ad)
{
    memset(&fake, 0, sizeof(fake));
    struct ks_session_unit_options o = {.name = "fiscal",
                                        .resolve = fake_resolve,
                                        .answered = fake_answered,
                                        .failure_default = "register_failed:unknown",
                                        .secret_gone_code = "register_failed:gone",
                                        .secret_gone_reason = "the secret is gone"};
    struct ks_session_unit *u = NULL;
    cr_assert_eq(ks_session_unit_create(&o, &u), KS_OK);
    cr_assert_eq(ks_session_unit_add_adapter(u, ad), KS_OK);
    cr_assert_eq(ks_session_unit_add_adapter(u, ad), KS_ERR_CONFLICT);
    struct ks_unit d;
    ks_session_unit_descriptor(u, &d);
    cr_assert_str_eq(d.name, "fiscal");
    cr_assert_eq(d.attempts_max, KS_SESSION_ATTEMPTS_MAX_DEFAULT);
    return u;
}

static enum ks_task_outcome run_step(struct ks_session_unit *u, json_t *args, json_t **result,
                                     char *err, size_t errlen)
{
    struct ks_task_view t = {.id = "task-1",
                             .ns = "invoice",
                             .machine_id = "inv1",
                             .unit = "fiscal",
                             .args = args,
                             .attempt = 1};
    *result = NULL;
    return ks_session_unit_run(u, &t, result, err, errlen);
}

Test(session_unit, secrets_reach_only_adapters_that_may_receive_them)
{
    struct ks_adapter ad = {.name = "fake",
                            .secrets = KS_ADAPTER_SECRET_CARD,
                            .secrets_for = only_with_flag,
                            .process = fake_process};
    struct ks_session_unit *u = unit_with(&ad);
    json_t *args = step_json(",\"secretRefs\":{\"card\":\"res-1\"}");
    json_t *result;
    char err[256];
    /* the provider's options do not allow the card: never resolved, never given */
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_OK, "%s", err);
    cr_assert_eq(fake.resolves, 0);
    cr_assert_eq(fake.calls, 1);
    cr_assert_not(fake.saw_card);
    cr_assert_eq(fake.answered_resolved, 0);
    cr_assert_str_eq(ks_json_get_str(json_object_get(result, "failure"), "code"),
                     "register_failed:unknown");
    json_decref(result);
    /* allowed: resolved and given, and the hook hears which kinds were */
    json_object_set_new(json_object_get(args, "options"), "cards", json_true());
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_OK, "%s", err);
    cr_assert_eq(fake.resolves, 1);
    cr_assert(fake.saw_card);
    cr_assert_str_eq(fake.pan, "4242424242424242");
    cr_assert_eq(fake.answered_resolved, KS_ADAPTER_SECRET_CARD);
    json_decref(result);
    /* an adapter kind that may never receive cards, whatever its options say */
    ad.secrets = 0;
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_OK, "%s", err);
    cr_assert_eq(fake.resolves, 1);
    cr_assert_not(fake.saw_card);
    json_decref(result);
    json_decref(args);
    ks_session_unit_free(u);
}

Test(session_unit, a_gone_secret_fails_the_step_and_errors_map_to_retries)
{
    struct ks_adapter ad = {
        .name = "fake", .secrets = KS_ADAPTER_SECRET_CARD, .process = fake_process};
    struct ks_session_unit *u = unit_with(&ad);
    json_t *args = step_json(",\"secretRefs\":{\"card\":\"res-1\"}");
    json_t *result;
    char err[256];
    fake.resolve_rc = KS_ERR_NOT_FOUND;
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_OK);
    cr_assert_eq(fake.calls, 0, "the adapter is not asked without its secret");
    cr_assert_str_eq(ks_json_get_str(json_object_get(result, "failure"), "code"),
                     "register_failed:gone");
    json_decref(result);
    fake.resolve_rc = KS_ERR_IO; /* the vault is unavailable: try again later */
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_RETRY);
    fake.resolve_rc = KS_OK;
    fake.rc = KS_ERR_RETRY;
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_RETRY);
    cr_assert_eq(fake.answered, 0, "no answer, no hook");
    fake.rc = KS_ERR_CONFLICT;
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_GIVE_UP);
    cr_assert_str_eq(err, "fake says no");
    json_object_set_new(args, "adapter", json_string("nobody"));
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_GIVE_UP);
    cr_assert(strstr(err, "no adapter named nobody") != NULL, "%s", err);
    json_object_set_new(args, "secretRefs", json_pack("{s:s}", "password", "x"));
    json_object_set_new(args, "adapter", json_string("fake"));
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_GIVE_UP);
    cr_assert(strstr(err, "not a known secret reference") != NULL, "%s", err);
    json_object_del(args, "payload");
    cr_assert_eq(run_step(u, args, &result, err, sizeof(err)), KS_TASK_GIVE_UP);
    cr_assert(strstr(err, "payload must be an object") != NULL, "%s", err);
    json_decref(args);
    ks_session_unit_free(u);
}

Test(session_unit, the_acquiring_mapping_keeps_the_invoice_task_args)
{
    json_error_t e;
    json_t *args = json_loads(
        "{\"kind\":\"inquire\",\"operation\":\"refund\",\"session\":\"i.1.refund.r2.0\","
        "\"invoice\":\"i\",\"payment\":\"1\",\"refund\":\"2\",\"provider\":\"p\",\"terminal\":"
        "\"t\",\"adapter\":\"sandbox\",\"options\":null,\"amount\":500,\"currency\":\"RUB\","
        "\"adapterState\":{\"session\":\"x\"},\"callbackTag\":\"invoice~i~N\"}",
        0, &e);
    cr_assert_not_null(args, "%s", e.text);
    json_t *step = NULL;
    char err[128];
    cr_assert_eq(ks_acquiring_step(args, &step, err, sizeof(err)), KS_OK, "%s", err);
    struct ks_adapter_session s;
    cr_assert_eq(ks_adapter_session_from_json(step, &s, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_str_eq(s.unit, "acquiring");
    cr_assert_str_eq(s.operation, "refund");
    cr_assert_str_eq(s.step, "inquire");
    cr_assert_str_eq(s.subject.ns, "invoice");
    cr_assert_str_eq(ks_json_get_str(s.subject.within, "refund"), "2");
    cr_assert_eq(json_integer_value(json_object_get(s.payload, "amount")), 500);
    cr_assert_str_eq(ks_json_get_str(s.adapter_state, "session"), "x");
    cr_assert_null(json_object_get(step, "secretRefs"), "only an authorize references a card");
    json_decref(step);
    json_object_set_new(args, "kind", json_string("authorize"));
    json_object_set_new(args, "operation", json_string("authorize"));
    json_object_set_new(args, "resource", json_string("i.1"));
    cr_assert_eq(ks_acquiring_step(args, &step, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_str_eq(ks_json_get_str(step, "step"), "start");
    cr_assert_str_eq(ks_json_get_str(json_object_get(step, "secretRefs"), "card"), "i.1");
    json_decref(step);
    json_object_del(args, "payment");
    cr_assert_eq(ks_acquiring_step(args, &step, err, sizeof(err)), KS_ERR_INVALID);
    json_decref(args);
}

/* --- the remote adapter's client ----------------------------------------------------------- */

#define SERVER_CONNECTIONS_MAX 8
#define SERVER_WAIT_MS 5000

/* A one-thread HTTP server: answers each connection with `reply` (or nothing, when `silent`),
 * recording the last request. */
static struct server {
    int fd;
    int port;
    pthread_t th;
    const char *reply;
    int silent;
    char request[16384];
    size_t request_len;
} srv;

static void *serve(void *arg)
{
    for (int n = 0; n < SERVER_CONNECTIONS_MAX; n++) {
        struct pollfd p = {.fd = srv.fd, .events = POLLIN};
        if (poll(&p, 1, SERVER_WAIT_MS) <= 0)
            break;
        int c = accept(srv.fd, NULL, NULL);
        if (c < 0)
            break;
        srv.request_len = 0;
        /* read the head and the body Content-Length announces, bounded by the buffer */
        for (int i = 0; i < 64 && srv.request_len < sizeof(srv.request) - 1; i++) {
            struct pollfd q = {.fd = c, .events = POLLIN};
            if (poll(&q, 1, 1000) <= 0)
                break;
            ssize_t got =
                read(c, srv.request + srv.request_len, sizeof(srv.request) - 1 - srv.request_len);
            if (got <= 0)
                break;
            srv.request_len += (size_t)got;
            srv.request[srv.request_len] = '\0';
            const char *end = strstr(srv.request, "\r\n\r\n");
            const char *cl = strcasestr(srv.request, "Content-Length:");
            if (end && cl &&
                srv.request_len >= (size_t)(end + 4 - srv.request) + (size_t)atol(cl + 15))
                break;
        }
        if (srv.silent) {
            struct pollfd q = {.fd = c, .events = POLLIN};
            (void)poll(&q, 1, 1500); /* longer than the client's timeout */
        } else {
            ssize_t w = write(c, srv.reply, strlen(srv.reply));
            (void)w;
        }
        close(c);
    }
    return NULL;
}

static void server_start(const char *reply, int silent)
{
    memset(&srv, 0, sizeof(srv));
    srv.reply = reply;
    srv.silent = silent;
    srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(srv.fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(srv.fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(srv.fd, 4), 0);
    socklen_t len = sizeof(a);
    cr_assert_eq(getsockname(srv.fd, (struct sockaddr *)&a, &len), 0);
    srv.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&srv.th, NULL, serve, NULL), 0);
}

static void server_stop(void)
{
    shutdown(srv.fd, SHUT_RDWR);
    pthread_join(srv.th, NULL);
    close(srv.fd);
}

static char reply_buf[128 * 1024];

static const char *http_reply(int status, const char *body)
{
    snprintf(reply_buf, sizeof(reply_buf),
             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             status, strlen(body), body);
    return reply_buf;
}

/* Runs one authorize step through the remote adapter at the test server. */
static int remote_step(int send_card, struct ks_adapter_intent *in, char *err, size_t errlen)
{
    struct ks_remote *r = NULL;
    cr_assert_eq(ks_remote_open(NULL, &r), KS_OK);
    const struct ks_adapter *ad = ks_remote_adapter(r);
    cr_assert_str_eq(ad->name, "http");
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/session", srv.port);
    json_t *options =
        json_pack("{s:s, s:i, s:b}", "url", url, "timeoutMs", 500, "sendCard", send_card);
    json_t *step = step_json(NULL);
    struct ks_adapter_session s;
    cr_assert_eq(ks_adapter_session_from_json(step, &s, err, errlen), KS_OK);
    s.options = options;
    s.public_url = "https://kassa.example";
    struct ks_card card = {.pan = "4000000000001000", .exp_month = "12", .exp_year = "2031"};
    /* the unit resolves the card only when ks_adapter_secrets_allowed says so */
    if (ks_adapter_secrets_allowed(ad, options) & KS_ADAPTER_SECRET_CARD)
        s.secrets.card = &card;
    memset(in, 0, sizeof(*in));
    int rc = ad->process(ad->ctx, &s, in, err, errlen);
    json_decref(step);
    json_decref(options);
    ks_remote_close(r);
    return rc;
}

Test(remote, an_intent_comes_back_and_the_step_goes_out_as_json)
{
    server_start(http_reply(200, "{\"intent\":\"suspend\",\"tag\":\"invoice~inv1~N1\","
                                 "\"timeoutMs\":60000,\"adapterState\":{\"s\":\"a\"}}"),
                 0);
    struct ks_adapter_intent in;
    char err[256];
    cr_assert_eq(remote_step(1, &in, err, sizeof(err)), KS_OK, "%s", err);
    cr_assert_eq(in.kind, KS_INTENT_SUSPEND);
    cr_assert_eq(in.timeout_ms, 60000);
    cr_assert_str_eq(ks_json_get_str(in.adapter_state, "s"), "a");
    ks_adapter_intent_release(&in);
    server_stop();
    cr_assert(strstr(srv.request, "POST /session HTTP/1.1") != NULL);
    cr_assert(strstr(srv.request, "Idempotency-Key: inv1.1.authorize.0") != NULL);
    cr_assert(strstr(srv.request, "\"callbackUrl\":\"https://kassa.example/v2/callbacks/"
                                  "invoice~inv1~N1\"") != NULL,
              "%s", srv.request);
    cr_assert(strstr(srv.request, "\"pan\":\"4000000000001000\"") != NULL);
}

Test(remote, no_card_goes_out_unless_the_provider_allows_it)
{
    server_start(http_reply(200, "{\"intent\":\"sleep\",\"sleepMs\":1000}"), 0);
    struct ks_adapter_intent in;
    char err[256];
    cr_assert_eq(remote_step(0, &in, err, sizeof(err)), KS_OK, "%s", err);
    ks_adapter_intent_release(&in);
    server_stop();
    cr_assert(strstr(srv.request, "\"secrets\":{}") != NULL, "%s", srv.request);
    cr_assert(strstr(srv.request, "4000000000001000") == NULL);
}

Test(remote, statuses_and_malformed_replies_map_to_retries_and_permanent_errors)
{
    static const struct {
        int status;
        const char *body;
        int rc;
        const char *why;
    } cases[] = {
        {503, "{\"error\":\"busy\"}", KS_ERR_RETRY, "answered HTTP 503: busy"},
        {500, "", KS_ERR_RETRY, "answered HTTP 500"},
        {429, "{}", KS_ERR_RETRY, "HTTP 429"},
        {404, "{\"error\":\"no such session\"}", KS_ERR_NOT_FOUND, "HTTP 404: no such session"},
        {409, "{\"message\":\"reused\"}", KS_ERR_CONFLICT, "HTTP 409: reused"},
        {400, "{\"error\":\"card 4000000000001000 bad\"}", KS_ERR_INVALID,
         "HTTP 400: card ################ bad"},
        {302, "", KS_ERR_INVALID, "HTTP 302"},
        {200, "not json", KS_ERR_INVALID, "answered 200 without a JSON intent"},
        {200, "{\"intent\":\"finish\"}", KS_ERR_INVALID, "malformed intent: finish needs success"},
        {200, "{\"intent\":\"suspend\",\"tag\":\"invoice~other~N\",\"timeoutMs\":5}",
         KS_ERR_INVALID, "suspend.tag is not the step's callbackTag"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        server_start(http_reply(cases[i].status, cases[i].body), 0);
        struct ks_adapter_intent in;
        char err[256];
        int rc = remote_step(1, &in, err, sizeof(err));
        ks_adapter_intent_release(&in);
        server_stop();
        cr_assert_eq(rc, cases[i].rc, "%d %s: %s", cases[i].status, cases[i].body, err);
        cr_assert(strstr(err, cases[i].why) != NULL, "%d: %s", cases[i].status, err);
        cr_assert(strstr(err, "4000000000001000") == NULL, "no card digits in errors");
    }
}

Test(remote, replies_and_time_are_bounded)
{
    static char big[KS_REMOTE_REPLY_BYTES_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    server_start(http_reply(200, big), 0);
    struct ks_adapter_intent in;
    char err[256];
    cr_assert_eq(remote_step(1, &in, err, sizeof(err)), KS_ERR_INVALID);
    cr_assert(strstr(err, "larger than 65536 bytes") != NULL, "%s", err);
    server_stop();
    server_start(NULL, 1); /* accepts and never answers: the 500 ms timeout */
    cr_assert_eq(remote_step(1, &in, err, sizeof(err)), KS_ERR_RETRY);
    cr_assert(strstr(err, "no answer from the adapter") != NULL, "%s", err);
    server_stop();
    /* nobody listens: transient */
    cr_assert_eq(remote_step(1, &in, err, sizeof(err)), KS_ERR_RETRY);
    ks_adapter_intent_release(&in);
}
