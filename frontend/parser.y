/* The grammar of .v3 files (docs/dsl.md). A pure parser building the AST in
 * the Program's arena; the first syntax error stops it. */
%define api.pure full
%define parse.error detailed
%locations
%lex-param {yyscan_t scanner}
%parse-param {yyscan_t scanner} {ParseCtx *ctx}

%code requires {
#include "ast.h"
#include "program.h"
typedef void *yyscan_t;

/* Parser state shared with the lexer (its yyextra). */
typedef struct ParseCtx {
    Program *program;
    int file;
    Err *err;
    int failed;      /* an error is already in err */
    int start_token; /* START_FILE or START_EXPR, handed out as the first token */
    int line, col;   /* where the lexer is */
    DeclList *decls; /* START_FILE result */
    Expr *expr;      /* START_EXPR result */
} ParseCtx;
}

%code {
#include <string.h>

#include "diag.h"

int yylex(YYSTYPE *yylval, YYLTYPE *yylloc, yyscan_t scanner);
static void yyerror(YYLTYPE *loc, yyscan_t scanner, ParseCtx *ctx, const char *msg);
static Expr *parse_string_literal(ParseCtx *ctx, const char *raw, Loc loc);

#define AT(l) ((Loc){ctx->file, (l).first_line, (l).first_column})
#define ARENA (&ctx->program->arena)
/* Deep nesting is an error, not a deep recursion later. */
#define YYMAXDEPTH 600
}

%union {
    int64_t ival;
    double fval;
    const char *sval;
    Expr *expr;
    Stmt *stmt;
    Decl *decl;
    ExprList elist;
    StmtList slist;
    NameList nlist;
}

%token START_FILE START_EXPR
%token <sval> ID "identifier"
%token <ival> INT "integer"
%token <fval> FLOAT "number"
%token <sval> STRING "string"
%token HYPER "hyper" FN "fn" LET "let" RETURN "return" IF "if" ELSE "else" FOR "for" IN "in"
%token IMPORT "import" OUTPUT "output" SCOPE "scope" CHUNK "chunk" RECOMPUTE "recompute" TRUE "true" FALSE "false"
%token NONE "none" AND "and" OR "or" NOT "not"
%token DOTDOT ".." EQ "==" NE "!=" LE "<=" GE ">="

%left OR
%left AND
%precedence NOT
%nonassoc EQ NE '<' LE '>' GE
%left '+' '-'
%left '*' '/' '%'
%precedence UMINUS

%type <expr> expr postfix primary string
%type <stmt> stmt if_stmt else_opt
%type <decl> decl
%type <elist> args args_opt
%type <slist> stmts block
%type <nlist> names params params_opt

%%

top: START_FILE decls
   | START_EXPR expr { ctx->expr = $2; }
   ;

decls: %empty
     | decls decl { ast_decl_push(ctx->decls, $2); }
     ;

decl: IMPORT STRING ';' {
          $$ = ast_decl(ARENA, D_IMPORT, AT(@1));
          $$->name = $2;
      }
    | HYPER ID '=' expr ';' {
          $$ = ast_decl(ARENA, D_HYPER, AT(@2));
          $$->name = $2;
          $$->value = $4;
      }
    | FN ID '(' params_opt ')' block {
          $$ = ast_decl(ARENA, D_FN, AT(@2));
          $$->name = $2;
          $$->params = $4;
          $$->body = $6;
      }
    | stmt {
          $$ = ast_decl(ARENA, D_STMT, $1->loc);
          $$->stmt = $1;
      }
    ;

params_opt: %empty { $$ = (NameList){0}; }
          | params
          ;

params: ID { $$ = (NameList){0}; ast_name_push(ARENA, &$$, $1, AT(@1)); }
      | params ',' ID { $$ = $1; ast_name_push(ARENA, &$$, $3, AT(@3)); }
      ;

names: ID { $$ = (NameList){0}; ast_name_push(ARENA, &$$, $1, AT(@1)); }
     | names ',' ID { $$ = $1; ast_name_push(ARENA, &$$, $3, AT(@3)); }
     ;

