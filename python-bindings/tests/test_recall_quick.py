"""The recall study's --quick run (bench/recall, issue #18): MQAR through
seqk.torch on the CPU, seeded, one thread. Checks that the results file has
every mixer (a result per setting, or a skipped record with its reason) and
that softmax attention's trained accuracy beats plain linear attention's on
the hardest setting of the quick run (the most key-value pairs), with softmax
attention well above chance there. Skipped without torch. Slow: 88 s in pytest
at 1 thread on the 2-core Intel Xeon VM (2026-12-05; 250 steps per mixer).
"""
import json
import os
import sys

import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")
pytest.importorskip("seqk.torch")

RECALL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "recall")
sys.path.insert(0, os.path.abspath(RECALL))
import models  # noqa: E402
import study  # noqa: E402


def test_recall_quick(tmp_path):
    cfg = dict(study.QUICK)
    study.run_study(cfg, models.MIXERS, str(tmp_path), threads=1, seed=0, quick=True, log=lambda m: None)
    recs = [json.loads(line) for line in open(tmp_path / "recall.jsonl")]
    assert recs[0]["kind"] == "meta" and recs[-1]["kind"] == "end"
    res = [r for r in recs if r["kind"] == "result"]
    settings = [(T, P) for T, ps in cfg["settings"].items() for P in ps]
    for m in models.MIXERS:
        got = {(r["T"], r["pairs"]) for r in res if r["mixer"] == m}
        skipped = [r for r in recs if r["kind"] == "skipped" and r["mixer"] == m]
        assert got == set(settings) or (skipped and skipped[0]["reason"]), m
    if models.titans_available():
        assert any(r["mixer"] == "titans" for r in res)
    for r in res:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["state_floats"] > 0
    T, P = max(settings, key=lambda s: (s[1], s[0]))  # the hardest: most pairs
    acc = {r["mixer"]: r["accuracy"] for r in res if (r["T"], r["pairs"]) == (T, P)}
    assert acc["softmax_attention"] > acc["linear_attention"], acc
    assert acc["softmax_attention"] > 0.5, acc  # trained: chance is 2/vocab
    assert (tmp_path / "recall.txt").exists()
