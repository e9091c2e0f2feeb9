"""Every job judges a model path and a records path by the same rule (engine.jobs._loading).

A one-word hub id (`gpt2`) is a hub id in generate, finetune and merge alike: accepted by the cheap
checks, and, offline with an empty hub cache, refused by all three with the same one line. A folder
of a job's outputs is read through its records.jsonl by generate and finetune alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from job_harness import instruction_rows, run_inprocess, run_job, write_jsonl

from engine.jobs._common import JobInputError
from engine.jobs._loading import check_model_path, is_hub_id, read_dataset, read_records
from engine.specs.common import DatasetRef, ModelRef


def _specs(model: str, data: str) -> dict[str, dict]:
    return {
        "generate": {"kind": "generate", "model": model, "dataset": data, "max_new_tokens": 2, "template": "alpaca"},
        "finetune": {"kind": "finetune", "method": "sft", "model": model, "dataset": data, "template": "alpaca",
                     "max_steps": 1, "per_device_batch": 2},
        "merge": {"kind": "merge", "method": "average", "models": [model, model]},
    }


def test_a_one_word_hub_id_is_judged_alike_by_generate_finetune_and_merge(tmp_path: Path) -> None:
    """Through the real launcher, offline, with an empty hub cache: the same one line from all three."""
    data = str(write_jsonl(tmp_path / "data.jsonl", instruction_rows(4)))
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    lines = {}
    for kind, spec in _specs("gpt2", data).items():
        res = run_job(tmp_path / kind, spec, env=env, timeout=120)
        assert res.returncode == 3, (kind, res.stderr)
        [line] = res.stderr.strip().splitlines()
        assert " gpt2: " in line, (kind, line)
        lines[kind] = line.split(" gpt2: ", 1)[1]
        assert not (tmp_path / kind / "outputs" / "model").exists()
    assert lines["generate"] == lines["finetune"] == lines["merge"], lines
    assert lines["generate"].startswith("not in the Hugging Face cache") and "HF_HUB_OFFLINE" in lines["generate"]


@pytest.mark.parametrize(("path", "hub"), [("gpt2", True), ("Qwen/Qwen2.5-0.5B", True), ("./gpt2", False),
                                           ("~/models/x", False), ("/abs/model", False), ("a/b/c", False)])
def test_what_counts_as_a_hub_id(path: str, hub: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_hub_id(path) is hub
    monkeypatch.chdir(tmp_path)
    if not hub:
        with pytest.raises(JobInputError, match="no such folder"):
            check_model_path(ModelRef(path=path))


def test_local_model_folders_are_checked_before_loading(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    assert check_model_path(ModelRef(path=str(tiny.llama))) == str(tiny.llama)
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobInputError, match="no config.json"):
        check_model_path(ModelRef(path=str(tmp_path / "empty")))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    with pytest.raises(JobInputError, match="no .safetensors weights"):
        check_model_path(ModelRef(path=str(no_weights)))
    assert check_model_path(ModelRef(path=str(no_weights)), "tokenizer") == str(no_weights)
    with pytest.raises(JobInputError, match="is a file"):
        check_model_path(ModelRef(path=str(tiny.llama / "config.json")))


def test_a_folder_of_outputs_is_read_through_its_records(tmp_path: Path) -> None:
    rows = instruction_rows(5)
    outputs = tmp_path / "gen" / "outputs"
    write_jsonl(outputs / "records.jsonl", rows)
    (outputs / "summary.json").write_text("{}")
    assert read_records(str(outputs)) == rows
    assert read_dataset(DatasetRef(path=str(outputs), limit=3)) == rows[:3]
    (tmp_path / "other").mkdir()
    with pytest.raises(JobInputError, match="must hold records.jsonl"):
        read_records(str(tmp_path / "other"))


def test_a_saved_dataset_folder_is_read_with_load_from_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = instruction_rows(3)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert read_records(str(tmp_path / "saved")) == rows
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(JobInputError, match="no split 'train'"):
        read_records(str(tmp_path / "dict"))
    assert read_records(str(tmp_path / "dict"), split="test") == rows


def test_generate_and_finetune_read_a_folder_of_outputs_alike(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    """Both jobs take the outputs folder a pipeline stage hands on, and refuse an unrelated folder with one line."""
    outputs = tmp_path / "stage" / "outputs"
    write_jsonl(outputs / "records.jsonl", instruction_rows(4))
    specs = _specs(str(tiny.llama), str(outputs))
    gen = run_inprocess(tmp_path / "gen", specs["generate"])
    assert gen.returncode == 0, gen.errors()
    assert len(gen.records()) == 4
    ft = run_inprocess(tmp_path / "ft", specs["finetune"])
    assert ft.returncode == 0, ft.errors()
    assert [e for e in ft.infos() if e.get("records") == 4]
    (tmp_path / "unrelated").mkdir()
    bad = _specs(str(tiny.llama), str(tmp_path / "unrelated"))
    messages = []
    for kind in ("generate", "finetune"):
        res = run_inprocess(tmp_path / f"bad-{kind}", bad[kind])
        assert res.returncode == 3
        messages.append(res.errors()[-1]["message"])
    assert messages[0] == messages[1] and "must hold records.jsonl" in messages[0]
