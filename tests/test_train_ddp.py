"""Two CPU ranks (gloo) fine-tune a masked CNN through DDP under torchrun.

The test launches this file with ``torch.distributed.run --standalone``
(which picks a free port); each rank then runs :func:`worker`.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from sparsekernels.pruning.base import SavedMask  # the pruners' mask parametrization
from sparsekernels.train import Trainer, TrainHooks, cleanup, init_from_env

REPO = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2


def separable_data(n, seed):
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    targets = torch.randint(6, (n,), generator=gen)
    return TensorDataset(templates[targets] + 0.5 * torch.randn(n, 1, 8, 8, generator=gen), targets)


def masked_cnn(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 6),
    )
    mask = SavedMask(torch.ones_like(model[3].weight))
    parametrize.register_parametrization(model[3], "weight", mask)
    return model


class MagnitudePruner(TrainHooks):
    """Masks the smallest |w| of the parametrized conv, more each epoch,
    computed from the weights alone (which DDP keeps equal on all ranks)."""

    def __init__(self, interrupt_at_epoch=None):
        self.interrupt_at_epoch = interrupt_at_epoch

    def on_epoch_start(self, epoch, model):
        if epoch == self.interrupt_at_epoch:
            raise KeyboardInterrupt("simulated kill")
        original = model[3].parametrizations.weight.original
        pruned = int(0.25 * (epoch + 1) * original.numel())
        threshold = original.abs().flatten().kthvalue(pruned + 1).values
        mask = model[3].parametrizations.weight[0].mask
        with torch.no_grad():
            mask.copy_((original.abs() >= threshold).float())

    def sparsity(self, model):
        return 1.0 - model[3].parametrizations.weight[0].mask.mean().item()


def worker(out_dir: Path) -> None:
    """One rank: train straight, then interrupted and resumed; save the states."""
    torch.set_num_threads(1)
    info = init_from_env(device="cpu")  # gloo ranks on the CPU even where a GPU exists

    def trainer(job, seed, **hooks_args):
        # A different initialisation per rank: DDP must broadcast rank 0's.
        # 65 test images: shards of 33 and 32, i.e. 3 and 2 eval batches.
        return Trainer(masked_cnn(seed=seed + info.rank), separable_data(128, 1),
                       separable_data(65, 2), epochs=2, batch_size=16, eval_batch_size=16,
                       lr=0.05, job_dir=out_dir / job, progress=False, device=info.device,
                       hooks=[MagnitudePruner(**hooks_args)])

    try:
        straight = trainer("straight", seed=0)
        result = straight.fit()
        try:
            trainer("resumed", seed=0, interrupt_at_epoch=1).fit()
        except KeyboardInterrupt:
            pass
        resumed = trainer("resumed", seed=7)  # its weights all come from the checkpoint
        resumed.fit()
        torch.save({
            "state": straight.model.state_dict(),
            "weight": straight.model[3].weight.detach(),  # original * mask
            "resumed_state": resumed.model.state_dict(),
            "result": result,
            "iters_per_epoch": len(straight.train_loader),
        }, out_dir / f"rank{info.rank}.pt")
        # Both ranks past their last collective before either tears gloo
        # down: without it a rank aborted at exit in ~1 run in 6
        # ("terminate called without an active exception").
        torch.distributed.barrier()
    finally:
        cleanup()


def test_ranks_end_identical_with_masks_applied(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={WORLD_SIZE}", __file__, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]

    for rank in ranks:
        assert rank["iters_per_epoch"] == 4  # each rank trains on its half: 64 / 16
    first, second = ranks[0]["state"], ranks[1]["state"]
    assert first.keys() == second.keys()
    for name in first:  # weights, masks and BN statistics
        assert torch.equal(first[name], second[name]), name
    for rank in ranks:
        del rank["result"]["seconds"]
    assert ranks[0]["result"] == ranks[1]["result"]  # metrics all-reduced

    mask = first["3.parametrizations.weight.0.mask"]
    assert 0.45 < 1 - mask.mean().item() < 0.55  # pruned 50% by epoch 2
    for rank in ranks:
        weight = rank["weight"]
        assert torch.all(weight[mask == 0] == 0) and torch.all(weight[mask == 1] != 0)

    for rank in ranks:  # a resumed DDP run replays the uninterrupted one
        for name in first:
            assert torch.equal(rank["resumed_state"][name], first[name]), name

    job_files = sorted(p.name for p in (tmp_path / "straight").iterdir())
    assert job_files == ["best.pt", "checkpoint.pt", "log.jsonl"]
    log = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [0, 1]



def test_init_from_env_outside_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    info = init_from_env()
    assert (info.rank, info.world_size) == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        init_from_env()


def test_init_from_env_refuses_a_rank_without_its_own_gpu(monkeypatch):
    """torchrun with 2 processes on a 1-GPU node: rank 1 gets a clear error
    (not an "invalid device ordinal" from set_device), and device="cpu"
    keeps both ranks on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="LOCAL_RANK=1 but this node has 1 CUDA device"):
        init_from_env()
    assert init_from_env(device="cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match="device: expected"):
        init_from_env(device="cuda")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
