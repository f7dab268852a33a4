/* libFuzzer target: `v3c launch`'s bundle reader (tools/bundle.c) must turn any
 * manifest.json / experts.json into a bundle or an error, never crash, hang or
 * read out of bounds. The input is the manifest, then optionally a NUL byte and
 * experts.json; the plans and hyperparameters are fixed small files, so a
 * manifest of one or two stages reaches the experts and the weights too. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../passes/pipeline_split.h"
#include "../tools/bundle.h"

static char dir[64];

static void put(const char *name, const void *data, size_t len) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (len && fwrite(data, 1, len, f) != len) abort();
    fclose(f);
}

static void remove_bundle_dir(void) { dir_remove_tree(dir); }

/* One directory per process (removed at exit): two stages of empty plans and the hyperparameters. */
static void make_bundle_dir(void) {
    strcpy(dir, "/tmp/v3c-fuzz-bundle-XXXXXX");
    if (!mkdtemp(dir)) abort();
    atexit(remove_bundle_dir);
    char plans[96];
    snprintf(plans, sizeof plans, "%s/plans", dir);
    if (mkdir(plans, 0755) != 0) abort();
    static const char empty_plan[] = "v3ir 1\n";
    for (int s = 0; s < 2; s++)
        for (int part = 0; part < PIPE_PART_COUNT; part++) {
            char *name = bundle_plan_path(s, (PipePart)part);
            put(name, empty_plan, sizeof empty_plan - 1);
            free(name);
        }
    put("hyperparameters.json", "{}", 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) make_bundle_dir();
    const uint8_t *nul = memchr(data, 0, size);
    size_t manifest = nul ? (size_t)(nul - data) : size;
    put("manifest.json", data, manifest);
    if (nul) put("experts.json", nul + 1, size - manifest - 1);
    Bundle b;
    Err e = {0};
    if (bundle_open(dir, &b, &e) == 0) {
        Graph *g = bundle_weight_graph(&b, &e);
        graph_free(g);
        if (bundle_rebase_experts(b.split, &b.experts, 1, (int)b.layout.ep, &e) == 0)
            bundle_rebase_names(b.weights.data, b.weights.len, &b.experts, 1, (int)b.layout.ep);
    } else if (!e.set) {
        abort(); /* failure without a message */
    }
    bundle_close(&b);
    return 0;
}
