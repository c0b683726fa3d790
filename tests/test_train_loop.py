"""The generic training loop on tiny synthetic data (CPU, a few seconds)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from sparsekernels.pruning.base import SavedMask  # the pruners' mask parametrization
from sparsekernels.train import (
    CheckpointError, Trainer, TrainHooks, evaluate, load_checkpoint, lr_factor, save_checkpoint,
    topk_correct,
)
from sparsekernels.train.epoch_log import EpochLog

NUM_CLASSES = 6


def separable_data(n, seed):
    """8x8 one-channel images: a fixed random template per class plus noise."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn(NUM_CLASSES, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    targets = torch.randint(NUM_CLASSES, (n,), generator=gen)
    images = templates[targets] + 0.5 * torch.randn(n, 1, 8, 8, generator=gen)
    return TensorDataset(images, targets)


def masked_cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 4 * 4, NUM_CLASSES),
    )
    mask = SavedMask(torch.ones_like(model[3].weight))
    parametrize.register_parametrization(model[3], "weight", mask)
    return model


class MagnitudePruner(TrainHooks):
    """Keeps the largest |w| of the masked conv, pruning more every epoch;
    counts its steps so that its state matters to a resume."""

    def __init__(self, interrupt_at_epoch=None):
        self.steps = 0
        self.interrupt_at_epoch = interrupt_at_epoch

    def on_epoch_start(self, epoch, model):
        if epoch == self.interrupt_at_epoch:
            raise KeyboardInterrupt("simulated kill")
        conv = model[3]
        original = conv.parametrizations.weight.original
        keep = original.numel() - int(min(0.6, 0.2 * (epoch + 1)) * original.numel())
        threshold = original.abs().flatten().kthvalue(original.numel() - keep + 1).values
        with torch.no_grad():
            conv.parametrizations.weight[0].mask.copy_((original.abs() >= threshold).float())

    def after_step(self, model):
        self.steps += 1

    def sparsity(self, model):
        return 1.0 - model[3].parametrizations.weight[0].mask.mean().item()

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def make_trainer(job_dir, model=None, **overrides):
    args = dict(epochs=4, batch_size=32, eval_batch_size=64, lr=0.05, job_dir=job_dir,
                progress=False)
    args.update(overrides)
    return Trainer(model if model is not None else masked_cnn(),
                   separable_data(160, seed=1), separable_data(96, seed=2), **args)


def read_log(job_dir):
    return [json.loads(line) for line in (job_dir / "log.jsonl").read_text().splitlines()]


def test_learns_a_separable_problem(tmp_path):
    trainer = make_trainer(tmp_path, epochs=5)
    before = evaluate(trainer.model, trainer.test_loader)
    result = trainer.fit()
    records = read_log(tmp_path)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert before["top1"] < 0.5 and result["test_top1"] > 0.9
    assert result["test_loss"] < before["loss"]


def test_log_has_one_valid_record_per_epoch(tmp_path):
    make_trainer(tmp_path, epochs=3, hooks=[MagnitudePruner()]).fit()
    records = read_log(tmp_path)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for r in records:
        assert set(r) >= {"epoch", "train_loss", "train_top1", "test_loss", "test_top1",
                          "test_top5", "sparsity", "lr", "seconds"}
        assert 0 <= r["test_top1"] <= r["test_top5"] <= 1 and r["seconds"] > 0
    assert [r["sparsity"] for r in records] == pytest.approx([0.2, 0.4, 0.6], abs=0.01)


def lr_expected(policy, iteration, n, epochs, warmup):
    epoch = iteration // n
    if policy == "cos":
        value = 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))
    else:
        # step with epochs=5: x0.1 from 2.5 (i.e. epoch 3) and from 3.75 (epoch 4)
        value = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.1, 4: 0.01}[epoch]
    if epoch < warmup:
        value *= (1 + iteration) / (warmup * n)
    return value


class LrRecorder(TrainHooks):
    def __init__(self):
        self.lrs = []

    def after_backward(self, model, optimizer):
        self.lrs.append([group["lr"] for group in optimizer.param_groups])


@pytest.mark.parametrize("policy, warmup", [("cos", 2), ("cos", 0), ("step", 0), ("step", 1)])
def test_lr_schedule_follows_the_formulas(tmp_path, policy, warmup):
    recorder = LrRecorder()
    trainer = make_trainer(tmp_path, epochs=5, lr=0.2, lr_policy=policy, warmup_epochs=warmup,
                           batch_size=64, wd_bn=False, hooks=[recorder])
    trainer.fit()
    n = 3  # ceil(160 / 64)
    assert len(recorder.lrs) == 5 * n
    for i, lrs in enumerate(recorder.lrs):
        expected = 0.2 * lr_expected(policy, i, n, 5, warmup)
        assert lrs == pytest.approx([expected, expected], rel=1e-12), i
    assert read_log(tmp_path)[-1]["lr"] == pytest.approx(recorder.lrs[-1][0])


