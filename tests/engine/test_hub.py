"""Hugging Face conventions: what `labdeck prefetch` lists and fetches, and the offline check jobs run first.

No network here: hub ids are checked with HF_HUB_OFFLINE=1 against a private HF_HOME, where they
must fail with one line naming them; a cached repository is laid out as huggingface_hub writes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.main import main
from engine import hub

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(h))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return h


def fake_cached(hf_home: Path, repo_id: str, repo_type: str = "model", files: tuple[str, ...] = ("config.json",)) -> None:
    """A repository in the cache as huggingface_hub lays it out: refs/main names a snapshot folder."""
    folder = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in files:
        (snap / f).write_text("{}")


def pipeline(tmp_path: Path) -> Path:
    local_model = tmp_path / "my-model"
    local_model.mkdir()
    (local_model / "config.json").write_text("{}")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "hi", "output": "hello"}\n')
    spec = {
        "experiment": "pf",
        "matrix": {"teacher": [{"name": "a", "model": str(local_model)}, {"name": "b", "model": "org/teacher-b"}]},
        "stages": [
            {"name": "gen", "kind": "generate", "foreach": ["teacher"], "model": "${matrix.teacher.model}",
             "dataset": "org/instructions"},
            {"name": "sc", "kind": "score", "foreach": ["teacher"], "records": "${stages.gen.output}",
             "scorers": [{"type": "reward", "model": "org/reward-model"}]},
            {"name": "gen2", "kind": "generate", "model": "org/teacher-b", "dataset": str(prompts)},
            {"name": "gen3", "kind": "generate", "model": "${stages.gen2.outputs}/model", "dataset": str(prompts)},
        ],
    }
    path = tmp_path / "pf.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_list_names_hub_repositories_local_paths_and_stage_outputs(tmp_path, home, capsys) -> None:
    spec = pipeline(tmp_path)
    assert main(["prefetch", str(spec), "--list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert sorted((i["type"], i["id"], sorted(i["jobs"])) for i in listing["hub"]) == [
        ("dataset", "org/instructions", ["gen[teacher=a]", "gen[teacher=b]"]),
        ("model", "org/reward-model", ["sc[teacher=a]", "sc[teacher=b]"]),
        ("model", "org/teacher-b", ["gen2", "gen[teacher=b]"]),
    ]
    assert sorted(p["path"] for p in listing["local"]) == [str(tmp_path / "my-model"), str(tmp_path / "prompts.jsonl")]
    assert listing["from_earlier_stages"] == 1 and listing["missing"] == []
    assert not (home / "labdeck.db").exists() or main(["ls", "--json"]) == 0 and capsys.readouterr().out.strip() == "[]"


def test_offline_every_missing_repository_fails_with_one_line_naming_it(tmp_path, home, hf_home, capsys) -> None:
    fake_cached(hf_home, "org/instructions", "dataset")  # already here: not a failure
    code = main(["prefetch", str(pipeline(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1
    failures = sorted(line for line in err.splitlines() if line.startswith("labdeck: model"))
    assert failures == [
        f"labdeck: model {rid}: not in the Hugging Face cache ({hf_home / 'hub'}) and HF_HUB_OFFLINE is set, "
        "so it cannot be downloaded" for rid in ("org/reward-model", "org/teacher-b")
    ]
    assert "dataset org/instructions:" not in err and "2 of 3 could not be fetched" in err


def test_a_missing_local_path_is_a_warning_and_a_bad_spec_exits_2(tmp_path, home, capsys) -> None:
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"experiment": "e", "name": "g", "kind": "generate", "model": "org/m",
                                    "dataset": str(tmp_path / "nowhere.jsonl")}))
    assert main(["prefetch", str(spec), "--list"]) == 0
    err = capsys.readouterr().err
    assert f"warning: dataset {tmp_path / 'nowhere.jsonl'} (job g): no such file" in err
    spec.write_text(yaml.safe_dump({"experiment": "e", "name": "g", "kind": "generate", "modle": "org/m"}))
    assert main(["prefetch", str(spec)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_offline_problem_asks_the_cache_only_when_offline(hf_home, monkeypatch, tmp_path) -> None:
    fake_cached(hf_home, "org/cached")
    assert hub.offline_problem("org/cached") is None
    why = hub.offline_problem("org/absent")
    assert why is not None and str(hf_home / "hub") in why and "HF_HUB_OFFLINE" in why
    assert hub.offline_problem("org/cached", revision="feedface" * 5) is not None  # another revision is not here
    assert hub.offline_problem("org/absent", repo_type="dataset") is not None
    local = tmp_path / "org"
    (local / "absent").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub.offline_problem("org/absent") is None  # a local folder of that name is not a hub id
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.offline_problem("org/elsewhere") is None  # online: from_pretrained will download it


def test_a_job_whose_model_is_not_cached_offline_fails_before_loading_with_one_line(tmp_path, hf_home) -> None:
    from engine.specs import dump_spec, parse_spec

    records = tmp_path / "prompts.jsonl"
    records.write_text('{"instruction": "hi"}\n')
    run_dir = tmp_path / "run"
    (run_dir / "outputs").mkdir(parents=True)
    spec = parse_spec({"experiment": "e", "name": "g", "kind": "generate", "model": "org/not-here", "dataset": str(records)})
    (run_dir / "spec.json").write_text(json.dumps(dump_spec(spec)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABDECK_EVENTS": str(run_dir / "events.jsonl")}
    p = subprocess.run([sys.executable, "-m", "engine.jobs", str(run_dir)], env=env, capture_output=True, text=True,
                       timeout=300, cwd=run_dir)
    assert p.returncode == 3, p.stderr
    line = f"labdeck: model org/not-here: not in the Hugging Face cache ({hf_home / 'hub'}), and HF_HUB_OFFLINE is set;"
    assert p.stderr.startswith(line) and len(p.stderr.strip().splitlines()) == 1
    errors = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines() if '"error"' in x]
    assert [(e["reason"], e["message"].startswith("model org/not-here: not in the Hugging Face cache")) for e in errors] \
        == [("bad_input", True)]
