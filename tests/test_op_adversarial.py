"""Adversarial inputs at every entry point of the 1xN op: the custom ops, the
compiled ``_C`` functions, the module and ``sparsify``. Each case must end in
a clear ValueError/TypeError (or nn's "size mismatch" RuntimeError), never a
crash, an out-of-bounds access or a silently wrong result.

Under ``scripts/sanitize.sh`` this file runs against an AddressSanitizer /
UBSan build of the extension, which turns any out-of-bounds access the checks
miss into a failure.
"""
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sparsekernels as sk
from sparsekernels import Block1xN
from sparsekernels._ext import C
from sparsekernels.activation import NO_CLAMP
from sparsekernels.nn import Block1xNConv2d
from sparsekernels.ops import backends

OPS = torch.ops.sparsekernels
BACKENDS = ["cpu", "reference"] + (
    ["triton"] if backends.triton_available() and backends._triton_runs_on(torch.device("cpu"))
    else []
)
INT32_MAX = 2**31 - 1


def _operands(cout=8, cin=6, groups=2, n=4, batch=2, hw=5):
    weight = torch.randn(cout, cin // groups, 3, 3)
    weight[:n] += 10  # the first block row keeps all its blocks (2 are pruned elsewhere)
    fmt = Block1xN.from_dense(weight, n, 2 / 6, groups=groups)
    topo = fmt.topology()
    x = torch.randn(batch, cin, hw, hw)
    out = F.conv2d(x, fmt.to_dense(), padding=1, groups=groups)
    return dict(
        x=x, grad_out=torch.randn_like(out), values=fmt.values.clone(), bias=torch.randn(cout),
        row_ptr=topo.row_ptr.clone(), col_idx=topo.col_idx.clone(), col_ptr=topo.col_ptr.clone(),
        block_idx=topo.block_idx.clone(), block_row=topo.block_row.clone(), n=n,
        cout=cout, cin_g=cin // groups, stride=[1, 1], padding=[1, 1], dilation=[1, 1],
        groups=groups,
    )


def _topology(a):
    return a.get("topology", [a[k] for k in ("row_ptr", "col_idx", "col_ptr", "block_idx",
                                             "block_row")])


def _meta(a):
    return a.get("meta", [a["cout"], a["cin_g"], 3, 3, a["n"], a["groups"]])


def _conv(a, backend):
    return dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
                groups=a["groups"], backend=backend)


def _forward(a, backend):
    return OPS.block1xn_conv2d(a["x"], a["values"], _topology(a), _meta(a), a["bias"],
                               **_conv(a, backend))


def _grad_input(a, backend):
    return OPS.block1xn_conv2d_grad_input(a["grad_out"], a["values"], _topology(a), _meta(a),
                                          input_hw=list(a["x"].shape[2:]), **_conv(a, backend))


def _grad_weight(a, backend):
    return OPS.block1xn_conv2d_grad_weight(a["x"], a["grad_out"], _topology(a), _meta(a),
                                           **_conv(a, backend))


PASSES = {"forward": _forward, "grad_input": _grad_input, "grad_weight": _grad_weight}


def _set(key, index, value):
    def change(a):
        a[key][index] = value
    return change


def _put(key, value):
    def change(a):
        a[key] = value(a) if callable(value) else value
    return change


