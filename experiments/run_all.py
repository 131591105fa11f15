"""``run_all.sh fast|full``: the paper's experiments in the artifact's order, then the report.

Figure 11 (prefill), Figure 12 (decode), Figure 13 (breakdown), Table 2 (accuracy): each
is one Hydra multirun over the mode's models and the experiment's systems, run in its own
process (so one experiment's memory is gone before the next starts). A failed point never
stops the run; bad configuration does (exit 2). Rerunning the same command resumes.

With a launcher (``hydra/launcher=slurm`` or ``local``, conf/hydra/launcher/) each job of a
multirun is submitted by Hydra's submitit launcher and writes its own results shard; the
launcher, the profile and the results directory's configuration are checked here before
anything is submitted, and the jobs' outcome is read back from the results.
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

from experiments.config_check import check_config
from experiments.config_schema import register_configs
from experiments.errors import HmoeError
from experiments.hardware import detect_profile
from experiments.points import experiment
from experiments.provenance import new_run_id, read_provenance
from experiments.results_store import point_statuses
from experiments.run_identity import check_identity, model_source

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
MODES = ("fast", "full")
USAGE = "usage: run_all.sh fast|full [hydra overrides...]   (e.g. profile=cpu rerun=true)"
EXIT_CODES = (
    "exit status: 0 every point ok or NOT RUN; 1 some point failed (the summary names "
    "them); 2 bad input or configuration; 130 interrupted (rerun the same command to resume)"
)


def _override(overrides: list[str], key: str) -> str | None:
    for item in overrides:
        if item.startswith(f"{key}=") or item.startswith(f"+{key}="):
            return item.split("=", 1)[1]
    return None


LAUNCHER = "hydra/launcher"
# Launchers that run the jobs on this machine, where the detected profile holds.
LOCAL_LAUNCHERS = ("basic", "local", "submitit_local")


def launcher(overrides: list[str]) -> str | None:
    """The ``hydra/launcher=NAME`` of ``overrides`` (None: Hydra's basic launcher)."""
    return _override(overrides, LAUNCHER)


def choose_profile(overrides: list[str]) -> tuple[list[str], str]:
    """Add ``profile=<detected>`` unless given; returns the overrides and a line to print.
    A launcher that runs the jobs elsewhere (Slurm) needs the profile said: HmoeError."""
    given = _override(overrides, "profile")
    if given:
        return overrides, f"profile: {given} (from the command line)"
    remote = launcher(overrides)
    if remote and remote not in LOCAL_LAUNCHERS:
        raise HmoeError(
            f"{LAUNCHER}={remote} runs the jobs on other machines, whose hardware this one "
            "cannot detect: say which profile they run (profile=gpu, paper or cpu)"
        )
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


def compose_config(overrides: list[str], check: bool = True):  # noqa: ANN201 - DictConfig
    """Compose the config for ``overrides`` (no sweeps); bad keys/values raise HmoeError,
    and so do unknown names and bad model paths (experiments.config_check) unless
    ``check`` is False."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
            OmegaConf.to_container(cfg, resolve=True)  # surface bad interpolations now
    except (HydraException, OmegaConfBaseException) as exc:
        raise HmoeError(config_error_message(exc)) from exc
    if check:
        check_config(cfg)
    return cfg


def validate_overrides(overrides: list[str]) -> None:
    """Compose every value of every sweep override once, so a typo fails before any job.

    With a launcher (``hydra/launcher=...``) also check that it composes with the profile's
    resources, and that the jobs' configuration fits the results directory (one profile,
    one source per model): a job refused on a cluster node would only say so in its log."""
    plain = [o for o in overrides if not o.startswith("hydra")]
    firsts = [
        o.split("=", 1)[0] + "=" + o.split("=", 1)[1].split(",")[0] if _is_sweep(o) else o
        for o in plain
    ]
    configs = [compose_config(firsts)]
    for i, override in enumerate(plain):
        if _is_sweep(override):
            key, values = override.split("=", 1)
            for value in values.split(",")[1:]:
                configs.append(compose_config([*firsts[:i], f"{key}={value}", *firsts[i + 1 :]]))
    if launcher(overrides):
        hydra_overrides = [o for o in overrides if o.startswith("hydra")]
        launcher_parameters([*firsts, *hydra_overrides])
        check_results_identity(configs)


def launcher_parameters(overrides: list[str]) -> dict:
    """The launcher's resolved parameters (``hydra.launcher``) for ``overrides``; HmoeError
    when the launcher is unknown, its plugin missing or a parameter wrong."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
            return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        text = config_error_message(exc)
        if "'hydra/launcher/submitit_" in text:
            text += (
                " (the launchers need hydra-submitit-launcher, a dependency of this project: "
                "./run_all.sh setup)"
            )
        raise HmoeError(text) from exc


