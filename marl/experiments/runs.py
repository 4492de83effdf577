"""One run of an experiment as the report and the plots read it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass
class Run:
    """One run: where it is, its group, and its metric lines in logging order."""

    path: Path
    group: str
    seed: int
    task: str
    records: list[dict[str, Any]]

    def series(self, metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
        """Points where ``metric`` was logged: ``x: [P]``, ``values: [P]``."""
        points = [(float(r[x]), float(r[metric])) for r in self.records
                  if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])
                  and isinstance(r.get(x), (int, float))]
        array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return array[:, 0], array[:, 1]
