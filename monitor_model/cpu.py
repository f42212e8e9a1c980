"""The CPU side of a dump: how long one CPU takes to classify, test and compress.

Why constants: the timeline must be the same on every machine (tests and
tables use it), yet the CPU cost is real and differs by codec by a factor of
five: zlib level 1 page by page (``makedumpfile -c``) is what makes a kdump
on one capture-kernel CPU slow, zstd level 3 is what the monitor uses.  So the
model takes per-step throughputs measured once on a real CPU, written down
here with where they came from (docs/benchmarks/codec.md, made by
``bench/codec_throughput.py``), and charges each policy for the bytes it
really processes.  ``collect --cpu-scale F`` replaces the monitor's modelled
compression time by this host's measured time times ``F``.

One CPU each: kdump-tools boots the capture kernel with ``nr_cpus=1``, and
the monitor takes one CPU from the crashed machine; neither parallelises.

Measured 2026-12-04 on the lab host (x86_64 AMD EPYC, Python 3.11.7), CPU
time of one thread, on 128 MiB of non-zero pages sampled across a busy 2 GiB
crash of Debian's 6.12.118 cloud kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CpuModel", "DEFAULT_CPU", "MB"]

MB = 1_000_000


@dataclass(frozen=True)
class CpuModel:
    """Throughputs of one CPU, bytes of *input* per second (classification: per byte of RAM)."""

    zstd3: float = 461 * MB  # zstd level 3, 8 MiB chunks, whole-chunk window (the .tsd writer)
    zlib1: float = 97 * MB  # zlib level 1 on each 4 KiB page (makedumpfile -c)
    zero_test: float = 16_606 * MB  # "is this page all zeros" over pages already in memory
    classify: float = (1 << 30) / 0.055  # struct pages + level rules: 0.055 s per GiB of RAM
    source: str = "docs/benchmarks/codec.md (bench/codec_throughput.py, AMD EPYC, 2026-12-04)"

    def classify_s(self, ram_bytes: int) -> float:
        """Seconds to classify every page of ``ram_bytes`` of RAM from its struct pages."""
        return ram_bytes / self.classify

    def zero_test_s(self, nbytes: int) -> float:
        """Seconds to test ``nbytes`` of pages for all-zero content."""
        return nbytes / self.zero_test

    def zstd_s(self, nbytes: int) -> float:
        """Seconds to compress ``nbytes`` of non-zero pages with zstd level 3."""
        return nbytes / self.zstd3

    def zlib_s(self, nbytes: int) -> float:
        """Seconds to compress ``nbytes`` of pages with zlib level 1, page by page."""
        return nbytes / self.zlib1

    def to_json(self) -> dict:
        """The constants as the JSON summary shows them (MB/s, s/GiB)."""
        return {"zstd3_MBps": round(self.zstd3 / MB, 1), "zlib1_MBps": round(self.zlib1 / MB, 1),
                "zero_test_MBps": round(self.zero_test / MB, 1),
                "classify_s_per_GiB": round((1 << 30) / self.classify, 4), "source": self.source}


DEFAULT_CPU = CpuModel()
"""The measured CPU every default timeline uses."""
