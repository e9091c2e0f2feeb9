"""How many project files the `n` -> fine-tune -> loss chart path runs (docs/ARCHITECTURE.md's figure).

Counted at run time, not by reading imports: in one process per role it runs what that role does
on the path and lists the project's modules then loaded (`sys.modules`), so a module imported only
by another command is not counted, and one imported lazily inside a function is.

* the app: opens the New-job form and the job detail screen (the loss chart), queues a fine-tune
  spec through the app's data source, reads the job's detail, its metric series and the jobs page;
* the worker: the daemon's modules (what claims, launches and ingests the job);
* the job process: `engine.jobs` with the fine-tune kind (imports torch: takes a while).

Run: `.venv/bin/python bench/path_files.py [REPO_DIR]` (another checkout's own code is measured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = ("db", "engine", "tui", "cli", "client")
ROLES = {
    "app": """
import tui.app, tui.screens.new_job, tui.screens.job_detail
from tui.source import JobQuery, Source
src = Source(HOME)
(job,) = src.submit({"experiment": "e", "name": "ft", "kind": "finetune", "model": "base", "dataset": "d.jsonl"})
src.detail(job); src.series(job, ["loss"]); src.jobs_page(JobQuery()); src.overview()
""",
    "worker": "import os, engine.worker\nif os.path.exists('engine/daemon.py'):\n    import engine.daemon\n",
    "job": "import engine.jobs.__main__, engine.jobs.finetune\n",
}
REPORT = """
import json, sys
files = sorted({m.__file__ for n, m in list(sys.modules.items())
                if n.split('.')[0] in PACKAGES and getattr(m, '__file__', None)})
print(json.dumps(files))
"""


def role_files(root: Path, role: str, home: str) -> set[str]:
    code = f"PACKAGES = {PACKAGES!r}\nHOME = {home!r}\n" + ROLES[role] + REPORT
    env = {**os.environ, "PYTHONPATH": str(root), "LABDECK_HOME": home}
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,  # noqa: S603
                       check=True, timeout=600)
    return {str(Path(f).resolve().relative_to(root.resolve())) for f in json.loads(r.stdout.splitlines()[-1])}


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    every: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for role in ROLES:
            files = role_files(root, role, str(Path(tmp) / "home"))
            print(f"{role:7} {len(files):3} files")
            every |= files
    print("\n".join(sorted(every)))
    print(f"{len(every)} project files on the n -> fine-tune -> loss chart path ({root})")


if __name__ == "__main__":
    main()
