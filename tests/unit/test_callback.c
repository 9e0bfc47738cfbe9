/* test_callback.c — callback tags name their machine (engine/callback.h). */
#include <criterion/criterion.h>
#include <string.h>

#include "engine/callback.h"

Test(callback, a_tag_names_its_machine_and_nothing_else_parses)
{
    char tag[KS_CALLBACK_TAG_BYTES_MAX + 1], ns[KS_NS_BYTES_MAX + 1], id[KS_ID_BYTES_MAX + 1];
    cr_assert_eq(ks_callback_tag_format("invoice", "AbC123", "n0nce", tag, sizeof(tag)), KS_OK);
    cr_assert_str_eq(tag, "invoice~AbC123~n0nce");
    cr_assert_eq(ks_callback_tag_parse(tag, ns, id), KS_OK);
    cr_assert_str_eq(ns, "invoice");
    cr_assert_str_eq(id, "AbC123");
    char random_tag[KS_CALLBACK_TAG_BYTES_MAX + 1], other[KS_CALLBACK_TAG_BYTES_MAX + 1];
    cr_assert_eq(ks_callback_tag("invoice", "AbC123", random_tag, sizeof(random_tag)), KS_OK);
    cr_assert_eq(ks_callback_tag("invoice", "AbC123", other, sizeof(other)), KS_OK);
    cr_assert_str_neq(random_tag, other, "the nonce is random");
    cr_assert_eq(ks_callback_tag_parse(random_tag, ns, id), KS_OK);
    const char *bad_nonces[] = {"", "a~b", "has space", "x/y", "0123456789012345678901234", NULL};
    for (int i = 0; bad_nonces[i]; i++)
        cr_assert_eq(ks_callback_tag_format("invoice", "A", bad_nonces[i], tag, sizeof(tag)),
                     KS_ERR_INVALID, "nonce '%s'", bad_nonces[i]);
    cr_assert_eq(ks_callback_tag_format("Bad NS", "A", "n", tag, sizeof(tag)), KS_ERR_INVALID);
    cr_assert_eq(ks_callback_tag_format("invoice", "A", "n", tag, 8), KS_ERR_INVALID);
    const char *bad_tags[] = {"", "invoice", "invoice~A", "invoice~A~", "~A~n", "invoice~~n",
                              "invoice~A~n~x", "invoice~A~n-1", NULL};
    for (int i = 0; bad_tags[i]; i++)
        cr_assert_eq(ks_callback_tag_parse(bad_tags[i], ns, id), KS_ERR_INVALID, "tag '%s'",
                     bad_tags[i]);
}
