"""``DynamicPatternConv2d``: a trained DPPNet layer (``pruning.dppnet``) run at
the cost of its static support.

DPPNet's per-sample kernel ``W_b[o] = sum_p a[b, p, o] * (M_p * W_p)[o]`` is
zero outside the union ``U = union_p M_p`` of its P patterns, for every
sample. This module keeps the P masked kernels compacted to U
(``kernels[P, Cout, Cin, |U|]``), U's flat positions (``taps``, ``kh * Kw +
kw``, increasing), the attention net and the bias, and computes

* ``"mixed"`` (seeds.md 6.3 (a)): per sample, mix the weights on U only
  (``W[B, Cout, Cin*|U|]``: ``2 P Cout Cin |U|`` FLOPs) and multiply them
  with the input at U's taps: ``2 Cout Cin |U| OH OW`` FLOPs a sample, i.e.
  ``|U| / (Kh Kw)`` of the dense conv, plus the mix and the attention. At
  stride 1 in inference each tap's input is a strided view of the padded
  input (no copy: |U| batched GEMMs of depth Cin accumulating in place, see
  :meth:`_mixed_shifted`); otherwise (or under autograd) as
  ``"mixed_gather"``;
* ``"mixed_gather"``: the same per-sample weights, the input gathered at U's
  taps (pad once, ``|U|`` strided slices: ``cols[B, Cin*|U|, OH*OW]``) and
  one batched GEMM of depth ``Cin*|U|``;
* ``"static"`` (6.3 (b) on U): the same gather, one GEMM with the P static
  kernels shared by the batch (``P Cout`` rows) and the attention-weighted
  sum: ``P |U| / (Kh Kw)`` of the dense conv;
* ``"pconv"``: the training layer's own computation (one ``F.conv2d`` with
  ``P Cout`` outputs on the full ``Kh x Kw`` kernels, then the sum).

``mode="auto"`` (the default) is ``"mixed"``, also when no position is
pruned (``|U| = Kh Kw``): nothing is saved over the dense conv then, but the
mixed path still does 1 x the dense FLOPs plus the mix where ``"pconv"``
does P x, and it was the faster of the two in every ``bench dpp --taps 9``
smoke run (CIFAR shapes, batch 8 and 64). ``"static"`` does P x the mixed
path's FLOPs in one GEMM shared by the batch and never beat ``"mixed"`` at
those shapes; ``"pconv"`` and ``"static"`` stay selectable to compare.
All paths give the same output; autograd gives each its backward (the
gather's backward is a strided add into the padded gradient): in the smoke
runs forward+backward cost 4-6 x the forward, about the dense conv's ratio.

The layer's FLOPs (:meth:`flops`) are reported by both of DPPNet's metrics,
as :meth:`DPPConv2d.flops` does: ``"static"`` (the P convs) and ``"union"``
(the paper's: the union support, the mix and the attention).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..conv_args import resolve_conv_args
from ..pruning.dppnet import DPPConv2d, DPPExport, PatternAttention, _mix, dpp_flops, FLOP_METRICS

MODES = ("auto", "mixed", "mixed_gather", "static", "pconv")
DEFAULT_CHUNK_BYTES = 1 << 21


class DynamicPatternConv2d(nn.Module):
    """A DPPNet layer computed on its static support U (see the module doc).

    Build it with :meth:`from_dpp` (from a :class:`DPPConv2d` or its
    :class:`DPPExport`); the constructor makes an empty layer of ``num_taps``
    positions whose ``load_state_dict`` checks the saved ``taps`` and
    ``kernels`` before taking them.
    """

    FLOP_METRICS = FLOP_METRICS

    def __init__(self, in_channels: int, out_channels: int, kernel_size, num_taps: int,
                 num_patterns: int, stride=1, padding: Union[int, tuple, str] = 0, dilation=1,
                 temperature: float = 0.5, bias: bool = False, mode: str = "auto"):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        positions = self.kernel_size[0] * self.kernel_size[1]
        if not 0 <= num_taps <= positions:
            raise ValueError(f"num_taps: expected an int in [0, {positions}], got {num_taps}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_patterns, self.num_taps = num_patterns, num_taps
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        conv, (eh, ew) = resolve_conv_args(stride, padding, dilation, 1, self.kernel_size)
        (ph, pw) = conv.padding
        self._pad = (pw, pw + ew, ph, ph + eh)  # F.pad's (left, right, top, bottom)
        self.mode = mode
        # Samples per gather+GEMM step: as many as keep their gathered input
        # under this many bytes (0: the whole batch at once).
        self.chunk_bytes = DEFAULT_CHUNK_BYTES
        self.kernels = nn.Parameter(torch.zeros(num_patterns, out_channels, in_channels, num_taps))
        self.register_buffer("taps", torch.arange(num_taps, dtype=torch.long))
        self.attention = PatternAttention(in_channels, out_channels, num_patterns, temperature)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._set_taps(self.taps)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dpp(cls, layer: Union[DPPConv2d, DPPExport], mode: str = "auto") -> "DynamicPatternConv2d":
        """The layer computing what ``layer`` (a DPPConv2d or its export)
        computes, on its static support only."""
        exported = layer.export() if isinstance(layer, DPPConv2d) else layer
        kernels = exported.kernels.detach()
        num_patterns, cout, cin, kh, kw = kernels.shape
        positions = exported.positions.to(device=kernels.device, dtype=torch.long)
        module = cls(cin, cout, (kh, kw), positions.numel(), num_patterns, exported.stride,
                     exported.padding, exported.dilation, exported.attention.temperature,
                     exported.bias is not None, mode)
        module = module.to(device=kernels.device, dtype=kernels.dtype)
        with torch.no_grad():
            module.kernels.copy_(kernels.flatten(3)[..., positions])
            module.taps.copy_(positions)
            if exported.bias is not None:
                module.bias.copy_(exported.bias)
        module.attention.load_state_dict(exported.attention.state_dict())
        module._set_taps(module.taps)
        return module

    def _set_taps(self, taps: Tensor) -> None:
        kw = self.kernel_size[1]
        self._taps = [(int(t) // kw, int(t) % kw) for t in taps.tolist()]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        check_state(state_dict, prefix, self.num_patterns, self.out_channels, self.in_channels,
                    self.kernel_size, self.num_taps)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._set_taps(self.taps)

    # ---- computation ----------------------------------------------------------------
    def resolved_mode(self) -> str:
        """The path :meth:`forward` takes (``mode`` with ``"auto"`` decided)."""
        if self.mode != "auto":
            return self.mode
        return "mixed"

    def gather(self, x: Tensor) -> tuple[Tensor, int, int]:
        """``cols[B, Cin*|U|, OH*OW]`` (row ``i*|U| + u``: channel i at tap u),
        and (OH, OW)."""
        xp = F.pad(x, self._pad) if any(self._pad) else x
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"input: {tuple(x.shape[2:])} is smaller than the kernel "
                             f"{self.kernel_size} (dilation {self.dilation}) after padding")
        slices = [xp[:, :, r * dh:r * dh + sh * (oh - 1) + 1:sh, c * dw:c * dw + sw * (ow - 1) + 1:sw]
                  for r, c in self._taps]
        cols = torch.stack(slices, dim=2) if slices else xp.new_zeros(x.shape[0], x.shape[1], 0, oh, ow)
        return cols.view(x.shape[0], -1, oh * ow), oh, ow

    def mixed_weights(self, attn: Tensor, kernels_by_output: Optional[Tensor] = None) -> Tensor:
        """``W[B, Cout, Cin*|U|]``: each sample's kernels on U. One small GEMM
        per output channel o: ``a[:, :, o] @ kernels[:, o]`` (``[B, P] @ [P,
        Cin*|U|]``); ``kernels_by_output`` is ``[Cout, P, Cin*|U|]`` if the
        caller already has it."""
        if kernels_by_output is None:
            kernels_by_output = self.kernels.flatten(2).transpose(0, 1)
        return torch.bmm(attn.permute(2, 0, 1), kernels_by_output).transpose(0, 1)

    def dense_kernels(self) -> Tensor:
        """``[P, Cout, Cin, Kh, Kw]``: the masked kernels, zeros outside U."""
        full = self.kernels.new_zeros(*self.kernels.shape[:3], self.kernel_size[0] * self.kernel_size[1])
        full = full.index_copy(3, self.taps, self.kernels)
        return full.view(*self.kernels.shape[:3], *self.kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input: expected [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        attn = self.attention(x)
        mode = self.resolved_mode()
        if mode == "pconv":
            return _mix(x, self.dense_kernels(), attn, self.bias, self.stride, self.padding,
                        self.dilation)
        batch = x.shape[0]
        if mode == "mixed" and self.stride == (1, 1) and not _needs_grad(x, self):
            return self._mixed_shifted(x, attn)
        # Mix, gather and multiply a few samples at a time, so that a chunk's
        # columns (|U| x its input) and weights stay in cache from the gather
        # to the GEMM.
        per_sample = x[0].numel() * max(self.num_taps, 1) * x.element_size()
        step = batch if not self.chunk_bytes else max(1, min(batch, self.chunk_bytes // per_sample))
        flat = self.kernels.flatten(2)  # [P, Cout, Cin*|U|]
        by_output = flat.transpose(0, 1).contiguous() if mode != "static" else None
        outs = []
        for start in range(0, batch, step):
            cols, oh, ow = self.gather(x[start:start + step])
            a = attn[start:start + step]
            if mode != "static":
                outs.append(torch.bmm(self.mixed_weights(a, by_output), cols))
            else:  # static: P*Cout rows shared by the batch, then the attention-weighted sum
                z = torch.matmul(flat.flatten(0, 1), cols)
                z = z.view(cols.shape[0], self.num_patterns, self.out_channels, oh * ow)
                outs.append(torch.einsum("bpol,bpo->bol", z, a))
        out = (outs[0] if len(outs) == 1 else torch.cat(outs)).view(batch, self.out_channels, oh, ow)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    @torch.no_grad()
    def _mixed_shifted(self, x: Tensor, attn: Tensor) -> Tensor:
        """The mixed path at stride 1 without the gather: on the padded
        input's flat rows (length Wp), tap (r, c) of output q reads element
        ``q + r*dh*Wp + c*dw``, so the tap's input is a plain strided
        ``[Cin, L]`` view (no copy) and the output on the padded-width grid
        is ``sum_u W_u[b] @ view_u[b]``: |U| batched GEMMs of depth Cin
        accumulating in place; the Wp - OW pad columns are dropped at the end.
        Inference only (``forward`` takes the gather path under autograd)."""
        xp = F.pad(x, self._pad) if any(self._pad) else x.contiguous()
        batch, cin, hp, wp = xp.shape
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        oh, ow = hp - dh * (kh - 1), wp - dw * (kw - 1)
        if oh < 1 or ow < 1:
            raise ValueError(f"input: {tuple(x.shape[2:])} is smaller than the kernel "
                             f"{self.kernel_size} (dilation {self.dilation}) after padding")
        cout, taps = self.out_channels, self.num_taps
        length = (oh - 1) * wp + ow  # the last valid output; further rows would read past the end
        # per-sample weights, tap-major: [B, Cout, |U|*Cin]
        tap_major = self.kernels.permute(1, 0, 3, 2).reshape(cout, self.num_patterns, taps * cin)
        out = xp.new_empty(batch, cout, oh * wp)
        per_sample = (xp[0].numel() + cout * oh * wp) * xp.element_size()
        step = batch if not self.chunk_bytes else max(1, min(batch, self.chunk_bytes // per_sample))
        for start in range(0, batch, step):
            part = xp[start:start + step]
            n = part.shape[0]
            weights = torch.bmm(attn[start:start + step].permute(2, 0, 1), tap_major).transpose(0, 1)
            acc = out[start:start + step, :, :length]
            for u, (r, c) in enumerate(self._taps):
                view = part.as_strided((n, cin, length), (cin * hp * wp, hp * wp, 1),
                                       part.storage_offset() + r * dh * wp + c * dw)
                w_u = weights[:, :, u * cin:(u + 1) * cin]
                acc.baddbmm_(w_u, view, beta=0 if u == 0 else 1)  # beta=0: acc not read
        if not taps:
            out.zero_()
        out = out.view(batch, cout, oh, wp)[..., :ow].contiguous()
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    @torch.no_grad()
    def flops(self, input: Tensor, output: Tensor, count_zeros: bool = False,
              metric: str = "static") -> int:
        """FLOPs for one sample, by ``metric`` as :meth:`DPPConv2d.flops`
        (the attention's 1x1 convs count themselves)."""
        kernels = self.dense_kernels()
        return dpp_flops(kernels, output, count_zeros, metric)

    def extra_repr(self) -> str:
        taps = [r * self.kernel_size[1] + c for r, c in self._taps]
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"num_patterns={self.num_patterns}, taps={taps}, mode={self.mode!r} "
                f"({self.resolved_mode()}), bias={self.bias is not None}")


