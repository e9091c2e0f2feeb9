"""A user's own training script: a plain transformers Trainer with labdeck's callback (run as a command job)."""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from engine.integrations import LabdeckCallback, register_report_to

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A language model predicts the next token."] * 8


def train(model_dir: str, out_dir: str, how: str) -> None:
    """12 steps of causal-LM training, logging every 2, evaluating and saving every 6.

    how: 'callback' (callbacks=[LabdeckCallback()]), 'report_to' (report_to=["labdeck"]) or 'none'.
    """
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, n):
            self.rows = [tok(t, truncation=True, max_length=24)["input_ids"] for t in TEXTS[:n]]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            ids = torch.tensor(self.rows[i])
            return {"input_ids": ids, "labels": ids.clone()}

    def collate(batch):
        n = max(len(b["input_ids"]) for b in batch)
        pad = tok.pad_token_id
        ids = torch.stack([torch.nn.functional.pad(b["input_ids"], (0, n - len(b["input_ids"])), value=pad) for b in batch])
        labels = torch.stack([torch.nn.functional.pad(b["labels"], (0, n - len(b["labels"])), value=-100) for b in batch])
        return {"input_ids": ids, "labels": labels, "attention_mask": (ids != pad).long()}

    kw = {"callbacks": [LabdeckCallback()]} if how == "callback" else {}
    if how == "report_to":
        assert register_report_to()
    args = TrainingArguments(
        output_dir=out_dir, max_steps=12, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=2,
        save_steps=6, eval_strategy="steps", eval_steps=6, use_cpu=True, report_to=["labdeck"] if how == "report_to" else [],
        include_num_input_tokens_seen=True, disable_tqdm=True, seed=0,
    )
    Trainer(model=model, args=args, train_dataset=Rows(16), eval_dataset=Rows(4), data_collator=collate, **kw).train()


if __name__ == "__main__":
    train(sys.argv[1], sys.argv[2], sys.argv[3])
    print("trained")
