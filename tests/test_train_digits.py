"""The training layer on real data: scikit-learn's digits (a fixed-seed split),
a small CNN, every method pruned and fine-tuned from one dense model.

Sparsity is measured by counting zeros in the exported weights, never taken
from the method's own bookkeeping.
"""
import json

import pytest
import torch

from sparsekernels.train.artifacts import load_model
from sparsekernels.train.config import RunConfig
from sparsekernels.train.export import export, load_exported
from sparsekernels.train.pipeline import run
from sparsekernels.train.recipes import DENSE, DIGITS_BARS, recipe


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    job = tmp_path_factory.mktemp("dense")
    result = run(RunConfig(**DENSE, method="dense", job_dir=str(job)), progress=False)
    return job / "dense.pt", result["test"]["top1"]


def _prune(tmp_path, dense, name, **overrides):
    cfg = RunConfig(**recipe(name, pretrained_model=str(dense[0]), job_dir=str(tmp_path),
                             **overrides))
    return run(cfg, progress=False)


def _prune_to_bar(tmp_path, dense, name):
    """Run ``name`` as its accuracy bar says and check it meets the bar (the
    margins over seeds and CPU paths: scripts/digits_margins.py)."""
    bar = DIGITS_BARS[name]
    epochs = {} if bar.num_epochs is None else {"num_epochs": bar.num_epochs}
    result = _prune(tmp_path, dense, name, **epochs)
    assert result["test"]["top1"] >= bar.floor(dense[1]), (name, bar, dense[1])
    return result


def _zeros_in(weights) -> float:
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total


def test_dense_reaches_97(dense):
    assert dense[1] >= DIGITS_BARS["dense"].floor(dense[1])


@pytest.mark.parametrize("name, level", [("1xn-50", 0.5), ("1xn-75", 0.75)])
def test_1xn_fine_tuned_accuracy_and_exact_sparsity(tmp_path, dense, name, level):
    _prune_to_bar(tmp_path, dense, name)
    export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    model = load_exported(tmp_path / "sparse.pt")
    sparse = [m for m in model.modules() if type(m).__name__ == "Block1xNConv2d"]
    assert sparse, "export converted no layer"
    for layer in sparse:  # exact block count per layer, from the format itself
        total = layer.format().num_blocks
        assert layer.col_idx.numel() == total - round(total * level)
    # The exported model computes what the pruned dense-equivalent one does.
    pruned, _ = load_model(tmp_path / "pruned.pt")
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(model.eval()(x), pruned.eval()(x), atol=1e-5, rtol=1e-5)


def _pruned_layer_weights(job):
    model, record = load_model(job / "pruned.pt")
    return [model.get_submodule(name).weight.detach() for name in record["masks"]]


@pytest.mark.parametrize("name, level", [("stripe-50", 0.5), ("pattern-70", 0.7), ("gsm-90", 0.9)])
def test_method_reaches_target_within_3_points(tmp_path, dense, name, level):
    _prune_to_bar(tmp_path, dense, name)
    weights = _pruned_layer_weights(tmp_path)
    assert weights
    assert _zeros_in(weights) == pytest.approx(level, abs=0.01)
    if name.startswith("pattern"):  # every kept kernel follows its saved library pattern
        model, record = load_model(tmp_path / "pruned.pt")
        for layer, saved in record["patterns"].items():
            weight = model.get_submodule(layer).weight.detach()
            ids = saved["pattern_id"]
            support = saved["library"][ids.clamp(min=0)] & (ids >= 0)[..., None, None]
            assert not weight[~support].any()


def test_slimming_removes_target_channels_within_3_points(tmp_path, dense):
    result = _prune_to_bar(tmp_path, dense, "slimming-40")
    assert result["sparsity"] == pytest.approx(0.4, abs=0.01)
    assert result["params"] < _dense_params(dense)  # physically narrower


def _dense_params(dense):
    model, _ = load_model(dense[0])
    return sum(p.numel() for p in model.parameters())


def test_bad_config_is_rejected_before_training(tmp_path, dense):
    with pytest.raises(ValueError, match="method"):
        RunConfig(method="prune_everything").validate()
    with pytest.raises(ValueError, match="pr_target"):
        RunConfig(pr_target=1.0).validate()
    with pytest.raises(ValueError, match="not a multiple of n=3"):
        run(RunConfig(**DENSE, method="1xn", N=3, job_dir=str(tmp_path / "bad")), progress=False)
    assert not (tmp_path / "bad" / "dense").exists(), "training started before the check"


