"""FSDP2 (`torch.distributed.fsdp.fully_shard`) over every rank, through Lightning's ModelParallelStrategy.

Each decoder layer is its own FSDP unit (the layer classes come from the model's
`_no_split_modules`, so any Hugging Face causal LM works), then the root: the module that computes
the loss, so the output projection is gathered while the chunked loss uses it. Mixed precision is
FSDP2's own: parameters stored in fp32 and sharded, gathered and computed in `param_dtype`,
gradients reduced in `reduce_dtype`.
"""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from dftlab.errors import ConfigError
from dftlab.models import DTYPES


def decoder_layer_classes(lm: nn.Module) -> set[str]:
    """Class names of the model's decoder layers (what must not be split across FSDP units)."""
    model = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # a LoRA (peft) model
    names = set(getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise ConfigError(f"{type(model).__name__} declares no _no_split_modules: trainer=fsdp cannot find its layers")
    return names


class FSDP2Strategy(ModelParallelStrategy):
    def __init__(
        self,
        param_dtype: str | None = "bfloat16",
        reduce_dtype: str | None = "float32",
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = True,
        **kwargs,
    ):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)
        for key, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value is not None and value not in DTYPES:
                raise ConfigError(f"trainer.strategy.{key}={value!r}: choose one of {', '.join(DTYPES)} or null")
        self.param_dtype = DTYPES[param_dtype] if param_dtype else None
        self.reduce_dtype = DTYPES[reduce_dtype] if reduce_dtype else None
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        # data parallel over every rank (ModelParallelStrategy's "auto" would be one per node)
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def parallelize(self, root: nn.Module, lm: nn.Module) -> None:
        """Shard `lm`'s decoder layers, then `root` (which holds `lm` and computes the loss)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        mesh = self.device_mesh["data_parallel"]
        policy = MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype)
        layers = decoder_layer_classes(lm)
        for module in lm.modules():
            if type(module).__name__ in layers:
                fully_shard(module, mesh=mesh, mp_policy=policy, reshard_after_forward=self.reshard_after_forward)
        fully_shard(root, mesh=mesh, mp_policy=policy)
        if hasattr(root, "token_stats"):  # called outside forward: it must gather the parameters too
            register_fsdp_forward_method(root, "token_stats")
