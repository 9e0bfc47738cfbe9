/* adapter.c — what the adapter contract defines beside the adapters themselves (adapter.h). */
#include "units/adapter.h"

#include <string.h>

#include "engine/callback.h"

/* An adapter suspends on the tag the session gives it, so the intent must hold any tag. */
_Static_assert(sizeof(((struct ks_adapter_intent *)0)->tag) > KS_CALLBACK_TAG_BYTES_MAX,
               "an intent's tag must hold the longest callback tag");

void ks_adapter_intent_release(struct ks_adapter_intent *in)
{
    if (!in)
        return;
    json_decref(in->trx);
    json_decref(in->interaction);
    json_decref(in->adapter_state);
    /* Zeroed, so a released intent can be released again or filled again. */
    memset(in, 0, sizeof(*in));
}
