"""``python -m sparsekernels prune|finetune|evaluate|export``.

The flags are ``RunConfig``'s fields, named as in the seed code (``--arch``,
``--pr_target``, ``--N``, ``--rearrange``, ``--full``, ``--job_dir``, ...);
``--config FILE`` (YAML or JSON) supplies defaults that flags override.
Under ``torchrun --nproc_per_node=G -m sparsekernels prune ...`` training runs
with DistributedDataParallel (gloo on CPU, nccl on GPU).
With no flags, ``prune`` trains a small CNN on scikit-learn's digits, prunes
it to 1x4 blocks at 50% and fine-tunes it: a few minutes on 2 CPU cores.

Each command ends with a short summary on stdout (``prune`` and ``export``:
accuracy, sparsity per kind, FLOPs and the exported model's latency measured
against the unpruned one, ``--no-latency`` skips the timing); ``--json``
prints the full result record instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Optional

from .train.checkpoint import CheckpointError
from .train.config import CONV_TYPES, METHODS, RunConfig

_HELP = {
    "method": "pruning method: " + "; ".join(f"{k} = {v}" for k, v in METHODS.items()),
    "pr_target": "target sparsity in [0, 1)",
    "N": "1xN block length (output channels per block)",
    "full": "also prune the classifier",
    "rearrange": "1xn: physically sort filters by L1 norm before pruning",
    "pretrained_model": "dense checkpoint to start from (else dense training first)",
    "exclude": "layer-name patterns kept dense (repeatable)",
    "l1_preset": "l1_filter: per-layer ratios of the Rethinking scripts instead of --pr_target "
                 "(vgg16_bn-A, resnet56-A/B, resnet110-A/B; the name's arch must be --arch)",
}
# Flags also accepted with dashes.
_ALIASES = {"l1_preset": "--l1-preset"}


def _add_config_flags(p: argparse.ArgumentParser):
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        kind = hints[f.name]
        flags = [f"--{f.name}", *([_ALIASES[f.name]] if f.name in _ALIASES else [])]
        help_ = _HELP.get(f.name, "")
        if kind is bool:
            p.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None,
                           help=help_)
        elif f.name == "exclude":
            p.add_argument(*flags, action="append", default=None, help=help_)
        else:
            base = typing.get_args(kind)[0] if typing.get_args(kind) else kind
            p.add_argument(*flags, dest=f.name, type=base, default=None, help=help_)
    p.add_argument("--conv_type", choices=sorted(CONV_TYPES),
                   help="the 1xN code's layer type: sets --method/--criterion")
    p.add_argument("--config", help="YAML or JSON file of RunConfig fields")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="tqdm progress bars (default on)")


def _add_output_flags(p: argparse.ArgumentParser, latency: bool) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the full result record as JSON instead of the summary")
    if latency:
        p.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True,
                       help="time the exported model against the unpruned one at batch 1 "
                            "and the evaluation batch (default on)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsekernels",
                                description="Prune, fine-tune, evaluate and export CNNs.")
    sub = p.add_subparsers(dest="command", required=True)
    prune = sub.add_parser("prune", help="(dense-train,) prune and fine-tune")
    _add_config_flags(prune)
    _add_output_flags(prune, latency=True)
    ft = sub.add_parser("finetune", help="fine-tune a pruned model with its masks fixed")
    _add_config_flags(ft)
    _add_output_flags(ft, latency=False)
    ft.add_argument("--pruned_model", required=True, help="pruned.pt written by prune")
    ev = sub.add_parser("evaluate", help="top-1/top-5 of a saved or exported model")
    ev.add_argument("model", help="pruned.pt / dense.pt / an exported file")
    ev.add_argument("--dataset", default="digits")
    ev.add_argument("--data_path")
    ev.add_argument("--eval_batch_size", type=int, default=256)
    ev.add_argument("--seed", type=int, default=0)
    _add_output_flags(ev, latency=False)
    ex = sub.add_parser("export", help="convert to sparse modules and save")
    ex.add_argument("pruned_model", help="pruned.pt written by prune")
    ex.add_argument("--out", help="output file (default: next to the input, sparse.pt)")
    ex.add_argument("--export_onnx", metavar="FILE", help="also write the dense-equivalent ONNX")
    _add_output_flags(ex, latency=True)
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    base = RunConfig.from_file(args.config) if args.config else RunConfig()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
               if getattr(args, f.name, None) is not None}
    if args.conv_type:
        method, criterion = CONV_TYPES[args.conv_type]
        changes.setdefault("method", method)
        if criterion:
            changes.setdefault("criterion", criterion)
    return base.replace(**changes)


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = _run_command(args)
    except (ValueError, OSError, ImportError, CheckpointError) as exc:
        # Bad input (flags, config or model files, job folders) or a missing
        # optional dependency (the error names its extra) ends here:
        # the message names the argument or file, never a traceback.
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    from .train.distributed import is_main

    if is_main():  # under torchrun every rank has the same result
        if args.json:
            json.dump(result, sys.stdout, indent=2, default=str)
            print()
        else:
            print("\n".join(summary(args.command, result)))
    return 0


def _run_command(args: argparse.Namespace) -> dict:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun
        from .train.distributed import init_from_env

        init_from_env()
    if args.command == "prune":
        from .train.pipeline import run

        return run(config_from_args(args), progress=args.progress, latency=args.latency)
    if args.command == "finetune":
        from .train.finetune import finetune

        return finetune(config_from_args(args), args.pruned_model, progress=args.progress)
    if args.command == "evaluate":
        from .train.finetune import evaluate_file

        return evaluate_file(args.model, args.dataset, args.data_path, args.eval_batch_size,
                             args.seed)
    from .train.export import export

    out = args.out or str(Path(args.pruned_model).with_name("sparse.pt"))
    return export(args.pruned_model, out, args.export_onnx, latency=args.latency)


# ---- the summary ----------------------------------------------------------------
def summary(command: str, result: dict) -> list[str]:
    """The lines a person reads at the end of ``command``; every figure is
    one of ``result``'s (what ``--json`` prints)."""
    if command == "prune":
        cfg = result["config"]
        dense_top1 = result["phases"].get("dense", {}).get("test_top1")
        lines = [f"prune: {cfg['arch']} on {cfg['dataset']}, method {cfg['method']} -> "
                 f"{Path(cfg['job_dir']) / 'pruned.pt'}",
                 f"  top-1: dense {_pct(dense_top1)}, pruned {_pct(result['test']['top1'])}"]
        exported = result.get("exported")
        if exported is None:  # not converted (--no-latency): the pruned model's figures
            return lines + [f"  sparsity: {_pct(result['sparsity'])}",
                            _flops_line(result["flops_dense"], result["flops"]), _NOT_MEASURED]
        return lines + _speed_lines(exported)
    if command == "export":
        lines = [f"export: {result['out']} (method {result['method']}): "
                 f"{len(result['sparse_layers'])} sparse layers, "
                 f"{len(result['dense_masked_layers'])} masked layers left dense, "
                 f"{sum(result['removed_filters'].values())} filters removed"]
        return lines + _speed_lines(result)
    test = result["test"]
    if command == "finetune":  # the last epoch's record
        return [f"finetune: top-1 {_pct(test['test_top1'])}, top-5 {_pct(test['test_top5'])} "
                f"-> {result['out']}"]
    return [f"evaluate {result['model']}: top-1 {_pct(test['top1'])}, top-5 "
            f"{_pct(test['top5'])}, loss {test['loss']:.4f}"]


_NOT_MEASURED = "  latency: not measured (--no-latency)"


def _speed_lines(report: dict) -> list[str]:
    """Sparsity per kind, FLOPs and latency of an ``export.speed_report``."""
    kinds = ", ".join(f"{label} {entry['sparsity']:.1%} of {entry['layers']} layers"
                      for label, entry in report["sparsity_by_kind"].items())
    lines = [f"  zero weights by kind: {kinds}",
             _flops_line(report["flops_dense"], report["flops"])]
    if report["latency"] is None:
        return lines + [_NOT_MEASURED]
    from .bench.latency import table

    return lines + table(report["latency"])


def _flops_line(dense: int, pruned: int) -> str:
    return (f"  FLOPs per sample: dense {dense / 1e6:.3g} M, pruned {pruned / 1e6:.3g} M, "
            f"reduction {dense / pruned:.2f}x")


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2%}"
