#!/usr/bin/env python3
"""bench/peers_gpu.py -- seqk's CUDA backend beside what a GPU user runs today,
in one process, on the same CUDA tensors, on one stream.

Peers:
  softmax_attention   torch.nn.functional.scaled_dot_product_attention, causal,
                      fp32 (what runs on seqk's fp32 inputs: the memory-efficient
                      kernel), and for reference the same call in bf16 (PyTorch's
                      FlashAttention-2 kernel; other precision, so no error check)
  flash-linear-attention (fla-core, Triton), when importable:
  linear_attention    fla.ops.linear_attn.chunk_linear_attn(normalize=False)
  retention           fla.ops.retention.chunk_retention (RetNet's default decays,
                      the same as seqk's defaults)
  gated_retention     fla.ops.simple_gla.chunk_simple_gla (g = log decay [B,T,H])
  deltanet            fla.ops.gated_delta_rule.chunk_gated_delta_rule (gated
                      DeltaNet, q/k L2-normalised in the kernel on both sides)
bf16 rows (modules *_bf16; issue #21): the same peers on the same bfloat16 tensors (q, k,
v in bf16; log-gates, beta in fp32), seqk through its _ex entry points (the Python
bindings pass torch.bfloat16 tensors' dtype): for linear attention, retention and gated
retention that is the native path (tensor-core products through cuBLAS); softmax attention
and DeltaNet run the converting path (fp32 inside). gated_retention_bf16 has two peers:
fla.ops.simple_gla.chunk_simple_gla and fla.ops.gla.chunk_gla with the scalar gate expanded
over K (the same function); softmax_attention_bf16 compares with PyTorch SDPA in bf16
(FlashAttention-2). The error column is seqk against the peer, both in bf16 (each about one
bf16 unit roundoff, 2^-8, from the float64 function), so ~1e-2 is agreement.
Forward + backward (modules *_backward): one training step's kernels, seqk.torch's autograd
(the C backwards on the CUDA backend) against SDPA's and fla's autograd on the same tensors,
compared on dq (written 2026-12-04, after the session's GPU time was spent: not run yet).
Each case: both sides get the same fp32 tensors ([B,T,H,D], fla's layout too);
the outputs are compared (relative error, so the two compute the same function;
fla's Triton products may run in tf32, seqk's in fp32 FFMA), then the calls are
interleaved (seqk, peer, seqk, peer, ...), each timed by CUDA events on the
current stream, and each figure is the median of --repeats. The ratio is
peer time / seqk time (> 1: seqk faster).

  SEQK_LIBRARY=build/gpu/libseqk.so python3 bench/peers_gpu.py [--quick] [--dtype bf16|f32]

Needs torch with CUDA; fla is optional (a missing fla skips those peers).
seqk is imported from python-bindings/ of this tree. scripts/gpu_check.sh runs
it (phase "peers"), with fla-core from wheels carried in .whl/ when present.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python-bindings"))
import seqk  # noqa: E402

try:  # flash-linear-attention's kernels (fla-core)
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.linear_attn import chunk_linear_attn
    from fla.ops.retention import chunk_retention
    from fla.ops.simple_gla import chunk_simple_gla
    import fla
    FLA = getattr(fla, "__version__", "?")
except Exception as e:  # noqa: BLE001 - any import failure means "no fla here"
    FLA = None
    FLA_WHY = "%s: %s" % (type(e).__name__, e)
try:  # vector-gated GLA (a peer of the bf16 gated retention rows only)
    from fla.ops.gla import chunk_gla
except Exception as e:  # noqa: BLE001
    chunk_gla = None
    GLA_WHY = "%s: %s" % (type(e).__name__, e)


class Skip(Exception):
    """A case whose peer is not importable here: printed as skipped."""


# ---- timing -------------------------------------------------------------------------------------

def event_time(f):
    """Seconds of one call of f, by CUDA events on the current stream."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    f()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e-3


def interleaved(fns, repeats, warmup=3):
    """Median seconds of each fn, calls interleaved so drift hits all of them."""
    for _ in range(warmup):
        for f in fns:
            f()
    torch.cuda.synchronize()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            times[i].append(event_time(f))
    return [statistics.median(t) for t in times]


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def first(x):
    """fla ops return (o, final_state); seqk ops return o (or a tuple)."""
    return x[0] if isinstance(x, tuple) else x


# ---- cases: each returns (ours, peer, peer_name, compare or None) --------------------------------

