"""bench/peers.py's forward + backward rows (issue #17) on --quick shapes, as a
smoke test: every op's training step through seqk.torch and PyTorch autograd
through the plain-PyTorch peer written in bench/peers.py must give the same
gradients (the worst input's norm-wise relative error < 1e-3), so that a row
cannot time two different functions. Skipped without torch. About 10-20 s on
the 2-core machine (B=1, T=256, H=2, K=V=16, one timed repeat).
"""
import json
import os
import subprocess
import sys

import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "peers.py")
ROWS = ["softmax_attention", "linear_attention", "retention", "gated_retention", "mamba2", "deltanet",
        "gated_deltanet", "titans", "selective_scan"]


def test_peers_fwdbwd_quick(tmp_path):
    if not seqk.has_op("titans_backward"):
        pytest.skip("the loaded libseqk has no seqk_titans_backward")
    only = ",".join(r + "_fwdbwd" for r in ROWS)
    cmd = [sys.executable, PEERS, "--quick", "--threads", "2", "--repeats", "1", "--only", only,
           "--out", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    recs = [json.loads(line) for line in open(tmp_path / "peers.jsonl")]
    assert [x["module"] for x in recs] == [r + "_fwdbwd" for r in ROWS]
    for x in recs:
        assert x["rel_err_vs_peer"] < 1e-3, (x["module"], x["rel_err_vs_peer"])
        assert x["seqk_s"] > 0 and x["peer_s"] > 0
