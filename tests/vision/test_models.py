"""A tiny Qwen2-VL built from its config: loading keyed on the config, the head the chunked engine reads,
every loss through both engines, LoRA on the language model (and the vision tower as an option), export."""

import pytest
import torch

from dftlab.data.encode import EncodeSettings
from dftlab.losses import REGISTRY, build_loss
from dftlab.objective import CausalLMWithLoss, backbone, head_reproduces_logits, output_head
from dftlab.vision.collate import collate_with_images
from dftlab.vision.encode import encode_with_images
from tests.vision.conftest import card_rows, tiny_vision_cfg


def _batch(tokenizer, rows):
    settings = EncodeSettings(256, True, "assistant")
    items = [(i, encode_with_images(tokenizer, r, settings), 0) for i, r in enumerate(rows)]
    return collate_with_images(items, tokenizer)


def test_a_model_is_loaded_by_its_config(tiny_vlm):
    cfg, tokenizer, lm = tiny_vlm
    from dftlab.vision.models import is_vision

    assert type(lm).__name__ == "Qwen2VLForConditionalGeneration" and is_vision(cfg)
    assert type(tokenizer.image_processor).__name__ == "Qwen2VLImageProcessorPil"  # no torchvision
    assert lm.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert sum(p.numel() for p in lm.parameters()) < 100_000
    text_cfg = tiny_vision_cfg()
    text_cfg.arch = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2}
    assert not is_vision(text_cfg)


def test_the_chunked_engine_reads_the_language_models_head_with_images(tiny_vlm, tmp_path):
    _, tokenizer, lm = tiny_vlm
    assert head_reproduces_logits(lm) == (True, "")
    batch = _batch(tokenizer, card_rows(tmp_path)[1])
    assert batch["pixel_values"].shape[0] == batch["image_grid_thw"].prod(-1).sum()
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids")}
    with torch.no_grad():
        logits = lm(**inputs).logits
        hidden = backbone(lm)(**inputs).last_hidden_state
        without_images = lm(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(hidden @ output_head(lm).weight.t(), logits, rtol=1e-5, atol=1e-5)
    assert (logits - without_images).abs().max() > 1e-3  # the images reach the decoder


# the members trained on demonstrations (DPO and GRPO read pair and rollout fields)
@pytest.mark.parametrize("name", sorted(n for n, cls in REGISTRY.items() if not cls.token_fields))
def test_every_loss_through_both_engines(name, tmp_path):
    from dftlab.models import load_causal_lm, load_tokenizer

    cfg = tiny_vision_cfg()
    tokenizer = load_tokenizer(cfg)
    batch = _batch(tokenizer, card_rows(tmp_path)[1])
    results = []
    for path in ("naive", "chunked"):
        torch.manual_seed(0)
        policy = CausalLMWithLoss(load_causal_lm(cfg, tokenizer), build_loss(name), reference="copy", path=path,
                                  chunk_mib=1e-3)
        with torch.no_grad():  # move the policy away from its reference
            for p in policy.lm.parameters():
                p.add_(0.01 * torch.randn_like(p))
        value, stats = policy(batch, normaliser=5.0)
        value.backward()
        grads = {n: p.grad.clone() for n, p in policy.lm.named_parameters() if p.grad is not None}
        results.append((value.detach(), stats.logp, grads))
    (v0, lp0, g0), (v1, lp1, g1) = results
    assert torch.isfinite(v0)
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lp1, lp0, rtol=1e-5, atol=1e-5)
    assert g0.keys() == g1.keys() and any(k.startswith("model.visual.") for k in g0)  # the vision tower learns
    for key in g0:
        torch.testing.assert_close(g1[key], g0[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("vision", [False, True])
def test_a_lora_step_adapts_the_language_model_and_optionally_the_vision_tower(vision, tmp_path):
    from dftlab.models import load_causal_lm, load_tokenizer

    cfg = tiny_vision_cfg(r=4, alpha=8, vision=vision)
    tokenizer = load_tokenizer(cfg)
    lm = load_causal_lm(cfg, tokenizer)
    trainable = {n: p.detach().clone() for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    in_vision = {n for n in trainable if ".visual." in n}
    assert {n for n in trainable if ".language_model." in n} and bool(in_vision) == vision
    frozen = {n: p.detach().clone() for n, p in lm.named_parameters() if not p.requires_grad}
    policy = CausalLMWithLoss(lm, build_loss("iw_sft"), reference="auto", path="chunked", chunk_mib=1e-3)
    assert policy.reference_mode == "adapters"  # the reference is the model with its adapters off
    batch = _batch(tokenizer, card_rows(tmp_path)[1])
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # the first step moves B away from 0; the second moves every adapter
        optimizer.zero_grad()
        loss, _ = policy(batch, normaliser=10.0)
        loss.backward()
        optimizer.step()
    params = dict(lm.named_parameters())
    assert all(not torch.equal(params[n], trainable[n]) for n in trainable)
    assert all(torch.equal(params[n], frozen[n]) for n in frozen)


def test_export_reloads_with_its_image_processor(tiny_vlm, tmp_path):
    from dftlab.models import load_causal_lm, load_tokenizer
    from dftlab.vision.models import auto_class

    cfg, tokenizer, lm = tiny_vlm
    lm.save_pretrained(tmp_path / "export")
    tokenizer.save_pretrained(tmp_path / "export")
    tokenizer.image_processor.save_pretrained(tmp_path / "export")
    assert auto_class(tmp_path / "export").__name__ == "AutoModelForImageTextToText"
    again_cfg = tiny_vision_cfg()
    again_cfg.name_or_path = str(tmp_path / "export")
    tok2 = load_tokenizer(again_cfg)
    lm2 = load_causal_lm(again_cfg, tok2)
    batch = _batch(tok2, card_rows(tmp_path)[1])
    assert tok2.image_processor.to_dict() == tokenizer.image_processor.to_dict()
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids")}
    with torch.no_grad():
        torch.testing.assert_close(lm2.eval()(**inputs).logits, lm.eval()(**inputs).logits)


def test_fsdp_shards_the_decoder_layers_and_the_vision_blocks(tiny_vlm):
    """trainer=fsdp wraps every decoder layer and every vision block as its own unit (the two-process
    run is `tests/test_distributed.py::test_fit_save_resume_export[fsdp-vision]`)."""
    from dftlab.strategies import decoder_layer_classes

    _, _, lm = tiny_vlm
    units = decoder_layer_classes(lm)
    found = {type(m).__name__ for m in lm.modules() if type(m).__name__ in units}
    assert found == {"Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"}
    assert sum(type(m).__name__ in units for m in lm.modules()) == lm.config.text_config.num_hidden_layers + \
        lm.config.vision_config.depth
