#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

enum { JSON_MAX_DEPTH = 64, JSON_MAX_NUMBER_CHARS = 512 };

typedef struct Parser {
    const char *text;
    size_t len, pos;
    const char *what;
    Err *err;
} Parser;

/* Line and column are found only when an error is reported, so the hot path
 * does not track them. Columns count bytes, starting at 1. */
static void *fail(Parser *p, const char *reason) {
    size_t line = 1, line_start = 0, end = p->pos < p->len ? p->pos : p->len;
    for (size_t i = 0; i < end; i++)
        if (p->text[i] == '\n') {
            line++;
            line_start = i + 1;
        }
    err_set(p->err, "%s:%zu:%zu: malformed JSON: %s", p->what, line, end - line_start + 1, reason);
    return NULL;
}

static int at_end(const Parser *p) { return p->pos >= p->len; }
static char peek(const Parser *p) { return at_end(p) ? 0 : p->text[p->pos]; }

static void skip_ws(Parser *p) {
    while (!at_end(p) && strchr(" \t\r\n", p->text[p->pos]) && p->text[p->pos]) p->pos++;
}

static Json *new_node(JsonKind kind) {
    Json *j = xcalloc(1, sizeof *j);
    j->kind = kind;
    return j;
}

static Json *parse_value(Parser *p, int depth);

static Json *parse_literal(Parser *p) {
    static const struct {
        const char *word;
        JsonKind kind;
        int boolean;
    } words[] = {{"true", JSON_BOOL, 1}, {"false", JSON_BOOL, 0}, {"null", JSON_NULL, 0}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i].word);
        if (p->len - p->pos >= n && memcmp(p->text + p->pos, words[i].word, n) == 0) {
            p->pos += n;
            Json *j = new_node(words[i].kind);
            j->boolean = words[i].boolean;
            return j;
        }
    }
    return fail(p, "unexpected character");
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static size_t skip_digits(Parser *p) {
    size_t start = p->pos;
    while (is_digit(peek(p))) p->pos++;
    return p->pos - start;
}

/* Checks the RFC 8259 number grammar; sets *integral when there is no fraction or exponent. */
static int scan_number(Parser *p, int *integral) {
    if (peek(p) == '-') p->pos++;
    if (peek(p) == '0') {
        p->pos++;
        if (is_digit(peek(p))) return fail(p, "leading zero in number"), -1;
    } else if (!skip_digits(p)) {
        return fail(p, "expected a digit"), -1;
    }
    *integral = 1;
    if (peek(p) == '.') {
        p->pos++;
        *integral = 0;
        if (!skip_digits(p)) return fail(p, "expected a digit after '.'"), -1;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        p->pos++;
        *integral = 0;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!skip_digits(p)) return fail(p, "expected a digit in the exponent"), -1;
    }
    return 0;
}

static Json *parse_number(Parser *p) {
    size_t start = p->pos;
    int integral = 0;
    if (scan_number(p, &integral)) return NULL;
    size_t n = p->pos - start;
    if (n >= JSON_MAX_NUMBER_CHARS) {
        p->pos = start;
        return fail(p, "number too long");
    }
    char buf[JSON_MAX_NUMBER_CHARS];
    memcpy(buf, p->text + start, n);
    buf[n] = 0;
    double v = strtod(buf, NULL);
    if (isinf(v)) {
        p->pos = start;
        return fail(p, "number out of range");
    }
    Json *j = new_node(JSON_NUMBER);
    j->number = v;
    if (integral) {
        errno = 0;
        long long i = strtoll(buf, NULL, 10);
        j->is_integer = errno != ERANGE;
        j->integer = j->is_integer ? (int64_t)i : 0;
    }
    return j;
}

