"""RunConfig: files, flags and the checks that run before any training."""
import json

import pytest

from sparsekernels.cli import build_parser, config_from_args
from sparsekernels.train.config import RunConfig
from sparsekernels.train.recipes import recipe


def test_yaml_and_json_files_round_trip(tmp_path):
    cfg = RunConfig(method="pattern", pr_target=0.7, num_patterns=4, exclude=["fc"])
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "c.yaml").write_text("method: pattern\npr_target: 0.7\nnum_patterns: 4\n"
                                     "exclude: [fc]\n")
    assert RunConfig.from_file(tmp_path / "c.json") == cfg
    assert RunConfig.from_file(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("text, match", [
    ("methd: 1xn\n", "unknown key"),
    ("method: prune_all\n", "method: unknown"),
    ("pr_target: 1.0\n", "pr_target"),
    ("pr_target: -0.1\n", "pr_target"),
    ("N: 0\n", "N: expected"),
    ("inter_func: exponential\n", "inter_func"),
    ("inter_func: cubic\nstart_epoch: 3\nend_epoch: 2\n", "end_epoch"),
    ("scratch: B\nmethod: 1xn\n", "scratch"),
    ("- a list\n", "mapping"),
])
def test_bad_file_is_rejected_with_the_field_named(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        RunConfig.from_file(path)


def test_flags_override_the_file_and_conv_type_maps_to_method(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: stripe\npr_target: 0.3\n")
    args = build_parser().parse_args(
        ["prune", "--config", str(path), "--pr_target", "0.6", "--conv_type", "BlockRandomConv",
         "--method", "1xn", "--N", "8", "--full", "--exclude", "stem", "--exclude", "fc"])
    cfg = config_from_args(args)
    assert (cfg.method, cfg.criterion, cfg.pr_target, cfg.N, cfg.full) == (
        "1xn", "random", 0.6, 8, True)
    assert cfg.exclude == ["stem", "fc"]


def test_recipes_are_valid_configs():
    from sparsekernels.train.recipes import DIGITS_RECIPES

    for name in DIGITS_RECIPES:
        RunConfig(**recipe(name)).validate()
    with pytest.raises(ValueError, match="recipe"):
        recipe("nope")


@pytest.mark.parametrize("changes, match", [
    ({"resume": "no"}, "resume: expected true or false, got 'no'"),
    ({"full": 1}, "full: expected true or false"),
    ({"N": 4.0}, "N: expected an int, got 4.0"),
    ({"seed": True}, "seed: expected an int"),
    ({"pr_target": "0.5"}, "pr_target: expected a finite number"),
    ({"lr": float("inf")}, "lr: expected a finite number"),
    ({"lr": "1e-3"}, "write 1.0e-3"),
    ({"exclude": "fc"}, "exclude: expected a list of strings"),
    ({"exclude": ["fc", 3]}, "exclude: expected a list of strings"),
    ({"data_path": 3}, "data_path: expected a string"),
    ({"job_dir": None}, "job_dir: expected a string"),
    ({"job_dir": ""}, "job_dir: expected a path"),
    ({"pretrained_model": ""}, "pretrained_model: expected a path"),
    ({"num_classes": 0}, r"num_classes: expected an int in \[1, "),
    ({"num_classes": 10 ** 12}, r"num_classes: expected an int in \[1, "),
    ({"N": 10 ** 6}, r"N: expected an int in \[1, "),
    ({"arch": "nope"}, "arch: unknown model"),
    ({"dataset": "nope"}, "dataset: unknown"),
    ({"momentum": 1.0}, "momentum"),
    ({"seed": -1}, "seed"),
    ({"warmup_length": 10}, "warmup_length: expected < num_epochs=10"),
    ({"pretrain_epochs": 0}, "pretrain_epochs: dense training comes first"),
])
def test_every_field_is_type_and_range_checked(changes, match):
    with pytest.raises(ValueError, match=match):
        RunConfig.from_dict(changes)


def test_ints_are_numbers_and_no_dense_phase_needs_no_pretrain_epochs():
    cfg = RunConfig.from_dict({"lr": 1, "pretrain_epochs": 0, "pretrained_model": "d.pt"})
    assert cfg.lr == 1


def test_only_settings_that_keep_the_result_may_change_on_resume():
    from sparsekernels.train.config import changed_fields, with_absolute_paths

    cfg = with_absolute_paths(RunConfig(pretrained_model="dense.pt"))
    same = with_absolute_paths(RunConfig(pretrained_model="./dense.pt", num_workers=2,
                                         eval_batch_size=7, resume=False))
    assert changed_fields(cfg, same) == []
    other = with_absolute_paths(RunConfig(pretrained_model="other/dense.pt", N=8, lr=0.02))
    assert changed_fields(cfg, other) == ["pretrained_model", "N", "lr"]
