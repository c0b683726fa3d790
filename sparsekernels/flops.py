"""``count_flops``: the FLOPs of a model's conv and linear layers for one input.

FLOPs are 2 x multiply-accumulates (MACs). A conv weight is used once per
output position, so a layer costs ``weights x output positions`` MACs; with
``count_zeros=False`` only the weights that are not exactly zero count, which
makes masked (pruned) layers cheaper. Activations, BN, pooling and biases are
not counted, as in the pruning papers' tables.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .nn.base import SparseConv2d

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d, nn.Linear, SparseConv2d)


def count_flops(model: nn.Module, input_shape, *, count_zeros: bool = False,
                dpp_metric: str = "static") -> int:
    """FLOPs (2 x MACs) of every conv, linear and block-sparse conv layer of
    ``model`` for ONE sample of ``input_shape`` (e.g. ``(C, H, W)``).

    A layer's weight is read when it runs, so a parametrized one (a pruning
    mask) counts its masked weight. A sparse conv (``SparseConv2d``, any kind)
    counts its kept ``values`` only (all of them with ``count_zeros=True``).
    A module with a ``flops(input, output, count_zeros)`` method (e.g.
    ``DPPConv2d``) reports its own FLOPs; a DPPNet layer (one with
    ``FLOP_METRICS``: ``DPPConv2d``, ``DynamicPatternConv2d``) by
    ``dpp_metric``: ``"static"`` (its P static convs, ~P x the dense conv) or
    ``"union"`` (the paper's: its union support, the weight mix and the
    attention; see ``pruning.dppnet.dpp_flops``). The model runs once in eval mode on a zero input of batch 1, under
    ``no_grad``; its training flags are restored afterwards.
    """
    if not isinstance(input_shape, (tuple, list, torch.Size)) or not input_shape or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape
    ):
        raise ValueError(
            f"input_shape: expected the positive sizes of one sample, got {input_shape!r}")
    metrics = ("static", "union")
    if dpp_metric not in metrics:
        raise ValueError(f"dpp_metric: expected one of {metrics}, got {dpp_metric!r}")
    total = [0]

    def count(module: nn.Module, inputs, output: Tensor) -> None:
        total[0] += 2 * _weights(module, count_zeros) * _positions(module, inputs[0], output)

    def count_own(module: nn.Module, inputs, output: Tensor) -> None:
        if getattr(module, "FLOP_METRICS", None):  # a DPPNet layer: two metrics
            total[0] += module.flops(inputs[0], output, count_zeros, metric=dpp_metric)
        else:
            total[0] += module.flops(inputs[0], output, count_zeros)

    # A layer of another shape (e.g. DPPConv2d) says its own cost via .flops().
    handles = [m.register_forward_hook(count_own if callable(getattr(m, "flops", None)) else count)
               for m in model.modules()
               if isinstance(m, _COUNTED) or callable(getattr(m, "flops", None))]
    modes = {m: m.training for m in model.modules()}
    device, dtype = _placement(model)
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return total[0]


def _weights(module: nn.Module, count_zeros: bool) -> int:
    weight = module.values if isinstance(module, SparseConv2d) else module.weight
    return weight.numel() if count_zeros else int(torch.count_nonzero(weight))


def _positions(module: nn.Module, input: Tensor, output: Tensor) -> int:
    """How many times each weight is used for one sample (batch is 1)."""
    if isinstance(module, nn.Linear):
        return output.numel() // module.out_features
    if getattr(module, "transposed", False):  # a transposed conv scatters from each input position
        return input.numel() // module.in_channels
    return output.numel() // module.out_channels


def _placement(model: nn.Module):
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return None, None
