"""Secrets reach jobs through a running worker and appear nowhere labdeck writes.

A real worker process is started first; the key is written afterwards (as a user does when a job
first needs it); the next job gets it. Then every file under the home (database, WAL, run folders,
env.json, the worker's log) is searched for the value.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from worker_helpers import PY, ProcWorker, child_env, job, submit, wait_status

from cli.main import main
from engine import secrets

pytestmark = pytest.mark.timeout(90)
VALUE = "sk-labdeck-test-5e1c2a9b7d"
DIGEST = hashlib.sha256(VALUE.encode()).hexdigest()  # the job is told the digest, never the value
CHECK = ("import hashlib, os, sys; v = os.environ.get('MY_API_KEY', ''); print('key present' if v else 'key absent'); "
         "sys.exit(0 if hashlib.sha256(v.encode()).hexdigest() == sys.argv[1] else 1)")


def files_containing(root, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if name == secrets.SECRETS_FILE and dirpath == str(root):
                continue
            with open(path, "rb") as fh:
                if needle in fh.read():
                    hits.append(os.path.relpath(path, root))
    return hits


def test_a_key_written_after_the_worker_started_reaches_the_next_job_and_nothing_records_it(home, store, capsys) -> None:
    worker = ProcWorker(home, env=child_env(MY_API_KEY=""))
    try:
        before = submit(store, [PY, "-c", CHECK, DIGEST], name="before")
        assert wait_status(store, before, timeout=30) == "failed"  # no key yet
        secrets.set_secret(home, "MY_API_KEY", VALUE)
        after = submit(store, [PY, "-c", CHECK, DIGEST], name="after")
        assert wait_status(store, after, timeout=30) == "succeeded"
    finally:
        worker.stop()
    rd = home / "runs" / str(after)
    assert "key present" in (rd / "log.txt").read_text()
    env = json.loads((rd / "env.json").read_text())["env"]
    assert "MY_API_KEY" not in env and env["LABDECK_SECRET_NAMES"] == "MY_API_KEY"
    for args in (["show", str(after), "--json"], ["show", str(after)], ["export", "t", "--format", "json"], ["ls", "--json"]):
        assert main(["--home", str(home), *args]) == 0
        assert VALUE not in capsys.readouterr().out
    assert files_containing(home, VALUE.encode()) == []
    assert files_containing(home, b"key present") != []  # the search does look inside the run folders


def test_a_job_that_prints_its_key_has_it_masked_in_the_stored_log_tail(home, store, capsys) -> None:
    secrets.set_secret(home, "MY_API_KEY", VALUE)
    worker = ProcWorker(home)
    try:
        jid = submit(store, [PY, "-c", "import os, sys; print('using', os.environ['MY_API_KEY']); sys.exit(3)"])
        assert wait_status(store, jid, timeout=30) == "failed"
    finally:
        worker.stop()
    assert f"using {VALUE}" in (home / "runs" / str(jid) / "log.txt").read_text()  # the job's own output, as it wrote it
    assert "using ***" in job(store, jid).log_tail
    assert main(["--home", str(home), "show", str(jid), "--json"]) == 0
    assert VALUE not in capsys.readouterr().out
    assert [f for f in files_containing(home, VALUE.encode()) if not f.endswith("log.txt")] == []


def test_a_secrets_file_others_can_read_fails_the_job_with_one_line(home, store) -> None:
    secrets.set_secret(home, "MY_API_KEY", VALUE)
    os.chmod(home / secrets.SECRETS_FILE, 0o644)
    worker = ProcWorker(home)
    try:
        jid = submit(store, [PY, "-c", "print('ran')"])
        assert wait_status(store, jid, timeout=30) == "failed"
    finally:
        worker.stop()
    row = job(store, jid)
    assert row.failure_reason == "spawn_error"
    assert row.failure_detail == (f"{home / secrets.SECRETS_FILE}: is readable or writable by others (mode 0644); "
                                  f"run: chmod 600 {home / secrets.SECRETS_FILE}; refused")
    assert "ran" not in (home / "runs" / str(jid) / "log.txt").read_text()
