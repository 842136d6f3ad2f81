"""Stand-ins for tests of the RL methods: rejection samples written without sampling, and a
grader whose verdicts do not need a competent model."""

import json
import os
import zlib
from pathlib import Path

from dftlab.rl.rejection import ACCEPTED, COUNTS, PAIRS


class CoinGrader:
    """Correct when a hash of the completion is even: about half of any model's samples, so that
    groups have reward variance and rejection sampling finds pairs even from random weights."""

    name = "coin"
    stop = ()

    def __init__(self, max_new_tokens: int = 12, nan_every: int = 0):
        self.new_tokens, self.nan_every, self.calls = max_new_tokens, nan_every, 0

    def score_many(self, rows, completions):
        out = []
        for c in completions:
            self.calls += 1
            score = {"correct": zlib.crc32(c.encode()) % 2 == 0, "well_formed": True}
            if self.nan_every and self.calls % self.nan_every == 0:
                score["reward"] = float("nan")
            out.append(score)
        return out

    def max_new_tokens(self) -> int:
        return self.new_tokens


def example_fields(loss, seq_id):
    """Per-token batch fields for a loss that reads them (`TokenLoss.token_fields`), made up for
    tests of the whole family: sequences 2k and 2k + 1 are pair k's chosen and rejected responses;
    sequence s's advantage is (-1)^s (s + 1) / 2."""

    made = {
        "pair_id": seq_id // 2,
        "pair_side": 1.0 - 2.0 * (seq_id % 2).double(),
        "advantage": (1.0 - 2.0 * (seq_id % 2).double()) * (seq_id + 1).double() / 2,
    }
    return {name: made[name] for name in loss.token_fields}


COIN = "rollout.grader={_target_: tests.helpers.rl.CoinGrader}"


def _corrupt(solution: str) -> str:
    """A wrong solution of the same shape: the last step's result changed."""
    head, _, last = solution.rpartition("=")
    return f"{head}={int(last) + 1}"


def write_samples(folder: Path, n: int = 64) -> Path:
    """A rejection-sampling folder for the game's first `n` training problems (of debug=tiny's
    task): the reference solution accepted, and paired with a wrong one."""
    from dftlab.config import compose_config, instantiate

    folder = Path(folder)
    if (folder / COUNTS).exists():
        return folder
    task = instantiate(compose_config(["debug=tiny"]).data.task)
    rows = task.train()[:n]
    accepted = [{"prompt": r["prompt"], "response": r["response"], "index": i} for i, r in enumerate(rows)]
    pairs = [{"prompt": r["prompt"], "chosen": r["response"], "rejected": _corrupt(r["response"]), "index": i}
             for i, r in enumerate(rows)]
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in ((ACCEPTED, accepted), (PAIRS, pairs)):
        tmp = folder / f".{name}.{os.getpid()}"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in items))
        os.replace(tmp, folder / name)
    (folder / f".{COUNTS}.{os.getpid()}").write_text(json.dumps({"pairs": n, "accepted_rows": n}))
    os.replace(folder / f".{COUNTS}.{os.getpid()}", folder / COUNTS)
    return folder


def overrides(loss: str, folder: Path) -> list[str]:
    """What a run of `loss` needs besides `loss=...`: pairs for DPO, a rollout for GRPO."""
    if loss == "dpo":
        return ["data=game24_pairs", f"data.task.samples={write_samples(folder)}"]
    if loss == "grpo":
        return ["rollout=grpo", COIN, "rollout.max_new_tokens=12"]
    return []
