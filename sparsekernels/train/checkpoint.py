"""Atomic checkpoints and the RNG states that make a resume exact."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from ..atomic_file import atomic_write

CHECKPOINT_KEYS = frozenset({
    "epoch",         # epochs completed: the resumed run starts at this epoch
    "model", "optimizer", "lr_scheduler", "scaler",
    "hooks",         # one state_dict per hook, in order
    "rng",           # one rng_state() per rank
    "config",        # the Trainer's hyper-parameters, to spot a changed resume
    "best_top1",     # so best.pt is not overwritten by a worse epoch after a resume
    "metrics",       # the last epoch's log record, returned by fit() if nothing is left
})


# The type each entry must have: a hand-edited or foreign file fails on
# load, naming the entry, not later inside the resume.
_ENTRY_TYPES = {
    "epoch": int, "model": dict, "optimizer": dict, "lr_scheduler": dict, "scaler": dict,
    "hooks": list, "rng": list, "config": dict, "best_top1": (int, float), "metrics": dict,
}


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or is not one of ours."""


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through ``atomic_write``: a crash leaves
    either the old file or the new one, never a torn one."""
    path = Path(path)
    missing = CHECKPOINT_KEYS - state.keys()
    if missing:
        raise ValueError(f"checkpoint state lacks {sorted(missing)}")
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (with
    ``weights_only=True``: loading executes no pickled code). Raises
    :class:`CheckpointError` naming the file when it is truncated, corrupt or
    was not written by this trainer."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a bad archive
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {err}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a training checkpoint")
    missing = CHECKPOINT_KEYS - state.keys()
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint of sparsekernels.train: "
            f"it lacks {sorted(missing)}"
        )
    for key, kind in _ENTRY_TYPES.items():
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise CheckpointError(f"{path}: entry {key!r} has type {type(state[key]).__name__}, "
                                  f"not that of a training checkpoint")
    if state["epoch"] < 1:  # saved after each finished epoch: at least one
        raise CheckpointError(f"{path}: epoch {state['epoch']} is not a finished epoch count")
    return state


def rng_state() -> Dict[str, Any]:
    """This process's torch (CPU and CUDA), numpy and Python RNG states, as
    types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": np_state["state"]["pos"],
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        },
        "python": random.getstate(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    random.setstate(state["python"])
