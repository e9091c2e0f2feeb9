"""Inspection commands (`ls`, `show`, `logs`, `results`, `worker status`): read-only, no SQLAlchemy, no home created."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.main import main

REPO = Path(__file__).resolve().parents[2]
SPEC = {"experiment": "hello", "name": "greet", "kind": "command", "command": ["python", "-c", "print('hi')"]}
INSPECTIONS = [["ls"], ["ls", "--json"], ["show", "1"], ["show", "1", "--json"], ["logs", "1"],
               ["results", "hello", "--rows", "name", "--metric", "loss"], ["worker", "status"],
               ["export", "hello"]]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def filled(tmp_path: Path, home: Path, store, capsys) -> Path:  # noqa: ANN001
    from db.queue import record_metrics

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(SPEC))
    assert run(capsys, "submit", str(f), "--no-worker")[0] == 0
    with store.write() as s:
        record_metrics(s, [{"job_id": 1, "name": "loss", "step": None, "value": 0.5, "time": 1.0}])
    return home


@pytest.mark.parametrize("argv", INSPECTIONS, ids=lambda a: " ".join(a))
def test_a_missing_home_is_one_line_exit_2_and_is_not_created(tmp_path, capsys, argv) -> None:  # noqa: ANN001
    typo = tmp_path / "typo"
    code, out, err = run(capsys, "--home", str(typo), *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"{typo}: no labdeck home there" in err
    assert not typo.exists()


@pytest.mark.parametrize("argv", [["cancel", "1"], ["retry", "1"], ["rm", "1", "--yes"], ["priority", "3", "1"]],
                         ids=lambda a: a[0])
def test_a_request_about_jobs_never_creates_a_home(tmp_path, capsys, argv) -> None:  # noqa: ANN001
    typo = tmp_path / "typo"
    code, out, err = run(capsys, "--home", str(typo), *argv)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "no labdeck home there" in err
    assert not typo.exists()


def test_a_folder_without_a_database_is_no_home(tmp_path, capsys) -> None:  # noqa: ANN001
    code, _, err = run(capsys, "--home", str(tmp_path), "ls")
    assert code == 2 and "no labdeck home there" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", INSPECTIONS, ids=lambda a: " ".join(a))
def test_inspection_never_imports_sqlalchemy_nor_writes(filled, argv) -> None:  # noqa: ANN001
    """The fast path is the only path: the command runs, answers, and SQLAlchemy was never loaded."""
    db = filled / "labdeck.db"
    before = (db.read_bytes(), sqlite3.connect(db).execute("PRAGMA data_version").fetchone())
    code = ("import sys; from cli.main import main; rc = main(sys.argv[1:]); "
            "loaded = [m for m in ('sqlalchemy', 'sqlmodel', 'torch', 'textual') if m in sys.modules]; "
            "print('LOADED', loaded, file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "--home", str(filled), *argv],  # noqa: S603
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stderr
    assert db.read_bytes() == before[0]


def test_ls_show_results_read_what_was_stored(filled, capsys) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "ls", "--json", "-m", "loss")
    assert code == 0
    assert [(r["id"], r["name"], r["status"], r["metric"]) for r in json.loads(out)] == [(1, "greet", "queued", 0.5)]
    d = json.loads(run(capsys, "show", "1", "--json")[1])
    assert d["spec"]["command"] == SPEC["command"] and d["metrics"] == {"loss": 0.5}
    code, out, _ = run(capsys, "results", "hello", "--rows", "name", "--metric", "loss", "--format", "csv")
    assert code == 0 and out.splitlines()[1].startswith("greet,0.5,")
    code, out, _ = run(capsys, "show", "2")
    assert code == 2


def test_an_older_database_is_migrated_once_then_read(tmp_path, capsys) -> None:  # noqa: ANN001
    from db.migrations import SCHEMA_VERSION, migrate

    home = tmp_path / "old"
    home.mkdir()
    con = sqlite3.connect(home / "labdeck.db", isolation_level=None)
    migrate(con, target=SCHEMA_VERSION - 1)
    con.close()
    code, out, _ = run(capsys, "--home", str(home), "ls", "--json")
    assert (code, json.loads(out)) == (0, [])
    assert sqlite3.connect(home / "labdeck.db").execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_every_statement_of_the_schema_module_prepares_on_a_migrated_database(store) -> None:  # noqa: ANN001
    """db.schema is where a column change is made once: its SQL must match the migrations."""
    from db import schema

    con = sqlite3.connect(store.path)
    columns = {t: {c[1] for c in con.execute(f"PRAGMA table_info({t})")}
               for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    statements = [v for k, v in vars(schema).items() if k.isupper() and isinstance(v, str) and v.lstrip().startswith(("SELECT", "INSERT"))]
    assert len(statements) >= 6
    for sql in statements:
        con.execute(f"EXPLAIN {sql}", [0] * sql.count("?"))
    named = re.findall(r"\b(job|experiment)\.([a-z_]+)", schema.JOB_ROW_COLUMNS + ", " + schema.JOB_DETAIL_COLUMNS)
    assert named and all(col in columns[table] for table, col in named)
    status_type = {s.value for s in schema.JobStatus}
    assert set(schema.STATUS_WORDS) == status_type
