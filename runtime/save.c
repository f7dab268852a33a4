#include "save.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/json.h"
#include "safetensors.h"

static const char *const checkpoint_files[] = {"model.safetensors", "config.json", "train_state.safetensors",
                                               "train_state.json"};
enum { CHECKPOINT_FILES = sizeof checkpoint_files / sizeof *checkpoint_files };
static const char *const state_format = "v3c-train-state";

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *parent_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

/* 1 when dir holds nothing but "." and "..". */
static int is_empty_directory(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int empty = 1;
    for (struct dirent *e; empty && (e = readdir(d));)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

static int is_training_checkpoint(const char *dir) {
    char *state = xsprintf("%s/train_state.json", dir);
    int yes = access(state, F_OK) == 0;
    free(state);
    return yes;
}

int save_check_writable(const char *dir, Err *err) {
    char *parent = parent_of(dir);
    int parent_ok = is_directory(parent) && access(parent, W_OK | X_OK) == 0;
    free(parent);
    if (!parent_ok) return err_set(err, "cannot save to '%s': its parent directory is missing or not writable", dir);
    struct stat st;
    if (stat(dir, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return err_set(err, "cannot save to '%s': it is a file, not a directory", dir);
    if (!is_empty_directory(dir) && !is_training_checkpoint(dir))
        return err_set(err, "cannot save to '%s': it holds files but is not a v3c training checkpoint", dir);
    return 0;
}

/* Deletes a checkpoint directory we wrote: only the files a checkpoint holds. */
static void remove_checkpoint_dir(const char *dir) {
    for (int i = 0; i < CHECKPOINT_FILES; i++) {
        char *path = xsprintf("%s/%s", dir, checkpoint_files[i]);
        remove(path);
        free(path);
    }
    rmdir(dir);
}

static int write_text_file(const char *dir, const char *name, const char *text, Err *err) {
    char *path = xsprintf("%s/%s", dir, name);
    int rc = write_file_atomic(path, text, strlen(text), err);
    free(path);
    return rc;
}

static int write_tensors(const char *dir, const char *name, const TensorSet *set, Err *err) {
    char *path = xsprintf("%s/%s", dir, name);
    int rc = st_write(path, set, err);
    free(path);
    return rc;
}

static Tensor *tensor_copy(const Tensor *t) {
    Tensor *c = tensor_new(t->dtype, t->rank, t->shape);
    memcpy(c->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
    return c;
}

static void add_moments(TensorSet *out, const char *prefix, const TensorSet *moments) {
    for (size_t i = 0; i < moments->names.len; i++) {
        char *name = xsprintf("%s%s", prefix, moments->names.data[i]);
        tset_put(out, name, tensor_copy(moments->tensors.data[i]));
        free(name);
    }
}

static void put_number(Buf *b, const char *key, double v) {
    char num[64];
    format_double(num, sizeof num, v);
    buf_printf(b, ",\n  \"%s\": %s", key, num);
}

static char *state_json(const TrainProgress *pr) {
    Buf b = {0};
    buf_printf(&b, "{\n  \"format\": \"%s\",\n  \"version\": 1", state_format);
    buf_printf(&b, ",\n  \"step\": %lld,\n  \"data_position\": %lld", (long long)pr->step, (long long)pr->step);
    buf_printf(&b, ",\n  \"seed\": %lld,\n  \"batch\": %lld,\n  \"seq\": %lld", (long long)pr->seed,
               (long long)pr->batch, (long long)pr->seq);
    buf_printf(&b, ",\n  \"warmup\": %lld,\n  \"total_steps\": %lld", (long long)pr->optim.warmup,
               (long long)pr->optim.total_steps);
    put_number(&b, "lr", pr->optim.lr);
    put_number(&b, "min_lr", pr->optim.min_lr);
    put_number(&b, "beta1", pr->optim.beta1);
    put_number(&b, "beta2", pr->optim.beta2);
    put_number(&b, "eps", pr->optim.eps);
    put_number(&b, "weight_decay", pr->optim.weight_decay);
    put_number(&b, "clip", pr->optim.clip);
    put_number(&b, "gamma", pr->gamma);
    buf_puts(&b, "\n}\n");
    return buf_take(&b);
}

static int write_contents(const char *dir, const TensorSet *weights, const char *config_json, const AdamW *opt,
                          const TrainProgress *pr, Err *err) {
    if (write_tensors(dir, "model.safetensors", weights, err)) return -1;
    if (config_json && write_text_file(dir, "config.json", config_json, err)) return -1;
    TensorSet state;
    tset_init(&state);
    add_moments(&state, "m.", &opt->m);
    add_moments(&state, "v.", &opt->v);
    int rc = write_tensors(dir, "train_state.safetensors", &state, err);
    tset_free(&state);
    if (rc) return -1;
    char *json = state_json(pr);
    rc = write_text_file(dir, "train_state.json", json, err);
    free(json);
    return rc;
}

int save_checkpoint(const char *dir, const TensorSet *weights, const char *config_json, const AdamW *opt,
                    const TrainProgress *pr, Err *err) {
    char *tmp = xsprintf("%s.tmp.%ld", dir, (long)getpid());
    int rc = -1;
    if (mkdir(tmp, 0777) != 0)
        err_set(err, "cannot save to '%s': cannot create '%s': %s", dir, tmp, strerror(errno));
    else if (write_contents(tmp, weights, config_json, opt, pr, err) == 0 && dir_publish(tmp, dir, "save to", remove_checkpoint_dir, err) == 0)
        rc = 0;
    if (rc) remove_checkpoint_dir(tmp);
    free(tmp);
    return rc;
}

static int json_int_field(const Json *j, const char *key, int64_t min, int64_t *out, const char *what, Err *err) {
    const Json *v = json_get(j, key);
    if (!v || v->kind != JSON_NUMBER || !v->is_integer || v->integer < min)
        return err_set(err, "%s: \"%s\" must be an integer >= %lld", what, key, (long long)min);
    *out = v->integer;
    return 0;
}

static int json_real_field(const Json *j, const char *key, double *out, const char *what, Err *err) {
    const Json *v = json_get(j, key);
    if (!v || v->kind != JSON_NUMBER || !isfinite(v->number) || v->number < 0)
        return err_set(err, "%s: \"%s\" must be a number >= 0", what, key);
    *out = v->number;
    return 0;
}

static int read_progress(const Json *j, TrainProgress *pr, const char *what, Err *err) {
    const Json *format = json_get(j, "format");
    if (!format || format->kind != JSON_STRING || strcmp(format->string, state_format) != 0)
        return err_set(err, "%s: not a v3c training state (\"format\" is not \"%s\")", what, state_format);
    OptimConfig *o = &pr->optim;
    if (json_int_field(j, "step", 0, &pr->step, what, err) || json_int_field(j, "seed", 0, &pr->seed, what, err) ||
        json_int_field(j, "batch", 1, &pr->batch, what, err) || json_int_field(j, "seq", 2, &pr->seq, what, err) ||
        json_int_field(j, "warmup", 0, &o->warmup, what, err) ||
        json_int_field(j, "total_steps", 0, &o->total_steps, what, err))
        return -1;
    if (json_real_field(j, "lr", &o->lr, what, err) || json_real_field(j, "min_lr", &o->min_lr, what, err) ||
        json_real_field(j, "beta1", &o->beta1, what, err) || json_real_field(j, "beta2", &o->beta2, what, err) ||
        json_real_field(j, "eps", &o->eps, what, err) ||
        json_real_field(j, "weight_decay", &o->weight_decay, what, err) ||
        json_real_field(j, "clip", &o->clip, what, err) || json_real_field(j, "gamma", &pr->gamma, what, err))
        return -1;
    return 0;
}

static int load_progress(const char *dir, TrainProgress *pr, Err *err) {
    char *path = xsprintf("%s/train_state.json", dir);
    size_t len;
    char *text = read_file(path, &len, err);
    Json *j = text ? json_parse(text, len, path, err) : NULL;
    int rc = j ? read_progress(j, pr, path, err) : -1;
    if (!text) err_wrap(err, "--resume %s is not a training checkpoint: ", dir);
    json_free(j);
    free(text);
    free(path);
    return rc;
}

/* One "m.<weight>" / "v.<weight>" tensor into the optimizer state. */
static int load_moment(const StTensor *st, const TensorSet *weights, AdamW *opt, const char *what, Err *err) {
    int is_m = strncmp(st->name, "m.", 2) == 0, is_v = strncmp(st->name, "v.", 2) == 0;
    if (!is_m && !is_v) return err_set(err, "%s: unexpected tensor '%s'", what, st->name);
    const char *name = st->name + 2;
    const Tensor *w = tset_get(weights, name);
    if (!w) return err_set(err, "%s: '%s' names no weight of the model", what, st->name);
    int same = st->dtype == ST_F32 && st->rank == w->rank;
    for (int d = 0; same && d < w->rank; d++) same = st->shape[d] == w->shape[d];
    if (!same) return err_set(err, "%s: '%s' is not F32 with the weight's shape", what, st->name);
    Tensor *t = st_to_tensor(st, err);
    if (!t) return -1;
    tset_put(is_m ? &opt->m : &opt->v, name, t);
    return 0;
}

static int load_moments(const char *dir, const TensorSet *weights, AdamW *opt, Err *err) {
    char *path = xsprintf("%s/train_state.safetensors", dir);
    StFile *f = st_open(path, err);
    int rc = f ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < f->tensors.len; i++) rc = load_moment(&f->tensors.data[i], weights, opt, path, err);
    for (size_t i = 0; rc == 0 && i < opt->m.names.len; i++)
        if (!tset_get(&opt->v, opt->m.names.data[i]))
            rc = err_set(err, "%s: 'm.%s' has no 'v.%s'", path, opt->m.names.data[i], opt->m.names.data[i]);
    if (rc == 0 && opt->m.names.len != opt->v.names.len) rc = err_set(err, "%s: a 'v.' moment has no 'm.'", path);
    if (f) st_close(f);
    free(path);
    return rc;
}

int load_train_state(const char *dir, const TensorSet *weights, AdamW *opt, TrainProgress *pr, Err *err) {
    if (!is_directory(dir)) return err_set(err, "--resume %s: no such directory", dir);
    memset(pr, 0, sizeof *pr);
    if (load_progress(dir, pr, err) || load_moments(dir, weights, opt, err)) return -1;
    opt->updates = pr->step;
    return 0;
}

/* ---- one rank's checkpoint from the pipeline's ranks ---- */

/* Per entry: name length, dtype, rank, shape. Tags need only be apart from a
 * step's messages, and every step has ended when a checkpoint is gathered. */
enum { GATHER_META = 3 + IR_MAX_RANK, GATHER_TAG = 1 };

static size_t entry_bytes(const Tensor *t) { return (size_t)t->numel * dtype_host_size(t->dtype); }

/* Tells rank 0 what this rank holds and sends what it asks for. */
static int send_entries(Comm *c, const TensorSet *set, Err *err) {
    int64_t n = (int64_t)set->names.len;
    if (comm_send(c, &n, 1, COMM_I64, 0, GATHER_TAG, err)) return -1;
    if (n == 0) return 0;
    int64_t *meta = xcalloc((size_t)n * GATHER_META, sizeof *meta);
    Buf names = {0};
    for (size_t i = 0; i < set->names.len; i++) {
        const Tensor *t = set->tensors.data[i];
        int64_t *m = meta + i * GATHER_META;
        m[0] = (int64_t)strlen(set->names.data[i]);
        m[1] = t->dtype;
        m[2] = t->rank;
        memcpy(m + 3, t->shape, (size_t)t->rank * sizeof *t->shape);
        buf_puts(&names, set->names.data[i]);
    }
    unsigned char *want = xcalloc((size_t)n, 1);
    int rc = comm_send(c, meta, (size_t)n * GATHER_META, COMM_I64, 0, GATHER_TAG, err) ||
                     comm_send(c, names.data, names.len, COMM_U8, 0, GATHER_TAG, err) ||
                     comm_recv(c, want, (size_t)n, COMM_U8, 0, GATHER_TAG, err)
                 ? -1
                 : 0;
    for (size_t i = 0; rc == 0 && i < set->names.len; i++) {
        const Tensor *t = set->tensors.data[i];
        if (want[i] && entry_bytes(t)) rc = comm_send(c, t->data, entry_bytes(t), COMM_U8, 0, GATHER_TAG, err);
    }
    free(want);
    free(meta);
    buf_free(&names);
    return rc;
}

/* A new tensor of the entry's dtype and shape, or NULL where the peer sent nonsense. */
static Tensor *entry_tensor(const int64_t *m) {
    if (m[1] < 0 || m[1] >= DT_COUNT || m[2] < 0 || m[2] > IR_MAX_RANK) return NULL;
    for (int d = 0; d < m[2]; d++)
        if (m[3 + d] < 0) return NULL;
    return tensor_new((DType)m[1], (int)m[2], m + 3);
}

/* Rank 0's asks: each entry it lacks, in the sender's order. */
static int ask_for_missing(const TensorSet *set, const int64_t *meta, const char *names, size_t names_len,
                           int64_t n, unsigned char *want, Err *err) {
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t len = (size_t)meta[i * GATHER_META];
        if (len > names_len - at)
            return err_internal(err, "checkpoint gather: a rank sent a malformed list of tensors");
        char *name = xstrndup(names + at, len);
        want[i] = !tset_get(set, name);
        free(name);
        at += len;
    }
    return 0;
}

/* The entries asked for, in the sender's order, into set. */
static int receive_wanted(Comm *c, int from, TensorSet *set, const int64_t *meta, const char *names, int64_t n,
                          const unsigned char *want, Err *err) {
    size_t at = 0;
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < n; at += (size_t)meta[i * GATHER_META], i++) {
        if (!want[i]) continue;
        Tensor *t = entry_tensor(meta + i * GATHER_META);
        if (!t) rc = err_internal(err, "checkpoint gather: rank %d sent a tensor of no valid type", from);
        else if (entry_bytes(t) && comm_recv(c, t->data, entry_bytes(t), COMM_U8, from, GATHER_TAG, err)) rc = -1;
        char *name = xstrndup(names + at, (size_t)meta[i * GATHER_META]);
        if (rc == 0) tset_put(set, name, t);
        else tensor_free(t);
        free(name);
    }
    return rc;
}

/* Receives what rank `from` holds and this one lacks. */
static int receive_entries(Comm *c, int from, TensorSet *set, Err *err) {
    int64_t n = 0;
    if (comm_recv(c, &n, 1, COMM_I64, from, GATHER_TAG, err)) return -1;
    if (n < 0) return err_internal(err, "checkpoint gather: rank %d sent %lld tensors", from, (long long)n);
    if (n == 0) return 0;
    int64_t *meta = xcalloc((size_t)n * GATHER_META, sizeof *meta);
    int rc = comm_recv(c, meta, (size_t)n * GATHER_META, COMM_I64, from, GATHER_TAG, err);
    size_t names_len = 0;
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        if (meta[i * GATHER_META] < 0 || meta[i * GATHER_META] > (int64_t)1 << 20)
            rc = err_internal(err, "checkpoint gather: rank %d sent a malformed list of tensors", from);
        else
            names_len += (size_t)meta[i * GATHER_META];
    }
    char *names = xmalloc(names_len + 1);
    unsigned char *want = xcalloc((size_t)n, 1);
    if (rc == 0) rc = comm_recv(c, names, names_len, COMM_U8, from, GATHER_TAG, err);
    if (rc == 0) rc = ask_for_missing(set, meta, names, names_len, n, want, err);
    if (rc == 0) rc = comm_send(c, want, (size_t)n, COMM_U8, from, GATHER_TAG, err);
    if (rc == 0) rc = receive_wanted(c, from, set, meta, names, n, want, err);
    free(want);
    free(names);
    free(meta);
    return rc;
}

int save_gather_on_rank0(Comm *c, TensorSet *set, Err *err) {
    if (comm_rank(c) != 0) return send_entries(c, set, err);
    for (int k = 1; k < comm_size(c); k++)
        if (receive_entries(c, k, set, err)) return -1;
    return 0;
}
