"""TensorBoard and MLflow, offline like the CSV logger: every step metric the CSV file has, with the same values."""

import pytest

from dftlab.reporting.runs import load_run
from dftlab.run import run
from tests.conftest import fast_cfg


def _csv_losses(run_dir) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["train/loss"])) for r in load_run(run_dir).metrics() if r.get("train/loss")]


def test_tensorboard_event_files(run_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(fast_cfg(run_dir, "logger=tensorboard", "loss=dft", "eval.enabled=false"))
    (version,) = (run_dir / "tensorboard").iterdir()
    events = EventAccumulator(str(version))
    events.Reload()
    assert {"train/loss", "train/ce", "val/ce"} <= set(events.Tags()["scalars"])
    expected = _csv_losses(run_dir)
    assert [e.step for e in events.Scalars("train/loss")] == [s for s, _ in expected]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_mlflow_local_file_store(run_dir, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = tmp_path / "logs"
    run(fast_cfg(run_dir, "logger=mlflow", "loss=dft", "eval.enabled=false", f"paths.log_dir={store}",
                 "run_name=tiny-dft"))
    client = MlflowClient(tracking_uri=f"file:{store}/mlruns")
    (experiment,) = [e for e in client.search_experiments() if e.name == "dftlab"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == "tiny-dft" and mlrun.data.params["loss.name"] == "dft"
    logged = sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, "train/loss"))
    expected = _csv_losses(run_dir)
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert "val/ce" in mlrun.data.metrics
