"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """Return the CPU model name (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
