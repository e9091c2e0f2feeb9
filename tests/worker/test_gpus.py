"""GPU assignment through the real worker with a fake inventory: whole GPUs, sharing, foreign
processes, `--gpus`, and the snapshot the CLI and the TUI read."""

from __future__ import annotations

import json
import os

import pytest
from worker_helpers import PY, ThreadWorker, fake_gpus, gpu, job, submit, wait_for, wait_status, write_script

from db.queries import gpu_snapshot
from engine.gpus import (
    EmptyInventory,
    FakeInventory,
    Gpu,
    GpuProcess,
    classify,
    open_inventory,
    snapshot_json,
)

pytestmark = pytest.mark.timeout(90)
GB = 1024

RECORD = """
import json, os, sys, time
t0 = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"job": int(os.environ["LABDECK_JOB_ID"]), "cvd": os.environ["CUDA_VISIBLE_DEVICES"],
                        "mem": os.environ.get("LABDECK_GPU_MEM_MB"), "t0": t0, "t1": time.time()}) + "\\n")
"""


def spans(path):
    return [json.loads(line) for line in open(path)]


def max_concurrency(records, gpu_index):
    events = []
    for r in records:
        if str(gpu_index) in r["cvd"].split(","):
            events += [(r["t0"], 1), (r["t1"], -1)]
    level = peak = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):
        level += d
        peak = max(peak, level)
    return peak


def test_whole_gpus_are_never_shared(tmp_path, store, home):
    inv = FakeInventory(fake_gpus(tmp_path / "gpus.json", [gpu(0), gpu(1)]))
    script = write_script(tmp_path, "rec.py", RECORD)
    out = tmp_path / "spans.jsonl"
    ids = [submit(store, [PY, str(script), str(out), "0.6"], gpus=1) for _ in range(3)]
    two = submit(store, [PY, str(script), str(out), "0.3"], gpus=2)
    with ThreadWorker(home, inventory=inv):
        for j in [*ids, two]:
            wait_status(store, j, "succeeded", timeout=30)
    recs = spans(out)
    assert len(recs) == 4
    for r in recs:
        assert r["cvd"] == job(store, r["job"]).assigned_gpus and r["mem"] is None
    assert {r["cvd"] for r in recs if r["job"] == two} == {"0,1"}
    assert max_concurrency(recs, 0) == 1 and max_concurrency(recs, 1) == 1


def test_sharing_under_a_memory_budget(tmp_path, store, home):
    inv = FakeInventory(fake_gpus(tmp_path / "gpus.json", [gpu(0, 80 * GB, used_mb=2 * GB), gpu(1)]))
    script = write_script(tmp_path, "rec.py", RECORD)
    out = tmp_path / "spans.jsonl"
    ids = [submit(store, [PY, str(script), str(out), "0.5"], gpus=1, share_gpu_mem_gb=30)
           for _ in range(5)]
    with ThreadWorker(home, inventory=inv, gpus=frozenset({0})):  # --gpus 0: GPU 1 is not ours to use
        for j in ids:
            wait_status(store, j, "succeeded", timeout=30)
    recs = spans(out)
    assert {r["cvd"] for r in recs} == {"0"}
    assert {r["mem"] for r in recs} == {str(30 * GB)}
    # 2 GB used by others + 2 x 30 GB fit in 80 GB; a third would not
    assert max_concurrency(recs, 0) == 2


def test_foreign_processes_and_free_memory(tmp_path, store, home):
    path = fake_gpus(tmp_path / "gpus.json", [
        gpu(0, used_mb=5 * GB, processes=[{"pid": 999_999_9, "mem_mb": 5 * GB, "name": "someone"}]),
        gpu(1, used_mb=70 * GB, processes=[{"pid": 999_999_8, "mem_mb": 70 * GB, "name": "big"}]),
        gpu(2),
    ])
    inv = FakeInventory(path)
    script = write_script(tmp_path, "rec.py", RECORD)
    out = tmp_path / "spans.jsonl"
    cmd = [PY, str(script), str(out), "0.2"]
    polite = submit(store, cmd, gpus=1, name="polite")
    bold = submit(store, cmd, gpus=1, allow_foreign=True, min_free_mem_gb=20, name="bold", priority=-1)
    with ThreadWorker(home, inventory=inv, backfill=True):
        wait_status(store, polite, "succeeded")
        wait_status(store, bold, "succeeded")
    assert job(store, polite).assigned_gpus == "2"
    # bold may use a foreign GPU, but GPU 1 lacks 20 GB free; 0 and 2 qualify, 0 has less free memory
    assert job(store, bold).assigned_gpus in ("0", "2")


