import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# for subprocesses: this checkout's package (not another installed copy) and the tests' helpers
PYTHONPATH = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
os.environ.setdefault("DFTLAB_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_config(model_type: str = "llama", tie: bool = True, vocab: int = 40, **overrides):
    from transformers import AutoConfig

    kwargs = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
    )
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_lm(model_type: str = "llama", tie: bool = True, seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(model_type, tie, **overrides)).float()


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A run directory, with the base-model cache kept inside the test's temporary folder."""
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "run"


# A run small enough for a test: a 1-layer scratch model, a few problems, a few steps (configs/debug/tiny.yaml).
FAST = ["debug=tiny"]
# The same run on the default model (the embedded base): debug=tiny without its model (tests/test_configs.py
# checks that the two agree).
FAST_ON_BASE = [
    "data.task.n_train=64", "data.task.n_val=16", "data.task.n_test=4", "data.batch_size=16",
    "trainer.max_steps=2", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "eval.batch_size=64",
]


def fast_cfg(run_dir, *overrides, fast=True):
    from dftlab.config import compose_config

    return compose_config([*(FAST if fast else []), f"paths.output_dir={run_dir}", *overrides])