def case_softmax(ctx, gen, B, T, H, D, bf16=False, seqk_bf16=False):
    """bf16: the peer in bf16 (seqk in fp32: a reference time, no error check); seqk_bf16:
    both sides on the same bf16 tensors."""
    q, k, v = (torch.randn(B, T, H, D, device="cuda", generator=gen) for _ in range(3))
    if seqk_bf16:
        q, k, v = (x.bfloat16() for x in (q, k, v))
    scale = D ** -0.5
    out = torch.empty_like(q)
    ours = lambda: seqk.attention_parallel(q, k, v, causal=True, scale=scale, out=out, ctx=ctx)
    tq, tk, tv = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # [B,H,T,D]
    if bf16:
        tq, tk, tv = (x.bfloat16() for x in (tq, tk, tv))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    peer = lambda: sdpa(tq, tk, tv, is_causal=True, scale=scale)
    low = bf16 or seqk_bf16
    name = "torch SDPA %s %s" % ("bf16 (FlashAttention-2)" if low else "fp32", torch.__version__)
    compare = None if (bf16 and not seqk_bf16) else (lambda o, p: rel_err(o, p.transpose(1, 2)))
    return ours, peer, name, compare


def _qkv(gen, B, T, H, K, scale, dtype=torch.float32):
    q = torch.randn(B, T, H, K, device="cuda", generator=gen) * scale
    k = torch.randn(B, T, H, K, device="cuda", generator=gen) * scale
    v = torch.randn(B, T, H, K, device="cuda", generator=gen)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _tag(dtype):
    return "" if dtype == torch.float32 else " bf16"


def case_linear(ctx, gen, B, T, H, K, scale, dtype=torch.float32):
    q, k, v = _qkv(gen, B, T, H, K, scale, dtype)
    ours = lambda: seqk.linear_attention(q, k, v, mode="parallel", scale=1.0, ctx=ctx)
    peer = lambda: chunk_linear_attn(q, k, v, scale=1.0, normalize=False)
    return ours, peer, "fla chunk_linear_attn%s %s" % (_tag(dtype), FLA), \
        lambda o, p: rel_err(o, first(p))


def case_retention(ctx, gen, B, T, H, K, scale, dtype=torch.float32):
    q, k, v = _qkv(gen, B, T, H, K, scale, dtype)
    ours = lambda: seqk.retention(q, k, v, mode="parallel", scale=1.0, ctx=ctx)
    peer = lambda: chunk_retention(q, k, v, scale=1.0)
    return ours, peer, "fla chunk_retention%s %s" % (_tag(dtype), FLA), \
        lambda o, p: rel_err(o, first(p))


def case_gated(ctx, gen, B, T, H, K, scale, dtype=torch.float32, gla=False):
    """gla: the peer is fla's chunk_gla (vector gates) with the scalar gate expanded over K,
    the same function as chunk_simple_gla's."""
    q, k, v = _qkv(gen, B, T, H, K, scale, dtype)
    g = -0.1 * torch.rand(B, T, H, device="cuda", generator=gen)  # fp32 log-gates
    ours = lambda: seqk.gated_retention(q, k, v, g, mode="parallel", scale=1.0, ctx=ctx)
    if gla:
        if chunk_gla is None:
            raise Skip("fla.ops.gla.chunk_gla not importable (%s)" % GLA_WHY)
        gk = g[..., None].expand(B, T, H, K).contiguous()
        peer = lambda: chunk_gla(q, k, v, g=gk, scale=1.0)
        name = "fla chunk_gla (g over K)%s %s" % (_tag(dtype), FLA)
    else:
        peer = lambda: chunk_simple_gla(q, k, v, g=g, scale=1.0)
        name = "fla chunk_simple_gla%s %s" % (_tag(dtype), FLA)
    return ours, peer, name, lambda o, p: rel_err(o, first(p))


def case_deltanet(ctx, gen, B, T, H, K, scale, dtype=torch.float32):
    q, k, v = _qkv(gen, B, T, H, K, 1.0, dtype)
    beta = torch.rand(B, T, H, device="cuda", generator=gen)
    g = -0.1 * torch.rand(B, T, H, device="cuda", generator=gen)
    ours = lambda: seqk.deltanet(q, k, v, beta, g, mode="parallel", scale=scale, l2norm_qk=True, ctx=ctx)
    peer = lambda: chunk_gated_delta_rule(q, k, v, g=g, beta=beta, scale=scale,
                                          use_qk_l2norm_in_kernel=True)
    return ours, peer, "fla chunk_gated_delta_rule%s %s" % (_tag(dtype), FLA), \
        lambda o, p: rel_err(o, first(p))


# ---- forward + backward (seqk.torch's autograd against the peers' autograd) -------------------

