from __future__ import annotations

from pathlib import Path

import pytest
from worker_helpers import kill_strays


@pytest.fixture(autouse=True)
def no_stray_processes(tmp_path: Path):
    """Whatever a fault test started under its folder (jobs, workers) is killed afterwards."""
    yield
    kill_strays(tmp_path)
