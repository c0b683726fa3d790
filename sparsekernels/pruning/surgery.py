"""Channel surgery on a whole :class:`~.channels.ChannelGroup`: the one
implementation behind filter rearrangement (a permutation), L1-norm filter
pruning and network slimming (a subset).

``select_channels(model, group, index)`` makes channel ``i`` of the group be
old channel ``index[i]`` everywhere the group reaches: the producer's filters
(and bias), every BN's gamma/beta/running stats, every depthwise filter, and the
consumers' input channels (or input-feature blocks of a Linear).
``select_mask_channels`` applies the same selection to kept-weight masks.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from ..nn.replace import replace_module
from .channels import ChannelGroup


def select_channels(model: nn.Module, group: ChannelGroup, index: Tensor) -> None:
    """Keep the producer's output channels ``index`` (in that order) across
    ``group``, in place. A permutation keeps every module (and Parameter)
    object; a subset replaces the modules by narrower ones of the same dtype
    and device."""
    if group.coupled:
        raise ValueError(
            f"{group.producer}: its output channels are coupled ({group.reason}); "
            "they cannot be permuted or pruned on their own")
    producer = model.get_submodule(group.producer)
    channels = producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features
    index = _checked_index(index, channels, group.producer)
    _install(model, group.producer, _select_outputs(producer, index))
    for name in group.all_bns:
        _install(model, name, _select_bn(model.get_submodule(name), index))
    for name in group.depthwise:
        _install(model, name, _select_depthwise(model.get_submodule(name), index))
    for name, per_channel in group.consumers.items():
        _install(model, name, _select_inputs(model.get_submodule(name), index, per_channel))


def select_mask_channels(masks: dict[str, Tensor], group: ChannelGroup,
                         index: Tensor) -> dict[str, Tensor]:
    """``masks`` (kept-weight masks by layer name, each of its weight's shape)
    after :func:`select_channels` with the same ``group`` and ``index``: the
    producer's and depthwise filters and the consumers' input channels (or
    input-feature blocks) selected alike, so each mask still fits its
    narrowed weight. Layers without a mask are skipped; returns a new dict."""
    index = index.long().cpu()
    out = dict(masks)

    def pick(name: str, dim: int, idx: Tensor) -> None:
        if name in out:
            out[name] = out[name].index_select(dim, idx.to(out[name].device))

    pick(group.producer, 0, index)
    for name in group.depthwise:
        pick(name, 0, index)
    for name, per_channel in group.consumers.items():
        pick(name, 1, (index[:, None] * per_channel + torch.arange(per_channel)).flatten())
    return out


def _checked_index(index: Tensor, channels: int, producer: str) -> Tensor:
    if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype not in (
        torch.int32, torch.int64
    ):
        raise ValueError(f"index: expected a 1-D integer tensor of channels of {producer}")
    index = index.long().cpu()
    if index.numel() == 0:
        raise ValueError(f"index: {producer} must keep at least one channel")
    if index.min() < 0 or index.max() >= channels:
        raise ValueError(f"index: channels of {producer} lie in [0, {channels}), got "
                         f"{index.min().item()}..{index.max().item()}")
    if index.unique().numel() != index.numel():
        raise ValueError(f"index: repeats a channel of {producer}")
    return index


def _select_outputs(m: nn.Module, index: Tensor) -> nn.Module:
    picks = {"weight": (0, index), "bias": (0, index)}
    if isinstance(m, nn.Conv2d):
        return _rebuilt(m, conv_like(m, m.in_channels, len(index), 1), picks)
    return _rebuilt(m, linear_like(m, m.in_features, len(index)), picks)


def _select_depthwise(m: nn.Conv2d, index: Tensor) -> nn.Conv2d:
    n = len(index)
    return _rebuilt(m, conv_like(m, n, n, n), {"weight": (0, index), "bias": (0, index)})


def _select_inputs(m: nn.Module, index: Tensor, per_channel: int) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        return _rebuilt(m, conv_like(m, len(index), m.out_channels, 1), {"weight": (1, index)})
    # Channel c of a flattened map owns input features c*k .. c*k+k-1.
    features = (index[:, None] * per_channel + torch.arange(per_channel)).flatten()
    return _rebuilt(m, linear_like(m, len(features), m.out_features), {"weight": (1, features)})


def _select_bn(m: nn.Module, index: Tensor) -> nn.Module:
    picks = {k: (0, index) for k in ("weight", "bias", "running_mean", "running_var")}
    return _rebuilt(m, bn_like(m, len(index)), picks)


# Same-kind modules of another width, uninitialised (skip_init): callers
# overwrite the weights at once, so they don't pay for an init.

def bn_like(m: nn.Module, num_features: int) -> nn.Module:
    device, dtype = _placement(m)
    return skip_init(type(m), num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                     device=device, dtype=dtype)


def conv_like(m: nn.Conv2d, in_channels: int, out_channels: int, groups: int) -> nn.Conv2d:
    return skip_init(nn.Conv2d, in_channels, out_channels, m.kernel_size, m.stride, m.padding,
                     m.dilation, groups, m.bias is not None, m.padding_mode,
                     device=m.weight.device, dtype=m.weight.dtype)


def linear_like(m: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return skip_init(nn.Linear, in_features, out_features, m.bias is not None,
                     device=m.weight.device, dtype=m.weight.dtype)


def _placement(m: nn.Module):
    for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
        return t.device, t.dtype
    return None, None


def _rebuilt(old: nn.Module, new: nn.Module, picks: dict[str, tuple[int, Tensor]]) -> nn.Module:
    """``new`` holding ``old``'s state, with each tensor named in ``picks``
    index-selected along its dim; training mode and requires_grad carried over."""
    state = {}
    for name, t in old.state_dict().items():
        dim, index = picks.get(name, (None, None))
        state[name] = t if dim is None else t.index_select(dim, index.to(t.device))
    new.load_state_dict(state)
    new.train(old.training)
    for name, p in new.named_parameters():
        p.requires_grad_(old.get_parameter(name).requires_grad)
    return new


def _install(model: nn.Module, name: str, new: nn.Module) -> None:
    old = model.get_submodule(name)
    old_state, new_state = old.state_dict(), new.state_dict()
    if all(old_state[k].shape == v.shape for k, v in new_state.items()):
        # Same shapes (a permutation): copy in place, so hooks and the
        # parameter lists of an existing optimizer still point at the live
        # tensors (its per-parameter state, e.g. momentum, is not permuted).
        old.load_state_dict(new_state)
        return
    replace_module(model, name, new)


def filter_l1_norms(module: nn.Module) -> Tensor:
    """float64 ``[Cout]`` on the CPU: sum of |W| over each filter (Cin*Kh*Kw, or
    the input features of a Linear), the criterion of Li et al. and of the 1xN
    rearrangement. float64 so that the ordering does not depend on the dtype."""
    return module.weight.detach().abs().double().flatten(1).sum(1).cpu()
