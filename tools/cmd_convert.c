/* PLACEHOLDER (replaced by the FP8 work in progress this session). */
#include "cli.h"
int cmd_convert(const Options *o, Err *err) {
    (void)o;
    return err_set(err, "'v3c convert' is not built yet");
}
