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


# A 1x1 forward read in place: where a pixel chunk's input and a group's
# weights fit L2, its items (image, group, pixel chunk, block-row chunk) are
# split into one range per thread, each fetching its next item ahead; where
# they do not (1024 input channels: two chunks' input 0.8 MB, the weights
# 0.6 MB), they are scheduled dynamically. Several chunks per image (45x45
# planes; 38x38: on AVX2, grad-input's chunks of 720 pixels leave 4, which
# the last chunk takes), two groups, a short last block row (cout_per_group
# 20 = 16 + 4), rows so uneven that one keeps every block and another none,
# the bias and a fused residual, against float64 on every thread count.
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("cin,cout,groups,hw",
                         [(96, 40, 2, 45), (96, 40, 2, 38), (1024, 308, 1, 7)],
                         ids=["fetch-ahead", "short-rest", "many-weights"])
def test_in_place_forward_items(batch, cin, cout, groups, hw):
    gen = torch.Generator().manual_seed(3)
    n = 16
    weight = torch.randn(cout, cin // groups, 1, 1, generator=gen, dtype=torch.float64)
    # the first group's first row keeps every block, its short last row
    # none, the other rows about half
    cout_g = cout // groups
    short = cout_g - cout_g % n
    for g in range(groups):
        for lo in range(g * cout_g + n * (g == 0), (g + 1) * cout_g, n):
            rows = slice(lo, min(lo + n, (g + 1) * cout_g))
            weight[rows, torch.rand(cin // groups, generator=gen) < 0.5] = 0
    weight[short:cout_g] = 0
    fmt = Block1xN.from_zeros(weight, groups=groups, n=n)
    topo = fmt.topology()
    conv = ConvArgs((1, 1), (0, 0), (1, 1), groups)
    x = torch.randn(batch, cin, hw, hw, generator=gen)
    bias = torch.randn(cout, generator=gen)
    res = torch.randn(batch, cout, hw, hw, generator=gen)
    go = torch.randn(batch, cout, hw, hw, generator=gen)
    want = torch.nn.functional.conv2d(x.double(), fmt.to_dense(), bias.double(),
                                      groups=groups) + res.double()
    # grad-input accumulates in place too: a channel's first block sets its
    # chunk, and a channel no block reaches (about a quarter of the second
    # group's) is zeroed
    want_gi = torch.nn.functional.conv_transpose2d(go.double(), fmt.to_dense(), groups=groups)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            got = native.forward(x, fmt.values.float(), topo, bias, conv, residual=res)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
            torch.full_like(x, float("nan"))  # freed: the output likely reuses its block
            gi = native.grad_input(go, fmt.values.float(), topo, conv, (hw, hw))
            torch.testing.assert_close(gi.double(), want_gi, rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(before)


# A 1x1 forward on small images with output channels in the vector (images
# of at most 256 pixels, 64 where a row is one vector, 32 or more blocks a
# row on average, N a multiple of the vector): tiles of a few pixels and
# their tail (10, 45, 49 and 256 pixels; chunks of an image where the rows
# are too few for the threads),
# N of one, two and four vectors, a short last row (cout_per_group 40 = 2 x
# 16 + 8) and a row with no block, two groups, the bias, a fused residual and
# clamp, against float64 on every thread count; outputs poisoned first. The
# same cases through the pixel sweep's copied input: stride 2 and
# channels_last (both not read in place).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", [8, 16, 32])
@pytest.mark.parametrize("hw", [(2, 5), (5, 9), (7, 7), (16, 16)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("batch,groups", [(1, 1), (3, 2)])
@pytest.mark.parametrize("source", ["in_place", "stride2", "channels_last"])
def test_small_image_forward_channel_lanes(dtype, n, hw, batch, groups, source):
    gen = torch.Generator().manual_seed(5)
    cin, cout = 128 * groups, 40 * groups if n < 32 else 48 * groups
    weight = torch.randn(cout, cin // groups, 1, 1, generator=gen, dtype=torch.float64)
    fmt = Block1xN.from_dense(weight, n, 0.5, criterion="random", seed=2, groups=groups)
    dense = fmt.to_dense()
    dense[:n] = 0  # the first row keeps no block
    fmt = Block1xN.from_zeros(dense, groups=groups, n=n)
    assert fmt.values.shape[0] >= 32 * (fmt.topology().row_ptr.numel() - 1)  # the lane path's rule
    topo = fmt.topology()
    stride = 2 if source == "stride2" else 1
    conv = ConvArgs((stride, stride), (0, 0), (1, 1), groups)
    in_hw = (hw[0] * 2 - 1, hw[1] * 2) if stride == 2 else hw  # out: hw
    x = torch.randn(batch, cin, *in_hw, generator=gen, dtype=dtype)
    if source == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(cout, generator=gen, dtype=dtype)
    res = torch.randn(batch, cout, *hw, generator=gen, dtype=dtype)
    want = (torch.nn.functional.conv2d(x.double(), dense, bias.double(), stride, groups=groups)
            + res.double()).clamp(-1.5, 2.0)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            torch.full_like(res, float("nan"))  # freed: the output likely reuses its block
            got = native.forward(x, fmt.values.to(dtype), topo, bias, conv, (-1.5, 2.0),
                                 residual=res)
            torch.testing.assert_close(got.double(), want, **tol)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("simd", ["best", "avx2", "generic"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_grad_weight_masked_pass_on_whole_blocks(simd, value, monkeypatch):
    """A non-finite input at the image's edge reaches exactly the kept
    weights' gradients a real (output pixel, tap) pair carries it to, when
    the tiles cover a whole block of 16 channels (8 per AVX-512 tile: the
    input vectors held, grad_out streamed) and the masked second pass runs."""
    if simd != "best":
        monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", simd)
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(16, 3, 3, 3, generator=gen, dtype=torch.float64)
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[:, 0] = True  # one kept block: every output on input channel 0
    fmt = Block1xN.from_mask(w, mask, n=16)
    conv = ConvArgs((1, 1), (1, 1), (1, 1), 1)
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    go = torch.randn(2, 16, 7, 9, generator=gen, dtype=torch.float64)
    x[1, 0, 3, 0] = value  # read by kept taps, and next to the wide layout's padding
    x[0, 1, 0, 8] = value  # a pruned channel: reaches nothing
    gv = native.grad_weight(x, go, fmt.topology(), conv)
    marked = (~torch.isfinite(x)).double()
    reach = torch.nn.grad.conv2d_weight(marked, w.shape, torch.ones_like(go), padding=1) > 0
    assert torch.equal(~torch.isfinite(gv), fmt.gather(reach.double() * mask) > 0)
    finite = torch.isfinite(gv)
    want = fmt.gather(torch.nn.grad.conv2d_weight(x.nan_to_num(0, 0, 0), w.shape, go,
                                                  padding=1))
    torch.testing.assert_close(gv[finite], want[finite])


# Grad-weight with the row's N channels in the vector (gwv_row: N of one or
# two vectors, kernels of several taps, rows of more than half a tile's
# blocks) beside the pixel-vector tiles the other rows take: per-row block
# counts either side of that rule and of a whole tile (24 = 3 tiles of 8 on
# AVX-512, 13 = 8 + 5, 5, 4, 1, 0; 1x1 tiles of 12), a short last row, taps
# in groups of three and a remainder (5x5, 1x3), 1x1 convs read in place
# (planes of 552 pixels) and copied, stride, dilation, groups, channels_last,
# against float64 on every thread count; then a NaN input, which sends the
# call to the masked second pass.
def _rows_of(counts, cin, cout, n, gen):
    mask = torch.zeros(cout, cin, dtype=torch.bool)
    for r, kept in enumerate(counts):
        mask[r * n:(r + 1) * n, torch.randperm(cin, generator=gen)[:kept]] = True
    return mask


@pytest.mark.parametrize("simd", ["best", "avx2", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", [8, 16])
@pytest.mark.parametrize("k,stride,padding,dilation,groups,hw,batch,layout", [
    ((3, 3), 1, 1, 1, 1, (11, 9), 2, "nchw"),
    ((3, 3), 2, 1, 1, 1, (13, 12), 3, "nchw"),
    ((3, 3), 1, 2, 2, 2, (10, 10), 1, "channels_last"),
    ((5, 5), 1, 2, 1, 1, (8, 9), 2, "nchw"),
    ((1, 3), 1, (0, 1), 1, 1, (6, 17), 2, "nchw"),
    ((1, 1), 1, 0, 1, 1, (24, 23), 2, "nchw"),
    ((1, 1), 1, 0, 1, 2, (7, 7), 3, "nchw"),
    ((1, 1), 2, 0, 1, 1, (9, 8), 2, "channels_last"),
], ids=["3x3", "3x3s2", "3x3d2g2-cl", "5x5", "1x3", "1x1-in-place", "1x1g2", "1x1s2-cl"])
def test_grad_weight_channel_vectors(simd, dtype, n, k, stride, padding, dilation, groups, hw,
                                     batch, layout, monkeypatch):
    if simd != "best":
        monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", simd)
    gen = torch.Generator().manual_seed(11)
    cin_g, counts = 24, [24, 13, 5, 4, 1, 0, 9]
    cout_g = n * (len(counts) - 1) + n // 2 + 1  # a short last row
    cin, cout = cin_g * groups, cout_g * groups
    weight = torch.randn(cout, cin_g, *k, generator=gen, dtype=torch.float64)
    mask = torch.cat([_rows_of(counts, cin_g, cout_g, n, gen) for _ in range(groups)])
    fmt = Block1xN.from_mask(weight, mask[:, :, None, None].expand_as(weight), n=n, groups=groups)
    topo = fmt.topology()
    conv = ConvArgs((stride, stride), padding if isinstance(padding, tuple) else (padding, padding),
                    (dilation, dilation), groups)
    x = torch.randn(batch, cin, *hw, generator=gen, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out_hw = torch.nn.functional.conv2d(x[:1, :, :, :].double(), weight, None, stride, conv.padding,
                                        dilation, groups).shape[-2:]
    go = torch.randn(batch, cout, *out_hw, generator=gen, dtype=dtype)
    grad = lambda xx: fmt.gather(torch.nn.grad.conv2d_weight(
        xx.double(), weight.shape, go.double(), stride, conv.padding, dilation, groups))
    want = grad(x)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            got = native.grad_weight(x, go, topo, conv)
            torch.testing.assert_close(got.double(), want, **tol)
        x_nan = x.clone()
        x_nan[0, 0, hw[0] // 2, 0] = float("nan")  # on real pixels of some taps
        got = native.grad_weight(x_nan, go, topo, conv)
        reach = torch.isnan(grad(x_nan))
        assert torch.equal(torch.isnan(got), reach) and reach.any()
        torch.testing.assert_close(got[~reach].double(), want[~reach], **tol)
    finally:
        torch.set_num_threads(before)
