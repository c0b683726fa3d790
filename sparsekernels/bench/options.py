"""Command-line pieces the ``layers`` and ``networks`` commands share."""
from __future__ import annotations

import argparse
import datetime
import shlex
import uuid

import torch

from ..ops import backends
from .env import device_slug
from .kinds import KINDS
from .measure import LAYOUTS, TOLERANCE
from .schema import SCHEMA_VERSION, ResultsFile

DTYPES = {str(d).removeprefix("torch."): d for d in TOLERANCE}
DEVICE_PLACEHOLDER = "{device}"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text}")
    return value


def sparsity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:  # 1.0 would prune every block: nothing left to time
        raise argparse.ArgumentTypeError(f"expected a sparsity in [0, 1), got {text}")
    return value


def add_sweep_options(p: argparse.ArgumentParser, defaults: dict) -> None:
    """Options both commands sweep or need. Those whose default differs per
    command (``defaults``, applied by :func:`fill_defaults`) stay None here, so
    --quick can tell an explicit value from a default."""
    p.add_argument("--kind", nargs="+", choices=sorted(KINDS),
                   help="sparsity kinds (default: every registered kind)")
    p.add_argument("--n", nargs="+", type=positive, default=[16], help="block sizes N")
    p.add_argument("--sparsity", nargs="+", type=sparsity, default=[0.5, 0.75, 0.9],
                   help="fractions of weights pruned, each in [0, 1) (pattern: the overall "
                        "level, see --connectivity)")
    p.add_argument("--patterns", nargs="+", type=positive, default=[8],
                   help="pattern: library sizes (patterns per layer)")
    p.add_argument("--entries", nargs="+", type=positive, default=[4],
                   help="pattern: kept positions per kernel")
    p.add_argument("--connectivity", nargs="+", type=sparsity,
                   help="pattern: fractions of kernels dropped whole on top of the pattern "
                        "(each conv's overall level follows from its kernel size); replaces "
                        "--sparsity for pattern")
    p.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["float32"])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", nargs="+", choices=backends.BACKENDS, default=["auto"],
                   help="sparse backends (auto: the device's best)")
    p.add_argument("--memory-format", nargs="+", choices=list(LAYOUTS), default=["nchw"],
                   help="input layout of the sparse runs (dense: always the faster of both)")
    p.add_argument("--batch", nargs="+", type=positive,
                   help=f"batch sizes (default {' '.join(map(str, defaults['batch']))})")
    p.add_argument("--threads", type=positive, help="torch.set_num_threads (CPU)")
    p.add_argument("--warmup", type=nonnegative,
                   help=f"untimed rounds first (default {defaults['warmup']})")
    p.add_argument("--repeat", type=positive,
                   help=f"timed rounds; the median is kept (default {defaults['repeat']})")
    p.add_argument("--seed", type=int, default=0, help="data and mask seed")
    p.add_argument("--rotate", type=positive, metavar="SETS",
                   help="input sets each timed callable cycles through (default: enough "
                        "for twice the last-level cache, 2 to 64)")
    p.add_argument("--json", metavar="PATH",
                   help=f"append one record per configuration to PATH; '{DEVICE_PLACEHOLDER}' "
                        "in PATH becomes the device slug, e.g. cpu-amd-epyc")


def fill_defaults(args: argparse.Namespace, defaults: dict) -> None:
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.kind is None:
        args.kind = list(KINDS)


def resolve_device(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The device and the concrete sparse backends; parser.error if unusable."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    try:
        resolved = [backends.resolve(b, device) for b in args.backend]
    except (ValueError, RuntimeError) as exc:
        parser.error(f"--backend: {exc}")
    return device, unique(resolved)


def configure_torch(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)  # the CPU kernels read at::get_num_threads too
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True


def run_fields(args: argparse.Namespace, command: str) -> dict:
    """Record fields shared by every record of this run."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        "timestamp": now.isoformat(timespec="seconds"),
        "command": command,
        "warmup": args.warmup, "repeat": args.repeat, "seed": args.seed,
    }


def command_line(argv: list[str]) -> str:
    return "python -m sparsekernels.bench " + shlex.join(argv)


def open_results(args: argparse.Namespace, parser: argparse.ArgumentParser, env: dict):
    """The --json results file to append to (None without --json)."""
    if not args.json:
        return None
    try:
        return ResultsFile(args.json.replace(DEVICE_PLACEHOLDER, device_slug(env)))
    except ValueError as exc:  # not a results file of this schema: never mix
        parser.error(f"--json: {exc}. Append only to a results file of schema version "
                     f"{SCHEMA_VERSION}, or give a new path")


def unique(values) -> tuple:
    return tuple(dict.fromkeys(values))
