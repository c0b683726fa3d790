"""``python -m sparsekernels.bench report RESULTS.json ... [--out DIR]``.

Reads results files (validated against :mod:`.schema`; when a configuration
was measured more than once, the latest run wins) and writes to DIR (default:
the first file's folder):

- ``report.md``: environment, the commands that produced the results, per-layer
  tables (sparse ms, speed-up, fraction of the roofline ideal), network tables,
  failures, and the plots;
- ``readme_fragment.md``: the headline tables and plots for the project README,
  image links relative to ``--readme-dir`` (default: the current directory, so
  run it from the repository root);
- ``layers_<suite>_<device>_<dtype>_b<batch>_<pass>.png``: speed-up vs sparsity, a panel
  per layer, a line per kind/N/backend, break-even at 1x, the roofline ideal;
- ``networks_<device>_<dtype>_b<batch>.png``: latency bars per network.

Nothing in these files is typed by hand: regenerate them from the JSON.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
from collections import defaultdict

from . import plots
from .env import device_slug
from .schema import kind_label, load

_LAYER_KEY = ("device_name", "threads", "suite", "layer", "batch", "dtype", "pass", "kind", "n",
              "patterns", "entries", "connectivity", "sparsity", "backend", "memory_format")
_NETWORK_KEY = ("device_name", "threads", "arch", "batch", "dtype", "mode", "kind", "n",
                "patterns", "entries", "connectivity", "sparsity", "backend", "memory_format",
                "engine", "model_file", "fold_bn")
# The sparse models' inference passes (networks --fuse-epilogues, --nchw-kernels)
# and the allocator setting (--keep-freed-memory) are not part of a
# configuration: a later run with other settings supersedes an earlier one, and
# its rows say which were off (_config).


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="markdown summary and plots from results files",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("results", nargs="+", metavar="RESULTS.json")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the first file's)")
    p.add_argument("--readme-dir", default=".",
                   help="folder of the README that includes readme_fragment.md (for its links)")
    p.set_defaults(run=run)
    return p


# ---- data ------------------------------------------------------------------------
def latest(records: list[dict]) -> list[dict]:
    """One record per configuration: the one from the latest run."""
    chosen = {}
    for r in sorted(records, key=lambda r: r["timestamp"]):
        key = _LAYER_KEY if r["record_type"] == "layer" else _NETWORK_KEY
        chosen[(r["record_type"],) + tuple(str(r[k]) for k in key)] = r
    return list(chosen.values())


def groups(records: list[dict], fields: tuple) -> list[tuple[tuple, list[dict]]]:
    """Records grouped by the values of ``fields``, groups in sorted order."""
    out = defaultdict(list)
    for r in records:
        out[tuple(r[f] for f in fields)].append(r)
    return sorted(out.items(), key=lambda item: [str(v) for v in item[0]])  # values may be None


def geomean(values: list[float]):
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _x(value, digits=2) -> str:
    return "—" if value is None else f"{value:.{digits}f}×"


def _pct(value) -> str:
    return "—" if value is None else f"{value:.0%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


# ---- layer sections --------------------------------------------------------------
_LAYER_GROUP = ("suite", "device", "device_name", "dtype", "batch", "pass")


def _layer_title(key) -> str:
    suite, device, name, dtype, batch, pass_ = key
    return f"{suite} on {name} ({device}), {dtype}, batch {batch}, {pass_}"


def _layer_summary(records: list[dict]) -> list[str]:
    """Per series: geomean speed-up over layers at each sparsity, and the
    conv-time ratio with each layer weighted by how often its network uses it."""
    sparsities = sorted({r["sparsity"] for r in records})
    rows = []
    for _, mine in groups(records, ("kind", "n", "patterns", "entries", "backend", "memory_format")):
        cells = []
        for s in sparsities:
            at = [r for r in mine if r["sparsity"] == s]
            ok = [r for r in at if r["ok"]]
            if not at:  # another kind's level
                cells.append("—")
                continue
            if len(ok) < len(at):
                cells.append(f"{len(at) - len(ok)} failed")
                continue
            weighted = (sum(r["count"] * r["dense_ms"] for r in ok)
                        / sum(r["count"] * r["sparse_ms"] for r in ok))
            ideal = geomean([r["ideal_fraction"] for r in ok if r["ideal_fraction"]])
            cell = (f"{_x(geomean([r['speedup'] for r in ok]))} / {_x(weighted)} "
                    f"({_pct(ideal)} of ideal)")
            vs_tf32 = [r["speedup_vs_tf32"] for r in ok if r["speedup_vs_tf32"]]
            if vs_tf32:  # fp32 on CUDA: against the TF32 dense conv as well
                cell += f"; vs TF32 dense {_x(geomean(vs_tf32))}"
            vs_2to4 = [r["speedup_vs_2to4"] for r in ok if r["speedup_vs_2to4"]]
            if vs_2to4:  # fp16/bf16 forward on CUDA: against cuSPARSELt 2:4's GEMM
                cell += f"; vs 2:4 GEMM {_x(geomean(vs_2to4))}"
            cells.append(cell)
        rows.append([plots.series_label(mine[0]), *cells])
    header = ["kind (backend)", *(f"{s:.0%} sparse" for s in sparsities)]
    note = ("Cells: geometric-mean speed-up over layers / conv time of the suite with each "
            "layer weighted by its count in the network (geomean fraction of the roofline "
            "ideal). Speed-up = dense ms / sparse ms, > 1× means sparse is faster; the dense "
            "conv is the faster of NCHW and channels_last, strict fp32 for fp32.")
    return [note, "", *_table(header, rows)]


def _layer_details(records: list[dict]) -> list[str]:
    lines = []
    for _, mine in groups(records, ("kind", "n", "patterns", "entries", "backend", "memory_format")):
        sparsities = sorted({r["sparsity"] for r in mine})
        lines += [f"**{plots.series_label(mine[0])}**: sparse ms · speed-up · fraction of the "
                  "ideal · achieved TFLOP/s", ""]
        rows = []
        for layer in dict.fromkeys(r["layer"] for r in mine):  # in suite order
            at = [r for r in mine if r["layer"] == layer]
            by_s = {r["sparsity"]: r for r in at}
            cells = []
            for s in sparsities:
                r = by_s.get(s)
                if r is None:
                    cells.append("")
                elif not r["ok"]:
                    cells.append("FAIL")
                else:
                    cells.append(f"{r['sparse_ms']:.3f} · {_x(r['speedup'])} · "
                                 f"{_pct(r['ideal_fraction'])} · {r['sparse_tflops']:.3g}")
            first = at[0]
            dense = f"{first['dense_ms']:.3f} ({first['dense_layout']})"
            if first["dense_tf32_ms"] is not None:
                dense += f"; TF32 {first['dense_tf32_ms']:.3f}"
            rows.append([layer, str(first["count"]), dense, *cells])
        header = ["layer", "count", "dense ms", *(f"{s:.0%}" for s in sparsities)]
        lines += _table(header, rows)
    return lines


def _config(r: dict) -> str:
    network = r["record_type"] == "network"
    if r["kind"] is None:
        # a layer record has no engine: its dense conv is PyTorch's
        if r.get("engine", "pytorch") != "pytorch":
            return f"dense ({r['engine']})"
        return "dense (freed memory unmapped)" if network and not r["keep_freed_memory"] \
            else "dense"
    off = [what for field, what in (("fuse_epilogues", "unfused"),
                                    ("nchw_kernels", "PyTorch's NCHW ops"),
                                    ("keep_freed_memory", "freed memory unmapped"))
           if network and not r[field]]
    return f"{kind_label(r)} {r['sparsity']:.0%} ({', '.join([r['backend'], *off])})"


def _where(r: dict) -> str:
    """A failed record's configuration, in words."""
    what = f"{r['layer']} {r['pass']}" if r["record_type"] == "layer" else \
        f"{r['arch']} {r['mode']}"
    return f"{what}, {r['dtype']}, batch {r['batch']}, {_config(r)}"


