"""Bad inputs: each class raises the right Python exception with a message
naming the argument; none crashes the interpreter."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from reference import f32

seqk = pytest.importorskip("seqk")


def valid_call(name, rng):
    """(function, kwargs of valid inputs) for each op; small shapes."""
    B, T, H, K, V = 2, 5, 2, 4, 3
    if name == "scan":
        return seqk.scan, dict(a=f32(rng, B, T, 6, lo=0, hi=1), b=f32(rng, B, T, 6), h0=f32(rng, B, 6))
    if name in ("linear_attention", "retention", "gated_retention"):
        kw = dict(q=f32(rng, B, T, H, K), k=f32(rng, B, T, H, K), v=f32(rng, B, T, H, V),
                  initial_state=f32(rng, B, H, K, V))
        if name == "retention":
            kw["gamma"] = f32(rng, H, lo=0.5, hi=1.0)
        if name == "gated_retention":
            kw["g"] = f32(rng, B, T, H, lo=-1, hi=0)
        if name == "linear_attention":
            kw.update(normalize=True, feature_map="elu1", initial_z=np.abs(f32(rng, B, H, K)))
        return getattr(seqk, name), kw
    if name == "mamba2":
        return seqk.mamba2, dict(x=f32(rng, B, T, 4, 3), dt=f32(rng, B, T, 4), A=-f32(rng, 4, lo=0.5, hi=1),
                                 B=f32(rng, B, T, 2, 5), C=f32(rng, B, T, 2, 5), D=f32(rng, 4),
                                 dt_bias=f32(rng, 4), initial_state=f32(rng, B, 4, 5, 3))
    if name == "selective_scan":
        return seqk.selective_scan, dict(u=f32(rng, B, T, 6), dt=f32(rng, B, T, 6), A=-f32(rng, 6, 5, lo=0.5, hi=1),
                                         B=f32(rng, B, T, 2, 5), C=f32(rng, B, T, 2, 5), D=f32(rng, 6),
                                         z=f32(rng, B, T, 6), dt_bias=f32(rng, 6), initial_state=f32(rng, B, 6, 5))
    if name == "titans":
        return seqk.titans, dict(q=f32(rng, B, T, H, K), k=f32(rng, B, T, H, K) * 0.3, v=f32(rng, B, T, H, V),
                                 eta=f32(rng, B, T, H, lo=0, hi=1), theta=f32(rng, B, T, H, lo=0, hi=0.5),
                                 alpha=f32(rng, B, T, H, lo=0, hi=1), minibatch=2,
                                 initial_state=np.zeros((B, H, 3 * K * V + 8), np.float32))
    if name == "attention_parallel":
        return seqk.attention_parallel, dict(q=f32(rng, B, T, 4, K), k=f32(rng, B, T, 2, K), v=f32(rng, B, T, 2, V))
    if name == "attention_decode":
        return seqk.attention_decode, dict(q=f32(rng, B, 4, K), k_new=f32(rng, B, 2, K), v_new=f32(rng, B, 2, V),
                                           k_cache=f32(rng, B, 8, 2, K), v_cache=f32(rng, B, 8, 2, V),
                                           cache_len=np.array([0, 3], np.int32))
    raise AssertionError(name)


OPS = ["scan", "linear_attention", "retention", "gated_retention", "mamba2", "selective_scan", "titans",
       "attention_parallel", "attention_decode"]
REQUIRED = {
    "scan": ["a", "b"],
    "linear_attention": ["q", "k", "v"],
    "retention": ["q", "k", "v"],
    "gated_retention": ["q", "k", "v", "g"],
    "mamba2": ["x", "dt", "A", "B", "C"],
    "selective_scan": ["u", "dt", "A", "B", "C"],
    "titans": ["q", "k", "v", "eta", "theta", "alpha"],
    "attention_parallel": ["q", "k", "v"],
    "attention_decode": ["q", "k_new", "v_new", "k_cache", "v_cache", "cache_len"],
}


def array_args(kw):
    return [n for n, x in kw.items() if isinstance(x, np.ndarray)]


def cases(kind):
    rng = np.random.default_rng(0)
    out = []
    for op in OPS:
        if not seqk.has_op(op):
            continue
        _, kw = valid_call(op, rng)
        names = REQUIRED[op] if kind == "required" else array_args(kw)
        out += [(op, n) for n in names]
    return out


def names_arg(msg, arg):
    return re.search(r"(: %s (has shape|must|is)|from %s\b)" % (re.escape(arg), re.escape(arg)), msg)


@pytest.mark.parametrize("op", [o for o in OPS if seqk.has_op(o)])
def test_valid_calls_work(op):
    f, kw = valid_call(op, np.random.default_rng(0))
    f(**kw)


@pytest.mark.parametrize("op,arg", cases("arrays"))
def test_wrong_dtype(op, arg):
    f, kw = valid_call(op, np.random.default_rng(0))
    want = kw[arg].dtype
    kw[arg] = kw[arg].astype(np.float64 if want == np.float32 else np.int64)
    with pytest.raises(TypeError) as e:
        f(**kw)
    msg = str(e.value)
    assert names_arg(msg, arg), msg
    assert str(want) in msg and ("float64" in msg or "int64" in msg), msg


@pytest.mark.parametrize("op,arg", cases("arrays"))
def test_not_an_array(op, arg):
    f, kw = valid_call(op, np.random.default_rng(0))
    kw[arg] = kw[arg].tolist()
    with pytest.raises(TypeError, match=r"%s must be a numpy.ndarray .*got list" % re.escape(arg)):
        f(**kw)


@pytest.mark.parametrize("op,arg", cases("arrays"))
def test_non_contiguous(op, arg):
    f, kw = valid_call(op, np.random.default_rng(0))
    x = kw[arg]
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    view = wide[..., ::2]
    view[...] = x
    assert view.shape == x.shape and not view.flags.c_contiguous
    kw[arg] = view
    with pytest.raises(ValueError) as e:
        f(**kw)
    msg = str(e.value)
    assert names_arg(msg, arg) and "contiguous" in msg and str(x.shape).replace(",)", ")") in msg.replace(",)", ")"), msg


@pytest.mark.parametrize("op,arg", cases("arrays"))
def test_wrong_number_of_dimensions(op, arg):
    f, kw = valid_call(op, np.random.default_rng(0))
    kw[arg] = kw[arg][None]
    with pytest.raises(ValueError) as e:
        f(**kw)
    msg = str(e.value)
    assert ": %s must be %d-dimensional" % (arg, kw[arg].ndim - 1) in msg, msg
    assert "got shape (1, " in msg, msg


@pytest.mark.parametrize("op,arg", [c for c in cases("arrays") if c[1] != "cu_seqlens"])
def test_wrong_size(op, arg):
    f, kw = valid_call(op, np.random.default_rng(0))
    x = kw[arg]
    kw[arg] = np.zeros((x.shape[0] + 1,) + x.shape[1:], x.dtype)  # dimension 0 is always bound elsewhere
    with pytest.raises(ValueError) as e:
        f(**kw)
    msg = str(e.value)
    assert names_arg(msg, arg) and "has shape" in msg and "expected" in msg, msg


@pytest.mark.parametrize("op,arg", cases("required"))
def test_none_where_required(op, arg):
    f, kw = valid_call(op, np.random.default_rng(0))
    kw[arg] = None
    with pytest.raises(TypeError, match=r"%s is required, got None" % re.escape(arg)):
        f(**kw)


@pytest.mark.parametrize("op", [o for o in OPS if seqk.has_op(o)])
def test_outputs_checked(op):
    f, kw = valid_call(op, np.random.default_rng(0))
    o = f(**kw)
    kw_bad = dict(kw, out=np.zeros(o.shape[:-1] + (o.shape[-1] + 1,), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        f(**kw_bad)
    with pytest.raises(TypeError, match="out must be a float32"):
        f(**dict(kw, out=np.zeros(o.shape, np.float64)))
    ro = np.zeros(o.shape, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        f(**dict(kw, out=ro))
    good = np.full(o.shape, np.nan, np.float32)
    assert f(**dict(kw, out=good)) is good


VARLEN_OPS = ["scan", "linear_attention", "retention", "gated_retention", "mamba2", "selective_scan",
              "attention_parallel"]


def varlen_call(op):
    f, kw = valid_call(op, np.random.default_rng(0))
    for n, x in list(kw.items()):  # batch 1 and no initial state
        if isinstance(x, np.ndarray) and n not in ("A", "D", "dt_bias", "gamma", "h0", "initial_state", "initial_z"):
            kw[n] = np.ascontiguousarray(x[:1])
    for n in ("h0", "initial_state", "initial_z"):
        kw.pop(n, None)
    return f, kw


@pytest.mark.parametrize("op", [o for o in VARLEN_OPS if seqk.has_op(o)])
@pytest.mark.parametrize("cu,message", [
    ([0, 3, 2, 5], "cu_seqlens[2]=2 < cu_seqlens[1]=3"),
    ([1, 3, 5], "cu_seqlens[0]=1, must be 0"),
    ([0, 2, 4], "cu_seqlens[N=2]=4, must equal T=5"),
    ([0, 2**31 - 1], "cu_seqlens[N=1]=2147483647, must equal T=5"),
])
def test_bad_cu_seqlens_values_give_the_library_message(op, cu, message):
    f, kw = varlen_call(op)
    f(**kw, cu_seqlens=np.array([0, 2, 5], np.int32))  # a valid one works
    with pytest.raises(seqk.SeqkError) as e:
        f(**kw, cu_seqlens=np.array(cu, np.int32))
    assert e.value.status == seqk.Status.ERROR_INVALID_ARGUMENT
    assert e.value.message == "seqk_%s: %s" % (op, message)


@pytest.mark.parametrize("op", [o for o in VARLEN_OPS if seqk.has_op(o)])
def test_bad_cu_seqlens_shape_and_type(op):
    f, kw = varlen_call(op)
    with pytest.raises(TypeError, match="cu_seqlens must be an int32 array, got dtype int64"):
        f(**kw, cu_seqlens=np.array([0, 5], np.int64))
    with pytest.raises(ValueError, match="cu_seqlens must hold N\\+1 >= 2"):
        f(**kw, cu_seqlens=np.array([0], np.int32))
    with pytest.raises(ValueError, match="cu_seqlens must be 1-dimensional"):
        f(**kw, cu_seqlens=np.array([[0, 5]], np.int32))
    f2, kw2 = valid_call(op, np.random.default_rng(0))  # batch 2 with cu_seqlens
    kw2 = {n: x for n, x in kw2.items() if n not in ("h0", "initial_state", "initial_z")}
    with pytest.raises(ValueError, match="B must be 1"):
        f2(**kw2, cu_seqlens=np.array([0, 5], np.int32))


@pytest.mark.parametrize("op", ["linear_attention", "retention", "gated_retention", "mamba2", "selective_scan"])
def test_bad_mode(op):
    f, kw = valid_call(op, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mode must be 'parallel' or 'recurrent', got 'chunked'"):
        f(**kw, mode="chunked")


def test_scalar_errors_from_the_library():
    f, kw = valid_call("retention", np.random.default_rng(0))
    with pytest.raises(seqk.SeqkError, match=r"seqk_retention: scale=nan, must be finite"):
        f(**kw, scale=float("nan"))
    with pytest.raises(seqk.SeqkError, match=r"seqk_retention: chunk=5000"):
        f(**kw, chunk=5000)
    with pytest.raises(seqk.SeqkError, match=r"seqk_retention: gamma\[1\]=1.5, must be in \(0, 1\]"):
        f(**dict(kw, gamma=np.array([0.5, 1.5], np.float32)))
    with pytest.raises(TypeError, match="scale must be a real number"):
        f(**kw, scale="big")
    with pytest.raises(TypeError, match="chunk must be an int"):
        f(**kw, chunk=16.0)
    with pytest.raises(TypeError, match="causal must be a bool"):
        seqk.attention_parallel(kw["q"], kw["k"], kw["k"], causal="yes")


def test_decode_cache_len_checked_by_the_library():
    f, kw = valid_call("attention_decode", np.random.default_rng(0))
    before = kw["k_cache"].copy()
    for bad, msg in (([0, 8], "cache_len[1]=8, must be < max_len=8"), ([-1, 0], "cache_len[0]=-1, must be >= 0")):
        with pytest.raises(seqk.SeqkError) as e:
            f(**dict(kw, cache_len=np.array(bad, np.int32)))
        assert msg in e.value.message
    np.testing.assert_array_equal(kw["k_cache"], before)  # nothing written
    ro = kw["k_cache"].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="k_cache is read-only"):
        f(**dict(kw, k_cache=ro))


def test_linear_attention_z_without_normalize():
    f, kw = valid_call("linear_attention", np.random.default_rng(0))
    with pytest.raises(ValueError, match="need normalize=True"):
        f(**dict(kw, normalize=False))


def test_gqa_mismatch():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Hq=3 .* multiple of Hkv=2"):
        seqk.attention_parallel(f32(rng, 1, 4, 3, 4), f32(rng, 1, 4, 2, 4), f32(rng, 1, 4, 2, 4))
    with pytest.raises(ValueError, match="H=3 .* multiple of the number of groups G=2"):
        seqk.mamba2(f32(rng, 1, 4, 3, 2), f32(rng, 1, 4, 3), f32(rng, 3), f32(rng, 1, 4, 2, 2), f32(rng, 1, 4, 2, 2))


NASTY = r"""
import mmap, sys
import numpy as np
import seqk

