"""The app's plain functions, without Textual: filters, paging queries, log reading, form values."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.queries import JOB_SORTS, page_jobs
from db.session import Store
from engine.presets import PRESETS
from engine.specfile import expand
from tui import spec_fields as SF
from tui.render import bar, duration, number, progress_cell
from tui.source import JobQuery, Source, varying_fields
from tui.widgets.spec_diff import spec_differences


def test_filter_text_understands_status_kind_and_experiment() -> None:
    q = JobQuery.parse("status:failed,interrupted kind:finetune exp:car-teachers lora", sort="name")
    assert q == JobQuery("lora", "car-teachers", ("failed", "interrupted"), ("finetune",), "name")
    assert JobQuery.parse("s:running k:score").statuses == ("running",)
    assert not JobQuery.parse("").filtered
    assert JobQuery.parse('"two words"').text == "two words"


@pytest.mark.parametrize("sort", JOB_SORTS)
def test_pages_cover_every_job_once_in_any_sort(seeded_dir, sort: str) -> None:  # noqa: ANN001
    store = Store(seeded_dir[0])
    with store.read() as s:
        seen = []
        for offset in range(0, 18, 5):
            rows, total = page_jobs(s, sort=sort, offset=offset, limit=5)
            seen += [r.id for r in rows]
        assert total == 18 and sorted(seen) == list(range(1, 19))
        rows, total = page_jobs(s, statuses=["succeeded"], text="sft", sort=sort, limit=100)
        assert total == len(rows) == 12
    store.dispose()


def test_status_sort_puts_what_needs_attention_first(seeded_dir, ids) -> None:  # noqa: ANN001
    store = Store(seeded_dir[0])
    with store.read() as s:
        rows, _ = page_jobs(s, sort="status", limit=4)
    store.dispose()
    assert [r.id for r in rows] == [ids["running"], ids["queued_high"], ids["queued"], ids["failed"]]


def test_log_reading_starts_at_the_tail_and_waits_for_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_bytes(b"x" * 70_000 + b"\nfirst whole line\nsecond\npartial")
    src = Source(tmp_path / "home")
    chunk = src.read_log(str(log), None)
    assert chunk.lines == ("first whole line", "second")  # the cut line at the 64 KiB mark is dropped
    with open(log, "ab") as fh:
        fh.write(b" now complete\n")
    more = src.read_log(str(log), chunk.offset)
    assert more.lines == ("partial now complete",)
    log.write_text("rotated\n")
    again = src.read_log(str(log), more.offset)
    assert again.reset and again.lines == ("rotated",)
    assert src.read_log(str(tmp_path / "missing.txt"), None).lines == ()


def test_form_values_round_trip_every_kind_and_preset() -> None:
    for preset in PRESETS.values():
        spec = expand(preset.spec(), "preset").drafts[0].spec
        raw = SF.editor_values(preset.kind, spec)
        result = SF.validate(preset.kind, raw)
        assert result.ok, (preset.name, result.errors)
        assert expand(result.data, "again").drafts[0].spec == spec, preset.name


def test_form_parses_text_like_a_person_types_it() -> None:
    fields = {f.name: f for f in SF.fields_for("finetune")}
    assert SF.parse_value(fields["learning_rate"], "1e-5") == 1e-5
    assert SF.parse_value(fields["learning_rate"], "") is SF.OMIT  # empty: the default applies
    assert SF.parse_value(fields["max_steps"], "") is SF.OMIT
    assert SF.parse_value(fields["lora"], True) is True and SF.parse_value(fields["lora"], False) is SF.OMIT
    assert SF.parse_value(fields["lora.r"], "16") == 16 and SF.parse_value(fields["lora.r"], "8") is SF.OMIT
    assert SF.parse_value(fields["lora.target_modules"], "[q_proj, v_proj]") == ["q_proj", "v_proj"]
    assert SF.parse_value(fields["model"], "Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert SF.parse_grid("learning_rate=1e-5,2e-5; lora.r=8,16") == {"learning_rate": [1e-5, 2e-5], "lora.r": [8, 16]}
    with pytest.raises(SF.FieldError):
        SF.parse_grid("learning_rate")
    cmd = {f.name: f for f in SF.fields_for("command")}["command"]
    assert SF.parse_value(cmd, "python -c 'print(1)'") == ["python", "-c", "print(1)"]
    assert SF.format_value(cmd, ["python", "-c", "print(1)"]) == "python -c 'print(1)'"


def test_all_invalid_fields_are_reported_not_only_the_first() -> None:
    raw = SF.editor_values("finetune", {"experiment": "e", "name": "n"})
    raw.update(learning_rate="-1")
    errors = SF.validate("finetune", raw).errors
    assert {"model", "dataset", "learning_rate"} <= set(errors)


def test_spec_differences_show_only_what_differs() -> None:
    a = {"kind": "finetune", "lora": {"r": 8, "alpha": 16}, "seed": 0}
    b = {"kind": "finetune", "lora": {"r": 16, "alpha": 16}, "seed": 0, "extra": 1}
    diffs, same = spec_differences([a, b])
    assert [k for k, _ in diffs] == ["lora.r", "extra"] and same == 3


def test_varying_fields_prefer_sweep_parameters(seeded_dir) -> None:  # noqa: ANN001
    data = Source(store=Store(seeded_dir[0])).results("car-teachers", "win_rate")
    assert data.fields[:3] == ("dataset.path", "model.path", "seed")
    assert data.metric == "win_rate"
    assert varying_fields([]) == ["kind", "status", "name"]


def test_text_helpers() -> None:
    assert duration(5) == "5s" and duration(125) == "2m05s" and duration(7500) == "2h05m" and duration(None) == ""
    assert number(620.0) == "620" and number(2e-5) == "2e-05" and number(0.5512) == "0.5512"
    assert bar(0.5, 4).plain == "██░░" and bar(None, 3).plain == "░░░"
    assert progress_cell(0.62, 10, "running").plain.endswith(" 62%")


def test_ema_smoothing_is_debiased_and_follows_a_step() -> None:
    from tui.widgets.charts import ema

    assert ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards zero at the start
    out = ema([0.0] * 5 + [1.0] * 50, 0.6)
    assert out[4] == 0.0 and 0.0 < out[5] < 1.0 and out[-1] == pytest.approx(1.0, abs=1e-6)
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0]