def test_lr_factor_reference_points():
    assert lr_factor("cos", 0, 10, epochs=10) == 1.0
    assert lr_factor("cos", 55, 10, epochs=10) == pytest.approx(0.5)  # epoch 5 of 10
    assert lr_factor("cos", 0, 10, epochs=10, warmup_epochs=2) == pytest.approx(
        0.5 * (1 + math.cos(-2 * math.pi / 8)) / 20)
    assert [lr_factor("step", 10 * e, 10, epochs=8) for e in range(8)] == pytest.approx(
        [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor("const", 123, 10, epochs=20) == 1.0


def test_label_smoothing_reaches_the_loss(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, NUM_CLASSES))
    images, targets = separable_data(160, seed=1).tensors
    # One batch holding the whole set: the logged loss is the loss at the initial weights.
    trainer = make_trainer(tmp_path, model=model, epochs=1, batch_size=160, label_smoothing=0.3)
    with torch.no_grad():
        smoothed = F.cross_entropy(model(images), targets, label_smoothing=0.3).item()
        plain = F.cross_entropy(model(images), targets).item()
    record = trainer.fit()
    assert record["train_loss"] == pytest.approx(smoothed, rel=1e-5)
    assert abs(smoothed - plain) > 1e-2


def test_top1_top5_on_hand_made_logits():
    logits = torch.tensor([
        [9.0, 1, 2, 3, 4, 5],   # target 0 is the largest:        top-1 and top-5 hit
        [1.0, 9, 8, 3, 4, 5],   # target 2 is second:             top-5 hit only
        [6.0, 5, 4, 3, 2, 1],   # target 5 is the smallest:       miss
        [6.0, 5, 4, 3, 2, 1],   # target 4 is fifth:              top-5 hit only
    ])
    targets = torch.tensor([0, 2, 5, 4])
    assert topk_correct(logits, targets, 1).item() == 1
    assert topk_correct(logits, targets, 5).item() == 3
    loader = [(logits[:3], targets[:3]), (logits[3:], targets[3:])]
    metrics = evaluate(nn.Identity(), loader)
    assert metrics["top1"] == pytest.approx(0.25)
    assert metrics["top5"] == pytest.approx(0.75)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, targets).item())
    few_classes = evaluate(nn.Identity(), [(logits[:, :4], torch.tensor([0, 2, 3, 1]))])
    assert few_classes["top1"] == pytest.approx(0.25) and few_classes["top5"] is None


