"""Whether a loss can train on what the data (or the rollout) gives it, checked before any model
is built: the per-token fields it reads and the unit its step loss is averaged over."""

from __future__ import annotations

from dftlab.errors import ConfigError

# where a per-token field comes from, for the error message
SOURCES = {
    "pair_id": "preference pairs (data=game24_pairs: dftlab.rl.pairs.PairDataModule)",
    "pair_side": "preference pairs (data=game24_pairs: dftlab.rl.pairs.PairDataModule)",
    "advantage": "an online rollout (rollout=grpo, e.g. experiment=rl_grpo)",
    "ref_logp": "the data (engine.reference=dataset)",
}


def check_sources(loss, datamodule, rollout, reduction: str, sharded: bool = False) -> None:
    provided = set(getattr(datamodule, "token_fields", ())) | set(rollout.token_fields if rollout else ())
    missing = [f for f in loss.token_fields if f not in provided]
    if missing:
        where = SOURCES.get(missing[0], "the batches")
        raise ConfigError(f"loss {loss.label} reads {missing} from its batches, and data ({type(datamodule).__name__}) "
                          f"does not give them: it trains on {where}")
    units = rollout.units if rollout is not None else (getattr(datamodule, "unit", "token"),)
    if loss.unit not in units:
        raise ConfigError(f"loss {loss.label} averages over {loss.unit}s, and {type(datamodule).__name__} counts "
                          f"{' | '.join(units)}s: a pairwise loss (loss=dpo) trains on pairs, every other loss on "
                          f"demonstrations or samples (e.g. data=game24_rs)")
    if rollout is not None and "advantage" not in loss.token_fields:
        raise ConfigError(f"rollout is set and loss {loss.label} does not use the sampled completions' advantages: "
                          f"use loss=grpo, or rollout=null")
    if reduction == "official" and loss.unit != "token":
        raise ConfigError(f"engine.reduction=official is the public DFT code's per-micro-batch token mean; loss "
                          f"{loss.label} averages over {loss.unit}s: use engine.reduction=token")
    if rollout is not None and sharded:
        raise ConfigError("rollout: sampling inside training under FSDP2 (trainer=fsdp) is not supported; use "
                          "trainer=ddp")
