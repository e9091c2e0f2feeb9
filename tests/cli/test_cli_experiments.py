"""`labdeck experiments` and `labdeck du`: the experiments screen's figures for scripts."""

from __future__ import annotations

import json
from pathlib import Path

from cli.main import main
from engine.recipes import recipe_path


def run(capsys, *args: str) -> tuple[int, str, str]:  # noqa: ANN001
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_experiments_lists_jobs_by_state_and_du_adds_up_run_folders(home: Path, capsys, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, _ = run(capsys, "submit", str(recipe_path("demo_car")), "--no-worker")
    assert code == 0
    hello = tmp_path / "hello.yaml"
    hello.write_text("experiment: hello\nname: greet\nkind: command\ncommand: [echo, hi]\n")
    assert run(capsys, "submit", str(hello), "--no-worker")[0] == 0
    code, out, _ = run(capsys, "experiments", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"demo-car", "hello"}
    assert rows["demo-car"]["jobs"] == 31 and rows["demo-car"]["counts"] == {"queued": 31}
    assert rows["demo-car"]["description"].startswith("CAR teacher selection")
    code, out, _ = run(capsys, "experiments", "miniature")
    assert code == 0 and "demo-car" in out and "hello" not in out
    # a run folder with 1000 bytes in it, as a job would leave it
    folder = home / "runs" / "x"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_bytes(b"x" * 1000)
    import sqlite3

    con = sqlite3.connect(home / "labdeck.db")
    con.execute("UPDATE job SET run_dir = ? WHERE name = 'greet'", (str(folder),))
    con.commit()
    con.close()
    code, out, _ = run(capsys, "du", "hello", "--json")
    assert code == 0 and json.loads(out) == {"hello": 1000}
    code, _, err = run(capsys, "du", "no-such")
    assert code == 2 and "no-such" in err