def test_gpu_job_waits_without_gpus_and_says_why(tmp_path, store, home):
    script = write_script(tmp_path, "t.py", "pass")
    g = submit(store, script=script, gpus=1)
    c = submit(store, script=script)
    with ThreadWorker(home, inventory=EmptyInventory()):
        wait_status(store, c, "succeeded")
        wait_for(lambda: gpu_snapshot_waiting(store).get(str(g)), what="the waiting reason")
        assert job(store, g).status.value == "queued"
    assert "the worker has 0" in gpu_snapshot_waiting(store)[str(g)]


def gpu_snapshot_waiting(store):
    from db.queries import GPU_SNAPSHOT_KEY
    from db.queue import get_setting

    with store.read() as s:
        raw = get_setting(s, GPU_SNAPSHOT_KEY, "")
    return json.loads(raw).get("waiting", {}) if raw else {}


def test_snapshot_marks_our_processes(tmp_path, store, home):
    path = tmp_path / "gpus.json"
    fake_gpus(path, [gpu(0), gpu(1, processes=[{"pid": 999_999_7, "mem_mb": 1000, "name": "other"}])])
    script = write_script(tmp_path, "child.py", """
        import os, subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        open(os.path.join(os.environ["LABDECK_RUN_DIR"], "child"), "w").write(str(p.pid))
        time.sleep(30)
    """)
    jid = submit(store, script=script, gpus=1)
    with ThreadWorker(home, inventory=FakeInventory(path)):
        wait_status(store, jid, "running")
        rd = job(store, jid).run_dir
        child = int(wait_for(lambda: os.path.exists(f"{rd}/child") and open(f"{rd}/child").read()))
        # the job's grandchild appears on GPU 0, as NVML would list it
        fake_gpus(path, [gpu(0, used_mb=3000, processes=[{"pid": child, "mem_mb": 3000, "name": "python"}]),
                         gpu(1, processes=[{"pid": 999_999_7, "mem_mb": 1000, "name": "other"}])])

        def snap():
            with store.read() as s:
                t, gpus = gpu_snapshot(s)
            return gpus if gpus and gpus[0].processes else None

        gpus = wait_for(snap, what="a snapshot with the job's process")
        assert gpus[0].processes[0].job_id == jid and gpus[0].mem_used_mb == 3000
        assert gpus[1].processes[0].job_id is None  # someone else's
        with store.write() as s:
            from db.queue import request_cancel

            request_cancel(s, jid)
        wait_status(store, jid, "cancelled")


def test_inventory_sources(tmp_path, monkeypatch):
    path = fake_gpus(tmp_path / "g.json", [gpu(3, 1000, 250)])
    inv = open_inventory({"LABDECK_FAKE_GPUS": str(path)})
    assert isinstance(inv, FakeInventory) and inv.read()[0].mem_free_mb == 750
    # no driver on this machine: an empty inventory, not an error
    assert open_inventory({}).read() == [] or open_inventory({}).source == "nvml"
    assert FakeInventory(tmp_path / "missing.json").read() == []
    gpus = classify([Gpu(0, "x", 10, 5, 1.0, (GpuProcess(1, 1), GpuProcess(2, 1)))], {1: 7}, lambda pid: None)
    assert [p.job_id for p in gpus[0].processes] == [7, None]
    data = json.loads(snapshot_json(gpus, now=5.0))
    assert data["t"] == 5.0 and data["gpus"][0]["processes"][0] == {"pid": 1, "mem_mb": 1, "job_id": 7, "name": ""}
