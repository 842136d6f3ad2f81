"""A causal LM with its token loss: hidden states -> per-token log p -> weighted, normalised loss.

The loss is computed inside this module's forward, so a strategy that wraps this module (FSDP)
has the output layer's parameters gathered while the chunked loss uses them.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from dftlab.engine import (
    Head,
    TokenStats,
    chunk_rows_for,
    chunked_token_loss,
    logits_fp32,
    naive_token_loss,
    position_stats,
    token_logprobs,
)
from dftlab.errors import ConfigError
from dftlab.losses import ENTROPY, IGNORE_INDEX, TokenContext, TokenLoss, check_stat
from dftlab.models import eval_mode, is_lora
from dftlab.settings import EngineSettings
from dftlab.vision.models import media_inputs

log = logging.getLogger(__name__)


def backbone(lm: nn.Module) -> nn.Module:
    """What maps a batch's inputs to the hidden states the output head reads: the decoder, or for a
    vision-language model its whole backbone (the vision tower writes the images into the decoder's input)."""
    model = lm.get_base_model() if is_lora(lm) else lm
    return model.base_model if getattr(model.config, "vision_config", None) is not None else lm.get_decoder()


def output_head(lm: nn.Module) -> Head:
    layer = lm.get_output_embeddings()
    return Head(layer.weight, getattr(layer, "bias", None))


def _agree(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> tuple[bool, float]:
    """Whether two fp32 logit tensors agree to the precision the model computes in."""
    err = (got - expected).abs().max().item()
    rel = 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2
    return err <= rel * (1 + expected.abs().max().item()), err


@torch.no_grad()
def head_reproduces_logits(lm: nn.Module) -> tuple[bool, str]:
    """Whether `hidden @ W.T + b` equals the model's own logits (no soft-capping or scaling)."""
    with eval_mode(lm):
        device = lm.get_output_embeddings().weight.device
        ids = torch.arange(8, device=device).remainder(lm.get_output_embeddings().weight.shape[0])[None]
        expected = lm(input_ids=ids, use_cache=False).logits.float()
        hidden = lm.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
        head = output_head(lm)
        got = (hidden @ head.weight.t()).float()
        if head.bias is not None:
            got = got + head.bias.float()
        ok, err = _agree(got, expected, hidden.dtype)
        why = f"hidden @ W.T differs from the model's logits by {err:.3g} (logit scaling or soft-capping)"
        return ok, "" if ok else why


@torch.no_grad()
def packing_isolates_sequences(lm: nn.Module) -> tuple[bool, str]:
    """Whether two sequences packed in one row (positions restarting) give the logits they give alone."""
    with eval_mode(lm):
        device = lm.get_output_embeddings().weight.device
        ids = (torch.arange(11, device=device) * 7 + 3).remainder(lm.get_output_embeddings().weight.shape[0])
        a, b = ids[:5], ids[5:]
        alone = torch.cat([lm(input_ids=x[None], use_cache=False).logits[0] for x in (a, b)]).float()
        positions = torch.cat([torch.arange(5), torch.arange(6)]).to(device)
        packed = lm(input_ids=ids[None], position_ids=positions[None], use_cache=False).logits[0].float()
        ok, err = _agree(packed, alone, next(lm.parameters()).dtype)
        return ok, "" if ok else f"packed sequences attend to each other (logits differ by {err:.3g})"


@contextmanager
def _unsharded(module: nn.Module | None):
    """A module sharded by FSDP2 as its own root (the frozen reference) with its root parameters
    (embeddings, final norm, output layer) gathered for the block, as its forward would gather them:
    its decoder and head are used directly. Its layers gather their own when called."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


class CausalLMWithLoss(nn.Module):
    """`reference`: "copy" (a frozen copy of the initial weights), "adapters" (the same model with
    its LoRA adapters disabled: no second copy), "dataset" (reference log-probs given in the batch),
    or "auto": adapters for a LoRA model, else copy."""

    def __init__(
        self,
        lm: nn.Module,
        loss: TokenLoss,
        reference: str = EngineSettings.reference,
        path: str = EngineSettings.path,
        chunk_mib: float = EngineSettings.chunk_mib,
        auto_mib: float = EngineSettings.auto_mib,
    ):
        super().__init__()
        EngineSettings(path=path, chunk_mib=chunk_mib, auto_mib=auto_mib, reference=reference)  # checks them
        self.lm, self.loss = lm, loss
        for name in loss.stats:
            try:
                check_stat(name)
            except ValueError as err:
                raise ConfigError(f"loss {loss.label}: {err}") from None
        self.auto_mib = auto_mib
        self.vocab_size = lm.get_output_embeddings().weight.shape[0]
        self.chunk_rows = chunk_rows_for(self.vocab_size, chunk_mib)
        self.path = path
        # A head that `hidden @ W.T + b` reproduces is applied here, in fp32 outside autocast, on both
        # paths; any other head's logits come from the model's own forward (bf16 under autocast).
        self.plain_head, why = head_reproduces_logits(lm)
        if not self.plain_head and path != "naive":
            if path == "chunked":
                raise ConfigError(f"engine.path=chunked cannot serve this model: {why}; use engine.path=naive")
            log.warning("chunked loss disabled: %s; using the naive path", why)
            self.path = "naive"
        if reference == "auto":
            reference = "adapters" if is_lora(lm) else "copy"
        self.reference_mode = reference if loss.needs_reference else None
        if self.reference_mode == "adapters" and not is_lora(lm):
            raise ConfigError("engine.reference=adapters needs a LoRA model (model.lora.r > 0)")
        if self.reference_mode == "dataset" and loss.kl_coef:
            raise ConfigError(f"loss {loss.name} needs the reference's full distribution, not dataset log-probs")
        # A frozen copy is kept out of the registered submodules: it is not trained, not
        # checkpointed and not in the optimizer. `_apply` still moves and casts it.
        self._reference = [self._frozen_copy(lm)] if self.reference_mode == "copy" else []
        self._packing_checked = False

    @staticmethod
    def _frozen_copy(lm: nn.Module) -> nn.Module:
        ref = copy.deepcopy(lm).eval()
        ref.requires_grad_(False)
        return ref

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for ref in self._reference:
            ref._apply(fn, *args, **kwargs)
        return self

    @property
    def reference(self) -> nn.Module | None:
        return self._reference[0] if self._reference else None

    def use_chunked(self, batch_positions: int) -> bool:
        if self.path != "auto":
            return self.path == "chunked"
        return batch_positions * self.vocab_size * 4 > self.auto_mib * 2**20

    def _reference_context(self):
        if self.reference_mode == "adapters":
            return self.lm.disable_adapter()
        return nullcontext()

    def _reference_model(self) -> nn.Module:
        return self.reference if self.reference_mode == "copy" else self.lm

    def forward(self, batch: dict[str, torch.Tensor], normaliser: float) -> tuple[torch.Tensor, TokenStats]:
        with _unsharded(self.reference):  # its head is used until the loss is computed
            return self._forward(batch, normaliser)

    def _forward(self, batch: dict[str, torch.Tensor], normaliser: float) -> tuple[torch.Tensor, TokenStats]:
        labels = batch["labels"]
        mask = labels != IGNORE_INDEX
        targets = labels[mask]
        ctx = TokenContext(batch["seq_ids"][mask], batch["n_seqs"])
        ctx.fields = self._token_fields(batch, mask)
        inputs = self._model_inputs(batch)
        if "position_ids" in inputs:
            self._check_packing()
        if self.reference_mode == "dataset":
            if "ref_logp" not in batch:
                raise ConfigError("engine.reference=dataset: the training rows have no ref_logp field (one reference "
                                  "log-probability per target token); add it, or use engine.reference=copy")
            ctx.ref_logp = batch["ref_logp"][mask].float()
        if self.use_chunked(labels.numel()):
            hidden = backbone(self.lm)(**inputs).last_hidden_state[mask]
            ref_hidden, ref_head = None, None
            if self.reference_mode in ("copy", "adapters"):
                ref_hidden, ref_head = self._reference_hidden(inputs, mask)
                if ctx.ref_logp is None:
                    ctx.ref_logp, _, _ = token_logprobs(ref_hidden, ref_head, targets, self.chunk_rows)
            return chunked_token_loss(
                hidden, output_head(self.lm), targets, self.loss, ctx, normaliser, self.chunk_rows, ref_hidden, ref_head
            )
        logits = self._logits(self.lm, inputs, mask)
        ref_logits = None
        if self.reference_mode in ("copy", "adapters"):
            with torch.no_grad(), self._reference_context():
                ref_logits = self._logits(self._reference_model(), inputs, mask)
            if ctx.ref_logp is None:
                ctx.ref_logp = position_stats(ref_logits.log_softmax(-1), targets)[0]
        return naive_token_loss(logits, targets, self.loss, ctx, normaliser, ref_logits)

    def _logits(self, model: nn.Module, inputs: dict, mask: torch.Tensor) -> torch.Tensor:
        """fp32 logits [N, V] of the target positions (see `plain_head`)."""
        if self.plain_head:
            return logits_fp32(backbone(model)(**inputs).last_hidden_state[mask], output_head(model))
        return model(**inputs).logits[mask].float()

    def _token_fields(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-token batch fields the loss reads (`TokenLoss.token_fields`), at its targets."""
        if missing := [name for name in self.loss.token_fields if name not in batch]:
            raise ConfigError(f"loss {self.loss.label} needs the per-token fields {missing} in its batches, and they "
                              f"are missing: see the loss's docstring for the data it trains on")
        return {name: batch[name][mask] for name in (*self.loss.token_fields, *self.loss.optional_fields)
                if name in batch}

    def _model_inputs(self, batch: dict[str, torch.Tensor]) -> dict:
        # Rows are right-padded: with causal attention no real token attends to padding, so no
        # attention mask is needed, and the attention can take its plain causal fast path.
        inputs = {"input_ids": batch["input_ids"], "use_cache": False}  # a cache also disables packing
        if "position_ids" in batch:
            inputs["position_ids"] = batch["position_ids"]
        inputs.update(media_inputs(batch))  # images: pixel values and where their tokens are
        return inputs

    def _check_packing(self) -> None:
        if not self._packing_checked:
            ok, why = packing_isolates_sequences(self.lm)
            if not ok:
                raise ConfigError(f"data.packing cannot be used with this model: {why}; set data.packing=false")
            self._packing_checked = True

    @torch.no_grad()
    def token_stats(self, batch: dict[str, torch.Tensor], entropy: bool = False):
        """(TokenStats, entropy or None) of the target tokens, without a loss or a reference."""
        mask = batch["labels"] != IGNORE_INDEX
        targets = batch["labels"][mask]
        inputs = self._model_inputs(batch)
        wanted = (ENTROPY,) if entropy else ()
        if self.use_chunked(mask.numel()):
            hidden = backbone(self.lm)(**inputs).last_hidden_state[mask]
            logp, correct, stats = token_logprobs(hidden, output_head(self.lm), targets, self.chunk_rows, wanted)
        else:
            logp, correct, stats = position_stats(self._logits(self.lm, inputs, mask).log_softmax(-1), targets, wanted)
        ent = stats.get(ENTROPY)
        return TokenStats(logp, correct), ent

    @torch.no_grad()
    def _reference_hidden(self, inputs, mask) -> tuple[torch.Tensor, Head]:
        model = self._reference_model()
        with self._reference_context():
            hidden = backbone(model)(**inputs).last_hidden_state[mask]
        head = output_head(model)
        return hidden, Head(head.weight.detach(), None if head.bias is None else head.bias.detach())
