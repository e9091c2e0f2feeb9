"""CLI conventions a script relies on: --version, completion, wait's exit codes, --dry-run, --json, no autostart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.main import main

REPO = Path(__file__).resolve().parents[2]
OK = {"experiment": "w", "name": "ok", "kind": "command", "command": [sys.executable, "-c", "pass"]}
BAD = {"experiment": "w", "name": "bad", "kind": "command", "command": [sys.executable, "-c", "raise SystemExit(3)"]}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def spec(tmp_path: Path, data: dict, name: str = "s.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True, text=True,  # noqa: S603
                          timeout=timeout, env={**os.environ, **(env or {})})


def finish(store, job_id: int, status: str) -> None:  # noqa: ANN001
    from db.models import JobStatus
    from db.queue import claim, transition

    with store.write() as s:
        assert claim(s, job_id)
        transition(s, job_id, JobStatus(status))


def test_version(capsys) -> None:  # noqa: ANN001
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"labdeck {version('labdeck')}\n"


def test_completion_hook_and_completions(tmp_path, home, capsys) -> None:  # noqa: ANN001
    run(capsys, "submit", spec(tmp_path, OK), "--no-worker")
    hook = cli("completion", "bash")
    assert hook.returncode == 0 and "labdeck" in hook.stdout and "complete" in hook.stdout

    def complete(line: str) -> list[str]:
        out = tmp_path / "completions"
        r = cli(env={"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\n",
                     "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "LABDECK_HOME": str(home)})
        assert r.returncode == 0, r.stderr
        return [w.strip() for w in out.read_text().split("\n") if w.strip() and not w.startswith("-")]

    assert {"submit", "show", "wait"} <= set(complete("labdeck "))
    assert complete("labdeck show ") == ["1"]
    assert complete("labdeck wait -e ") == ["w"]
    assert "expo" in complete("labdeck submit ex")


def test_wait_exit_codes(tmp_path, home, store, capsys) -> None:  # noqa: ANN001
    run(capsys, "submit", spec(tmp_path, OK), spec(tmp_path, BAD, "b.yaml"), "--no-worker")
    code, _, err = run(capsys, "wait", "1", "--timeout", "0.2")
    assert code == 124 and "still queued or running" in err
    finish(store, 1, "succeeded")
    assert run(capsys, "wait", "1")[0] == 0
    finish(store, 2, "failed")
    code, _, err = run(capsys, "wait", "-e", "w")
    assert code == 1 and "job 2 bad: failed" in err
    # a retried job is followed to its newest attempt
    code, out, _ = run(capsys, "retry", "2", "--json")
    (new,) = [r["new"] for r in json.loads(out)]
    finish(store, new, "succeeded")
    assert run(capsys, "wait", "2")[0] == 0
    assert run(capsys, "wait", "-e", "w")[0] == 0
    for bad_args, why in ((["wait", "9"], "job 9: no such job"), (["wait", "-e", "nope"], "no such experiment"),
                          (["wait"], "name jobs")):
        code, _, err = run(capsys, *bad_args)
        assert code == 2 and why in err


def test_wait_on_a_real_worker(tmp_path, home, capsys) -> None:  # noqa: ANN001
    env = {"LABDECK_HOME": str(home)}
    assert cli("submit", spec(tmp_path, OK), "--no-worker", env=env).returncode == 0
    assert cli("submit", spec(tmp_path, BAD, "b.yaml"), "--no-worker", env=env).returncode == 0
    assert cli("worker", "start", env=env).returncode == 0
    try:
        assert cli("wait", "1", "--timeout", "120", env=env).returncode == 0
        r = cli("wait", "-e", "w", "--timeout", "120", env=env)
        assert r.returncode == 1 and "job 2 bad: failed" in r.stderr and r.stdout == ""
    finally:
        cli("worker", "stop", "--now", env=env)


def test_dry_run_stores_nothing(tmp_path, home, store, capsys) -> None:  # noqa: ANN001
    run(capsys, "submit", spec(tmp_path, OK), "--no-worker")
    before = (home / "labdeck.db").read_bytes()
    code, out, _ = run(capsys, "submit", "expo", "--variant", "tiny", "--dry-run", "--no-worker")
    assert code == 0 and "(dry run: nothing stored)" in out and " after " in out
    code, out, _ = run(capsys, "submit", "expo", "--variant", "tiny", "--dry-run", "--json")
    jobs = json.loads(out)["jobs"]
    assert len(jobs) > 3 and all({"name", "kind", "after"} <= set(j) for j in jobs)
    assert any(j["after"] for j in jobs)
    assert (home / "labdeck.db").read_bytes() == before
    fresh = tmp_path / "never"
    code, out, _ = run(capsys, "--home", str(fresh), "submit", spec(tmp_path, OK), "--dry-run")
    assert code == 0 and not fresh.exists()
    code, _, err = run(capsys, "submit", spec(tmp_path, {**OK, "gpus": "many"}, "x.yaml"), "--dry-run")
    assert code == 2 and "gpus" in err


def test_json_on_every_command_that_changes_something(tmp_path, home, capsys) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "submit", spec(tmp_path, OK), spec(tmp_path, OK, "b.yaml"), "--no-worker", "--json")
    assert json.loads(out) == {"ids": [1, 2]}
    assert json.loads(run(capsys, "priority", "5", "1", "2", "--json")[1]) == [{"id": 1, "priority": 5}, {"id": 2, "priority": 5}]
    assert json.loads(run(capsys, "cancel", "1", "--json")[1]) == [{"id": 1, "status": "cancelled"}]
    assert json.loads(run(capsys, "retry", "1", "--json")[1]) == [{"id": 1, "new": 3, "dependents": {}}]
    assert json.loads(run(capsys, "rm", "1", "--yes", "--json")[1]) == {"deleted": [1]}


def test_no_autostart_option_and_variable(tmp_path, home) -> None:  # noqa: ANN001
    from client import Client
    from engine.control import request_stop, worker_alive

    env = {"LABDECK_HOME": str(home), "LABDECK_NO_AUTOSTART": "1"}
    try:
        r = cli("submit", spec(tmp_path, OK), env=env)
        assert r.returncode == 0 and r.stdout == "1\n"
        assert not worker_alive(home)
        os.environ["LABDECK_NO_AUTOSTART"] = "1"
        try:
            assert Client(home).ensure_worker() == (False, "no worker started (LABDECK_NO_AUTOSTART is set)")
        finally:
            del os.environ["LABDECK_NO_AUTOSTART"]
        assert not worker_alive(home)
    finally:
        if worker_alive(home):
            request_stop(home, now=True)


def test_the_app_and_the_cli_refuse_a_spec_alike(tmp_path, home, capsys) -> None:  # noqa: ANN001
    """One validation: the app's Source and `labdeck submit` go through the same client call."""
    from client import ClientError
    from tui.source import ActionError, Source

    assert ActionError is ClientError
    bad = {**OK, "gpus": -1}
    with pytest.raises(ClientError) as e:
        Source(home).submit(bad, source="s.yaml")
    code, _, err = run(capsys, "submit", spec(tmp_path, bad), "--no-worker")
    assert code == 2 and err == f"labdeck: {e.value}\n".replace("s.yaml", str(tmp_path / "s.yaml"))


def test_after_the_demo_labdeck_says_where_its_home_is_and_how_to_stop_its_worker(tmp_path, capsys) -> None:  # noqa: ANN001
    import re
    import shlex

    from cli.demo import _claim_home, where_the_demo_lives

    demo = tmp_path / "demo"
    _claim_home(demo, explicit=True)
    text = where_the_demo_lives(demo)
    assert f"The demo's home is {demo}" in text
    stop = next(c for c in re.findall(r"`([^`]*)`", text) if c.endswith("worker stop"))
    argv = shlex.split(stop)
    assert argv[:3] == ["labdeck", "--home", str(demo)]
    code, out, _ = run(capsys, *argv[1:])  # the advertised command runs as printed
    assert code == 0 and "no worker is running" in out