block: '{' stmts '}' { $$ = $2; }
     ;

stmts: %empty { $$ = (StmtList){0}; }
     | stmts stmt { $$ = $1; ast_stmt_push(ARENA, &$$, $2); }
     ;

stmt: LET names '=' expr ';' {
          $$ = ast_stmt(ARENA, S_LET, AT(@1));
          $$->names = $2;
          $$->value = $4;
      }
    | ID '=' expr ';' {
          $$ = ast_stmt(ARENA, S_ASSIGN, AT(@1));
          ast_name_push(ARENA, &$$->names, $1, AT(@1));
          $$->value = $3;
      }
    | if_stmt
    | FOR ID IN expr DOTDOT expr block {
          $$ = ast_stmt(ARENA, S_FOR, AT(@1));
          ast_name_push(ARENA, &$$->names, $2, AT(@2));
          $$->value = $4;
          $$->value2 = $6;
          $$->body = $7;
      }
    | RETURN ';' { $$ = ast_stmt(ARENA, S_RETURN, AT(@1)); }
    | RETURN args ';' {
          $$ = ast_stmt(ARENA, S_RETURN, AT(@1));
          $$->values = $2;
      }
    | OUTPUT string '=' expr ';' {
          $$ = ast_stmt(ARENA, S_OUTPUT, AT(@1));
          $$->value2 = $2;
          $$->value = $4;
      }
    | SCOPE string block {
          $$ = ast_stmt(ARENA, S_SCOPE, AT(@1));
          $$->value2 = $2;
          $$->body = $3;
      }
    | CHUNK ID block {
          $$ = ast_stmt(ARENA, S_CHUNK, AT(@2));
          ast_name_push(ARENA, &$$->names, $2, AT(@2));
          $$->body = $3;
      }
    | RECOMPUTE block {
          $$ = ast_stmt(ARENA, S_RECOMPUTE, AT(@1));
          $$->body = $2;
      }
    | expr ';' {
          $$ = ast_stmt(ARENA, S_EXPR, $1->loc);
          $$->value = $1;
      }
    ;

if_stmt: IF expr block else_opt {
             $$ = ast_stmt(ARENA, S_IF, AT(@1));
             $$->value = $2;
             $$->body = $3;
             $$->else_branch = $4;
         }
       ;

else_opt: %empty { $$ = NULL; }
        | ELSE block {
              $$ = ast_stmt(ARENA, S_BLOCK, AT(@1));
              $$->body = $2;
          }
        | ELSE if_stmt { $$ = $2; }
        ;

expr: expr OR expr { $$ = ast_binary(ARENA, OP_B_OR, $1, $3, AT(@2)); }
    | expr AND expr { $$ = ast_binary(ARENA, OP_B_AND, $1, $3, AT(@2)); }
    | NOT expr { $$ = ast_expr(ARENA, E_NOT, AT(@1)); $$->a = $2; }
    | expr EQ expr { $$ = ast_binary(ARENA, OP_B_EQ, $1, $3, AT(@2)); }
    | expr NE expr { $$ = ast_binary(ARENA, OP_B_NE, $1, $3, AT(@2)); }
    | expr '<' expr { $$ = ast_binary(ARENA, OP_B_LT, $1, $3, AT(@2)); }
    | expr LE expr { $$ = ast_binary(ARENA, OP_B_LE, $1, $3, AT(@2)); }
    | expr '>' expr { $$ = ast_binary(ARENA, OP_B_GT, $1, $3, AT(@2)); }
    | expr GE expr { $$ = ast_binary(ARENA, OP_B_GE, $1, $3, AT(@2)); }
    | expr '+' expr { $$ = ast_binary(ARENA, OP_B_ADD, $1, $3, AT(@2)); }
    | expr '-' expr { $$ = ast_binary(ARENA, OP_B_SUB, $1, $3, AT(@2)); }
    | expr '*' expr { $$ = ast_binary(ARENA, OP_B_MUL, $1, $3, AT(@2)); }
    | expr '/' expr { $$ = ast_binary(ARENA, OP_B_DIV, $1, $3, AT(@2)); }
    | expr '%' expr { $$ = ast_binary(ARENA, OP_B_MOD, $1, $3, AT(@2)); }
    | '-' expr %prec UMINUS { $$ = ast_expr(ARENA, E_NEG, AT(@1)); $$->a = $2; }
    | postfix
    ;