def test_checkpoint_is_atomic_and_validated(tmp_path, monkeypatch):
    make_trainer(tmp_path, epochs=1).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "checkpoint.pt", "log.jsonl"]
    path = tmp_path / "checkpoint.pt"
    good = path.read_bytes()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and set(state["config"]) >= {"lr", "epochs", "seed"}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, state)
    monkeypatch.undo()
    assert path.read_bytes() == good  # the old file survives a failed write...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "checkpoint.pt", "log.jsonl"]

    path.write_bytes(good[: len(good) // 2])  # ...and a torn one is reported as such
    with pytest.raises(CheckpointError, match="checkpoint.pt is not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        make_trainer(tmp_path, epochs=2).fit()
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(path)


def test_shuffle_order_depends_only_on_seed_and_epoch(tmp_path):
    def order(trainer, epoch):
        trainer.train_sampler.set_epoch(epoch)
        return list(trainer.train_sampler)

    first, second = make_trainer(tmp_path), make_trainer(tmp_path)
    torch.manual_seed(1234)  # the global RNG has no say
    assert order(first, 1) == order(second, 1) != order(first, 0)
    assert order(make_trainer(tmp_path, seed=5), 1) != order(first, 1)


def test_resume_is_bit_exact(tmp_path):
    straight = make_trainer(tmp_path / "straight", hooks=[MagnitudePruner()])
    straight_result = straight.fit()

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "resumed", hooks=[MagnitudePruner(interrupt_at_epoch=2)]).fit()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 2
    pruner = MagnitudePruner()
    resumed = make_trainer(tmp_path / "resumed", model=masked_cnn(seed=99), hooks=[pruner])
    resumed_result = resumed.fit()

    expected, actual = straight.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == actual.keys()
    assert "3.parametrizations.weight.0.mask" in actual
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert pruner.steps == straight.hooks.hooks[0].steps == 4 * 5

    def without_time(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    resumed_log, straight_log = read_log(tmp_path / "resumed"), read_log(tmp_path / "straight")
    assert without_time(resumed_log) == without_time(straight_log)
    straight_result.pop("seconds"), resumed_result.pop("seconds")
    assert resumed_result == straight_result
    # A finished run resumes to nothing and reports the same result.
    finished = make_trainer(tmp_path / "straight", hooks=[MagnitudePruner()]).fit()
    assert finished["test_top1"] == straight_result["test_top1"]


def test_log_rewind_matches_the_checkpoint(tmp_path):
    log = EpochLog(tmp_path / "log.jsonl")
    log.start_fresh()
    for epoch in range(3):
        log.append({"epoch": epoch})
    with log.path.open("a") as torn:
        torn.write('{"epoch": 3, "tra')
    log.rewind(2, {"epoch": 1})  # epochs 2 and 3 will be rerun
    assert log.records() == [{"epoch": 0}, {"epoch": 1}]
    # Killed after writing checkpoint.pt but before logging its epoch:
    log.rewind(3, {"epoch": 2, "restored": True})
    assert log.records() == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2, "restored": True}]


class Recorder(TrainHooks):
    def __init__(self):
        self.calls = []

    def on_train_start(self, model, optimizer):
        self.calls.append("on_train_start")

    def on_epoch_start(self, epoch, model):
        self.calls.append(f"on_epoch_start {epoch}")

    def extra_loss(self, model):
        self.calls.append("extra_loss")
        return 0.5 * sum(p.square().sum() for p in model.parameters())

    def after_backward(self, model, optimizer):
        has_grads = all(p.grad is not None for p in model.parameters())
        self.calls.append(f"after_backward grads={has_grads}")

    def after_step(self, model):
        self.calls.append("after_step")

    def sparsity(self, model):
        self.calls.append("sparsity")
        return 0.25

    def state_dict(self):
        self.calls.append("state_dict")
        return {}


def test_hooks_are_called_in_order(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tmp_path, epochs=2, batch_size=80, hooks=[recorder])
    result = trainer.fit()
    step = ["extra_loss", "after_backward grads=True", "after_step"]
    epoch_end = ["sparsity", "state_dict"]
    assert recorder.calls == (["on_train_start", "on_epoch_start 0"] + 2 * step + epoch_end
                              + ["on_epoch_start 1"] + 2 * step + epoch_end)
    assert result["sparsity"] == 0.25 and result["extra_loss"] > 0


def test_parameter_groups_and_optimizer_factory(tmp_path):
    trainer = make_trainer(tmp_path, wd_bn=False, weight_decay=5e-4)
    decayed, exempt = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 5e-4 and exempt["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in exempt["params"])
    original = trainer.model[3].parametrizations.weight.original
    assert any(p is original for p in decayed["params"])

    def adam(groups, lr, momentum, weight_decay, nesterov):
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)

    trainer = make_trainer(tmp_path, optimizer_factory=adam, epochs=1)
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    trainer.fit()


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": 0}, "epochs must be an int >= 1"),
    ({"lr_policy": "linear"}, "unknown lr_policy 'linear'"),
    ({"warmup_epochs": 4}, r"warmup_epochs must be in \[0, epochs=4\)"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ({"amp": "fp8"}, "amp must be False, True, 'bf16' or 'fp16'"),
    ({"hooks": [object()]}, "hooks must be TrainHooks instances"),
    ({"resume": "no"}, "resume must be True or False, got 'no'"),
    ({"nesterov": 1}, "nesterov must be True or False"),
])
def test_bad_arguments_are_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, **overrides)


def test_amp_is_ignored_with_a_warning_on_cpu(tmp_path):
    with pytest.warns(UserWarning, match="amp='fp16' is ignored on cpu"):
        trainer = make_trainer(tmp_path, amp="fp16", device="cpu")
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()


def _edited_checkpoint(job_dir, **changes):
    path = job_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"epoch": -2}, "epoch -2 is not a finished epoch count"),
    ({"epoch": 0}, "epoch 0 is not a finished epoch count"),
    ({"epoch": 10 ** 6}, r"epoch 1000000 is out of range \[1, 2\]"),
    ({"epoch": True}, "entry 'epoch' has type bool"),
    ({"epoch": "2"}, "entry 'epoch' has type str"),
    ({"rng": {}}, "entry 'rng' has type dict"),
    ({"best_top1": None}, "entry 'best_top1'"),
    ({"metrics": {"epoch": 0}}, "last record is of epoch 0"),
    ({"epoch": 1, "metrics": {"epoch": 0}}, "lr schedule is at step 10, expected 5"),
    ({"model": {"0.weight": torch.zeros(2)}}, "does not fit this run"),
    ({"optimizer": {"state": {}, "param_groups": []}}, "does not fit this run"),
    ({"hooks": []}, "does not fit this run"),
])
def test_hand_edited_checkpoint_is_refused_naming_the_file(tmp_path, changes, message):
    make_trainer(tmp_path, epochs=2, hooks=[MagnitudePruner()]).fit()
    path = _edited_checkpoint(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message) as err:
        make_trainer(tmp_path, epochs=2, hooks=[MagnitudePruner()]).fit()
    assert str(path) in str(err.value)


def test_log_skips_lines_that_are_not_epoch_records(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"epoch": 0}\n5\n["x"]\n{"epoch": "1"}\n{"no": 1}\n{"epoch": 1}\n')
    log = EpochLog(path)
    assert log.records() == [{"epoch": 0}, {"epoch": 1}]
    log.rewind(1, {"epoch": 0})
    assert log.records() == [{"epoch": 0}]
