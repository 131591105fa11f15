"""``hmoe lm-eval <lm-eval's own arguments>``: lm-eval's CLI with this project's parts loaded.

lm-eval's ``lm_eval`` command only knows the model backends it imports itself, so
``lm_eval --model hmoe`` fails. This runs the same CLI after registering the ``hmoe`` model
(experiments.lm_eval_adapter) and adds the project's task folder (``--include_path``,
tasks ``hmoe_mbpp``, ``hmoe_human_eval``, ``hmoe_gsm8k``, ``hmoe_strategy_qa``,
``hmoe_mmlu``) unless one is given, e.g.::

    hmoe lm-eval --model hmoe --model_args system=engine,model_path=DIR,precision=bf16 \\
        --tasks hmoe_mbpp --limit 5

Local data comes from ``HMOE_DATA_DIR`` (or ``--metadata '{"data_dir": DIR}'``).
"""

from __future__ import annotations

import sys

from experiments.errors import HmoeError


def main(argv: list[str]) -> int:
    """Run lm-eval's CLI on ``argv``; its exit status (0 on success)."""
    try:
        from lm_eval.__main__ import cli_evaluate

        import experiments.lm_eval_adapter  # noqa: F401 - registers the "hmoe" model
    except ImportError as exc:
        raise HmoeError(
            f"hmoe lm-eval needs lm-eval ({exc.name} is not installed): pip install -e .[eval]"
        ) from exc
    from experiments.lm_eval_tasks import TASKS_DIR

    args = list(argv)
    if not any(a == "--include_path" or a.startswith("--include_path=") for a in args):
        args += ["--include_path", str(TASKS_DIR)]
    saved = sys.argv
    sys.argv = ["lm_eval", *args]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0
