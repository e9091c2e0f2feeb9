from __future__ import annotations

from pathlib import Path

import pytest
from worker_helpers import kill_strays


@pytest.fixture(autouse=True)
def no_stray_processes(tmp_path: Path):
    """Whatever a test started under its home (jobs, workers) is killed afterwards, so a failing
    test does not leave processes running on a shared machine."""
    yield
    kill_strays(tmp_path)
