%{
/* PLACEHOLDER until the frontend lands. */
int yylex(void);
void yyerror(const char *s);
%}
%token X
%%
top: X ;
%%
