"""The recall study: MQAR accuracy of one small model per seqk mixer, trained
on the CPU through seqk.torch, over a sweep of sequence lengths and numbers
of key-value pairs.

  python bench/recall [--quick] [--out DIR] [--threads N] [--mixers a,b,..]

For each sequence length T, each mixer's model is trained once on a mixture
of that T's pair counts (each example draws its P uniformly, as Zoology
trains on several settings at once), then evaluated on a held-out test set
per (T, P): sequences drawn from a seed the training stream never uses. The
accuracy is the fraction of query positions whose arg-max prediction is the
right value.

Writes in DIR (default bench-results/recall; --quick: bench-results/recall-quick):
  recall.jsonl   one "meta" record (config, machine, date, seqk and torch
                 versions), one "result" record per (mixer, T, P) with the
                 accuracy, the state size, parameters, training time and
                 final loss, and a "skipped" record per mixer this seqk
                 cannot run (with the reason)
  recall.txt     the table: accuracy per mixer (rows) and (T, P) (columns),
                 with each mixer's state floats per layer
  recall.png     accuracy against the number of pairs, one line per mixer,
                 one panel per sequence length

A progress line goes to stderr per tenth of each training.
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# The full study: T -> the pair counts trained on together and evaluated.
DEFAULT = dict(
    settings={64: [4, 8, 16], 128: [8, 16, 28]},
    vocab=64, d_model=64, heads=2, layers=2, batch=32, lr=5e-3, weight_decay=0.1,
    steps={64: 400, 128: 400}, n_test=256, titans_minibatch=8, attn_conv=True,
)
# --quick: one sequence length, two pair counts, four heads of 16 (a smaller
# state, so 16 pairs strain it); the CI test's config. Measured: 259 s (pytest,
# 1 thread, the 2-core VM otherwise quiet), 662 s sharing it with another run
# (the issue asks for 2 min: not met); 300
# steps were too few for softmax attention to learn the task.
QUICK = dict(DEFAULT, settings={64: [4, 16]}, steps={64: 400}, n_test=128, heads=4)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def lr_at(step, steps, lr):
    warm = max(1, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    p = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train_one(kind, T, pair_list, cfg, seed, sctx, test_sets, log, tag):
    import torch
    import torch.nn.functional as F

    import models
    import mqar

    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, T, 1])  # the training stream
    model = models.RecallModel(kind, cfg["vocab"], cfg["d_model"], cfg["heads"], cfg["layers"], sctx=sctx,
                               titans_minibatch=cfg["titans_minibatch"], attn_conv=cfg.get("attn_conv", False))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=cfg["weight_decay"]),
                             dict(params=other, weight_decay=0.0)], lr=cfg["lr"], betas=(0.9, 0.98))
    steps = cfg["steps"][T]
    t0 = time.perf_counter()
    losses = []
    every = max(1, steps // 10)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, cfg["lr"])
        x, y = mqar.mqar_mixture(rng, cfg["batch"], T, pair_list, cfg["vocab"])
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=mqar.IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            log("%s step %d: loss %r, stopping this training" % (tag, step, losses[-1]))
            break
        if (step + 1) % every == 0 or step + 1 == steps:
            el = time.perf_counter() - t0
            log("%s step %4d/%d  loss %.3f  %.0f s" % (tag, step + 1, steps, np.mean(losses[-every:]), el))
    train_s = time.perf_counter() - t0
    model.eval()
    acc = {}
    with torch.no_grad():
        for P in pair_list:
            x, y = test_sets[(T, P)]
            correct = total = 0
            for i in range(0, len(x), 64):
                xb, yb = torch.from_numpy(x[i:i + 64]), torch.from_numpy(y[i:i + 64])
                pred = model(xb).argmax(-1)
                m = yb != mqar.IGNORE
                correct += int((pred[m] == yb[m]).sum())
                total += int(m.sum())
            acc[P] = correct / total
    nparams = sum(p.numel() for p in model.parameters())
    tail = losses[-max(1, steps // 20):]
    return acc, dict(train_s=train_s, steps=len(losses), final_loss=float(np.mean(tail)), params=nparams)


def run_study(cfg, mixers, out_dir, threads, seed, log=None, quick=False):
    import torch

    import seqk

    import models
    import mqar

    if log is None:
        def log(msg):
            print("[recall %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)
    torch.set_num_threads(threads)
    sctx = seqk.Context("cpu", threads=threads)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "recall.jsonl")
    H = cfg["heads"]
    dk = cfg["d_model"] // H
    meta = dict(kind="meta", date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                host=platform.node(), cpu=cpu_model(), cpus=os.cpu_count(), threads=threads, quick=quick,
                seed=seed, seqk_version=seqk.__version__, torch_version=torch.__version__,
                config=dict(cfg, settings={str(k): v for k, v in cfg["settings"].items()},
                            steps={str(k): v for k, v in cfg["steps"].items()}),
                mixers=list(mixers), head_dim=dk)
    records = [meta]
    with open(path, "w") as f:
        f.write(json.dumps(meta) + "\n")
    # held-out test sets, shared by every mixer
    test_sets = {}
    for T, plist in cfg["settings"].items():
        for P in plist:
            test_sets[(T, P)] = mqar.mqar_batch(np.random.default_rng([seed, T, P, 2]), cfg["n_test"], T, P,
                                                cfg["vocab"])
    runnable = []
    for kind in mixers:
        if kind == "titans" and not models.titans_available():
            rec = dict(kind="skipped", mixer=kind, label=models.LABELS[kind],
                       reason="seqk.torch has no titans autograd function in this checkout (seqk.torch.titans "
                              "missing), so the Titans model cannot be trained")
            log("skipping %s: %s" % (kind, rec["reason"]))
            records.append(rec)
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        else:
            runnable.append(kind)
    jobs = [(T, kind) for T in cfg["settings"] for kind in runnable]
    t_all = time.perf_counter()
    for i, (T, kind) in enumerate(jobs):
        tag = "[%d/%d] %-17s T=%-4d" % (i + 1, len(jobs), kind, T)
        acc, info = train_one(kind, T, cfg["settings"][T], cfg, seed, sctx, test_sets, log, tag)
        for P in cfg["settings"][T]:
            rec = dict(kind="result", mixer=kind, label=models.LABELS[kind], T=T, pairs=P, queries=P,
                       accuracy=acc[P], state_floats=models.state_floats(kind, T, H, dk, dk), heads=H,
                       head_dim=dk, d_model=cfg["d_model"], trained_on=cfg["settings"][T], **info)
            if kind == "titans":
                rec["minibatch"] = cfg["titans_minibatch"]
            records.append(rec)
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        el = time.perf_counter() - t_all
        log("%s done in %.0f s: %s  (elapsed %.0f s, about %.0f s left)" % (
            tag, info["train_s"], "  ".join("P=%d %.3f" % (P, acc[P]) for P in cfg["settings"][T]), el,
            el / (i + 1) * (len(jobs) - i - 1)))
    total = time.perf_counter() - t_all
    end = dict(kind="end", wall_s=total)
    records.append(end)
    with open(path, "a") as f:
        f.write(json.dumps(end) + "\n")
    txt = table(records)
    with open(os.path.join(out_dir, "recall.txt"), "w") as f:
        f.write(txt)
    try:
        plot(records, os.path.join(out_dir, "recall.png"))
    except ImportError as e:
        log("no PNG (matplotlib missing: %s)" % e)
    log("wrote %s, recall.txt, recall.png in %.0f s" % (path, total))
    return records


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(records):
    import models

    meta = next(r for r in records if r["kind"] == "meta")
    res = [r for r in records if r["kind"] == "result"]
    cols = sorted({(r["T"], r["pairs"]) for r in res})
    Ts = sorted({T for T, _ in cols})
    end = next((r for r in records if r["kind"] == "end"), None)
    cfg = meta["config"]
    lines = ["MQAR accuracy on held-out queries (seqk recall study%s)" % (", --quick" if meta.get("quick") else ""),
             "%s; %s, %d threads; seqk %s, torch %s; seed %d%s" % (
                 meta["date"], meta["cpu"], meta["threads"], meta["seqk_version"], meta["torch_version"],
                 meta["seed"], "; wall %.0f s" % end["wall_s"] if end else "; PARTIAL (the run did not finish)"),
             "model: d_model %d, %d heads of %d, %d layers, vocab %d, batch %d, lr %g; steps per T: %s" % (
                 cfg["d_model"], cfg["heads"], meta["head_dim"], cfg["layers"], cfg["vocab"], cfg["batch"],
                 cfg["lr"], ", ".join("T=%s %s" % kv for kv in cfg["steps"].items())),
             "state: floats per sequence and layer (softmax attention: its KV cache at T)", ""]
    head = "%-26s " % "mixer" + " ".join("%9s" % ("T=%d" % T) for T in Ts) + "  " + \
        " ".join("%8s" % ("%d/%d" % c) for c in cols)
    lines.append("%-26s %s   accuracy at T/pairs" % ("", "state floats".center(10 * len(Ts) - 1)))
    lines.append(head)
    for kind in meta["mixers"]:
        rows = {(r["T"], r["pairs"]): r for r in res if r["mixer"] == kind}
        if not rows:
            sk = next((r for r in records if r["kind"] == "skipped" and r["mixer"] == kind), None)
            if sk:
                lines.append("%-26s skipped: %s" % (models.LABELS.get(kind, kind), sk["reason"]))
            continue
        st = " ".join("%9s" % next((str(r["state_floats"]) for (T2, _), r in rows.items() if T2 == T), "-")
                      for T in Ts)
        ac = " ".join("%8s" % ("%.3f" % rows[c]["accuracy"] if c in rows else "-") for c in cols)
        lines.append("%-26s %s  %s" % (models.LABELS.get(kind, kind), st, ac))
    return "\n".join(lines) + "\n"


COLORS = {"softmax_attention": "black", "linear_attention": "tab:red", "retention": "tab:orange",
          "mamba2": "tab:green", "deltanet": "tab:blue", "gated_deltanet": "tab:purple", "titans": "tab:brown"}
MARKERS = {"softmax_attention": "o", "linear_attention": "v", "retention": "^", "mamba2": "s",
           "deltanet": "D", "gated_deltanet": "P", "titans": "X"}


def plot(records, out_png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import models

    meta = next(r for r in records if r["kind"] == "meta")
    res = [r for r in records if r["kind"] == "result"]
    Ts = sorted({r["T"] for r in res})
    if not Ts:
        return
    fig, axes = plt.subplots(1, len(Ts), figsize=(4.2 * len(Ts) + 1.5, 3.8), squeeze=False)
    for ax, T in zip(axes[0], Ts):
        for kind in meta["mixers"]:
            rows = sorted((r for r in res if r["mixer"] == kind and r["T"] == T), key=lambda r: r["pairs"])
            if not rows:
                continue
            ax.plot([r["pairs"] for r in rows], [r["accuracy"] for r in rows], marker=MARKERS.get(kind, "o"),
                    color=COLORS.get(kind), label="%s (%d)" % (models.LABELS.get(kind, kind), rows[0]["state_floats"]))
        ax.set_xscale("log", base=2)
        ps = sorted({r["pairs"] for r in res if r["T"] == T})
        ax.set_xticks(ps)
        ax.set_xticklabels([str(p) for p in ps])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("key-value pairs")
        ax.set_title("T = %d" % T)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy on held-out queries")
    h, lab = axes[0][-1].get_legend_handles_labels()
    fig.legend(h, lab, loc="center right", fontsize=8, title="mixer (state floats/layer)", title_fontsize=8)
    skipped = [r["mixer"] for r in records if r["kind"] == "skipped"]
    end = next((r for r in records if r["kind"] == "end"), None)
    fig.suptitle("MQAR recall through seqk kernels: d_model %d, %d heads x %d, %s; %s, %d threads, %s%s%s" % (
        meta["config"]["d_model"], meta["config"]["heads"], meta["head_dim"], "quick" if meta.get("quick") else
        "full", meta["cpu"], meta["threads"], meta["date"], "" if end else " (PARTIAL)",
        "; skipped: " + ", ".join(skipped) if skipped else ""), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (4.2 * len(Ts) + 1.5), 0.94))
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def main(argv=None):
    import models

    ap = argparse.ArgumentParser(description="MQAR recall study through seqk.torch (CPU)")
    ap.add_argument("--quick", action="store_true", help="one sequence length, few steps (~2 min on two cores)")
    ap.add_argument("--out", default=None, help="output directory")
    ap.add_argument("--threads", type=int, default=2, help="torch and seqk CPU threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixers", default=",".join(models.MIXERS), help="comma-separated subset of " +
                    ",".join(models.MIXERS))
    ap.add_argument("--steps", type=int, default=None, help="training steps per model (overrides the config)")
    ap.add_argument("--replot", default=None, metavar="JSONL", help="only rewrite the table and PNG from a JSONL")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config entry")
    a = ap.parse_args(argv)
    if a.replot:
        recs = load(a.replot)
        d = os.path.dirname(os.path.abspath(a.replot))
        with open(os.path.join(d, "recall.txt"), "w") as f:
            f.write(table(recs))
        plot(recs, os.path.join(d, "recall.png"))
        return 0
    cfg = dict(QUICK if a.quick else DEFAULT)
    for kv in a.set:
        key, val = kv.split("=", 1)
        val = json.loads(val)
        if key in ("settings", "steps"):
            val = {int(k): v for k, v in val.items()}
        cfg[key] = val
    if a.steps:
        cfg["steps"] = {T: a.steps for T in cfg["settings"]}
    mixers = [m for m in a.mixers.split(",") if m]
    bad = [m for m in mixers if m not in models.MIXERS]
    if bad:
        ap.error("unknown mixer(s) %s; choose from %s" % (", ".join(bad), ", ".join(models.MIXERS)))
    out = a.out or os.path.join("bench-results", "recall-quick" if a.quick else "recall")
    run_study(cfg, mixers, out, a.threads, a.seed, quick=a.quick)
    print(open(os.path.join(out, "recall.txt")).read(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
