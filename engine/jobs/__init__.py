"""One module per engine job kind: `generate`, `score`, `finetune`, `merge`.

Each module has `run(spec, ctx) -> None`. They load torch and transformers; nothing outside a
job process imports them. `python -m engine.jobs RUN_DIR` is how the launcher starts one.
"""
