"""The sparse conv node, in one place: its domain, op type, inputs and
attributes, written by the exporter and read back (validated) by the loader
and the reference runner.

A node of kind ``spec`` is ``sparsekernels::<spec.module.__name__>`` with
inputs ``X, *spec.format.INDEX_TENSORS, values[, B]`` and the attributes of
:class:`Geometry`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

from ..conv_args import ConvArgs, as_int, output_hw
from ..kinds import KINDS, KindSpec

DOMAIN = "sparsekernels"
DOMAIN_VERSION = 1

# name -> number of ints (None: one int), as nn.Conv2d and ONNX Conv name them.
CONV_ATTRIBUTES: dict[str, Optional[int]] = {
    "in_channels": None, "out_channels": None, "kernel_shape": 2, "strides": 2,
    "pads": 4, "dilations": 2, "group": None,
}


def op_type(spec: KindSpec) -> str:
    """The kind's op type: its module's class name (``Block1xNConv2d``, ...)."""
    return spec.module.__name__


def kind_of(op: str) -> KindSpec:
    """The kind whose op type is ``op``; a ValueError names the known ones."""
    for spec in KINDS.values():
        if op_type(spec) == op:
            return spec
    raise ValueError(f"op type: expected one of {[op_type(s) for s in KINDS.values()]} in "
                     f"domain {DOMAIN!r}, got {op!r}")


def format_inputs(spec: KindSpec) -> tuple[str, ...]:
    """The node's inputs after X and before the optional bias: the format's
    saved state without its ``meta`` (which the attributes carry)."""
    return (*spec.format.INDEX_TENSORS, "values")


def attribute_sizes(spec: KindSpec) -> dict[str, Optional[int]]:
    """Every attribute of a node of this kind: the conv's, then the kind's
    own parameters (one int each)."""
    return {**CONV_ATTRIBUTES, **{name: None for name in spec.format.PARAMS}}


class Geometry(NamedTuple):
    """What a node's attributes hold: the dense weight shape, the kind's
    parameters and the conv arguments (symmetric padding)."""

    weight_shape: tuple[int, int, int, int]  # [Cout, Cin/g, Kh, Kw]
    params: dict[str, int]
    conv: ConvArgs

    @classmethod
    def from_op_args(cls, spec: KindSpec, meta: Sequence[int], conv: ConvArgs) -> "Geometry":
        """From a custom op's ``meta`` (``[Cout, Cin/g, Kh, Kw, *params, groups]``)."""
        saved = dict(zip(spec.format.meta_keys(), meta))
        return cls(tuple(meta[:4]), {name: saved[name] for name in spec.format.PARAMS}, conv)

    def meta(self) -> list[int]:
        """The format's ``meta``, as its ``state_dict`` saves it."""
        return [*self.weight_shape, *self.params.values(), self.conv.groups]

    def attributes(self) -> dict[str, object]:
        cout, cin_g, kh, kw = self.weight_shape
        ph, pw = self.conv.padding
        return {"in_channels": cin_g * self.conv.groups, "out_channels": cout,
                "kernel_shape": [kh, kw], "strides": list(self.conv.stride),
                "pads": [ph, pw, ph, pw], "dilations": list(self.conv.dilation),
                "group": self.conv.groups, **self.params}

    def output_sizes(self, input_sizes: Sequence[Optional[int]]) -> list[Optional[int]]:
        """``[N, Cout, OH, OW]`` of an input ``[N, C, H, W]`` (None: unknown)."""
        n, _, h, w = input_sizes
        oh, ow = (None, None) if h is None or w is None else output_hw(
            (h, w), self.weight_shape[2:], self.conv)
        return [n, self.weight_shape[0], oh, ow]

    @classmethod
    def from_attributes(cls, spec: KindSpec, attributes: Sequence) -> "Geometry":
        """From a node's ``AttributeProto`` list: every attribute present,
        none unknown, each of its type and bounds. The kind's parameters are
        bounded by its format's own checks."""
        values = _attribute_values(spec, attributes)
        for name in ("in_channels", "out_channels", "group", "kernel_shape", "strides",
                     "dilations"):
            _bounded(name, values[name], 1)
        _bounded("pads", values["pads"], 0)
        top, left, bottom, right = values["pads"]
        if (top, left) != (bottom, right):
            raise ValueError(f"attribute 'pads': expected [top, left, bottom, right] with "
                             f"top == bottom and left == right (the conv pads symmetrically; "
                             f"an asymmetric pad is a Pad node before it), got {values['pads']}")
        cin, group = values["in_channels"], values["group"]
        if cin % group:
            raise ValueError(f"attribute 'group': {group} does not divide "
                             f"in_channels={cin}")
        conv = ConvArgs(tuple(values["strides"]), (top, left), tuple(values["dilations"]), group)
        return cls((values["out_channels"], cin // group, *values["kernel_shape"]),
                   {name: values[name] for name in spec.format.PARAMS}, conv)


def _attribute_values(spec: KindSpec, attributes: Sequence) -> dict[str, object]:
    sizes = attribute_sizes(spec)
    given = {a.name: a for a in attributes}
    unknown = sorted(set(given) - set(sizes))
    if unknown:
        raise ValueError(f"attributes {unknown}: unexpected (a {op_type(spec)} node has "
                         f"{list(sizes)})")
    values = {}
    for name, size in sizes.items():
        want = "an int" if size is None else f"{size} ints"
        if name not in given:
            raise ValueError(f"attribute {name!r}: missing (expected {want})")
        a = given[name]
        if size is None and a.type == a.INT:
            values[name] = a.i
        elif size is not None and a.type == a.INTS and len(a.ints) == size:
            values[name] = list(a.ints)
        else:
            got = list(a.ints) if a.type == a.INTS else type(a).AttributeType.Name(a.type)
            raise ValueError(f"attribute {name!r}: expected {want}, got {got}")
    return values


def _bounded(name: str, value, minimum: int) -> None:
    for item in value if isinstance(value, list) else [value]:
        as_int(item, f"attribute {name!r}", minimum)
