"""Microbenchmark of the sparse conv kernels against the dense conv.

    python -m sparsekernels.bench --suite resnet50-3x3 --n 16 --sparsity 0.5 0.75 0.9 \
        --device cpu --dtype float32 --batch 8 --threads 2 --json out.json

See ``python -m sparsekernels.bench --help``; ``benchmarks/plot.py`` plots the JSON.
"""
from .cli import main

__all__ = ["main"]
