"""Fine-tune a causal LM with a token-weighted loss (in a checkout; installed: `dftlab-train`, the same arguments).

    python train.py loss=dft                      # the embedded default: CPU, offline, minutes
    python train.py -m loss=sft,dft optim.lr=1e-3,3e-3
"""

import os

os.environ.setdefault("DFTLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))  # runs go to the checkout's logs/

from dftlab.commands import train  # noqa: E402

if __name__ == "__main__":
    train()
