"""DPPNet: dynamic pattern convolution with learned per-layer patterns (Lee,
Shin, Woo, CIKM 2022, ``lee-gwang/DPPNet``).

A :class:`DPPConv2d` holds P static kernels ``W[P, Cout, Cin, Kh, Kw]``. Kernel p
is masked by a learned spatial pattern ``M_p[Kh, Kw]`` shared by all its (o, i)
kernels: position (kh, kw) is on iff ``mean_{o,i} |W_p[.., kh, kw]|`` exceeds
``mean_o th[p, o]`` (a hard step with a straight-through gradient). A small
attention net mixes the P masked kernels per sample and output channel:

    Y[b, o] = sum_p a[b, p, o] * conv(x, M_p * W_p)[b, o]

The softmax never gives exactly 0, so every sample can use every position of
``U = union_p M_p``: the layer's support is static (DPPNet's "pattern"
sparsity), only the values are dynamic. :meth:`DPPConv2d.export` hands U and
the P masked kernels on; ``nn.dynamic_pattern.DynamicPatternConv2d`` runs
them at the cost of U (per-sample weights mixed on U, one batched GEMM), and
:func:`dpp_flops` counts a layer both ways (``"static"``: the P convs this
module runs; ``"union"``: the paper's metric).

Training adds :func:`dpp_regularizer` (``alpha * sum exp(-th)``) to the loss,
which pushes thresholds up and so removes positions.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair


class BinaryStep(torch.autograd.Function):
    """``x > 0`` forward; straight-through gradient ``2 - 4|x|`` for
    ``|x| <= 0.4``, ``0.4`` for ``0.4 < |x| <= 1``, ``0`` beyond."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        ax = x.abs()
        surrogate = torch.where(ax <= 0.4, 2 - 4 * ax, 0.4 * (ax <= 1).to(x.dtype))
        return grad * surrogate


class PatternAttention(nn.Module):
    """The original's GPM2d: avg pool -> 1x1 conv Cin->hidden (no bias) -> ReLU
    -> 1x1 conv hidden->P*Cout -> softmax over P at ``temperature``; returns
    ``a[B, P, Cout]``."""

    def __init__(self, in_channels: int, out_channels: int, num_patterns: int, temperature: float, ratio: float = 0.25):
        super().__init__()
        hidden = int(ratio * in_channels) + 1
        self.num_patterns = num_patterns
        self.out_channels = out_channels
        self.temperature = temperature
        self.reduce = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.expand = nn.Conv2d(hidden, num_patterns * out_channels, 1, bias=True)
        for conv in (self.reduce, self.expand):  # the original's init
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.expand.bias)

    def forward(self, x: Tensor) -> Tensor:
        # The 1x1 convs of a [B, C, 1, 1] input as matrix products (the same
        # values; a 1x1 conv call costs more than its work at this size).
        pooled = x.mean(dim=(2, 3))
        hidden = F.relu(F.linear(pooled, self.reduce.weight.flatten(1)))
        logits = F.linear(hidden, self.expand.weight.flatten(1), self.expand.bias)
        logits = logits.view(x.shape[0], self.num_patterns, self.out_channels)
        return torch.softmax(logits / self.temperature, dim=1)

    @torch.no_grad()
    def flops(self, input: Tensor, output: Tensor, count_zeros: bool = False) -> int:
        """One sample's FLOPs of the two 1x1 convs (``count_flops``'s
        protocol; the convs do not run as modules, so they are counted here)."""
        weights = (self.reduce.weight, self.expand.weight)
        return 2 * sum(w.numel() if count_zeros else int(torch.count_nonzero(w)) for w in weights)


@dataclass
class DPPExport:
    """A DPPConv2d frozen for a pattern kernel.

    ``kernels[P, Cout, Cin, Kh, Kw]`` are the masked kernels ``M_p * W_p``;
    ``masks[P, Kh, Kw]`` the patterns; ``support[Kh, Kw]`` their union, the
    positions any sample can use (``positions``: their flat indices
    ``kh * Kw + kw``); ``attention`` a copy of the mixing net.
    """

    kernels: Tensor
    masks: Tensor
    support: Tensor
    positions: Tensor
    bias: Optional[Tensor]
    attention: PatternAttention
    stride: Tuple[int, int]
    padding: Union[Tuple[int, int], str]
    dilation: Tuple[int, int]

    @torch.no_grad()
    def reference(self, x: Tensor) -> Tensor:
        """The layer's output, computed plainly (to check a kernel against)."""
        return _mix(x, self.kernels, self.attention(x), self.bias, self.stride, self.padding, self.dilation)


