/* A strict JSON reader (RFC 8259) for config.json, safetensors headers and
 * index files, plus a small writer. Depth, size and number range are bounded;
 * malformed input gives an error with line and column. */
#ifndef V3C_JSON_H
#define V3C_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "base.h"

typedef enum JsonKind { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonKind;

typedef struct Json Json;
struct Json {
    JsonKind kind;
    int boolean;
    double number;
    int is_integer;  /* the literal had no fraction or exponent and fits int64 */
    int64_t integer; /* valid when is_integer */
    char *string;    /* JSON_STRING (NUL-terminated; embedded NULs rejected) */
    size_t len;      /* array or object element count */
    Json **items;    /* array elements / object values */
    char **keys;     /* object keys, in file order */
};

/* Parses exactly one JSON value (surrounding whitespace allowed). what names the
 * input in errors ("config.json"). Duplicate object keys are an error. */
Json *json_parse(const char *text, size_t len, const char *what, Err *err);
void json_free(Json *j);
const Json *json_get(const Json *obj, const char *key); /* NULL if absent or obj not an object */
const char *json_kind_name(JsonKind k);
/* Appends s as a JSON string literal (quotes and escapes) to b. */
void json_write_string(Buf *b, const char *s);

#endif
