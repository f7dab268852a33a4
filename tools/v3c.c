/* PLACEHOLDER until the command line lands. */
#include <stdio.h>
int main(void) { fprintf(stderr, "v3c: error: not built yet\n"); return 2; }