postfix: primary
       | ID '(' args_opt ')' {
             $$ = ast_expr(ARENA, E_CALL, AT(@1));
             $$->name = $1;
             $$->args = $3;
         }
       | postfix '[' expr ']' {
             $$ = ast_expr(ARENA, E_INDEX, AT(@2));
             $$->a = $1;
             $$->b = $3;
         }
       ;

primary: INT { $$ = ast_expr(ARENA, E_INT, AT(@1)); $$->i = $1; }
       | FLOAT { $$ = ast_expr(ARENA, E_FLOAT, AT(@1)); $$->f = $1; }
       | string
       | TRUE { $$ = ast_expr(ARENA, E_BOOL, AT(@1)); $$->i = 1; }
       | FALSE { $$ = ast_expr(ARENA, E_BOOL, AT(@1)); $$->i = 0; }
       | NONE { $$ = ast_expr(ARENA, E_NONE, AT(@1)); }
       | ID { $$ = ast_expr(ARENA, E_NAME, AT(@1)); $$->name = $1; }
       | '(' expr ')' { $$ = $2; }
       | '[' args_opt ']' { $$ = ast_expr(ARENA, E_LIST, AT(@1)); $$->args = $2; }
       | '[' expr FOR ID IN expr DOTDOT expr ']' {
             $$ = ast_expr(ARENA, E_COMPREHENSION, AT(@1));
             $$->a = $2;
             $$->name = $4;
             $$->b = $6;
             $$->c = $8;
         }
       ;

string: STRING {
            $$ = parse_string_literal(ctx, $1, AT(@1));
            if (!$$) YYABORT;
        }
      ;

args_opt: %empty { $$ = (ExprList){0}; }
        | args
        ;

args: expr { $$ = (ExprList){0}; ast_expr_push(ARENA, &$$, $1); }
    | args ',' expr { $$ = $1; ast_expr_push(ARENA, &$$, $3); }
    ;

%%

#include "lexer.yy.h"

static void yyerror(YYLTYPE *loc, yyscan_t scanner, ParseCtx *ctx, const char *msg) {
    (void)scanner;
    if (ctx->failed) return;
    ctx->failed = 1;
    /* bison's "memory exhausted" means its stack passed YYMAXDEPTH */
    if (strcmp(msg, "memory exhausted") == 0) msg = "nesting too deep";
    diag_error(ctx->program, AT(*loc), ctx->err, "%s", msg);
}

/* Runs the parser on text (NUL-terminated) starting at line, col. */
static int run_parser(ParseCtx *ctx, const char *text, size_t len) {
    yyscan_t scanner;
    if (yylex_init_extra(ctx, &scanner)) return err_internal(ctx->err, "cannot start the scanner");
    YY_BUFFER_STATE buf = yy_scan_bytes(text, (int)len, scanner);
    int rc = yyparse(scanner, ctx);
    yy_delete_buffer(buf, scanner);
    yylex_destroy(scanner);
    return rc == 0 && !ctx->failed ? 0 : -1;
}

int ast_parse_file(Program *p, int file, DeclList *out, Err *err) {
    ParseCtx ctx = {.program = p, .file = file, .err = err, .start_token = START_FILE, .line = 1, .col = 1,
                    .decls = out};
    const char *text = p->files.data[file].text;
    return run_parser(&ctx, text, strlen(text));
}

Expr *ast_parse_expr(Program *p, const char *text, Loc loc, Err *err) {
    ParseCtx ctx = {.program = p, .file = loc.file, .err = err, .start_token = START_EXPR, .line = loc.line,
                    .col = loc.col};
    if (run_parser(&ctx, text, strlen(text))) return NULL;
    return ctx.expr;
}

