"""Evaluate a model on a task's test splits: greedy accuracy, and Average@k with eval.samples (in a checkout;
installed: `dftlab-eval`, the same arguments).

    python eval.py run=logs/runs/<run>                          # a finished run: its export, its task
    python eval.py ckpt=logs/runs/<run>/checkpoints/last.ckpt   # a Lightning checkpoint
    python eval.py                                              # the embedded base (built if missing)
    python eval.py model.name_or_path=Qwen/Qwen2.5-Math-1.5B eval_task=math 'eval.samples={n: 16}'
"""

import os

os.environ.setdefault("DFTLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))  # runs go to the checkout's logs/

from dftlab.commands import evaluate  # noqa: E402

if __name__ == "__main__":
    evaluate()