def _fwd_bwd(fn, inputs, do):
    """One training step's kernels: fn(*inputs) forward, then backward of <o, do>; returns the
    first input's gradient (what the two sides' results are compared on)."""
    def run():
        for x in inputs:
            x.grad = None
        first(fn(*inputs)).backward(do)
        return inputs[0].grad
    return run


def _leaves(gen, shapes, scales):
    """Fresh leaf tensors (requires_grad) for one side, and a detached copy for the other."""
    xs = [(torch.randn(*sh, device="cuda", generator=gen) * sc) for sh, sc in zip(shapes, scales)]
    return ([x.clone().requires_grad_() for x in xs], [x.clone().requires_grad_() for x in xs])


def case_softmax_bwd(ctx, gen, B, T, H, D):
    import seqk.torch as st
    (q, k, v), _ = _leaves(gen, [(B, T, H, D)] * 3, [1.0] * 3)
    do = torch.randn(B, T, H, D, device="cuda", generator=gen)
    scale = D ** -0.5
    ours = _fwd_bwd(lambda a, b, c: st.attention_parallel(a, b, c, causal=True, scale=scale, ctx=ctx),
                    [q, k, v], do)
    tq, tk, tv = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    peer = _fwd_bwd(lambda a, b, c: sdpa(a, b, c, is_causal=True, scale=scale), [tq, tk, tv],
                    do.transpose(1, 2).contiguous())
    return ours, peer, "torch SDPA fp32 fwd+bwd " + torch.__version__, \
        lambda o, p: rel_err(o, p.transpose(1, 2))


def _lin_bwd(ctx, gen, B, T, H, K, scale, ours_fn, peer_fn, gated, name):
    shapes = [(B, T, H, K)] * 3 + ([(B, T, H)] if gated else [])
    scales = [scale, scale, 1.0] + ([0.1] if gated else [])
    a, b = _leaves(gen, shapes, scales)
    if gated:  # log-gates in [-0.1, 0]
        for x in (a[3], b[3]):
            with torch.no_grad():
                x.copy_(-x.abs())
    do = torch.randn(B, T, H, K, device="cuda", generator=gen)
    return _fwd_bwd(ours_fn, a, do), _fwd_bwd(peer_fn, b, do), name, rel_err


def case_linear_bwd(ctx, gen, B, T, H, K, scale):
    import seqk.torch as st
    return _lin_bwd(ctx, gen, B, T, H, K, scale,
                    lambda q, k, v: st.linear_attention(q, k, v, scale=1.0, ctx=ctx),
                    lambda q, k, v: chunk_linear_attn(q, k, v, scale=1.0, normalize=False), False,
                    "fla chunk_linear_attn fwd+bwd " + FLA)


