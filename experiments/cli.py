"""The ``hmoe`` command: run, all, report, synth, score, compare, lm-eval, export-gguf.

    hmoe run [-m] [hydra overrides...]   one job, or a Hydra multirun sweep
    hmoe all fast|full [overrides...]    what run_all.sh runs: every experiment + report
    hmoe report RESULTS_DIR              regenerate figures and report.md from results
    hmoe synth --arch ... --kind ...     write (or reuse) a synthetic model directory
    hmoe score --task TASK FILE.jsonl    score saved generations ({"idx", "completion"} lines)
    hmoe compare BASE NEW [--max-accuracy-drop PP] [--max-slowdown PCT]
                                         regression gate between two results directories
    hmoe lm-eval <lm-eval arguments>     lm-eval's CLI with the hmoe model and task folder
    hmoe export-gguf MODEL_DIR --type f16|bf16|q8_0|q4_0 [--out PATH]
                                         GGUF for llama.cpp (cached beside the model)

User errors print one line (no traceback) and exit 2.
"""

from __future__ import annotations

import sys

from engine.registry import Registry

USAGE = __doc__.split("\n\n")[1].rstrip() if __doc__ else ""


COMMANDS = Registry(
    "command",
    {
        "run": "experiments.hydra_app:cli_main",
        "all": "experiments.run_all:main",
        "report": "plots.report:main",
        "synth": "engine.synthetic.cli:main",
        "score": "experiments.scoring:main",
        "compare": "experiments.compare:main",
        "lm-eval": "experiments.lm_eval_cli:main",
        "export-gguf": "baselines.llamacpp.gguf_export:main",
    },
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hmoe`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(f"usage:\n{USAGE}", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    from engine.errors import EngineError
    from experiments.errors import HmoeError

    try:
        return int(COMMANDS.load(argv[0])(argv[1:]) or 0)
    except (HmoeError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: measured points are saved; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
