"""Pure metric functions for the seed experiments (docs/science.md), for jobs and notebooks alike.

Everything here takes numbers that a job already stored (log-probs, rewards, judge outputs,
probabilities) and imports neither torch nor any model code; scipy and scikit-learn load lazily
inside the few functions that use them, so `import engine.metrics` stays fast.
"""

from .arena_hard import arena_hard_scores, arena_hard_win_rate, parse_arena_hard_verdict
from .calibration import (
    ReliabilityBins,
    calibration_summary,
    ece,
    p_correct_from_logits,
    reliability_bins,
    two_sided_confidence,
)
from .compatibility import car, car_from_samples
from .dpo import dpo_loss, dpo_reward_accuracy, dpo_reward_margin, dpo_rewards
from .injection import ATTACK_FAMILIES, asr, injection_succeeded, max_asr
from .length_control import (
    GamedBaselineRows,
    LengthControlledResult,
    lc_from_weights,
    length_controlled_win_rate,
    std_delta_len,
)
from .likelihood import ifd, ifd_keep, perplexity, response_loss
from .merge import expo, expo_state_dict
from .mt_bench import mt_bench_score, parse_mt_bench_rating
from .ranking import auroc, spearman
from .selection import select_best_of_n, select_worst_of_n
from .stats import mean_std
from .winrate import (
    alpaca_preference_from_logprobs,
    average_performance,
    discrete_win_rate,
    discrete_win_rate_from_counts,
    win_rate,
)

__all__ = [
    "ATTACK_FAMILIES",
    "GamedBaselineRows",
    "LengthControlledResult",
    "ReliabilityBins",
    "alpaca_preference_from_logprobs",
    "arena_hard_scores",
    "arena_hard_win_rate",
    "asr",
    "auroc",
    "average_performance",
    "calibration_summary",
    "car",
    "car_from_samples",
    "discrete_win_rate",
    "discrete_win_rate_from_counts",
    "dpo_loss",
    "dpo_reward_accuracy",
    "dpo_reward_margin",
    "dpo_rewards",
    "ece",
    "expo",
    "expo_state_dict",
    "ifd",
    "ifd_keep",
    "injection_succeeded",
    "lc_from_weights",
    "length_controlled_win_rate",
    "max_asr",
    "mean_std",
    "mt_bench_score",
    "p_correct_from_logits",
    "parse_arena_hard_verdict",
    "parse_mt_bench_rating",
    "perplexity",
    "reliability_bins",
    "response_loss",
    "select_best_of_n",
    "select_worst_of_n",
    "spearman",
    "std_delta_len",
    "two_sided_confidence",
    "win_rate",
]
