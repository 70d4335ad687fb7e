"""Where the shared real data lives (``../shared/data`` beside the checkout), for tests and benchmarks.

One definition of the location and of the "is it there?" check; each caller decides what absence
means (tests skip with :func:`pytest.skip`, benchmarks print a line and exit 0). The environment
variable ``CELLFUSION_SHARED`` names another shared folder (its ``data/`` subfolder is used).
The default is the folder beside the source checkout, so it only means something in a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CELLFUSION_SHARED", REPO.parent / "shared")).resolve() / "data"


def shared_path(*parts: str) -> tuple[Path, str | None]:
    """``(path under the shared data folder, None)``, or ``(path, reason)`` when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if path.exists():
        return path, None
    return path, f"{path} is absent (the shared data folder ../shared/data is not beside this checkout)"
