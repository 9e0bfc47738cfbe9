/*
 * main.c — the `kassa` command: everything is in the platform (platform/platform.h), which
 * builds the command line, the flags and `serve` from the modules (platform/module.h,
 * modules/modules.c). Design note: docs/modules.md.
 */
#include "core/wipe.h"
#include "platform/platform.h"

int main(int argc, char **argv)
{
    /* Before any JSON value exists: every jansson block is zeroed when freed (core/wipe.h). */
    ks_wipe_install_json_allocator();
    return ks_platform_main(argc, argv);
}
