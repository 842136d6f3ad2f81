"""A tiny run with evaluation during training at every step, every test problem, greedy, and the
end-of-run evaluation on the same problems.

Run as a script for several ranks (Lightning's DDP launcher re-runs this file in each process):
    python -m tests.helpers.eval_progress_run RUN_DIR DEVICES [ddp|fsdp]
"""

import sys

from tests.conftest import FAST

N_TEST = 5  # odd: two ranks get shares of 3 and 2 problems
OVERRIDES = [
    *FAST,
    "trainer.max_steps=3",
    f"data.task.n_test={N_TEST}",
    "callbacks.eval_during_training.every_n_steps=1",
    "callbacks.eval_during_training.max_problems=null",
    "eval.base=false",
]


STRATEGIES = {
    "ddp": ["trainer=ddp"],
    "fsdp": ["trainer=fsdp", "trainer.strategy.param_dtype=null", "~callbacks.token_histograms"],
}


def progress_run(run_dir, devices: int = 1, *extra: str, strategy: str = "ddp") -> dict:
    from dftlab.config import compose_config
    from dftlab.run import run

    overrides = [*OVERRIDES, f"paths.output_dir={run_dir}", *extra]
    if devices > 1:
        overrides += [*STRATEGIES[strategy], "trainer.accelerator=cpu", f"trainer.devices={devices}"]
    return run(compose_config(overrides))


if __name__ == "__main__":
    progress_run(sys.argv[1], int(sys.argv[2]), strategy=sys.argv[3] if len(sys.argv) > 3 else "ddp")
