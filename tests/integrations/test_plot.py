"""`labdeck plot`: every figure kind from a real store, written as PNG, PDF and SVG through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from db.models import JobStatus
from db.queue import claim, enqueue, record_metrics, transition
from db.session import Store
from engine.specfile import expand

REPO = Path(__file__).resolve().parents[2]
LRS = [1e-5, 3e-5, 1e-4]


def _enqueue(store: Store, data: dict) -> list[int]:
    exp = expand(data)
    with store.write() as s:
        return enqueue(s, exp.drafts, resolve=exp.resolver(store.home))


def _finish(store: Store, ids: list[int], metrics: dict[int, dict[str, float]]) -> None:
    rows = []
    for jid in ids:
        with store.write() as s:
            claim(s, jid, host="box", run_dir=str(store.home / "runs" / str(jid)))
            transition(s, jid, JobStatus.succeeded, exit_code=0)
        rows += [{"job_id": jid, "name": k, "step": None, "value": v, "time": 0.0} for k, v in metrics[jid].items()]
    with store.write() as s:
        record_metrics(s, rows)


@pytest.fixture(scope="module")
def plot_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learning-rate x LoRA-rank sweep over 3 seeds with win rates and a CAR-like metric; calibration jobs with records."""
    home = tmp_path_factory.mktemp("plot") / "home"
    store = Store(home)
    ids = _enqueue(store, {"experiment": "lr-sweep", "name": "sft", "kind": "finetune", "model": "m", "dataset": "d.jsonl",
                           "sweep": {"grid": {"learning_rate": LRS, "lora.r": [8, 16]}, "seeds": [0, 1, 2]}})
    with store.read() as s:
        from db.queries import list_jobs

        jobs = {j.id: j for j in list_jobs(s, experiment="lr-sweep")}
    metrics = {}
    for jid in ids:
        p = jobs[jid].params
        win = 0.3 + 0.1 * LRS.index(p["learning_rate"]) + (0.05 if p["lora.r"] == 16 else 0) + 0.01 * p["seed"]
        metrics[jid] = {"win_rate": win, "car": -win * 2 + 0.001 * p["seed"]}
    _finish(store, ids, metrics)

    calib = _enqueue(store, {"experiment": "calib", "name": "conf", "kind": "command", "command": ["true"],
                             "sweep": {"grid": {"env.METHOD": ["query", "probe"]}}})
    import random

    rng = random.Random(0)
    for k, jid in enumerate(calib):
        out = home / "runs" / str(jid) / "outputs"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "records.jsonl", "w") as fh:
            for _ in range(400):
                p = rng.random()
                y = int(rng.random() < (p if k == 1 else 0.5))  # the probe is calibrated, the query is not
                fh.write(json.dumps({"confidence": p, "confidence_label": y}) + "\n")
    _finish(store, calib, {jid: {"ece": 0.1} for jid in calib})
    store.dispose()
    return home


class Result:
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr


def plot(home: Path, *args: str, block_matplotlib: bool = False) -> Result:
    """`labdeck plot ...` in this process (matplotlib loads once for the whole module)."""
    import contextlib
    import io

    from cli.main import main

    err = io.StringIO()
    saved = sys.modules.get("matplotlib")
    if block_matplotlib:
        sys.modules["matplotlib"] = None  # type: ignore[assignment] - `import matplotlib` now raises ImportError
    try:
        with contextlib.redirect_stderr(err):
            rc = main(["plot", *args, "--home", str(home)])
    finally:
        if block_matplotlib:
            if saved is None:
                sys.modules.pop("matplotlib", None)
            else:
                sys.modules["matplotlib"] = saved
    return Result(rc, err.getvalue())


