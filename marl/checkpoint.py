"""Atomic checkpoints and safe loading.

A checkpoint is written to a temporary file in the same folder and renamed over its
final name, so a crash (or a second Ctrl-C) mid-write never leaves a half-written file
under a checkpoint's name, and the previous checkpoints stay intact. Loading uses
``torch.load(weights_only=True)``, which refuses to run code stored in a file.

An off-policy run's replay buffer goes beside its checkpoint as
``replay_step_<env steps>.pt``: only the newest is kept (it can be large), and its name
carries the step so a checkpoint is never paired with a buffer of another step. It is
written before the checkpoint of the same step and the older buffer removed after it, so
the newest checkpoint's buffer exists whenever the writes in between were cut short.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from marl.atomic import atomic_torch_save

_NAME = re.compile(r"^step_(\d+)\.pt$")
_REPLAY_NAME = re.compile(r"^replay_step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not fit this run."""


def save(directory: Path, env_steps: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as ``directory/step_<env_steps>.pt``; keep the newest ``keep`` files."""
    path = directory / f"step_{env_steps:012d}.pt"
    atomic_torch_save(path, state)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def replay_path(directory: Path, env_steps: int) -> Path:
    """Where the replay buffer saved with the checkpoint of ``env_steps`` lives."""
    return directory / f"replay_step_{env_steps:012d}.pt"


def save_replay(directory: Path, env_steps: int, state: dict[str, Any]) -> Path:
    """Write the replay buffer ``state`` of step ``env_steps`` (call before :func:`save`)."""
    path = replay_path(directory, env_steps)
    atomic_torch_save(path, {"env_steps": env_steps, "replay": state})
    return path


def prune_replays(directory: Path, keep_step: int | None) -> None:
    """Remove every replay file but the one of ``keep_step`` (all of them for None)."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        match = _REPLAY_NAME.match(path.name)
        if match and int(match.group(1)) != keep_step:
            path.unlink(missing_ok=True)


def load_replay(directory: Path, env_steps: int,
                map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The replay buffer state saved with the checkpoint of ``env_steps``, or None if none was.

    Raises:
        CheckpointError: the file is corrupt or holds another step's buffer.
    """
    path = replay_path(directory, env_steps)
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"replay buffer {path} is corrupt ({type(error).__name__}: "
                              f"{reason}); delete it to resume without it (the buffer then "
                              "refills for algo.warmup_steps env steps)") from error
    found = saved.get("env_steps") if isinstance(saved, dict) else None
    if found != env_steps or not isinstance(saved.get("replay"), dict):
        raise CheckpointError(f"replay buffer {path} holds step {found}, not {env_steps}; "
                              "delete it to resume without it")
    state: dict[str, Any] = saved["replay"]
    return state


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(directory: Path) -> Path:
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        raise CheckpointError(
            f"no checkpoint in {directory}: expected files named step_<env steps>.pt. "
            "Was the run stopped before its first checkpoint (train.checkpoint_every)?"
        )
    return checkpoints[-1]


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a corrupt file raises :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as error:
        older = [p.name for p in list_checkpoints(path.parent) if p != path]
        hint = (f"; earlier checkpoints in the folder: {', '.join(older)} (move {path.name} "
                "away to use them)") if older else ""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"checkpoint {path} is corrupt or not a marlshare checkpoint "
                              f"({type(error).__name__}: {reason}){hint}") from error
    if not isinstance(state, dict) or "env_steps" not in state:
        raise CheckpointError(f"checkpoint {path} is not a marlshare checkpoint (no env_steps)")
    return state
