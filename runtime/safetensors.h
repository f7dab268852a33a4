/* safetensors: 8-byte little-endian header length, JSON header
 * {name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {str: str}}, data.
 * Everything is validated against the file size before use. */
#ifndef V3C_SAFETENSORS_H
#define V3C_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"
#include "../ir/interp.h"

typedef enum StDType { ST_F64, ST_F32, ST_F16, ST_BF16, ST_F8_E4M3, ST_F8_E5M2, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } StDType;

typedef struct StTensor {
    char *name;
    StDType dtype;
    int rank;
    int64_t shape[8];
    uint64_t begin, end; /* byte offsets into the data section */
    const unsigned char *data; /* points into the mapped file */
} StTensor;

typedef struct StFile {
    char *path;
    unsigned char *map;
    size_t size;
    VEC(StTensor) tensors;
} StFile;

const char *st_dtype_name(StDType t);
size_t st_dtype_size(StDType t);
StFile *st_open(const char *path, Err *err);         /* mmap + validate */
StFile *st_open_memory(const void *data, size_t size, const char *what, Err *err); /* copies; fuzzing and tests */
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
/* Converts to a host Tensor: F32/F16/BF16/F64 -> f32, I64 -> i64, I32 -> i32, U8/BOOL/F8 -> u8 bytes (F8 keeps dtype e4m3/e5m2). */
Tensor *st_to_tensor(const StTensor *t, Err *err);
/* Writes tensors (f32 as F32, i64 as I64, i32 as I32, u8 as U8, e4m3 as F8_E4M3) in name order, atomically. */
int st_write(const char *path, const TensorSet *set, Err *err);

#endif
