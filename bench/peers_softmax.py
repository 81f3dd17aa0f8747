#!/usr/bin/env python3
"""bench/peers_softmax.py -- seqk's softmax attention (parallel mode, CPU)
against PyTorch's torch.nn.functional.scaled_dot_product_attention on the
CPU, side by side in one process, on the same inputs.

seqk is called through ctypes on the tensors' own memory (layout
[B, T, H, D]); PyTorch gets the same data as [B, H, T, D] (a transposed
view and a contiguous copy are tried once; the faster one is timed).
Calls are interleaved (seqk, torch, seqk, torch, ...) and each figure is the
median of --repeats timings, so that the shared machine's noise hits both.
FLOPs counted: 2 * B * H * pairs * (K + V), pairs = T (T + 1) / 2 causal,
T^2 otherwise.

  python bench/peers_softmax.py --lib build/libseqk.so --threads 2
"""
import argparse
import ctypes
import statistics
import time

import torch
import torch.nn.functional as F


def load_seqk(path):
    lib = ctypes.CDLL(path)
    lib.seqk_context_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.seqk_context_set_threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seqk_context_reserve_workspace.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.seqk_last_error.restype = ctypes.c_char_p
    i64, fp = ctypes.c_int64, ctypes.c_void_p
    lib.seqk_attention_parallel.argtypes = [ctypes.c_void_p, i64, i64, i64, i64, i64, i64,
                                            ctypes.c_float, ctypes.c_uint, fp, fp, fp, fp, fp,
                                            fp, i64]
    lib.seqk_attention_parallel_workspace_size.argtypes = [ctypes.c_void_p, i64, i64, i64, i64,
                                                           i64, i64, ctypes.c_uint, i64,
                                                           ctypes.POINTER(ctypes.c_size_t)]
    return lib


def timed(fn, settle):
    time.sleep(settle)  # let the other OpenMP runtime's spinning threads go to sleep
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default="build/libseqk.so")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--lengths", default="1024,2048,4096,8192")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--noncausal", action="store_true", help="non-causal instead of causal")
    ap.add_argument("--max-gflop", type=float, default=200.0,
                    help="skip shapes above this many GFLOP per call (time budget)")
    ap.add_argument("--settle", type=float, default=0.02)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    lib = load_seqk(args.lib)
    ctx = ctypes.c_void_p()
    if lib.seqk_context_create(ctypes.byref(ctx), 0, 0) != 0:
        raise SystemExit("seqk_context_create: " + lib.seqk_last_error().decode())
    lib.seqk_context_set_threads(ctx, args.threads)
    causal = not args.noncausal
    flags = 1 if causal else 0

    print(f"# torch {torch.__version__}, threads {args.threads} (torch.set_num_threads and "
          f"seqk_context_set_threads), {'causal' if causal else 'non-causal'} forward, fp32, "
          f"median of {args.repeats}")
    print(f"{'B':>2} {'H':>2} {'T':>5} {'D':>4} {'GFLOP':>7} | {'seqk ms':>9} {'GF/s':>6} | "
          f"{'torch ms':>9} {'GF/s':>6} | {'ratio':>5} {'maxdiff':>8}")
    for B in [int(x) for x in args.batches.split(",")]:
        for D in [int(x) for x in args.dims.split(",")]:
            for T in [int(x) for x in args.lengths.split(",")]:
                H = args.heads
                pairs = T * (T + 1) / 2 if causal else T * T
                gflop = 2.0 * B * H * pairs * (D + D) / 1e9
                if gflop > args.max_gflop:
                    continue
                g = torch.Generator().manual_seed(B * 1000003 + T * 131 + D)
                q = torch.randn(B, T, H, D, generator=g)
                k = torch.randn(B, T, H, D, generator=g)
                v = torch.randn(B, T, H, D, generator=g)
                o = torch.empty(B, T, H, D)
                lse = torch.empty(B, H, T)
                scale = 1.0 / D ** 0.5
                ws = ctypes.c_size_t()
                lib.seqk_attention_parallel_workspace_size(ctx, B, T, H, H, D, D, flags, 0,
                                                           ctypes.byref(ws))
                lib.seqk_context_reserve_workspace(ctx, ws.value)
                qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
                qc, kc, vc = (x.contiguous() for x in (qt, kt, vt))

                def run_seqk():
                    st = lib.seqk_attention_parallel(ctx, B, T, H, H, D, D, scale, flags,
                                                     q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                                     o.data_ptr(), lse.data_ptr(), None, 0)
                    if st != 0:
                        raise SystemExit("seqk: " + lib.seqk_last_error().decode())

                def run_torch_view():
                    with torch.no_grad():
                        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal,
                                                              scale=scale)

                def run_torch_contig():
                    with torch.no_grad():
                        return F.scaled_dot_product_attention(qc, kc, vc, is_causal=causal,
                                                              scale=scale)

                run_seqk()  # warm-up (workspace, threads)
                ref = run_torch_view()
                diff = (o - ref.transpose(1, 2)).abs().max().item()
                # PyTorch's faster input layout (one timing each) is the one timed
                run_torch = min((timed(f, args.settle), i, f) for i, f in
                                enumerate((run_torch_view, run_torch_contig)))[2]
                ts, tt = [], []
                for _ in range(args.repeats):
                    ts.append(timed(run_seqk, args.settle))
                    tt.append(timed(run_torch, args.settle))
                s = statistics.median(ts)
                t = statistics.median(tt)
                print(f"{B:>2} {H:>2} {T:>5} {D:>4} {gflop:>7.2f} | {s * 1e3:>9.2f} "
                      f"{gflop / s:>6.1f} | {t * 1e3:>9.2f} {gflop / t:>6.1f} | {t / s:>5.2f} "
                      f"{diff:>8.1e}", flush=True)


if __name__ == "__main__":
    main()
