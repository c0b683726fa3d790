"""Is the pruned network really faster than dense, and by how much?

    python -m sparsekernels.bench layers --suite resnet50 --n 16 --sparsity 0.5 0.75 0.9 \
        --threads 2 --json 'benchmarks/results/{device}/layers.json'
    python -m sparsekernels.bench networks --arch resnet56 --batch 1 8 --compile \
        --json 'benchmarks/results/{device}/networks.json'
    python -m sparsekernels.bench report benchmarks/results/cpu-amd-epyc/*.json

``layers`` times sparse conv layers against the dense conv (oneDNN / cuDNN) on
the same device; ``networks`` whole model-zoo networks dense vs sparsified;
``report`` writes markdown and plots from the JSON. Without a command the
arguments go to ``layers``. See ``benchmarks/README.md`` and ``--help``.
"""
from .cli import main

__all__ = ["main"]
