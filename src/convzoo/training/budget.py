"""A training-time budget (`time_limit_minutes`): the run ends at the budget, its lr already decayed.

Only time spent in the training loop counts (loading batches, forward, backward, update);
validation and writing the run folder between epochs do not. The budget acts in two places:

- the train loader stops yielding batches once the budget is spent, so the last epoch is cut
  short and the run ends after its validation;
- the lr schedule is read at the nominal epoch max(real epoch, epochs x spent / budget): the
  schedule is stretched over whichever ends first, the budget or `epochs` epochs, so the run
  always ends at the end of its schedule (a slow machine does fewer, a fast one all `epochs`).

Spent time is the sum of the `train_seconds` of the epochs done, so a resumed run continues its
budget where it stopped.
"""

from __future__ import annotations

import time

from ..recipes.config import RunConfig

CLOCK = time.perf_counter  # module-level so tests can substitute a fake clock


class TimeBudget:
    def __init__(self, minutes: float, spent_seconds: float = 0.0, clock=None):
        self.limit = 60.0 * float(minutes)
        self.spent_before, self.clock, self._t0 = float(spent_seconds), clock or CLOCK, None

    def elapsed(self) -> float:
        return self.spent_before + (self.clock() - self._t0 if self._t0 is not None else 0.0)

    @property
    def exhausted(self) -> bool:
        return self.elapsed() >= self.limit

    def fraction(self) -> float:
        return min(1.0, self.elapsed() / self.limit)


class BudgetLoader:
    """`loader` that stops between batches once the budget is spent; times the iteration."""

    def __init__(self, loader, budget: TimeBudget):
        self.loader, self.budget = loader, budget

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):  # dataset, generator, batch_size, ... of the wrapped loader
        return getattr(self.loader, name)

    def __iter__(self):
        b = self.budget
        b._t0 = b.clock()
        try:
            for batch in self.loader:
                if b.exhausted:
                    break
                yield batch
        finally:
            b.spent_before += b.clock() - b._t0
            b._t0 = None


class BudgetSchedule:
    """An LRSchedule read at max(epoch, epochs x budget fraction) (see the module docstring)."""

    def __init__(self, schedule, budget: TimeBudget, epochs: int):
        self.schedule, self.budget, self.epochs = schedule, budget, epochs

    def __getattr__(self, name):  # epoch_end, state_dict, load_state_dict
        return getattr(self.schedule, name)

    def position(self, epoch: float) -> float:
        return max(epoch, self.epochs * self.budget.fraction())

    def step(self, epoch: float) -> float:
        return self.schedule.step(self.position(epoch))

    def lr_at(self, epoch: float) -> float:
        return self.schedule.lr_at(self.position(epoch))


def time_budget(cfg: RunConfig, data, schedule, history: list[dict]):
    """(budget or None, schedule): wraps `data.train` and `schedule` when time_limit_minutes is set."""
    if cfg.time_limit_minutes is None:
        return None, schedule
    budget = TimeBudget(cfg.time_limit_minutes, sum(r["train_seconds"] for r in history))
    data.train = BudgetLoader(data.train, budget)
    return budget, BudgetSchedule(schedule, budget, cfg.epochs)
