"""The `labdeck` command line: a peer of the terminal app (`tui/`), both reading and writing the store (`db/`).

One module per subject: `jobs` (submit, inspect and control jobs), `results` (pivots, correlations,
exports), `worker` (the daemon), `demo`; `main` builds the parser from them. Like the app, the CLI
never imports torch, transformers or Textual (import-linter contracts in pyproject.toml).
"""
