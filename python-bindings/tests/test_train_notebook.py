"""Executes notebooks/train_tiny_lm.ipynb with nbclient (needs torch, nbclient,
nbformat, ipykernel, matplotlib; skipped without them) and checks what it
printed: every mixer's training loss fell well below its first loss, the
softmax model (and every other) ends below the unigram entropy of the text,
the held-out loss too, the loss plot is there, and decoding under no_grad
through the recurrent mode gave the parallel forward's logits (< 1e-5)."""

import os
import re

import pytest

seqk = pytest.importorskip("seqk")
pytest.importorskip("torch")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install nbformat)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install nbclient)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install matplotlib)")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install ipykernel)")

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks", "train_tiny_lm.ipynb")
ROW = re.compile(r"^(\w+)\s+[\d.]+ s\s+[\d.]+ ms/step\s+loss first ([\d.]+)\s+last-10 mean ([\d.]+)\s+"
                 r"held-out ([\d.]+)$", re.M)


def _text(nb):
    return "".join(o["text"] for c in nb.cells for o in c.get("outputs", []) if "text" in o)


def check_outputs(nb):
    text = _text(nb)
    rows = {m.group(1): tuple(float(x) for x in m.group(2, 3, 4)) for m in ROW.finditer(text)}
    unigram = float(re.search(r"unigram entropy of the text: ([\d.]+)", text).group(1))
    expected = {"softmax_attention", "linear_attention", "retention", "gated_retention", "mamba2", "deltanet"}
    assert expected <= set(rows), rows
    for kind, (first, last, held) in rows.items():
        assert last < 0.5 * first, "%s: loss %.3f -> %.3f" % (kind, first, last)
        assert last < unigram and held < unigram, "%s: %.3f / %.3f vs unigram %.3f" % (kind, last, held, unigram)
    err = float(re.search(r"max\|logits_decode - logits_parallel\| / max\|logits_parallel\| = (\S+)", text).group(1))
    assert err < 1e-5, err
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", [])), "no plot"
    return rows


def test_committed_notebook_has_its_outputs():
    """The notebook under version control is committed executed."""
    check_outputs(nbformat.read(NOTEBOOK, as_version=4))


def test_train_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        c["outputs"] = [] if c.cell_type == "code" else c.get("outputs", [])
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(seqk.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    client = nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)
    print(_text(nb))
    check_outputs(nb)
