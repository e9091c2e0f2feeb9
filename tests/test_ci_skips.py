"""In CI (CI=true) a skipped test fails unless it is marked `gpu` (tests/conftest.py): a missing tool
or package on the CI machine must show, not pass quietly. Checked by running pytest on a small file
with this suite's conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLE = '''
import pytest

def test_skips():
    pytest.skip("no tool")

@pytest.mark.gpu
def test_gpu_skips():
    pytest.skip("no cuda")

@pytest.mark.xfail(reason="known")
def test_known_failure():
    assert False

def test_passes():
    pass
'''


def _run(tmp_path: Path, ci: str | None) -> str:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci is not None:
        env["CI"] = ci
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                        str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return r.stdout.strip().splitlines()[-1]


def test_a_skip_fails_in_ci_unless_marked_gpu(tmp_path: Path) -> None:
    summary = _run(tmp_path, "true")
    assert summary.startswith("1 failed") and "1 passed" in summary and "1 skipped" in summary and "1 xfailed" in summary


def test_a_skip_is_a_skip_outside_ci(tmp_path: Path) -> None:
    summary = _run(tmp_path, None)
    assert " failed" not in summary and "2 skipped" in summary and "1 passed" in summary
