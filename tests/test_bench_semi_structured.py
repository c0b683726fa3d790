"""The cuSPARSELt 2:4 peer's math, run densely (no GPU here): the 2:4 pruning
keeps the 2 largest of every 4 weights along the reduction, and the im2col
GEMM equals F.conv2d on the pruned weight; on a GPU the same callables run
with the weight compressed by cuSPARSELt."""
import pytest
import torch
import torch.nn.functional as F

from sparsekernels.bench import semi_structured
from sparsekernels.bench.suites import _layer


def test_prune_2to4_keeps_the_two_largest_of_every_four():
    w = torch.randn(6, 5, 3, 3, dtype=torch.float64)  # K = 45 is no multiple of 4
    with pytest.raises(ValueError, match="not a multiple of 4"):
        semi_structured.prune_2to4(w)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    pruned = semi_structured.prune_2to4(w).reshape(6, -1, 4)
    quads = w.reshape(6, -1, 4)
    assert ((pruned != 0).sum(-1) == 2).all()
    kept_min = torch.where(pruned != 0, quads.abs(), torch.inf).min(-1).values
    dropped_max = torch.where(pruned == 0, quads.abs(), -torch.inf).max(-1).values
    assert (kept_min >= dropped_max).all()
    assert torch.equal(pruned[pruned != 0], quads[pruned != 0])


@pytest.mark.parametrize("k,stride,hw", [(3, 1, 7), (3, 2, 9), (1, 1, 5)])
def test_im2col_gemm_is_the_conv_on_the_2to4_weight(k, stride, hw):
    layer = _layer(8, 12, k, stride, hw)
    w = torch.randn(12, 8, k, k, dtype=torch.float64)
    x = torch.randn(3, 8, hw, hw, dtype=torch.float64)
    pruned, conv, gemm = semi_structured.peer(layer, w, to_sparse=lambda t: t)
    want = F.conv2d(x, pruned, None, stride, layer.padding)
    torch.testing.assert_close(conv(x), want)
    y = gemm(semi_structured.im2col(layer, x))
    torch.testing.assert_close(semi_structured.gemm_to_output(y, 3, layer), want)


def test_peer_runs_only_where_cusparselt_does():
    cpu = torch.device("cpu")
    assert not semi_structured.runs_on(cpu, torch.bfloat16, "forward")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        assert not semi_structured.runs_on(gpu, torch.float32, "forward")
        assert not semi_structured.runs_on(gpu, torch.bfloat16, "grad-input")
