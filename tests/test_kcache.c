/* codegen/kcache.c's size limit: V3C_CACHE_MAX_SIZE read strictly, and kcache_trim
 * removing the least recently used whole entries (a hit counts as a use) down to 90% of
 * the limit, never a half-written entry or anything not the cache's. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../codegen/kcache.h"
#include "testutil.h"

static const KcacheFiles files = {"kernel.src", "kernel.bin", NULL};
enum { BINARY_BYTES = 10000 };

static int64_t size_of(const char *text) {
    Err e = {0};
    if (text) setenv("V3C_CACHE_MAX_SIZE", text, 1);
    else unsetenv("V3C_CACHE_MAX_SIZE");
    int64_t n = kcache_max_size(&e);
    ck_assert_msg(n >= 0 || strstr(e.msg, "V3C_CACHE_MAX_SIZE="), "'%s': %s", text, e.msg);
    unsetenv("V3C_CACHE_MAX_SIZE");
    return n;
}

START_TEST(test_max_size_parsing) {
    ck_assert_int_eq(size_of(NULL), KCACHE_DEFAULT_MAX);
    ck_assert_int_eq(size_of(""), KCACHE_DEFAULT_MAX);
    ck_assert_int_eq(size_of("0"), 0);
    ck_assert_int_eq(size_of("1048576"), 1048576);
    ck_assert_int_eq(size_of("64K"), 64 << 10);
    ck_assert_int_eq(size_of("512m"), (int64_t)512 << 20);
    ck_assert_int_eq(size_of("2G"), (int64_t)2 << 30);
    ck_assert_int_eq(size_of("2GB"), (int64_t)2 << 30);
    ck_assert_int_eq(size_of("2GiB"), (int64_t)2 << 30);
    ck_assert_int_eq(size_of("3T"), (int64_t)3 << 40);
    static const char *bad[] = {"-1", "1.5G", "G", "12Q", " 5", "5 ", "5Gi", "5GBs", "99999999999T", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) ck_assert_int_eq(size_of(bad[i]), -1);
}
END_TEST

/* Entry i under a key of its own, its time set to `when` seconds after the epoch. */
static char *store_entry(const char *dir, int i, time_t when) {
    char key[33];
    snprintf(key, sizeof key, "%032x", i + 1);
    char *binary = xmalloc(BINARY_BYTES);
    memset(binary, 'a' + i, BINARY_BYTES);
    Err e = {0};
    ck_assert_msg(kcache_store(dir, key, &files, "source", binary, BINARY_BYTES, NULL, &e) == 0, "%s", e.msg);
    free(binary);
    char *path = path_join(dir, key);
    struct timespec times[2] = {{when, 0}, {when, 0}};
    ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
    return path;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int64_t cache_bytes(const char *dir) {
    KcacheCounts c;
    Err e = {0};
    ck_assert_msg(kcache_scan(dir, &c, &e) == 0, "%s", e.msg);
    return c.bytes;
}

START_TEST(test_trim_least_recently_used) {
    char *dir = make_temp_dir(), *entry[5];
    for (int i = 0; i < 5; i++) entry[i] = store_entry(dir, i, 1000 + i);
    int64_t one = cache_bytes(dir) / 5;
    /* A hit on the oldest makes it the most recently used. */
    char *binary = NULL;
    size_t len = 0;
    ck_assert_int_eq(kcache_lookup(dir, strrchr(entry[0], '/') + 1, &files, NULL, &binary, &len, NULL), 1);
    ck_assert_int_eq(len, BINARY_BYTES);
    free(binary);
    Err e = {0};
    int64_t removed = -1;
    /* Under the limit: nothing goes; no limit: nothing goes. */
    ck_assert_int_eq(kcache_trim(dir, 5 * one, &removed, &e), 0);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(kcache_trim(dir, 0, &removed, &e), 0);
    ck_assert_int_eq(removed, 0);
    /* 3.5 entries' worth: down to 90% of it, 3.15, so two go, the two least recently used. */
    ck_assert_msg(kcache_trim(dir, 7 * one / 2, &removed, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(removed, 2);
    ck_assert(exists(entry[0]) && !exists(entry[1]) && !exists(entry[2]) && exists(entry[3]) && exists(entry[4]));
    ck_assert_int_le(cache_bytes(dir), 7 * one / 2 - 7 * one / 20);
    for (int i = 0; i < 5; i++) free(entry[i]);
    free(dir);
}
END_TEST

/* A writer's temporary entry counts towards the size but is never removed, nor is
 * anything else in the directory; when only those are left, trimming stops. */
START_TEST(test_trim_spares_what_is_not_a_whole_entry) {
    char *dir = make_temp_dir(), *entry = store_entry(dir, 0, 1000);
    char *tmp = path_join(dir, ".tmp.0123456789abcdef0123456789abcdef.99.1"), *notes = path_join(dir, "notes.txt");
    ck_assert_int_eq(mkdir(tmp, 0755), 0);
    char *big = path_join(tmp, "kernel.bin");
    char *filler = xcalloc(4 * BINARY_BYTES + 1, 1);
    memset(filler, 'x', 4 * BINARY_BYTES);
    write_text(big, filler);
    write_text(notes, "not the cache's\n");
    Err e = {0};
    int64_t removed = -1;
    ck_assert_msg(kcache_trim(dir, BINARY_BYTES, &removed, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(removed, 1);
    ck_assert(!exists(entry) && exists(big) && exists(notes));
    free(filler), free(big), free(tmp), free(notes), free(entry), free(dir);
}
END_TEST

START_TEST(test_trim_unreadable_directory) {
    Err e = {0};
    int64_t removed = -1;
    ck_assert_int_eq(kcache_trim("/nonexistent/v3c-cache", 1, &removed, &e), -1);
    ck_assert_msg(strstr(e.msg, "cannot read cache directory"), "%s", e.msg);
    ck_assert_int_eq(removed, 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("kcache");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_max_size_parsing);
    tcase_add_test(tc, test_trim_least_recently_used);
    tcase_add_test(tc, test_trim_spares_what_is_not_a_whole_entry);
    tcase_add_test(tc, test_trim_unreadable_directory);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