rng = np.random.default_rng(0)
f = lambda *s: rng.standard_normal(s).astype(np.float32)
survived = []

def expect(exc, label, fn):
    try:
        fn()
    except exc as e:
        survived.append(label)
        return
    except Exception as e:
        print("WRONG EXCEPTION", label, type(e).__name__, e)
        sys.exit(1)
    print("NO EXCEPTION", label)
    sys.exit(1)

def readonly_page(shape):
    n = int(np.prod(shape)) * 4
    m = mmap.mmap(-1, max(n, mmap.PAGESIZE), prot=mmap.PROT_READ)
    return np.frombuffer(m, dtype=np.float32, count=int(np.prod(shape))).reshape(shape)

q = f(1, 6, 2, 4)
# outputs in truly read-only memory (writing would be SIGSEGV)
expect(ValueError, "scan out read-only page", lambda: seqk.scan(f(1, 6, 3), f(1, 6, 3), out=readonly_page((1, 6, 3))))
expect(ValueError, "retention state read-only page", lambda: seqk.retention(q, q, q, final_state_out=readonly_page((1, 2, 4, 4))))
expect(ValueError, "decode cache read-only page", lambda: seqk.attention_decode(
    f(1, 2, 4), f(1, 2, 4), f(1, 2, 4), readonly_page((1, 4, 2, 4)), f(1, 4, 2, 4), np.zeros(1, np.int32)))
