"""engine.metrics against the worked examples of docs/science.md, plus property tests.

Each example test names the docs/science.md section whose numbers it reproduces.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import metrics as m

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=60, deadline=None)


# --- import boundary -------------------------------------------------------------------------


def test_import_loads_no_heavy_library():
    """The CLI and the app import engine.metrics; it must not drag torch, scipy or pandas in
    (how fast the import is belongs to bench/, not to a timed test)."""
    code = (
        "import sys; import engine.metrics; "
        "print(sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'scipy', 'sklearn', 'pandas'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- §0 / §1 likelihood and IFD ----------------------------------------------------------------


def test_response_loss_and_perplexity_section_0():
    assert m.response_loss([-0.5, -1.0, -2.1]) == pytest.approx(1.2)
    assert m.perplexity([-0.5, -1.0, -2.1]) == pytest.approx(3.3201, abs=1e-4)
    assert m.response_loss([-1.0, -1.5, -2.3]) == pytest.approx(1.6)
    assert m.perplexity([-1.0, -1.5, -2.3]) == pytest.approx(4.9530, abs=1e-4)


def test_ifd_both_forms_section_1_2():
    assert m.ifd(1.2, 1.6) == pytest.approx(0.75)
    assert m.ifd(1.2, 1.6, form="ppl") == pytest.approx(0.67032, abs=1e-5)
    assert isinstance(m.ifd(1.2, 1.6), float)
    np.testing.assert_allclose(m.ifd([1.2, 2.0], [1.6, 1.0]), [0.75, 2.0])
    np.testing.assert_array_equal(m.ifd_keep([0.75, 1.0, 1.2]), [True, True, False])
    with pytest.raises(ValueError):
        m.ifd(1.0, 1.0, form="ratio")  # type: ignore[arg-type]


def test_response_loss_rejects_empty():
    with pytest.raises(ValueError):
        m.response_loss([])


# --- §3 CAR ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reward", "loss", "beta", "expected"),
    [
        (0.8, 0.5, 0, 0.8),
        (0.8, 0.5, 1, 0.5333),
        (0.8, 0.5, 3, 0.32),
        (0.9, 1.0, 0, 0.9),
        (0.9, 1.0, 1, 0.45),
        (0.9, 1.0, 3, 0.225),
    ],
)
def test_car_table_section_3_2(reward, loss, beta, expected):
    assert m.car(reward, loss, beta) == pytest.approx(expected, abs=1e-4)


def test_car_ranking_flips_and_negative_reward_moves_towards_zero():
    assert m.car(0.8, 0.5, 1) > m.car(0.9, 1.0, 1)
    low_loss, high_loss = m.car(-2.0, [0.5, 2.0], 1.0)
    assert -2.0 < low_loss < high_loss < 0  # no abs: more loss pulls a negative CAR up towards 0


def test_car_from_samples_uses_dataset_means():
    assert m.car_from_samples([0.6, 1.0], [0.0, 1.0], 1.0) == pytest.approx(0.8 / 1.5)
    with pytest.raises(ValueError):
        m.car(1.0, 1.0, -0.5)


@PROPERTY
@given(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(0, 1e3, allow_nan=False),
)
def test_car_with_beta_zero_is_the_reward(reward, loss):
    assert m.car(reward, loss, 0.0) == reward


# --- §4 AP and Spearman ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lc", "ah", "ap"),
    [
        (16.09, 13.7, 14.895),
        (19.20, 13.1, 16.15),
        (6.63, 4.8, 5.715),
        (15.94, 11.9, 13.92),
        (13.83, 21.0, 17.415),
    ],
)
def test_average_performance_section_4_1(lc, ah, ap):
    assert m.average_performance(lc, ah) == pytest.approx(ap)


def test_spearman_section_4_2():
    assert m.spearman([0.2, 0.5, 0.1, 0.9, 0.4], [10, 14, 9, 12, 13]) == pytest.approx(0.7)
    assert np.mean([0.8842, 0.9000, 0.8105, 0.9053, 0.9439]) == pytest.approx(0.88878)


def test_spearman_uses_average_ranks_for_ties():
    # ranks x: [1, 2.5, 2.5, 4]; Pearson of those against [1, 2, 3, 4]
    assert m.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)


@PROPERTY
@given(st.lists(st.integers(-1000, 1000), min_size=3, max_size=30, unique=True), st.data())
def test_spearman_invariant_under_monotone_transforms(xs, data):
    ys = data.draw(
        st.lists(st.integers(0, 5), min_size=len(xs), max_size=len(xs)).filter(lambda v: len(set(v)) > 1)
    )
    x = np.array(xs, dtype=float)
    base = m.spearman(x, ys)
    assert m.spearman(x**3, ys) == pytest.approx(base)
    assert m.spearman(np.exp(x / 1000), ys) == pytest.approx(base)
    assert m.spearman(-x, ys) == pytest.approx(-base)


# --- §5 selection ------------------------------------------------------------------------------


def test_best_and_worst_of_n_section_5():
    rewards = [0.12, 0.31, 0.31, -0.05, 0.20]
    assert m.select_best_of_n(rewards) == 1
    assert m.select_worst_of_n(rewards) == 3
    assert m.select_worst_of_n([0.5, 0.1, 0.1]) == 1


def test_selection_rejects_nan():
    with pytest.raises(ValueError):
        m.select_best_of_n([0.1, float("nan")])


# --- §7.1 AlpacaEval raw and discrete win rate -------------------------------------------------


def test_preference_from_logprobs_section_7_1():
    pref = m.alpaca_preference_from_logprobs(-0.2, -1.8)
    assert 2 - pref == pytest.approx(0.83202, abs=1e-5)  # p_m
    assert pref == pytest.approx(1.16798, abs=1e-5)
    assert pref - 1 == pytest.approx(0.16798, abs=1e-5)
    assert m.alpaca_preference_from_logprobs(-0.2, -1.8, switched=True) == pytest.approx(3 - pref)


def test_preference_missing_token_counts_as_probability_zero():
    assert m.alpaca_preference_from_logprobs(None, -3.0) == 2.0  # only "M" seen: the model wins
    assert m.alpaca_preference_from_logprobs(-3.0, -math.inf) == 1.0
    assert math.isnan(m.alpaca_preference_from_logprobs(None, None))


def test_win_rates_section_7_1():
    p = [0.9, 0.2, 0.5, 0.7]
    assert m.win_rate(p) == pytest.approx(57.5)
    assert m.discrete_win_rate(p) == pytest.approx(62.5)
    assert m.discrete_win_rate_from_counts(251, 2, 805) == pytest.approx(31.304, abs=1e-3)


def test_win_rate_drops_unparsed_items_and_rejects_preferences():
    assert m.win_rate([1.0, float("nan"), 0.0]) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        m.win_rate([1.2, 1.8])  # preferences in [1, 2] passed by mistake


@PROPERTY
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=50))
def test_win_rates_lie_in_0_100(p):
    assert 0 <= m.win_rate(p) <= 100
    assert 0 <= m.discrete_win_rate(p) <= 100


# --- §7.2 length-controlled win rate -----------------------------------------------------------


def test_lc_from_weights_section_7_2():
    assert m.lc_from_weights(-0.2, 0.5, [0.4, -0.4]) == pytest.approx(45.07, abs=5e-3)


def test_std_delta_len_uses_characters_and_sample_std():
    d = m.std_delta_len(["aaaa", "a", "aa"], ["a", "aa", "aa"])  # deltas -3, 1, 0
    np.testing.assert_allclose(d, np.array([-3, 1, 0]) / np.std([-3, 1, 0], ddof=1))


@pytest.fixture(scope="module")
def length_gamed():
    rng = np.random.default_rng(0)
    baseline = rng.integers(500, 2000, 805)
    model = rng.integers(200, 3000, 805)
    delta = m.std_delta_len(model, baseline)
    p = 1 / (1 + np.exp(1.5 * np.tanh(delta)))  # longer answers win; no quality difference at all
    return p, model, baseline


def test_minimal_lc_removes_a_pure_length_effect(length_gamed):
    p, model, baseline = length_gamed
    result = m.length_controlled_win_rate(p, model, baseline)
    assert m.win_rate(p) > 55
    assert result.win_rate == pytest.approx(50, abs=0.5)
    assert set(result.weights) == {"np.tanh(std_delta_len)", "not_gamed_baseline.astype(float)"}
    assert result.weights["np.tanh(std_delta_len)"] == pytest.approx(-1.5, abs=0.05)


def test_minimal_lc_keeps_a_length_free_preference(length_gamed):
    _, model, baseline = length_gamed
    result = m.length_controlled_win_rate(np.full(805, 0.3), model, baseline)
    assert result.win_rate == pytest.approx(30, abs=0.5)
    assert result.win_rate == pytest.approx(
        m.lc_from_weights(result.weights["not_gamed_baseline.astype(float)"])
    )


def test_lc_with_difficulty_matches_its_own_weights(length_gamed):
    p, model, baseline = length_gamed
    difficulty = np.random.default_rng(1).normal(size=805)
    result = m.length_controlled_win_rate(p, model, baseline, instruction_difficulty=difficulty)
    w = result.weights
    expected = m.lc_from_weights(
        w["not_gamed_baseline.astype(float)"], w["instruction_difficulty"], difficulty
    )
    assert result.win_rate == pytest.approx(expected)


def test_lc_regularised_towards_gamed_baseline_rows(length_gamed):
    p, model, baseline = length_gamed
    difficulty = np.zeros(805)
    rng = np.random.default_rng(2)
    gamed = m.GamedBaselineRows(
        p_model_wins=np.full(400, 0.5),
        std_delta_len=rng.normal(size=400),
        instruction_difficulty=np.zeros(400),
    )
    result = m.length_controlled_win_rate(
        p, model, baseline, instruction_difficulty=difficulty, gamed_rows=gamed
    )
    assert result.win_rate == pytest.approx(50, abs=1)
    with pytest.raises(ValueError, match="instruction_difficulty"):
        m.length_controlled_win_rate(p, model, baseline, gamed_rows=gamed)


def test_std_delta_len_rejects_constant_differences():
    with pytest.raises(ValueError, match="constant"):
        m.std_delta_len([10, 20], [11, 21])


# --- §7.3 Arena-Hard, §7.4 MT-Bench ------------------------------------------------------------


def test_arena_hard_section_7_3():
    pairs = [
        ("My final verdict is [[B>A]].", "Assistant A is much better: [[A>>B]]"),
        ("[[A=B]]", "[[B>A]]"),
    ]
    assert m.arena_hard_scores(pairs) == [1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    assert m.arena_hard_win_rate(pairs) == pytest.approx(75.0)


def test_arena_hard_drops_missing_or_contradictory_verdicts():
    assert m.parse_arena_hard_verdict("[[A>B]] ... on reflection [[B>A]]") is None
    assert m.parse_arena_hard_verdict("no verdict") is None
    assert m.parse_arena_hard_verdict("[[A>B]] and again [[A>B]]") == "A>B"
    assert m.arena_hard_scores([("[[A<B]]", None)]) == []
    assert math.isnan(m.arena_hard_win_rate([]))


def test_mt_bench_section_7_4():
    assert m.mt_bench_score([8, 7, 9, 6]) == pytest.approx(7.5)
    assert m.parse_mt_bench_rating("Rating: [[8]]") == 8.0
    assert m.parse_mt_bench_rating("Rating: [7.5]") == 7.5
    assert m.parse_mt_bench_rating("no rating") == -1.0
    assert m.mt_bench_score([8, -1, None, 6]) == pytest.approx(7.0)


# --- §8 ExPO -----------------------------------------------------------------------------------


def test_expo_section_8_1():
    assert m.expo(0.50, 0.62, 0.3) == pytest.approx(0.656)
    np.testing.assert_allclose(m.expo(np.array([1.0, -2.0]), np.array([1.2, -1.5]), 0.3), [1.26, -1.35])


def test_expo_numpy_keeps_dtype_and_checks_shapes():
    out = m.expo(np.ones(3, dtype=np.float16), np.full(3, 2, dtype=np.float16), 0.5)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.full(3, 2.5, dtype=np.float16))
    with pytest.raises(ValueError):
        m.expo(np.ones(2), np.ones(3), 0.3)


def test_expo_state_dict_requires_the_same_keys():
    sd = m.expo_state_dict(
        {"w": np.array([1.0]), "b": np.array([0.0])}, {"w": np.array([2.0]), "b": np.array([1.0])}, 1.0
    )
    assert sd["w"][0] == 3.0 and sd["b"][0] == 2.0
    with pytest.raises(ValueError, match="keys differ"):
        m.expo_state_dict({"w": 1.0}, {"lm_head": 1.0}, 0.3)


@PROPERTY
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=16),
    st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=16),
)
def test_expo_identities(a, b):
    n = min(len(a), len(b))
    sft, aligned = np.array(a[:n], dtype=np.float32), np.array(b[:n], dtype=np.float32)
    np.testing.assert_array_equal(m.expo(sft, aligned, 0.0), aligned)
    np.testing.assert_array_equal(m.expo(sft, aligned, -1.0), sft)
    assert m.expo(float(sft[0]), float(aligned[0]), 0.0) == float(aligned[0])
    assert m.expo(float(sft[0]), float(aligned[0]), -1.0) == float(sft[0])


def test_expo_torch_computes_in_fp32_and_casts_back():
    torch = pytest.importorskip("torch")
    sft = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    aligned = torch.tensor([1.2, -1.5], dtype=torch.bfloat16)
    out = m.expo(sft, aligned, 0.3)
    assert out.dtype == torch.bfloat16
    expected = (1.3 * aligned.float() - 0.3 * sft.float()).to(torch.bfloat16)
    assert torch.equal(out, expected)
    assert torch.equal(m.expo(sft, aligned, 0.0), aligned)
    assert torch.equal(m.expo(sft, aligned, -1.0), sft)


# --- §9.3 DPO, §9.6 ASR ------------------------------------------------------------------------


def test_dpo_loss_section_9_3():
    assert m.dpo_loss(-10.0, -20.0, -12.0, -15.0, beta=0.1) == pytest.approx(0.403186, abs=1e-6)
    assert m.dpo_reward_margin(-10.0, -20.0, -12.0, -15.0) == pytest.approx(0.7)
    assert m.dpo_rewards(-10.0, -12.0) == pytest.approx(0.2)


def test_dpo_numpy_is_elementwise_and_stable():
    loss = m.dpo_loss(
        np.array([-10.0, -1e4]), np.array([-20.0, 0.0]), np.array([-12.0, 0.0]), np.array([-15.0, 0.0])
    )
    assert loss.shape == (2,)
    assert loss[0] == pytest.approx(0.403186, abs=1e-6)
    assert loss[1] == pytest.approx(1000.0)  # margin -1000: softplus stays finite
    assert m.dpo_reward_accuracy([-10.0, -30.0], [-20.0, -20.0], [-12.0, -12.0], [-15.0, -15.0]) == 0.5


def test_dpo_torch_matches_and_keeps_gradients():
    torch = pytest.importorskip("torch")
    pc = torch.tensor([-10.0, -30.0], requires_grad=True)
    args = (pc, torch.tensor([-20.0, -20.0]), torch.tensor([-12.0, -12.0]), torch.tensor([-15.0, -15.0]))
    loss = m.dpo_loss(*args)
    assert loss[0].item() == pytest.approx(0.403186, abs=1e-5)
    loss.mean().backward()
    assert pc.grad is not None and (pc.grad < 0).all()
    assert m.dpo_reward_accuracy(*args) == 0.5


def test_asr_section_9_6():
    outputs = ["Hacked!", "  hacked", "Sure. Hacked", "The answer is..."]
    assert m.asr(outputs) == pytest.approx(50.0)
    assert m.asr(outputs, mode="in_response") == pytest.approx(75.0)


def test_max_asr_against_table_6():
    llama7b_none = {
        "ignore": 10,
        "completion_real": 45,
        "completion_realcmb": 75,
        "gcg": 97,
        "advp": 60,
        "neuralexec": 2,
    }
    assert m.max_asr(llama7b_none, "opt_free") == 75
    assert m.max_asr(llama7b_none, "opt_based") == 97
    paper_names = {"Ignore": 22, "Completion": 89, "Ignore-Completion": 70, "AdvPrompter": 72, "GCG": 95}
    assert m.max_asr(paper_names, "opt_free") == 89
    assert m.max_asr(paper_names, "opt_based") == 95  # neuralexec missing is allowed
    with pytest.raises(KeyError):
        m.max_asr({"gcg": 1.0}, "opt_free")


# --- §10.4 calibration -------------------------------------------------------------------------

P10 = [0.95, 0.85, 0.80, 0.20, 0.40, 0.55]
Y10 = [1, 1, 0, 0, 1, 1]


def test_ece_two_sided_section_10_4():
    conf, hit = m.two_sided_confidence(P10, Y10)
    np.testing.assert_allclose(conf, [0.95, 0.85, 0.80, 0.80, 0.60, 0.55])
    np.testing.assert_array_equal(hit, [1, 1, 0, 1, 0, 1])
    rb = m.reliability_bins(P10, Y10)
    np.testing.assert_array_equal(rb.counts, [0, 0, 0, 0, 0, 1, 1, 0, 3, 1])
    assert m.ece(P10, Y10) == pytest.approx(0.258333, abs=1e-6)


def test_ece_one_sided_and_auroc_section_10_4():
    assert m.ece(P10, Y10, mode="one_sided") == pytest.approx(0.325)
    assert m.auroc(P10, Y10) == pytest.approx(0.75)


def test_calibration_summary_section_10_4():
    s = m.calibration_summary(P10, Y10)
    assert s["ece_two_sided"] == pytest.approx(0.258333, abs=1e-6)
    assert s["ece_one_sided"] == pytest.approx(0.325)
    assert s["auroc"] == pytest.approx(0.75)
    assert s["acc"] == pytest.approx(4 / 6)
    assert s["unc_acc"] == pytest.approx(4 / 6)
    assert s["n"] == 6


def test_ece_conf_one_quirk_and_correction():
    p, y = [1.0, 0.75, 0.75], [0, 1, 1]  # the confident miss is the whole calibration error
    assert m.ece(p, y) == pytest.approx(0.25)  # official: conf 1.0 dropped from both sides
    assert m.reliability_bins(p, y).n_dropped == 1
    assert m.ece(p, y, drop_conf_one=False) == pytest.approx((2 * 0.25 + 1 * 1.0) / 3)
    assert math.isnan(m.ece([1.0], [1]))


def test_p_correct_from_logits_and_tie_goes_to_incorrect():
    np.testing.assert_allclose(m.p_correct_from_logits([[0.0, 0.0], [0.0, np.log(3)]]), [0.5, 0.75])
    conf, hit = m.two_sided_confidence([0.5], [1])
    assert conf[0] == 0.5 and hit[0] == 0.0


def test_auroc_is_nan_for_a_single_class():
    assert math.isnan(m.auroc([0.1, 0.9], [1, 1]))


@st.composite
def perfectly_calibrated_groups(draw, low):
    """Groups of n items sharing a value j/n with exactly j positives: every bin is exact."""
    groups = draw(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 20)), min_size=1, max_size=8))
    p, y = [], []
    for n, j in groups:
        j = min(j, n)
        if j / n < low or j == n:  # keep values in range and away from the dropped 1.0
            continue
        p += [j / n] * n
        y += [1] * j + [0] * (n - j)
    return p, y


@PROPERTY
@given(perfectly_calibrated_groups(low=0.0))
def test_ece_one_sided_is_zero_when_perfectly_calibrated(data):
    p, y = data
    if p:
        assert m.ece(p, y, mode="one_sided") == pytest.approx(0.0, abs=1e-12)


@PROPERTY
@given(perfectly_calibrated_groups(low=0.5))
def test_ece_two_sided_is_zero_when_perfectly_calibrated(data):
    p, y = data
    if p:  # p >= 0.5 and pred = 1 (or conf 0.5 with half right): conf equals the hit rate
        assert m.ece(p, y) == pytest.approx(0.0, abs=1e-12)


@PROPERTY
@given(st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.integers(0, 1)), min_size=2, max_size=40))
def test_auroc_of_reversed_scores_is_its_complement(pairs):
    scores = np.array([s for s, _ in pairs])
    labels = np.array([y for _, y in pairs])
    if len(set(labels)) < 2:
        assert math.isnan(m.auroc(scores, labels))
        return
    assert m.auroc(-scores, labels) == pytest.approx(1 - m.auroc(scores, labels))


def test_mean_std():
    assert m.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert m.mean_std([1.0, 3.0], ddof=0) == pytest.approx((2.0, 1.0))
    mean, std = m.mean_std([4.0])
    assert mean == 4.0 and math.isnan(std)
