"""The CLI under hostile input and a shared box: a real home never wiped by the demo, a planted `./expo`,
planted temp-file symlinks, escape sequences in names and logs, absurd ids, a locked database."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.main import main

REPO = Path(__file__).resolve().parents[2]
OK = {"experiment": "e", "name": "ok", "kind": "command", "command": [sys.executable, "-c", "pass"]}
BIG = [str(2**63), str(2**64), "99999999999999999999999"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def submit(tmp_path: Path, capsys, data: dict, *extra: str) -> int:  # noqa: ANN001
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    code, out, err = run(capsys, "submit", str(p), "--no-worker", *extra)
    assert code == 0, err
    return int(out.split()[0])


def test_demo_fresh_never_deletes_a_real_home(tmp_path, home, store, capsys) -> None:  # noqa: ANN001
    submit(tmp_path, capsys, OK)
    before = sorted(str(p) for p in home.rglob("*"))
    db = (home / "labdeck.db").read_bytes()
    for argv in (["demo", "--fresh", "--no-tui"], ["demo", "--no-tui"]):
        code, _, err = run(capsys, "--home", str(home), *argv)
        assert code == 2 and err.count("\n") == 1
        assert "the demo did not create" in err or "not a home the demo created" in err
    assert sorted(str(p) for p in home.rglob("*")) == before and (home / "labdeck.db").read_bytes() == db


def test_demo_fresh_wipes_only_its_own_home_and_never_under_a_live_worker(tmp_path) -> None:  # noqa: ANN001
    from cli.common import UserError
    from cli.demo import MARKER, _claim_home, _wipe
    from engine.control import WorkerLock

    demo = tmp_path / "demo"
    _claim_home(demo, explicit=True)
    assert (demo / MARKER).is_file()
    lock = WorkerLock(demo)  # what a running worker holds
    assert lock.acquire()
    try:
        with pytest.raises(UserError, match="a worker is running there"):
            _wipe(demo)
        assert demo.is_dir()
    finally:
        lock.release()
    _wipe(demo)
    assert not demo.exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a home the demo created"):
        _wipe(plain)
    assert (plain / "notes.txt").read_text() == "mine"


def test_a_recipe_name_beats_a_planted_file_unless_written_as_a_path(tmp_path, home, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "expo").write_text(yaml.safe_dump({**OK, "experiment": "planted"}))
    code, out, _ = run(capsys, "submit", "expo", "--variant", "tiny", "--dry-run", "--json")
    assert code == 0 and {j["experiment"] for j in json.loads(out)["jobs"]} != {"planted"}
    code, out, _ = run(capsys, "submit", "./expo", "--dry-run", "--json")
    assert code == 0 and [j["experiment"] for j in json.loads(out)["jobs"]] == ["planted"]


def test_submit_help_says_how_a_name_is_read(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    assert "write ./NAME for the file" in " ".join(capsys.readouterr().out.split())


def test_export_never_follows_a_planted_temp_symlink(tmp_path, home, capsys) -> None:  # noqa: ANN001
    submit(tmp_path, capsys, OK)
    out = tmp_path / "out" / "table.csv"
    out.parent.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("table.csv.tmp", ".table.csv.tmp"):  # the names a predictable writer would use
        (out.parent / name).symlink_to(victim)
    code, _, err = run(capsys, "export", "e", "-o", str(out))
    assert code == 0, err
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and out.read_text().startswith("id,")
    assert sorted(p.name for p in out.parent.iterdir()) == [".table.csv.tmp", "table.csv", "table.csv.tmp"]


def test_escape_sequences_never_reach_the_terminal(tmp_path, home, store, capsys) -> None:  # noqa: ANN001
    evil = "\x1b]0;owned\x07\x1b[2J\x9b31m"
    job = submit(tmp_path, capsys, OK)
    run_dir = home / "runs" / str(job)
    run_dir.mkdir(parents=True)
    # names are checked at submit, but a failure detail and a log tail come from the job process
    # (and an older store may hold any name): put escapes in all of them
    with sqlite3.connect(home / "labdeck.db") as con:
        con.execute("UPDATE job SET name = ?, status = 'failed', failure_reason = 'nonzero_exit', failure_detail = ?, "
                    "log_tail = ?, run_dir = ? WHERE id = ?", (f"n{evil}", evil, evil, str(run_dir), job))
    for argv in (["ls"], ["show", str(job)]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and "\x1b" not in out and "\x9b" not in out and "\\x1b]0;owned" in out
    (run_dir / "log.txt").write_bytes(f"step 1\r{evil}done\n".encode())
    # through a pipe the log's bytes come out as they are; on a terminal nothing is interpreted
    piped = subprocess.run([sys.executable, "-m", "cli", "logs", str(job)], cwd=REPO, capture_output=True,  # noqa: S603
                           env={**os.environ, "LABDECK_HOME": str(home)}, timeout=60)
    assert piped.stdout == (run_dir / "log.txt").read_bytes()
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "logs", str(job)], cwd=REPO, stdout=secondary,  # noqa: S603
                            env={**os.environ, "LABDECK_HOME": str(home)})
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(60) == 0
    os.close(primary)
    assert b"done" in seen and b"\x1b" not in seen and b"\\x1b]0;owned" in seen


@pytest.mark.parametrize("number", BIG)
def test_absurd_ids_are_one_line_exit_2(tmp_path, home, capsys, number) -> None:  # noqa: ANN001
    submit(tmp_path, capsys, OK)
    for argv in (["show", number], ["logs", number], ["cancel", number], ["retry", number], ["rm", number, "--yes"],
                 ["wait", number], ["priority", "1", number]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "") and err.count("\n") == 1 and "out of range" in err, argv
    p = tmp_path / "after.yaml"
    p.write_text(yaml.safe_dump({**OK, "after": [int(number)]}))
    code, _, err = run(capsys, "submit", str(p), "--no-worker")
    assert code == 2 and err.count("\n") == 1


def test_a_locked_database_is_one_line_exit_2(tmp_path, home, store, capsys, monkeypatch) -> None:  # noqa: ANN001
    import db.session

    job = submit(tmp_path, capsys, OK)
    monkeypatch.setattr(db.session, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(home / "labdeck.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer that does not let go
    try:
        code, out, err = run(capsys, "cancel", str(job))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (code, out) == (2, "") and err.count("\n") == 1 and "database is locked" in err
    assert run(capsys, "cancel", str(job))[0] == 0
