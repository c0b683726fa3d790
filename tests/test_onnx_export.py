"""ONNX export with the sparse convs as custom nodes: the file's layout, its
reference run against PyTorch, the loader's refusals of tampered files, and
the missing-extra message."""
import re
import sys

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

import sparsekernels as sk  # noqa: E402
import sparsekernels.onnx as skonnx  # noqa: E402
from sparsekernels.kinds import KINDS  # noqa: E402
from sparsekernels.optional import require  # noqa: E402

# The documented op types (the kinds' module class names).
OP_TYPES = {"block1xn": "Block1xNConv2d", "stripe": "StripeConv2d", "pattern": "PatternConv2d"}
# 1xN with N=4 over 6 output channels a group: a padded last block row.
KIND_PARAMS = {"block1xn": {"n": 4}, "stripe": {}, "pattern": {}}
# The sparse conv (8 -> 12 channels, 3x3) of each model, and what its node's
# conv attributes must say.
CONVS = {
    "strided": (dict(stride=2, padding=2, dilation=2, groups=2, bias=True),
                dict(strides=[2, 2], pads=[2, 2, 2, 2], dilations=[2, 2], group=2)),
    # reflect padding is a Pad node before the sparse node, which pads nothing
    "same_reflect": (dict(padding="same", dilation=(1, 2), padding_mode="reflect", bias=False),
                     dict(strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 2], group=1)),
}
HW = 16


def make_model(kind: str, conv: str, dtype: torch.dtype) -> nn.Sequential:
    """dense conv + BN + ReLU + the sparse conv + ReLU + pool + linear."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():  # not the identity BN of a fresh layer
        for t, (lo, hi) in ((bn.running_mean, (-0.5, 0.5)), (bn.running_var, (0.5, 2.0)),
                            (bn.weight, (0.5, 1.5)), (bn.bias, (-0.5, 0.5))):
            t.uniform_(lo, hi)
    dense = nn.Conv2d(8, 12, 3, **CONVS[conv][0])
    sparse = KINDS[kind].module.from_dense(dense, sparsity=0.5, **KIND_PARAMS[kind])
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), bn, nn.ReLU(), sparse, nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten())
    features = body(torch.randn(1, 3, HW, HW)).shape[1]
    return nn.Sequential(*body, nn.Linear(features, 5)).to(dtype).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(kind, conv, dtype)`` -> (model, path), each exported once."""
    cache = {}

    def get(kind, conv="strided", dtype=torch.float32):
        key = kind, conv, dtype
        if key not in cache:
            model = make_model(*key)
            path = tmp_path_factory.mktemp("onnx") / f"{kind}_{conv}.onnx"
            example = torch.randn(2, 3, HW, HW, dtype=dtype)
            cache[key] = model, skonnx.export(model, example, path)
        return cache[key]

    return get


def sparse_node(proto):
    (node,) = [n for n in proto.graph.node if n.domain == skonnx.DOMAIN]
    return node


def initializers(proto):
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


# ---- layout ----------------------------------------------------------------
@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("kind", KINDS)
def test_node_layout(exported, kind, conv):
    model, path = exported(kind, conv)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    node = sparse_node(proto)
    spec, sparse = KINDS[kind], model[3]
    assert node.op_type == OP_TYPES[kind]
    assert {o.domain: o.version for o in proto.opset_import}[skonnx.DOMAIN] == 1

    # inputs: X, the saved index tensors, values, the optional bias
    fields = [*spec.format.INDEX_TENSORS, "values"] + (["bias"] if sparse.bias is not None
                                                       else [])
    assert len(node.input) == 1 + len(fields)
    tensors = initializers(proto)
    state = {**sparse.format().state_dict(), "bias": sparse.bias}
    for field, name in zip(fields, node.input[1:]):
        assert name in tensors, f"{field} is not an initializer"
        np.testing.assert_array_equal(tensors[name], state[field].detach().numpy())
        if field in spec.format.INDEX_TENSORS:
            assert tensors[name].dtype == np.int32

    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes == {"in_channels": 8, "out_channels": 12, "kernel_shape": [3, 3],
                          **CONVS[conv][1], **KIND_PARAMS[kind]}

    # everything else is standard ONNX, the reflect pad a Pad node
    others = {n.op_type for n in proto.graph.node if n is not node}
    assert all(n.domain == "" for n in proto.graph.node if n is not node)
    assert {"Conv", "Relu", "MaxPool", "Gemm"} <= others
    assert ("Pad" in others) == (conv == "same_reflect")

    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