/* String literal parts. Escapes \" \\ \n; {{ and }} are braces; {expr} is
 * parsed as an expression (it may not itself contain a string literal). */
typedef struct StrBuilder {
    ParseCtx *ctx;
    Loc loc; /* of the opening quote */
    Buf text;
    VEC(StrPart) parts;
} StrBuilder;

static void str_flush(StrBuilder *sb) {
    if (!sb->text.len) return;
    char *s = buf_take(&sb->text);
    StrPart part = {arena_strdup(&sb->ctx->program->arena, s), NULL};
    free(s);
    VEC_PUSH(sb->parts, part);
}

static int str_fail(StrBuilder *sb, size_t at, const char *msg) {
    Loc loc = sb->loc;
    loc.col += 1 + (int)at;
    diag_error(sb->ctx->program, loc, sb->ctx->err, "%s", msg);
    sb->ctx->failed = 1;
    return -1;
}

static const char escapes[][2] = {{'"', '"'}, {'\\', '\\'}, {'n', '\n'}};

/* One escape at raw[i] == '\\'; returns chars consumed or -1. */
static int str_escape(StrBuilder *sb, const char *raw, size_t i) {
    for (size_t k = 0; k < sizeof escapes / sizeof escapes[0]; k++)
        if (raw[i + 1] == escapes[k][0]) {
            buf_putc(&sb->text, escapes[k][1]);
            return 2;
        }
    return str_fail(sb, i, "unknown escape in string (use \\\" \\\\ or \\n)");
}

/* One {expr} at raw[i] == '{'; returns chars consumed or -1. */
static int str_interpolation(StrBuilder *sb, const char *raw, size_t i) {
    const char *close = strchr(raw + i + 1, '}');
    if (!close) return str_fail(sb, i, "'{' in string without a matching '}' (write '{{' for a brace)");
    size_t n = (size_t)(close - (raw + i + 1));
    char *inner = xstrndup(raw + i + 1, n);
    Loc loc = sb->loc;
    loc.col += 2 + (int)i;
    Expr *e = ast_parse_expr(sb->ctx->program, inner, loc, sb->ctx->err);
    free(inner);
    if (!e) {
        sb->ctx->failed = 1;
        return -1;
    }
    str_flush(sb);
    StrPart part = {NULL, e};
    VEC_PUSH(sb->parts, part);
    return (int)n + 2;
}

static int str_step(StrBuilder *sb, const char *raw, size_t i) {
    if (raw[i] == '\\') return str_escape(sb, raw, i);
    if (raw[i] == '{' && raw[i + 1] == '{') return buf_putc(&sb->text, '{'), 2;
    if (raw[i] == '}' && raw[i + 1] == '}') return buf_putc(&sb->text, '}'), 2;
    if (raw[i] == '{') return str_interpolation(sb, raw, i);
    if (raw[i] == '}') return str_fail(sb, i, "single '}' in string (write '}}' for a brace)");
    buf_putc(&sb->text, raw[i]);
    return 1;
}

static Expr *parse_string_literal(ParseCtx *ctx, const char *raw, Loc loc) {
    StrBuilder sb = {.ctx = ctx, .loc = loc};
    for (size_t i = 0; raw[i];) {
        int used = str_step(&sb, raw, i);
        if (used < 0) {
            buf_free(&sb.text);
            VEC_FREE(sb.parts);
            return NULL;
        }
        i += (size_t)used;
    }
    str_flush(&sb);
    Expr *e = ast_expr(ARENA, E_STRING, loc);
    e->nparts = (int)sb.parts.len;
    e->parts = arena_alloc(ARENA, sizeof(StrPart) * (sb.parts.len ? sb.parts.len : 1));
    if (sb.parts.len) memcpy(e->parts, sb.parts.data, sizeof(StrPart) * sb.parts.len);
    VEC_FREE(sb.parts);
    return e;
}
