#pragma once
#include "cuda_runtime.h"
typedef void *cublasHandle_t;
typedef int cublasStatus_t;
#define CUBLAS_STATUS_SUCCESS 0
static inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (void *)0x1; return 0; }
static inline cublasStatus_t cublasDestroy(cublasHandle_t) { return 0; }
static inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
