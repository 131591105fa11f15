"""Typed schemas of the Hydra config tree, registered in Hydra's ConfigStore.

Every group's YAML starts from one of these dataclasses (``defaults: [<schema>, _self_]``),
so a misspelt key fails at compose time with an error that names it, and the code reads a
typed config instead of loose dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class SyntheticConfig:
    """How to make the model when no checkpoint path is set."""

    kind: str = "tiny"  # tiny | slice
    layers: int | None = None  # None = preset default (tiny) or fit-to-machine (slice)
    seed: int = 0
    routing_skew: float = 0.0  # Zipf exponent of expert popularity; 0 = none


@dataclass
class ModelEntry:
    """One model entry (conf/model/): the paper model it stands for, checkpoint paths,
    what to measure on it."""

    key: str = MISSING
    paper_model: str = MISSING  # qw2 | ds2 | ds3
    name: str = MISSING
    architecture: str = MISSING  # qwen2_moe | deepseek_v2 | deepseek_v3
    layers_total: int = MISSING
    top_k: int = MISSING
    path: str | None = None  # Hugging Face safetensors directory
    gguf: dict[str, str | None] = field(default_factory=dict)  # precision -> .gguf file
    precisions: list[str] = field(default_factory=lambda: ["bf16"])
    decode_configs: list[str] = field(default_factory=list)  # "bf16:8+0", "int8:4+4", ...
    accuracy_configs: list[str] = field(default_factory=list)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class SystemConfig:
    """One system under test; ``options`` are the system's own knobs."""

    name: str = MISSING
    precisions: list[str] = field(default_factory=lambda: ["bf16"])
    precision_names: dict[str, str] = field(default_factory=dict)  # recorded label per precision
    supports_deferral: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """One experiment of the paper (Figure 11, 12, 13 or Table 2)."""

    name: str = MISSING  # prefill | decode | breakdown | accuracy
    trials: int = 3
    warmup: int = 1
    max_trials: int | None = None  # adaptive repetition: add trials up to this while CV is high
    cv_threshold: float = 0.10  # a point whose trials' CV exceeds this is flagged (noisy)
    prompt_lengths: list[int] = field(default_factory=list)  # prefill
    # prefill: the engine's prefill placements to measure, each its own series (the
    # system's own prefill_placement keeps variant ""); empty: that setting only
    placements: list[str] = field(default_factory=list)
    prompt_tokens: int = 32  # decode
    decode_tokens: int = 512  # decode
    breakdown_prefill_tokens: int = 8192
    prefill_variants: list[str] = field(default_factory=list)
    decode_variants: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    limit: int | None = None  # accuracy: problems per task (None = all)
    human_eval_samples: int = 10  # accuracy: HumanEval samples per problem (1 = greedy)
    temperature: float = 0.3  # accuracy: HumanEval sampling temperature (samples > 1)
    seed: int = 2025  # accuracy: sampling seed
    max_new_tokens: int | None = None  # accuracy: cap on each task's token budget (None = none)
    scoring_rules: str = "paper"  # accuracy: paper (the artifact's scorer) | strict


@dataclass
class ModeConfig:
    """fast or full: which models, tasks and experiments ``run_all.sh`` covers."""

    name: str = MISSING
    models: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)
    systems: dict[str, list[str]] = field(default_factory=dict)  # experiment -> systems


@dataclass
class ResourcesConfig:
    """What one job (experiment x model x system) asks a cluster for, through
    ``hydra/launcher=slurm`` (conf/hydra/launcher/): GPUs, CPUs, memory, time limit."""

    gpus: int = 0  # GPUs per job
    gpu_type: str | None = None  # the cluster's GPU type name (Slurm GRES type: a100, h100...)
    cpus: int | None = None  # CPU cores per job (Slurm --cpus-per-task); None = the default
    mem_gb: int | None = None  # memory per job in GB (Slurm --mem); None = the default
    time_min: int = 1440  # wall-clock limit per job, minutes (a timed-out job is requeued)


def gres(gpus: int | None, gpu_type: str | None) -> str | None:
    """Slurm's generic-resource request for ``gpus`` GPUs of ``gpu_type``: ``gpu:2``,
    ``gpu:h100:1``, or None for no GPU (the ``hmoe_gres`` resolver of the launcher configs)."""
    if not gpus:
        return None
    return f"gpu:{gpu_type}:{int(gpus)}" if gpu_type else f"gpu:{int(gpus)}"


@dataclass
class ProfileConfig:
    """What the hardware allows: device, prompt lengths, token counts, stand-in models, and
    the resources one job asks a cluster for."""

    name: str = MISSING  # cpu | gpu | paper
    device: str = "cpu"
    prefill_lengths: list[int] = field(default_factory=list)
    decode_tokens: int = 512
    trials: int = 3
    warmup: int = 1
    breakdown_prefill_tokens: int = 8192
    prefill_placements: list[str] = field(default_factory=lambda: ["cpu"])  # engine, Figure 11
    accuracy_limit: int | None = None
    human_eval_samples: int = 10  # the paper: 10 samples at temperature 0.3
    human_eval_temperature: float = 0.3
    stand_ins: dict[str, str] = field(default_factory=dict)  # paper model -> model key
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


@dataclass
class WorkloadConfig:
    """Where prompt tokens come from."""

    corpus: str = "auto"  # auto | wikitext2 | python_docs | file
    corpus_file: str | None = None
    seed: int = 1234


@dataclass
class DataConfig:
    """Accuracy datasets: a local directory of the shared layout, else the HF Hub."""

    dir: str | None = None


@dataclass
class PathsConfig:
    """Where generated models and exports are cached."""

    cache_dir: str = ".cache"


@dataclass
class Config:
    """The whole composed config of one job."""

    run: str = MISSING  # results/<run>
    run_id: str | None = None  # this invocation (set by the CLI; recorded on every row)
    results_root: str = "results"
    rerun: bool = False
    progress: bool = True
    experiment: ExperimentConfig = MISSING
    model: ModelEntry = MISSING
    system: SystemConfig = MISSING
    mode: ModeConfig = MISSING
    profile: ProfileConfig = MISSING
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_configs() -> None:
    """Register the schemas so the YAML files can extend them."""
    if not OmegaConf.has_resolver("hmoe_gres"):
        OmegaConf.register_new_resolver("hmoe_gres", gres)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="experiment", name="base_experiment", node=ExperimentConfig)
    cs.store(group="model", name="base_model", node=ModelEntry)
    cs.store(group="system", name="base_system", node=SystemConfig)
    cs.store(group="mode", name="base_mode", node=ModeConfig)
    cs.store(group="profile", name="base_profile", node=ProfileConfig)
