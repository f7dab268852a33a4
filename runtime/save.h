/* Training checkpoints. A directory holds
 *   model.safetensors      the weights, f32, in DeepSeek-V3 checkpoint names
 *   config.json            the bound hyperparameters (so `v3c run --checkpoint DIR` works)
 *   train_state.safetensors AdamW moments "m.<weight>" and "v.<weight>"
 *   train_state.json       step (= optimizer updates = batches consumed, the data
 *                          position), seed, batch, seq and the optimizer settings
 * It is written into DIR.tmp.<pid> and then swapped into place, so an interrupted
 * save leaves the previous checkpoint whole. */
#ifndef V3C_SAVE_H
#define V3C_SAVE_H

#include "comm.h"
#include "optim.h"

typedef struct TrainProgress {
    int64_t step;            /* steps completed */
    int64_t seed, batch, seq;
    OptimConfig optim;
    double gamma;            /* bias update speed */
} TrainProgress;

/* Checked before training starts: DIR's parent is a writable directory and DIR is
 * absent, an empty directory or a previous training checkpoint (never a file or
 * a directory of other things, which a save would replace). */
int save_check_writable(const char *dir, Err *err);

/* config_json may be NULL (a graph read from IR text has no hyperparameters). */
int save_checkpoint(const char *dir, const TensorSet *weights, const char *config_json, const AdamW *opt,
                    const TrainProgress *pr, Err *err);

/* Gathers on rank 0 of c every entry of the ranks' sets that rank 0 lacks
 * (by name; from the lowest rank that has it), so one rank holds the whole
 * checkpoint: pipeline ranks each hold their own stages' weights and moments.
 * Other ranks' sets are left as they are. Collective over c; each wait is
 * bounded by c's timeout. */
int save_gather_on_rank0(Comm *c, TensorSet *set, Err *err);

/* Reads DIR's train_state.{json,safetensors}. Every moment must name a weight in
 * `weights` with its shape; anything missing or malformed is an error naming the file. */
int load_train_state(const char *dir, const TensorSet *weights, AdamW *opt, TrainProgress *pr, Err *err);

#endif
