"""The 1xN block-sparse conv2d op: public function, custom ops, autograd.

``block1xn_conv2d`` validates its arguments (errors name the argument), resolves
string padding and the backend, then calls the ``sparsekernels::block1xn_conv2d``
custom op. The custom ops have fake kernels, so ``torch.compile`` traces them
without graph breaks, and a registered autograd formula whose backward is two
more custom ops: grad-input (the transposed sparse conv, same topology) and
grad-weight (computed only at kept blocks, so pruned weights stay pruned).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..formats.block1xn import Block1xN, BlockTopology
from . import backends
from . import block1xn_checks as checks
from ..conv_args import check_conv_args, output_hw, resolve_conv_args

_MODULES = {
    "reference": ".ops.block1xn_reference",
    "cpu": ".ops.block1xn_native",
    "cuda": ".ops.block1xn_native",
    "triton": ".triton.block1xn",
}
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _impl(backend: str):
    """The module of a resolved backend name."""
    return backends.module_for(_MODULES, backend)


def _topology(row_ptr, col_idx, col_ptr, block_idx, block_row, n, rows_per_group):
    return BlockTopology(row_ptr, col_idx, col_ptr, block_idx, block_row, n, rows_per_group)


def _channels_last(x: Tensor) -> bool:
    """Whether an output should be channels_last, as PyTorch's conv decides."""
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _like_input(out: Tensor, x: Tensor) -> Tensor:
    if _channels_last(x):
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


# ---- custom ops ----------------------------------------------------------------
@torch.library.custom_op("sparsekernels::block1xn_conv2d", mutates_args=())
def block1xn_conv2d_op(
    x: Tensor, values: Tensor, row_ptr: Tensor, col_idx: Tensor, col_ptr: Tensor,
    block_idx: Tensor, block_row: Tensor, bias: Optional[Tensor], n: int,
    rows_per_group: int, cout: int, stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], groups: int, backend: str,
) -> Tensor:
    topo = _topology(row_ptr, col_idx, col_ptr, block_idx, block_row, n, rows_per_group)
    conv = check_conv_args(stride, padding, dilation, groups)
    backend = backends.resolve(backend, x.device)
    checks.check_forward(backend, x, values, topo, bias, conv, cout)
    out = _impl(backend).forward(x, values, topo, bias, conv, cout)
    return _like_input(out, x)


@block1xn_conv2d_op.register_fake
def _(x, values, row_ptr, col_idx, col_ptr, block_idx, block_row, bias, n,
      rows_per_group, cout, stride, padding, dilation, groups, backend):
    conv = check_conv_args(stride, padding, dilation, groups)
    oh, ow = output_hw(tuple(x.shape[2:]), tuple(values.shape[1:3]), conv)
    return _like_input(x.new_empty(x.shape[0], cout, oh, ow), x)


@torch.library.custom_op("sparsekernels::block1xn_conv2d_grad_input", mutates_args=())
def block1xn_conv2d_grad_input_op(
    grad_out: Tensor, values: Tensor, row_ptr: Tensor, col_idx: Tensor, col_ptr: Tensor,
    block_idx: Tensor, block_row: Tensor, n: int, rows_per_group: int, cin: int,
    in_h: int, in_w: int, stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], groups: int, backend: str,
) -> Tensor:
    topo = _topology(row_ptr, col_idx, col_ptr, block_idx, block_row, n, rows_per_group)
    conv = check_conv_args(stride, padding, dilation, groups)
    backend = backends.resolve(backend, grad_out.device)
    checks.check_grad_input(backend, grad_out, values, topo, conv, (in_h, in_w), cin)
    impl = _impl(backend)
    return impl.grad_input(grad_out, values, topo, conv, (in_h, in_w), cin).contiguous()


@block1xn_conv2d_grad_input_op.register_fake
def _(grad_out, values, row_ptr, col_idx, col_ptr, block_idx, block_row, n,
      rows_per_group, cin, in_h, in_w, stride, padding, dilation, groups, backend):
    check_conv_args(stride, padding, dilation, groups)
    return grad_out.new_empty(grad_out.shape[0], cin, in_h, in_w)


@torch.library.custom_op("sparsekernels::block1xn_conv2d_grad_weight", mutates_args=())
def block1xn_conv2d_grad_weight_op(
    x: Tensor, grad_out: Tensor, row_ptr: Tensor, col_idx: Tensor, col_ptr: Tensor,
    block_idx: Tensor, block_row: Tensor, n: int, rows_per_group: int, kh: int, kw: int,
    stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
    backend: str,
) -> Tensor:
    topo = _topology(row_ptr, col_idx, col_ptr, block_idx, block_row, n, rows_per_group)
    conv = check_conv_args(stride, padding, dilation, groups)
    backend = backends.resolve(backend, x.device)
    checks.check_grad_weight(backend, x, grad_out, topo, conv, (kh, kw))
    impl = _impl(backend)
    return impl.grad_weight(x, grad_out, topo, conv, (kh, kw)).contiguous()


@block1xn_conv2d_grad_weight_op.register_fake
def _(x, grad_out, row_ptr, col_idx, col_ptr, block_idx, block_row, n, rows_per_group,
      kh, kw, stride, padding, dilation, groups, backend):
    check_conv_args(stride, padding, dilation, groups)
    return x.new_empty(col_idx.shape[0], kh, kw, n)