def test_cli_prune_export_evaluate(tmp_path, dense, capsys):
    from sparsekernels.cli import main

    job = tmp_path / "cli"
    main(["prune", "--conv_type", "BlockL1Conv", "--N", "4", "--pr_target", "0.5",
          "--pretrained_model", str(dense[0]), "--num_epochs", "1", "--job_dir", str(job),
          "--json"])
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["config"]["method"] == "1xn"
    main(["export", str(job / "pruned.pt"), "--export_onnx", str(job / "dense.onnx"),
          "--json"])
    assert json.loads(capsys.readouterr().out)["sparse_layers"]
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(job / "dense.onnx"))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input][:1] == ["input"]
    # finetune keeps the masks fixed and carries the record's extras along.
    main(["finetune", "--pruned_model", str(job / "pruned.pt"), "--num_epochs", "1",
          "--job_dir", str(job / "ft"), "--no-progress"])
    capsys.readouterr()
    tuned, record = load_model(job / "ft" / "pruned.pt")
    assert record["config"] == load_model(job / "pruned.pt")[1]["config"]
    for name, mask in record["masks"].items():
        assert not tuned.get_submodule(name).weight[~mask].any()
    main(["evaluate", str(job / "sparse.pt"), "--json"])
    top1 = json.loads(capsys.readouterr().out)["test"]["top1"]
    assert top1 == pytest.approx(pruned["test"]["top1"], abs=1e-6)
    with pytest.raises(SystemExit) as err:
        main(["prune", "--method", "nope", "--job_dir", str(job)])
    assert err.value.code == 2


@pytest.mark.parametrize("name", ["magnitude-90", "l1_filter-50-scratchB",
                                  "1xn-75-rearranged-cubic"])
def test_other_methods_run_end_to_end(tmp_path, dense, name):
    result = _prune_to_bar(tmp_path, dense, name)
    assert result["sparsity"] > 0
    assert result["flops"] <= result["flops_dense"]


def test_dppnet_runs_end_to_end(tmp_path, dense):
    # DPPNet learns its sparsity (alpha pulls the thresholds up); three epochs
    # on digits prune nothing yet, so this checks the plumbing, not a level.
    result = _prune_to_bar(tmp_path, dense, "dppnet")
    model, _ = load_model(tmp_path / "pruned.pt")
    layers = [m for m in model.modules() if type(m).__name__ == "DPPConv2d"]
    assert layers, "the saved model has no DPP layer"
    # The reported sparsity is the saved layers' pruned kernel positions: the
    # (kh, kw) where every exported static kernel is zero.
    pruned = sum(int((layer.export().kernels == 0).flatten(0, 2).all(0).sum()) for layer in layers)
    positions = sum(layer.kernel_size[0] * layer.kernel_size[1] for layer in layers)
    assert result["sparsity"] == pruned / positions
    # FLOPs: P static convs (the current count) and the paper's union support,
    # which with nothing pruned yet is the dense conv plus attention and mixing
    assert result["flops_dense"] < result["flops_union"] < min(1.2 * result["flops_dense"],
                                                               result["flops"])


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, dense, monkeypatch):
    from sparsekernels.train import methods

    cfg = dict(num_epochs=4, inter_func="cubic", end_epoch=3)
    _prune(tmp_path / "straight", dense, "1xn-75", **cfg)
    original = methods.BlockMethod.on_epoch_start

    def crash_at_epoch_2(self, epoch, model):
        if epoch == 2:
            raise KeyboardInterrupt
        original(self, epoch, model)

    monkeypatch.setattr(methods.BlockMethod, "on_epoch_start", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _prune(tmp_path / "resumed", dense, "1xn-75", **cfg)
    monkeypatch.setattr(methods.BlockMethod, "on_epoch_start", original)
    _prune(tmp_path / "resumed", dense, "1xn-75", **cfg)
    a, _ = load_model(tmp_path / "straight" / "pruned.pt")
    b, _ = load_model(tmp_path / "resumed" / "pruned.pt")
    straight, resumed = a.state_dict(), b.state_dict()
    assert list(straight) == list(resumed)
    for name, weight in straight.items():
        assert torch.equal(weight, resumed[name]), name
