#include "dim.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

Dim dim_const(int64_t v) {
    Dim d = {0};
    if (v != 0) {
        d.nterms = 1;
        d.t[0].coef = v;
    }
    return d;
}

Dim dim_sym_b(void) {
    Dim d = {.nterms = 1};
    d.t[0] = (DimTerm){1, 1, 0};
    return d;
}

Dim dim_sym_t(void) {
    Dim d = {.nterms = 1};
    d.t[0] = (DimTerm){1, 0, 1};
    return d;
}

int dim_is_const(Dim d) {
    return d.ceil_den == 0 && (d.nterms == 0 || (d.nterms == 1 && d.t[0].pow_b == 0 && d.t[0].pow_t == 0));
}

int64_t dim_const_value(Dim d) { return d.nterms ? d.t[0].coef : 0; }

/* Terms are kept sorted by (pow_b, pow_t) descending, without zero coefficients,
 * so equal polynomials have identical representations. */
static int term_order(DimTerm a, DimTerm b) {
    if (a.pow_b != b.pow_b) return a.pow_b > b.pow_b ? -1 : 1;
    if (a.pow_t != b.pow_t) return a.pow_t > b.pow_t ? -1 : 1;
    return 0;
}

static int dim_add_term(Dim *d, DimTerm t, Err *err) {
    if (t.coef == 0) return 0;
    int i = 0;
    while (i < d->nterms && term_order(d->t[i], t) < 0) i++;
    if (i < d->nterms && term_order(d->t[i], t) == 0) {
        if (add_overflows_i64(d->t[i].coef, t.coef, &d->t[i].coef))
            return err_set(err, "dimension overflows 64 bits");
        if (d->t[i].coef == 0) {
            memmove(&d->t[i], &d->t[i + 1], (size_t)(d->nterms - i - 1) * sizeof t);
            d->nterms--;
        }
        return 0;
    }
    if (d->nterms == DIM_MAX_TERMS) return err_set(err, "dimension expression too complex");
    memmove(&d->t[i + 1], &d->t[i], (size_t)(d->nterms - i) * sizeof t);
    d->t[i] = t;
    d->nterms++;
    return 0;
}

int dim_equal(Dim a, Dim b) {
    if (a.nterms != b.nterms || a.ceil_den != b.ceil_den) return 0;
    for (int i = 0; i < a.nterms; i++)
        if (a.t[i].coef != b.t[i].coef || term_order(a.t[i], b.t[i]) != 0) return 0;
    return 1;
}

/* A ceiling has no polynomial sum or product; callers that need one get an error. */
static int reject_ceilings(Dim a, Dim b, Err *err) {
    Dim c = a.ceil_den ? a : b;
    if (!c.ceil_den) return 0;
    char s[128];
    dim_print(c, s, sizeof s);
    return err_set(err, "dimension %s is a ceiling; it takes no further arithmetic", s);
}

int dim_add(Dim a, Dim b, Dim *out, Err *err) {
    if (reject_ceilings(a, b, err)) return -1;
    Dim r = a;
    for (int i = 0; i < b.nterms; i++)
        if (dim_add_term(&r, b.t[i], err)) return -1;
    *out = r;
    return 0;
}

int dim_sub(Dim a, Dim b, Dim *out, Err *err) {
    if (reject_ceilings(a, b, err)) return -1;
    Dim r = a;
    for (int i = 0; i < b.nterms; i++) {
        DimTerm t = b.t[i];
        t.coef = -t.coef;
        if (dim_add_term(&r, t, err)) return -1;
    }
    *out = r;
    return 0;
}

