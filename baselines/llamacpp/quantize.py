"""Quantize a GGUF with llama.cpp's own ``llama_model_quantize``, in a child process.

llama.cpp's CUDA build crashes in a process that imported numpy before llama_cpp
(:mod:`baselines.llamacpp.load_order`), and the harness has numpy and torch loaded, so
:func:`quantize_with_llamacpp` runs ``python -m baselines.llamacpp.quantize SRC DST TYPE
THREADS``, which imports nothing but ``llama_cpp`` (first) and the standard library. A
refusal exits with :data:`REFUSED` after printing llama.cpp's reason on a
``REASON_PREFIX`` line of stderr; the parent raises WeightsError with it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from baselines.llamacpp.child_process import child_env, describe_exit, module_command
from baselines.llamacpp.disk_space import require_free_space
from baselines.llamacpp.load_order import load_llama_cpp_first
from baselines.llamacpp.log import LlamaCppLog
from engine.errors import WeightsError

LLAMA_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
# bytes per F16 byte of the source (Q8_0: 34 bytes per 32 weights; Q4_0: 18, with the
# output head kept at higher precision): an estimate for the free-space check
SIZE_PER_F16_BYTE = {"q8_0": 34 / 64, "q4_0": 22 / 64}
REFUSED = 3  # the child's exit status when llama.cpp refused
REASON_PREFIX = "llama.cpp refused: "


def quantize_with_llamacpp(src: Path, dst: Path, out_type: str, threads: int | None = None) -> Path:
    """Quantize the F16/F32 GGUF ``src`` to ``dst`` with llama.cpp's ``llama_model_quantize``.

    llama.cpp chooses each tensor's type as ``llama-quantize`` does (norms and routers stay
    F32, Q4_0 files keep a higher-precision output tensor, rows that do not fit a block
    fall back). DiskSpaceError before anything runs when the estimated output does not fit
    its disk. A refusal raises WeightsError with llama.cpp's logged reason; a quantizer
    process that dies (a crash in llama.cpp) raises RuntimeError saying how it ended.
    """
    if out_type not in LLAMA_FTYPES:
        raise ValueError(f"llama.cpp quantizes to {sorted(LLAMA_FTYPES)}, not {out_type!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise WeightsError(f"{src}: the GGUF to quantize does not exist")
    estimate = int(src.stat().st_size * SIZE_PER_F16_BYTE[out_type])
    require_free_space(dst.parent, estimate, f"the {out_type} quantization {dst.name}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    cmd = module_command(__name__, str(src), str(tmp), out_type, str(int(threads or 0)))
    try:
        done = subprocess.run(
            cmd, env=child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if done.returncode == REFUSED or (done.returncode == 0 and not tmp.is_file()):
            reasons = [
                line.removeprefix(REASON_PREFIX)
                for line in done.stderr.splitlines()
                if line.startswith(REASON_PREFIX)
            ]
            reason = reasons[-1] if reasons else "llama.cpp logged no reason"
            raise WeightsError(f"llama.cpp could not quantize {src.name} to {out_type}: {reason}")
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise RuntimeError(
                f"llama.cpp quantizer {describe_exit(done.returncode)} quantizing {src.name} "
                f"to {out_type}: {' | '.join(tail) or 'no output'}"
            )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def quantize_here(src: Path, dst: Path, out_type: str, threads: int) -> str | None:
    """Run ``llama_model_quantize`` in this process; None on success, else llama.cpp's reason."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_FTYPES[out_type])
    params.nthread = threads  # 0 = all hardware threads
    with LlamaCppLog() as llog:
        rc = llama_cpp.llama_model_quantize(
            str(src).encode(), str(dst).encode(), ctypes.byref(params)
        )
    if rc != 0 or not dst.is_file():
        return llog.reason()
    return None


def main(argv: list[str] | None = None) -> int:
    """``SRC DST TYPE THREADS``: quantize, exit 0, or print the reason and exit REFUSED."""
    src, dst, out_type, threads = sys.argv[1:] if argv is None else argv
    load_llama_cpp_first()
    reason = quantize_here(Path(src), Path(dst), out_type, int(threads))
    if reason is None:
        return 0
    print(REASON_PREFIX + " ".join(reason.split()), file=sys.stderr)
    return REFUSED


if __name__ == "__main__":
    sys.exit(main())
