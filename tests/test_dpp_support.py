"""DPPNet layers computed on their static support (``DynamicPatternConv2d``),
their FLOPs by both metrics, and ``export`` / ``load_exported`` of a DPPNet
model. Every value is checked against float64 references: the original's
per-sample kernels run one sample at a time."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsekernels.flops import count_flops
from sparsekernels.models import get_model
from sparsekernels.nn.dynamic_pattern import DynamicPatternConv2d
from sparsekernels.pruning.dppnet import DPPConv2d, _mix, convert_to_dpp, dpp_flops
from sparsekernels.train.artifacts import load_model, save_model
from sparsekernels.train.export import export, load_exported

MODES = ["mixed", "mixed_gather", "static", "pconv", "auto"]


def per_sample_reference(layer, x):
    """The original's computation: per-sample kernels sum_p a M_p W_p."""
    kernels = torch.einsum("bpo,pochw->bochw", layer.attention(x),
                           layer.weight * layer.pattern_masks()[:, None, None])
    return torch.cat([F.conv2d(x[b:b + 1], kernels[b], layer.bias, layer.stride, layer.padding,
                               layer.dilation) for b in range(x.shape[0])])


def dpp_with_support(cin=5, cout=6, kernel=3, support=(1, 3, 4, 5, 7), num_patterns=4,
                     seed=0, **kwargs):
    """A float64 DPPConv2d whose P patterns are distinct subsets of ``support``
    (flat positions) covering it: U is exactly ``support``."""
    torch.manual_seed(seed)
    layer = DPPConv2d(cin, cout, kernel, num_patterns=num_patterns, **kwargs).double()
    kh, kw = layer.kernel_size
    masks = torch.zeros(num_patterns, kh * kw, dtype=torch.bool)
    support = list(support)
    for p in range(num_patterns):  # pattern p drops support position p (if any)
        masks[p, support] = True
        if len(support) > 1:
            masks[p, support[p % len(support)]] = False
    if len(support) > 1 and num_patterns == 1:
        masks[0, support] = True
    with torch.no_grad():
        layer.weight.mul_(masks.view(num_patterns, 1, 1, kh, kw))
        layer.threshold.fill_(1e-9)  # kept: every position whose weights are not all zero
    assert torch.equal(layer.pattern_masks().bool().flatten(1), masks)
    return layer


