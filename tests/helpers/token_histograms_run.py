"""A tiny run with the token_histograms callback measuring at every step.

Run as a script for several ranks (Lightning's DDP launcher re-runs this file in each process):
    python -m tests.helpers.token_histograms_run RUN_DIR DEVICES
"""

import sys

from tests.conftest import FAST

N_EXAMPLES = 39  # odd: two ranks get shares of 20 and 19 examples
OVERRIDES = [
    *FAST,
    "eval.enabled=false",
    f"callbacks.token_histograms.n_examples={N_EXAMPLES}",
    "callbacks.token_histograms.batch_size=8",  # several forward passes per share
    "callbacks.token_histograms.every_n_steps=1",
    "callbacks.token_histograms.lowest_k=1000",  # more than the vocabulary: the table holds every target token
]


def histogram_run(run_dir, devices: int = 1, *extra: str) -> dict:
    from dftlab.config import compose_config
    from dftlab.run import run

    overrides = [*OVERRIDES, f"paths.output_dir={run_dir}", *extra]
    if devices > 1:
        overrides += ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}"]
    return run(compose_config(overrides))


if __name__ == "__main__":
    histogram_run(sys.argv[1], int(sys.argv[2]))
