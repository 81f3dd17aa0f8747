#!/usr/bin/env python3
"""bench/plot.py -- PNGs of a seqk-bench run, from its JSON lines.

  python bench/plot.py [bench-results/seqk-bench.jsonl] [--out DIR]

One PNG per comparison per backend that has records for it (BACKEND is cpu
or cuda), in DIR (default: the directory of the JSONL file):

  prefill_BACKEND.png   suite "prefill": time per token (median / (B T)) of
                        each module's parallel mode and of softmax
                        attention's causal forward against T, log-log, with
                        each module's crossover T marked on the softmax curve
  decode_BACKEND.png    suite "decode": tokens per second (B / median) of
                        softmax decoding against the context length L, and of
                        each module's recurrent step (one measurement, the
                        same at every L: a horizontal line), crossovers marked;
                        one panel per shape family
  memory_BACKEND.png    suite "memory": bytes per sequence and layer, the
                        softmax KV cache against L and each module's state
                        (horizontal), crossovers marked; one panel per family
  fraction_BACKEND.png  every timed measurement of the run at its largest
                        size: the fraction of the ceiling that bounds it
                        (copy or sgemm_large, measured in the same run), one
                        group of bars per suite; the backward suite's at each
                        head dim, each with its own target marked
  backward_BACKEND.png  suite "backward": per module, the backward's time over
                        its forward's and its fraction of sgemm_large, one bar
                        per shape, each with its record's own target marked
                        (a red dash: issue #15's 2.5 and 0.40, issue #16's
                        3.0 and 0.35 for DeltaNet; none for the selective
                        scan, whose bound is copy: left out of the fraction
                        panel)

Thin bars span the min..max of the timed repeats (for the decode steps'
horizontal lines: bars right of the curves): how noisy the run was. Each title gives the machine (host, CPU model; "cuda device N" for the GPU
backend), the thread count and the date of the run. Crossovers are the
suites' own summary records (kind "crossover": T or L from which the module
wins, and the interpolated crossing), not recomputed here.

Needs matplotlib and numpy (scripts/bench.sh installs them in a venv under
build/benchvenv when they are missing).
"""
import argparse
import collections
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.lines  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

# One colour and marker per op, the same in every figure.
OPS = ["softmax_attention", "linear_attention", "retention", "gated_retention", "mamba2",
       "deltanet", "titans", "selective_scan"]
COLOURS = {"softmax_attention": "black", "linear_attention": "tab:blue", "retention": "tab:orange",
           "gated_retention": "tab:green", "mamba2": "tab:red", "deltanet": "tab:purple",
           "titans": "tab:brown", "selective_scan": "tab:pink"}
MARKERS = {"softmax_attention": "s", "linear_attention": "o", "retention": "v",
           "gated_retention": "^", "mamba2": "D", "deltanet": "P", "titans": "X",
           "selective_scan": "*"}


def op_of(case):
    """The op a record's case name starts with ("deltanet B=1 ..." -> "deltanet")."""
    head = case.split(" ")[0]
    return head if head in COLOURS else None


def read_records(path):
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"plot.py: {path}:{n}: not JSON ({e})")
    return records


def title(kind, backend, recs):
    """'<kind> -- host vm, AMD EPYC, 2 threads, 2026-11-23 17:28 UTC, seqk 0.1.0'."""
    r = recs[0]
    date = r.get("date", "")
    if len(date) >= 16:
        date = date[:10] + " " + date[11:16] + " UTC"
    if backend == "cpu":
        threads = sorted({x["threads"] for x in recs if x.get("threads")})
        th = ",".join(str(t) for t in threads) or "?"
        machine = f"{r.get('cpu_model', '?')}, {th} thread{'s' if th != '1' else ''}"
    else:
        machine = f"{backend} device {r.get('device', 0)}"
    return (f"{kind}\nhost {r.get('hostname', '?')}: {machine}, {date}, "
            f"seqk {r.get('seqk_version', '?')}")


