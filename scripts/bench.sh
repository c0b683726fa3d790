#!/usr/bin/env bash
# Install (scripts/install.sh) and run the 1xN microbenchmark. With no
# arguments: the ResNet-50 3x3 layers on the CPU, fp32, batch 8, 2 threads,
# N=16 at 50/75/90% block sparsity against oneDNN, written to bench_out/.
# Any arguments replace those defaults (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ $# -eq 0 ]; then
  mkdir -p bench_out
  set -- --suite resnet50-3x3 --kind 1xN --n 16 --sparsity 0.5 0.75 0.9 --device cpu \
         --dtype float32 --batch 8 --threads 2 --json bench_out/cpu_resnet50_3x3.json
fi
exec "${PYTHON:-python3}" -m sparsekernels.bench "$@"
