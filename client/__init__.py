"""The one client layer over a labdeck home: every write the CLI and the app make, validated once.

`labdeck submit` and the app's New-job form, `labdeck cancel` and the app's `c` key, and so on,
call the same method here, so both refuse the same things with the same one-line message
(`ClientError`) and a spec is expanded and validated in one place (`Client.expand`). Reads stay in
`db.reads` (plain SQL, no SQLAlchemy), which both front ends call directly.

Nothing here imports torch, transformers or Textual; the store is opened on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from db.housekeeping import ExperimentDeletion
    from db.prune import PrunePlan
    from db.session import Store
    from engine.specfile import Expansion

NO_AUTOSTART_ENV = "LABDECK_NO_AUTOSTART"  # "1": neither submit nor the app starts a worker
PRIORITY_RANGE = (-1000, 1000)
CANCEL_WORDS = {"cancelled": "cancelled", "running": "cancelling (the worker stops it)"}


class ClientError(Exception):
    """A request labdeck refuses (bad spec, unknown job, illegal transition): one line, says why."""


@dataclass(frozen=True)
class PlannedJob:
    """One job a submit would create: what `submit --dry-run` prints."""

    index: int
    experiment: str
    name: str
    kind: str
    after: tuple[str, ...]  # the names of the jobs of the same batch it waits for, and stored ids
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "name": self.name, "kind": self.kind,
                "after": list(self.after), "params": self.params}


def autostart_allowed() -> bool:
    """False when `LABDECK_NO_AUTOSTART` is set to anything but '', '0' or 'false'."""
    return os.environ.get(NO_AUTOSTART_ENV, "").strip().lower() in ("", "0", "false", "no")


def parse_vars(items: Sequence[str]) -> dict[str, str]:
    """`--var NAME=VALUE` items as a mapping."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ClientError(f"--var {item!r}: write NAME=VALUE")
        out[name] = value
    return out


def resolve_spec_file(name: str) -> str:
    """A spec file argument: a shipped recipe's name, or a path.

    An argument that looks like a path (it has a '/' or ends in .yaml, .yml or .json) is a path;
    any other is the name of a shipped recipe when one exists, so a file `./expo` dropped in a
    shared folder never runs in place of the `expo` recipe (write `./expo` to mean the file).
    """
    from engine.recipes import recipe_path

    looks_like_path = os.sep in name or "/" in name or name.endswith((".yaml", ".yml", ".json"))
    if looks_like_path and Path(name).exists():
        return name
    shipped = recipe_path(name)  # a name, or a path that names no file (`expo.yaml` anywhere)
    return str(shipped) if shipped is not None else name


def plan(expansions: Sequence[Expansion]) -> list[PlannedJob]:
    out: list[PlannedJob] = []
    for exp in expansions:
        base = len(out)
        for i, d in enumerate(exp.drafts):
            after = tuple(exp.drafts[j].name for j in d.depends_on) + tuple(f"job {j}" for j in d.depends_on_ids)
            out.append(PlannedJob(base + i, d.experiment, d.name, d.kind, after, dict(d.params)))
    return out


