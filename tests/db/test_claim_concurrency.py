"""No job is ever claimed twice, with 32 threads (each its own connection) claiming at once."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import select

from db.models import Job, JobStatus
from db.queue import JobDraft, claim, enqueue
from db.session import open_store


def test_32_threads_never_claim_a_job_twice(home) -> None:
    store = open_store(home)
    n_jobs = 200
    with store.write() as s:
        enqueue(s, [JobDraft("e", f"j{i}", "command", {}) for i in range(n_jobs)])
    wins: list[tuple[int, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(32)

    def claimer(worker: int) -> None:
        st = open_store(home)  # own engine, own connections, as separate processes would have
        try:
            barrier.wait()
            while True:
                with st.read() as s:
                    queued = s.execute(select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(8)).scalars().all()
                if not queued:
                    return
                for job_id in queued:
                    with st.write() as s:
                        if claim(s, job_id, host=f"w{worker}"):
                            with lock:
                                wins.append((job_id, worker))
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)
        finally:
            st.dispose()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    counts = Counter(job_id for job_id, _ in wins)
    assert len(counts) == n_jobs
    assert max(counts.values()) == 1
    assert len({w for _, w in wins}) > 1  # the race was real: several threads won jobs
    with store.read() as s:
        statuses = s.execute(select(Job.status, Job.host)).all()
    assert all(st is JobStatus.running for st, _ in statuses)
    # the host recorded is the one thread that won
    by_id = dict(wins)
    with store.read() as s:
        for job in s.execute(select(Job)).scalars():
            assert job.host == f"w{by_id[job.id]}"