# indices far out of range
expect(seqk.SeqkError, "cache_len INT32_MAX", lambda: seqk.attention_decode(
    f(1, 2, 4), f(1, 2, 4), f(1, 2, 4), f(1, 4, 2, 4), f(1, 4, 2, 4), np.array([2**31 - 1], np.int32)))
expect(seqk.SeqkError, "cache_len INT32_MIN", lambda: seqk.attention_decode(
    f(1, 2, 4), f(1, 2, 4), f(1, 2, 4), f(1, 4, 2, 4), f(1, 4, 2, 4), np.array([-2**31], np.int32)))
for op in ("scan", "attention_parallel", "retention", "selective_scan"):
    cu = np.array([0, 2**31 - 1, 3, 6], np.int32)
    if op == "scan":
        call = lambda: seqk.scan(f(1, 6, 3), f(1, 6, 3), f(3, 3), cu_seqlens=cu, return_final=True)
    elif op == "attention_parallel":
        call = lambda: seqk.attention_parallel(q, q, q, cu_seqlens=cu)
    elif op == "retention":
        call = lambda: seqk.retention(q, q, q, cu_seqlens=cu, return_final_state=True)
    else:
        call = lambda: seqk.selective_scan(f(1, 6, 4), f(1, 6, 4), -f(4, 3) ** 2, f(1, 6, 1, 3), f(1, 6, 1, 3),
                                           cu_seqlens=cu)
    expect(seqk.SeqkError, op + " cu_seqlens huge", call)
    expect(seqk.SeqkError, op + " cu_seqlens negative", lambda: seqk.scan(
        f(1, 6, 3), f(1, 6, 3), cu_seqlens=np.array([0, -5, 6], np.int32)))
