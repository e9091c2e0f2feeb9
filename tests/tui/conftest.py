"""Fixtures for the terminal app's tests: a seeded home with a frozen clock, and the app on it.

The scene (tui_seed.py) is built once per session; tests that change the store get their own copy.
Timestamps are shown in local time, so the tests pin the time zone to UTC.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

os.environ["TZ"] = "UTC"
time.tzset()
os.environ.pop("NO_COLOR", None)

from tui_helpers import make_app  # noqa: E402
from tui_seed import seed  # noqa: E402


@pytest.fixture(scope="session")
def seeded_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A home with the fixed scene, built once; treat it as read-only (use `home_copy` to change it)."""
    from db.session import Store

    root = tmp_path_factory.mktemp("seeded") / "home"
    store = Store(root)
    ids = seed(store)
    store.checkpoint()
    store.dispose()
    return root, ids


@pytest.fixture
def ids(seeded_dir) -> dict[str, int]:  # noqa: ANN001
    return seeded_dir[1]


@pytest.fixture
def home_copy(seeded_dir, tmp_path: Path) -> Path:  # noqa: ANN001
    """A private copy of the seeded home that a test may change."""
    src, _ = seeded_dir
    dst = tmp_path / "home"
    shutil.copytree(src, dst)
    # run folders recorded in the copy still point at the original; point them at the copy
    con = sqlite3.connect(dst / "labdeck.db")
    con.execute("UPDATE job SET run_dir = replace(run_dir, ?, ?)", (str(src), str(dst)))
    con.commit()
    con.close()
    return dst


@pytest.fixture
def app(home_copy: Path):  # noqa: ANN201
    """The app on a private copy of the scene, no worker, no timer (tests drive every refresh)."""
    return make_app(home_copy)


@pytest.fixture
def read_app(seeded_dir):  # noqa: ANN001, ANN201
    """The app on the shared scene, for tests that only look."""
    return make_app(seeded_dir[0])


@pytest.fixture
def store_of():  # noqa: ANN201
    from db.session import Store

    stores = []

    def open_(home: Path):  # noqa: ANN202
        s = Store(home)
        stores.append(s)
        return s

    yield open_
    for s in stores:
        s.dispose()


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A home with the demo's CAR pipeline half-way through (tui_seed_pipeline.py); read-only."""
    from tui_seed_pipeline import seed_pipeline

    from db.session import Store

    root = tmp_path_factory.mktemp("pipeline") / "home"
    store = Store(root)
    ids = seed_pipeline(store)
    store.checkpoint()
    store.dispose()
    return root, ids


@pytest.fixture
def pipeline_copy(pipeline_dir, tmp_path: Path) -> Path:  # noqa: ANN001
    """A private copy of the pipeline home that a test may change."""
    dst = tmp_path / "phome"
    shutil.copytree(pipeline_dir[0], dst)
    return dst
