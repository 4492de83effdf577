"""Episode statistics, metrics files, tensorboard and console progress."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import torch
from marl_envs.core import BatchedStep

from marl.atomic import atomic_write_text


class EpisodeTracker:
    """Accumulates per-agent episode returns from batched steps, without syncing.

    An episode's return is the mean, over the agents that took part in it, of each
    agent's summed reward; per-group returns average over the group's agents only. An
    episode in which no agent of a group took part is left out of that group's mean
    (each row keeps its own count). Finished episodes are summed in tensors; :meth:`pop`
    reads them out (one sync).

    Args:
        num_agents: agents per group.
        num_envs: env copies.
        keep_episodes: also keep every finished episode's return (for evaluation).
    """

    def __init__(self, num_agents: Mapping[str, int], num_envs: int, device: torch.device,
                 keep_episodes: bool = False) -> None:
        self.names = list(num_agents)
        self.sums = {g: torch.zeros(num_envs, n, device=device) for g, n in num_agents.items()}
        self.took_part = {g: torch.zeros(num_envs, n, dtype=torch.bool, device=device)
                          for g, n in num_agents.items()}
        self.lengths = torch.zeros(num_envs, device=device)
        self.keep_episodes = keep_episodes
        self.episodes: list[dict[str, float]] = []
        self._zero_totals(device)

    def _zero_totals(self, device: torch.device) -> None:
        # Row 0: team return; rows 1..G: per-group returns; last row: episode length.
        # counts[r]: finished episodes that row r has a value for.
        self.totals = torch.zeros(len(self.names) + 2, device=device)
        self.counts = torch.zeros(len(self.names) + 2, device=device)

    def record(self, step: BatchedStep, alive: Mapping[str, torch.Tensor]) -> None:
        """Add one step; ``alive[g]: [E, A_g]`` marks the agents that acted in it."""
        sums, counts = [], []  # per row, [E]: summed returns and agents taking part
        for g in self.names:
            self.sums[g] += step.groups[g].reward.to(self.sums[g].device)
            self.took_part[g] |= alive[g]
            part = self.took_part[g].to(self.sums[g].dtype)
            sums.append((self.sums[g] * part).sum(-1))
            counts.append(part.sum(-1))
        sums.insert(0, torch.stack(sums).sum(0))
        counts.insert(0, torch.stack(counts).sum(0))
        self.lengths += 1
        done = step.env_done.to(self.lengths.device)
        rows = torch.stack([*(s / c.clamp_min(1.0) for s, c in zip(sums, counts, strict=True)),
                            self.lengths])  # [G + 2, E]
        has = torch.stack([*(c > 0 for c in counts), torch.ones_like(done)]) & done
        self.totals += (rows * has).sum(-1)
        self.counts += has.sum(-1)
        if self.keep_episodes and bool(done.any()):
            self._keep(rows, has, done)
        keep = (~done).to(self.lengths.dtype)
        self.lengths *= keep
        for g in self.names:
            self.sums[g] *= keep.unsqueeze(-1)
            self.took_part[g] &= ~done.unsqueeze(-1)

    def _keep(self, rows: torch.Tensor, has: torch.Tensor, done: torch.Tensor) -> None:
        keys = ["episode_return", *(f"episode_return/{g}" for g in self.names),
                "episode_length"]
        values, present = rows.tolist(), has.tolist()
        for e in done.nonzero().flatten().tolist():
            self.episodes.append({key: values[r][e] for r, key in enumerate(keys)
                                  if present[r][e]})

    def pop(self) -> dict[str, float]:
        """Mean returns and lengths of the episodes finished since the last call; a
        group (or the team) without any agent in them is left out."""
        totals, counts = torch.stack([self.totals, self.counts]).tolist()
        episodes = int(counts[-1])
        if episodes == 0:
            return {"episodes": 0}
        self._zero_totals(self.totals.device)
        keys = ["episode_return", *(f"episode_return/{g}" for g in self.names)]
        means = {key: total / count for key, total, count
                 in zip(keys, totals[:-1], counts[:-1], strict=True) if count}
        return {"episodes": episodes, "episode_length": totals[-1] / episodes, **means}


class MetricsWriter:
    """Writes ``metrics.jsonl`` lines, tensorboard scalars and console progress lines.

    Tensorboard tags live in fixed namespaces: ``charts/`` (returns, speed, schedules)
    and ``losses/<group>/`` (loss terms), as CleanRL lays them out, and ``eval/`` for the
    evaluations during training (``eval_return`` is ``eval/return``).
    """

    def __init__(self, run_dir: Path, tensorboard: bool, progress: bool,
                 total_env_steps: int, stream: TextIO = sys.stdout) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.progress = progress
        self.total = total_env_steps
        self.stream = stream
        self.writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir))

    def truncate_after(self, env_steps: int) -> None:
        """Drop lines logged after ``env_steps`` (they belong to an interrupted stretch)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["env_steps"] <= env_steps:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a crash
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def hparams(self, flat_config: Mapping[str, Any]) -> None:
        """Log hyperparameters so tensorboard's HParams view can compare runs."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in flat_config.items()}
        metrics = {"charts/episode_return": float("nan")}
        if flat_config.get("train.eval_every"):
            metrics["eval/return"] = float("nan")
        for summary in hparams(values, metrics):
            self.writer.file_writer.add_summary(summary)

    def text(self, tag: str, text: str, env_steps: int,
             scalars: Mapping[str, float] | None = None) -> None:
        """A text entry in tensorboard (e.g. a selective group's assignment), and any
        one-off ``scalars`` beside it (tags as given)."""
        if self.writer is not None:
            self.writer.add_text(tag, text, env_steps)
            for key, value in (scalars or {}).items():
                self.writer.add_scalar(key, value, env_steps)
            self.writer.flush()

    def write(self, metrics: Mapping[str, float]) -> None:
        env_steps = int(metrics["env_steps"])
        with self.path.open("a") as stream:
            stream.write(json.dumps(dict(metrics)) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if key in ("env_steps",) or not isinstance(value, (int, float)):
                    continue
                self.writer.add_scalar(_tag(key), value, env_steps)
            self.writer.flush()
        if self.progress:
            self.stream.write(_progress_line(metrics, self.total) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tag(key: str) -> str:
    if key.startswith("eval_"):
        return f"eval/{key.removeprefix('eval_')}"
    if key.startswith(("episode_", "sps", "lr", "ent_coef", "episodes", "wall_time")):
        return f"charts/{key}"
    return f"losses/{key}"


def _progress_line(metrics: Mapping[str, float], total: int) -> str:
    steps = int(metrics["env_steps"])
    ret = metrics.get("episode_return")
    ret_text = "    n/a" if ret is None or math.isnan(ret) else f"{ret:7.2f}"
    evaluation = metrics.get("eval_return")
    eval_text = "" if evaluation is None else (
        f"eval {evaluation:7.2f} [{metrics['eval_return_ci_low']:.2f}, "
        f"{metrics['eval_return_ci_high']:.2f}] | ")
    train_text = "" if "sps" not in metrics else (
        f"{metrics['sps']:7,.0f} steps/s | return {ret_text} | ")
    return (f"env steps {steps:>10,}/{total:,} ({100 * steps / max(total, 1):3.0f}%) | "
            f"{train_text}{eval_text}{time.strftime('%H:%M:%S')}")
