/* tests/test_core.c -- version, status strings, last-error message,
 * backend queries, contexts, memory and workspace rules. */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *other_thread(void *arg)
{
    (void)arg;
    seqk_context *ctx = NULL;
    seqk_context_create(&ctx, SEQK_BACKEND_CPU, 3); /* fails: sets this thread's message */
    return (void *)(strstr(seqk_last_error(), "device=3") != NULL ? (void *)1 : NULL);
}

static void version(void)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SEQK_VERSION_MAJOR, SEQK_VERSION_MINOR,
             SEQK_VERSION_PATCH);
    th_check(strcmp(seqk_version(), want) == 0, "seqk_version()=%s matches the header %s",
             seqk_version(), want);
    th_check(seqk_version_number() == SEQK_VERSION_NUMBER, "seqk_version_number()");
}

static void statuses(void)
{
    const char *seen[16] = {0};
    for (int s = 0; s <= SEQK_ERROR_INTERNAL; s++) {
        const char *str = seqk_status_string((seqk_status)s);
        bool distinct = str && *str && strcmp(str, "unknown status") != 0;
        for (int j = 0; j < s; j++) distinct &= strcmp(seen[j], str) != 0;
        seen[s] = str;
        th_check(distinct, "status %d has its own string \"%s\"", s, str ? str : "(null)");
    }
    th_check(strcmp(seqk_status_string((seqk_status)999), "unknown status") == 0,
             "unknown status string");
}