# ---- autograd ------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    (x, values, row_ptr, col_idx, col_ptr, block_idx, block_row, bias, n,
     rows_per_group, cout, stride, padding, dilation, groups, backend) = inputs
    ctx.save_for_backward(x, values, row_ptr, col_idx, col_ptr, block_idx, block_row)
    ctx.args = (n, rows_per_group, stride, padding, dilation, groups, backend)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, values, row_ptr, col_idx, col_ptr, block_idx, block_row = ctx.saved_tensors
    n, rows_per_group, stride, padding, dilation, groups, backend = ctx.args
    topo = (row_ptr, col_idx, col_ptr, block_idx, block_row)
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = block1xn_conv2d_grad_input_op(
            grad, values, *topo, n, rows_per_group, x.shape[1], x.shape[2], x.shape[3],
            stride, padding, dilation, groups, backend,
        )
    if ctx.needs_input_grad[1]:
        grad_values = block1xn_conv2d_grad_weight_op(
            x, grad, *topo, n, rows_per_group, values.shape[1], values.shape[2],
            stride, padding, dilation, groups, backend,
        )
    if ctx.has_bias and ctx.needs_input_grad[7]:
        grad_bias = grad.sum((0, 2, 3))
    return (grad_x, grad_values, None, None, None, None, None, grad_bias,
            None, None, None, None, None, None, None, None)


block1xn_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


# ---- public function -----------------------------------------------------------
def _check_inputs(x, values, bias, weight_shape, groups: int, weight_groups: int):
    cout, cin_g, _, _ = weight_shape
    if not isinstance(x, Tensor):
        raise TypeError(f"input: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"input: expected 4-D [N, C, H, W] (or 3-D unbatched), got shape {tuple(x.shape)}"
        )
    if x.dtype not in _DTYPES:
        raise TypeError(f"input: expected one of {_DTYPES}, got {x.dtype}")
    if x.dtype != values.dtype:
        raise TypeError(f"input: dtype {x.dtype} does not match the weight's {values.dtype}")
    if x.device != values.device:
        raise ValueError(f"input: on {x.device} but the weight is on {values.device}")
    if groups != weight_groups:
        raise ValueError(f"groups: {groups} does not match the weight's groups={weight_groups}")
    if x.shape[1] != cin_g * groups:
        raise ValueError(
            f"input: expected {cin_g * groups} channels (weight {list(weight_shape)}, "
            f"groups={groups}), got {x.shape[1]}"
        )
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias: expected a torch.Tensor or None, got {type(bias).__name__}")
        if tuple(bias.shape) != (cout,):
            raise ValueError(f"bias: expected shape ({cout},), got {tuple(bias.shape)}")
        if bias.dtype != x.dtype or bias.device != x.device:
            raise TypeError(
                f"bias: expected {x.dtype} on {x.device}, got {bias.dtype} on {bias.device}"
            )


def block1xn_conv2d(
    input: Tensor,
    weight: Block1xN,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """``F.conv2d`` with a 1xN block-sparse weight.

    Same arguments and output as ``torch.nn.functional.conv2d`` (including
    ``padding='same'/'valid'`` and unbatched 3-D input); ``backend`` is one of
    ``"auto" | "cpu" | "cuda" | "triton" | "reference"``. Pruned weights do
    not exist: a NaN/Inf input that meets only pruned weights does not reach
    the output (the dense ``reference`` backend, which multiplies by stored
    zeros, propagates it).
    """
    if not isinstance(weight, Block1xN):
        raise TypeError(f"weight: expected a Block1xN, got {type(weight).__name__}")
    return apply_block1xn_conv(
        input, weight.values, weight.topology(), bias, weight.shape, stride, padding,
        dilation, groups, weight.groups, backend,
    )


def apply_block1xn_conv(
    input: Tensor, values: Tensor, topo: BlockTopology, bias: Optional[Tensor],
    weight_shape: tuple[int, int, int, int], stride, padding, dilation, groups: int,
    weight_groups: int, backend: str,
) -> Tensor:
    """``block1xn_conv2d`` on an already validated topology (what modules call:
    only shape checks here, nothing that reads tensor data, so it traces)."""
    if isinstance(input, Tensor) and input.dim() == 3:
        return apply_block1xn_conv(
            input[None], values, topo, bias, weight_shape, stride, padding, dilation,
            groups, weight_groups, backend,
        )[0]
    cout, cin_g, kh, kw = weight_shape
    conv, extra = resolve_conv_args(stride, padding, dilation, groups, (kh, kw))
    _check_inputs(input, values, bias, weight_shape, conv.groups, weight_groups)
    backends.resolve(backend, input.device)  # fail early with a clear message
    if extra != (0, 0):
        input = F.pad(input, (0, extra[1], 0, extra[0]))
    oh, ow = output_hw(tuple(input.shape[2:]), (kh, kw), conv)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"input: spatial size {tuple(input.shape[2:])} is too small for kernel "
            f"{(kh, kw)} with padding {conv.padding} and dilation {conv.dilation}"
        )
    return block1xn_conv2d_op(
        input, values, topo.row_ptr, topo.col_idx, topo.col_ptr, topo.block_idx,
        topo.block_row, bias, topo.n, topo.rows_per_group, cout, list(conv.stride),
        list(conv.padding), list(conv.dilation), conv.groups, backend,
    )
