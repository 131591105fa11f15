"""The tidy results schema: one row per trial (or per NOT RUN / failed point).

Measured results (results/<run>/results.csv) and the paper's reference numbers
(reference_results/*.csv) share these column names, so figures and the report can put
them side by side with plain pandas.
"""

from __future__ import annotations

# Row status values.
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_NOT_RUN = "not_run"
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_NOT_RUN)

# Experiment names (conf/experiment/<name>.yaml).
EXPERIMENTS = ("prefill", "decode", "breakdown", "accuracy")

# Columns of results.csv, in order. Telemetry columns are NaN where not measured.
RESULT_COLUMNS: tuple[str, ...] = (
    "run",  # results/<run> name
    "point_id",  # hash of everything that defines the point (config hash)
    "experiment",  # prefill | decode | breakdown | accuracy
    "stage",  # prefill | decode (breakdown distinguishes both; others repeat experiment)
    "model",  # model config key actually run (e.g. tiny_qwen2_moe, qw2)
    "paper_model",  # paper key this stands for (qw2 | ds2 | ds3)
    "model_name",  # display name
    "model_source",  # checkpoint path, or "synthetic-tiny" / "synthetic-slice" + cache dir
    "synthetic",  # bool
    "layers_run",  # decoder layers actually executed
    "layers_total",  # layers of the full model
    "system",  # engine | fiddler | llamacpp
    "precision",  # bf16 | fp16 | int8 | int4 (routed-expert weights)
    "variant",  # breakdown variant (base, +v, +m, ...), "" elsewhere
    "immediate_experts",  # routed experts computed now
    "deferred_experts",  # routed experts deferred to the next layer
    "prompt_tokens",
    "decode_tokens",
    "task",  # accuracy task, "" elsewhere
    "trial",  # 0..trials-1; -1 for not_run/failed rows
    "seconds",  # wall time of the timed region
    "tokens_per_s",  # prompt_tokens/seconds (prefill) or decode_tokens/seconds (decode)
    "score",  # accuracy fraction 0..1 (accuracy rows)
    "status",  # ok | failed | not_run
    "error",  # reason for failed / not_run
    "cpu_util_pct",  # mean system-wide CPU utilisation over the timed region
    "peak_rss_mb",  # peak resident memory of the process during the timed region
    "gpu_util_pct",  # mean GPU utilisation over the timed region (NaN without GPU)
    "gpu_mem_mb",  # peak GPU memory used (NaN without GPU)
    "device",  # where non-expert work ran: cpu | cuda:0
    "profile",  # cpu | gpu | paper
    "corpus",  # where the prompt tokens came from
    "timestamp",  # UTC ISO time the row was written
)

# Result columns holding numbers (everything else is text, plus the bool ``synthetic``).
NUMERIC_COLUMNS: tuple[str, ...] = (
    "layers_run",
    "layers_total",
    "immediate_experts",
    "deferred_experts",
    "prompt_tokens",
    "decode_tokens",
    "trial",
    "seconds",
    "tokens_per_s",
    "score",
    "cpu_util_pct",
    "peak_rss_mb",
    "gpu_util_pct",
    "gpu_mem_mb",
)

# Columns of reference_results/*.csv (the paper's numbers in this schema).
REFERENCE_COLUMNS: tuple[str, ...] = (
    "experiment",
    "stage",
    "paper_model",
    "model_name",
    "system",
    "precision",
    "variant",
    "immediate_experts",
    "deferred_experts",
    "prompt_tokens",
    "decode_tokens",
    "task",
    "tokens_per_s",
    "score",
    "source",
)

# The paper's system names mapped to this project's system keys.
PAPER_SYSTEM_TO_PROJECT = {"ktransformers": "engine", "fiddler": "fiddler", "llama.cpp": "llamacpp"}
SYSTEM_LABELS = {"engine": "engine (ours)", "fiddler": "Fiddler", "llamacpp": "llama.cpp"}
PAPER_MODELS = {"qw2": "Qwen2-57B-A14B", "ds2": "DeepSeek-V2.5", "ds3": "DeepSeek-V3"}
