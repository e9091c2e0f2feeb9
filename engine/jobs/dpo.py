"""DPO loss module for the finetune job (SecAlign, docs/science.md §9.3).

    L = −log σ( β·[log πθ(y_w|x) − log π_ref(y_w|x)] − β·[log πθ(y_l|x) − log π_ref(y_l|x)] )

with log π(y|x) the *sum* of the response's token log-probs. The per-pair loss itself is
`engine.metrics.dpo_loss` (the same function notebooks check stored log-probs with, tested on the
§9.3 worked example 0.403186), so the trainer and the metric cannot drift apart.

Reference policy: with LoRA, the same model with its adapters disabled (what TRL does, and what
SecAlign trained with); otherwise a frozen copy of the starting model, or `spec.reference`.
Dropout is switched off in the policy, as TRL's `disable_dropout=True` default does, so the
policy and reference log-probs of a step are deterministic (and equal at step 1 for LoRA).

Why a module on the shared accelerate loop rather than TRL's DPOTrainer: see
docs/engine-finetune-merge.md. In short, the loop already gives checkpoints with exact resume,
fingerprinted resume refusal, OOM halving, token-normalised accumulation and the live events; the
DPO-specific part is these ~60 lines, and the data path (StruQ template, special tokens, EOS) is
the SFT one, so the SecAlign prompts are tokenised exactly like the StruQ SFT data they follow.
"""

from __future__ import annotations

from typing import Any


def disable_dropout(model: Any) -> None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def sequence_logps(model: Any, input_ids: Any, labels: Any, attention_mask: Any | None) -> Any:
    """Sum of log p(token) over each row's trained (response) tokens -> [rows]."""
    import torch

    from engine.jobs._train_model import response_logits

    inputs = {} if attention_mask is None else {"attention_mask": attention_mask}
    logits, targets, rows = response_logits(model, input_ids, labels, **inputs)
    token_logp = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return torch.zeros(input_ids.shape[0], device=logits.device, dtype=torch.float32).index_add_(0, rows, token_logp)


class DPOLoss:
    @staticmethod
    def build(model: Any, reference: Any | None, beta: float) -> Any:
        import torch

        from engine.metrics import dpo_loss

        class _DPO(torch.nn.Module):
            """forward(rows = the n chosen then the n rejected sequences) -> summed pair losses and reward stats."""

            def __init__(self) -> None:
                super().__init__()
                self.model = model
                self.beta = beta
                # not registered as a submodule: frozen, never wrapped by DDP/FSDP, never checkpointed
                object.__setattr__(self, "reference", reference)

            def reference_logps(self, input_ids: Any, labels: Any, attention_mask: Any | None) -> Any:
                with torch.no_grad():
                    if self.reference is not None:
                        return sequence_logps(self.reference, input_ids, labels, attention_mask)
                    with self.model.disable_adapter():
                        return sequence_logps(self.model, input_ids, labels, attention_mask)

            def forward(self, input_ids: Any, labels: Any, n_pairs: int, attention_mask: Any | None = None) -> dict[str, Any]:
                policy = sequence_logps(self.model, input_ids, labels, attention_mask)
                ref = self.reference_logps(input_ids, labels, attention_mask).to(policy.dtype)
                pc, pr, rc, rr = policy[:n_pairs], policy[n_pairs:], ref[:n_pairs], ref[n_pairs:]
                losses = dpo_loss(pc, pr, rc, rr, self.beta)
                with torch.no_grad():
                    chosen_r = self.beta * (pc - rc)
                    rejected_r = self.beta * (pr - rr)
                    margin = chosen_r - rejected_r
                    stats = {"rewards_chosen": chosen_r.sum(), "rewards_rejected": rejected_r.sum(),
                             "reward_margin": margin.sum(), "reward_accuracy": (margin > 0).float().sum(),
                             "logps_chosen": pc.sum(), "logps_rejected": pr.sum()}
                return {"loss_sum": losses.sum(), "stats": stats}

        return _DPO()
