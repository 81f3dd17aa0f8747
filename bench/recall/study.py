"""The recall study: MQAR accuracy of one small model per seqk mixer, trained
on the CPU through seqk.torch, over a sweep of sequence lengths and numbers
of key-value pairs.

  python bench/recall [--quick] [--out DIR] [--threads N] [--mixers a,b,..]

For each sequence length T, each mixer's model is trained on a mixture of
that T's pair counts (each example draws its P uniformly, as Zoology trains on
several settings at once), once per learning rate of the sweep (config "lr":
a list, the same for every mixer and T; the full study's is 5e-3, 1e-2,
2e-2). The model kept for each (mixer, T) is the one with the lowest final
training loss (the mean over the last 5% of steps; every batch is freshly
drawn, so this estimates the held-out loss without looking at the test sets).
It is evaluated on a held-out test set per (T, P): sequences drawn from a seed
the training stream never uses. The accuracy is the fraction of query
positions whose arg-max prediction is the right value. Every mixer gets the
same steps, batch, schedule and learning-rate grid.

Writes in DIR (default bench-results/recall; --quick: bench-results/recall-quick):
  recall.jsonl   one "meta" record (config, machine, date, seqk and torch
                 versions), one "trial" record per (mixer, T, lr) of the
                 sweep (final training loss, test accuracies), one "result"
                 record per (mixer, T, P) for the kept model with the
                 accuracy, the state size, the lr, parameters, training time
                 and final loss, a "skipped" record per mixer this seqk
                 cannot run (with the reason), and an "end" record (wall time)
  recall.txt     the table: accuracy per mixer (rows) and (T, P) (columns),
                 with each mixer's state floats per layer and kept lr, and
                 the sweep's final training losses
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
# Four heads of 16: the 31 possible keys (vocab 64) outnumber the head dim, so a
# K x V state cannot give every key its own direction, as in Zoology (keys from
# a vocabulary far larger than the head dim). With two heads of 32 (>= 31 keys)
# every tuned linear-state mixer recalled 28 pairs at T = 128 at 0.91-1.00
# (docs/results/2026-12-05-cpu-2core-recall-dk32.*), so the pair sweep measured
# nothing about state capacity.
DEFAULT = dict(
    settings={64: [4, 8, 16], 128: [8, 16, 28]},
    vocab=64, d_model=64, heads=4, layers=2, batch=32, lr=[5e-3, 1e-2, 2e-2], weight_decay=0.1,
    steps={64: 400, 128: 500}, n_test=256, titans_minibatch=8, attn_conv=True, attn_norm=True,
)
# --quick: the full study's model at one sequence length, two pair counts,
# 250 steps instead of 400, no sweep: each mixer trains at
# the learning rate the committed full run (docs/results/
# 2026-12-05-cpu-2core-recall.*) kept for it at T = 64. The CI test's config.
QUICK = dict(DEFAULT, settings={64: [4, 16]}, steps={64: 250}, n_test=128,
             lr=dict(softmax_attention=2e-2, linear_attention=2e-2, retention=1e-2, mamba2=2e-2, deltanet=2e-2,
                     gated_deltanet=2e-2, titans=5e-3))


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


def lr_grid(cfg, kind):
    """The learning rates to train `kind` at: cfg["lr"] is a number, a list
    (the sweep grid, the same for every mixer), or a dict mixer -> number or
    list (per-mixer rates, e.g. those a full run's sweep chose)."""
    lr = cfg["lr"]
    if isinstance(lr, dict):
        lr = lr[kind]
    return [float(x) for x in lr] if isinstance(lr, (list, tuple)) else [float(lr)]


def train_one(kind, T, pair_list, cfg, seed, sctx, test_sets, log, tag, lr=None):
    import torch
    import torch.nn.functional as F

    import models
    import mqar

    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, T, 1])  # the training stream
    model = models.RecallModel(kind, cfg["vocab"], cfg["d_model"], cfg["heads"], cfg["layers"], sctx=sctx,
                               titans_minibatch=cfg["titans_minibatch"], attn_conv=cfg.get("attn_conv", False),
                               attn_norm=cfg.get("attn_norm", True))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    lr = lr_grid(cfg, kind)[0] if lr is None else lr
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=cfg["weight_decay"]),
                             dict(params=other, weight_decay=0.0)], lr=lr, betas=(0.9, 0.98))
    steps = cfg["steps"][T]
    t0 = time.perf_counter()
    losses = []
    every = max(1, steps // 10)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
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
    return acc, dict(train_s=train_s, steps=len(losses), final_loss=float(np.mean(tail)), params=nparams, lr=lr)


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
    # one training per (T, mixer, learning rate); with several rates (the sweep) the kept model is the one
    # with the lowest final training loss (the mean over the last 5% of steps, on freshly drawn sequences:
    # an estimate of the held-out loss that never looks at the test sets)
    jobs = [(T, kind, lr) for T in cfg["settings"] for kind in runnable for lr in lr_grid(cfg, kind)]
    t_all = time.perf_counter()
    done = 0

    def write(rec):
        records.append(rec)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    for T in cfg["settings"]:
        plist = cfg["settings"][T]
        for kind in runnable:
            grid = lr_grid(cfg, kind)
            trials = []
            for lr in grid:
                done += 1
                tag = "[%d/%d] %-17s T=%-4d lr=%-6g" % (done, len(jobs), kind, T, lr)
                acc, info = train_one(kind, T, plist, cfg, seed, sctx, test_sets, log, tag, lr=lr)
                trials.append((acc, info))
                if len(grid) > 1:
                    write(dict(kind="trial", mixer=kind, T=T, lr=lr, final_loss=info["final_loss"],
                               train_s=info["train_s"], steps=info["steps"],
                               accuracy={str(P): acc[P] for P in plist}))
                el = time.perf_counter() - t_all
                log("%s done in %.0f s: loss %.3f  %s  (elapsed %.0f s, about %.0f s left)" % (
                    tag, info["train_s"], info["final_loss"], "  ".join("P=%d %.3f" % (P, acc[P]) for P in plist),
                    el, el / done * (len(jobs) - done)))
            best = min(range(len(trials)), key=lambda j: trials[j][1]["final_loss"]
                       if math.isfinite(trials[j][1]["final_loss"]) else math.inf)
            acc, info = trials[best]
            if len(grid) > 1:
                log("%-17s T=%-4d kept lr=%g (final training loss %s)" % (kind, T, info["lr"], ", ".join(
                    "%g: %.3f" % (t[1]["lr"], t[1]["final_loss"]) for t in trials)))
            for P in plist:
                rec = dict(kind="result", mixer=kind, label=models.LABELS[kind], T=T, pairs=P, queries=P,
                           accuracy=acc[P], state_floats=models.state_floats(kind, T, H, dk, dk), heads=H,
                           head_dim=dk, d_model=cfg["d_model"], trained_on=plist, lr_grid=grid, **info)
                if kind == "titans":
                    rec["minibatch"] = cfg["titans_minibatch"]
                write(rec)
    total = time.perf_counter() - t_all
    end = dict(kind="end", wall_s=total, cpu_s=time.process_time(),
               loadavg=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
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
                 meta["seed"], "; PARTIAL (the run did not finish)" if not end else "; wall %.0f s%s" % (
                     end["wall_s"], ", process CPU %.0f s" % end["cpu_s"] if "cpu_s" in end else "")),
             "model: d_model %d, %d heads of %d, %d layers, vocab %d, batch %d; steps per T: %s; lr: %s" % (
                 cfg["d_model"], cfg["heads"], meta["head_dim"], cfg["layers"], cfg["vocab"], cfg["batch"],
                 ", ".join("T=%s %s" % kv for kv in cfg["steps"].items()), lr_text(cfg["lr"])),
             "state: floats per sequence and layer (softmax attention: its KV cache at T); lr: the learning rate "
             "kept per T", ""]
    head = "%-26s " % "mixer" + " ".join("%9s" % ("T=%d" % T) for T in Ts) + "  " + \
        " ".join("%7s" % ("T=%d" % T) for T in Ts) + "  " + " ".join("%8s" % ("%d/%d" % c) for c in cols)
    lines.append("%-26s %s  %s   accuracy at T/pairs" % ("", "state floats".center(10 * len(Ts) - 1),
                                                         "lr".center(8 * len(Ts) - 1)))
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
        lrs = " ".join("%7s" % next(("%g" % r["lr"] for (T2, _), r in rows.items() if T2 == T and "lr" in r), "-")
                       for T in Ts)
        ac = " ".join("%8s" % ("%.3f" % rows[c]["accuracy"] if c in rows else "-") for c in cols)
        lines.append("%-26s %s  %s  %s" % (models.LABELS.get(kind, kind), st, lrs, ac))
    trials = [r for r in records if r["kind"] == "trial"]
    if trials:
        grid = sorted({r["lr"] for r in trials})
        lines += ["", "learning-rate sweep: final training loss (mean over the last 5% of steps) per lr; "
                  "* = kept (the lowest)",
                  "%-26s %5s  " % ("mixer", "T") + " ".join("%9g" % g for g in grid)]
        for kind in meta["mixers"]:
            for T in Ts:
                tr = {r["lr"]: r for r in trials if r["mixer"] == kind and r["T"] == T}
                if not tr:
                    continue
                kept = next((r["lr"] for r in res if r["mixer"] == kind and r["T"] == T), None)
                lines.append("%-26s %5d  " % (models.LABELS.get(kind, kind), T) + " ".join(
                    "%9s" % ("%.3f%s" % (tr[g]["final_loss"], "*" if g == kept else " ") if g in tr else "-")
                    for g in grid))
    return "\n".join(lines) + "\n"


def lr_text(lr):
    if isinstance(lr, dict):
        return ", ".join("%s %s" % (k, lr_text(v)) for k, v in lr.items())
    if isinstance(lr, (list, tuple)):
        return "best of {%s} per (mixer, T)" % ", ".join("%g" % x for x in lr)
    return "%g" % lr


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