# ---- the reference run equals PyTorch -------------------------------------
@pytest.mark.parametrize("kind, conv, dtype", [
    *((kind, conv, "float32") for kind in KINDS for conv in CONVS),
    *((kind, "strided", "float64") for kind in KINDS),
])
def test_reference_run_matches_pytorch(exported, kind, conv, dtype):
    dtype = getattr(torch, dtype)
    model, path = exported(kind, conv, dtype)
    session = skonnx.reference_evaluator(path)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for batch in (1, 3):  # dynamic batch: neither is the example's 2
        x = torch.randn(batch, 3, HW, HW, dtype=dtype)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        assert got.dtype == want.dtype and got.shape == want.shape == (batch, 5)
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


def test_two_kinds_with_asymmetric_and_circular_padding(tmp_path):
    torch.manual_seed(1)
    first = KINDS["stripe"].module.from_dense(nn.Conv2d(3, 8, 2, padding="same"), sparsity=0.5)
    second = KINDS["block1xn"].module.from_dense(
        nn.Conv2d(8, 6, 3, padding=1, padding_mode="circular"), n=4, sparsity=0.5)
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    path = skonnx.export(model, torch.randn(1, 3, 9, 9), tmp_path / "two.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    kinds = [node.kind.slug for node in skonnx.read_sparse_convs(proto)]
    assert kinds == ["stripe", "block1xn"]
    x = torch.randn(3, 3, 9, 9)
    (got,) = skonnx.reference_evaluator(proto).run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


class _FusedBlock(nn.Module):
    """relu6(a(x)) -> relu(b(.) + x): two epilogues fuse_epilogues moves
    into the sparse convs."""

    def __init__(self, kind):
        super().__init__()
        make = lambda: KINDS[kind].module.from_dense(  # noqa: E731
            nn.Conv2d(8, 8, 3, padding=1), sparsity=0.5, **KIND_PARAMS[kind])
        self.a, self.b = make(), make()

    def forward(self, x):
        return torch.relu(self.b(nn.functional.relu6(self.a(x))) + x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_epilogues_export_as_standard_nodes(tmp_path, kind, dtype):
    """A fused conv's residual add and activation follow its sparse node as
    Add, Relu and Clip nodes (the sparse node stays the conv alone)."""
    torch.manual_seed(0)
    model = sk.fuse_epilogues(_FusedBlock(kind).to(dtype).eval())
    assert (model.a.activation, model.b.activation) == ("relu6", "relu")
    x = torch.randn(2, 8, 7, 9, dtype=dtype) * 3
    proto = onnx.load(str(skonnx.export(model, x, tmp_path / "fused.onnx")))
    ops = [n.op_type for n in proto.graph.node if n.op_type not in ("Constant", "Identity")]
    assert ops == [OP_TYPES[kind], "Clip", OP_TYPES[kind], "Add", "Relu"], ops
    for batch in (1, 3):
        x = torch.randn(batch, 8, 7, 9, dtype=dtype) * 3
        (got,) = skonnx.reference_evaluator(proto).run(None, {"input": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("kind", KINDS)
def test_loader_gives_the_modules_formats(exported, kind):
    model, path = exported(kind)
    (node,) = skonnx.read_sparse_convs(path)
    sparse = model[3]
    assert node.kind is KINDS[kind] and isinstance(node.format, KINDS[kind].format)
    for name, tensor in sparse.format().state_dict().items():
        assert torch.equal(node.format.state_dict()[name], tensor.detach())
    assert torch.equal(node.bias, sparse.bias.detach())
    x = torch.randn(2, 8, HW, HW)
    with torch.no_grad():
        torch.testing.assert_close(node.module()(x), sparse(x), rtol=0, atol=0)


# ---- tampered files are refused, naming node and field ---------------------
def tampered_tensor(proto, node, field: str, change):
    """Replace the node's ``field`` initializer by ``change(array)``."""
    spec = KINDS[next(k for k, t in OP_TYPES.items() if t == node.op_type)]
    name = node.input[1 + [*spec.format.INDEX_TENSORS, "values"].index(field)]
    for i, t in enumerate(proto.graph.initializer):
        if t.name == name:
            array = change(numpy_helper.to_array(t).copy())
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, name))


def refused(proto, node, match: str):
    """Both the loader and the reference runner refuse ``proto``."""
    pattern = rf"ONNX node {re.escape(repr(node.name))} \({node.op_type}\): {match}"
    with pytest.raises(ValueError, match=pattern):
        skonnx.read_sparse_convs(proto)
    x = np.random.default_rng(0).standard_normal((1, 3, HW, HW)).astype(np.float32)
    with pytest.raises(ValueError, match=pattern):
        skonnx.reference_evaluator(proto).run(None, {"input": x})


# Each kind's last index tensor (a column index: out of range is a wild read).
LAST_INDEX = {"block1xn": "col_idx", "stripe": "tap_idx", "pattern": "pattern_idx"}


@pytest.mark.parametrize("kind", KINDS)
def test_index_out_of_range_is_refused(exported, kind):
    proto = onnx.load(str(exported(kind)[1]))
    node = sparse_node(proto)
    field = LAST_INDEX[kind]

    def out_of_range(a):
        a[-1] = 99
        return a

    tampered_tensor(proto, node, field, out_of_range)
    refused(proto, node, rf"{field}: entry \d+ = 99 is out of range \[0, \d+\)")


@pytest.mark.parametrize("kind", KINDS)
def test_values_of_wrong_length_are_refused(exported, kind):
    proto = onnx.load(str(exported(kind)[1]))
    node = sparse_node(proto)
    tampered_tensor(proto, node, "values", lambda a: a[:-1])
    refused(proto, node, r"values: expected .*(shape|entries)")


@pytest.mark.parametrize("kind, attribute, expected", [
    *((kind, "strides", "2 ints") for kind in KINDS),
    ("block1xn", "n", "an int"),
])
def test_missing_attribute_is_refused(exported, kind, attribute, expected):
    proto = onnx.load(str(exported(kind)[1]))
    node = sparse_node(proto)
    kept = [a for a in node.attribute if a.name != attribute]
    del node.attribute[:]
    node.attribute.extend(kept)
    refused(proto, node, rf"attribute '{attribute}': missing \(expected {expected}\)")


@pytest.mark.parametrize("attribute, value, match", [
    ("pads", [2, 2, 1, 2], r"attribute 'pads': expected \[top, left, bottom, right\] with "
                           r"top == bottom"),
    ("strides", [0, 2], r"attribute 'strides': expected an int in \[1, "),
    ("strides", [2, 2, 2], r"attribute 'strides': expected 2 ints, got \[2, 2, 2\]"),
    ("group", 3, r"attribute 'group': 3 does not divide in_channels=8"),
    ("n", 0, r"n: expected an int in \[1, 4096\], got 0"),
])
def test_bad_attribute_is_refused(exported, attribute, value, match):
    proto = onnx.load(str(exported("block1xn")[1]))
    node = sparse_node(proto)
    (old,) = [a for a in node.attribute if a.name == attribute]
    old.CopyFrom(onnx.helper.make_attribute(attribute, value))
    refused(proto, node, match)


def test_unknown_attribute_and_op_type_are_refused(exported):
    proto = onnx.load(str(exported("stripe")[1]))
    node = sparse_node(proto)
    node.attribute.append(onnx.helper.make_attribute("n", 4))
    with pytest.raises(ValueError, match=r"attributes \['n'\]: unexpected"):
        skonnx.read_sparse_convs(proto)
    node.op_type = "DiagonalConv2d"
    with pytest.raises(ValueError, match=r"op type: expected one of \['Block1xNConv2d', "
                                         r"'StripeConv2d', 'PatternConv2d'\]"):
        skonnx.read_sparse_convs(proto)


def test_index_tensor_of_wrong_dtype_or_not_an_initializer_is_refused(exported):
    proto = onnx.load(str(exported("pattern")[1]))
    node = sparse_node(proto)
    tampered_tensor(proto, node, "row_ptr", lambda a: a.astype(np.int64))
    refused(proto, node, r"row_ptr: expected dtype torch.int32, got torch.int64")
    node.input[1] = node.input[0]  # the pattern library computed in the graph
    with pytest.raises(ValueError, match=r"input 'pattern_ptr' \(.*\): expected an "
                                         r"initializer"):
        skonnx.read_sparse_convs(proto)


def test_bias_of_wrong_shape_is_refused(exported):
    proto = onnx.load(str(exported("block1xn")[1]))
    node = sparse_node(proto)
    bias = node.input[-1]
    for i, t in enumerate(proto.graph.initializer):
        if t.name == bias:
            proto.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(np.ones(11, np.float32), bias))
    refused(proto, node, r"B: expected a \[12\] tensor of torch.float32")


# ---- the missing extra is named --------------------------------------------
def test_missing_onnx_names_the_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "onnx" or m.startswith("onnx.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if absent
    extra = re.escape("pip install 'sparsekernels[onnx]'")
    model = make_model("stripe", "strided", torch.float32)
    with pytest.raises(ImportError, match=extra):
        skonnx.export(model, torch.randn(1, 3, HW, HW), tmp_path / "m.onnx")
    with pytest.raises(ImportError, match=extra):
        skonnx.read_sparse_convs(tmp_path / "m.onnx")
    with pytest.raises(ImportError, match=extra):
        skonnx.reference_evaluator(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_require_names_module_and_extra():
    with pytest.raises(ImportError, match=r"'sparsekernels_no_such_module' is not installed; "
                                          r"it comes with the 'bench' extra: pip install "
                                          r"'sparsekernels\[bench\]'"):
        require("sparsekernels_no_such_module", "bench")
