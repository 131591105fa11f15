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

# What a measurement is, apart from the model: system, weights, expert split, workload.
MEASUREMENT_KEYS: tuple[str, ...] = (
    "system",
    "precision",
    "variant",
    "immediate_experts",
    "deferred_experts",
    "prompt_tokens",
    "decode_tokens",
    "task",
)
# One measured point of a run: the columns its trial rows share (figures, tables, claims).
POINT_KEYS: tuple[str, ...] = (
    "experiment",
    "stage",
    "model",
    "paper_model",
    "synthetic",
    "layers_run",
    "layers_total",
    *MEASUREMENT_KEYS,
)

# Columns of results.csv, in order. Telemetry columns are NaN where not measured.
RESULT_COLUMNS: tuple[str, ...] = (
    "run",  # results/<run> name
    "run_id",  # the invocation that measured the row (hmoe run / run_all.sh), see provenance
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
    "scoring_rules",  # accuracy rows: the rules that scored them (paper | strict)
    "status",  # ok | failed | not_run
    "error",  # reason for failed / not_run
    "cpu_util_pct",  # mean system-wide CPU utilisation over the timed region
    "expert_cpu_util_pct",  # busy share of the engine's CPU expert threads (decode), if known
    "peak_rss_mb",  # peak resident memory of the process during the timed region
    "gpu_util_pct",  # mean GPU utilisation over the timed region (NaN without GPU)
    "gpu_mem_mb",  # peak GPU memory used (NaN without GPU)
    "device",  # where non-expert work ran: cpu | cuda:0
    "placement",  # prefill: where routed experts ran per MoE layer (engine), e.g. split:24/40
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
    "expert_cpu_util_pct",
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
    *MEASUREMENT_KEYS,
    "tokens_per_s",
    "score",
    "source",
)

# The paper's system names mapped to this project's system keys.
PAPER_SYSTEM_TO_PROJECT = {"ktransformers": "engine", "fiddler": "fiddler", "llama.cpp": "llamacpp"}
SYSTEM_LABELS = {
    "engine": "engine (ours)",
    "fiddler": "Fiddler",
    "llamacpp": "llama.cpp",
    "llamacpp_best": "llama.cpp (best settings)",
}
PAPER_MODELS = {"qw2": "Qwen2-57B-A14B", "ds2": "DeepSeek-V2.5", "ds3": "DeepSeek-V3"}