def _needs_grad(x: Tensor, module: nn.Module) -> bool:
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in module.parameters()))


def check_state(state: dict, prefix: str, num_patterns: int, cout: int, cin: int,
                kernel_size: Sequence[int], num_taps: Optional[int] = None) -> int:
    """Check a saved layer's ``taps`` (distinct increasing ints in ``[0,
    Kh*Kw)``) and ``kernels`` (``[P, Cout, Cin, |U|]``) before anything is
    built from them; returns ``|U|``. A ``ValueError`` names the field."""
    positions = kernel_size[0] * kernel_size[1]
    taps, kernels = state.get(f"{prefix}taps"), state.get(f"{prefix}kernels")
    if (not isinstance(taps, Tensor) or taps.dim() != 1 or taps.is_floating_point()
            or taps.dtype == torch.bool or taps.is_complex() or taps.numel() > positions):
        raise ValueError(f"state_dict: {prefix}taps: expected a 1-D integer tensor of at most "
                         f"{positions} positions of a {tuple(kernel_size)} kernel")
    if taps.numel() and (int(taps.min()) < 0 or int(taps.max()) >= positions
                         or (taps.numel() > 1 and not bool((taps[1:] > taps[:-1]).all()))):
        raise ValueError(f"state_dict: {prefix}taps: expected distinct increasing positions in "
                         f"[0, {positions}), got {taps.tolist()}")
    want = (num_patterns, cout, cin, taps.numel())
    if not isinstance(kernels, Tensor) or tuple(kernels.shape) != want:
        got = tuple(kernels.shape) if isinstance(kernels, Tensor) else type(kernels).__name__
        raise ValueError(f"state_dict: {prefix}kernels: expected [P, Cout, Cin, |U|] = {list(want)}, "
                         f"got {got}")
    if num_taps is not None and taps.numel() != num_taps:
        raise ValueError(f"state_dict: {prefix}taps: {taps.numel()} positions, the layer was "
                         f"built for {num_taps}")
    return taps.numel()
