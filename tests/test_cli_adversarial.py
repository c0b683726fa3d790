"""The command line against bad input, reused job folders, hand-edited files
and crashes: every user error ends in ``error: ...`` with exit code 2 (never a
traceback), and a job folder never labels old results with new settings.

One tiny digits run (1 dense + 1 fine-tuning epoch) is shared; each test
edits copies of its files.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from sparsekernels.atomic_file import atomic_write
from sparsekernels.cli import main
from sparsekernels.train.pipeline import write_result

TINY = ["--pretrain_epochs", "1", "--num_epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1xN job folder and its exported model (read-only: copy it)."""
    job = tmp_path_factory.mktemp("finished") / "job"
    assert main(["prune", *TINY, "--job_dir", str(job)]) == 0
    assert main(["export", str(job / "pruned.pt")]) == 0
    return job


@pytest.fixture
def job(finished, tmp_path):
    copy = tmp_path / "job"
    shutil.copytree(finished, copy)
    return copy


def cli_error(capsys, *argv) -> str:
    """Run the CLI expecting a user error; returns its message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "error: " in err and "Traceback" not in err
    return err


# ---- family 3: a job folder keeps the settings it was started with ---------------------

@pytest.mark.parametrize("flags, field", [
    (["--pr_target", "0.75"], "pr_target"),
    (["--N", "2"], "N"),
    (["--method", "magnitude"], "method"),
    (["--arch", "lenet5"], "arch"),
    (["--seed", "1"], "seed"),
    (["--full"], "full"),
    (["--lr", "0.02"], "lr"),
])
def test_resume_with_a_result_changing_setting_is_refused(job, capsys, flags, field):
    before = {name: (job / name).read_bytes() for name in ("pruned.pt", "result.json")}
    err = cli_error(capsys, "prune", *TINY, "--job_dir", job, *flags)
    assert f"{field}: " in err and str(job) in err and "--no-resume" in err
    assert {name: (job / name).read_bytes() for name in before} == before


def test_resume_may_change_workers_and_eval_batch_size(job, capsys):
    main(["prune", *TINY, "--job_dir", str(job), "--num_workers", "0",
          "--eval_batch_size", "100", "--json"])
    assert json.loads(capsys.readouterr().out)["config"]["eval_batch_size"] == 100


def test_no_resume_starts_over_and_records_the_new_settings(job, capsys):
    dense = job.parent / "dense.pt"  # outside the folder: --no-resume removes job/dense.pt
    shutil.copy(job / "dense.pt", dense)
    (job / "notes.txt").write_text("mine")
    main(["prune", *TINY, "--job_dir", str(job), "--no-resume", "--pr_target", "0.75",
          "--pretrained_model", str(dense), "--json"])
    assert json.loads(capsys.readouterr().out)["sparsity"] == pytest.approx(0.75, abs=0.01)
    recorded = json.loads((job / "config.json").read_text())["config"]
    assert recorded["pr_target"] == 0.75
    assert not (job / "dense").exists() or not any((job / "dense").iterdir())
    assert not (job / "dense.pt").exists()  # the old run's, removed
    assert (job / "notes.txt").read_text() == "mine"  # not ours: kept
    # and the new settings are now the folder's: the old ones are refused
    assert "pr_target: 0.75 -> 0.5" in cli_error(capsys, "prune", *TINY, "--job_dir", job)


def test_outputs_without_a_record_are_refused(job, capsys):
    (job / "config.json").unlink()
    err = cli_error(capsys, "prune", *TINY, "--job_dir", job)
    assert "config.json" in err and "pruned.pt" in err


@pytest.mark.parametrize("text", ["{not json", "[]", '{"command": "prune", "config": {"N": "4"}}'])
def test_a_bad_job_record_is_named(job, capsys, text):
    (job / "config.json").write_text(text)
    assert str(job / "config.json") in cli_error(capsys, "prune", *TINY, "--job_dir", job)


def test_finetune_job_keeps_its_settings_and_inputs(job, tmp_path, capsys):
    ft = tmp_path / "ft"
    main(["finetune", "--pruned_model", str(job / "pruned.pt"), "--num_epochs", "1",
          "--job_dir", str(ft), "--no-progress"])
    err = cli_error(capsys, "finetune", "--pruned_model", job / "pruned.pt", "--num_epochs", 2,
                    "--job_dir", ft)
    assert "num_epochs: 1 -> 2" in err
    other = tmp_path / "other.pt"
    shutil.copy(job / "pruned.pt", other)
    assert "pruned_model" in cli_error(capsys, "finetune", "--pruned_model", other,
                                       "--num_epochs", 1, "--job_dir", ft)
    # a prune folder is not a finetune folder
    assert "command: 'prune' -> 'finetune'" in cli_error(
        capsys, "finetune", "--pruned_model", other, "--num_epochs", 1, "--job_dir", job)


def test_an_input_inside_the_outputs_is_refused(job, capsys):
    err = cli_error(capsys, "finetune", "--pruned_model", job / "pruned.pt", "--job_dir", job,
                    "--no-resume")
    assert "pruned_model" in err and "outputs" in err
    assert (job / "pruned.pt").exists()


# ---- family 5: user errors --------------------------------------------------------------

def test_job_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert "it is not a folder" in cli_error(capsys, "prune", *TINY, "--job_dir", path)
    assert f"its parent {path} is not a folder" in cli_error(capsys, "prune", *TINY,
                                                             "--job_dir", path / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_job_dir(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "not writable" in cli_error(capsys, "prune", *TINY, "--job_dir", locked / "job")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_job_dir_where_nothing_can_be_created(capsys):
    # /proc refuses new entries even to root, which the mode check cannot show.
    err = cli_error(capsys, "prune", *TINY, "--job_dir", "/proc/sparsekernels-job")
    assert "job_dir /proc/sparsekernels-job: cannot be written" in err


@pytest.mark.parametrize("name, text, message", [
    ("missing.yaml", None, "does not exist"),
    ("c.yaml", "a: [1,\n", "not valid YAML"),
    ("c.yaml", "\tmethod: 1xn\n", "not valid YAML"),
    ("c.json", "{'method': '1xn'}", "not valid JSON"),
    ("c.json", "[1, 2]", "expected a mapping"),
    ("c.yaml", "just text\n", "expected a mapping"),
    ("c.yaml", "methd: 1xn\n1: 2\n", "unknown key"),
    ("c.toml", "method = 1", "expected a .yaml"),
    ("c.yaml", "resume: 'no'\n", "resume: expected true or false"),
    ("c.yaml", "lr: 1e-3\n", "write 1.0e-3"),
    ("c.json", '{"N": 4.0}', "N: expected an int"),
    ("c.json", '{"num_classes": 0}', "num_classes"),
    ("c.json", '{"pr_target": NaN}', "pr_target: expected a finite number"),
    ("c.yaml", "exclude: fc\n", "exclude: expected a list"),
])
def test_bad_config_file(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    err = cli_error(capsys, "prune", "--config", path, "--job_dir", tmp_path / "job")
    assert str(path) in err and message in err
    assert not (tmp_path / "job").exists()


def test_config_file_that_is_a_folder_or_binary(tmp_path, capsys):
    (tmp_path / "d.yaml").mkdir()
    assert "is not a file" in cli_error(capsys, "prune", "--config", tmp_path / "d.yaml")
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe\x00bad")
    assert "b.yaml" in cli_error(capsys, "prune", "--config", tmp_path / "b.yaml")


@pytest.mark.parametrize("flags, message", [
    (["--num_classes", "0"], "num_classes: expected an int in [1,"),
    (["--num_classes", str(10 ** 12)], "num_classes: expected an int in [1,"),
    (["--num_classes", "5"], "has 10 classes"),
    (["--pr_target", "nan"], "pr_target"),
    (["--lr", "inf"], "lr: expected a finite number"),
    (["--seed", "-1"], "seed"),
    (["--warmup_length", "1"], "warmup_length"),
    (["--arch", "resnet50"], "does not take data set 'digits'"),
    (["--pretrained_model", "nope.pt"], "nope.pt does not exist"),
    (["--method", "l1_filter", "--l1-preset", "nope"],
     "l1_preset: unknown 'nope'; expected one of ['resnet110-A', 'resnet110-B', 'resnet56-A', "
     "'resnet56-B', 'vgg16_bn-A']"),
    (["--method", "l1_filter", "--l1_preset", "resnet56-A"],
     "l1_preset: 'resnet56-A' prunes layers of arch 'resnet56', not of arch 'digits_cnn'"),
])
def test_bad_flags(tmp_path, capsys, flags, message):
    err = cli_error(capsys, "prune", *TINY, "--job_dir", tmp_path / "job", *flags)
    assert message in err
    assert not (tmp_path / "job" / "dense").exists()


def _edit(path, change):
    record = torch.load(path, weights_only=True)
    change(record)
    torch.save(record, path)


def _break_1xn(record):
    mask = record["masks"]["features.1.0"]
    mask[tuple((~mask).nonzero()[0])] = True  # one weight of a pruned block: not 1x4


def _prune_kept_block(record):
    mask = record["masks"]["features.1.0"]
    out, cin = (int(i) for i in mask.nonzero()[0][:2])
    mask[out // 4 * 4: out // 4 * 4 + 4, cin] = False  # still 1x4, but the weights are not 0


def _set_config(**changes):
    def change(record):
        record["config"] = json.dumps({**json.loads(record["config"]), **changes})
    return change


PRUNED_EDITS = {
    "no arch": (lambda r: r.pop("arch"), "arch: expected one of"),
    "unknown arch": (lambda r: r.update(arch="nope"), "arch: expected one of"),
    "huge num_classes": (lambda r: r.update(num_classes=10 ** 12), "num_classes"),
    "num_classes text": (lambda r: r.update(num_classes="10"), "num_classes"),
    "no state_dict": (lambda r: r.pop("state_dict"), "state_dict: expected a dict"),
    "a list in the state": (lambda r: r["state_dict"].update({"classifier.bias": [0.0] * 10}),
                            "expected names mapped to tensors"),
    "wrong weight shape": (lambda r: r["state_dict"].update(
        {"classifier.weight": torch.zeros(10, 7)}), "a forward of inputs (1, 8, 8) fails"),
    "1-D conv weight": (lambda r: r["state_dict"].update(
        {"features.1.0.weight": torch.zeros(64)}), "features.1.0"),
    "NaN weight": (lambda r: r["state_dict"]["classifier.bias"].fill_(float("nan")),
                   "NaN or infinite"),
    "extra key": (lambda r: r["state_dict"].update({"extra": torch.zeros(1)}), "extra"),
    "masks not a dict": (lambda r: r.update(masks=[1]), "masks: expected a dict"),
    "mask of no layer": (lambda r: r["masks"].update({"nope": torch.ones(1, dtype=torch.bool)}),
                         "'nope' is not a layer"),
    "mask shape": (lambda r: r["masks"].update({"features.1.0": torch.ones(3, dtype=torch.bool)}),
                   "expected a tensor of its weight's shape"),
    "mask values": (lambda r: r["masks"].update(
        {"features.1.0": r["masks"]["features.1.0"].float() * 0.5}), "other than 0/1"),
    "mask not 1xN": (_break_1xn, "not 1x4 structured"),
    "mask prunes kept weights": (_prune_kept_block, "prunes weights that are not zero"),
    "config N": (_set_config(N=8), "not 1x8 structured"),
    "config not JSON": (lambda r: r.update(config="{"), "config: not valid JSON"),
    "config bad type": (_set_config(resume="no"), "resume: expected true or false"),
    "method unknown": (lambda r: r.update(method="nope"), "method: expected one of"),
    "method not the config's": (lambda r: r.update(method="magnitude"), "its config says"),
    "not a dict": (lambda r: r.clear(), "expected format"),
    "dpp spec": (lambda r: r.update(dpp_layers='{"layers": ["features.1.0"], "num_patterns": '
                                              '1000000000}'), "dpp_layers"),
}


@pytest.mark.parametrize("edit", sorted(PRUNED_EDITS))
@pytest.mark.parametrize("command", ["export", "evaluate", "finetune"])
def test_hand_edited_pruned_model_is_rejected(job, capsys, edit, command):
    change, message = PRUNED_EDITS[edit]
    pruned = job / "pruned.pt"
    _edit(pruned, change)
    argv = {"export": ["export", pruned, "--out", job / "out.pt"],
            "evaluate": ["evaluate", pruned],
            "finetune": ["finetune", "--pruned_model", pruned, "--job_dir", job / "ft",
                         "--num_epochs", 1, "--no-progress"]}[command]
    err = cli_error(capsys, *argv)
    assert str(pruned) in err and message in err
    assert not (job / "out.pt").exists() and not (job / "ft" / "finetune").exists()


def _set_sparse_layers(layers):
    return lambda r: r.update(sparse_layers=json.dumps(layers))


SPARSE_EDITS = {
    "row_ptr": (lambda r: r["state_dict"]["features.1.0.row_ptr"].__setitem__(3, 10 ** 6),
                "row_ptr"),
    "col_idx range": (lambda r: r["state_dict"]["features.1.0.col_idx"].__setitem__(0, 999),
                      "col_idx"),
    "col_idx dtype": (lambda r: r["state_dict"].update({
        "features.1.0.col_idx": r["state_dict"]["features.1.0.col_idx"].float()}), "col_idx"),
    "values shape": (lambda r: r["state_dict"].update({
        "features.1.0.values": r["state_dict"]["features.1.0.values"][:-1]}), "values"),
    "huge n": (_set_sparse_layers({"features.1.0": {"kind": "1xN", "n": 10 ** 9}}), "n="),
    "n text": (_set_sparse_layers({"features.1.0": {"kind": "1xN", "n": "4"}}), "n="),
    "kind": (_set_sparse_layers({"features.1.0": {"kind": "2:4", "n": 4}}), "kind"),
    "not a conv": (_set_sparse_layers({"classifier": {"kind": "1xN", "n": 4}}), "not a Conv2d"),
    "no such layer": (_set_sparse_layers({"nope": {"kind": "1xN", "n": 4}}), "'nope'"),
    "not JSON": (lambda r: r.update(sparse_layers="{"), "sparse_layers: expected JSON"),
    "huge num_classes": (lambda r: r.update(num_classes=10 ** 12), "num_classes"),
}


@pytest.mark.parametrize("edit", sorted(SPARSE_EDITS))
def test_hand_edited_exported_model_is_rejected(job, capsys, edit):
    change, message = SPARSE_EDITS[edit]
    _edit(job / "sparse.pt", change)
    err = cli_error(capsys, "evaluate", job / "sparse.pt")
    assert str(job / "sparse.pt") in err and message in err


def test_export_output_must_not_be_its_input(job, capsys):
    before = (job / "pruned.pt").read_bytes()
    assert "also the pruned_model" in cli_error(capsys, "export", job / "pruned.pt",
                                                "--out", job / "pruned.pt")
    assert (job / "pruned.pt").read_bytes() == before
    assert "exported (sparse) model" in cli_error(capsys, "export", job / "sparse.pt",
                                                  "--out", job / "again.pt")


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "{job}"], "is not a file"),
    (["evaluate", "{job}/missing.pt"], "does not exist"),
    (["evaluate", "{job}/config.json"], "not a readable torch file"),
    (["evaluate", "{job}/pruned.pt", "--eval_batch_size", "0"], "eval_batch_size"),
    (["evaluate", "{job}/pruned.pt", "--dataset", "nope"], "unknown data set"),
    (["export", "{job}/pruned.pt", "--out", "{job}/config.json/x.pt"], "config.json"),
    (["export", "{job}/pruned.pt", "--out", "{job}/finetune"], "is a folder"),
])
def test_bad_model_paths(job, capsys, argv, message):
    assert message in cli_error(capsys, *(a.format(job=job) for a in argv))


# ---- family 6: files after a crash --------------------------------------------------------

def _edit_checkpoint(path, **changes):
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)


@pytest.mark.parametrize("changes, message", [
    ({"epoch": -2}, "epoch -2"),
    ({"epoch": 10 ** 6}, "out of range"),
    ({"epoch": 1.0}, "entry 'epoch' has type float"),
    ({"model": [1]}, "entry 'model'"),
    ({"metrics": {"epoch": 5}}, "last record is of epoch 5"),
])
def test_hand_edited_checkpoint_is_refused_on_resume(job, capsys, changes, message):
    path = job / "finetune" / "checkpoint.pt"
    _edit_checkpoint(path, **changes)
    err = cli_error(capsys, "prune", *TINY, "--job_dir", job)
    assert str(path) in err and message in err


def test_checkpoint_with_foreign_weights_is_refused(job, capsys):
    path = job / "finetune" / "checkpoint.pt"
    _edit_checkpoint(path, model={"nope": torch.zeros(1)})
    assert "does not fit this run" in cli_error(capsys, "prune", *TINY, "--job_dir", job)


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from sparsekernels.atomic_file import atomic_write

    def killed(*args):  # dies between writing the temp file and renaming it
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = killed
    with atomic_write(sys.argv[1], "w") as f:
        f.write("new")
""")


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)])
    assert proc.returncode == -signal.SIGKILL
    stale = [p for p in tmp_path.iterdir() if p != target]
    assert len(stale) == 1 and stale[0].name.startswith(".result.json.")
    assert target.read_text() == "old"
    # A live writer's temp file (another rank), another host's and other
    # files are not touched.
    host_part = stale[0].name.split(".")[3]
    live = tmp_path / f".result.json.{host_part}.{os.getppid()}.0badcafe.tmp"
    remote = tmp_path / f".result.json.otherhost.{2 ** 22 + 7}.0badcafe.tmp"
    other = tmp_path / ".result.json.notes"
    for path in (live, remote, other):
        path.write_text("keep")
    with atomic_write(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, live.name, remote.name, other.name])


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    old_umask = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new.txt", "w") as f:
            f.write("x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old_umask)
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    kept.chmod(0o604)
    with atomic_write(kept, "w") as f:
        f.write("y")
    assert kept.stat().st_mode & 0o777 == 0o604 and kept.read_text() == "y"


def test_result_json_never_describes_another_pruned_model(tmp_path):
    (tmp_path / "pruned.pt").write_text("old model")
    (tmp_path / "result.json").write_text('{"old": true}')

    def crash(path):
        raise KeyboardInterrupt  # killed while writing pruned.pt

    with pytest.raises(KeyboardInterrupt):
        write_result(tmp_path, {"new": True}, crash)
    assert (tmp_path / "pruned.pt").read_text() == "old model"
    assert not (tmp_path / "result.json").exists()
    write_result(tmp_path, {"new": True}, lambda path: path.write_text("new model"))
    assert json.loads((tmp_path / "result.json").read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.pt", "result.json"]
