/* Checkpoints: safetensors files (one, or shards listed in
 * model.safetensors.index.json) plus config.json, in DeepSeek-V3 names. */
#ifndef V3C_CHECKPOINT_H
#define V3C_CHECKPOINT_H

#include "../base/json.h"
#include "../ir/interp.h"
#include "safetensors.h"

typedef struct Checkpoint {
    char *dir;
    Json *config;          /* config.json, NULL if absent */
    VEC(StFile *) files;   /* open safetensors files */
    StrMap where;          /* tensor name -> index into files */
} Checkpoint;

/* Opens DIR: config.json (optional unless required), the index json if present
 * (every shard it names must exist and hold the tensors it says), else every *.safetensors. */
Checkpoint *checkpoint_open(const char *dir, Err *err);
void checkpoint_close(Checkpoint *c);
const StTensor *checkpoint_find(const Checkpoint *c, const char *name);

/* For every param of g: the tensor must exist (else "missing weight 'NAME'") with the
 * param's shape (else "weight 'NAME' has shape [..] in the checkpoint but the model expects [..]");
 * F32/BF16/F16 become f32 tensors in `out`. All problems are checked before any data is read. */
int checkpoint_load_params(const Checkpoint *c, const Graph *g, TensorSet *out, Err *err);

#endif
