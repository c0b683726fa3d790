"""The compiled CPU 1xN kernels' own properties, beyond the shared matrix of
test_sparse_conv.py: results that do not depend on the thread count (each
output element is summed by one work item, in one order), on calls large
enough to start every thread and on calls small enough to start one."""
import pytest
import torch

from sparsekernels.conv_args import ConvArgs
from sparsekernels.formats.block1xn import Block1xN
from sparsekernels.ops import block1xn_native as native

# (cin, cout, k, stride, hw, batch, n): a small CIFAR-like call (one thread),
# a strided one and a 1x1 one over planes read in place (several threads)
SHAPES = [(16, 16, 3, 1, 8, 1, 16), (32, 64, 3, 2, 23, 2, 8), (48, 32, 1, 1, 24, 3, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_results_do_not_depend_on_threads(shape):
    cin, cout, k, stride, hw, batch, n = shape
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64)
    fmt = Block1xN.from_dense(weight, n, 0.5, criterion="random", seed=1)
    topo = fmt.topology()
    conv = ConvArgs((stride, stride), (k // 2, k // 2), (1, 1), 1)
    x = torch.randn(batch, cin, hw, hw, generator=gen, dtype=torch.float64)
    bias = torch.randn(cout, generator=gen, dtype=torch.float64)
    out_hw = (hw + 2 * (k // 2) - k) // stride + 1
    go = torch.randn(batch, cout, out_hw, out_hw, generator=gen, dtype=torch.float64)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append((native.forward(x, fmt.values, topo, bias, conv),
                         native.grad_input(go, fmt.values, topo, conv, (hw, hw)),
                         native.grad_weight(x, go, topo, conv)))
    finally:
        torch.set_num_threads(before)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)
