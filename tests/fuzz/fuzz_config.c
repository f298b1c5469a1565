/*
 * fuzz_config.c - a checkpoint's config.json (engine/config.c): parsed or
 * refused; what is accepted must give a tensor manifest without trouble.
 */
#include "engine/v4.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    v4_config cfg;
    tome_error err = {0};
    if (v4_config_parse((const char *)data, size, "config.json", &cfg, &err) != 0) return 0;
    v4_tensor_spec *specs;
    size_t n;
    if (v4_manifest(&cfg, &specs, &n, &err) == 0) free(specs);
    return 0;
}