def _mix(x, kernels, attn, bias, stride, padding, dilation) -> Tensor:
    # One static conv with P*Cout outputs, then the attention-weighted sum over P:
    # equal to the original's per-sample kernels sum_p a[b,p,o] M_p W_p run as a
    # groups=B conv, but a single batch-shared GEMM.
    num_patterns, cout = kernels.shape[:2]
    per_pattern = F.conv2d(x, kernels.flatten(0, 1), None, stride, padding, dilation)
    per_pattern = per_pattern.unflatten(1, (num_patterns, cout))
    out = torch.einsum("bpohw,bpo->bohw", per_pattern, attn)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


FLOP_METRICS = ("static", "union")


def dpp_flops(kernels: Tensor, output: Tensor, count_zeros: bool = False,
              metric: str = "static") -> int:
    """One sample's FLOPs of a DPP layer whose masked kernels are
    ``kernels[P, Cout, Cin, Kh, Kw]`` and whose output (batch 1) is ``output``.

    ``"static"``: the P static convs (``2 * nonzero weights * OH*OW``, zeros
    counted with ``count_zeros``) plus the attention-weighted sum (``2 P Cout
    OH*OW``): what :class:`DPPConv2d`'s forward does, ~P x the dense conv.

    ``"union"``: the paper's metric (its MAC counter keeps a position iff
    ``sum_p M_p a > 0``, i.e. the union U): one conv with the per-sample
    kernel on U (``2 Cout Cin |U| OH*OW``) plus mixing that kernel
    (``2 P Cout Cin |U|``). ``|U|`` is the positions where some kernel is
    nonzero (``Kh*Kw`` with ``count_zeros``). What
    :class:`~sparsekernels.nn.dynamic_pattern.DynamicPatternConv2d` computes.
    """
    if metric not in FLOP_METRICS:
        raise ValueError(f"metric: expected one of {FLOP_METRICS}, got {metric!r}")
    num_patterns, cout, cin = kernels.shape[:3]
    positions = output.numel() // cout
    if metric == "static":
        weights = kernels.numel() if count_zeros else int(torch.count_nonzero(kernels))
        return 2 * (weights + num_patterns * cout) * positions
    taps = kernels[0, 0, 0].numel() if count_zeros else int((kernels != 0).flatten(0, 2).any(0).sum())
    return 2 * cout * cin * taps * (positions + num_patterns)


