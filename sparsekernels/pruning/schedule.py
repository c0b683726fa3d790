"""Sparsity schedules (SparseML-style) and the torch.ao scheduler that applies them.

:class:`SparsitySchedule` says how far pruning has gone at an epoch;
:class:`ScheduledPruning` scales every sparsifier group's own target by it, so
one schedule drives any ``BaseSparsifier`` (1xN, pattern, magnitude, or
torch's own) whatever the per-layer targets are.

Call order in a training loop::

    sparsifier.prepare(model, config)       # masks of ones, targets in config
    scheduler = ScheduledPruning(sparsifier, schedule)   # sets epoch 0's levels
    for epoch in range(start_epoch, num_epochs):
        scheduler.step(epoch)   # this epoch's levels (a repeat of the last epoch is a no-op)
        sparsifier.step()       # recompute the masks; a no-op when no level changed
        train_one_epoch(...)
    sparsifier.squash_mask()    # plain Parameters with the zeros baked in

Without an epoch, ``scheduler.step()`` advances one epoch: call it at the
*end* of each epoch instead (torch's order, ``sparsifier.step()`` first).
A level change stays pending until ``sparsifier.step()`` runs, however many
scheduler steps come between. Build the optimizer before or after
``prepare``: the weight Parameter object survives both ``prepare`` and
``squash_mask``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch.ao.pruning import BaseSparsifier
from torch.ao.pruning.scheduler.base_scheduler import BaseScheduler

INTER_FUNCS = ("cubic", "linear", "one_shot")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True, kw_only=True)
class SparsitySchedule:
    """Sparsity as a function of the (possibly fractional) epoch.

    - before ``start_epoch``: 0 (pruning has not started);
    - ``one_shot``: ``final_sparsity`` from ``start_epoch`` on;
    - ``linear`` / ``cubic``: from ``init_sparsity`` at ``start_epoch`` to
      ``final_sparsity`` at ``end_epoch``, updated only every
      ``update_frequency`` epochs: with ``progress = (t - start) / (end - start)``
      and ``t`` the last update point ``start + k*update_frequency <= epoch``,
      linear ``s = s_i + (s_f - s_i) * progress`` and cubic (Zhu & Gupta; SparseML)
      ``s = s_f + (s_i - s_f) * (1 - progress)**3``;
    - from ``end_epoch`` on: exactly ``final_sparsity``.
    """

    init_sparsity: float = 0.0
    final_sparsity: float
    start_epoch: float = 0
    end_epoch: float = 0
    update_frequency: float = 1
    inter_func: str = "cubic"

    def __post_init__(self):
        for name in ("init_sparsity", "final_sparsity"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a sparsity in [0, 1), got {value!r}")
        if self.init_sparsity > self.final_sparsity:
            raise ValueError(
                f"init_sparsity: expected <= final_sparsity={self.final_sparsity} "
                f"(pruning only adds zeros), got {self.init_sparsity}"
            )
        if self.inter_func not in INTER_FUNCS:
            raise ValueError(f"inter_func: expected one of {INTER_FUNCS}, got {self.inter_func!r}")
        if self.inter_func == "one_shot" and self.init_sparsity != 0:
            raise ValueError(
                f"init_sparsity: one_shot prunes straight to final_sparsity, "
                f"expected 0, got {self.init_sparsity}"
            )
        if not _is_number(self.start_epoch) or self.start_epoch < 0:
            raise ValueError(f"start_epoch: expected a number >= 0, got {self.start_epoch!r}")
        if not _is_number(self.end_epoch) or self.end_epoch < self.start_epoch:
            raise ValueError(
                f"end_epoch: expected a number >= start_epoch={self.start_epoch}, got {self.end_epoch!r}"
            )
        if not _is_number(self.update_frequency) or self.update_frequency <= 0:
            raise ValueError(f"update_frequency: expected a number > 0, got {self.update_frequency!r}")

    def level(self, epoch: float) -> float:
        if epoch < self.start_epoch:
            return 0.0
        if self.inter_func == "one_shot" or epoch >= self.end_epoch:
            return self.final_sparsity
        # The epsilon keeps an epoch that sits on the update grid from being
        # floored to the previous point by float error (0.3 / 0.1 = 2.999...).
        updates = math.floor((epoch - self.start_epoch) / self.update_frequency + 1e-9)
        progress = updates * self.update_frequency / (self.end_epoch - self.start_epoch)
        if self.inter_func == "cubic":
            # = s_f + (s_i - s_f)(1 - progress)^3, written from s_i (as SparseML
            # does) so that the start is exactly init_sparsity.
            progress = 1.0 - (1.0 - progress) ** 3
        return self.init_sparsity + (self.final_sparsity - self.init_sparsity) * progress


class ScheduledPruning(BaseScheduler):
    """Sets each group's ``sparsity_level`` to ``target_level * fraction``,
    ``fraction = schedule.level(epoch) / schedule.final_sparsity``.

    ``target_level`` is the group's own target: recorded from its
    ``sparsity_level`` when the scheduler attaches (unless the group already
    has one, e.g. restored by ``sparsifier.load_state_dict``), and saved with
    the sparsifier's state_dict. A uniform model (every target equal to
    ``final_sparsity``) therefore follows the schedule exactly, and every layer
    reaches exactly its own target from ``end_epoch`` on.

    The schedule is configuration, not state: ``state_dict`` leaves it out (so
    ``torch.load(weights_only=True)`` can read it back); rebuild the scheduler
    with the same schedule before ``load_state_dict``.
    """

    def __init__(self, sparsifier: BaseSparsifier, schedule: SparsitySchedule,
                 last_epoch: int = -1, verbose: bool = False):
        if not isinstance(schedule, SparsitySchedule):
            raise TypeError(f"schedule: expected a SparsitySchedule, got {type(schedule).__name__}")
        if schedule.final_sparsity == 0:
            raise ValueError("schedule: final_sparsity is 0, so it cannot scale the per-layer targets")
        self.schedule = schedule
        for group in sparsifier.groups:
            group.setdefault("target_level", group["sparsity_level"])
        super().__init__(sparsifier, last_epoch, verbose)

    def get_sl(self) -> list[float]:
        # Divide first: at the end level == final_sparsity, the fraction is
        # exactly 1.0 and each layer gets exactly its target.
        fraction = self.schedule.level(self.last_epoch) / self.schedule.final_sparsity
        return [group["target_level"] * fraction for group in self.sparsifier.groups]

    def step(self, epoch=None):
        if epoch is not None:
            if epoch == self.last_epoch:
                return
            self.last_epoch = epoch - 1  # BaseScheduler.step adds the 1 back
        previous = getattr(self, "_last_sl", None)
        super().step()
        # BaseScheduler always re-enables mask updates; only a level change
        # needs one, and it stays needed until the sparsifier has stepped
        # (BaseScheduler's wrapper counts sparsifier.step() calls).
        if self._last_sl != previous:
            self._sparsifier_steps_at_change = self.sparsifier._step_count
        pending = self.sparsifier._step_count == self._sparsifier_steps_at_change
        self.sparsifier.enable_mask_update = pending

    def state_dict(self) -> dict:
        return {key: value for key, value in super().state_dict().items() if key != "schedule"}