def case_gated_bwd(ctx, gen, B, T, H, K, scale):
    import seqk.torch as st
    return _lin_bwd(ctx, gen, B, T, H, K, scale,
                    lambda q, k, v, g: st.gated_retention(q, k, v, g, scale=1.0, ctx=ctx),
                    lambda q, k, v, g: chunk_simple_gla(q, k, v, g=g, scale=1.0), True,
                    "fla chunk_simple_gla fwd+bwd " + FLA)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    ap.add_argument("--only", default="", help="comma-separated modules to run")
    ap.add_argument("--dtype", default="all", choices=("all", "f32", "bf16"),
                    help="bf16: only the *_bf16 rows; f32: all but them")
    ap.add_argument("--out", default="bench-results", help="directory for peers-gpu.jsonl")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("peers_gpu.py: torch sees no CUDA device")
    if not seqk.backend_compiled("cuda"):
        sys.exit("peers_gpu.py: this libseqk has no CUDA backend (SEQK_LIBRARY=build/gpu/libseqk.so)")
    if FLA is None:
        print("flash-linear-attention not importable (%s): its peers are skipped" % FLA_WHY,
              file=sys.stderr)
    torch.backends.cuda.matmul.allow_tf32 = False  # SDPA fp32 in fp32, as seqk
    # seqk on torch's current stream, so that events time both sides alike
    ctx = seqk.Context("cuda", device=torch.cuda.current_device(),
                       stream=torch.cuda.current_stream())
    gen = torch.Generator(device="cuda").manual_seed(0)
    Ts = (1024,) if args.quick else (2048, 8192)
    cases = [("softmax_attention", case_softmax, (B, T, 16, D), "B=%d T=%d H=16 K=V=%d causal" % (B, T, D))
             for B in (2,) for T in Ts for D in (64, 128)]
    cases += [("softmax_attention", lambda c, g, *s: case_softmax(c, g, *s, bf16=True), (2, T, 16, 128),
               "B=2 T=%d H=16 K=V=128 causal" % T) for T in Ts]
    for name, build in (("linear_attention", case_linear), ("retention", case_retention),
                        ("gated_retention", case_gated), ("deltanet", case_deltanet)):
        for T in Ts:
            for K in (64, 128):
                cases.append((name, build, (2, T, 16, K, K ** -0.5), "B=2 T=%d H=16 K=V=%d" % (T, K)))
    # bf16 (issue #21): both sides on the same bfloat16 tensors
    bf = torch.bfloat16
    cases += [("softmax_attention_bf16", lambda c, g, *s: case_softmax(c, g, *s, seqk_bf16=True),
               (2, T, 16, D), "B=2 T=%d H=16 K=V=%d causal bf16" % (T, D)) for T in Ts for D in (64, 128)]
    for name, build in (("linear_attention_bf16", lambda c, g, *s: case_linear(c, g, *s, dtype=bf)),
                        ("retention_bf16", lambda c, g, *s: case_retention(c, g, *s, dtype=bf)),
                        ("gated_retention_bf16", lambda c, g, *s: case_gated(c, g, *s, dtype=bf)),
                        ("gated_retention_bf16", lambda c, g, *s: case_gated(c, g, *s, dtype=bf, gla=True)),
                        ("deltanet_bf16", lambda c, g, *s: case_deltanet(c, g, *s, dtype=bf))):
        for T in Ts:
            for K in (64, 128):
                cases.append((name, build, (2, T, 16, K, K ** -0.5), "B=2 T=%d H=16 K=V=%d bf16" % (T, K)))
    # forward + backward: seqk.torch (the C backwards) against the peers' autograd
    cases += [("softmax_attention_backward", case_softmax_bwd, (2, T, 16, D),
               "B=2 T=%d H=16 K=V=%d causal fwd+bwd" % (T, D)) for T in Ts for D in (64, 128)]
    for name, build in (("linear_attention_backward", case_linear_bwd),
                        ("gated_retention_backward", case_gated_bwd)):
        for T in Ts:
            for K in (64, 128):
                cases.append((name, build, (2, T, 16, K, K ** -0.5),
                              "B=2 T=%d H=16 K=V=%d fwd+bwd" % (T, K)))
    only = set(filter(None, args.only.split(",")))
    os.makedirs(args.out, exist_ok=True)
    rows = []
    device = torch.cuda.get_device_name()
    with open(os.path.join(args.out, "peers-gpu.jsonl"), "w") as log:
        for module, build, shape, desc in cases:
            if only and module not in only:
                continue
            if args.dtype != "all" and module.endswith("_bf16") != (args.dtype == "bf16"):
                continue
            if not module.startswith("softmax_attention") and FLA is None:
                continue
            try:
                ours, peer, peer_name, compare = build(ctx, gen, *shape)
                o, p = ours(), peer()
                err = compare(first(o), p) if compare else None
                t_ours, t_peer = interleaved([ours, peer], args.repeats)
            except Skip as e:
                print("[%s %s] skipped: %s" % (module, desc, e), file=sys.stderr)
                continue
            except Exception as e:  # noqa: BLE001 - one failing peer must not stop the sweep
                print("[%s %s] failed: %s: %s" % (module, desc, type(e).__name__, e), file=sys.stderr)
                continue
            rec = {"module": module, "dtype": "bf16" if module.endswith("_bf16") else "f32",
                   "shape": desc, "device": device, "seqk_s": t_ours,
                   "peer_s": t_peer, "peer_over_seqk": t_peer / t_ours, "rel_err_vs_peer": err,
                   "peer": peer_name, "seqk_version": seqk.version(),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            rows.append(rec)
            print("[%s %s] seqk %.3f ms, %s %.3f ms, ratio %.2fx, rel err %s"
                  % (module, desc, t_ours * 1e3, peer_name, t_peer * 1e3, t_peer / t_ours,
                     "-" if err is None else "%.1e" % err), file=sys.stderr)
    print("\n%-26s %-34s %-40s %9s %9s %9s %8s" % ("module", "shape", "peer", "seqk ms", "peer ms",
                                                  "peer/seqk", "rel err"))
    for r in rows:
        e = r["rel_err_vs_peer"]
        print("%-26s %-34s %-40s %9.3f %9.3f %9.2f %8s"
              % (r["module"], r["shape"], r["peer"][:40], r["seqk_s"] * 1e3, r["peer_s"] * 1e3,
                 r["peer_over_seqk"], "-" if e is None else "%.1e" % e))
    print("\nrecords: %s (%s)" % (os.path.join(args.out, "peers-gpu.jsonl"), device))


if __name__ == "__main__":
    main()
