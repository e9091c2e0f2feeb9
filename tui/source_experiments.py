"""The app's reads and writes on whole experiments (the experiments and pipeline screens).

A mixin of `tui.source.Source`, kept apart so the job-level source stays one module and the
shared client layer can take these as a group. Blocking functions, called from thread workers
only, returning frozen values from `db.experiments`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from db.experiments import Pipeline
    from db.housekeeping import ExperimentDeletion
    from db.prune import PrunePlan
    from db.rows import ExperimentRow

EXPERIMENTS_PAGE = 100
LIVE = ("queued", "running")


@dataclass(frozen=True)
class ExperimentsPage:
    text: str
    statuses: tuple[str, ...]
    offset: int
    rows: tuple[ExperimentRow, ...]
    total: int


class ExperimentSource:
    """Mixed into `Source`: needs its `store`."""

    store: Any

    def waiting_reasons(self, session: Any, job_ids: Sequence[int]) -> dict[int, str]:
        """Why these queued jobs wait (tui.waiting), inside an open read session; {} for none."""
        if not job_ids:
            return {}
        from db.waiting import queue_view
        from tui.waiting import reasons

        return reasons(queue_view(session, self.clock()), job_ids)  # type: ignore[attr-defined]

    def experiments(self, text: str = "", statuses: Sequence[str] = (), offset: int = 0,
                    limit: int = EXPERIMENTS_PAGE, archived: bool | None = False) -> ExperimentsPage:
        """A page of experiments; `archived` None shows the archived ones too (False hides them).
        Before the store is open the first page is read with plain sqlite3 (`tui.fastread`)."""
        if self.cold and offset == 0:  # type: ignore[attr-defined]
            from tui import fastread

            fast = fastread.experiments_page(self.db_path(), text or None, tuple(statuses), limit,  # type: ignore[attr-defined]
                                             archived)
            if fast is not None:
                return ExperimentsPage(text, tuple(statuses), 0, tuple(fast[0]), fast[1])
        from db.experiments import experiment_rows

        with self.store.read() as s:
            rows, total = experiment_rows(s, text=text or None, statuses=tuple(statuses), offset=offset, limit=limit,
                                          archived=archived)
        return ExperimentsPage(text, tuple(statuses), offset, tuple(rows), total)

    def archive(self, experiment: str, restore: bool = False) -> bool:
        """Archive or restore one experiment (the client layer refuses one with live jobs); whether it changed."""
        return self.client.archive([experiment], restore)[0][1]  # type: ignore[attr-defined]

    def deletion_plan(self, experiment: str) -> tuple[ExperimentDeletion, int]:
        """What deleting the experiment removes and the bytes it frees (walks its run folders)."""
        return self.client.deletion_plan(experiment)  # type: ignore[attr-defined]

    def metric_names_of(self, experiment: str) -> list[str]:
        """Every metric name the experiment's jobs reported (what the prune dialog completes from)."""
        from db.queries import experiment_metric_names

        with self.store.read() as s:
            return experiment_metric_names(s, experiment)

    def prune(self, experiment: str, keep_best: int, metric: str, mode: str | None = None,
              dry_run: bool = False) -> PrunePlan:
        """Keep the best fine-tunes' weights, delete the others' (`labdeck prune`); the plan, applied unless dry_run."""
        return self.client.prune(experiment, keep_best, metric, mode, dry_run=dry_run)  # type: ignore[attr-defined]

    def run_disk(self, run_dir: str) -> dict[str, int]:
        """Bytes a run folder takes, and its checkpoints and outputs (walks it, links not followed)."""
        from db.experiments import folder_bytes

        if not run_dir:
            return {"total": 0, "checkpoints": 0, "outputs": 0}
        return {"total": folder_bytes(run_dir), "checkpoints": folder_bytes(f"{run_dir}/checkpoints"),
                "outputs": folder_bytes(f"{run_dir}/outputs")}

    def delete_experiment(self, experiment: str) -> list[int]:
        return self.client.delete_experiment(experiment)  # type: ignore[attr-defined]

    def disk_usage(self, experiments: Sequence[str]) -> dict[str, int]:
        """Bytes the run folders of each experiment take (walks the files: call after the first paint)."""
        from db.experiments import folder_bytes, run_dirs

        with self.store.read() as s:
            folders = run_dirs(s, list(experiments))
        return {e: sum(folder_bytes(f) for f in fs) for e, fs in folders.items()}

    def pipeline(self, experiment: str) -> Pipeline:
        from db.experiments import pipeline

        with self.store.read() as s:
            found = pipeline(s, experiment)
        if found is None:
            from client import ClientError as ActionError

            raise ActionError(f"experiment {experiment!r}: no such experiment")
        return found

    def retry_stage(self, experiment: str, stage: str | None) -> list[dict[int, int]]:
        """Retry the failed, cancelled and interrupted jobs of one stage, each with the jobs its
        failure skipped (db.queue.retry_with_dependents); skipped ones come back with their cause."""
        from client import ClientError as ActionError

        p = self.pipeline(experiment)
        ids = [j.id for j in p.jobs.get(stage, []) if j.status in ("failed", "cancelled", "interrupted")]
        if not ids:
            raise ActionError(f"stage {stage or '(all)'} of {experiment}: no failed, cancelled or interrupted job to retry")
        return self.retry(ids)  # type: ignore[attr-defined]

    def live_jobs(self, experiment: str) -> list[int]:
        """The queued and running jobs of an experiment: what "cancel what remains" stops."""
        p = self.pipeline(experiment)
        return [j.id for js in p.jobs.values() for j in js if j.status in LIVE]

    def submit_file(self, path: Any, variables: dict[str, str], variant: str | None) -> list[int]:
        """Queue a spec file or recipe as `labdeck submit PATH --var ... --variant ...` does; the new ids."""
        return self.client.submit([str(path)], variables or None, variant)  # type: ignore[attr-defined]