static void put_utf8(Buf *b, uint32_t cp) {
    if (cp < 0x80) {
        buf_putc(b, (char)cp);
    } else if (cp < 0x800) {
        buf_putc(b, (char)(0xC0 | (cp >> 6)));
        buf_putc(b, (char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        buf_putc(b, (char)(0xE0 | (cp >> 12)));
        buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        buf_putc(b, (char)(0x80 | (cp & 0x3F)));
    } else {
        buf_putc(b, (char)(0xF0 | (cp >> 18)));
        buf_putc(b, (char)(0x80 | ((cp >> 12) & 0x3F)));
        buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        buf_putc(b, (char)(0x80 | (cp & 0x3F)));
    }
}

static int hex_value(char c) {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits after "\u" (p->pos is at the 'u'). */
static int read_hex4(Parser *p, uint32_t *out) {
    if (p->len - p->pos < 5) return fail(p, "truncated \\u escape"), -1;
    uint32_t v = 0;
    for (int i = 1; i <= 4; i++) {
        int h = hex_value(p->text[p->pos + (size_t)i]);
        if (h < 0) return fail(p, "bad hex digit in \\u escape"), -1;
        v = v << 4 | (uint32_t)h;
    }
    p->pos += 5;
    *out = v;
    return 0;
}

/* A \u escape, joining a UTF-16 surrogate pair into one code point. */
static int parse_unicode_escape(Parser *p, Buf *b) {
    size_t start = p->pos;
    uint32_t cp, low;
    if (read_hex4(p, &cp)) return -1;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return p->pos = start, fail(p, "unpaired low surrogate in \\u escape"), -1;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
            return p->pos = start, fail(p, "unpaired high surrogate in \\u escape"), -1;
        p->pos++;
        if (read_hex4(p, &low)) return -1;
        if (low < 0xDC00 || low > 0xDFFF)
            return p->pos = start, fail(p, "high surrogate not followed by a low surrogate"), -1;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    if (cp == 0) return p->pos = start, fail(p, "embedded NUL (\\u0000) in string"), -1;
    put_utf8(b, cp);
    return 0;
}

static int parse_escape(Parser *p, Buf *b) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char c = peek(p);
    if (c == 'u') return parse_unicode_escape(p, b);
    const char *k = c ? strchr(from, c) : NULL;
    if (!k) return fail(p, "bad escape in string"), -1;
    buf_putc(b, to[k - from]);
    p->pos++;
    return 0;
}

/* Parses a string literal (p->pos at the opening quote); bytes >= 0x80 pass through as they are. */
static char *parse_string_raw(Parser *p, size_t *out_len) {
    Buf b = {0};
    buf_puts(&b, "");
    p->pos++;
    for (;;) {
        if (at_end(p)) {
            buf_free(&b);
            return fail(p, "unterminated string");
        }
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c == '"') break;
        if (c < 0x20) {
            buf_free(&b);
            return fail(p, c ? "control character in string" : "embedded NUL in string");
        }
        p->pos++;
        if (c != '\\') {
            buf_putc(&b, (char)c);
        } else if (parse_escape(p, &b)) {
            buf_free(&b);
            return NULL;
        }
    }
    p->pos++;
    if (out_len) *out_len = b.len;
    return buf_take(&b);
}

static Json *parse_string(Parser *p) {
    char *s = parse_string_raw(p, NULL);
    if (!s) return NULL;
    Json *j = new_node(JSON_STRING);
    j->string = s;
    return j;
}

static void push_item(Json *j, size_t *cap, Json *item, char *key) {
    if (j->len == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        j->items = xrealloc(j->items, *cap * sizeof *j->items);
        if (j->kind == JSON_OBJECT) j->keys = xrealloc(j->keys, *cap * sizeof *j->keys);
    }
    j->items[j->len] = item;
    if (key) j->keys[j->len] = key;
    j->len++;
}

/* After an element: ',' continues (returns 1), the closer ends (returns 0). */
static int element_separator(Parser *p, char closer) {
    skip_ws(p);
    char c = peek(p);
    if (c == ',') {
        p->pos++;
        return 1;
    }
    if (c == closer) {
        p->pos++;
        return 0;
    }
    fail(p, closer == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
    return -1;
}

static Json *parse_array(Parser *p, int depth) {
    Json *j = new_node(JSON_ARRAY);
    size_t cap = 0;
    p->pos++;
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        return j;
    }
    for (;;) {
        Json *item = parse_value(p, depth + 1);
        if (!item) break;
        push_item(j, &cap, item, NULL);
        int more = element_separator(p, ']');
        if (more == 0) return j;
        if (more < 0) break;
    }
    json_free(j);
    return NULL;
}

/* One "key": value member; checks the key against those already seen. */
static int parse_member(Parser *p, Json *obj, size_t *cap, StrMap *seen, int depth) {
    skip_ws(p);
    if (peek(p) != '"') return fail(p, "expected a string key"), -1;
    size_t key_pos = p->pos;
    char *key = parse_string_raw(p, NULL);
    if (!key) return -1;
    int64_t ignored;
    if (strmap_get(seen, key, &ignored)) {
        free(key);
        p->pos = key_pos;
        return fail(p, "duplicate key"), -1;
    }
    strmap_put(seen, key, 0);
    skip_ws(p);
    if (peek(p) != ':') {
        free(key);
        return fail(p, "expected ':'"), -1;
    }
    p->pos++;
    Json *value = parse_value(p, depth + 1);
    if (!value) {
        free(key);
        return -1;
    }
    push_item(obj, cap, value, key);
    return 0;
}

static Json *parse_object(Parser *p, int depth) {
    Json *j = new_node(JSON_OBJECT);
    size_t cap = 0;
    StrMap seen;
    strmap_init(&seen);
    p->pos++;
    skip_ws(p);
    int more = 1;
    if (peek(p) == '}') {
        p->pos++;
        more = 0;
    }
    while (more > 0) {
        if (parse_member(p, j, &cap, &seen, depth)) more = -1;
        else more = element_separator(p, '}');
    }
    strmap_free(&seen);
    if (more == 0) return j;
    json_free(j);
    return NULL;
}

static Json *parse_value(Parser *p, int depth) {
    if (depth > JSON_MAX_DEPTH) return fail(p, "nesting deeper than 64");
    skip_ws(p);
    char c = peek(p);
    if (at_end(p)) return fail(p, "unexpected end of input");
    if (c == '{') return parse_object(p, depth);
    if (c == '[') return parse_array(p, depth);
    if (c == '"') return parse_string(p);
    if (c == '-' || is_digit(c)) return parse_number(p);
    if (c == 0) return fail(p, "embedded NUL");
    return parse_literal(p);
}

Json *json_parse(const char *text, size_t len, const char *what, Err *err) {
    Parser p = {text, len, 0, what ? what : "JSON", err};
    Json *j = parse_value(&p, 1);
    if (!j) return NULL;
    skip_ws(&p);
    if (!at_end(&p)) {
        json_free(j);
        return fail(&p, "trailing characters after the value");
    }
    return j;
}

void json_free(Json *j) {
    if (!j) return;
    for (size_t i = 0; i < j->len; i++) {
        json_free(j->items[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->string);
    free(j);
}

const Json *json_get(const Json *obj, const char *key) {
    if (!obj || obj->kind != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
    return NULL;
}

const char *json_kind_name(JsonKind k) {
    static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

void json_write_string(Buf *b, const char *s) {
    static const char from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt";
    buf_putc(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *k = strchr(from, c);
        if (k) {
            buf_putc(b, '\\');
            buf_putc(b, to[k - from]);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_putc(b, (char)c);
        }
    }
    buf_putc(b, '"');
}
