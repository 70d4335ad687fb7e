"""Benchmarks print one JSON line per result: what, value, unit, baseline, machine."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

from cellfusion_core.shared_data import SHARED_DATA, shared_path  # noqa: F401  (SHARED_DATA: re-exported)

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu {platform.python_implementation()} {platform.python_version()}"


def emit(what: str, value: Any, unit: str, baseline: Any = None, **extra: Any) -> None:
    """Print one result as a JSON line (flushed)."""
    rec = {"what": what, "value": value, "unit": unit, "baseline": baseline, "machine": machine(), **extra}
    print(json.dumps(rec, default=float), flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data; when it is absent, say so on stderr and exit 0 (benchmark skipped)."""
    path, missing = shared_path(*parts)
    if missing:
        print(f"skipped: {missing}; this benchmark needs it", file=sys.stderr)
        sys.exit(0)
    return path
