import numpy as np
import pytest

from reference import f32, rel_err, scan_ref

seqk = pytest.importorskip("seqk")

TOL = 1e-5


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("block", [1, 4, 12])
def test_scan_matches_reference(rng, reverse, block):
    B, T, C = 2, 37, 12
    a = f32(rng, B, T, C // block, lo=0.5, hi=1.0)
    b = f32(rng, B, T, C)
    h0 = f32(rng, B, C)
    h, fin = seqk.scan(a, b, h0, block=block, reverse=reverse, return_final=True)
    h_ref, fin_ref = scan_ref(a, b, h0, block=block, reverse=reverse)
    assert h.dtype == np.float32 and h.shape == (B, T, C)
    assert rel_err(h, h_ref) < TOL
    assert rel_err(fin, fin_ref) < TOL


def test_scan_defaults_and_outputs(rng):
    B, T, C = 1, 20, 5
    a = f32(rng, B, T, C, lo=0.0, hi=1.0)
    b = f32(rng, B, T, C)
    h = seqk.scan(a, b)  # h0 = zeros, no final state
    assert isinstance(h, np.ndarray)
    assert rel_err(h, scan_ref(a, b)[0]) < TOL
    out = np.full((B, T, C), np.nan, np.float32)
    fin = np.full((B, C), np.nan, np.float32)
    r = seqk.scan(a, b, out=out, final_out=fin)
    assert r is out
    assert rel_err(fin, scan_ref(a, b)[1]) < TOL


def test_scan_in_place(rng):
    a = f32(rng, 2, 9, 3, lo=0.0, hi=1.0)
    b = f32(rng, 2, 9, 3)
    ref = scan_ref(a, b)[0]
    r = seqk.scan(a, b, out=b)
    assert r is b
    assert rel_err(b, ref) < TOL


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_varlen(rng, reverse):
    cu = np.array([0, 5, 5, 6, 30], np.int32)  # with an empty and a length-1 sequence
    T, C, N = 30, 6, 4
    a = f32(rng, 1, T, C, lo=0.3, hi=1.0)
    b = f32(rng, 1, T, C)
    h0 = f32(rng, N, C)
    h, fin = seqk.scan(a, b, h0, cu_seqlens=cu, reverse=reverse, return_final=True)
    h_ref, fin_ref = scan_ref(a, b, h0, reverse=reverse, cu=cu)
    assert fin.shape == (N, C)
    assert rel_err(h, h_ref) < TOL
    assert rel_err(fin, fin_ref) < TOL
    np.testing.assert_array_equal(fin[1], h0[1])  # empty sequence: final = h0


def test_scan_chaining(rng):
    a = f32(rng, 2, 40, 4, lo=0.5, hi=1.0)
    b = f32(rng, 2, 40, 4)
    whole, fin_whole = seqk.scan(a, b, return_final=True)
    h1, f1 = seqk.scan(np.ascontiguousarray(a[:, :17]), np.ascontiguousarray(b[:, :17]), return_final=True)
    h2, f2 = seqk.scan(np.ascontiguousarray(a[:, 17:]), np.ascontiguousarray(b[:, 17:]), f1, return_final=True)
    assert rel_err(np.concatenate([h1, h2], axis=1), whole) < TOL
    assert rel_err(f2, fin_whole) < TOL


def test_scan_empty_T(rng):
    h0 = f32(rng, 2, 3)
    h, fin = seqk.scan(np.zeros((2, 0, 3), np.float32), np.zeros((2, 0, 3), np.float32), h0, return_final=True)
    assert h.shape == (2, 0, 3)
    np.testing.assert_array_equal(fin, h0)


def test_scan_workspace_size():
    n = seqk.scan_workspace_size(2, 100, 16)
    assert isinstance(n, int) and n >= 0
