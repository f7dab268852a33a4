#include <string.h>

#include "../ir/text.h"
#include "cli.h"

static int write_output(const Options *o, const Buf *text, Err *err) {
    if (!o->out_file) {
        fwrite(text->data, 1, text->len, stdout);
        return fflush(stdout) == 0 ? 0 : err_set(err, "cannot write to standard output");
    }
    return write_file_atomic(o->out_file, text->data, text->len, err);
}

int cmd_dump(const Options *o, Err *err) {
    const char *format = o->format ? o->format : "text";
    if (strcmp(format, "text") != 0 && strcmp(format, "dot") != 0)
        return err_set(err, "unknown --format '%s' (text or dot)", format);
    Model m;
    int rc = model_build(o, &m, err);
    if (rc == 0) {
        Buf text = {0};
        PrintOptions po = {.annotate = o->annotate, .batch = o->batch > 0 ? o->batch : 1,
                           .seq = o->seq > 0 ? o->seq : 4096};
        if (strcmp(format, "dot") == 0)
            ir_print_dot(m.graph, &text);
        else
            ir_print(m.graph, &po, &text);
        rc = write_output(o, &text, err);
        buf_free(&text);
    }
    model_free(&m);
    return rc;
}
