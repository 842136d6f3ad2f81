"""The gradients of one optimizer step, for a given loss, micro-batch, number of ranks and reduction.

Run as a script for several ranks (Lightning's DDP launcher re-runs this file in each process):
    python -m tests.helpers.step_gradients OUT.pt DEVICES MICRO REDUCTION LOSS [LOSS ...]
"""

import sys
from pathlib import Path

import lightning as L
import torch

from dftlab.losses import REGISTRY
from tests.conftest import FAST
from tests.helpers import rl

LOSSES = list(REGISTRY)  # every member of the family (DPO on pairs, GRPO with a rollout: see helpers.rl)
# each rank samples its own share with its own seed, so a GRPO step on 2 ranks has other samples than on 1
RANK_INVARIANT = [name for name in LOSSES if name != "grpo"]


class CaptureGradients(L.Callback):
    def __init__(self):
        self.grads = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        params = dict(pl_module.policy.lm.named_parameters())
        self.grads = {n: p.grad.detach().clone() for n, p in params.items()}
        self.weights = {n: p.detach().clone() for n, p in params.items()}
        trainer.should_stop = True


class SaveGradients(L.Callback):
    """The first step's gradients, saved to `path`: a callback a run's config can name
    (`+callbacks.grads._target_=tests.helpers.step_gradients.SaveGradients +callbacks.grads.path=...`)."""

    def __init__(self, path: str):
        self.path, self.saved = path, False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if not self.saved:
            torch.save({n: p.grad.detach().clone() for n, p in pl_module.policy.lm.named_parameters()}, self.path)
            self.saved = True


def step_gradients(loss: str, micro: int, devices: int = 1, reduction: str = "token", path: str = "naive",
                   run_dir="/tmp",
                   extra=(), callbacks=()):
    from dftlab.config import compose_config
    from dftlab.run import setup

    overrides = [
        *FAST,
        f"loss={loss}",
        "data.task.n_train=12",
        "data.batch_size=4",
        f"data.micro_batch_size={micro}",
        "trainer.max_steps=1",
        "+trainer.limit_val_batches=0",
        f"engine.reduction={reduction}",
        f"engine.path={path}",
        "optim.grad_clip=null",
        f"paths.output_dir={run_dir}",
        "~logger",
        "~callbacks",
        *extra,
        *rl.overrides(loss, Path(run_dir) / "samples"),
    ]
    if devices > 1:
        overrides += ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}"]
    capture = CaptureGradients()
    s = setup(compose_config(overrides), extra_callbacks=[*callbacks, capture])
    s.trainer.fit(s.module, datamodule=s.datamodule)
    s.capture = capture
    return capture.grads, s


if __name__ == "__main__":
    out, devices, micro, reduction, *losses = sys.argv[1:]
    results = {loss: step_gradients(loss, int(micro), int(devices), reduction)[0] for loss in losses}
    if torch.distributed.get_rank() == 0:
        torch.save(results, out)
