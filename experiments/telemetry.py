"""Telemetry over a timed region: CPU utilisation, peak RSS, GPU utilisation and memory.

A background thread samples every ``interval`` seconds while the region runs; CPU
utilisation is psutil's system-wide average between the region's start and end.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from types import TracebackType

import psutil


@dataclass
class TelemetryReading:
    """Summary of one timed region (NaN where not measurable)."""

    cpu_util_pct: float = math.nan
    peak_rss_mb: float = math.nan
    gpu_util_pct: float = math.nan
    gpu_mem_mb: float = math.nan

    def as_row(self) -> dict[str, float]:
        return {
            "cpu_util_pct": round(self.cpu_util_pct, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "gpu_util_pct": round(self.gpu_util_pct, 1),
            "gpu_mem_mb": round(self.gpu_mem_mb, 1),
        }


class _Nvml:
    """Lazily initialised NVML handle for GPU 0 (None when there is no GPU)."""

    _handle = None
    _tried = False

    @classmethod
    def handle(cls):  # noqa: ANN206
        if not cls._tried:
            cls._tried = True
            try:
                import pynvml

                pynvml.nvmlInit()
                if pynvml.nvmlDeviceGetCount() > 0:
                    cls._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            except Exception:  # noqa: BLE001 - no driver / no GPU
                cls._handle = None
        return cls._handle


class Telemetry:
    """Context manager sampling process RSS and GPU 0 while a region runs."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.reading = TelemetryReading()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()
        self._rss_peak = 0
        self._gpu_util: list[float] = []
        self._gpu_mem_peak = 0.0

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._rss_peak = max(self._rss_peak, self._proc.memory_info().rss)
        handle = _Nvml.handle()
        if handle is not None:
            import pynvml

            try:
                self._gpu_util.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                self._gpu_mem_peak = max(self._gpu_mem_peak, used)
            except Exception:  # noqa: BLE001
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Telemetry:
        psutil.cpu_percent(interval=None)  # reset the system-wide counter
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="hmoe-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.reading = TelemetryReading(
            cpu_util_pct=psutil.cpu_percent(interval=None),
            peak_rss_mb=self._rss_peak / 2**20 if self._rss_peak else math.nan,
            gpu_util_pct=sum(self._gpu_util) / len(self._gpu_util) if self._gpu_util else math.nan,
            gpu_mem_mb=self._gpu_mem_peak if _Nvml.handle() is not None else math.nan,
        )
