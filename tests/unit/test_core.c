/* test_core.c — core helpers: RFC 3339 time parsing and formatting, currencies, checked money
 * arithmetic, strict JSON input and its value bound, log-safe text. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/currency.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"

Test(core, rfc3339_parses_what_the_public_api_sends)
{
    int64_t ms = 0;
    cr_assert_eq(ks_time_parse_rfc3339("2019-03-28T17:41:32.569Z", &ms), 0);
    cr_assert_eq(ms, 1553794892569LL);
    cr_assert_eq(ks_time_parse_rfc3339("2019-04-05T00:00:30.889000Z", &ms), 0);
    cr_assert_eq(ms, 1554422430889LL);
    cr_assert_eq(ks_time_parse_rfc3339("2019-03-28T20:41:32+03:00", &ms), 0);
    cr_assert_eq(ms, 1553794892000LL);
    cr_assert_eq(ks_time_parse_rfc3339("1970-01-01T00:00:00Z", &ms), 0);
    cr_assert_eq(ms, 0);
    cr_assert_eq(ks_time_parse_rfc3339("2024-02-29T12:00:00Z", &ms), 0);
    char buf[40];
    ks_time_rfc3339(1553794892569LL, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2019-03-28T17:41:32.569Z");
}

Test(core, rfc3339_rejects_malformed_dates)
{
    int64_t ms = 0;
    const char *bad[] = {"", "2019-03-28", "2019-03-28T17:41:32", "2019-13-01T00:00:00Z",
                         "2019-02-29T00:00:00Z", "2019-04-31T00:00:00Z", "2019-03-28T24:00:00Z",
                         "2019-03-28T17:41:32.Z", "2019-03-28T17:41:32Zjunk", "19-03-28T17:41:32Z",
                         "2019-03-28T17:41:32+0300", "not a date"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ks_time_parse_rfc3339(bad[i], &ms), -1, "accepted %s", bad[i]);
    cr_assert_eq(ks_time_parse_rfc3339(NULL, &ms), -1);
}

Test(core, currencies_are_found_with_their_exponent)
{
    cr_assert_eq(ks_currency_find("RUB")->exponent, 2);
    cr_assert_eq(ks_currency_find("JPY")->exponent, 0);
    cr_assert_eq(ks_currency_find("KWD")->exponent, 3);
    cr_assert_eq(ks_currency_find("IDR")->numeric, 360);
    cr_assert_null(ks_currency_find("RUX"));
    cr_assert_null(ks_currency_find("rub"));
    cr_assert_null(ks_currency_find("RUBB"));
    const char *all[] = {"AED", "USD", "EUR", "ZAR", "AMD", "XOF"};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        cr_assert(ks_currency_valid(all[i]), "%s", all[i]);
}

Test(core, amount_arithmetic_refuses_overflow)
{
    int64_t r = 7;
    cr_assert(ks_amount_add(INT64_MAX - 1, 1, &r));
    cr_assert_eq(r, INT64_MAX);
    cr_assert_not(ks_amount_add(INT64_MAX, 1, &r));
    cr_assert_eq(r, INT64_MAX, "untouched on overflow");
    cr_assert_not(ks_amount_sub(INT64_MIN, 1, &r));
    cr_assert_not(ks_amount_mul(INT64_MAX / 2 + 1, 2, &r));
    cr_assert(ks_amount_mul(5000, 3, &r));
    cr_assert_eq(r, 15000);
}

Test(core, json_input_is_strict)
{
    json_t *v = NULL;
    char why[128];
    cr_assert_eq(ks_json_parse("{\"a\":1,\"a\":2}", 13, &v, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_not_null(strstr(why, "duplicate"));
    cr_assert_eq(ks_json_parse("{\"a\":\"\xff\"}", 9, &v, why, sizeof(why)), KS_ERR_INVALID);
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    cr_assert_eq(ks_json_parse(deep, 200, &v, why, sizeof(why)), KS_ERR_LIMIT);
    const char *big = "{\"n\":9223372036854775807}";
    cr_assert_eq(ks_json_parse(big, strlen(big), &v, why, sizeof(why)), KS_OK);
    cr_assert_eq(json_integer_value(json_object_get(v, "n")), INT64_MAX);
    json_decref(v);
    /* a card number in a broken body never reaches the error text */
    const char *card = "{\"cardNumber\":\"4242424242424242\"";
    cr_assert_neq(ks_json_parse(card, strlen(card), &v, why, sizeof(why)), KS_OK);
    cr_assert_null(strstr(why, "4242"));
}

Test(core, json_values_are_counted_before_parsing)
{
    /* [{},{},{}]: four containers and two commas, plus one: 7 counted for 4 values */
    const char *t = "[{},{},{}]";
    cr_assert_eq(ks_json_values_check(t, strlen(t), 8), KS_OK);
    cr_assert_eq(ks_json_values_check(t, strlen(t), 7), KS_OK);
    cr_assert_eq(ks_json_values_check(t, strlen(t), 6), KS_ERR_LIMIT);
    /* scalars count through their commas */
    const char *ones = "[1,1,1,1,1,1,1,1]";
    cr_assert_eq(ks_json_values_check(ones, strlen(ones), 9), KS_OK);
    cr_assert_eq(ks_json_values_check(ones, strlen(ones), 8), KS_ERR_LIMIT);
    /* brackets and commas inside strings, escaped quotes included, do not count */
    const char *s = "{\"a\":\"[{,,,}]\\\",[[[\"}";
    cr_assert_eq(ks_json_values_check(s, strlen(s), 2), KS_OK);
    /* only `len` bytes are read */
    cr_assert_eq(ks_json_values_check("[[[[", 1, 2), KS_OK);
    cr_assert_eq(ks_json_values_check("", 0, 1), KS_OK);
    /* a big body of empty objects is refused without being parsed */
    size_t n = 100000;
    char *big = malloc(3 * n + 2);
    cr_assert_not_null(big);
    big[0] = '[';
    for (size_t i = 0; i < n; i++)
        memcpy(big + 1 + 3 * i, i + 1 < n ? "{}," : "{}]", 3);
    cr_assert_eq(ks_json_values_check(big, 3 * n + 1, 8192), KS_ERR_LIMIT);
    cr_assert_eq(ks_json_values_check(big, 3 * n + 1, 2 * n + 1), KS_OK);
    free(big);
}

