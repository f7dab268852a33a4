/* base: the ABI of a library v3c opens with dlopen (NVRTC, the CUDA driver,
 * cuBLASLt, the CUDA runtime, NCCL), written out because v3c builds without
 * their headers. Each library has an X-macro list of its entry points,
 *     X(symbol, field, return type, (parameters))
 * and one of the enum values v3c passes,
 *     X(our name, the header's name, value)
 * so one list gives the table's fields, the names dlsym looks up, the constants,
 * and tests/test_cuda_abi.c, which compiles the same lists against the toolkit's
 * own headers: a wrong name, parameter, value or struct layout fails there, not
 * on a GPU no machine here has.
 *
 * A type that differs between v3c's side and the header's (an opaque handle, an
 * enum passed as int) is written V3C_ABI(ours, theirs): ours everywhere, theirs
 * only where that test defines V3C_ABI before including anything. */
#ifndef V3C_BASE_DLABI_H
#define V3C_BASE_DLABI_H

#ifndef V3C_ABI
#define V3C_ABI(ours, theirs) ours
#endif

/* An entry point as a field of a table of function pointers. */
#define DLABI_FIELD(symbol, field, ret, params) ret(*field) params;
/* An enum value as an enumerator: enum { LIST(DLABI_VALUE) }. */
#define DLABI_VALUE(ours, theirs, value) ours = value,
/* A pair of an older-names list, X(symbol, older): as a DlabiRename. */
#define DLABI_RENAME(symbol, older) {#symbol, #older},

#include <stddef.h>

/* Where dlsym's result for `name` goes: the field at `offset` in the caller's table
 * (a list's fields, in the order the list gives them). */
typedef struct DlabiSymbol {
    const char *name;
    size_t offset;
} DlabiSymbol;
/* A symbol a library from before its _v2 entry point exports by its plain name. */
typedef struct DlabiRename {
    const char *name, *older;
} DlabiRename;

/* Fills the table's function pointers from lib (a name missing there is looked up by its
 * older name, if renames has one). NULL when all are found, else the first name missing. */
const char *dlabi_resolve(void *lib, const DlabiSymbol *symbols, size_t n, const DlabiRename *renames,
                          size_t nrenames, void *table);

#endif