# (what is wrong, the argument the error must name, passes that read it)
ALL = tuple(PASSES)
CORRUPTIONS = [
    ("col_idx past the group", "col_idx", _set("col_idx", 0, 3), ALL),
    ("col_idx huge", "col_idx", _set("col_idx", -1, INT32_MAX), ALL),
    ("col_idx negative", "col_idx", _set("col_idx", 1, -1), ALL),
    ("col_idx unsorted", "col_idx", _put("col_idx", lambda a: a["col_idx"][[1, 0, 2, 3]]), ALL),
    ("col_idx int64", "col_idx", _put("col_idx", lambda a: a["col_idx"].long()), ALL),
    ("col_idx strided", "col_idx",
     _put("col_idx", lambda a: a["col_idx"].repeat_interleave(2)[::2]), ALL),
    ("row_ptr starts at 1", "row_ptr", _set("row_ptr", 0, 1), ALL),
    ("row_ptr overruns", "row_ptr", _set("row_ptr", -1, 10**6), ALL),
    ("row_ptr decreases", "row_ptr", _set("row_ptr", 1, -5), ALL),
    ("row_ptr short", "row_ptr", _put("row_ptr", lambda a: a["row_ptr"][:-1].clone()), ALL),
    ("col_ptr overruns", "col_ptr", _set("col_ptr", 1, 10**6), ("grad_input",)),
    ("col_ptr short", "col_ptr", _put("col_ptr", lambda a: a["col_ptr"][:-1].clone()),
     ("grad_input",)),
    ("block_idx out of range", "block_idx", _set("block_idx", 0, 10**6), ("grad_input",)),
    ("block_idx permuted", "block_idx", _put("block_idx", lambda a: a["block_idx"].flip(0)),
     ("grad_input",)),
    ("block_row out of range", "block_row", _set("block_row", 0, -3), ("grad_input",)),
    ("block_row short", "block_row", _put("block_row", lambda a: a["block_row"][1:].clone()),
     ("grad_input",)),
    ("n wrong", "values|row_ptr", _put("n", 2), ALL),
    ("n zero", "n", _put("n", 0), ALL),
    ("n narrows to 4 in int32", "n", _put("n", 2**32 + 4), ALL),
    ("meta short", "meta", _put("meta", [8, 3, 3, 3, 4]), ALL),
    ("topology short", "topology", _put("topology", lambda a: _topology(a)[:4]), ALL),
    ("groups zero", "groups", _put("groups", 0), ALL),
    ("groups narrows to 2 in int32", "groups", _put("groups", 2**32 + 2), ALL),
    ("groups does not divide", "groups", _put("groups", 3), ALL),
    ("values short", "values", _put("values", lambda a: a["values"][1:].clone()),
     ("forward", "grad_input")),
    ("values of another N", "values", _put("values", lambda a: a["values"][..., :2].clone()),
     ("forward", "grad_input")),
    ("values float64", "values", _put("values", lambda a: a["values"].double()),
     ("forward", "grad_input")),
    ("bias short", "bias", _put("bias", lambda a: a["bias"][:3].clone()), ("forward",)),
    ("input with fewer channels", "input|col_idx", _put("x", lambda a: a["x"][:, :2].clone()),
     ("forward", "grad_weight")),
    ("in_channels too small", "col_idx|input", _put("cin_g", 1), ALL),
    ("out_channels other", "bias|grad_out|values", _put("cout", 4), ALL),
    ("stride narrows to 0 in int32", "stride", _put("stride", [2**32, 1]), ALL),
    ("stride huge", "stride", _put("stride", [1, 2**62]), ALL),
    ("padding narrows", "padding", _put("padding", [2**32 + 1, 1]), ALL),
    ("dilation zero", "dilation", _put("dilation", [0, 1]), ALL),
    ("stride of 3 entries", "stride", _put("stride", [1, 1, 1]), ALL),
    ("grad_out of another size", "grad_out",
     _put("grad_out", lambda a: a["grad_out"][..., :-1].clone()), ("grad_input", "grad_weight")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what,arg,corrupt,passes", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_custom_ops_refuse_corrupt_operands(backend, what, arg, corrupt, passes):
    for name in passes:
        a = _operands()
        PASSES[name](a, backend)  # intact: runs
        corrupt(a)
        with pytest.raises((ValueError, TypeError), match=arg):
            PASSES[name](a, backend)


# The _C functions take plain ints, not the custom ops' meta list, and read the
# channel counts from their tensors except grad-input's in_channels.
NOT_C_ARGUMENTS = ("meta short", "topology short", "out_channels other")
C_PASSES = {"in_channels too small": ("grad_input",)}


def test_compiled_functions_refuse_corrupt_operands():
    """``sparsekernels._C`` is reachable too: it checks on its own."""
    for what, arg, corrupt, passes in CORRUPTIONS:
        if what in NOT_C_ARGUMENTS:
            continue
        a = _operands()
        corrupt(a)
        n, cout, groups, cin = a["n"], a["cout"], a["groups"], a["cin_g"] * a["groups"]
        rows = 1 if min(n, groups) < 1 else -(-(cout // groups) // n)
        conv = (a["stride"], a["padding"], a["dilation"], groups)
        calls = {
            "forward": lambda: C.block1xn_forward(
                a["x"], a["values"], a["row_ptr"], a["col_idx"], a["bias"], n, rows, cout,
                *conv, *NO_CLAMP, None),
            "grad_input": lambda: C.block1xn_grad_input(
                a["grad_out"], a["values"], a["row_ptr"], a["col_idx"], a["col_ptr"],
                a["block_idx"], a["block_row"], n, rows, cin, 5, 5, *conv),
            "grad_weight": lambda: C.block1xn_grad_weight(
                a["x"], a["grad_out"], a["row_ptr"], a["col_idx"], n, rows, 3, 3, *conv),
        }
        for name in C_PASSES.get(what, passes):
            with pytest.raises((ValueError, TypeError), match=arg):
                calls[name]()


def test_compiled_functions_refuse_a_wrong_row_count():
    a = _operands()
    with pytest.raises(ValueError, match="rows_per_group"):
        C.block1xn_forward(a["x"], a["values"], a["row_ptr"], a["col_idx"], a["bias"],
                           a["n"], 7, a["cout"], a["stride"], a["padding"], a["dilation"],
                           a["groups"], *NO_CLAMP, None)


def test_fully_pruned_layer_with_huge_n_is_refused_not_uninitialised():
    a = _operands()
    a["n"] = 2**40
    a["row_ptr"] = torch.zeros(3, dtype=torch.int32)
    a["col_idx"] = a["block_idx"] = a["block_row"] = torch.zeros(0, dtype=torch.int32)
    a["values"] = torch.zeros(0, 3, 3, 2**40 % 2**31)
    with pytest.raises(ValueError, match="n: expected an int in"):
        _forward(a, "cpu")
    with pytest.raises(ValueError, match="n: expected an int in"):
        Block1xN.pruned((8, 3, 3, 3), 2**40)


def test_fake_kernel_refuses_what_the_real_one_refuses():
    from torch._subclasses.fake_tensor import FakeTensorMode

    a = _operands()
    a["stride"] = [2**32, 1]
    with FakeTensorMode(allow_non_fake_inputs=True):
        with pytest.raises(ValueError, match="stride"):
            _forward(a, "cpu")


# ---- the public function: integer-like arguments as F.conv2d takes them -------
x = torch.randn(2, 4, 7, 7)
fmt = Block1xN.from_dense(torch.randn(8, 4, 3, 3), 4, 0.5)


@pytest.mark.parametrize("stride", [np.int64(2), torch.tensor(2), (np.int32(2), 2)])
def test_integer_like_conv_arguments_are_accepted(stride):
    want = F.conv2d(x, fmt.to_dense(), stride=2)
    torch.testing.assert_close(sk.block1xn_conv2d(x, fmt, stride=stride), want)


@pytest.mark.parametrize("arg,value", [
    ("stride", 1.0), ("stride", None), ("padding", 1.5), ("dilation", torch.tensor(1.0)),
    ("stride", True), ("groups", 1.0), ("groups", None),
])
def test_non_integer_conv_arguments_name_the_argument(arg, value):
    with pytest.raises(TypeError, match=f"{arg}: expected an int"):
        sk.block1xn_conv2d(x, fmt, **{arg: value})


@pytest.mark.parametrize("arg,value", [("stride", 2**32), ("padding", 2**31), ("dilation", 2**40)])
def test_huge_conv_arguments_are_refused(arg, value):
    with pytest.raises(ValueError, match=f"{arg}: expected an int in"):
        sk.block1xn_conv2d(x, fmt, **{arg: value})


@pytest.mark.parametrize("call", [
    lambda: Block1xNConv2d(4, 8, 3, groups=0),
    lambda: Block1xNConv2d(4, 8, 3, n=0),
    lambda: sk.sparsify(torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3)), n=0),
    lambda: Block1xN.from_dense(torch.randn(8, 4, 3, 3), 4, 0.5, groups=0),
    lambda: Block1xN.pruned((8, 4, 3.5, 3), 4),
    lambda: Block1xN.from_state_dict({**fmt.state_dict(),
                                      "meta": fmt.state_dict()["meta"].double()}),
], ids=["module groups=0", "module n=0", "sparsify n=0", "format groups=0", "float shape",
        "float meta"])
def test_zero_or_float_sizes_get_a_clear_error(call):
    with pytest.raises((ValueError, TypeError), match=r"(n|groups|shape|height): expected an int"):
        call()


# ---- the module ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
@pytest.mark.parametrize("padding", ["same", "valid", 2, (1, 2)])
def test_non_zero_padding_modes_match_conv2d(mode, padding):
    conv = torch.nn.Conv2d(4, 8, (3, 4), padding=padding, padding_mode=mode, dilation=(1, 2))
    sparse = Block1xNConv2d.from_dense(conv, n=4, sparsity=0.5)
    dense = sparse.to_dense()
    assert dense.padding_mode == mode
    inp = torch.randn(2, 4, 9, 10)
    torch.testing.assert_close(sparse(inp), dense(inp), atol=1e-5, rtol=1e-5)


def test_module_on_meta_device():
    mod = Block1xNConv2d(4, 8, 3, padding=1, n=4, device="meta")
    out = mod(torch.empty(2, 4, 6, 6, device="meta"))
    assert out.shape == (2, 8, 6, 6) and out.device.type == "meta"
    real = Block1xNConv2d.from_dense(torch.nn.Conv2d(4, 8, 3, padding=1), n=4, sparsity=0.5)
    moved = real.to("meta")
    assert moved(torch.empty(1, 4, 5, 5, device="meta")).shape == (1, 8, 5, 5)


@pytest.mark.parametrize("other", [dict(in_channels=6), dict(out_channels=7), dict(n=2),
                                   dict(kernel_size=1)])
def test_state_from_a_layer_of_another_shape_is_a_size_mismatch(other):
    kw = dict(in_channels=4, out_channels=8, kernel_size=3, n=4)
    src = Block1xNConv2d.from_dense(
        torch.nn.Conv2d(**{k: v for k, v in {**kw, **other}.items() if k != "n"}),
        n={**kw, **other}["n"], sparsity=0.5)
    dst = Block1xNConv2d(**kw)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(RuntimeError, match="size mismatch"):
        dst.load_state_dict(src.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):
        dst.load_state_dict(src.state_dict(), strict=False)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("keys", [["col_idx"], ["row_ptr"], ["row_ptr", "col_idx"],
                                  ["col_idx", "values", "meta"]])
def test_partial_topology_load_is_refused(keys):
    src = Block1xNConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), n=4, sparsity=0.25)
    dst = Block1xNConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), n=4, sparsity=0.75)
    state = {k: v for k, v in src.state_dict().items() if k in keys}
    with pytest.raises(ValueError, match="loaded together"):
        dst.load_state_dict(state, strict=False)
    inp = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(dst(inp), dst.to_dense()(inp), atol=1e-5, rtol=1e-5)