Test(core, log_text_keeps_utf8_and_escapes_the_rest)
{
    char out[64];
    cr_assert_str_eq(ks_log_text("/v2/invoices/abc", out, sizeof(out)), "/v2/invoices/abc");
    cr_assert_str_eq(ks_log_text(NULL, out, sizeof(out)), "");
    /* invalid bytes and control characters become %XX; valid UTF-8 passes */
    cr_assert_str_eq(ks_log_text("/a\xff\xfe/b\n\x7f", out, sizeof(out)), "/a%FF%FE/b%0A%7F");
    cr_assert_str_eq(
        ks_log_text("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", out, sizeof(out)),
        "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* overlong forms, surrogates, past U+10FFFF, truncated sequences: byte by byte */
    cr_assert_str_eq(ks_log_text("\xc0\xaf", out, sizeof(out)), "%C0%AF");
    cr_assert_str_eq(ks_log_text("\xe0\x80\xaf", out, sizeof(out)), "%E0%80%AF");
    cr_assert_str_eq(ks_log_text("\xed\xa0\x80", out, sizeof(out)), "%ED%A0%80");
    cr_assert_str_eq(ks_log_text("\xf4\x90\x80\x80", out, sizeof(out)), "%F4%90%80%80");
    cr_assert_str_eq(ks_log_text("a\xe2\x82", out, sizeof(out)), "a%E2%82");
    cr_assert_str_eq(ks_log_text("\xe2\x82x", out, sizeof(out)), "%E2%82x");
    /* whatever comes in, jansson accepts what comes out */
    const char *nasty = "/\xff\x80\xc3\x28\xe2\x28\xa1\xf0\x90\x28\xbc/%00/\x01";
    json_t *j = json_string(ks_log_text(nasty, out, sizeof(out)));
    cr_assert_not_null(j, "%s", out);
    json_decref(j);
}

Test(core, log_text_cuts_visibly_and_never_inside_a_character)
{
    char out[8];
    cr_assert_str_eq(ks_log_text("abcdefg", out, sizeof(out)), "abcdefg");
    cr_assert_str_eq(ks_log_text("abcdefgh", out, sizeof(out)), "abcd...");
    /* an escape is never split */
    cr_assert_str_eq(ks_log_text("ab\xff\xff\xff", out, sizeof(out)), "ab...");
    /* nor a character: 'é' is two bytes */
    cr_assert_str_eq(ks_log_text("abc\xc3\xa9\xc3\xa9z", out, sizeof(out)), "abc...");
    char four[4];
    cr_assert_str_eq(ks_log_text("abcd", four, sizeof(four)), "...");
    cr_assert_str_eq(ks_log_text("abc", four, sizeof(four)), "abc");
}

/* --- random bytes: a buffer per thread, never handed out twice ---------------------------------- */

#define RANDOM_DRAWS 4000

static int cmp16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void *draw_many(void *out)
{
    unsigned char (*d)[16] = out;
    for (int i = 0; i < RANDOM_DRAWS; i++)
        if (ks_random_bytes(d[i], 16) != KS_OK)
            return (void *)1;
    return NULL;
}

/* Draws from two threads (each through its own buffer, refilled several times) and one large
 * draw past the buffer: no 16 bytes repeat, and no draw is all zeros (the wiped part). */
Test(core, random_bytes_never_repeat)
{
    static unsigned char d[2 * RANDOM_DRAWS][16];
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, draw_many, d[RANDOM_DRAWS]), 0);
    cr_assert_null(draw_many(d[0]));
    void *res = (void *)1;
    pthread_join(th, &res);
    cr_assert_null(res);
    static const unsigned char zero[16];
    for (int i = 0; i < 2 * RANDOM_DRAWS; i++)
        cr_assert_neq(memcmp(d[i], zero, 16), 0, "draw %d is all zeros", i);
    qsort(d, 2 * RANDOM_DRAWS, 16, cmp16);
    for (int i = 1; i < 2 * RANDOM_DRAWS; i++)
        cr_assert_neq(memcmp(d[i - 1], d[i], 16), 0, "a draw repeated");
    unsigned char big[8192];
    memset(big, 0, sizeof(big));
    cr_assert_eq(ks_random_bytes(big, sizeof(big)), KS_OK);
    cr_assert_neq(memcmp(big + 4096, zero, 16), 0);
}

/* A forked child does not hand out what its parent's thread had kept. */
Test(core, random_bytes_differ_after_fork)
{
    unsigned char first[16], parent[16], child[16];
    cr_assert_eq(ks_random_bytes(first, sizeof(first)), KS_OK); /* the buffer is filled */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        unsigned char c[16];
        int ok = ks_random_bytes(c, sizeof(c)) == KS_OK && write(fds[1], c, sizeof(c)) == 16;
        _exit(ok ? 0 : 1);
    }
    cr_assert_eq(ks_random_bytes(parent, sizeof(parent)), KS_OK);
    cr_assert_eq(read(fds[0], child, sizeof(child)), 16);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_neq(memcmp(parent, child, 16), 0, "the child handed out its parent's bytes");
    close(fds[0]);
    close(fds[1]);
}