int dim_mul(Dim a, Dim b, Dim *out, Err *err) {
    if (reject_ceilings(a, b, err)) return -1;
    Dim r = {0};
    for (int i = 0; i < a.nterms; i++)
        for (int j = 0; j < b.nterms; j++) {
            DimTerm t = {0, (uint8_t)(a.t[i].pow_b + b.t[j].pow_b), (uint8_t)(a.t[i].pow_t + b.t[j].pow_t)};
            if (mul_overflows_i64(a.t[i].coef, b.t[j].coef, &t.coef))
                return err_set(err, "dimension overflows 64 bits");
            if (dim_add_term(&r, t, err)) return -1;
        }
    *out = r;
    return 0;
}

int dim_div_const(Dim a, int64_t d, Dim *out, Err *err) {
    if (d == 0) return err_set(err, "division of a dimension by zero");
    if (reject_ceilings(a, a, err)) return -1;
    Dim r = a;
    for (int i = 0; i < r.nterms; i++) {
        if (r.t[i].coef % d) {
            char s[128];
            dim_print(a, s, sizeof s);
            return err_set(err, "dimension %s is not divisible by %lld", s, (long long)d);
        }
        r.t[i].coef /= d;
    }
    *out = r;
    return 0;
}

static int64_t gcd64(int64_t a, int64_t b) {
    a = a < 0 ? -a : a;
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t < 0 ? -t : t;
    }
    return a;
}

static int64_t ceil_div_i64(int64_t a, int64_t d) { return a / d + (a % d > 0); }

int dim_ceil_div(Dim a, int64_t d, Dim *out, Err *err) {
    if (d < 1) return err_set(err, "ceiling division of a dimension by %lld; the divisor must be >= 1", (long long)d);
    if (a.ceil_den && mul_overflows_i64(a.ceil_den, d, &d)) return err_set(err, "dimension overflows 64 bits");
    a.ceil_den = 0;
    if (dim_is_const(a)) return *out = dim_const(ceil_div_i64(dim_const_value(a), d)), 0;
    int64_t g = d;
    for (int i = 0; i < a.nterms; i++) g = gcd64(a.t[i].coef, g);
    for (int i = 0; i < a.nterms; i++) a.t[i].coef /= g;
    a.ceil_den = d / g == 1 ? 0 : d / g;
    *out = a;
    return 0;
}

static int ipow(int64_t base, int e, int64_t *out) {
    int64_t r = 1;
    for (int i = 0; i < e; i++)
        if (mul_overflows_i64(r, base, &r)) return -1;
    *out = r;
    return 0;
}

int dim_eval(Dim d, int64_t b, int64_t t, int64_t *out, Err *err) {
    int64_t sum = 0;
    for (int i = 0; i < d.nterms; i++) {
        int64_t pb, pt, v;
        if (ipow(b, d.t[i].pow_b, &pb) || ipow(t, d.t[i].pow_t, &pt) ||
            mul_overflows_i64(pb, pt, &v) || mul_overflows_i64(v, d.t[i].coef, &v) ||
            add_overflows_i64(sum, v, &sum))
            return err_set(err, "dimension overflows 64 bits at B=%lld T=%lld", (long long)b,
                           (long long)t);
    }
    if (sum < 0) {
        char s[128];
        dim_print(d, s, sizeof s);
        return err_set(err, "dimension %s is negative (%lld) at B=%lld T=%lld", s, (long long)sum,
                       (long long)b, (long long)t);
    }
    *out = d.ceil_den ? ceil_div_i64(sum, d.ceil_den) : sum;
    return 0;
}

static int print_term(DimTerm t, int first, char *out, int n) {
    int64_t c = t.coef;
    int k = 0;
    const char *sign = c < 0 ? "-" : (first ? "" : "+");
    uint64_t mag = c < 0 ? (uint64_t)0 - (uint64_t)c : (uint64_t)c;
    int has_sym = t.pow_b || t.pow_t;
    k += snprintf(out + k, (size_t)(n - k > 0 ? n - k : 0), "%s", sign);
    const char *sep = "";
    for (int i = 0; i < t.pow_b; i++, sep = "*")
        k += snprintf(out + k, (size_t)(n - k > 0 ? n - k : 0), "%sB", sep);
    for (int i = 0; i < t.pow_t; i++, sep = "*")
        k += snprintf(out + k, (size_t)(n - k > 0 ? n - k : 0), "%sT", sep);
    if (!has_sym || mag != 1)
        k += snprintf(out + k, (size_t)(n - k > 0 ? n - k : 0), "%s%llu", sep, (unsigned long long)mag);
    return k;
}

