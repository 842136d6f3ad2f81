"""A preemption that arrives by itself during a given optimizer step (for tests of resuming)."""

from dftlab.callbacks.preemption import Preemption


class StopAt(Preemption):
    def __init__(self, step: int):
        super().__init__(signals=())
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step + 1 == self.step:
            self.requested = True
