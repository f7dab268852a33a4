/* base: the bottom layer every folder may use. Errors, memory, growable arrays,
 * string building. Nothing here knows about models, graphs or devices. */
#ifndef V3C_BASE_H
#define V3C_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* An error travels up as a return value (-1 / NULL) plus the message in an Err.
 * The command line prints it as "v3c: error: <msg>" and exits 1; code 2 marks
 * an internal error (a bug in v3c, not in the user's input). */
typedef struct Err {
    int set;
    int code; /* 1 bad input, 2 internal */
    char msg[4096];
} Err;

int err_set(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int err_internal(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix an existing message ("while loading X: " + old message). */
int err_wrap(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation failure is not recoverable in a compiler: abort with a message. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xsprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whether s ends with suffix (weight names: "...mlp.gate.weight", files: ".v3ir"). */
int str_ends_with(const char *s, const char *suffix);

/* Overflow-checked size arithmetic for sizes read from untrusted files. */
int mul_overflows_i64(int64_t a, int64_t b, int64_t *out);
int add_overflows_i64(int64_t a, int64_t b, int64_t *out);

/* Growable array: VEC(T) v = {0}; VEC_PUSH(v, x); v.len, v.data[i]; VEC_FREE(v). */
#define VEC(T) struct { T *data; size_t len, cap; }
#define VEC_RESERVE(v, n)                                                          \
    do {                                                                           \
        if ((n) > (v).cap) {                                                       \
            size_t c_ = (v).cap ? (v).cap : 8;                                     \
            while (c_ < (n)) c_ *= 2;                                              \
            (v).data = xrealloc((v).data, c_ * sizeof *(v).data);                  \
            (v).cap = c_;                                                          \
        }                                                                          \
    } while (0)
#define VEC_PUSH(v, x)                                                             \
    do {                                                                           \
        VEC_RESERVE(v, (v).len + 1);                                               \
        (v).data[(v).len++] = (x);                                                 \
    } while (0)
#define VEC_FREE(v) (free((v).data), (v).data = NULL, (v).len = (v).cap = 0)

/* Arena: many small allocations freed together (graphs, ASTs). */
typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
    ArenaBlock *head;
} Arena;
void *arena_alloc(Arena *a, size_t n); /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
void arena_free(Arena *a);

/* String builder. */
typedef struct Buf {
    char *data;
    size_t len, cap;
} Buf;
void buf_putc(Buf *b, char c);
void buf_puts(Buf *b, const char *s);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(Buf *b, const char *fmt, va_list ap);
char *buf_take(Buf *b); /* returns the NUL-terminated string, resets b */
void buf_free(Buf *b);

/* Whole-file I/O. read_file returns NULL and sets err on failure. */
char *read_file(const char *path, size_t *len, Err *err);
/* Writes to PATH.tmp.<pid> and renames it into place: a reader never sees half a file. */
int write_file_atomic(const char *path, const void *data, size_t len, Err *err);

/* Puts the finished directory tmp at dir. An earlier dir is swapped out
 * atomically (RENAME_EXCHANGE) and deleted with remove_old; where the
 * filesystem cannot exchange it is moved aside first, so dir is briefly absent
 * but never half written. `what` names the act in errors ("save to"). */
int dir_publish(const char *tmp, const char *dir, const char *what, void (*remove_old)(const char *dir), Err *err);
/* Deletes a directory and everything below it (symbolic links are not followed). */
void dir_remove_tree(const char *dir);

/* 64-bit FNV-1a, for hashing names and kernel sources. */
uint64_t hash_bytes(const void *p, size_t n, uint64_t seed);

/* Format a double so that strtod reads back the identical value (shortest of %.9g/%.17g). */
void format_double(char *out, size_t n, double v);

#endif
