"""What an evaluation measures and how: the `eval` section of train.yaml and eval.yaml, checked."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from dftlab.errors import ConfigError
from dftlab.evaluation import vllm_backend

FAST_DEV_RUN_PROBLEMS = 8


@dataclass(frozen=True)
class Sampling:
    """Average@k: `n` samples per problem at `temperature` and `top_p`."""

    n: int
    temperature: float
    top_p: float

    @property
    def name(self) -> str:
        return f"avg@{self.n}"

    @classmethod
    def from_cfg(cls, node, key: str = "eval.samples") -> Sampling | None:
        if node is None:
            return None
        unknown = set(node) - {"n", "temperature", "top_p"}
        if unknown:
            raise ConfigError(f"{key} has unknown keys {sorted(unknown)}: give n, temperature, top_p (or null)")
        s = cls(int(node.get("n", 8)), float(node.get("temperature", 1.0)), float(node.get("top_p", 1.0)))
        if s.n < 1:
            raise ConfigError(f"{key}.n={s.n}: samples per problem, must be >= 1")
        if s.temperature <= 0:
            raise ConfigError(f"{key}.temperature={s.temperature}: must be > 0 (greedy is the other pass)")
        if not 0 < s.top_p <= 1:
            raise ConfigError(f"{key}.top_p={s.top_p}: must be in (0, 1]")
        return s


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and how: the `eval` section of train.yaml and eval.yaml."""

    splits: list[str] | None
    max_problems: int | None
    batch_size: int
    backend: str  # hf | vllm, resolved for this machine
    samples: Sampling | None
    vllm_args: dict
    seed: int

    @classmethod
    def from_cfg(cls, e, seed: int, fast_dev_run: bool = False) -> EvalSettings:
        max_problems = FAST_DEV_RUN_PROBLEMS if fast_dev_run else e.get("max_problems")
        if max_problems is not None and max_problems < 1:
            raise ConfigError(f"eval.max_problems={max_problems}: give a positive count or null (all)")
        if e.batch_size < 1:
            raise ConfigError(f"eval.batch_size={e.batch_size}: must be >= 1")
        vllm_args = e.get("vllm")
        return cls(
            splits=list(e.splits) if e.get("splits") else None,
            max_problems=max_problems,
            batch_size=int(e.batch_size),
            backend=vllm_backend.resolve(e.get("backend", "auto")),
            samples=Sampling.from_cfg(e.get("samples")),
            vllm_args=OmegaConf.to_container(vllm_args, resolve=True) if vllm_args else {},
            seed=seed,
        )
