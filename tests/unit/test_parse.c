/* test_parse.c — numbers in text from outside (core/parse.h). */
#include <criterion/criterion.h>
#include <stdint.h>

#include "core/parse.h"

Test(parse, whole_decimal_int64_in_range)
{
    int64_t v = 0;
    cr_assert_eq(ks_parse_int64("42", 0, 100, &v), KS_OK);
    cr_assert_eq(v, 42);
    cr_assert_eq(ks_parse_int64("-7", -10, 10, &v), KS_OK);
    cr_assert_eq(v, -7);
    cr_assert_eq(ks_parse_int64("9223372036854775807", 0, INT64_MAX, &v), KS_OK);
    cr_assert_eq(v, INT64_MAX);
    const char *bad[] = {
        "", "+1", " 1", "1 ", "1x", "0x10", "-", "--1", "1.5", "9223372036854775808", NULL};
    for (int i = 0; bad[i]; i++) {
        v = 99;
        cr_assert_eq(ks_parse_int64(bad[i], INT64_MIN, INT64_MAX, &v), KS_ERR_INVALID, "'%s'",
                     bad[i]);
        cr_assert_eq(v, 99, "'%s' changed the output", bad[i]);
    }
    cr_assert_eq(ks_parse_int64(NULL, 0, 1, &v), KS_ERR_INVALID);
    cr_assert_eq(ks_parse_int64("101", 0, 100, &v), KS_ERR_INVALID);
    cr_assert_eq(ks_parse_int64("-1", 0, 100, &v), KS_ERR_INVALID);
}

Test(parse, http_urls_have_a_host_and_no_credentials)
{
    const char *good[] = {"http://127.0.0.1:8090/session", "https://adapter.example",
                          "https://adapter.example:8443/a/b?c=d", "http://[::1]:80/x", NULL};
    for (int i = 0; good[i]; i++)
        cr_assert(ks_parse_http_url(good[i], 2048), "'%s' refused", good[i]);
    const char *bad[] = {"",
                         "ftp://adapter.example/",
                         "file:///etc/passwd",
                         "http://",
                         "https:///path",
                         "http://:80/",
                         "https://user:secret@adapter.example/",
                         "https://adapter.example/a b",
                         "https://adapter.example/\r\nX: y",
                         "HTTP://adapter.example/",
                         "//adapter.example/",
                         NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_not(ks_parse_http_url(bad[i], 2048), "'%s' accepted", bad[i]);
    cr_assert_not(ks_parse_http_url(NULL, 2048));
    cr_assert_not(ks_parse_http_url("https://adapter.example/", 10), "longer than the bound");
    /* an '@' after the host is a path, not credentials */
    cr_assert(ks_parse_http_url("https://adapter.example/a@b", 2048));
}
