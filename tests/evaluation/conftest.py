import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The folder of the math benchmark sets (`<set>/test.jsonl`), from DFTLAB_BENCHMARKS_DIR."""
    folder = os.environ.get("DFTLAB_BENCHMARKS_DIR")
    if not folder or not Path(folder).is_dir():
        pytest.skip("DFTLAB_BENCHMARKS_DIR does not name the math benchmarks folder")
    return Path(folder)