static void print_polynomial(Dim d, char *out, int n) {
    if (d.nterms == 0) {
        snprintf(out, (size_t)n, "0");
        return;
    }
    int k = 0;
    for (int i = 0; i < d.nterms && k < n; i++) k += print_term(d.t[i], i == 0, out + k, n - k);
}

void dim_print(Dim d, char *out, int n) {
    if (!d.ceil_den) {
        print_polynomial(d, out, n);
        return;
    }
    int k = snprintf(out, (size_t)n, "ceil(");
    if (k >= n) return;
    print_polynomial(d, out + k, n - k);
    k += (int)strlen(out + k);
    snprintf(out + k, (size_t)(n - k), "/%lld)", (long long)d.ceil_den);
}

/* factor := INT | 'B' | 'T';  term := factor ('*' factor)*;  dim := ['-'] term (('+'|'-') term)* */
static int parse_term(const char *s, DimTerm *t, Err *err) {
    int i = 0;
    *t = (DimTerm){1, 0, 0};
    for (;;) {
        if (s[i] == 'B') {
            t->pow_b++;
            i++;
        } else if (s[i] == 'T') {
            t->pow_t++;
            i++;
        } else if (isdigit((unsigned char)s[i])) {
            int64_t v = 0;
            while (isdigit((unsigned char)s[i])) {
                if (mul_overflows_i64(v, 10, &v) || add_overflows_i64(v, s[i] - '0', &v))
                    return err_set(err, "dimension literal too large");
                i++;
            }
            if (mul_overflows_i64(t->coef, v, &t->coef)) return err_set(err, "dimension literal too large");
        } else {
            return err_set(err, "expected a dimension (integer, B or T)");
        }
        if (t->pow_b > 8 || t->pow_t > 8) return err_set(err, "dimension expression too complex");
        if (s[i] != '*') return i;
        i++;
    }
}

static int parse_polynomial(const char *s, Dim *out, Err *err) {
    Dim d = {0};
    int i = 0, neg = 0;
    if (s[i] == '-') {
        neg = 1;
        i++;
    }
    for (;;) {
        DimTerm t;
        int k = parse_term(s + i, &t, err);
        if (k < 0) return -1;
        i += k;
        if (neg) t.coef = -t.coef;
        if (dim_add_term(&d, t, err)) return -1;
        if (s[i] != '+' && s[i] != '-') break;
        neg = s[i] == '-';
        i++;
    }
    *out = d;
    return i;
}

/* "ceil(" polynomial "/" INT ")" */
static int parse_ceiling(const char *s, Dim *out, Err *err) {
    Dim p;
    int i = 5, k = parse_polynomial(s + i, &p, err);
    if (k < 0) return -1;
    i += k;
    if (s[i] != '/' || !isdigit((unsigned char)s[i + 1])) return err_set(err, "expected '/' and a divisor in ceil(...)");
    int64_t d = 0;
    for (i++; isdigit((unsigned char)s[i]); i++)
        if (mul_overflows_i64(d, 10, &d) || add_overflows_i64(d, s[i] - '0', &d))
            return err_set(err, "dimension literal too large");
    if (s[i] != ')') return err_set(err, "expected ')' closing ceil(...)");
    return dim_ceil_div(p, d, out, err) ? -1 : i + 1;
}

int dim_parse(const char *s, Dim *out, Err *err) {
    return strncmp(s, "ceil(", 5) == 0 ? parse_ceiling(s, out, err) : parse_polynomial(s, out, err);
}
