"""The `labdeck` command as a user drives it: submit, ls, show, cancel, retry, results, export, bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from cli.main import main

SPECS = {
    "command": {"experiment": "hello", "name": "greet", "kind": "command", "command": ["python", "-c", "print('hi')"], "gpus": 0},
    "generate": {"experiment": "e", "name": "gen", "kind": "generate", "model": "Qwen/Qwen2.5-0.5B", "dataset": "prompts.jsonl", "max_new_tokens": 64},
    "score": {"experiment": "e", "name": "sc", "kind": "score", "records": "r.jsonl", "scorers": [{"type": "length"}, {"type": "reward", "model": "rm"}], "car_beta": 1.0},
    "finetune": {"experiment": "e", "name": "ft", "kind": "finetune", "model": "base", "dataset": "d.jsonl", "lora": {"r": 8}, "preset": "car_table5"},
    "merge": {"experiment": "e", "name": "mg", "kind": "merge", "method": "expo", "sft": "a", "aligned": "b", "alpha": 0.3},
}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, data: object) -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def db_dump(home: Path) -> list:
    conn = sqlite3.connect(home / "labdeck.db")
    rows = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        rows.append((table, conn.execute(f"SELECT * FROM {table}").fetchall()))
    conn.close()
    return rows


@pytest.mark.parametrize("kind", list(SPECS))
def test_submit_ls_show_for_every_kind(tmp_path, home, capsys, kind: str) -> None:
    f = write(tmp_path, f"{kind}.yaml", SPECS[kind])
    code, out, _ = run(capsys, "submit", str(f), "--no-worker")
    assert code == 0
    (job_id,) = [int(x) for x in out.split()]
    code, out, _ = run(capsys, "ls", "--json")
    rows = json.loads(out)
    assert [(r["id"], r["kind"], r["status"], r["name"]) for r in rows] == [(job_id, kind, "queued", SPECS[kind]["name"])]
    code, out, _ = run(capsys, "show", str(job_id), "--json")
    d = json.loads(out)
    assert d["spec"]["kind"] == kind and d["status"] == "queued"
    assert d["timestamps"]["queued"] > 0 and d["timestamps"]["started"] is None
    for key, value in SPECS[kind].items():
        if isinstance(value, (str, int, float)) and key not in ("model", "dataset", "sft", "aligned", "time_limit"):
            assert d["spec"][key] == value
    code, out, _ = run(capsys, "show", str(job_id))
    assert code == 0 and "queued" in out


def test_ls_filters(tmp_path, home, capsys) -> None:
    for kind in ("command", "generate", "merge"):
        run(capsys, "submit", str(write(tmp_path, f"{kind}.yaml", SPECS[kind])), "--no-worker")
    kinds = lambda *a: sorted(r["kind"] for r in json.loads(run(capsys, "ls", "--json", *a)[1]))  # noqa: E731
    assert kinds("-e", "e") == ["generate", "merge"]
    assert kinds("-k", "command") == ["command"]
    assert kinds("-s", "running") == []
    assert kinds("-f", "gen") == ["generate"]
    code, _, err = run(capsys, "ls", "-s", "done")
    assert code == 2 and "--status: 'done'" in err


def test_cancel_and_retry(tmp_path, home, capsys) -> None:
    f = write(tmp_path, "c.yaml", SPECS["command"])
    (job_id,) = map(int, run(capsys, "submit", str(f), "--no-worker")[1].split())
    code, out, _ = run(capsys, "cancel", str(job_id))
    assert code == 0 and f"{job_id}: cancelled" in out
    code, out, _ = run(capsys, "retry", str(job_id))
    assert code == 0
    new_id = int(out.split("->")[1])
    d = json.loads(run(capsys, "show", str(new_id), "--json")[1])
    assert (d["status"], d["attempt"], d["parent_id"]) == ("queued", 2, job_id)
    code, _, err = run(capsys, "retry", str(new_id))
    assert code == 2 and "cannot be retried" in err


def test_retry_brings_back_the_stages_skipped_by_a_failure(tmp_path, home, capsys) -> None:
    pipeline = {"experiment": "p", "stages": [
        {"name": "up", "kind": "command", "command": ["false"]},
        {"name": "down", "kind": "command", "command": ["cat", "${stages.up.outputs}/x"]},
    ]}
    up, down = map(int, run(capsys, "submit", str(write(tmp_path, "p.yaml", pipeline)), "--no-worker")[1].split())
    from db.models import Job, JobStatus
    from db.queue import skip_dependents_of_failed
    from db.session import open_store

    store = open_store(home)
    with store.write() as s:
        s.get(Job, up).status = JobStatus.failed
        skip_dependents_of_failed(s)
    code, out, _ = run(capsys, "retry", str(up))
    assert code == 0 and f"(skipped dependents: {down} -> " in out
    new_down = int(out.rsplit("->", 1)[1].strip(" )\n"))
    d = json.loads(run(capsys, "show", str(new_down), "--json")[1])
    # the stored spec names the stage by id; it resolves to the new attempt's folder at run time
    assert d["status"] == "queued" and d["depends_on"] == [up + 2] and f"${{job:{up}.outputs}}/x" in json.dumps(d["spec"])
    from db import stagerefs

    with store.read() as s:
        spec = stagerefs.resolve(s, home, new_down, s.get(Job, new_down).spec, {})
    assert f"/runs/{up + 2}/outputs/x" in json.dumps(spec)
    code, _, err = run(capsys, "retry", str(down), "--alone")  # its retry is still queued: one at a time
    assert code == 2 and "one attempt at a time" in err and "\n" not in err.strip()
    run(capsys, "cancel", str(new_down))
    code, out, _ = run(capsys, "retry", str(down), "--alone")
    assert code == 0 and "skipped dependents" not in out
    third = int(out.split("->")[1])  # retried from its newest attempt, the one the pipeline follows
    assert json.loads(run(capsys, "show", str(third), "--json")[1])["parent_id"] == new_down
    with store.write() as s:  # the first retry of up fails too: retrying up again continues from it
        s.get(Job, up + 2).status = JobStatus.failed
        skip_dependents_of_failed(s)
    code, out, _ = run(capsys, "retry", str(up), "--json")
    (again,) = json.loads(out)
    assert code == 0 and again["id"] == up
    shown = json.loads(run(capsys, "show", str(again["new"]), "--json")[1])
    assert (shown["parent_id"], shown["attempt"]) == (up + 2, 3)


def test_rm_deletes_finished_jobs_with_their_rows_and_folders(tmp_path, home, capsys) -> None:
    f = write(tmp_path, "c.yaml", SPECS["command"])
    done, live = (int(run(capsys, "submit", str(f), "--no-worker")[1]) for _ in range(2))
    run(capsys, "cancel", str(done))
    folder = home / "runs" / str(done)
    (folder / "outputs").mkdir(parents=True)
    (folder / "outputs" / "model.safetensors").write_bytes(b"x" * 2_000_000)
    from db.session import open_store

    with open_store(home).write() as s:
        s.execute(text("INSERT INTO metric (job_id, name, step, value, time) VALUES (:j, 'loss', NULL, 1.0, 0)"), {"j": done})

    before = db_dump(home)
    code, _, err = run(capsys, "rm", str(done))  # no terminal: refuses without --yes, says what it would do
    assert code == 2 and "2.0 MB" in err and "--yes" in err
    code, _, err = run(capsys, "rm", str(done), str(live), "--yes")
    assert code == 2 and f"job {live}: a queued job cannot be deleted" in err
    assert db_dump(home) == before and folder.is_dir(), "a refused rm changes nothing"

    code, out, _ = run(capsys, "rm", str(done), "--yes")
    assert code == 0 and "deleted 1 job(s)" in out
    assert not folder.exists() and not list((home / "runs").glob(".deleted-*"))
    code, _, err = run(capsys, "show", str(done))
    assert code == 2 and "no such job" in err
    with open_store(home).read() as s:
        assert s.execute(text("SELECT count(*) FROM metric")).scalar_one() == 0
    assert json.loads(run(capsys, "show", str(live), "--json")[1])["status"] == "queued"

    run(capsys, "cancel", str(live))
    code, out, _ = run(capsys, "rm", "-e", "hello", "-y")
    assert code == 0 and json.loads(run(capsys, "ls", "--json")[1]) == []


def test_sweep_submit_prints_every_id(tmp_path, home, capsys) -> None:
    spec = dict(SPECS["finetune"], sweep={"grid": {"learning_rate": [1e-5, 2e-5], "lora.r": [4, 8, 16]}, "seeds": [0, 1]})
    code, out, _ = run(capsys, "submit", str(write(tmp_path, "s.yaml", spec)), "--no-worker", "--json")
    assert code == 0 and len(json.loads(out)["ids"]) == 12


def _bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    ok = SPECS["command"]
    return [
        (["submit", str(write(tmp_path, "m.yaml", "experiment: e\nname: [x\n"))], r"m.yaml: line \d+: malformed YAML"),
        (["submit", str(write(tmp_path, "k.yaml", dict(ok, kind="train")))], r"k.yaml: kind: unknown kind 'train'"),
        (["submit", str(write(tmp_path, "f.yaml", dict(ok, gpu=1)))], r"f.yaml: gpu: unknown field"),
        (["submit", str(write(tmp_path, "t.yaml", dict(ok, gpus="two")))], r"t.yaml: gpus: Input should be a valid integer"),
        (["submit", str(write(tmp_path, "r.yaml", dict(ok, gpus=-1)))], r"r.yaml: gpus: Input should be greater than or equal to 0"),
        (["submit", str(write(tmp_path, "d.yaml", dict(ok, after=[424242])))], r"d.yaml: after: dependency on job 424242: no such job"),
        (["submit", str(write(tmp_path, "p.yaml", {"experiment": "e", "stages": [
            {"name": "a", **{k: v for k, v in ok.items() if k not in ("experiment", "name")}},
            {"name": "b", "kind": "score", "records": "${stages.nope.output}", "scorers": [{"type": "length"}]}]}))],
         r"p.yaml: stages\[1\]: \$\{stages.nope.output\}: refers to stage 'nope'"),
        (["submit", str(tmp_path / "absent.yaml")], r"absent.yaml: no such file"),
        (["show", "31337"], r"job 31337: no such job"),
        (["cancel", "31337"], r"job 31337: no such job"),
        (["retry", "abc"], r"job id 'abc': not a number"),
        (["logs", "31337"], r"job 31337: no such job"),
        (["results", "nope", "--rows", "name", "--metric", "loss"], r"experiment 'nope': no such experiment"),
        (["export", "nope"], r"experiment 'nope': no such experiment"),
    ]


def test_bad_input_one_line_exit_2_database_unchanged(tmp_path, home, capsys) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("experiment: caf\xe9\n".encode("latin-1"))
    run(capsys, "submit", str(write(tmp_path, "ok.yaml", SPECS["command"])), "--no-worker")  # something to protect
    before = db_dump(home)
    cases = _bad_inputs(tmp_path) + [(["submit", str(latin)], r"latin.yaml: not UTF-8 text")]
    # a good file before a bad one: nothing of either may be stored
    cases.append((["submit", str(write(tmp_path, "good.yaml", SPECS["merge"])), str(write(tmp_path, "bad2.yaml", dict(SPECS["merge"], alpha="x")))],
                  r"bad2.yaml: alpha: Input should be a valid number"))
    for args, pattern in cases:
        code, out, err = run(capsys, *args, *(["--no-worker"] if args[0] == "submit" else []))
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        import re

        assert re.search(pattern, lines[0]), (pattern, lines[0])
        assert lines[0].startswith("labdeck: ")
        assert db_dump(home) == before, args


def test_results_and_export(tmp_path, home, capsys, store) -> None:
    spec = {"experiment": "grid", "name": "ft", "kind": "command", "command": ["true"],
            "sweep": {"grid": {"env.MODEL": ["a", "b"], "env.DATA": ["x", "y", "z"]}, "seeds": [0, 1]}}
    ids = json.loads(run(capsys, "submit", str(write(tmp_path, "g.yaml", spec)), "--no-worker", "--json")[1])["ids"]
    from db.queries import job_detail
    from db.queue import record_metrics

    with store.write() as s:
        rows = []
        for i in ids:
            p = job_detail(s, i).row.params
            base = {"a": 10, "b": 20}[p["env.MODEL"]] + {"x": 1, "y": 2, "z": 3}[p["env.DATA"]]
            rows += [{"job_id": i, "name": "wr", "step": step, "value": base + p["seed"] + step, "time": 0.0} for step in range(3)]
        record_metrics(s, rows)
    code, out, _ = run(capsys, "results", "grid", "--rows", "env.MODEL", "--cols", "env.DATA", "--metric", "wr", "--format", "json")
    assert code == 0
    cells = {(c["row"], c["col"]): c for c in json.loads(out)["cells"]}
    # last step is 2; seeds 0 and 1 -> mean base + 2.5, sample std 0.7071
    assert cells[("a", "x")]["mean"] == pytest.approx(13.5) and cells[("a", "x")]["n"] == 2
    assert cells[("b", "z")]["mean"] == pytest.approx(25.5)
    assert cells[("a", "y")]["std"] == pytest.approx(0.70710678)
    code, out, _ = run(capsys, "results", "grid", "--rows", "env.MODEL", "--cols", "env.DATA", "--metric", "wr", "--reduce", "min", "--format", "csv")
    assert out.splitlines()[1].startswith("a,11.5,")
    code, out, _ = run(capsys, "results", "grid", "--rows", "env.MODEL", "--cols", "env.DATA", "--metric", "wr", "--format", "latex")
    assert r"\begin{tabular}{lrrr}" in out and r"13.5 $\pm$ 0.71" in out
    code, out, _ = run(capsys, "results", "grid", "--rows", "env.MODEL", "--cols", "env.DATA", "--metric", "wr", "--format", "markdown")
    assert out.splitlines()[0] == "| env.MODEL \\ env.DATA | x | y | z |"
    code, out, _ = run(capsys, "results", "grid", "--rows", "env.MODEL", "--metric", "wr")
    assert code == 0 and "a" in out

    code, out, _ = run(capsys, "export", "grid", "--format", "json")
    exported = json.loads(out)
    assert len(exported) == 12 and exported[0]["metric.wr"] == exported[0]["param.seed"] + 13
    target = tmp_path / "grid.parquet"
    code, _, _ = run(capsys, "export", "grid", "--format", "parquet", "-o", str(target))
    import pyarrow.parquet as pq

    table = pq.read_table(target)
    assert table.num_rows == 12 and "metric.wr" in table.column_names
    code, out, _ = run(capsys, "export", "grid", "--format", "csv")
    assert out.splitlines()[0].startswith("id,experiment,name,kind,status")


def test_queue_controls(home, capsys, store) -> None:
    from db.queries import worker_state

    for action, state in (("pause", "paused"), ("drain", "draining"), ("resume", "running")):
        assert run(capsys, action)[0] == 0
        with store.read() as s:
            assert worker_state(s).queue_state == state


def test_every_command_answers_help() -> None:
    from cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - enumerate what users see
    for name in commands:
        r = subprocess.run([sys.executable, "-m", "cli", name, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage: labdeck" in r.stdout, name


def test_cli_and_store_do_not_load_the_ml_stack(home) -> None:
    code = (
        "import sys, cli.main, db.session, db.queue, db.queries, db.results, db.export, engine.specfile, engine.events;"
        "from cli.main import main; main(['ls', '--json']);"
        "heavy = [m for m in ('torch', 'transformers', 'accelerate', 'peft', 'datasets', 'trl') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_correlate_per_group_matches_the_worked_example(tmp_path, home, capsys, store) -> None:
    """docs/science.md §4.2: x = [0.2, 0.5, 0.1, 0.9, 0.4], y = [10, 14, 9, 12, 13] gives rho = 0.7."""
    spec = {"experiment": "car", "stages": [
        {"name": "score", "kind": "command", "command": ["true"], "sweep": {"grid": {"env.T": list("abcde"), "env.B": ["b1", "b2"]}}},
        {"name": "judge", "kind": "command", "command": ["true"], "sweep": {"grid": {"env.T": list("abcde"), "env.B": ["b1", "b2"]}}},
    ]}
    ids = json.loads(run(capsys, "submit", str(write(tmp_path, "p.yaml", spec)), "--no-worker", "--json")[1])["ids"]
    x = dict(zip("abcde", [0.2, 0.5, 0.1, 0.9, 0.4], strict=True))
    y = dict(zip("abcde", [10, 14, 9, 12, 13], strict=True))
    from db.queries import job_detail
    from db.queue import record_metrics

    with store.write() as s:
        rows = []
        for i in ids:
            d = job_detail(s, i)
            t, b = d.row.params["env.T"], d.row.params["env.B"]
            if d.row.params["stage"] == "score":
                rows.append({"job_id": i, "name": "car", "step": None, "value": x[t] if b == "b1" else -x[t], "time": 0.0})
            else:
                rows.append({"job_id": i, "name": "win_rate", "step": None, "value": y[t], "time": 0.0})
        record_metrics(s, rows)
    code, out, _ = run(capsys, "correlate", "car", "car", "win_rate", "--match", "env.T", "--by", "env.B", "--json")
    assert code == 0
    res = json.loads(out)
    rhos = {g["group"]: g["rho"] for g in res["groups"]}
    assert rhos == pytest.approx({"b1": 0.7, "b2": -0.7})
    assert res["average_rho"] == pytest.approx(0.0)


def test_results_where_keeps_one_stage(tmp_path, home, capsys, store) -> None:
    spec = {"experiment": "w", "stages": [
        {"name": "compat", "kind": "command", "command": ["true"], "sweep": {"grid": {"env.T": ["a", "b"]}}},
        {"name": "sft", "kind": "command", "command": ["true"], "sweep": {"grid": {"env.T": ["a", "b"]}}},
    ]}
    ids = json.loads(run(capsys, "submit", str(write(tmp_path, "p.yaml", spec)), "--no-worker", "--json")[1])["ids"]
    from db.queue import record_metrics

    with store.write() as s:
        record_metrics(s, [{"job_id": i, "name": "loss", "step": None, "value": float(n), "time": 0.0} for n, i in enumerate(ids)])
    out = json.loads(run(capsys, "results", "w", "--rows", "env.T", "--metric", "loss", "--where", "stage=sft", "--format", "json")[1])
    assert {c["row"]: c["mean"] for c in out["cells"]} == {"a": 2.0, "b": 3.0}
    code, _, err = run(capsys, "results", "w", "--rows", "env.T", "--metric", "loss", "--where", "stage")
    assert code == 2 and "--where 'stage': write FIELD=VALUE" in err


def test_recipes_are_listed_and_submitted_by_name(home, capsys) -> None:
    code, out, _ = run(capsys, "recipes", "--json")
    assert code == 0
    recipes = {r["name"]: r for r in json.loads(out)}
    assert {"car_teacher_selection", "prompt_injection", "expo"} <= set(recipes)
    assert all(Path(r["path"]).is_file() and r["description"] for r in recipes.values())
    code, out, _ = run(capsys, "submit", "expo", "--no-worker", "--json")
    assert code == 0 and len(json.loads(out)["ids"]) > 1
    code, out, err = run(capsys, "submit", "expo", "--variant", "nope", "--no-worker")
    assert code == 2 and "no variant named 'nope'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "submit", "no_such_recipe", "--no-worker")
    assert code == 2 and "no_such_recipe: no such file" in err
