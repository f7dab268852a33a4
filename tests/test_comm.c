/* runtime/comm.h: every call at world size 1 (no MPI touched), then the same
 * calls across 2 and 4 MPI ranks. Under mpirun this executable is the worker:
 * main() sees OMPI_COMM_WORLD_SIZE and runs the scenario named by argv[1]
 * instead of the suite, printing one line per rank. Values are small integers
 * (exact in f32), so every comparison is exact. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/comm.h"
#include "testutil.h"

/* ---- world size 1 ---- */

static Comm *solo(void) {
    Err err = {0};
    Comm *c = comm_init(NULL, NULL, 5.0, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_int_eq(comm_size(c), 1);
    ck_assert_int_eq(comm_rank(c), 0);
    ck_assert_str_eq(comm_engine_name(c), "self");
    return c;
}

START_TEST(test_solo_collectives_copy) {
    Err err = {0};
    Comm *c = solo();
    float buf[3] = {1, 2, 3};
    ck_assert_int_eq(comm_allreduce_sum(c, buf, 3, COMM_F32, &err), 0);
    ck_assert(buf[0] == 1 && buf[2] == 3);
    int64_t send[4] = {5, 6, 7, 8}, recv[4] = {0};
    ck_assert_int_eq(comm_reduce_scatter_sum(c, send, recv, 4, COMM_I64, &err), 0);
    ck_assert(recv[0] == 5 && recv[3] == 8);
    int32_t one[2] = {9, 10}, all[2] = {0};
    ck_assert_int_eq(comm_allgather(c, one, all, 2, COMM_I32, &err), 0);
    ck_assert(all[0] == 9 && all[1] == 10);
    unsigned char bytes[5] = {1, 2, 3, 4, 5}, got[5] = {0};
    int64_t sc[1] = {3}, so[1] = {2}, rc[1] = {3}, ro[1] = {1};
    ck_assert_int_eq(comm_alltoallv(c, bytes, sc, so, got, rc, ro, COMM_U8, &err), 0);
    ck_assert(got[0] == 0 && got[1] == 3 && got[3] == 5 && got[4] == 0);
    ck_assert_int_eq(comm_barrier(c, &err), 0);
    comm_free(c);
}
END_TEST

START_TEST(test_solo_send_to_self) {
    Err err = {0};
    Comm *c = solo();
    double a[2] = {1.5, -2}, b[2] = {0};
    ck_assert_int_eq(comm_send(c, a, 2, COMM_F64, 0, 7, &err), 0);
    CommRequest *r = comm_irecv(c, b, 2, COMM_F64, 0, 7, &err);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(comm_wait(c, r, &err), 0);
    ck_assert(b[0] == 1.5 && b[1] == -2);
    /* Nothing was sent with tag 8: waiting would hang, so it is an error. */
    ck_assert_int_eq(comm_recv(c, b, 2, COMM_F64, 0, 8, &err), -1);
    ck_assert_msg(strstr(err.msg, "no matching send"), "%s", err.msg);
    comm_free(c);
}
END_TEST

START_TEST(test_solo_split_and_errors) {
    Err err = {0};
    Comm *c = solo();
    Comm *sub = comm_split(c, 3, 0, &err);
    ck_assert_msg(sub != NULL, "%s", err.msg);
    ck_assert_int_eq(comm_size(sub), 1);
    ck_assert_int_eq(comm_world_rank(sub, 0), 0);
    ck_assert_int_eq(comm_world_rank(sub, 1), -1);
    float x = 1;
    ck_assert_int_eq(comm_send(sub, &x, 1, COMM_F32, 1, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "peer 1 outside"), "%s", err.msg);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(comm_send(sub, &x, 1, COMM_F32, 0, 40000, &err), -1);
    ck_assert_msg(strstr(err.msg, "tag 40000"), "%s", err.msg);
    memset(&err, 0, sizeof err);
    int64_t sc[1] = {2}, so[1] = {0}, rc[1] = {1}, ro[1] = {0};
    ck_assert_int_eq(comm_alltoallv(sub, &x, sc, so, &x, rc, ro, COMM_F32, &err), -1);
    ck_assert_msg(strstr(err.msg, "sends 2 elements to itself but expects 1"), "%s", err.msg);
    comm_free(sub);
    comm_free(c);
}
END_TEST

START_TEST(test_solo_timeout_from_env) {
    Err err = {0};
    setenv("V3C_COMM_TIMEOUT", "12.5", 1);
    Comm *c = comm_init(NULL, NULL, 0, &err);
    ck_assert_ptr_nonnull(c);
    ck_assert(comm_timeout(c) == 12.5);
    comm_free(c);
    setenv("V3C_COMM_TIMEOUT", "soon", 1);
    ck_assert_ptr_null(comm_init(NULL, NULL, 0, &err));
    ck_assert_msg(strstr(err.msg, "V3C_COMM_TIMEOUT"), "%s", err.msg);
    unsetenv("V3C_COMM_TIMEOUT");
    c = comm_init(NULL, NULL, 0, &err);
    ck_assert(comm_timeout(c) == 300.0);
    comm_free(c);
}
END_TEST

/* ---- NCCL at world size 1 (the GPU machine lends one GPU; NCCL refuses two
 * ranks on one GPU, so more ranks cannot be checked there) ---- */

static int nccl_skipped(void) {
    char why[512];
    if (comm_nccl_available(why, sizeof why)) return 0;
    printf("test_comm: skipped the NCCL test: %s\n", why);
    return 1;
}

/* Host values to the device, an operation, and back. */
static float *to_device(const float *host, size_t n) {
    Err err = {0};
    float *d = comm_device_alloc(n * sizeof *d, &err);
    ck_assert_msg(d != NULL, "%s", err.msg);
    ck_assert_msg(comm_device_copy(d, host, n * sizeof *d, &err) == 0, "%s", err.msg);
    return d;
}

static void expect_device(const float *d, const float *want, size_t n) {
    Err err = {0};
    float got[16];
    ck_assert_msg(comm_device_copy(got, d, n * sizeof *got, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) ck_assert_msg(got[i] == want[i], "element %zu: %g, want %g", i, got[i], want[i]);
}

START_TEST(test_nccl_world_1) {
    if (nccl_skipped()) return;
    Err err = {0};
    Comm *world = solo();
    Comm *c = comm_nccl_init(world, 0, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(comm_engine_name(c), "nccl");
    float host[4] = {1, 2, 3, 4}, zero[4] = {0};
    float *a = to_device(host, 4), *b = to_device(zero, 4);
    ck_assert_msg(comm_allreduce_sum(c, a, 4, COMM_F32, &err) == 0, "%s", err.msg);
    expect_device(a, host, 4);
    ck_assert_msg(comm_reduce_scatter_sum(c, a, b, 4, COMM_F32, &err) == 0, "%s", err.msg);
    expect_device(b, host, 4);
    ck_assert_msg(comm_allgather(c, a, b, 4, COMM_F32, &err) == 0, "%s", err.msg);
    expect_device(b, host, 4);
    int64_t sc[1] = {2}, so[1] = {2}, rc[1] = {2}, ro[1] = {0};
    ck_assert_msg(comm_alltoallv(c, a, sc, so, b, rc, ro, COMM_F32, &err) == 0, "%s", err.msg);
    expect_device(b, (const float[]){3, 4, 3, 4}, 4);
    CommRequest *r = comm_irecv(c, b, 4, COMM_F32, 0, 0, &err);
    ck_assert_msg(comm_send(c, a, 4, COMM_F32, 0, 0, &err) == 0, "%s", err.msg);
    ck_assert_msg(comm_wait(c, r, &err) == 0, "%s", err.msg);
    expect_device(b, host, 4);
    ck_assert_msg(comm_barrier(c, &err) == 0, "%s", err.msg);
    Comm *sub = comm_split(c, 0, 0, &err);
    ck_assert_msg(sub != NULL, "%s", err.msg);
    ck_assert_msg(comm_allreduce_sum(sub, a, 4, COMM_F32, &err) == 0, "%s", err.msg);
    expect_device(a, host, 4);
    comm_free(sub);
    comm_device_free(a);
    comm_device_free(b);
    comm_free(c);
    comm_free(world);
}
END_TEST

START_TEST(test_nccl_unavailable_says_why) {
    char why[512] = "";
    if (comm_nccl_available(why, sizeof why)) return;
    ck_assert_msg(why[0] != 0, "no reason given");
    Err err = {0};
    Comm *world = solo();
    /* Without a GPU the engine refuses with the reason, never crashes. */
    ck_assert_ptr_null(comm_nccl_init(world, 0, &err));
    ck_assert_msg(err.set && err.msg[0], "no error");
    comm_free(world);
}
END_TEST

/* ---- the worker, run by mpirun ---- */

#define EXPECT(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("rank %d FAILED line %d: ", rank, __LINE__);                                                        \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

static int check_allreduce(Comm *c, int rank, int n, Err *err) {
    float f[3];
    int64_t l[3];
    double d[3];
    unsigned char u[3];
    for (int i = 0; i < 3; i++) f[i] = (float)(rank + i), l[i] = rank * 1000000000LL, d[i] = rank * 0.25, u[i] = 1;
    EXPECT(comm_allreduce_sum(c, f, 3, COMM_F32, err) == 0, "%s", err->msg);
    EXPECT(comm_allreduce_sum(c, l, 3, COMM_I64, err) == 0, "%s", err->msg);
    EXPECT(comm_allreduce_sum(c, d, 3, COMM_F64, err) == 0, "%s", err->msg);
    EXPECT(comm_allreduce_sum(c, u, 3, COMM_U8, err) == 0, "%s", err->msg);
    int ranks_sum = n * (n - 1) / 2;
    for (int i = 0; i < 3; i++) {
        EXPECT(f[i] == (float)(ranks_sum + n * i), "allreduce f32[%d] = %g", i, f[i]);
        EXPECT(l[i] == ranks_sum * 1000000000LL, "allreduce i64 = %lld", (long long)l[i]);
        EXPECT(d[i] == ranks_sum * 0.25 && u[i] == n, "allreduce f64 %g u8 %d", d[i], u[i]);
    }
    return 0;
}

static int check_reduce_scatter_allgather(Comm *c, int rank, int n, Err *err) {
    int32_t send[64] = {0}, recv[64] = {0};
    EXPECT(n <= 16, "reduce_scatter check sized for 16 ranks, got %d", n);
    for (int j = 0; j < 3 * n; j++) send[j] = rank * 100 + j;
    EXPECT(comm_reduce_scatter_sum(c, send, recv, (size_t)(3 * n), COMM_I32, err) == 0, "%s", err->msg);
    for (int k = 0; k < 3; k++)
        EXPECT(recv[k] == 100 * n * (n - 1) / 2 + n * (rank * 3 + k), "reduce_scatter[%d] = %d", k, recv[k]);
    int32_t mine[2] = {rank, rank * 10};
    EXPECT(comm_allgather(c, mine, recv, 2, COMM_I32, err) == 0, "%s", err->msg);
    for (int q = 0; q < n; q++) EXPECT(recv[2 * q] == q && recv[2 * q + 1] == q * 10, "allgather from %d", q);
    return 0;
}

/* Rank r sends r+q+1 elements valued r*100+q to rank q. */
static int check_alltoallv(Comm *c, int rank, int n, Err *err) {
    int64_t sc[8] = {0}, so[8] = {0}, rc[8] = {0}, ro[8] = {0}, s_at = 0, r_at = 0;
    float send[128] = {0}, recv[128] = {0};
    EXPECT(n <= 8, "alltoallv check sized for 8 ranks, got %d", n);
    for (int q = 0; q < n; q++) {
        sc[q] = rank + q + 1, so[q] = s_at, rc[q] = q + rank + 1, ro[q] = r_at;
        for (int k = 0; k < sc[q]; k++) send[s_at + k] = (float)(rank * 100 + q);
        s_at += sc[q], r_at += rc[q];
    }
    EXPECT(comm_alltoallv(c, send, sc, so, recv, rc, ro, COMM_F32, err) == 0, "%s", err->msg);
    for (int p = 0; p < n; p++)
        for (int k = 0; k < rc[p]; k++)
            EXPECT(recv[ro[p] + k] == (float)(p * 100 + rank), "alltoallv from %d: %g", p, recv[ro[p] + k]);
    return 0;
}

static int check_ring(Comm *c, int rank, int n, Err *err) {
    int32_t out[2] = {rank, -rank}, in[2] = {0};
    CommRequest *r = comm_irecv(c, in, 2, COMM_I32, (rank + n - 1) % n, 3, err);
    EXPECT(r != NULL, "%s", err->msg);
    EXPECT(comm_send(c, out, 2, COMM_I32, (rank + 1) % n, 3, err) == 0, "%s", err->msg);
    EXPECT(comm_wait(c, r, err) == 0, "%s", err->msg);
    EXPECT(in[0] == (rank + n - 1) % n && in[1] == -in[0], "ring got %d", in[0]);
    /* A receive expecting more than the peer sends says so. */
    EXPECT(comm_send(c, out, 1, COMM_I32, (rank + 1) % n, 4, err) == 0, "%s", err->msg);
    EXPECT(comm_recv(c, in, 2, COMM_I32, (rank + n - 1) % n, 4, err) == -1, "short message accepted");
    EXPECT(strstr(err->msg, "sent 1 elements, 2 expected"), "%s", err->msg);
    memset(err, 0, sizeof *err);
    return comm_barrier(c, err) ? (printf("rank %d FAILED barrier: %s\n", rank, err->msg), 1) : 0;
}

/* Even and odd world ranks, each group in reverse order (key = -rank). */
static int check_split(Comm *c, int rank, int n, Err *err) {
    Comm *sub = comm_split(c, rank % 2, -rank, err);
    EXPECT(sub != NULL, "%s", err->msg);
    int members = (n - rank % 2 + 1) / 2;
    EXPECT(comm_size(sub) == members, "split size %d", comm_size(sub));
    for (int i = 0; i < members; i++) {
        int want = (members - 1 - i) * 2 + rank % 2;
        EXPECT(comm_world_rank(sub, i) == want, "sub rank %d is world %d", i, comm_world_rank(sub, i));
    }
    EXPECT(comm_world_rank(sub, comm_rank(sub)) == rank, "own world rank");
    int32_t v = rank;
    EXPECT(comm_allreduce_sum(sub, &v, 1, COMM_I32, err) == 0, "%s", err->msg);
    int want = 0;
    for (int r = rank % 2; r < n; r += 2) want += r;
    EXPECT(v == want, "sub allreduce %d, want %d", v, want);
    int rc = check_alltoallv(sub, comm_rank(sub), comm_size(sub), err);
    comm_free(sub);
    return rc;
}

static int scenario_collectives(Comm *c, Err *err) {
    int rank = comm_rank(c), n = comm_size(c);
    if (check_allreduce(c, rank, n, err) || check_reduce_scatter_allgather(c, rank, n, err) ||
        check_alltoallv(c, rank, n, err) || check_ring(c, rank, n, err) || check_split(c, rank, n, err))
        return 1;
    printf("rank %d ok\n", rank);
    return 0;
}

/* Rank 1 leaves (exit) or stops answering (sleep) before an allreduce; the
 * others must fail within the timeout, naming rank 1. */
static int scenario_fault(Comm *c, const char *how, Err *err) {
    int rank = comm_rank(c);
    if (rank == 1) {
        fflush(stdout);
        if (strcmp(how, "exit") == 0) _exit(3);
        sleep(60);
    }
    float v = 1;
    if (comm_allreduce_sum(c, &v, 1, COMM_F32, err) == 0) return printf("rank %d: allreduce succeeded\n", rank), 0;
    printf("rank %d error: %s\n", rank, err->msg);
    return 1;
}

/* Rank 0 waits for tag 5, rank 1 sends tag 6: both alive, nothing matches.
 * Rank 1 then waits longer than rank 0, so it still answers rank 0's pings. */
static int scenario_mismatch(Comm *c, Err *err) {
    int rank = comm_rank(c);
    if (rank == 1) comm_set_timeout(c, 4 * comm_timeout(c));
    int32_t v = 1;
    int rc = rank == 0 ? comm_recv(c, &v, 1, COMM_I32, 1, 5, err) : comm_send(c, &v, 1, COMM_I32, 0, 6, err);
    if (rank == 1) return rc ? (printf("rank 1 error: %s\n", err->msg), 1) : comm_barrier(c, err) != 0;
    printf("rank %d error: %s\n", rank, err->msg);
    return 1;
}

static int worker_main(int argc, char **argv) {
    Err err = {0};
    double timeout = argc > 2 ? atof(argv[2]) : 30.0;
    Comm *c = comm_init(&argc, &argv, timeout, &err);
    if (!c) return printf("comm_init failed: %s\n", err.msg), 1;
    const char *what = argc > 1 ? argv[1] : "";
    int rc = 1;
    if (strcmp(what, "collectives") == 0) rc = scenario_collectives(c, &err);
    else if (strcmp(what, "exit") == 0 || strcmp(what, "hang") == 0) rc = scenario_fault(c, what, &err);
    else if (strcmp(what, "mismatch") == 0) rc = scenario_mismatch(c, &err);
    else printf("unknown scenario '%s'\n", what);
    fflush(stdout);
    comm_free(c);
    return rc;
}

/* ---- driving mpirun ---- */

static int mpirun_present(void) { return system("command -v mpirun >/dev/null 2>&1") == 0; }

/* Runs this executable under mpirun (with extra mpirun options); returns its
 * exit status, output in *out. */
static int mpirun_self(int np, const char *mpirun_opts, const char *args, char **out, double *seconds) {
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert(len > 0);
    self[len] = 0;
    char *dir = make_temp_dir(), *log = path_join(dir, "out");
    /* OpenMPI's plugins leak at MPI_Finalize from modules already unloaded, which
     * no suppression can name: leak checking stays with the one-rank tests. */
    char *cmd = xsprintf("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 "
                         "timeout 120 mpirun --oversubscribe %s -np %d %s %s >%s 2>&1",
                         mpirun_opts, np, self, args, log);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int st = system(cmd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (seconds) *seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    Err e = {0};
    *out = read_file(log, NULL, &e);
    if (!*out) *out = xstrdup("");
    free(cmd);
    free(log);
    free(dir);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static void check_collectives(int np) {
    if (!mpirun_present()) {
        printf("test_comm: skipped the %d-rank run: no mpirun on PATH\n", np);
        return;
    }
    char *out;
    int st = mpirun_self(np, "", "collectives", &out, NULL);
    ck_assert_msg(st == 0, "mpirun -np %d exited %d:\n%s", np, st, out);
    ck_assert_msg(count_lines_with(out, " ok\n") == np, "%s", out);
    ck_assert_msg(!strstr(out, "FAILED") && !strstr(out, "Sanitizer"), "%s", out);
    free(out);
}

START_TEST(test_mpi_collectives_2) { check_collectives(2); }
END_TEST

START_TEST(test_mpi_collectives_4) { check_collectives(4); }
END_TEST

/* Timeout 3 s: the survivors must report within timeout + grace (1.5 s) plus
 * start-up; 60 s is the sleeping rank's nap, which must not be waited out. */
static void check_fault(const char *mpirun_opts, const char *how, const char *needle) {
    if (!mpirun_present()) {
        printf("test_comm: skipped the %s run: no mpirun on PATH\n", how);
        return;
    }
    char *out, *args = xsprintf("%s 3", how);
    double seconds = 0;
    int st = mpirun_self(3, mpirun_opts, args, &out, &seconds);
    /* Without its abort on a non-zero status, mpirun exits 0 whatever its ranks did. */
    ck_assert_msg(st != 0 || strstr(mpirun_opts, "orte_abort_on_non_zero_status 0"), "a failed rank went unnoticed:\n%s",
                  out);
    ck_assert_msg(strstr(out, needle), "no '%s' in:\n%s", needle, out);
    ck_assert_msg(seconds < 40, "took %.1f s:\n%s", seconds, out);
    ck_assert_msg(!strstr(out, "Sanitizer"), "%s", out);
    free(args);
    free(out);
}

/* By default mpirun itself ends the job when a rank exits, naming it. */
START_TEST(test_mpi_rank_exits_mpirun_aborts) { check_fault("", "exit", "Process name: [["); }
END_TEST

/* Told to keep the others running, they find rank 1 gone themselves. */
START_TEST(test_mpi_rank_exits) {
    check_fault("--mca orte_abort_on_non_zero_status 0", "exit", "rank 0: allreduce: rank 1 does not answer");
}
END_TEST

START_TEST(test_mpi_rank_hangs) { check_fault("", "hang", ": allreduce: rank 1 does not answer"); }
END_TEST

START_TEST(test_mpi_mismatch_times_out) {
    if (!mpirun_present()) return (void)printf("test_comm: skipped the mismatch run: no mpirun on PATH\n");
    char *out;
    int st = mpirun_self(2, "", "mismatch 2", &out, NULL);
    ck_assert_int_ne(st, 0);
    ck_assert_msg(strstr(out, "rank 0 error: rank 0: recv with tag 5: no progress for 2 s"), "%s", out);
    free(out);
}
END_TEST

static Suite *comm_suite(void) {
    Suite *s = suite_create("comm");
    TCase *solo_case = tcase_create("solo");
    tcase_add_test(solo_case, test_solo_collectives_copy);
    tcase_add_test(solo_case, test_solo_send_to_self);
    tcase_add_test(solo_case, test_solo_split_and_errors);
    tcase_add_test(solo_case, test_solo_timeout_from_env);
    suite_add_tcase(s, solo_case);
    TCase *nccl = tcase_create("nccl");
    tcase_set_timeout(nccl, 120);
    tcase_add_test(nccl, test_nccl_world_1);
    tcase_add_test(nccl, test_nccl_unavailable_says_why);
    suite_add_tcase(s, nccl);
    TCase *mpi = tcase_create("mpi");
    tcase_set_timeout(mpi, 150);
    tcase_add_test(mpi, test_mpi_collectives_2);
    tcase_add_test(mpi, test_mpi_collectives_4);
    tcase_add_test(mpi, test_mpi_rank_exits_mpirun_aborts);
    tcase_add_test(mpi, test_mpi_rank_exits);
    tcase_add_test(mpi, test_mpi_rank_hangs);
    tcase_add_test(mpi, test_mpi_mismatch_times_out);
    suite_add_tcase(s, mpi);
    return s;
}

int main(int argc, char **argv) {
    if (comm_under_mpirun()) return worker_main(argc, argv);
    return run_suite(comm_suite());
}
