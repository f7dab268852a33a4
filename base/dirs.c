/* Directories written whole: a checkpoint or a bundle is built in a temporary
 * directory and published by rename, so a reader never sees half of one. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

void dir_remove_tree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int dir_publish(const char *tmp, const char *dir, const char *what, void (*remove_old)(const char *dir), Err *err) {
    if (rename(tmp, dir) == 0) return 0;
    if (errno != ENOTEMPTY && errno != EEXIST) return err_set(err, "cannot %s '%s': %s", what, dir, strerror(errno));
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        remove_old(tmp); /* now the earlier one */
        return 0;
    }
    /* A filesystem that cannot exchange: dir is briefly absent, never half written. */
    char *old = xsprintf("%s.old.%ld", dir, (long)getpid());
    int rc = rename(dir, old) == 0 && rename(tmp, dir) == 0 ? 0 : -1;
    if (rc) err_set(err, "cannot %s '%s': %s", what, dir, strerror(errno));
    else remove_old(old);
    free(old);
    return rc;
}
