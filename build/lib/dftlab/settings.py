"""Typed settings with one set of defaults and one check each: how the loss is computed (`engine`)
and how a global batch is split (`BatchPlan`). Validation, the module, the engines, the DataModule
and the sampler all read these."""

from __future__ import annotations

from dataclasses import dataclass

from dftlab.errors import ConfigError

PATHS = ("auto", "chunked", "naive")
REDUCTIONS = ("token", "official")
REFERENCES = ("auto", "copy", "adapters", "dataset")
ON_NON_FINITE = ("stop", "skip")


def require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


@dataclass
class EngineSettings:
    """The `engine` config group (registered as `engine/default`, so its keys are typed).

    path: auto | chunked | naive; chunked never materialises [batch x seq x vocab] logits.
    chunk_mib: MiB of fp32 logits in one chunk. auto_mib: auto takes the chunked path when
    batch x seq x vocab x 4 bytes exceeds this. reduction: token (sum over the step's target
    tokens / their number) | official (the public DFT code's). reference (iw_sft, asft): auto |
    copy (frozen initial weights) | adapters (LoRA off) | dataset. on_non_finite: stop (row ids
    saved) | skip (the step's update dropped and counted).
    """

    path: str = "auto"
    chunk_mib: float = 64.0
    auto_mib: float = 256.0
    reduction: str = "token"
    reference: str = "auto"
    on_non_finite: str = "stop"

    def __post_init__(self) -> None:
        require(self.path in PATHS, "engine.path", self.path, " | ".join(PATHS))
        require(self.reduction in REDUCTIONS, "engine.reduction", self.reduction, " | ".join(REDUCTIONS))
        require(self.reference in REFERENCES, "engine.reference", self.reference, " | ".join(REFERENCES))
        require(self.chunk_mib > 0, "engine.chunk_mib", self.chunk_mib, "must be > 0")
        require(self.auto_mib >= 0, "engine.auto_mib", self.auto_mib, "must be >= 0")
        require(self.on_non_finite in ON_NON_FINITE, "engine.on_non_finite", self.on_non_finite,
                 " | ".join(ON_NON_FINITE))

    @classmethod
    def from_cfg(cls, node) -> EngineSettings:
        return cls(**{k: node[k] for k in cls.__dataclass_fields__ if k in node})


@dataclass(frozen=True)
class BatchPlan:
    """One optimizer step: `global_batch` rows over `world_size` ranks, `micro_batch` rows per
    forward/backward pass (None: a rank's whole share, no accumulation)."""

    global_batch: int
    world_size: int = 1
    micro_batch: int | None = None

    def __post_init__(self) -> None:
        g, w, m = self.global_batch, self.world_size, self.micro_batch
        require(isinstance(g, int) and not isinstance(g, bool), "data.batch_size", g, "a whole number of rows")
        require(g >= 1, "data.batch_size", g, "the global batch must be >= 1")
        require(g % w == 0, "data.batch_size", g,
                 f"the global batch must divide over {w} rank(s): make it a multiple of {w}")
        if m is not None:
            require(isinstance(m, int) and not isinstance(m, bool), "data.micro_batch_size", m,
                     "a whole number of rows, or null (no accumulation)")
            require(m >= 1, "data.micro_batch_size", m, "must be >= 1 (or null: no accumulation)")
        require(
            self.per_rank % self.micro == 0, "data.micro_batch_size", self.micro,
            f"must divide the {self.per_rank} rows a rank (data.batch_size={g} over {w} rank(s)), "
            f"or the step does not split into micro-batches",
        )

    @property
    def per_rank(self) -> int:
        return self.global_batch // self.world_size

    @property
    def micro(self) -> int:
        """Rows of one forward/backward pass."""
        return self.micro_batch or self.per_rank

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step on each rank."""
        return self.per_rank // self.micro