# aliasing outputs and inputs
expect(seqk.SeqkError, "attention out aliases q", lambda: seqk.attention_parallel(q, q, q, out=q))
expect(seqk.SeqkError, "gated out aliases g's buffer", lambda: seqk.gated_retention(q, q, q, f(1, 6, 2), out=q))
st = f(3, 2, 4, 4)
q2 = np.concatenate([q, q])
expect(seqk.SeqkError, "state partial overlap", lambda: seqk.retention(
    q2, q2, q2, initial_state=st[0:2], final_state_out=st[1:3]))
# zero-strided / broadcast views (look like arrays of the right shape)
expect(ValueError, "broadcast view", lambda: seqk.scan(np.broadcast_to(np.float32(0.5), (1, 6, 3)), f(1, 6, 3)))
expect(ValueError, "fortran order", lambda: seqk.scan(f(1, 6, 3), np.asfortranarray(f(1, 6, 3))))
# unsupported sizes and scalars
expect(seqk.SeqkError, "K too large", lambda: seqk.linear_attention(f(1, 2, 1, 2000), f(1, 2, 1, 2000), f(1, 2, 1, 2)))
expect(seqk.SeqkError, "Nst too large", lambda: seqk.selective_scan(
    f(1, 2, 4), f(1, 2, 4), f(4, 300), f(1, 2, 1, 300), f(1, 2, 1, 300)))
