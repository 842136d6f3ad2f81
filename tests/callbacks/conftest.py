import pytest

from tests.helpers.token_histograms_run import histogram_run


@pytest.fixture(scope="package")
def runs(tmp_path_factory):
    """Two finished tiny runs measured at every step: SFT logged to W&B (offline) too, DFT to CSV."""
    root = tmp_path_factory.mktemp("histograms")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTLAB_CACHE", str(root / "cache"))
        histogram_run(root / "sft", 1, "loss=sft", "logger=wandb")
        histogram_run(root / "dft", 1, "loss=dft")
    return root
