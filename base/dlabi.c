/* dlabi: see dlabi.h. */
#include "dlabi.h"

#include <dlfcn.h>
#include <string.h>

static void *lookup(void *lib, const char *name, const DlabiRename *renames, size_t nrenames) {
    void *fn = dlsym(lib, name);
    for (size_t i = 0; !fn && i < nrenames; i++)
        if (strcmp(renames[i].name, name) == 0) fn = dlsym(lib, renames[i].older);
    return fn;
}

const char *dlabi_resolve(void *lib, const DlabiSymbol *symbols, size_t n, const DlabiRename *renames,
                          size_t nrenames, void *table) {
    for (size_t i = 0; i < n; i++) {
        void *fn = lookup(lib, symbols[i].name, renames, nrenames);
        if (!fn) return symbols[i].name;
        memcpy((char *)table + symbols[i].offset, &fn, sizeof fn);
    }
    return NULL;
}
