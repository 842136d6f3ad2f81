"""Gradient clipping reuses the norm computed for logging and the non-finite guard: the clipped
gradients are exactly those of torch.nn.utils.clip_grad_norm_ on the same gradients."""

import lightning as L
import torch

from dftlab.run import setup
from tests.conftest import fast_cfg


class Grads(L.Callback):
    """Each step's gradients before clipping (callbacks run before the module's hook) and after the
    optimizer step (clipped; Lightning zeroes them in the next step's closure), in the optimizer's
    parameter order."""

    def __init__(self):
        self.before, self.after, self.logged = [], [], []

    @staticmethod
    def _grads(optimizer):
        return [p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append(self._grads(optimizer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(self._grads(trainer.optimizers[0]))
        self.logged.append(float(trainer.callback_metrics["train/grad_norm"]))


def test_clipped_gradients_equal_clip_grad_norm(tmp_path):
    clip = 1e-3  # well under the gradient norm of these first steps: clipping acts on every step
    grads = Grads()
    s = setup(fast_cfg(tmp_path, "loss=dft", f"optim.grad_clip={clip}", "trainer.max_steps=3", "eval.enabled=false",
                       "~callbacks.token_histograms"), extra_callbacks=[grads])
    s.trainer.fit(s.module, datamodule=s.datamodule)
    assert len(grads.before) == len(grads.after) == 3
    for before, after, logged in zip(grads.before, grads.after, grads.logged):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in before]
        for p, g in zip(params, before):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        assert norm > 2 * clip
        assert logged == float(norm)  # the logged norm is the one clipping used
        for p, got, unclipped in zip(params, after, before):
            assert torch.equal(got, p.grad)
            assert not torch.equal(got, unclipped)


def test_no_clipping_leaves_gradients_alone(tmp_path):
    grads = Grads()
    s = setup(fast_cfg(tmp_path, "loss=sft", "optim.grad_clip=null", "trainer.max_steps=1", "eval.enabled=false",
                       "~callbacks.token_histograms"), extra_callbacks=[grads])
    s.trainer.fit(s.module, datamodule=s.datamodule)
    for got, unclipped in zip(grads.after[0], grads.before[0]):
        assert torch.equal(got, unclipped)
