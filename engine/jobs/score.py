"""The score job: per-sample scores for a records file, and per-job aggregates (docs/science.md §0-§4, §7, §9.6, §10).

Each scorer runs in turn over every record (one model in memory at a time), in length-sorted
batches under a token budget, writing its fields to `outputs/parts/<k>.partial.0.jsonl` after every
batch, so a killed job resumes per scorer and per record. At the end, `outputs/records.jsonl` holds
every input record with all the new fields, and `outputs/summary.json` the aggregates that are
also reported as summary metrics (no step), together with every UNPINNED choice (template, β,
IFD form, tokenizer) that shaped them.

Aggregation is `aggregate()`, a pure function of the scored records, so a notebook can recompute
it (or vary β) from `records.jsonl` without loading a model.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from engine.jobs._common import JobContext, JobInputError
from engine.jobs._loading import check_fields, check_model_path, process_state, read_records, text_field
from engine.jobs._output import INDEX, ResumableRows, fingerprint, write_json
from engine.jobs.scorers import SCORERS, Item, Scorer
from engine.specs.common import ModelRef
from engine.specs.score import ScoreSpec

# Per-sample fields that are not averaged (lists, flags used elsewhere, raw logprobs).
_NOT_AVERAGED = {"confidence_logits", "confidence_label", "correct_reply", "judge_switched", "judge_lp_m", "judge_lp_M",
                 "injection_begin_with", "injection_in_response", "judge_preference", "arena_hard_verdict_0",
                 "arena_hard_verdict_1", "arena_hard_judgment_0", "arena_hard_judgment_1"}


def _label(sc: Scorer) -> str:
    s = sc.spec
    if s.type == "correctness":
        return s.field
    return s.field if s.type == "reward" else s.prefix if s.type == "loss" else s.type


def _check_spec(spec: ScoreSpec) -> None:
    """What the spec allows for compatibility but a job cannot do: refused at once, one line."""
    names = [s.field if s.type == "reward" else s.prefix for s in spec.scorers if s.type in ("reward", "loss")]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise JobInputError(f"scorers: field names {dup} are used by two scorers; set `field`/`prefix` apart")
    for kind in ("length", "injection", "judge", "arena_hard", "confidence", "correctness"):
        if sum(s.type == kind for s in spec.scorers) > 1:
            raise JobInputError(f"scorers: at most one {kind} scorer per job")
    if spec.car_beta is not None:
        if spec.car_reward_field is None and not any(s.type == "reward" for s in spec.scorers):
            raise JobInputError("car_beta: CAR needs a reward scorer (or car_reward_field naming a record field)")
        if spec.car_loss_field is None and not any(s.type == "loss" for s in spec.scorers):
            raise JobInputError("car_beta: CAR needs a loss scorer (or car_loss_field naming a record field)")


def _needs_instruction(spec: ScoreSpec) -> bool:
    return any(s.type in ("reward", "loss", "judge", "arena_hard") or (s.type == "confidence" and not s.question_field)
               for s in spec.scorers)


def _check_models(spec: ScoreSpec) -> None:
    for s in spec.scorers:
        what = {"reward": "reward model", "judge": "judge model", "arena_hard": "judge model"}.get(s.type, "model")
        if getattr(s, "model", None) is not None:
            check_model_path(s.model, what)
        if s.type == "confidence" and s.estimator is not None:
            from engine.jobs._uncertainty import read_estimator_info

            read_estimator_info(s.estimator, "scorers[confidence].estimator")
        if s.type == "judge" and s.reward_model is not None:
            check_model_path(s.reward_model, "judge reward model")
        if s.type == "length" and s.tokenizer:
            check_model_path(ModelRef(path=s.tokenizer), "tokenizer")


def run(spec: ScoreSpec, ctx: JobContext) -> None:
    # Cheap checks first (no torch): the spec's combinations, every path, every field.
    _check_spec(spec)
    _check_models(spec)
    source = spec.records if isinstance(spec.records, str) else ", ".join(spec.records)
    rows = read_records(spec.records, "records")
    required: dict[str, str | None] = {"response_field": spec.response_field}
    if _needs_instruction(spec):
        required["instruction_field"] = spec.instruction_field
    if spec.group_field:
        required["group_field"] = spec.group_field
    scorers: list[Scorer] = [SCORERS[s.type](s, spec.input_join) for s in spec.scorers]
    written: set[str] = set()  # fields an earlier scorer of this job writes need not be in the records
    for sc in scorers:
        required.update({k: v for k, v in sc.required_fields().items() if v not in written})
        written.update(sc.fields)
    required.update({f"carry[{f}]": f for f in spec.carry if f not in written})
    check_fields(rows, required, "records", source)

    if _model_free(spec) and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        device = "cpu"  # string rules only (ASR, characters): loading torch would be most of the job's time
    else:
        from engine.jobs.generate import _quiet

        _quiet()
        state = process_state()
        if not state.is_main_process:
            return  # scoring runs in one process (one model at a time); extra ranks of a DP launch stand by
        device = str(state.device)
    for sc in scorers:
        sc.device = device
        sc.outputs = ctx.outputs
    items = [Item(text_field(r, spec.instruction_field), text_field(r, spec.input_field),
                  text_field(r, spec.response_field), r) for r in rows]
    n = len(items)
    inputs = [it.instruction + "\x00" + it.data + "\x00" + it.response for it in items]

    parts = ctx.outputs / "parts"
    parts.mkdir(exist_ok=True)
    total = n * len(scorers)
    progress = 0
    ctx.events.info("score: records read", records=n, scorers=[_label(s) for s in scorers], source=source)
    results: list[dict[int, dict[str, Any]]] = []
    recorded: dict[str, Any] = {"input_join": spec.input_join, "dataset_mean": "per-sample (§1.1, UNPINNED)"}
    for k, sc in enumerate(scorers):
        out = ResumableRows(parts, str(k), fingerprint({"scorer": sc.params(), "join": spec.input_join}, inputs))
        out.check_fingerprint()
        done = out.done()
        pending = [i for i in range(n) if i not in done]
        progress += n - len(pending)
        ctx.events.progress(progress, total, "scores")
        info_file = parts / f"{k}.info.json"
        earlier = _read_info(info_file) if done else {}  # what an earlier attempt of this scorer recorded
        if pending:
            sc.prepare(items)
            ctx.events.info(f"score: {_label(sc)} ready", scorer=sc.spec.type, **_jsonable_info(sc.info))
            for batch in sc.batches(pending):
                values = sc.score(batch)
                out.append([{**v, INDEX: i} for i, v in zip(batch, values, strict=True)])
                write_json(info_file, _merge_info(earlier, sc.info))
                progress += len(batch)
                ctx.events.progress(progress, total, "scores")
            if sc.stats.seconds > 0:
                ctx.events.metric(f"{_label(sc)}_tokens_per_s", sc.stats.tokens_per_s)
                ctx.events.metric(f"{_label(sc)}_padding_fraction", sc.stats.padding_fraction)
        out.finalize(n, keep_index=False)
        results.append(out.done())
        for i, fields in results[-1].items():  # later scorers see this one's fields (correctness -> confidence)
            items[i].record = {**items[i].record, **fields}
        info = _merge_info(earlier, sc.info) if pending else earlier
        recorded[_label(sc)] = info or {"parameters": sc.params()}
        if isinstance(info.get("baseline"), dict):
            recorded.setdefault("baselines", {})[_label(sc)] = info["baseline"]
        write_json(info_file, recorded[_label(sc)])
        _release(sc)

    merged = [dict(it.record) for it in items]
    _write_records(ctx.outputs / "records.jsonl", merged)

    metrics, notes = aggregate(merged, spec)
    for name, value in metrics.items():
        ctx.events.metric(name, value)
    for note in notes:
        ctx.events.info(note)
    recorded["car_beta"] = spec.car_beta
    write_json(ctx.outputs / "summary.json", {"metrics": {k: _nan_none(v) for k, v in metrics.items()},
                                              "recorded": recorded, "notes": notes, "records": n})
    ctx.events.info("score: unpinned choices", **_jsonable_info(recorded))
    ctx.events.artifact("records", "outputs/records.jsonl", records=n)


# Per-scorer counters that add up over attempts (the rest of a scorer's info is recomputed whole by `prepare`).
_COUNTERS = ("too_long",)


def _read_info(path: Any) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _merge_info(earlier: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """A resumed scorer's info: this attempt's, with the counters of batches scored by earlier attempts added."""
    merged = {**earlier, **_jsonable_info(now)}
    for key in _COUNTERS:
        if isinstance(earlier.get(key), int) and isinstance(now.get(key), int):
            merged[key] = earlier[key] + now[key]
    return merged


def _model_free(spec: ScoreSpec) -> bool:
    """Every scorer is a string rule: injection success, length in characters (no tokenizer), or correctness by
    substring / normalised match (no judge)."""
    return all(s.type == "injection" or (s.type == "length" and not s.tokenizer)
               or (s.type == "correctness" and s.mode != "judge") for s in spec.scorers)


def _release(sc: Scorer) -> None:
    """Drop a scorer's model before the next one loads (one model in memory at a time)."""
    for attr in ("model", "rm", "est"):
        if hasattr(sc, attr):
            delattr(sc, attr)
    torch = sys.modules.get("torch")  # a model-free job never loaded it; importing it here would cost seconds
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_records(path: Any, rows: list[dict[str, Any]]) -> None:
    import os

    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _jsonable_info(d: dict[str, Any]) -> dict[str, Any]:
    """Info as strict JSON: paths as strings, a non-finite number (e.g. an estimator's validation AUROC on a
    one-class split) as None, since events and summaries are strict JSON."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(json.loads(json.dumps(d, default=str)))


def _nan_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


# ----------------------------------------------------------------------------------------------
# Aggregates (pure: records in, metrics out)


def _numbers(rows: Iterable[dict[str, Any]], field: str) -> list[float]:
    out = []
    for r in rows:
        v = r.get(field)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
    return out


def _group_name(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(value)).strip("_") or "none"


# Metrics also averaged over groups (one value per group, NaN groups skipped), as the calibration paper averages
# per-subject AUROC and ECE over MMLU subjects (§10.5).
GROUP_MEANS = ("auroc", "ece", "ece_raw", "acc")


def aggregate(rows: list[dict[str, Any]], spec: ScoreSpec) -> tuple[dict[str, float], list[str]]:
    """Summary metrics of scored records, overall and (with `group_field`) per group as 'name/group'."""
    metrics, notes = _aggregate(rows, spec)
    if spec.group_field:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(_group_name(r.get(spec.group_field)), []).append(r)
        per_group: dict[str, list[float]] = {}
        for g, sub in sorted(groups.items()):
            m, _ = _aggregate(sub, spec)
            metrics.update({f"{k}/{g}": v for k, v in m.items()})
            for k in GROUP_MEANS:
                if k in m:
                    per_group.setdefault(k, []).append(m[k])
        for k, values in per_group.items():  # §10.5: the mean over subjects of a per-subject metric
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                metrics[f"{k}_group_mean"] = sum(finite) / len(finite)
                metrics[f"{k}_groups"] = float(len(finite))
    return metrics, notes


def _aggregate(rows: list[dict[str, Any]], spec: ScoreSpec) -> tuple[dict[str, float], list[str]]:
    from engine.jobs._uncertainty import uncertainty_metrics
    from engine.metrics import (
        arena_hard_win_rate,
        asr,
        car_from_samples,
        discrete_win_rate,
        length_controlled_win_rate,
        max_asr,
        mean_std,
        win_rate,
    )
    from engine.metrics.injection import ATTACK_FAMILIES

    m: dict[str, float] = {"n": float(len(rows))}
    notes: list[str] = []
    fields: list[str] = []
    for s in spec.scorers:
        if s.type == "reward":
            fields.append(s.field)
        elif s.type == "loss":
            p = s.prefix
            fields += [p, f"{p}_ppl", f"{p}_tokens"]
            if s.ifd:
                fields += [f"{p}_uncond", f"{p}_uncond_ppl", f"{p}_ifd", f"{p}_ifd_loss", f"{p}_ifd_ppl"]
        elif s.type == "length":
            fields += ["length_chars", "length_tokens"]
        elif s.type == "judge":
            fields.append("judge_p_model_wins")
        elif s.type == "confidence":
            fields += ["confidence", "confidence_ts"]
        elif s.type == "correctness":
            fields.append(s.field)
    fields += [f for f in spec.carry if f not in fields]  # computed once upstream, reported here too
    for f in fields:
        if f in _NOT_AVERAGED:
            continue
        values = _numbers(rows, f)
        if not values:
            continue
        mean, std = mean_std(values)
        m[f] = mean
        m[f"{f}_std"] = std
        if len(values) < len(rows):
            m[f"{f}_missing"] = float(len(rows) - len(values))
    for s in spec.scorers:
        if s.type == "loss":
            tok = [(r.get(s.prefix), r.get(f"{s.prefix}_tokens")) for r in rows]
            pairs = [(lv, t) for lv, t in tok if isinstance(lv, (int, float)) and t]
            if pairs:
                m[f"{s.prefix}_token_weighted"] = sum(lv * t for lv, t in pairs) / sum(t for _, t in pairs)

    # CAR on dataset means (§3.1): r(D_G) / (1 + β L(D_G, θ_B)), over records that have both.
    if spec.car_beta is not None:
        r_field = spec.car_reward_field or next(s.field for s in spec.scorers if s.type == "reward")
        l_field = spec.car_loss_field or next(s.prefix for s in spec.scorers if s.type == "loss")
        both = [(r.get(r_field), r.get(l_field)) for r in rows]
        both = [(a, b) for a, b in both if isinstance(a, (int, float)) and isinstance(b, (int, float))]
        betas = spec.car_beta if isinstance(spec.car_beta, list) else [spec.car_beta]
        if both:
            for beta in betas:
                name = "car" if not isinstance(spec.car_beta, list) else f"car_b{beta:g}"
                m[name] = car_from_samples([a for a, _ in both], [b for _, b in both], beta)
        notes.append(f"CAR = mean({r_field}) / (1 + beta * mean({l_field})), beta {betas} (UNPINNED, §3)")

    for s in spec.scorers:
        if s.type == "judge":
            p = [r["judge_p_model_wins"] if r.get("judge_p_model_wins") is not None else float("nan") for r in rows]
            m["win_rate"] = win_rate(p)
            m["discrete_win_rate"] = discrete_win_rate(p)
            try:
                lc = length_controlled_win_rate(p, [str(r.get(spec.response_field, "")) for r in rows],
                                                [str(r.get(s.reference_field, "")) for r in rows])
                m["lc_win_rate"] = lc.win_rate
                notes.append("lc_win_rate: length_controlled_minimal (no difficulty term, no regularisation), §7.2")
            except (ValueError, ArithmeticError) as e:
                notes.append(f"lc_win_rate not computed: {e}")
        elif s.type == "arena_hard":
            games = [tuple(f"[[{v}]]" if v else None for v in (r.get("arena_hard_verdict_0"), r.get("arena_hard_verdict_1")))
                     for r in rows]
            m["arena_hard_win_rate"] = arena_hard_win_rate(games)
            m["arena_hard_no_verdict"] = float(sum(v is None for g in games for v in g))
        elif s.type == "injection":
            outputs = [str(r.get(spec.response_field, "")) for r in rows]
            m["asr"] = asr(outputs, "begin_with", s.keyword)
            m["asr_in_response"] = asr(outputs, "in_response", s.keyword)
            by_attack: dict[str, list[str]] = {}
            for r, o in zip(rows, outputs, strict=True):
                a = r.get(s.attack_field)
                if a is not None:
                    by_attack.setdefault(str(a), []).append(o)
            per = {}
            for a, outs in sorted(by_attack.items()):
                per[a] = asr(outs, "begin_with", s.keyword)
                m[f"asr_{_group_name(a)}"] = per[a]
                m[f"asr_in_response_{_group_name(a)}"] = asr(outs, "in_response", s.keyword)
            for family in ATTACK_FAMILIES:
                try:
                    m[f"max_asr_{family}"] = max_asr(per, family)  # type: ignore[arg-type]
                except KeyError:
                    pass
        elif s.type == "confidence":
            got = [(r.get("confidence"), r.get("confidence_ts"), r.get("confidence_label")) for r in rows]
            got = [(p, q if q is not None else p, y) for p, q, y in got if p is not None and y is not None]
            if got:
                m.update(uncertainty_metrics([a for a, _, _ in got], [c for _, _, c in got], [b for _, b, _ in got],
                                             drop_conf_one=s.drop_conf_one))
    return m, notes
