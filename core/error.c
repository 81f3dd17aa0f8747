/* core/error.c -- status strings and the per-thread last-error message. */
#include "internal.h"

#include <stdio.h>

static _Thread_local char last_error[1024];

const char *seqk_status_string(seqk_status status)
{
    switch (status) {
    case SEQK_SUCCESS: return "success";
    case SEQK_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case SEQK_ERROR_UNSUPPORTED: return "unsupported by this backend";
    case SEQK_ERROR_OUT_OF_MEMORY: return "out of memory";
    case SEQK_ERROR_NOT_COMPILED: return "backend not compiled into this build";
    case SEQK_ERROR_NO_DEVICE: return "no usable device for this backend";
    case SEQK_ERROR_BACKEND: return "backend (CUDA/cuBLAS) error";
    case SEQK_ERROR_WORKSPACE_TOO_SMALL: return "workspace too small";
    case SEQK_ERROR_INTERNAL: return "internal error in seqk";
    }
    return "unknown status";
}

const char *seqk_last_error(void) { return last_error; }

seqk_status seqk__fail(seqk_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *seqk_version(void)
{
#define SEQK_STR2(x) #x
#define SEQK_STR(x) SEQK_STR2(x)
    return SEQK_STR(SEQK_VERSION_MAJOR) "." SEQK_STR(SEQK_VERSION_MINOR) "." SEQK_STR(
        SEQK_VERSION_PATCH);
}

int seqk_version_number(void) { return SEQK_VERSION_NUMBER; }
