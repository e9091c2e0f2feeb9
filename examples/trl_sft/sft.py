"""A TRL SFT script of the kind a lab already has, reporting to labdeck through one line: the callback.

    python sft.py MODEL DATA.jsonl OUT --learning-rate 2e-5 [--max-steps N] [--epochs E]

DATA.jsonl has instruction / input / output records (Alpaca style). Run by hand it trains and
reports nothing; run as a labdeck command job (examples/trl_sft/job.yaml) its loss curve, learning
rate, grad norm, progress with ETA and checkpoints show up live in `labdeck show` and the app.
"""

import argparse
import json

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from engine.integrations import LabdeckCallback

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("data")
p.add_argument("out")
p.add_argument("--learning-rate", type=float, default=2e-5)
p.add_argument("--epochs", type=float, default=1.0)
p.add_argument("--max-steps", type=int, default=-1)
p.add_argument("--batch-size", type=int, default=4)
p.add_argument("--max-length", type=int, default=1024)
p.add_argument("--cpu", action="store_true")
args = p.parse_args()

with open(args.data, encoding="utf-8") as fh:
    rows = [json.loads(line) for line in fh if line.strip()]
data = Dataset.from_list([
    {"prompt": [{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")}],
     "completion": [{"role": "assistant", "content": r["output"]}]}
    for r in rows
])
config = SFTConfig(
    output_dir=args.out, learning_rate=args.learning_rate, num_train_epochs=args.epochs, max_steps=args.max_steps,
    per_device_train_batch_size=args.batch_size, max_length=args.max_length, logging_steps=1, save_strategy="epoch",
    report_to=[], use_cpu=args.cpu, disable_tqdm=True, seed=0,
)
trainer = SFTTrainer(model=args.model, args=config, train_dataset=data, callbacks=[LabdeckCallback()])
trainer.train()
trainer.save_model(args.out)