def _figure(plt, fig_fn, records, title, path) -> str:
    fig = fig_fn(plt, records, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- network sections ------------------------------------------------------------
_NETWORK_GROUP = ("device", "device_name", "dtype", "batch")


def _network_table(records: list[dict]) -> list[str]:
    """One row per record; with an ONNX Runtime baseline among them, a column
    says which dense baseline (the faster) each speed-up is against."""
    with_ort = any(r["engine"] != "pytorch" for r in records)
    rows = []
    for r in sorted(records, key=lambda r: (r["arch"], r["mode"] != "eager", r["kind"] is not None,
                                            r["engine"] != "pytorch", str(r["kind"]), r["n"] or 0,
                                            r["sparsity"])):
        config = _config(r)
        if not r["ok"]:
            rows.append([r["arch"], r["mode"], config, "FAIL", "", "", "", "",
                         *([""] if with_ort else [])])
            continue
        rows.append([
            r["arch"], r["mode"], config, f"{r['sparse_convs']}/{r['convs']}",
            f"{r['latency_ms']:.2f}", f"{r['throughput_ips']:.1f}",
            _x(r["speedup"]), _x(r["flop_reduction"]),
            *([r["dense_engine"] or "—"] if with_ort else []),
        ])
    header = ["network", "mode", "model", "sparse convs", "latency ms", "img/s",
              "measured speed-up", "FLOP reduction", *(["vs dense"] if with_ort else [])]
    note = ("Measured speed-up = dense latency / sparse latency (same mode, dense in its "
            "faster layout); FLOP reduction = dense FLOPs / remaining FLOPs (conv + linear, "
            "convs left dense included), what FLOP counting promises.")
    if with_ort:
        note += (" In eager mode the dense latency is the faster of PyTorch and ONNX Runtime "
                 "('vs dense' says which).")
    return [note, "", *_table(header, rows)]


# ---- writing ---------------------------------------------------------------------
def _environment(records: list[dict]) -> list[str]:
    rows = []
    for _, mine in groups(records, ("device", "device_name", "threads")):
        r = max(mine, key=lambda r: r["timestamp"])
        rows.append([f"{r['device_name']} ({r['device']})", str(r["threads"]),
                     *(r[k] or "—" for k in ("cpu_simd", "onednn_max_cpu_isa", "torch_version",
                                              "triton_version", "cuda_version", "git_commit")),
                     ", ".join(sorted({x["timestamp"][:10] for x in mine}))])
    header = ["device", "threads", "cpu simd", "oneDNN ISA cap", "torch", "triton", "cuda",
              "commit", "dates"]
    return _table(header, rows)


def build(records: list[dict], out: str, readme_dir: str, plt, argv: list[str]) -> list[str]:
    """Write the report files; returns their paths."""
    records = latest(records)
    layers = [r for r in records if r["record_type"] == "layer"]
    networks = [r for r in records if r["record_type"] == "network"]
    generated = ("<!-- generated by `python -m sparsekernels.bench "
                 f"{shlex.join(argv)}`: do not edit by hand -->")
    full = [generated, "# Benchmark report", "", *_environment(records),
            "Produced by:", "", "```bash", *sorted({r["command"] for r in records}), "```", ""]
    fragment = [generated, ""]
    written = []

    def image(path: str, alt: str):
        written.append(path)
        full.extend([f"![{alt}]({os.path.basename(path)})", ""])
        fragment.extend([f"![{alt}]({os.path.relpath(path, readme_dir)})", ""])

    for key, mine in groups(layers, _LAYER_GROUP):
        title = _layer_title(key)
        summary = _layer_summary(mine)
        full += [f"## Layers: {title}", "", *summary]
        fragment += [f"#### Layers: {title}", "", *summary]
        if plt:
            suite, _, _, dtype, batch, pass_ = key
            name = f"layers_{suite}_{device_slug(mine[0])}_{dtype}_b{batch}_{pass_}.png"
            image(_figure(plt, plots.layer_figure, mine, title, os.path.join(out, name)),
                  f"speed-up vs sparsity, {title}")
        full += _layer_details(mine)
    for key, mine in groups(networks, _NETWORK_GROUP):
        device, name, dtype, batch = key
        title = f"{name} ({device}), {dtype}, batch {batch}"
        table = _network_table(mine)
        full += [f"## Networks: {title}", "", *table]
        fragment += [f"#### Networks: {title}", "", *table]
        if plt:
            png = f"networks_{device_slug(mine[0])}_{dtype}_b{batch}.png"
            pytorch = [r for r in mine if r["engine"] == "pytorch"]  # one dense bar per mode
            image(_figure(plt, plots.network_figure, pytorch, title, os.path.join(out, png)),
                  f"network latency, {title}")
    failed = [r for r in records if not r["ok"]]
    if failed:
        full += ["## Failures", "", *(f"- {_where(r)}: {r['error']}" for r in failed), ""]
    for name, lines in (("report.md", full), ("readme_fragment.md", fragment)):
        path = os.path.join(out, name)
        with open(path, "w") as f:
            f.write("\n".join(lines).rstrip() + "\n")
        written.append(path)
    return written


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    records = []
    for path in args.results:
        try:
            records += load(path)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    if not records:
        parser.error("the results files hold no records")
    out = args.out or os.path.dirname(os.path.abspath(args.results[0]))
    os.makedirs(out, exist_ok=True)
    plt = plots.pyplot()
    if plt is None:
        print("report: matplotlib is not installed; writing markdown without plots")
    for path in build(records, out, args.readme_dir, plt, argv):
        print(f"wrote {path}")
    return 0