static void contexts(void)
{
    seqk_context *ctx = (seqk_context *)1;
    th_check_status(seqk_context_create(&ctx, SEQK_BACKEND_CPU, 1), SEQK_ERROR_INVALID_ARGUMENT,
                    "CPU context with device=1");
    th_check(ctx == NULL, "failed create sets *ctx = NULL");
    th_check(strstr(seqk_last_error(), "device=1") != NULL, "message names device=1: %s",
             seqk_last_error());
    th_check_status(seqk_context_create(&ctx, (seqk_backend)7, 0), SEQK_ERROR_INVALID_ARGUMENT,
                    "backend=7");
    th_check(strstr(seqk_last_error(), "backend=7") != NULL, "message names backend=7");
    th_check_status(seqk_context_create(NULL, SEQK_BACKEND_CPU, 0), SEQK_ERROR_INVALID_ARGUMENT,
                    "ctx out-pointer NULL");

    /* The last-error message is per thread. */
    pthread_t th;
    void *ok = NULL;
    pthread_create(&th, NULL, other_thread, NULL);
    pthread_join(th, &ok);
    th_check(ok != NULL, "other thread saw its own message");
    th_check(strstr(seqk_last_error(), "device=3") == NULL,
             "this thread's message unchanged by the other thread: %s", seqk_last_error());

    /* CUDA: compiled or not, present or not, a clear status either way. */
    int count = -1;
    seqk_status st = seqk_cuda_device_count(&count);
    if (seqk_backend_compiled(SEQK_BACKEND_CUDA)) {
        th_check_status(st, SEQK_SUCCESS, "seqk_cuda_device_count");
        seqk_context *cctx = NULL;
        st = seqk_context_create(&cctx, SEQK_BACKEND_CUDA, 0);
        if (count == 0) {
            th_check_status(st, SEQK_ERROR_NO_DEVICE, "CUDA context without a device");
            th_check(cctx == NULL && strstr(seqk_last_error(), "CUDA") != NULL,
                     "no-device message: %s", seqk_last_error());
        } else {
            th_check_status(st, SEQK_SUCCESS, "CUDA context on device 0");
            th_check_status(seqk_context_create(&ctx, SEQK_BACKEND_CUDA, count),
                            SEQK_ERROR_INVALID_ARGUMENT, "CUDA device out of range");
            seqk_context_destroy(cctx);
        }
    } else {
        th_check_status(st, SEQK_ERROR_NOT_COMPILED, "seqk_cuda_device_count without CUDA");
        th_check(count == 0, "count = 0 without CUDA");
        th_check_status(seqk_context_create(&ctx, SEQK_BACKEND_CUDA, 0), SEQK_ERROR_NOT_COMPILED,
                        "CUDA context without CUDA");
    }
    th_check(seqk_backend_compiled(SEQK_BACKEND_CPU) == 1, "CPU backend compiled");

    th_check_status(seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0), SEQK_SUCCESS, "CPU context");
    seqk_backend b = SEQK_BACKEND_CUDA;
    int n = 0, dev = -1;
    th_check_status(seqk_context_backend(ctx, &b), SEQK_SUCCESS, "seqk_context_backend");
    th_check(b == SEQK_BACKEND_CPU, "backend is CPU");
    th_check_status(seqk_context_device(ctx, &dev), SEQK_SUCCESS, "seqk_context_device");
    th_check(dev == 0, "device 0");
    th_check_status(seqk_context_set_threads(ctx, 3), SEQK_SUCCESS, "set_threads(3)");
    th_check_status(seqk_context_threads(ctx, &n), SEQK_SUCCESS, "threads");
    th_check(n == 3, "threads = 3");
    th_check_status(seqk_context_set_threads(ctx, -1), SEQK_ERROR_INVALID_ARGUMENT,
                    "set_threads(-1)");
    th_check(strstr(seqk_last_error(), "n=-1") != NULL, "message names n=-1");
    th_check_status(seqk_context_set_threads(ctx, 0), SEQK_SUCCESS, "set_threads(0) = default");
    th_check_status(seqk_context_threads(ctx, NULL), SEQK_ERROR_INVALID_ARGUMENT,
                    "threads(NULL)");
    th_check_status(seqk_context_set_stream(ctx, (void *)16), SEQK_ERROR_INVALID_ARGUMENT,
                    "stream on a CPU context");
    th_check_status(seqk_context_synchronize(ctx), SEQK_SUCCESS, "synchronize CPU");
    th_check_status(seqk_context_synchronize(NULL), SEQK_ERROR_INVALID_ARGUMENT,
                    "synchronize(NULL)");

    /* memory */
    void *p = (void *)1;
    th_check_status(seqk_malloc(ctx, 0, &p), SEQK_ERROR_INVALID_ARGUMENT, "malloc 0 bytes");
    th_check_status(seqk_malloc(ctx, 1000, &p), SEQK_SUCCESS, "malloc 1000 bytes");
    th_check(((uintptr_t)p % 256) == 0, "malloc is 256-byte aligned");
    char src[1000], dst[1000];
    for (int i = 0; i < 1000; i++) src[i] = (char)i;
    th_check_status(seqk_memcpy(ctx, p, src, 1000, SEQK_COPY_HOST_TO_BACKEND), SEQK_SUCCESS,
                    "memcpy to backend");
    th_check_status(seqk_memcpy(ctx, dst, p, 1000, SEQK_COPY_BACKEND_TO_HOST), SEQK_SUCCESS,
                    "memcpy to host");
    th_check(memcmp(src, dst, 1000) == 0, "round trip through backend memory");
    th_check_status(seqk_memcpy(ctx, dst, p, 1000, (seqk_copy_kind)9),
                    SEQK_ERROR_INVALID_ARGUMENT, "memcpy kind=9");
    th_check_status(seqk_memcpy(ctx, NULL, p, 10, SEQK_COPY_BACKEND_TO_HOST),
                    SEQK_ERROR_INVALID_ARGUMENT, "memcpy dst NULL");
    th_check(strstr(seqk_last_error(), "dst") != NULL, "message names dst");
    th_check_status(seqk_free(ctx, p), SEQK_SUCCESS, "free");
    th_check_status(seqk_free(ctx, NULL), SEQK_SUCCESS, "free(NULL)");

    /* workspace: owned and grown, or the caller's and never grown */
    th_check_status(seqk_context_reserve_workspace(ctx, 1 << 20), SEQK_SUCCESS,
                    "reserve 1 MiB workspace");
    void *mine = NULL;
    seqk_malloc(ctx, 4096, &mine);
    th_check_status(seqk_context_set_workspace(ctx, (char *)mine + 4, 1024),
                    SEQK_ERROR_INVALID_ARGUMENT, "misaligned workspace");
    th_check_status(seqk_context_set_workspace(ctx, mine, 0), SEQK_ERROR_INVALID_ARGUMENT,
                    "workspace ptr with 0 bytes");
    th_check_status(seqk_context_set_workspace(ctx, mine, 4096), SEQK_SUCCESS,
                    "caller workspace");
    th_check_status(seqk_context_reserve_workspace(ctx, 4096), SEQK_SUCCESS,
                    "reserve within the caller's workspace");
    th_check_status(seqk_context_reserve_workspace(ctx, 8192), SEQK_ERROR_WORKSPACE_TOO_SMALL,
                    "reserve beyond the caller's workspace");
    th_check(strstr(seqk_last_error(), "8192") != NULL, "message names the size: %s",
             seqk_last_error());
    th_check_status(seqk_context_set_workspace(ctx, NULL, 0), SEQK_SUCCESS,
                    "back to the owned workspace");
    th_check_status(seqk_context_reserve_workspace(ctx, 8192), SEQK_SUCCESS,
                    "owned workspace grows");
    seqk_free(ctx, mine);
    th_check_status(seqk_context_destroy(ctx), SEQK_SUCCESS, "destroy");
    th_check_status(seqk_context_destroy(NULL), SEQK_SUCCESS, "destroy(NULL)");
}

int main(int argc, char **argv)
{
    th_backend *be;
    th_init(argc, argv, &be);
    version();
    statuses();
    contexts();
    return th_finish();
}
