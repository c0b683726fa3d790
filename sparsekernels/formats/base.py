"""What every sparse conv weight format shares, whatever its kind: the dense
geometry, movement between devices and dtypes, and serialisation.

A kind's format subclasses :class:`SparseConvFormat`, names its saved index
tensors (``INDEX_TENSORS``), its own integer parameters (``PARAMS``, e.g.
N) and its kernels' view (``Topology``), takes
``(*index tensors, values, shape, *params, groups)`` in its constructor
(which validates), and builds its topology in ``_build_topology``.
"""
from __future__ import annotations

import copy
from typing import ClassVar

import torch

from ..conv_args import as_int
from .csr import check_index_tensor


class SparseConvFormat:
    INDEX_TENSORS: ClassVar[tuple[str, ...]]
    PARAMS: ClassVar[tuple[str, ...]]
    CRITERIA: ClassVar[tuple[str, ...]]  # what from_dense ranks entries by
    Topology: ClassVar[type]

    shape: tuple[int, int, int, int]  # the dense weight's [Cout, Cin/g, Kh, Kw]
    groups: int
    values: torch.Tensor

    # ---- geometry -------------------------------------------------------
    @property
    def cout(self) -> int:
        return self.shape[0]

    @property
    def cin_per_group(self) -> int:
        return self.shape[1]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    @property
    def taps(self) -> int:
        """Kernel positions Kh*Kw."""
        return self.shape[2] * self.shape[3]

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def params(self) -> dict[str, int]:
        """The kind's own parameters (what ``pruned`` and the module take)."""
        return {name: getattr(self, name) for name in self.PARAMS}

    def meta(self) -> list[int]:
        """``[Cout, Cin/g, Kh, Kw, *params, groups]``: the integers of
        ``state_dict`` and of the custom ops."""
        return [*self.shape, *self.params().values(), self.groups]

    def _validate_geometry_and_dtypes(self) -> tuple[int, int, int, int]:
        """What ``validate`` checks first for every kind: the geometry, floating
        ``values`` and int32 1-D index tensors on the values' device. Returns
        the shape."""
        if len(self.shape) != 4:
            raise ValueError(f"shape: expected [Cout, Cin/g, Kh, Kw], got {self.shape}")
        check_geometry(*self.shape, self.groups)
        v = self.values
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise TypeError(f"values: expected a floating-point torch.Tensor, got "
                            f"{getattr(v, 'dtype', type(v).__name__)}")
        for name in self.INDEX_TENSORS:
            check_index_tensor(name, getattr(self, name), v.device)
        return self.shape

    def topology(self):
        """The kernels' view (index tensors, derived ones included, and
        geometry). Cached: the topology of a format is fixed. Validated again
        before it is first derived, in case the format's tensors were
        replaced since construction (derivation allocates by index value)."""
        if self._topology is None:
            self._topology = self.validate()._build_topology()
        return self._topology

    def with_values(self, values: torch.Tensor):
        """The same topology with other ``values`` (e.g. ones that require
        grad), validated like any outside data."""
        return type(self).from_state_dict({**self.state_dict(), "values": values})

    # ---- movement and serialisation -------------------------------------
    def to(self, device=None, dtype=None):
        """A copy on ``device`` with values in ``dtype`` (indices keep theirs)."""
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
        out = copy.copy(self)  # already valid: no second validation
        for name in self.INDEX_TENSORS:
            setattr(out, name, getattr(self, name).to(device=device))
        out.values = self.values.to(device=device, dtype=dtype)
        out._topology = None
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {name: getattr(self, name) for name in self.INDEX_TENSORS}
        return {**state, "values": self.values,
                "meta": torch.tensor(self.meta(), dtype=torch.int64)}

    @classmethod
    def meta_keys(cls) -> tuple[str, ...]:
        return ("cout", "cin_per_group", "kh", "kw", *cls.PARAMS, "groups")

    @classmethod
    def from_state_dict(cls, state: dict):
        """Rebuild (and validate) a format saved with :meth:`state_dict`."""
        keys = (*cls.INDEX_TENSORS, "values", "meta")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"state_dict: missing keys {missing}")
        meta, names = state["meta"], cls.meta_keys()
        if not isinstance(meta, torch.Tensor) or meta.numel() != len(names):
            raise ValueError(f"meta: expected {len(names)} ints {names}")
        ints = meta.tolist()
        return cls(*(state[k] for k in cls.INDEX_TENSORS), state["values"], ints[:4],
                   *ints[4:-1], ints[-1])


def check_geometry(cout: int, cin_per_group: int, kh: int, kw: int, groups: int) -> None:
    """Raise unless the dense weight shape and groups are positive ints and
    ``groups`` divides the output channels."""
    as_int(groups, "groups", 1)
    for name, size in (("out_channels", cout), ("in_channels/groups", cin_per_group),
                       ("kernel height", kh), ("kernel width", kw)):
        as_int(size, f"weight shape: {name}", 1)
    if cout % groups != 0:
        raise ValueError(f"groups: {groups} does not divide out_channels={cout}")


def check_weight(weight, groups: int) -> None:
    """A dense weight an encoder may read, for a conv with ``groups``."""
    check_dense_weight(weight)
    check_geometry(*weight.shape, groups)


def with_geometry(topology: type) -> type:
    """Give a kind's topology (a NamedTuple with ``shape`` = the dense
    ``[Cout, Cin/g, Kh, Kw]`` and ``groups``) the geometry the ops read:
    ``cout``, ``cin`` (all input channels), ``kernel_size``, ``taps``."""
    topology.cout = property(lambda self: self.shape[0])
    topology.cin = property(lambda self: self.shape[1] * self.groups)
    topology.kernel_size = property(lambda self: (self.shape[2], self.shape[3]))
    topology.taps = property(lambda self: self.shape[2] * self.shape[3])
    return topology


def topology_from_op_args(topology: type, format_cls: type, tensors, meta,
                          check=check_geometry):
    """A kind's topology from a custom op's arguments (its ``TENSORS`` and
    ``meta`` = ``[Cout, Cin/g, Kh, Kw, *params, groups]``), every integer
    bounded by ``check(*meta)`` (the tensors' contents are checked before any
    kernel, see ops/checks.py)."""
    if len(tensors) != len(topology.TENSORS):
        raise ValueError(f"topology: expected {len(topology.TENSORS)} tensors "
                         f"{topology.TENSORS}, got {len(tensors)}")
    keys = format_cls.meta_keys()
    if len(meta) != len(keys):
        raise ValueError(f"meta: expected {len(keys)} ints {keys}, got {len(meta)}")
    check(*meta)
    cout, cin_g, kh, kw, *params, groups = meta
    return topology(*tensors, (cout, cin_g, kh, kw), *params, groups)


def check_dense_weight(weight) -> None:
    """Raise unless ``weight`` is a floating 4-D ``[Cout, Cin/g, Kh, Kw]`` tensor."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight: expected 4-D [Cout, Cin/g, Kh, Kw], got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"weight: expected a floating dtype, got {weight.dtype}")
