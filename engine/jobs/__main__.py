"""`python -m engine.jobs RUN_DIR`: run the engine job described by RUN_DIR/spec.json.

Exit status: 0 success, 1 an unexpected error (traceback in the log), 3 bad input (one line),
4 CUDA out of memory. The reason is also written to events.jsonl as an `error` event.
"""

from __future__ import annotations

import importlib
import sys
import traceback

from engine.jobs._common import EXIT_BAD_INPUT, EXIT_CUDA_OOM, JobInputError, is_cuda_oom, load_context
from engine.specs import parse_spec

RUNNERS = {"generate": "engine.jobs.generate", "score": "engine.jobs.score",
           "finetune": "engine.jobs.finetune", "merge": "engine.jobs.merge"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m engine.jobs RUN_DIR", file=sys.stderr)
        return 2
    ctx = load_context(argv[0])
    try:
        spec = parse_spec(ctx.spec)
        if spec.kind not in RUNNERS:
            raise JobInputError(f"kind {spec.kind!r} is not an engine job")
        module = importlib.import_module(RUNNERS[spec.kind])
        module.run(spec, ctx)
    except JobInputError as e:
        print(f"labdeck: {e}", file=sys.stderr)
        ctx.events.error("bad_input", str(e))
        return EXIT_BAD_INPUT
    except BaseException as e:  # noqa: BLE001 - classify everything, re-raise nothing
        if isinstance(e, KeyboardInterrupt):
            ctx.events.error("signal", "interrupted")
            return 130
        traceback.print_exc()
        if is_cuda_oom(e):
            ctx.events.error("cuda_oom", str(e).splitlines()[0] if str(e) else "CUDA out of memory")
            return EXIT_CUDA_OOM
        ctx.events.error("nonzero_exit", f"{type(e).__name__}: {e}".splitlines()[0])
        return 1
    finally:
        ctx.events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
