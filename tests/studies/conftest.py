import hashlib

import pytest

from dftlab.data.game24_task import Game24Task
from dftlab.run import run
from tests.conftest import fast_cfg

# the studies' evaluation in miniature: greedy and Average@2 at temperature 1, no five-card split
TINY_STUDY = ["eval.samples={n: 2, temperature: 1.0}", "data.task.ood_n_cards=null", "~callbacks.eval_during_training"]


def hashed_verdict(self, row, completion):
    """A stand-in verifier: a tiny model of two steps solves nothing, and a table of zeros tests
    nothing; this one calls about a third of the completions correct, by a hash of the text."""
    h = int(hashlib.sha1((row["prompt"] + completion).encode()).hexdigest(), 16)
    return {"correct": h % 3 == 0, "well_formed": h % 2 == 0}


@pytest.fixture(scope="package")
def verdicts_by_hash():
    mp = pytest.MonkeyPatch()
    mp.setattr(Game24Task, "score", hashed_verdict)
    yield
    mp.undo()


@pytest.fixture(scope="package")
def tiny_multirun(tmp_path_factory, verdicts_by_hash):
    """Three finished tiny runs in one folder, as a multirun leaves them: sft seeds 0 and 1, dft seed 0."""
    root = tmp_path_factory.mktemp("multirun")
    mp = pytest.MonkeyPatch()
    mp.setenv("DFTLAB_CACHE", str(root.parent / "cache"))
    for job, (loss, seed) in enumerate((("sft", 0), ("sft", 1), ("dft", 0))):
        run(fast_cfg(root / f"{job}_{loss}_seed{seed}", f"loss={loss}", f"seed={seed}", *TINY_STUDY))
    mp.undo()
    return root


SPLITS = ("test_id", "test_ood_rule_all5", "test_ood_rule_all7")
DIVERSE = ["J=10,Q=10,K=10", "J=8,Q=9,K=10"]


def split_row(acc: float, n: int) -> dict:
    from dftlab.evaluation.stats import wilson

    return {"n": n, "acc": acc, "ci95": list(wilson(acc * n, n)), "well_formed": 1.0}


def fake_run(
    root, name, loss, seed, greedy, sampled, base=(0.1, 0.1, 0.1), n=10, k=4, overrides=(), rules=DIVERSE, **config
):
    """A finished run's config.yaml and summary.json: accuracies per split in SPLITS' order."""
    import json

    import yaml

    path = root / name
    path.mkdir(parents=True)
    cfg = {
        "run_name": loss,
        "seed": seed,
        "loss": {"name": loss},
        "model": {"base_overrides": list(overrides)},
        "data": {"task": {"train_rules": list(rules)}},
        **config,
    }
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))

    def rows(accs, m):
        return {s: split_row(a, m) for s, a in zip(SPLITS, accs)}

    summary = {
        "steps": 250,
        "eval": {
            "finetuned": rows(greedy, n),
            "base": rows(base, n),
            "sampled": {"k": k, "temperature": 1.0, "top_p": 1.0, "finetuned": rows(sampled, n), "base": rows(base, n)},
        },
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path