GEOMETRIES = [
    dict(padding=1),
    dict(stride=2, padding=2, dilation=2, bias=True),
    dict(padding="same", bias=True),
    dict(padding="same", dilation=(2, 1), kernel=(3, 4), support=(0, 5, 6, 11)),
    dict(padding="valid", stride=(1, 2)),
    dict(padding=(0, 2), kernel=(1, 5), support=(0, 2, 4)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_equals_dpp_layer_and_per_sample_kernels(mode, geometry):
    layer = dpp_with_support(**geometry)
    x = torch.randn(3, 5, 9, 8, dtype=torch.float64)
    want = per_sample_reference(layer, x)
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)
    module = DynamicPatternConv2d.from_dpp(layer, mode=mode)
    support = geometry.get("support", (1, 3, 4, 5, 7))
    assert module.taps.tolist() == list(support) and module.num_taps == len(support)
    assert module.kernels.shape == (4, 6, 5, len(support))
    torch.testing.assert_close(module(x), want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # inference: the mixed path's shifted views where the stride is 1
        torch.testing.assert_close(module(x), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(module(x[:1]), want[:1], rtol=1e-12, atol=1e-12)
    # from the export as from the layer
    torch.testing.assert_close(DynamicPatternConv2d.from_dpp(layer.export(), mode=mode)(x), want,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("mode", ["mixed", "mixed_gather", "static"])
def test_chunked_batch_equals_whole_batch(mode, grad):
    layer = dpp_with_support(padding=(1, 2), dilation=(1, 2), bias=True)
    module = DynamicPatternConv2d.from_dpp(layer, mode=mode)
    x = torch.randn(7, 5, 6, 6, dtype=torch.float64)
    want = per_sample_reference(layer, x)
    with torch.set_grad_enabled(grad):
        for chunk_bytes in (0, 1, 3 * 5 * 5 * 36 * 8, 2 * 5 * 8 * 10 * 8):
            module.chunk_bytes = chunk_bytes  # whole batch, 1 sample, a few samples a step
            torch.testing.assert_close(module(x), want, rtol=1e-12, atol=1e-12)


def test_full_and_empty_support():
    full = dpp_with_support(padding=1, support=range(9))
    module = DynamicPatternConv2d.from_dpp(full)
    assert module.resolved_mode() == "mixed" and module.num_taps == 9
    x = torch.randn(2, 5, 5, 5, dtype=torch.float64)
    for mode in MODES:
        module.mode = mode
        torch.testing.assert_close(module(x), per_sample_reference(full, x), rtol=1e-12,
                                   atol=1e-12)
    empty = dpp_with_support(padding=1, bias=True)
    with torch.no_grad():
        empty.threshold.fill_(1e3)
    for mode in MODES:
        module = DynamicPatternConv2d.from_dpp(empty, mode=mode)
        assert module.num_taps == 0
        torch.testing.assert_close(module(x), empty.bias.view(1, -1, 1, 1).expand(2, 6, 5, 5))
        with torch.no_grad():
            torch.testing.assert_close(module(x), empty.bias.view(1, -1, 1, 1).expand(2, 6, 5, 5))


@pytest.mark.parametrize("mode", ["mixed", "static", "pconv"])
def test_gradcheck(mode):
    layer = dpp_with_support(cin=3, cout=2, num_patterns=3, stride=2, padding=1, dilation=1,
                             bias=True, support=(0, 4, 8))
    module = DynamicPatternConv2d.from_dpp(layer, mode=mode)
    module.chunk_bytes = 1  # one sample a step: the chunked path's backward too
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]

    def run(x, *values):
        return torch.func.functional_call(module, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params), fast_mode=True)


def test_backward_equals_dpp_layer():
    layer = dpp_with_support(padding=1, bias=True)
    module = DynamicPatternConv2d.from_dpp(layer, mode="mixed")
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 6, 6, 6, dtype=torch.float64)
    (want,) = torch.autograd.grad(layer(x), x, g)
    (got,) = torch.autograd.grad(module(x), x, g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the compact kernels' gradient is that of the masked kernels M_p W_p
    # (the layer's weight gradient adds the masks' straight-through part), on U
    kernels = (layer.weight * layer.pattern_masks()[:, None, None]).detach().requires_grad_()
    attn = layer.attention(x)
    _mix(x, kernels, attn, layer.bias, layer.stride, layer.padding, layer.dilation).backward(g)
    module(x).backward(g)
    torch.testing.assert_close(module.kernels.grad, kernels.grad.flatten(3)[..., module.taps],
                               rtol=1e-12, atol=1e-12)


def test_flops_by_both_metrics():
    torch.manual_seed(0)
    layer = dpp_with_support(cin=8, cout=16, padding=1).float()
    out_hw, taps, p = 6 * 6, 5, 4
    attention = 2 * (layer.attention.reduce.weight.numel() + layer.attention.expand.weight.numel())
    assert count_flops(layer.attention, (8, 6, 6)) == attention
    nonzero = int(torch.count_nonzero(layer.weight * layer.pattern_masks()[:, None, None]))
    assert nonzero == 16 * 8 * 4 * 4  # each pattern keeps 4 of the 5 positions
    static = 2 * (nonzero + p * 16) * out_hw
    union = 2 * 16 * 8 * taps * out_hw + 2 * p * 16 * 8 * taps
    module = DynamicPatternConv2d.from_dpp(layer)
    for model in (layer, module):
        assert count_flops(model, (8, 6, 6)) == static + attention
        assert count_flops(model, (8, 6, 6), dpp_metric="static") == static + attention
        assert count_flops(model, (8, 6, 6), dpp_metric="union") == union + attention
        assert count_flops(model, (8, 6, 6), count_zeros=True, dpp_metric="union") == (
            2 * 16 * 8 * 9 * (out_hw + p) + attention)
    dense = 2 * 16 * 8 * 9 * out_hw
    assert union / dense == pytest.approx(5 / 9 * (1 + p / out_hw))
    with pytest.raises(ValueError, match="dpp_metric"):
        count_flops(layer, (8, 6, 6), dpp_metric="paper")
    with pytest.raises(ValueError, match="metric"):
        dpp_flops(layer.weight, torch.zeros(1, 16, 6, 6), metric="paper")


# ---------------------------------------------------------------- export

def dpp_pruned(path, support=(1, 3, 4, 5, 7)):
    """Save a DPPNet digits_cnn whose DPP layers have the static support
    ``support`` (and random BN statistics); returns the model."""
    torch.manual_seed(0)
    model = get_model("digits_cnn")
    layers = convert_to_dpp(model, num_patterns=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        for name in layers:
            layer = model.get_submodule(name)
            layer.weight.copy_(dpp_with_support(layer.in_channels, layer.out_channels,
                                                support=support, padding=1).weight.float())
            layer.threshold.fill_(1e-9)
    save_model(path, model, "digits_cnn", 10, method="dppnet",
               dpp_layers=json.dumps({"layers": layers, "num_patterns": 4}), masks={})
    return model


def test_export_and_load_exported_give_the_dpp_outputs(tmp_path):
    dpp_pruned(tmp_path / "pruned.pt")
    summary = export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    assert summary["dpp_layers"] == {"features.1.0": 5, "features.3.0": 5}
    pruned, _ = load_model(tmp_path / "pruned.pt")
    model = load_exported(tmp_path / "sparse.pt")
    for name in ("features.1.0", "features.3.0"):
        module = model.get_submodule(name)
        assert type(module) is DynamicPatternConv2d and module.taps.tolist() == [1, 3, 4, 5, 7]
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model.double().eval()(x), pruned.double().eval()(x),
                               rtol=1e-12, atol=1e-12)
    union = count_flops(model, (1, 8, 8), dpp_metric="union")
    assert union == count_flops(pruned, (1, 8, 8), dpp_metric="union")
    assert union < count_flops(pruned, (1, 8, 8), dpp_metric="static")


@pytest.fixture(scope="module")
def exported_record(tmp_path_factory):
    path = tmp_path_factory.mktemp("dpp")
    dpp_pruned(path / "pruned.pt")
    export(path / "pruned.pt", path / "sparse.pt")
    return torch.load(path / "sparse.pt", weights_only=True)


def _set(key, value):
    return lambda r: r["state_dict"].__setitem__(key, value)


@pytest.mark.parametrize("edit, field", [
    (_set("features.1.0.taps", torch.tensor([1, 3, 4, 5, 9])), "features.1.0.taps"),
    (_set("features.1.0.taps", torch.tensor([1, 3, 4, 4, 7])), "features.1.0.taps"),
    (_set("features.1.0.taps", torch.tensor([-1, 3, 4, 5, 7])), "features.1.0.taps"),
    (_set("features.1.0.taps", torch.tensor([1.0, 3, 4, 5, 7])), "features.1.0.taps"),
    (_set("features.1.0.taps", torch.arange(10)), "features.1.0.taps"),
    (_set("features.1.0.taps", torch.tensor([1, 3, 4, 5])), "features.1.0.kernels"),
    (_set("features.1.0.kernels", torch.zeros(4, 64, 31, 5)), "features.1.0.kernels"),
    (_set("features.1.0.kernels", torch.zeros(1000, 64, 32, 5)), "dpp_layers"),
    (lambda r: r.update(dpp_exported="[features"), "dpp_exported"),
    (lambda r: r.update(dpp_exported='["classifier"]'), "dpp_exported"),
    (lambda r: r.update(dpp_exported='[]'), "dpp_layers"),
])
def test_load_exported_refuses_bad_dpp_fields(tmp_path, exported_record, edit, field):
    record = {**exported_record, "state_dict": dict(exported_record["state_dict"])}
    edit(record)
    torch.save(record, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=field):
        load_exported(tmp_path / "bad.pt")


def test_bench_dpp_writes_checked_records(tmp_path):
    from sparsekernels.bench.cli import main

    out = tmp_path / "dpp.json"
    assert main(["dpp", "--quick", "--shape", "4,6", "--passes", "forward", "all",
                 "--threads", "1", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["pass"], r["batch"], r["layer"]) for r in records] == [
        ("forward", 2, "3x3_4-4@6"), ("all", 2, "3x3_4-4@6")]
    for r in records:
        assert r["ok"] and r["record_type"] == "dpp" and r["num_taps"] == 5
        assert r["taps"] == [1, 3, 4, 5, 7] and r["auto_mode"] == "mixed"
        assert max(r["max_rel_err"].values()) < 1e-5
        assert r["support_ms"] == r["support_mixed_ms"] > 0 and r["dense_ms"] > 0
        assert r["dpp_union_flop"] < r["dense_flop"] < r["dpp_static_flop"]
    assert set(records[0]["parts_ms"]) == {"attention", "mix", "gather", "gather_gemm", "pad",
                                           "shifted_gemms_and_mix"}
    assert records[1]["parts_ms"] is None
