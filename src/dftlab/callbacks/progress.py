"""The progress bar: Lightning's, with a description that makes sense for a run bounded by steps
(`trainer.max_epochs=-1`, `max_steps=N`), where Lightning's reads "Epoch 2/-2"."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


class RichStepsBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}" + (f" (to step {trainer.max_steps})" if trainer.max_steps > 0 else "")
        return f"{description:{len(self.validation_description)}}"


def progress_bar():
    """The bar Lightning would choose (rich when it is installed), described by steps when bounded by steps."""
    return RichStepsBar() if _RICH_AVAILABLE else TQDMProgressBar()
