"""The examples of docs/adding.md work as written."""

import re

import torch

from dftlab import losses
from dftlab.losses import REGISTRY, TokenContext, build_loss
from tests.conftest import ROOT


def _blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "adding.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_loss_example_registers_a_member_that_computes_its_formula():
    code = _blocks("python")[0]
    namespace = {**vars(losses)}
    try:
        exec(code, namespace)
        loss = build_loss("anti_focal", gamma=2.0)
        logp = torch.tensor([-0.1, -1.0, -3.0], requires_grad=True)
        w = loss.weight(logp, TokenContext(torch.zeros(3, dtype=torch.long), 1))
        torch.testing.assert_close(w, logp.detach().exp() ** 2)
        assert not w.requires_grad
    finally:
        REGISTRY.pop("anti_focal", None)


def test_the_preset_example_is_the_shipped_preset():
    preset = next(b for b in _blocks("yaml") if "anti_dft" in b)
    assert (ROOT / "configs" / "loss" / "anti_dft.yaml").read_text().endswith(preset.split("\n", 1)[1])
