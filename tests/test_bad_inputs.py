"""Bad input gets a ValueError/TypeError naming the argument; an out-of-range
index in a loaded format never reaches a kernel."""
import pytest
import torch

import sparsekernels as sk
from sparsekernels import Block1xN
from sparsekernels.kinds import KINDS
from sparsekernels.nn import Block1xNConv2d
from sparsekernels.testing import backends_here, make_case


def _fmt(cout=8, cin=4, n=4, groups=1):
    return Block1xN.from_dense(torch.randn(cout, cin // groups, 3, 3), n, 0.5, groups=groups)


def _state(**changes):
    s = {k: v.clone() for k, v in _fmt().state_dict().items()}
    for key, fn in changes.items():
        s[key] = fn(s[key])
    return s


def _set(i, value):
    def fn(t):
        t[i] = value
        return t
    return fn


FORMAT_CASES = [
    ("row_ptr: must start at 0", dict(row_ptr=_set(0, 1))),
    ("row_ptr: must end at nnz=4", dict(row_ptr=_set(-1, 99))),
    ("row_ptr: decreases", dict(row_ptr=lambda t: torch.tensor([0, 5, 4], dtype=torch.int32))),
    ("row_ptr: expected 3 entries", dict(row_ptr=lambda t: t[:-1])),
    ("row_ptr: expected dtype torch.int32", dict(row_ptr=lambda t: t.long())),
    ("col_idx: entry 0 = 4 is out of range", dict(col_idx=_set(0, 4))),
    ("col_idx: entry 0 = -1 is out of range", dict(col_idx=_set(0, -1))),
    ("col_idx: not strictly increasing", dict(col_idx=lambda t: t.flip(0))),
    ("values: expected shape", dict(values=lambda t: t[..., :2])),
    ("values: expected a floating-point torch.Tensor, got torch.int64", dict(values=lambda t: t.long())),
    ("meta: expected 6 ints", dict(meta=lambda t: t[:3])),
]


@pytest.mark.parametrize("message,changes", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_malformed_format_is_rejected_on_load(message, changes):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        Block1xN.from_state_dict(_state(**changes))


def test_module_load_state_dict_validates_before_any_kernel():
    mod = Block1xNConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), n=4, sparsity=0.5)
    state = mod.state_dict()
    state["col_idx"] = state["col_idx"].clone()
    state["col_idx"][0] = 1000
    with pytest.raises(ValueError, match="col_idx: entry 0 = 1000 is out of range"):
        mod.load_state_dict(state)


x = torch.randn(2, 4, 6, 6)
OP_CASES = [
    (TypeError, "weight: expected a Block1xN", lambda: sk.block1xn_conv2d(x, torch.randn(8, 4, 3, 3))),
    (TypeError, "input: expected a torch.Tensor", lambda: sk.block1xn_conv2d(x.numpy(), _fmt())),
    (ValueError, "input: expected 4-D", lambda: sk.block1xn_conv2d(x[0, 0], _fmt())),
    (TypeError, "input: expected one of", lambda: sk.block1xn_conv2d(x.int(), _fmt())),
    (TypeError, "input: dtype torch.float64 does not match", lambda: sk.block1xn_conv2d(x.double(), _fmt())),
    (ValueError, "input: expected 4 channels", lambda: sk.block1xn_conv2d(x[:, :3], _fmt())),
    (ValueError, "groups: 2 does not match", lambda: sk.block1xn_conv2d(x, _fmt(), groups=2)),
    (ValueError, r"bias: expected shape \[8\], got \[7\]", lambda: sk.block1xn_conv2d(x, _fmt(), torch.randn(7))),
    (TypeError, "bias: expected dtype torch.float32, got torch.float64", lambda: sk.block1xn_conv2d(x, _fmt(), torch.randn(8).double())),
    (ValueError, r"stride: expected an int in \[1, 2147483647\], got 0", lambda: sk.block1xn_conv2d(x, _fmt(), stride=0)),
    (ValueError, r"padding: expected an int in \[0, 2147483647\], got -1", lambda: sk.block1xn_conv2d(x, _fmt(), padding=-1)),
    (ValueError, "dilation: expected an int or a pair", lambda: sk.block1xn_conv2d(x, _fmt(), dilation=(1, 2, 3))),
    (ValueError, "padding: 'same' is not supported for strided", lambda: sk.block1xn_conv2d(x, _fmt(), stride=2, padding="same")),
    (ValueError, "padding: expected 'same', 'valid'", lambda: sk.block1xn_conv2d(x, _fmt(), padding="full")),
    (ValueError, "input: spatial size", lambda: sk.block1xn_conv2d(x[..., :2, :2], _fmt())),
    (ValueError, "backend: expected one of", lambda: sk.block1xn_conv2d(x, _fmt(), backend="gpu")),
    (ValueError, "backend: 'cuda' needs CUDA tensors", lambda: sk.block1xn_conv2d(x, _fmt(), backend="cuda")),
]


@pytest.mark.parametrize("exc,message,call", OP_CASES, ids=[c[1] for c in OP_CASES])
def test_bad_op_arguments(exc, message, call):
    with pytest.raises(exc, match=message):
        call()


BUILD_CASES = [
    (ValueError, r"n: expected an int in \[1, 4096\], got 0", lambda: Block1xN.from_dense(torch.randn(8, 4, 3, 3), 0, 0.5)),
    (ValueError, "groups: 3 does not divide out_channels=8", lambda: Block1xN.from_dense(torch.randn(8, 4, 3, 3), 4, 0.5, groups=3)),
    (ValueError, "sparsity: expected a number in", lambda: Block1xN.from_dense(torch.randn(8, 4, 3, 3), 4, 1.5)),
    (ValueError, "criterion: expected one of", lambda: Block1xN.from_dense(torch.randn(8, 4, 3, 3), 4, 0.5, "l2")),
    (ValueError, "weight: expected 4-D", lambda: Block1xN.from_dense(torch.randn(8, 4), 4, 0.5)),
    (TypeError, "weight: expected a floating dtype", lambda: Block1xN.from_dense(torch.ones(8, 4, 3, 3, dtype=torch.int64), 4, 0.5)),
    (ValueError, "mask: expected shape", lambda: Block1xN.from_mask(torch.randn(8, 4, 3, 3), torch.ones(8, 4), 4)),
    (TypeError, "conv: expected an nn.Conv2d", lambda: Block1xNConv2d.from_dense(torch.nn.Linear(3, 4), sparsity=0.5)),
    (ValueError, "give exactly one of sparsity= or mask=", lambda: Block1xNConv2d.from_dense(torch.nn.Conv2d(4, 8, 3))),
]


@pytest.mark.parametrize("exc,message,call", BUILD_CASES, ids=[c[1] for c in BUILD_CASES])
def test_bad_build_arguments(exc, message, call):
    with pytest.raises(exc, match=message):
        call()


# One message for one mistake, whichever route meets it: the registered op's
# C++ kernel (native backends) or the Python op body (the others), called
# with and without autograd recording. Both spell a dtype as Python does.
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("backend", backends_here("cpu"))
def test_bias_dtype_error_is_the_same_on_every_route(kind, backend):
    case = make_case(kind=kind, dtype=torch.float32)
    messages = set()
    for grad in (False, True):
        x = case.x.clone().requires_grad_(grad)
        with pytest.raises(TypeError) as err:
            KINDS[kind].conv2d(x, case.weight, case.bias.double(), case.stride, case.padding,
                               case.dilation, case.groups, backend=backend)
        messages.add(str(err.value).splitlines()[0])
    assert messages == {"bias: expected dtype torch.float32, got torch.float64"}
