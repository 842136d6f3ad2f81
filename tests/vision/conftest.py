import pytest
import torch
from omegaconf import OmegaConf

from dftlab.config import compose_config


def tiny_vision_cfg(**lora):
    """The `model` config of debug=tiny_vision: a 1-layer Qwen2-VL from its config, local tokenizer."""
    cfg = compose_config(["experiment=game24_vision", "debug=tiny_vision"]).model
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg.lora.update(lora)
    return cfg


@pytest.fixture
def tiny_vlm():
    from dftlab.models import load_causal_lm, load_tokenizer

    cfg = tiny_vision_cfg()
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    return cfg, tokenizer, load_causal_lm(cfg, tokenizer)


def card_rows(tmp_path, n=3, seed=0):
    """Conversations of the visual game: an image and the rule in the user turn, the solution after."""
    from dftlab.vision.game24 import Game24VisionTask

    task = Game24VisionTask(image_dir=str(tmp_path / "cards"), train_rules=["J=8,Q=9,K=10", "J=1,Q=2,K=3"],
                            ood_rules={"all5": "J=5,Q=5,K=5"}, n_train=n, n_val=2, n_test=2, seed=seed)
    return task, task.train()