def loglog_interp(xs, ys, x):
    """y at x on the polyline (xs, ys), linear in log-log; None outside the range."""
    if len(xs) < 1 or x < xs[0] or x > xs[-1]:
        return None
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = map(math.log, (xs[i - 1], xs[i], ys[i - 1], ys[i]))
            return math.exp(y0 + (math.log(x) - x0) * (y1 - y0) / (x1 - x0))
    return ys[-1]


def crossover_label(cx, x_name):
    """'faster from T ~ 480' (interpolated), 'faster from T <= 256' (at every size
    measured), 'not faster at the largest T measured', or None (no record)."""
    if cx is None:
        return None
    if cx.get("crossing"):
        return f"faster from {x_name} ~ {cx['crossing']:.0f}"
    if cx.get("T"):
        return f"faster from {x_name} <= {cx['T']}"
    return f"not faster at the largest {x_name} measured"


def legend_below(ax, n_entries):
    """The legend under the axes, out of the curves' way."""
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.11),
              ncol=1 if n_entries <= 9 else 2, frameon=False)


def save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"plot.py: wrote {path}")
    return True


# ---- prefill ----------------------------------------------------------------------------------

def plot_prefill(backend, recs, out):
    meas = [r for r in recs if r["suite"] == "prefill" and r["record"] == "measurement"
            and r.get("median_s")]
    if not meas:
        return
    cross = {op_of(r["case"]): r for r in recs
             if r["suite"] == "prefill" and r["record"] == "crossover"}
    series = collections.defaultdict(list)  # op -> [(T, us per token)]
    for r in meas:
        per = 1e6 / (r["B"] * r["T"])  # seconds per call -> microseconds per token
        series[r["case"]].append((r["T"], r["median_s"] * per, r["min_s"] * per,
                                  r["max_s"] * per))
    shape = meas[0]
    fig, ax = plt.subplots(figsize=(9, 6))
    soft = sorted(series.get("softmax_attention", []))
    for op in OPS:
        if op not in series:
            continue
        pts = sorted(series[op])
        label = "softmax attention (causal)" if op == "softmax_attention" else f"{op} (parallel)"
        lab = crossover_label(cross.get(op), "T")
        if lab:
            label += f": {lab}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[op], color=COLOURS[op],
                lw=2.5 if op == "softmax_attention" else 1.5, label=label)
        # the spread of the repeats (min .. max), to show how noisy the run was
        ax.vlines([p[0] for p in pts], [p[2] for p in pts], [p[3] for p in pts],
                  color=COLOURS[op], lw=0.8, alpha=0.5)
    # crossovers: where each module's curve meets softmax attention's
    for op, cx in cross.items():
        if op is None or not soft:
            continue
        x = cx.get("crossing") or None
        if x is None:
            continue
        y = loglog_interp([p[0] for p in soft], [p[1] for p in soft], x)
        if y is not None:
            ax.plot([x], [y], marker="o", ms=11, mfc="none", mec=COLOURS[op], mew=2)
            ax.axvline(x, color=COLOURS[op], ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt length T (tokens)")
    ax.set_ylabel("time per token (microseconds, median / (B T))")
    ax.grid(True, which="both", alpha=0.3)
    legend_below(ax, len(series))
    ax.set_title(title(f"Prefill: parallel (chunked) modes vs softmax attention, "
                       f"B={shape['B']} H={shape['H']} K={shape['K']} V={shape['V']} "
                       f"(circles: crossovers; bars: min..max of the repeats)", backend, recs),
                 fontsize=9)
    return save(fig, os.path.join(out, f"prefill_{backend}.png"))


# ---- decode -----------------------------------------------------------------------------------

def plot_decode(backend, recs, out):
    meas = [r for r in recs if r["suite"] == "decode" and r["record"] == "measurement"
            and r.get("tokens_per_s")]
    if not meas:
        return
    # families: the softmax records' (B, H, K); a step belongs to the family with its B and
    # (for the matrix-state modules) its H, K; the selective scan by B and its D = 2 H K.
    fams = sorted({(r["B"], r["H"], r["K"]) for r in meas if r["case"] == "softmax_attention"})
    if not fams:
        return

    def family_of(r):
        for f in fams:
            B, H, K = f
            if r["B"] != B:
                continue
            if r["case"] == "selective_scan" and r["C"] == 2 * H * K:
                return f
            if r["case"] != "selective_scan" and (r["H"], r["K"]) == (H, K):
                return f
        return None

    cross = {}
    for r in recs:
        if r["suite"] == "decode" and r["record"] == "crossover":
            op = op_of(r["case"])
            B = r["B"]
            f = next((f for f in fams if f[0] == B and
                      (op == "selective_scan" and r["C"] == 2 * f[1] * f[2] or
                       op != "selective_scan" and (r["H"], r["K"]) == (f[1], f[2]))), None)
            cross[(f, op)] = r
    fig, axes = plt.subplots(1, len(fams), figsize=(8 * len(fams), 6), squeeze=False)
    for ax, f in zip(axes[0], fams):
        # (L, tokens/s at the median, at the slowest repeat, at the fastest)
        soft = sorted((r["T"], r["tokens_per_s"], r["B"] / r["max_s"], r["B"] / r["min_s"])
                      for r in meas if r["case"] == "softmax_attention" and family_of(r) == f)
        Ls = [p[0] for p in soft]
        ax.plot(Ls, [p[1] for p in soft], marker="s", color="black", lw=2.5,
                label="softmax attention, KV cache of L tokens")
        ax.vlines(Ls, [p[2] for p in soft], [p[3] for p in soft], color="black", lw=0.8,
                  alpha=0.5)
        n_steps = 0
        for r in meas:
            op = r["case"]
            if op == "softmax_attention" or family_of(r) != f:
                continue
            label = f"{op} step (state {state_text(r)})"
            lab = crossover_label(cross.get((f, op)), "L")
            if lab:
                label += f": {lab}"
            ax.hlines(r["tokens_per_s"], Ls[0], Ls[-1], color=COLOURS.get(op, "grey"),
                      ls="--", lw=1.5, label=label)
            # its repeats' spread: a bar right of the curves (the steps are drawn side by side)
            n_steps += 1
            ax.vlines(Ls[-1] * 2 ** (0.15 * n_steps), r["B"] / r["max_s"], r["B"] / r["min_s"],
                      color=COLOURS.get(op, "grey"), lw=2, alpha=0.7)
            cx = cross.get((f, op))
            if cx and cx.get("crossing"):
                ax.plot([cx["crossing"]], [r["tokens_per_s"]], marker="o", ms=11, mfc="none",
                        mec=COLOURS.get(op, "grey"), mew=2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length L (tokens in the cache)")
        ax.set_ylabel("tokens per second (B / median step time)")
        ax.grid(True, which="both", alpha=0.3)
        legend_below(ax, 8)
        ax.set_title(f"B={f[0]} H={f[1]} K=V={f[2]} (selective scan: D={2 * f[1] * f[2]}, "
                     f"Nst=16); step measured once, drawn at every L", fontsize=9)
    fig.suptitle(title("Decode: one step, softmax over a KV cache vs recurrent state "
                       "(circles: crossovers; bars: min..max of the repeats, the steps' at the right)",
                       backend, recs), fontsize=10)
    return save(fig, os.path.join(out, f"decode_{backend}.png"))


def state_text(r):
    """The state size a decode step's note gives ("512.0 KiB"), or '?'."""
    note = r.get("note", "")
    key = "state "
    i = note.find(key)
    if i < 0:
        return "?"
    rest = note[i + len(key):].split(" per")[0]
    return rest


# ---- memory -----------------------------------------------------------------------------------

def plot_memory(backend, recs, out):
    mem = [r for r in recs if r["suite"] == "memory" and r["record"] == "memory"]
    if not mem:
        return
    cache = [r for r in mem if r["case"].startswith("softmax_attention")]
    fams = sorted({(r["H"], r["K"]) for r in cache}, reverse=True)
    cross = {(r["case"]): r for r in recs if r["suite"] == "memory" and r["record"] == "crossover"}
    fig, axes = plt.subplots(1, len(fams), figsize=(8 * len(fams), 7), squeeze=False)
    for ax, (H, D) in zip(axes[0], fams):
        # the modules of this family, grouped by state size (several modules share one)
        groups = collections.OrderedDict()  # bytes -> [(op, record, crossover)]
        for r in mem:
            op = op_of(r["case"])
            if op is None or op == "softmax_attention":
                continue
            if op == "selective_scan":
                if not r["case"].endswith(f"vs H={H} D={D}"):
                    continue
            elif (r["H"], r["K"]) != (H, D):
                continue
            groups.setdefault(r["bytes"], []).append((op, r, cross.get(r["case"])))
        crossings = [cx["crossing"] for g in groups.values() for _, _, cx in g
                     if cx and cx.get("crossing")]
        pts = sorted((r["T"], r["bytes"]) for r in cache if (r["H"], r["K"]) == (H, D))
        per_token = pts[0][1] / pts[0][0]
        lo = min([pts[0][0]] + [2 ** math.floor(math.log2(c / 1.5)) for c in crossings])
        Ls = sorted({lo} | {p[0] for p in pts})
        ax.plot(Ls, [per_token * L for L in Ls], color="black", lw=2.5,
                label=f"softmax KV cache: 2 L Hkv D 4 bytes (Hkv={H}, D={D}; "
                      f"{human(per_token)} per token)")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s", color="black")
        for size, members in groups.items():
            op0, r0, cx0 = members[0]
            names = ", ".join(f"{op} (D={r['C']}, Nst={r['K']})" if op == "selective_scan"
                              else op for op, r, _ in members)
            label = f"{names}: {human(size)}"
            if cx0:
                label += f"; cache larger from L = {cx0['T']}"
            colour = COLOURS.get(op0, "grey") if len(members) == 1 else "tab:blue"
            ax.hlines(size, Ls[0], Ls[-1], color=colour, ls="--", lw=1.5, label=label)
            if cx0 and cx0.get("crossing"):
                ax.plot([cx0["crossing"]], [size], marker="o", ms=10, mfc="none", mec=colour,
                        mew=2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda b, _: human(b)))
        ax.set_xlabel("context length L (tokens)")
        ax.set_ylabel("bytes per sequence and layer (fp32)")
        ax.grid(True, which="both", alpha=0.3)
        legend_below(ax, 1 + len(groups))
        ax.set_title(f"H={H} heads of D={D} (selective scan: D={2 * H * D} channels, Nst=16)",
                     fontsize=9)
    fig.suptitle(title("Memory for decoding: recurrent state vs softmax KV cache "
                       "(computed; circles: crossovers)", backend, recs), fontsize=10)
    return save(fig, os.path.join(out, f"memory_{backend}.png"))


def human(b):
    """512 B, 1.5 KiB, 64 MiB (whole numbers without a decimal)."""
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if b < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if b == int(b) else f"{b:.1f} {unit}"
        b /= 1024.0


# ---- fraction of the ceiling ------------------------------------------------------------------

def size_of(r):
    """A record's size for picking the largest of a series."""
    return r.get("bytes") or 0


def plot_fraction(backend, recs, out):
    meas = [r for r in recs if r["record"] == "measurement" and r["suite"] != "ceilings"
            and r.get("fraction") is not None]
    if not meas:
        return
    # one bar per (suite, case, mode): the record with the most bytes (the largest size);
    # the backward suite's per head dim too (both are its targets' subjects)
    def key_of(r):
        return (r["suite"], r["case"], r["mode"], r["K"] if r["suite"] == "backward" else 0)

    order, best = {}, {}
    for r in meas:
        key = key_of(r)
        order.setdefault(r["suite"], len(order))
        if key not in best or size_of(r) > size_of(best[key]):
            best[key] = r
    rows = sorted(best.values(), key=lambda r: (order[r["suite"]],) + key_of(r)[1:])
    labels = []
    for r in rows:
        dims = " ".join(f"{k}={r[k]}" for k in ("B", "T", "H", "K", "V", "C") if r.get(k))
        mode = "" if r["mode"] == r["suite"] else f" {r['mode']}"  # "backward backward"
        labels.append(f"{r['suite']} {r['case']}{mode}  {dims}")
    fracs = [r["fraction"] for r in rows]
    bounds = [r["bound"] for r in rows]
    colour = {"copy": "tab:blue", "sgemm_large": "tab:orange"}
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(rows) + 1.8))
    y = np.arange(len(rows))
    ax.barh(y, fracs, color=[colour.get(b, "grey") for b in bounds])
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", lw=1)
    # the suites as groups: a line between two, and the backward suite's target
    for i in range(1, len(rows)):
        if rows[i]["suite"] != rows[i - 1]["suite"]:
            ax.axhline(i - 0.5, color="grey", lw=0.8)
    bwd = [i for i, r in enumerate(rows) if r["suite"] == "backward"]
    for i in bwd:  # each backward's own target (none: no mark)
        t = backward_targets(rows[i])[1]
        if t:
            ax.vlines(t, i - 0.45, i + 0.45, color="tab:red", ls="--", lw=1.2)
    ceilings = {r["case"].split(" ")[0]: r for r in recs
                if r["suite"] == "ceilings" and r["record"] == "ceiling"}
    handles = []
    for b, c in colour.items():
        cr = ceilings.get(b)
        val = f"{cr['bound_value']:.1f} {cr['bound_unit']}" if cr and cr.get("bound_value") \
            else "not measured"
        handles.append(plt.Rectangle((0, 0), 1, 1, color=c, label=f"bound: {b} ({val})"))
    if bwd:
        handles.append(matplotlib.lines.Line2D([], [], color="tab:red", ls="--",
                                               label="backward target (its record's: >= 0.40 "
                                                     "or 0.35 of sgemm_large)"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xlabel("fraction of the bounding ceiling (achieved rate / ceiling, same run)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title("Fraction of the ceiling, each kernel at its largest size measured",
                       backend, recs), fontsize=9)
    return save(fig, os.path.join(out, f"fraction_{backend}.png"))


# ---- backward vs forward ----------------------------------------------------------------------

# issue #15's targets (bench/bench.h: BENCH_BACKWARD_MAX_RATIO, BENCH_BACKWARD_MIN_FRACTION):
# for records written before each carried its own (target_bwd_over_fwd, target_fraction)
BACKWARD_MAX_RATIO = 2.5
BACKWARD_MIN_FRACTION = 0.40


def backward_targets(r):
    """A backward record's (max bwd/fwd, min fraction); None where it has none."""
    if "target_bwd_over_fwd" not in r:  # an older file: issue #15's for every op
        return BACKWARD_MAX_RATIO, BACKWARD_MIN_FRACTION
    return r.get("target_bwd_over_fwd"), r.get("target_fraction")


def shape_label(r):
    if r["case"] == "selective_scan":  # the sscan suite's letters: C = D channels, K = Nst
        return f"D={r['C']} Nst={r['K']} (B={r['B']} T={r['T']})"
    return f"K=V={r['K']} (B={r['B']} T={r['T']} H={r['H']})"


def plot_backward(backend, recs, out):
    meas = [r for r in recs if r["suite"] == "backward" and r["record"] == "measurement"
            and r.get("bwd_over_fwd")]
    if not meas:
        return
    ops = [op for op in OPS if any(r["case"] == op for r in meas)]
    ops = [op for op in ops if op != "softmax_attention"] + \
        [op for op in ops if op == "softmax_attention"]
    # one bar per shape; the selective scan's own shape shares the first slot
    shapes = sorted({(r["K"], r["B"], r["T"], r["H"]) for r in meas
                     if r["case"] != "selective_scan"})
    slot = {s: j for j, s in enumerate(shapes)}
    n_slots = max(1, len(shapes))
    width = 0.8 / n_slots
    hatches = ["", "//", "..", "xx"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = [("bwd_over_fwd", 0, "backward time / forward time\n(median of the paired repeats; "
                                  "whisker: their q1-q3)"),
              ("fraction", 1, "fraction of sgemm_large (counted flops / median / ceiling)")]
    x = np.arange(len(ops))
    for ax, (field, ti, ylabel) in zip(axes, panels):
        top = 0.0
        labelled = set()
        for r in meas:
            if field == "fraction" and r.get("bound") != "sgemm_large":
                continue  # the selective scan: a fraction of copy, not comparable here
            v = r.get(field)
            if v is None:
                continue
            j = slot.get((r["K"], r["B"], r["T"], r["H"]), 0)
            xi = x[ops.index(r["case"])] + (j - (n_slots - 1) / 2) * width
            hatch = hatches[j % len(hatches)] if r["case"] != "selective_scan" else ""
            ax.bar([xi], [v], width, color=COLOURS.get(r["case"], "grey"), hatch=hatch,
                   edgecolor="white")
            q1, q3 = r.get(field + "_q1"), r.get(field + "_q3")
            above = v  # the label sits above the bar, or above its whisker
            if q1 is not None and q3 is not None:  # older files have no quartiles
                ax.errorbar([xi], [v], yerr=[[max(v - q1, 0.0)], [max(q3 - v, 0.0)]],
                            fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
                above = max(v, q3)
                top = max(top, q3)
            ax.annotate(f"{v:.2f}", (xi, above), ha="center", va="bottom", fontsize=7)
            t = backward_targets(r)[ti]
            if t:
                ax.hlines(t, xi - width / 2, xi + width / 2, color="tab:red", ls="--", lw=1.4)
                top = max(top, t)
            top = max(top, v)
            label = shape_label(r)
            if label not in labelled:  # the legend's patch: grey with the shape's hatch
                labelled.add(label)
                ax.bar([0], [0], 0, color="grey", hatch=hatch, edgecolor="white", label=label)
        ax.plot([], [], color="tab:red", ls="--",
                label="each bar's target (#15: 2.5 / 0.40; #16 DeltaNet: 3.0 / 0.35)")
        ax.set_xticks(x)
        ax.set_xticklabels(ops, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_ylim(0, (top or 1.0) * 1.12)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncol=2)
    fig.suptitle(title("Backward (training) vs the forward of the same call, and against the "
                       "large-sgemm ceiling (the selective scan: copy-bound, ratio only)",
                       backend, recs), fontsize=9)
    fig.tight_layout()
    return save(fig, os.path.join(out, f"backward_{backend}.png"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("jsonl", nargs="?", default="bench-results/seqk-bench.jsonl")
    ap.add_argument("--out", help="directory for the PNGs (default: the JSONL's)")
    args = ap.parse_args()
    out = args.out or os.path.dirname(os.path.abspath(args.jsonl))
    os.makedirs(out, exist_ok=True)
    records = read_records(args.jsonl)
    by_backend = collections.defaultdict(list)
    for r in records:
        if r.get("backend"):
            by_backend[r["backend"]].append(r)
    made = 0
    for backend, recs in sorted(by_backend.items()):
        if not any(r["record"] != "skipped" for r in recs):
            continue  # a backend without a device: nothing but its skip record
        for fn in (plot_prefill, plot_decode, plot_memory, plot_fraction, plot_backward):
            made += bool(fn(backend, recs, out))
    if not made:
        print("plot.py: nothing to plot (no prefill, decode, memory, backward or timed records)")


if __name__ == "__main__":
    main()
