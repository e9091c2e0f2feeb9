"""Dataset construction for the seed experiments: pure Python, no torch, no tokenizer."""

from .best_of_n import bon_to_sft

__all__ = ["bon_to_sft"]