def test_values_alone_load_keeps_the_topology():
    mod = Block1xNConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), n=4, sparsity=0.5)
    values = torch.randn_like(mod.values)
    mod.load_state_dict({"values": values}, strict=False)
    assert torch.equal(mod.values, values)


def test_buffers_edited_after_construction_never_reach_a_kernel():
    mod = Block1xNConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), n=4, sparsity=0.5)
    with torch.no_grad():
        mod.col_idx[0] = 100
    for backend in BACKENDS:
        mod.backend = backend
        with pytest.raises(ValueError, match="col_idx"):
            mod(torch.randn(1, 4, 5, 5))


def test_format_tensors_replaced_after_construction_are_checked_before_use():
    """Deriving the transposed topology allocates by index value: a huge
    col_idx swapped in after validation must not reach it (or a kernel)."""
    for use in (lambda f: sk.block1xn_conv2d(torch.randn(1, 4, 5, 5), f),
                lambda f: Block1xNConv2d.from_format(f)):
        f = Block1xN.from_dense(torch.randn(8, 4, 3, 3), 4, 0.5)
        f.col_idx = f.col_idx.clone()
        f.col_idx[0] = 2**30
        with pytest.raises(ValueError, match="col_idx: entry 0 = 1073741824 is out of range"):
            use(f)


