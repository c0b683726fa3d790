"""What the thread-exact CPU emulations of the CUDA kernels share
(scripts/emulate_<kind>_cuda.py, checked by tests/test_<kind>_cuda_emulation.py).

Nothing can run the CUDA kernels on a machine without a GPU, so each
emulation replays its kernels' index math over flat buffers. This module
holds what does not depend on the sparsity kind: the convolution geometry
(sparsekernels/conv_geometry.h), input memory read through explicit element
strides in three layouts (a wrong offset reads a wrong value, a 1e30 filler,
or raises), outputs that start as NaN and count their writes (an unwritten or
doubly written element is caught), the split-K count and the split-ordered
reduction of csrc/cuda/common/split_k.cuh, and the float64 F.conv2d reference
(with its autograd) every emulation is compared against.
"""
from __future__ import annotations

import numpy as np

# Largest max-abs error accepted against the float64 reference: the
# emulations add in float64 too, so only the order of additions differs.
TOLERANCE = 1e-9

# csrc/cuda/common/split_k.cuh
kMaxSplits = 64


def cdiv(a, b):
    return -(-a // b)


class Geo:
    """ConvGeometry: the shapes of one Conv2d call (out_h/out_w clamp at 0)."""

    def __init__(self, n, cin, h, w, cout, kh, kw, stride, pad, dil, groups):
        self.batch, self.cin, self.in_h, self.in_w, self.cout = n, cin, h, w, cout
        self.kh, self.kw = kh, kw
        self.stride_h, self.stride_w = stride
        self.pad_h, self.pad_w = pad
        self.dil_h, self.dil_w = dil
        self.groups = groups
        self.out_h = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
        self.out_w = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
        self.out_h, self.out_w = max(self.out_h, 0), max(self.out_w, 0)

    taps = property(lambda s: s.kh * s.kw)
    cin_g = property(lambda s: s.cin // s.groups)
    cout_g = property(lambda s: s.cout // s.groups)


class Mem:
    """A flat buffer read through (n, c, h, w) element strides."""

    def __init__(self, t4, order):  # order: 'nchw', 'nhwc' or 'padded'
        n, c, h, w = t4.shape
        if order == "nchw":
            self.buf, self.s = t4.reshape(-1).copy(), (c * h * w, h * w, w, 1)
        elif order == "nhwc":
            self.buf, self.s = t4.transpose(0, 2, 3, 1).reshape(-1).copy(), (h * w * c, 1, w * c, c)
        else:  # every dimension padded: non-contiguous, the filler poisons
            big = np.full((n + 1, c + 1, h + 1, w + 2), 1e30)
            big[:n, :c, :h, :w] = t4
            self.buf = big.reshape(-1)
            self.s = ((c + 1) * (h + 1) * (w + 2), (h + 1) * (w + 2), w + 2, 1)

    def load(self, off, mask):
        """buf[off] where mask holds, 0 elsewhere (an unmasked offset is not
        read: the kernels never form it)."""
        off = np.where(mask, off, 0)
        if mask.any():
            assert off[mask].min() >= 0 and off[mask].max() < self.buf.size, "read out of range"
        return np.where(mask, self.buf[off], 0.0)


class Out:
    """An output buffer: NaN until written, with a write count per element."""

    def __init__(self, size):
        self.v = np.full(size, np.nan)
        self.writes = np.zeros(size, np.int64)

    def store(self, idx, val, mask):
        idx, val = np.broadcast_to(idx, mask.shape)[mask], np.broadcast_to(val, mask.shape)[mask]
        assert idx.min(initial=0) >= 0 and idx.max(initial=-1) < self.v.size
        np.add.at(self.writes, idx, 1)
        self.v[idx] = val

    def assert_written_once(self, what):
        assert (self.writes == 1).all(), f"{what}: element not written exactly once"


def inside(y, x, geo):
    return (y >= 0) & (y < geo.in_h) & (x >= 0) & (x < geo.in_w)


def split_count(busy, max_splits, sms):
    """split_count of split_k.cuh: about 2 waves of 2 CTAs per SM for `busy`
    CTAs of unsplit work, at most max_splits and kMaxSplits, at least 1."""
    want = 4 * sms
    splits = 1 if busy >= want else cdiv(want, busy)
    return max(1, min(splits, max_splits, kMaxSplits))


def reduce_splits(partial: Out, splits, total, out: Out):
    """reduce_splits_kernel of split_k.cuh: out[i] = the splits' partial sums
    of element i added in split order."""
    partial.assert_written_once("a split partial")
    part = partial.v.reshape(splits, total)
    v = part[0].copy()
    for sp in range(1, splits):
        v += part[sp]
    out.store(np.arange(total), v, np.ones(total, bool))


class Reference:
    """float64 F.conv2d of x (drawn from rng) with the dense weight, then its
    autograd for a grad_out gy drawn from rng after x and the bias (numpy
    arrays; grad_weight a torch tensor, shaped as the weight)."""

    def __init__(self, geo, weight, rng, with_bias=True):
        import torch
        import torch.nn.functional as F
        self.x = rng.standard_normal((geo.batch, geo.cin, geo.in_h, geo.in_w))
        self.bias = rng.standard_normal(geo.cout) if with_bias else None
        xt = torch.tensor(self.x, requires_grad=True)
        wt = torch.as_tensor(weight, dtype=torch.float64).detach().requires_grad_()
        y = F.conv2d(xt, wt, None if self.bias is None else torch.tensor(self.bias),
                     (geo.stride_h, geo.stride_w), (geo.pad_h, geo.pad_w),
                     (geo.dil_h, geo.dil_w), geo.groups)
        assert y.shape[2:] == (geo.out_h, geo.out_w)
        self.gy = rng.standard_normal(tuple(y.shape))
        y.backward(torch.tensor(self.gy))
        self.y = y.detach().numpy().reshape(-1)
        self.grad_x = xt.grad.numpy().reshape(-1)
        self.grad_weight = wt.grad


def max_error(got, want):
    return np.abs(got - want).max(initial=0)


def assert_within_tolerance(errs):
    """errs: max abs error per pass."""
    for name, err in errs.items():
        assert err < TOLERANCE, f"{name}: max abs error {err}"
