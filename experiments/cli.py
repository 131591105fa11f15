"""The ``hmoe`` command: run, all, report, synth, score, compare, export-gguf.

    hmoe run [-m] [hydra overrides...]   one job, or a Hydra multirun sweep
    hmoe all fast|full [overrides...]    what run_all.sh runs: every experiment + report
    hmoe report RESULTS_DIR              regenerate figures and report.md from results
    hmoe synth --arch ... --kind ...     write (or reuse) a synthetic model directory
    hmoe score --task TASK FILE.jsonl    score saved generations ({"idx", "completion"} lines)
    hmoe compare BASE NEW [--max-accuracy-drop PP] [--max-slowdown PCT]
                                         regression gate between two results directories
    hmoe export-gguf MODEL_DIR --type f16|bf16|q8_0|q4_0 [--out PATH]
                                         GGUF for llama.cpp (cached beside the model)

User errors print one line (no traceback) and exit 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

USAGE = __doc__.split("\n\n")[1].rstrip() if __doc__ else ""


def _cmd_run(args: list[str]) -> int:
    from experiments import hydra_app
    from experiments.run_all import (
        _check_writable,
        _override,
        choose_profile,
        validate_overrides,
    )

    if not any(a in ("--help", "-h", "--hydra-help") for a in args):
        args, line = choose_profile(args)
        if not os.environ.get("HMOE_PROFILE_PRINTED"):
            print(line, flush=True)
        validate_overrides([a for a in args if "=" in a and not a.startswith("-")])
        _check_writable(Path(_override(args, "results_root") or "results"))
    sys.argv = ["hmoe run", *args]
    try:
        hydra_app.job()
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 2
    return 1 if hydra_app.OUTCOME["failed"] else 0


def _cmd_report(args: list[str]) -> int:
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: hmoe report RESULTS_DIR", file=sys.stderr)
        return 2
    from plots.report import build_report

    path = build_report(Path(args[0]))
    print(f"report: {path}")
    return 0


def _cmd_all(args: list[str]) -> int:
    from experiments.run_all import main as run_all_main

    return run_all_main(args)


def _cmd_synth(args: list[str]) -> int:
    from engine.synthetic.cli import main as synth_main

    return synth_main(args)


def _cmd_score(args: list[str]) -> int:
    from experiments.scoring import main as score_main

    return score_main(args)


def _cmd_compare(args: list[str]) -> int:
    from experiments.compare import main as compare_main

    return compare_main(args)


def _cmd_export_gguf(args: list[str]) -> int:
    from engine.gguf_export import main as export_main

    return export_main(args)


COMMANDS = {
    "run": _cmd_run,
    "all": _cmd_all,
    "report": _cmd_report,
    "synth": _cmd_synth,
    "score": _cmd_score,
    "compare": _cmd_compare,
    "export-gguf": _cmd_export_gguf,
}


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
        return COMMANDS[argv[0]](argv[1:])
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
