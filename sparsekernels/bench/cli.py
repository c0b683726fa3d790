"""Command line: ``python -m sparsekernels.bench {layers,networks,report,dpp} ...``.

Without a command name the arguments go to ``layers``, so the first version's
invocations (``python -m sparsekernels.bench --suite ... --json ...``, used by
``scripts/bench.sh``) keep working.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from . import dpp, layers, networks, report

COMMANDS = ("layers", "networks", "report", "dpp")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own (for its error messages)."""
    p = argparse.ArgumentParser(
        prog="python -m sparsekernels.bench",
        description="Is the pruned network really faster than dense, and by how much? "
                    "Without a command, the arguments go to 'layers'.")
    sub = p.add_subparsers(dest="command", metavar="{layers,networks,report,dpp}")
    return p, {name: module.add_parser(sub)
               for name, module in zip(COMMANDS, (layers, networks, report, dpp))}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["layers", *argv]
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    return args.run(args, commands[args.command], argv)