# ---- sparsify -----------------------------------------------------------------
def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))


@pytest.mark.parametrize("kwargs,message", [
    (dict(sparsity={"0": 0.5, "2": 1.5}), "sparsity: expected a number in"),
    (dict(sparsity="half"), "sparsity: expected a number in"),
    (dict(criterion="l2"), "criterion"),
    (dict(backend="gpu"), "backend"),
    (dict(n=3, pad_partial=True, sparsity={"0": 0.5, "2": -0.1}), "sparsity"),
])
def test_sparsify_validates_before_touching_the_model(kwargs, message):
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        sk.sparsify(model, **{"n": 4, **kwargs})
    assert all(type(m) is not Block1xNConv2d for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_sparsify_keeps_a_shared_conv_shared():
    model = _net()
    model.add_module("again", model[2])  # one conv under two names
    sk.sparsify(model, n=4, sparsity=0.5)
    assert isinstance(model[2], Block1xNConv2d) and model.again is model[2]
    with pytest.raises(ValueError, match="matches different levels"):
        sk.sparsify(_shared_net(), n=4, sparsity={"2": 0.5, "again": 0.25})


def _shared_net():
    model = _net()
    model.add_module("again", model[2])
    return model


# ---- the Triton backend under the interpreter -------------------------------------
triton_only = pytest.mark.skipif("triton" not in BACKENDS, reason="needs the Triton interpreter")


@triton_only
def test_triton_interpreter_refuses_bfloat16():
    f = fmt.to(dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 does not run under the Triton interpreter"):
        sk.block1xn_conv2d(x.bfloat16(), f, backend="triton")


@triton_only
def test_triton_interpreter_from_two_threads():
    want = sk.block1xn_conv2d(x, fmt, backend="reference")
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(sk.block1xn_conv2d(x, fmt, backend="triton"))
        except Exception as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 6
    for out in results:
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["block1xn", "stripe", "pattern"])
@pytest.mark.parametrize("backend", ["cpu", "cuda", "triton", "reference"])
def test_index_tensors_on_another_device_than_the_activations_are_refused(kind, backend):
    """Review P2: CPU index tensors with CUDA activations would hand a kernel
    host pointers (a sticky illegal address). No GPU here, so the index
    tensors go to the meta device instead; every pass's checks (those the op
    bodies run, for every backend) must refuse them by name, before any
    backend. The dispatcher would route a meta argument to the fake kernel,
    so the checks are called as the op bodies call them."""
    import importlib

    from sparsekernels.conv_args import ConvArgs
    from sparsekernels.ops.checks import KindChecks
    from sparsekernels.testing import make_case

    case = make_case(kind=kind, dtype=torch.float32, device="cpu")
    w, conv = case.weight, ConvArgs(case.stride, case.padding, case.dilation, case.groups)
    topo = w.topology()
    on_meta = type(topo)(*(getattr(topo, n).to("meta") for n in topo.TENSORS), w.shape,
                         *w.params().values(), w.groups)
    checks = KindChecks(native_check=importlib.import_module(f"sparsekernels.ops.{kind}")._native_check)
    go = torch.randn(F.conv2d(case.x, w.to_dense(), None, case.stride, case.padding,
                              case.dilation, case.groups).shape)
    first = topo.TENSORS[0]
    for call in (lambda: checks.check_forward(backend, case.x, w.values, on_meta, None, conv),
                 lambda: checks.check_grad_input(backend, go, w.values, on_meta, conv,
                                                 tuple(case.x.shape[2:])),
                 lambda: checks.check_grad_weight(backend, case.x, go, on_meta, conv)):
        with pytest.raises(ValueError, match=f"{first}: expected a tensor on cpu, got meta"):
            call()


def test_compiled_forward_refuses_a_bad_residual():
    a = _operands()
    rows = -(-(a["cout"] // a["groups"]) // a["n"])
    args = (a["x"], a["values"], a["row_ptr"], a["col_idx"], a["bias"], a["n"], rows, a["cout"],
            a["stride"], a["padding"], a["dilation"], a["groups"], *NO_CLAMP)
    out = C.block1xn_forward(*args, None)
    for residual, error, match in [
            (out.float() if out.dtype != torch.float32 else out.double(), TypeError,
             "residual: expected dtype"),
            (out[:, :1], ValueError, r"residual: expected the output's shape"),
            (out.new_zeros(out.shape, device="meta"), ValueError, "residual: expected a tensor on")]:
        with pytest.raises(error, match=match):
            C.block1xn_forward(*args, residual)