expect(seqk.SeqkError, "scale inf", lambda: seqk.attention_parallel(q, q, q, scale=float("inf")))
expect(seqk.SeqkError, "gamma 0", lambda: seqk.retention(q, q, q, np.zeros(2, np.float32)))
# wrong python types
expect(TypeError, "int as array", lambda: seqk.scan(3, f(1, 6, 3)))
expect(TypeError, "object array", lambda: seqk.scan(np.empty((1, 6, 3), object), f(1, 6, 3)))
expect(TypeError, "string ctx", lambda: seqk.scan(f(1, 6, 3), f(1, 6, 3), ctx="cuda"))
# closed context, then everything still works on the default one
ctx = seqk.Context()
ctx.close()
expect(ValueError, "closed context", lambda: seqk.retention(q, q, q, ctx=ctx))
# empty sequences everywhere
z = lambda *s: np.zeros(s, np.float32)
seqk.scan(z(1, 0, 3), z(1, 0, 3))
seqk.retention(z(1, 0, 2, 4), z(1, 0, 2, 4), z(1, 0, 2, 4), return_final_state=True)
seqk.gated_retention(z(1, 0, 2, 4), z(1, 0, 2, 4), z(1, 0, 2, 4), z(1, 0, 2), mode="recurrent")
seqk.mamba2(z(1, 0, 2, 3), z(1, 0, 2), z(2), z(1, 0, 1, 3), z(1, 0, 1, 3))
seqk.selective_scan(z(1, 0, 4), z(1, 0, 4), z(4, 3), z(1, 0, 1, 3), z(1, 0, 1, 3))
seqk.attention_parallel(z(1, 0, 2, 4), z(1, 0, 2, 4), z(1, 0, 2, 4))
print("SURVIVED", len(survived))
"""


def test_nasty_inputs_do_not_crash_the_interpreter():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(seqk.__file__)))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(NASTY)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, "exit %d\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    assert "SURVIVED" in r.stdout
    assert int(r.stdout.split("SURVIVED")[1].split()[0]) >= 25, r.stdout