def test_the_command_line_writes_a_png_of_a_sweep(plot_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep.png"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "cli", "plot", "lr-sweep", "--metric", "win_rate", "--x", "learning_rate",
                        "-o", str(out), "--home", str(plot_home)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 1000


def _svg_text(path: Path) -> str:
    text = path.read_text()
    assert text.lstrip().startswith(("<?xml", "<svg"))
    return text


def test_line_of_a_sweep_as_png_pdf_and_svg(plot_home: Path, tmp_path: Path) -> None:
    for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):  # the format follows the suffix
        out = tmp_path / f"sweep{suffix}"
        r = plot(plot_home, "lr-sweep", "--metric", "win_rate", "--x", "learning_rate", "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert out.read_bytes().startswith(magic) and out.stat().st_size > 1000
    out = tmp_path / "sweep.svg"
    r = plot(plot_home, "lr-sweep", "--metric", "win_rate", "--x", "learning_rate", "--by", "lora.r", "--log-x",
             "-o", str(out))
    assert r.returncode == 0, r.stderr
    svg = _svg_text(out)
    assert "learning_rate" in svg and "win_rate" in svg  # axis labels, kept as text
    assert ">8<" in svg.replace(" ", "") or "8</text>" in svg
    assert "lora.r" in svg  # the legend's title


def test_line_series_pools_seeds_into_mean_and_std(plot_home: Path) -> None:
    from cli.plot import line_series
    from db.queries import experiment_metric

    store = Store(plot_home)
    with store.read() as s:
        rows = experiment_metric(s, "lr-sweep", "win_rate")
    series = line_series(rows, "learning_rate", "lora.r")
    assert list(series) == ["8", "16"]  # numeric labels in numeric order
    pts = series["8"]
    assert [p[0] for p in pts] == LRS and all(p[3] == 3 for p in pts)
    assert pts[0][1] == pytest.approx(0.31) and pts[0][2] == pytest.approx(0.01)


def test_bars_heatmap_reliability_and_scatter(plot_home: Path, tmp_path: Path) -> None:
    cases = {
        "bars.svg": ["lr-sweep", "--metric", "win_rate", "--x", "learning_rate", "--by", "lora.r", "--kind", "bars"],
        "heat.svg": ["lr-sweep", "--metric", "win_rate", "--x", "learning_rate", "--by", "lora.r", "--kind", "heatmap"],
        "rel.svg": ["calib", "--metric", "confidence", "--by", "env.METHOD", "--kind", "reliability"],
        "scatter.svg": ["lr-sweep", "--metric", "win_rate", "--x", "car", "--kind", "scatter", "--match", "learning_rate",
                        "--by", "lora.r"],
    }
    for name, args in cases.items():
        out = tmp_path / name
        r = plot(plot_home, *args, "-o", str(out))
        assert r.returncode == 0, (name, r.stderr)
        svg = _svg_text(out)
        assert "win_rate" in svg or "confidence" in svg
    heat = (tmp_path / "heat.svg").read_text()
    assert "0.46" in heat  # lr 3e-5, r 16: the mean of 0.45, 0.46, 0.47 over seeds, written in its cell
    rel = (tmp_path / "rel.svg").read_text()
    assert "probe (ECE" in rel and "query (ECE" in rel and "perfect calibration" in rel
    assert "ρ = -1.00" in (tmp_path / "scatter.svg").read_text()


def test_bad_input_is_one_line_and_writes_nothing(plot_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    cases = [
        ((plot_home, "lr-sweep", "--metric", "win_rate", "--x", "learning_rate", "-o", str(tmp_path / "x.gif")), "must end in"),
        ((plot_home, "nope", "--metric", "win_rate", "--x", "learning_rate", "-o", str(out)), "no such experiment"),
        ((plot_home, "lr-sweep", "--metric", "nope", "--x", "learning_rate", "-o", str(out)), "no job has both"),
        ((plot_home, "lr-sweep", "--metric", "win_rate", "--x", "name", "-o", str(out)), "not a number"),
        ((plot_home, "lr-sweep", "--metric", "win_rate", "--kind", "scatter", "--x", "car", "-o", str(out)), "--match"),
    ]
    for args, why in cases:
        r = plot(*args)
        assert r.returncode == 2, r.stderr
        assert why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = plot(plot_home, "lr-sweep", "--metric", "win_rate", "--x", "learning_rate", "-o", str(out), block_matplotlib=True)
    assert r.returncode == 2 and r.stderr.strip() == "labdeck: plot needs matplotlib: pip install 'labdeck[plots]'"
    assert not list(tmp_path.iterdir())