class DPPConv2d(nn.Module):
    """Dynamic pattern conv (groups=1): P static kernels with learned spatial
    patterns, mixed per sample by :class:`PatternAttention`.

    ``bias`` is one static ``[Cout]`` bias (the original declares a ``[P, Cout]``
    bias it never uses).
    """

    FLOP_METRICS = FLOP_METRICS

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Tuple[int, int]],
        stride: Union[int, Tuple[int, int]] = 1,
        padding: Union[int, Tuple[int, int], str] = 0,
        dilation: Union[int, Tuple[int, int]] = 1,
        num_patterns: int = 4,
        temperature: float = 0.5,
        bias: bool = False,
    ):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels, out_channels: expected >= 1, got {in_channels}, {out_channels}")
        if num_patterns < 1:
            raise ValueError(f"num_patterns: expected >= 1, got {num_patterns}")
        if temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {temperature}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.num_patterns = num_patterns
        self.weight = nn.Parameter(torch.empty(num_patterns, out_channels, in_channels, *self.kernel_size))
        for kernel in self.weight.data:  # the original: kaiming_uniform_ per kernel, default gain
            nn.init.kaiming_uniform_(kernel)
        self.threshold = nn.Parameter(torch.zeros(num_patterns, out_channels))
        self.attention = PatternAttention(in_channels, out_channels, num_patterns, temperature)
        if bias:
            bound = (in_channels * self.kernel_size[0] * self.kernel_size[1]) ** -0.5
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, num_patterns: int = 4, temperature: float = 0.5,
                  noise: float = 1e-3, seed: int = 0) -> "DPPConv2d":
        """A DPPConv2d whose P kernels all start from ``conv.weight``, each plus
        independent Gaussian noise of std ``noise * conv.weight.std()`` (seeded):
        identical kernels would get identical gradients and never diverge.
        Thresholds start at 0, so every pattern starts full and the output is
        the dense conv's up to the noise (attention weights sum to 1). The
        attention net gets its usual random init; ``conv.bias`` is copied.
        """
        if conv.groups != 1:
            raise ValueError(f"conv: expected groups=1, got groups={conv.groups}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv: expected padding_mode='zeros', got {conv.padding_mode!r}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, num_patterns, temperature, bias=conv.bias is not None)
        layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            dense = conv.weight.detach()
            scale = noise * dense.std().item() if dense.numel() > 1 else noise
            jitter = torch.randn(layer.weight.shape, generator=generator, dtype=dense.dtype)
            layer.weight.copy_(dense.unsqueeze(0) + scale * jitter.to(dense.device))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def pattern_masks(self) -> Tensor:
        """``M[P, Kh, Kw]`` in {0, 1}, differentiable through the step's STE."""
        score = self.weight.abs().mean(dim=(1, 2)) - self.threshold.mean(dim=1).view(-1, 1, 1)
        return BinaryStep.apply(torch.sigmoid(score) - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        kernels = self.weight * self.pattern_masks()[:, None, None]
        return _mix(x, kernels, self.attention(x), self.bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def flops(self, input: Tensor, output: Tensor, count_zeros: bool = False,
              metric: str = "static") -> int:
        """FLOPs for one sample (``count_flops``'s protocol) by ``metric``
        (:func:`dpp_flops`): ``"static"``, the P static convs as this layer
        runs them, or ``"union"``, the paper's count on the union support.
        The attention's own 1x1 convs are Conv2d modules and count themselves."""
        return dpp_flops(self.weight * self.pattern_masks()[:, None, None], output, count_zeros,
                         metric)

    @torch.no_grad()
    def static_support(self) -> Tensor:
        """``BoolTensor[Kh, Kw]``: the union of the P patterns."""
        return self.pattern_masks().bool().any(dim=0)

    @torch.no_grad()
    def export(self) -> DPPExport:
        masks = self.pattern_masks()
        support = masks.bool().any(dim=0)
        return DPPExport(
            kernels=(self.weight * masks[:, None, None]).detach().clone(),
            masks=masks.bool(),
            support=support,
            positions=support.flatten().nonzero().flatten(),
            bias=None if self.bias is None else self.bias.detach().clone(),
            attention=copy.deepcopy(self.attention),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"num_patterns={self.num_patterns}, temperature={self.attention.temperature}, "
                f"bias={self.bias is not None}")


def _dpp_layers(model: nn.Module) -> List[DPPConv2d]:
    layers = [m for m in model.modules() if isinstance(m, DPPConv2d)]
    if not layers:
        raise ValueError("model: no DPPConv2d layer; call convert_to_dpp(model) first")
    return layers


def dpp_regularizer(model: nn.Module, alpha: float = 1e-4) -> Tensor:
    """``alpha * sum exp(-th)`` over every threshold of every DPPConv2d; add it
    to the loss."""
    return alpha * sum(torch.exp(-layer.threshold).sum() for layer in _dpp_layers(model))


@torch.no_grad()
def dpp_sparsity(model: nn.Module) -> float:
    """Pruned kernel positions / all kernel positions over the DPP layers,
    a position being one (layer, kh, kw) outside / inside the layer's static
    support (not weighted by the layer's Cout*Cin)."""
    layers = _dpp_layers(model)
    pruned = sum(int((~layer.static_support()).sum()) for layer in layers)
    total = sum(layer.kernel_size[0] * layer.kernel_size[1] for layer in layers)
    return pruned / total


def convert_to_dpp(model: nn.Module, layers: Optional[Iterable[str]] = None, num_patterns: int = 4,
                   temperature: float = 0.5, noise: float = 1e-3, seed: int = 0) -> List[str]:
    """Replace convs of ``model`` in place by :meth:`DPPConv2d.from_conv`;
    returns the replaced names.

    ``layers`` names them (exact module names); by default every 3x3, groups=1
    Conv2d except the model's first conv (the stem), which is the original's
    choice for BasicBlock ResNets: stem, 1x1 downsample convs and FC stay dense.
    Layer i (in that order) draws its noise with seed ``seed + i``.
    """
    convs = [(name, m) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    if layers is None:
        selected = [
            name for name, conv in convs[1:]
            if conv.kernel_size == (3, 3) and conv.groups == 1 and conv.padding_mode == "zeros"
        ]
    else:
        selected = list(layers)
        known = dict(convs)
        unknown = [name for name in selected if name not in known]
        if unknown:
            raise ValueError(f"layers: {unknown} are not nn.Conv2d modules of the model")
    for i, name in enumerate(selected):
        conv = model.get_submodule(name)
        model.set_submodule(name, DPPConv2d.from_conv(conv, num_patterns, temperature, noise, seed + i))
    return selected
