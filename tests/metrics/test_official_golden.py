"""labdeck's numbers against the official code's (alpaca_eval), on committed fixtures.

alpaca_eval 0.6.6 cannot be imported beside labdeck's pins without extra packages (it needs
`pkg_resources`, i.e. setuptools < 81, plus fire, patsy, python-dotenv, tiktoken) and its LC featurizer
downloads `df_gamed.csv` from the hub. So its outputs were produced once, by the script next to the
fixture (tests/metrics/fixtures/make_lc_fixture.py, run in a venv with alpaca_eval==0.6.6 from PyPI),
and committed; when alpaca_eval is importable the order test also runs it live.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# Eight instructions and the order alpaca_eval 0.6.6 shows them in: its PairwiseAnnotator's
# RandomSwitchTwoColumnsProcessor(two_columns_to_switch=["output_1", "output_2"], random_seed_columns=["instruction"],
# _switch_column="is_switched_outputs", seed=0).preprocess(df)["is_switched_outputs"], run with alpaca_eval==0.6.6.
# (The key string "is_switch_output_1_output_2", the processor's default name, gives a different order on 4 of 8.)
INSTRUCTIONS = ["Give three tips for staying healthy.", "What is the capital of France?", "Write a haiku about autumn.",
                "Explain recursion to a child.", "How do I sort a list in Python?",
                "Name a prime number larger than 100.", "Summarize the plot of Hamlet.", "Translate hello into Spanish."]
ALPACA_EVAL_SWITCHED = [True, False, True, False, False, True, False, False]


def test_length_controlled_win_rate_equals_alpaca_eval_on_a_fixture() -> None:
    """60 annotations with a length-biased judge; alpaca_eval's `length_controlled_minimal` gives 51.97388573 (and
    raw WR 57.747545, discrete 60.0). labdeck's GLM fit must give the same to 1e-6."""
    from engine.metrics import discrete_win_rate, length_controlled_win_rate, win_rate

    fixture = json.loads((FIXTURES / "alpaca_eval_lc.json").read_text())
    rows, expected = fixture["annotations"], fixture["expected"]
    assert "alpaca_eval 0.6.6" in fixture["source"]
    p = [r["preference"] - 1 for r in rows]
    lc = length_controlled_win_rate(p, [r["output_2"] for r in rows], [r["output_1"] for r in rows])
    assert lc.win_rate == pytest.approx(expected["length_controlled_winrate"], abs=1e-6)
    assert win_rate(p) == pytest.approx(expected["win_rate"], abs=1e-6)
    assert discrete_win_rate(p) == pytest.approx(expected["discrete_win_rate"], abs=1e-6)
    assert abs(lc.win_rate - expected["win_rate"]) > 5  # the length control did something on this fixture


def test_order_swap_is_alpaca_evals_own() -> None:
    from engine.jobs.scorers.judge import alpaca_is_switched

    assert [alpaca_is_switched(t) for t in INSTRUCTIONS] == ALPACA_EVAL_SWITCHED


def test_struq_and_secalign_strings_are_the_repositorys() -> None:
    """Fixture: the values facebookresearch/SecAlign's config.py computes (commit named in the fixture): delimiters,
    prompt formats, the filtered tokens, the textual delimiter parts, the injected prompt and the ignore sentences."""
    from engine.data.injection.attacks import IGNORE_ATTACK_SENTENCES, TEST_INJECTED_PROMPT
    from engine.data.injection.formats import DELIMITERS, FILTERED_TOKENS, PROMPT_FORMAT
    from engine.data.injection.training import OTHER_DELIMITER_PARTS, OTHER_DELIMITERS_FOR_TEST

    repo = json.loads((FIXTURES / "secalign_config.json").read_text(encoding="utf-8"))
    assert list(FILTERED_TOKENS) == repo["FILTERED_TOKENS"]
    for name, delims in repo["DELIMITERS"].items():
        assert list(DELIMITERS[name]) == delims, name
        assert PROMPT_FORMAT[name].prompt_input == repo["PROMPT_FORMAT"][name]["prompt_input"], name
        assert PROMPT_FORMAT[name].prompt_no_input == repo["PROMPT_FORMAT"][name]["prompt_no_input"], name
    assert {k: list(v) for k, v in OTHER_DELIMITER_PARTS.items()} == repo["OTHER_DELM_TOKENS"]
    assert OTHER_DELIMITERS_FOR_TEST == repo["OTHER_DELM_FOR_TEST"]
    assert TEST_INJECTED_PROMPT == repo["TEST_INJECTED_PROMPT"]
    assert {k: list(v) for k, v in IGNORE_ATTACK_SENTENCES.items()} == repo["IGNORE_ATTACK_SENTENCES"]