class Client:
    """Reads and writes on one home. Thread-safe: the app calls it from thread workers."""

    def __init__(self, home: Path | str | None = None, *, store: Store | None = None) -> None:
        self._home = home
        self._store = store
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        """The store, opened (and migrated) on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from db.session import Store

                    self._store = Store(self._home)
        return self._store

    @property
    def is_open(self) -> bool:
        return self._store is not None

    @property
    def home(self) -> Path:
        return self.store.home

    # ------------------------------------------------------------------ submit

    @staticmethod
    def expand(files: Sequence[str] = (), variables: Mapping[str, Any] | None = None, variant: str | None = None,
               data: Mapping[str, Any] | None = None, source: str = "form") -> list[Expansion]:
        """Load, expand and validate spec files (or one spec mapping): the only validation of a submit."""
        from engine.specfile import SpecError, expand, expand_file

        try:
            if data is not None:
                return [expand(dict(data), source, dict(variables or {}), variant)]
            return [expand_file(resolve_spec_file(f), dict(variables or {}), variant) for f in files]
        except SpecError as e:
            raise ClientError(str(e)) from None
        except OSError as e:
            raise ClientError(f"{getattr(e, 'filename', '') or files}: {e.strerror or e}") from None

    def enqueue(self, expansions: Sequence[Expansion], label: str = "", descriptions: Sequence[Any] = ()) -> list[int]:
        """Store expanded jobs in one transaction: every file's jobs land, or none do. A file's
        `description:` (in `descriptions`, one per expansion) becomes its experiment's."""
        from db.experiments import describe
        from db.queue import UnknownJob, enqueue

        ids: list[int] = []
        try:
            with self.store.write() as s:
                for i, exp in enumerate(expansions):
                    ids += enqueue(s, exp.drafts, resolve=exp.resolver(self.store.home))
                    text = descriptions[i] if i < len(descriptions) else None
                    if exp.drafts and isinstance(text, str):
                        describe(s, exp.drafts[0].experiment, text)
        except UnknownJob as e:
            raise ClientError(f"{label + ': ' if label else ''}after: {e}") from None
        return ids

    def submit(self, files: Sequence[str] = (), variables: Mapping[str, Any] | None = None, variant: str | None = None,
               *, data: Mapping[str, Any] | None = None, source: str = "form") -> list[int]:
        """Validate and queue spec files (or one spec mapping from the app's form); the new ids."""
        expansions = self.expand(files, variables, variant, data, source)
        return self.enqueue(expansions, files[0] if files else source, self.descriptions(files, data))

    @staticmethod
    def descriptions(files: Sequence[str] = (), data: Mapping[str, Any] | None = None) -> list[Any]:
        """Each file's (or the mapping's) top-level `description:`, None where it has none."""
        if data is not None:
            return [data.get("description")]
        from engine.specfile import SpecError, load_file

        out: list[Any] = []
        for f in files:
            try:
                out.append(load_file(resolve_spec_file(f)).get("description"))
            except (SpecError, OSError):
                out.append(None)
        return out

    # ------------------------------------------------------------------ control

    def existing_store(self) -> Store:
        """The store of a home that exists: a request about jobs never creates a home (a typo in --home)."""
        if self._store is None:
            from db.home import DB_NAME, default_home

            home = Path(self._home).expanduser() if self._home else default_home()
            if not (home / DB_NAME).is_file():
                raise ClientError(f"{home.absolute()}: no labdeck home there (no {DB_NAME}); `labdeck submit` creates one")
        return self.store

    def _require(self, s: Any, ids: Sequence[int]) -> None:
        from db.reads import job_ids_exist

        missing = job_ids_exist(s, ids)
        if missing:
            raise ClientError(f"job {missing[0]}: no such job")

    def cancel(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        """Cancel jobs: queued ones at once, running ones by the worker. (id, status now: cancelled, running or final) each."""
        from db.queue import request_cancel

        with self.existing_store().write() as s:
            self._require(s, ids)
            return [(i, request_cancel(s, i).value) for i in ids]

    def retry(self, ids: Sequence[int], alone: bool = False) -> list[dict[int, int]]:
        """A new attempt of each job (with the jobs skipped because of it unless `alone`): {old: new} each.

        A job retried before is retried from its newest attempt (the one its pipeline's dependents
        follow), and only once that attempt has ended; the mapping still names the id given."""
        from db.queue import IllegalTransition, latest_attempt, retry, retry_with_dependents

        try:
            with self.existing_store().write() as s:
                self._require(s, ids)
                out = []
                for i in ids:
                    target, status = latest_attempt(s, i)
                    if target != i and not status.is_terminal:
                        raise ClientError(f"job {i}: its latest attempt, job {target}, is still {status.value}; "
                                          "one attempt at a time")
                    done = {target: retry(s, target)} if alone else retry_with_dependents(s, target)
                    out.append({(i if old == target else old): new for old, new in done.items()})
                return out
        except IllegalTransition as e:
            raise ClientError(str(e)) from None

    def rm(self, ids: Sequence[int]) -> list[int]:
        """Delete finished jobs with their rows and run folders (all or none)."""
        from db.queue import IllegalTransition, UnknownJob
        from db.removal import delete_runs

        try:
            return delete_runs(self.existing_store(), ids)
        except (IllegalTransition, UnknownJob) as e:
            raise ClientError(str(e)) from None

    # ------------------------------------------------------------------ whole experiments

    def archive(self, names: Sequence[str], restore: bool = False) -> list[tuple[str, bool]]:
        """Archive (hide from lists, keep on disk) or restore experiments: (name, changed) each, all or none."""
        from db.housekeeping import UnknownExperiment, archive
        from db.queue import IllegalTransition

        try:
            with self.existing_store().write() as s:
                return archive(s, names, restore)
        except (UnknownExperiment, IllegalTransition) as e:
            raise ClientError(str(e)) from None

    def deletion_plan(self, name: str) -> tuple[ExperimentDeletion, int]:
        """What deleting an experiment would remove, and the bytes its run folders take (walks them)."""
        from db.experiments import folder_bytes
        from db.housekeeping import UnknownExperiment, deletion_plan

        try:
            with self.existing_store().read() as s:
                plan = deletion_plan(s, self.home, name)
        except UnknownExperiment as e:
            raise ClientError(str(e)) from None
        return plan, sum(folder_bytes(str(f)) for f in plan.folders)

    def delete_experiment(self, name: str) -> list[int]:
        """Delete an experiment with all its jobs, rows and run folders (all or none); refused while a job is live."""
        from db.housekeeping import UnknownExperiment
        from db.queue import IllegalTransition
        from db.removal import delete_experiment

        try:
            return delete_experiment(self.existing_store(), name)
        except (UnknownExperiment, IllegalTransition) as e:
            raise ClientError(str(e)) from None

    def prune(self, experiment: str, keep_best: int, metric: str, mode: str | None = None,
              dry_run: bool = False) -> PrunePlan:
        """Keep the best `keep_best` finished fine-tunes of `experiment` by `metric` (final value); delete
        the others' model folders and checkpoints, marking their artifacts pruned (`db.prune`)."""
        from db.housekeeping import UnknownExperiment
        from db.prune import PruneError, apply_prune, plan_prune

        store = self.existing_store()
        try:
            if dry_run:
                with store.read() as s:
                    return plan_prune(s, store.home, experiment, keep_best, metric, mode)
            return apply_prune(store, experiment, keep_best, metric, mode)
        except (UnknownExperiment, PruneError) as e:
            raise ClientError(str(e)) from None

    def priority(self, ids: Sequence[int], value: int | None = None, delta: int = 0) -> list[tuple[int, int]]:
        """Set (`value`) or shift (`delta`) the priority of queued jobs, clamped to ±1000; (id, new) each."""
        from db.queue import IllegalTransition, set_priority
        from db.reads import job_priorities

        lo, hi = PRIORITY_RANGE
        out = []
        try:
            with self.existing_store().write() as s:
                self._require(s, ids)
                current = job_priorities(s, ids)
                for i in ids:
                    new = max(lo, min(hi, (current[i] + delta) if value is None else value))
                    set_priority(s, i, new)
                    out.append((i, new))
        except IllegalTransition as e:
            raise ClientError(str(e)) from None
        return out

    def set_queue_state(self, state: str) -> str:
        """running | paused | draining."""
        from db.queue import set_queue_state

        try:
            with self.store.write() as s:
                set_queue_state(s, state)
        except ValueError as e:
            raise ClientError(str(e)) from None
        return state

    def ensure_worker(self) -> tuple[bool, str]:
        """Start a worker if none is alive, unless LABDECK_NO_AUTOSTART says not to. (runs now, message)."""
        from engine.control import ensure_worker, worker_alive

        if not autostart_allowed():
            alive = worker_alive(self.home)
            return alive, "worker running" if alive else f"no worker started ({NO_AUTOSTART_ENV} is set)"
        return ensure_worker(self.home)
