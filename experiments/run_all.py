"""``run_all.sh fast|full``: the paper's experiments in the artifact's order, then the report.

Figure 11 (prefill), Figure 12 (decode), Figure 13 (breakdown), Table 2 (accuracy): each
is one Hydra multirun over the mode's models and the experiment's systems, run in its own
process (so one experiment's memory is gone before the next starts). A failed point never
stops the run; bad configuration does (exit 2). Rerunning the same command resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.config_schema import register_configs
from experiments.errors import HmoeError
from experiments.hardware import detect_profile

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
MODES = ("fast", "full")
STEP_TITLES = {
    "prefill": "Figure 11: prefill throughput",
    "decode": "Figure 12: decode throughput",
    "breakdown": "Figure 13: breakdown",
    "accuracy": "Table 2: accuracy",
}
USAGE = "usage: run_all.sh fast|full [hydra overrides...]   (e.g. profile=cpu rerun=true)"


def _override(overrides: list[str], key: str) -> str | None:
    for item in overrides:
        if item.startswith(f"{key}=") or item.startswith(f"+{key}="):
            return item.split("=", 1)[1]
    return None


def choose_profile(overrides: list[str]) -> tuple[list[str], str]:
    """Add ``profile=<detected>`` unless given; returns the overrides and a line to print."""
    given = _override(overrides, "profile")
    if given:
        return overrides, f"profile: {given} (from the command line)"
    profile, why = detect_profile()
    # Keep Hydra's positional overrides contiguous: insert next to the first one.
    at = next(
        (i for i, o in enumerate(overrides) if "=" in o and not o.startswith("-")), len(overrides)
    )
    return [*overrides[:at], f"profile={profile}", *overrides[at:]], (
        f"profile: {profile} (auto: {why}; override with profile=cpu|gpu|paper)"
    )


def config_error_message(exc: BaseException) -> str:
    """Hydra/OmegaConf's error as one line: what is wrong and, for a group, the choices."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines()]
    keep, options = [], []
    in_options = False
    for line in lines:
        if line.startswith("Config search path"):
            break
        if line.startswith("Available options in"):
            in_options = True
            continue
        if in_options:
            if line and not line.startswith("base_"):
                options.append(line)
            continue
        if line and not line.startswith(("full_key", "reference_type", "object_type", "To append")):
            keep.append(line)
    text = " ".join(keep)
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in text:
            text = f"{text} {first}"
    return f"{text} (available: {', '.join(options)})" if options else text


def _is_sweep(override: str) -> bool:
    value = override.split("=", 1)[-1]
    return "," in value and not value.startswith(("[", "{", "'", '"'))


def compose_config(overrides: list[str]):  # noqa: ANN201 - DictConfig
    """Compose the config for ``overrides`` (no sweeps); bad keys/values raise HmoeError."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
            OmegaConf.to_container(cfg, resolve=True)  # surface bad interpolations now
            return cfg
    except (HydraException, OmegaConfBaseException) as exc:
        raise HmoeError(config_error_message(exc)) from exc


def validate_overrides(overrides: list[str]) -> None:
    """Compose every value of every sweep override once, so a typo fails before any job."""
    plain = [o for o in overrides if not o.startswith("hydra")]
    firsts = [
        o.split("=", 1)[0] + "=" + o.split("=", 1)[1].split(",")[0] if _is_sweep(o) else o
        for o in plain
    ]
    compose_config(firsts)
    for i, override in enumerate(plain):
        if _is_sweep(override):
            key, values = override.split("=", 1)
            for value in values.split(",")[1:]:
                compose_config([*firsts[:i], f"{key}={value}", *firsts[i + 1 :]])


def compose_plan(mode: str, overrides: list[str]):  # noqa: ANN201 - DictConfig
    """Compose the config once to read the mode's plan and the profile's stand-ins."""
    plain = [o for o in overrides if not _is_sweep(o) and not o.startswith("hydra")]
    return compose_config([f"mode={mode}", *plain])


def _results_dir(cfg) -> Path:  # noqa: ANN001
    return Path(cfg.results_root) / cfg.run


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise HmoeError(f"results directory {path} is not writable: {exc.strerror or exc}") from exc


def _models_line(cfg, models: list[str]) -> str:  # noqa: ANN001
    profile = cfg.profile.name
    if all(m.startswith("tiny_") for m in models):
        return (
            f"models: {', '.join(models)} - synthetic tiny models on a {profile} profile; "
            "throughput and accuracy numbers are NOT comparable to the paper's"
        )
    return (
        f"models: {', '.join(models)} (real checkpoints where their paths are set, "
        "else synthetic layer slices of the real shapes)"
    )


def main(argv: list[str]) -> int:
    """Run every experiment of the mode, then build the report. Returns the exit status."""
    if not argv or argv[0] not in MODES:
        print(USAGE, file=sys.stderr)
        return 2
    mode, overrides = argv[0], list(argv[1:])
    overrides, profile_line = choose_profile(overrides)
    print(profile_line, flush=True)
    cfg = compose_plan(mode, overrides)
    run_dir = _results_dir(cfg)
    _check_writable(run_dir)
    user_models = _override(overrides, "model")
    models = (
        user_models.split(",")
        if user_models
        else [cfg.profile.stand_ins.get(m, m) for m in cfg.mode.models]
    )
    print(_models_line(cfg, models), flush=True)
    print(f"results: {run_dir}/", flush=True)
    passthrough = [o for o in overrides if _override([o], "model") is None]
    failed_steps = []
    experiments = list(cfg.mode.experiments)
    for i, exp in enumerate(experiments, 1):
        systems = _override(overrides, "system") or ",".join(cfg.mode.systems[exp])
        print(f"\n[{i}/{len(experiments)}] {STEP_TITLES.get(exp, exp)}", flush=True)
        cmd = [
            sys.executable,
            "-m",
            "experiments.cli",
            "run",
            "-m",
            f"experiment={exp}",
            f"mode={mode}",
            f"model={','.join(models)}",
            *[o for o in passthrough if _override([o], "system") is None],
            f"system={systems}",
        ]
        code = subprocess.run(cmd, env={**os.environ, "HMOE_PROFILE_PRINTED": "1"}).returncode
        if code == 2:
            print(f"error: {exp} stopped on bad input (see above)", file=sys.stderr)
            return 2
        if code != 0:
            failed_steps.append(exp)
    print("\n[report] figures and report.md", flush=True)
    from plots.report import build_report

    report = build_report(run_dir)
    print(f"report: {report}")
    print(_models_line(cfg, models))
    if failed_steps:
        print(f"some points failed in: {', '.join(failed_steps)} (see the report)")
    return 0