def check_results_identity(configs: list) -> None:
    """Refuse (HmoeError) jobs whose profile or model source differs from what their results
    directory (with its shards) holds, or from each other's: the runner's check
    (experiments/run_identity.py), made before any job is submitted."""
    identities: dict[Path, dict | None] = {}
    for cfg in configs:
        run_dir = _results_dir(cfg)
        if run_dir not in identities:
            identities[run_dir] = read_provenance(run_dir).get("identity")
        identities[run_dir] = check_identity(
            identities[run_dir],
            run_dir,
            str(cfg.profile.name),
            str(cfg.model.key),
            model_source(cfg.model),
        )


def launched_outcome(run_dir: Path, run_id: str, exp: str | None = None) -> tuple[int, str]:
    """What the jobs of invocation ``run_id`` wrote to ``run_dir`` (a launcher's jobs report
    nothing to this process): the number of failed points and a summary line."""
    counts = point_statuses(run_dir, run_id, exp)
    failed = counts.get("failed", 0)
    summary = (
        f"{exp or 'all'}: {sum(counts.values())} point(s) measured by this run: "
        f"{counts.get('ok', 0)} ok, {counts.get('not_run', 0)} not run, {failed} failed "
        f"(job logs: {run_dir}/hydra/{exp or '*'}-*/.submitit/)"
    )
    return failed, summary


def launched_failures(overrides: list[str]) -> int:
    """Failed points of the invocation ``overrides`` describe (results_root, run, run_id),
    read back from its results directory: ``hmoe run -m hydra/launcher=...``'s exit status."""
    plain = [o for o in overrides if not _is_sweep(o) and not o.startswith("hydra")]
    cfg = compose_config(plain, check=False)
    return launched_outcome(_results_dir(cfg), str(cfg.run_id))[0] if cfg.run_id else 0


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


def ignored_checkpoints(cfg, overrides: list[str]) -> list[str]:  # noqa: ANN001
    """Notes for paper models whose checkpoint path is set but which this profile replaces
    by a stand-in (e.g. QW2_SAFETENSORS on the cpu profile, which runs tiny models)."""
    notes = []
    plain = [o for o in overrides if not _is_sweep(o) and not o.startswith("hydra")]
    for key in cfg.mode.models:
        stand_in = cfg.profile.stand_ins.get(key, key)
        if stand_in == key:
            continue
        path = compose_config([*plain, f"model={key}"], check=False).model.path
        if path:
            notes.append(
                f"note: model {key} has a checkpoint path ({path}), but profile "
                f"{cfg.profile.name} runs the stand-in {stand_in} instead; use profile=gpu "
                "(or paper) to run the checkpoint"
            )
    return notes


def main(argv: list[str]) -> int:
    """Run every experiment of the mode, then build the report. Returns the exit status."""
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        print(EXIT_CODES)
        return 0
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
    if not user_models:
        for line in ignored_checkpoints(cfg, overrides):
            print(line, flush=True)
    print(f"results: {run_dir}/", flush=True)
    run_id = _override(overrides, "run_id") or new_run_id()
    print(f"run id: {run_id}", flush=True)
    passthrough = [
        o for o in overrides if _override([o], "model") is None and _override([o], "run_id") is None
    ]
    steps = []
    for exp in cfg.mode.experiments:
        systems = _override(overrides, "system") or ",".join(cfg.mode.systems[exp])
        step = [
            f"experiment={exp}",
            f"mode={mode}",
            f"model={','.join(models)}",
            *[o for o in passthrough if _override([o], "system") is None],
            f"system={systems}",
            f"run_id={run_id}",
        ]
        validate_overrides([o for o in step if "=" in o and not o.startswith("-")])
        steps.append((str(exp), step))
    failed_steps = []
    for i, (exp, step) in enumerate(steps, 1):
        print(f"\n[{i}/{len(steps)}] {experiment(exp).title}", flush=True)
        cmd = [sys.executable, "-m", "experiments.cli", "run", "-m", *step]
        code = subprocess.run(cmd, env={**os.environ, "HMOE_PROFILE_PRINTED": "1"}).returncode
        if launcher(overrides) and code in (0, 1):
            failed, summary = launched_outcome(run_dir, run_id, exp)
            print(f"   {summary}", flush=True)
            code = 1 if failed else code
        if code == 2:
            print(f"error: {exp} stopped on bad input (see above)", file=sys.stderr)
            return 2
        if code == 130:
            return 130
        if code != 0:
            failed_steps.append(exp)
    print("\n[report] figures and report.md", flush=True)
    code = subprocess.run([sys.executable, "-m", "plots.report", str(run_dir)]).returncode
    if code != 0:
        return code
    print(_models_line(cfg, models))
    if failed_steps:
        print(f"some points failed in: {', '.join(failed_steps)} (see the report)")
        return 1
    return 0
