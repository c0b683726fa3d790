"""The report's matplotlib figures (Agg backend: no display needed)."""
from __future__ import annotations

import math
from collections import defaultdict

import torch

from .roofline import Machine, ideal_speedup
from .schema import kind_label
from .suites import Layer

_IDEAL_POINTS = 60


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def series_label(r: dict) -> str:
    """What tells one line of a layer plot from another."""
    mf = ", channels_last" if r["memory_format"] == "channels_last" else ""
    return f"{kind_label(r)} ({r['backend']}{mf})"


def _ideal_curve(r: dict, max_sparsity: float):
    """(sparsities, roofline-ideal speed-ups) for the record's layer and machine."""
    layer = Layer(r["layer"], r["cin"], r["cout"], r["kh"], r["stride"], r["hw"])
    machine = Machine(r["peak_tflops"], r["bandwidth_gbs"])
    itemsize = getattr(torch, r["dtype"]).itemsize
    xs = [max_sparsity * i / (_IDEAL_POINTS - 1) for i in range(_IDEAL_POINTS)]
    ys = [ideal_speedup(layer, r["batch"], itemsize, 1.0 - s, machine) for s in xs]
    return (xs, ys) if None not in ys else None


def layer_figure(plt, records: list[dict], title: str):
    """Speed-up vs sparsity, one panel per layer, one line per kind/N/backend."""
    from matplotlib.ticker import FuncFormatter

    by_layer = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["ok"]:
            by_layer[r["layer"]][series_label(r)].append((r["sparsity"], r["speedup"]))
    cols = min(4, len(by_layer))
    rows = math.ceil(len(by_layer) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(by_layer):]:
        ax.axis("off")
    for ax, (name, lines) in zip(axes.flat, by_layer.items()):
        top = max(s for pts in lines.values() for s, _ in pts)
        first = next(r for r in records if r["layer"] == name)
        curve = _ideal_curve(first, top)
        if curve:
            ax.plot(*curve, color="black", linestyle=":", linewidth=1, label="ideal (roofline)")
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="break-even (1x)")
        for label, pts in sorted(lines.items()):
            ax.plot(*zip(*sorted(pts)), marker="o", label=label)
        ax.set_yscale("log", base=2)  # 0.5x and 2x equally far from break-even
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set(title=name, xlabel="sparsity", ylabel="speed-up vs dense")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)),
               fontsize="small")
    fig.suptitle(title)
    return fig


def network_label(r: dict) -> str:
    if r["kind"] is None:
        return "dense"
    return f"{kind_label(r)}\n{r['sparsity']:.0%}"


def network_figure(plt, records: list[dict], title: str):
    """Latency bars per network: dense and each sparse config, a bar per mode,
    sparse bars labelled with measured speed-up and FLOP reduction."""
    from matplotlib.patches import Patch

    archs = list(dict.fromkeys(r["arch"] for r in records))
    modes = list(dict.fromkeys(r["mode"] for r in records))
    colors = {mode: f"C{i}" for i, mode in enumerate(modes)}  # the same in every panel
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 4.4), squeeze=False,
                             layout="constrained")
    for ax, arch in zip(axes[0], archs):
        mine = [r for r in records if r["arch"] == arch and r["ok"]]
        labels = list(dict.fromkeys(network_label(r) for r in mine))
        present = [m for m in modes if any(r["mode"] == m for r in mine)]
        width = 0.8 / max(len(present), 1)
        for j, mode in enumerate(present):
            bars = {network_label(r): r for r in mine if r["mode"] == mode}
            shown = [(i, bars[lab]) for i, lab in enumerate(labels) if lab in bars]
            xs = [i + (j - (len(present) - 1) / 2) * width for i, _ in shown]
            drawn = ax.bar(xs, [r["latency_ms"] for _, r in shown], width, color=colors[mode])
            notes = ["" if r["kind"] is None else
                     f"{r['speedup']:.2f}x\nFLOP {r['flop_reduction']:.1f}x" for _, r in shown]
            ax.bar_label(drawn, notes, fontsize="x-small")
        ax.set_xticks(range(len(labels)), labels, fontsize="small")
        ax.set(title=arch, ylabel="latency per batch (ms)")
        ax.margins(y=0.25)
    fig.legend([Patch(color=colors[m]) for m in modes], modes, loc="outside lower center",
               ncol=len(modes), fontsize="small")
    fig.suptitle(title)
    return fig
