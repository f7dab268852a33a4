/* PLACEHOLDER (replaced by the training work in progress this session). */
#include "cli.h"
int cmd_train(const Options *o, Err *err) {
    (void)o;
    return err_set(err, "'v3c train' is not built yet");
}
