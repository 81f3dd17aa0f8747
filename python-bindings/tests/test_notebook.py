"""Executes notebooks/recurrent_vs_attention.ipynb with nbclient (< 60 s)."""

import os
import time

import pytest

seqk = pytest.importorskip("seqk")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install nbformat)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install nbclient)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install matplotlib)")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install ipykernel)")

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks",
                        "recurrent_vs_attention.ipynb")


def _text(nb):
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if "text" in o:
                out.append(o["text"])
    return "".join(out)


def test_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel imports the same seqk and library as this test
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(seqk.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute(env=env)
    elapsed = time.perf_counter() - t0
    text = _text(nb)
    print(text)
    print("notebook ran in %.1f s" % elapsed)
    assert "max|o_rec - o_par|" in text
    for name in ("linear_attention", "retention", "gated_retention", "mamba2"):
        assert name in text
    if seqk.has_op("attention_parallel"):
        assert "max|o_decode - o_parallel|" in text
    assert "prefill throughput" in text
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", [])), "no plot"
    assert elapsed < 60, "the notebook took %.1f s (must stay under 60 s)" % elapsed
