"""Building a run's parts: device, env, learner, evaluator, and checkpoints in and out.

The training loop (:mod:`marl.trainer`), ``marl eval`` (:mod:`marl.evaluate`) and the
benchmarks build through these functions, so a learner is built and loaded the same way
everywhere. Learners are known only through :class:`marl.algos.base.Learner` and the
registry :data:`marl.algos.registry.ALGORITHMS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import gymnasium
import torch
from marl_envs import make as make_env
from marl_envs import wrap as wrap_env
from marl_envs.core import BatchedEnv

from marl import checkpoint
from marl.algos.base import Learner
from marl.algos.registry import ACTION_KINDS, ALGORITHMS
from marl.config import Config, ConfigError, apply
from marl.play import EVAL_SEED_OFFSET, Evaluator, preserved_rng
from marl.replay import ReplayBuffer
from marl.selective.runtime import adopt_checkpoint_index

LearnerFactory = Callable[[BatchedEnv, Config, torch.device], Learner]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (checked to exist) or ``auto`` (CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or "
                          "device=auto")
    return torch.device(name)


def build_env(config: Config, device: torch.device) -> BatchedEnv:
    """The batched env described by ``config.env``, with the global state when the
    algorithm reads it."""
    cfg = config.env
    env = make_env(cfg.task, num_envs=cfg.num_envs, kwargs=dict(cfg.kwargs), vector=cfg.vector,
                   num_workers=cfg.num_workers, groups=cfg.groups,
                   max_episode_steps=cfg.max_episode_steps,
                   include_state=ALGORITHMS[config.algo.name].global_state,
                   action_repeat=cfg.action_repeat, device=device)
    try:
        return wrap_env(env, frame_stack=cfg.frame_stack, pixel_norm=cfg.pixel_norm,
                        pixel_channels=cfg.pixel_channels, agent_centric=cfg.agent_centric)
    except ValueError as error:  # options that do not fit this task's observations
        env.close()
        raise ConfigError(f"env: {error}") from error


def learner_class(name: str) -> LearnerFactory:
    """The learner class registered for algorithm ``name``.

    The registry names it by import path (its module cannot import the learners without
    an import cycle through the config, see :mod:`marl.algos.registry`); this is the one
    place that path is resolved.
    """
    module_name, _, attribute = ALGORITHMS[name].learner.partition(":")
    factory: LearnerFactory = getattr(importlib.import_module(module_name), attribute)
    return factory


def make_learner(env: BatchedEnv, config: Config, device: torch.device) -> Learner:
    """The learner ``config.algo.name`` names, for the groups of ``env``."""
    check_action_spaces(env, config.algo.name)
    return learner_class(config.algo.name)(env, config, device)


_KIND_TEXT = {"discrete": "discrete (Discrete(n))", "continuous": "continuous (1-D Box)"}
_KIND_HINT = {"discrete": "; for mpe2 tasks, drop env.kwargs.continuous_actions",
              "continuous": "; for mpe2 tasks, set env.kwargs.continuous_actions=true"}


def action_kind(space: gymnasium.Space) -> str | None:
    """``'discrete'`` for ``Discrete``, ``'continuous'`` for a 1-D ``Box``, else None."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return "discrete"
    if isinstance(space, gymnasium.spaces.Box) and len(space.shape or ()) == 1:
        return "continuous"
    return None


def check_action_spaces(env: BatchedEnv, name: str) -> None:
    """Every group's action space is of a kind algorithm ``name`` takes (its registry
    entry's ``actions``); else a :class:`ConfigError` naming the algorithms that fit."""
    wanted = ALGORITHMS[name].actions
    for spec in env.groups.values():
        space = spec.action_space
        kind = action_kind(space)
        if kind in wanted:
            continue
        need = " or ".join(_KIND_TEXT[k] for k in wanted)
        if kind is None:
            kinds = " or ".join(_KIND_TEXT[k] for k in ACTION_KINDS)
            fix = (f"Wrap the env to flatten the action space, or use a task with {kinds} "
                   "actions.")
        else:
            fits = [other for other, entry in ALGORITHMS.items() if kind in entry.actions]
            fix = (f"For this action space use algo.name={', '.join(fits[:-1])} or "
                   f"{fits[-1]}{_KIND_HINT[wanted[0]]}.")
        raise ConfigError(f"algo.name={name} needs {need} actions, but group {spec.name!r} "
                          f"has {space}. {fix}")


def make_evaluator(config: Config, device: torch.device) -> Evaluator | None:
    """Evaluation in env copies of its own (``train.eval_every > 0``), else None."""
    train_cfg = config.train
    if train_cfg.eval_every == 0:
        return None
    copies = min(train_cfg.eval_episodes, config.env.num_envs)
    eval_config = apply(config, {"env.num_envs": copies, "env.vector": "sync",
                                 "env.num_workers": None})
    with preserved_rng(device):  # building envs must not move the training RNG streams
        env = build_env(eval_config, device)
    return Evaluator(env, train_cfg.eval_episodes, config.seed + EVAL_SEED_OFFSET,
                     train_cfg.eval_mode)


def load_modules(learner: Learner, state: dict[str, Any], path: Path) -> None:
    """Load network and normaliser weights; a mismatch names the checkpoint and the cause."""
    for name, module in learner.modules().items():
        try:
            saved = state["modules"][name]
            # Selective groups: K networks as the checkpoint has them, before loading.
            learner.optimizer.swap_parameters(adopt_checkpoint_index(module, saved))
            module.load_state_dict(saved)
        except (KeyError, RuntimeError) as error:
            raise checkpoint.CheckpointError(
                f"checkpoint {path} does not fit this run's {name!r} (was it written with other "
                f"groups.sharing, groups.backend, groups.hidden or task?): {error}"
            ) from error


class Checkpoints:
    """Writes and restores a run's checkpoints and, for learners with a replay buffer,
    the buffer beside them (:func:`marl.checkpoint.save_replay`)."""

    def __init__(self, run_dir: Path, config: Config, stream: TextIO) -> None:
        self.directory = run_dir / "checkpoints"
        self.replay_limit = config.train.replay_checkpoint_mb * 1e6
        self.warmup_steps = config.algo.warmup_steps
        self.stream = stream
        self.warned = False

    def save(self, learner: Learner, env_steps: int, wall_time: float) -> Path:
        """Write the checkpoint of ``env_steps`` (and the replay buffer when it fits)."""
        state: dict[str, Any] = {
            "env_steps": env_steps,
            "wall_time": wall_time,
            "modules": {name: module.state_dict() for name, module in learner.modules().items()},
            "optimizer": learner.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "algo": learner.extra_state(),
        }
        replay = learner.replay_buffer()
        replay_step = None
        if replay is not None and self._fits(replay):
            # The buffer first: the checkpoint's buffer always exists.
            checkpoint.save_replay(self.directory, env_steps, replay.state_dict())
            replay_step = env_steps
        path = checkpoint.save(self.directory, env_steps, state)
        if replay is not None:
            checkpoint.prune_replays(self.directory, replay_step)
        return path

    def _fits(self, replay: ReplayBuffer) -> bool:
        size = replay.nbytes()
        if self.replay_limit == 0 or size <= self.replay_limit:
            return self.replay_limit > 0
        if not self.warned:
            self.stream.write(
                f"warning: the replay buffer holds {size / 1e6:,.0f} MB, over "
                f"train.replay_checkpoint_mb={self.replay_limit / 1e6:g}; checkpoints leave "
                f"it out, and a resumed run refills it for algo.warmup_steps="
                f"{self.warmup_steps:,} env steps. Raise train.replay_checkpoint_mb to keep "
                "it.\n")
            self.warned = True
        return False

    def restore(self, learner: Learner, device: torch.device) -> tuple[int, float]:
        """Load the newest checkpoint into ``learner``; return its env steps and wall time."""
        path = checkpoint.latest(self.directory)
        state = checkpoint.load(path, map_location=device)
        load_modules(learner, state, path)
        learner.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        env_steps = int(state["env_steps"])
        learner.load_extra_state(state.get("algo", {}))  # PPO checkpoints once had none
        replay = learner.replay_buffer()
        if replay is not None:
            self._restore_replay(replay, path, env_steps, device)
        return env_steps, float(state["wall_time"])

    def _restore_replay(self, replay: ReplayBuffer, path: Path, env_steps: int,
                        device: torch.device) -> None:
        saved = checkpoint.load_replay(self.directory, env_steps, map_location=device)
        refill = f"it refills for algo.warmup_steps={self.warmup_steps:,} env steps"
        if saved is None:
            self.stream.write(f"warning: no replay buffer was saved with {path.name}; "
                              f"{refill}\n")
            return
        try:
            replay.load_state_dict(saved)
        except ValueError as error:
            self.stream.write(f"warning: the replay buffer saved with {path.name} does not "
                              f"fit this run ({error}); {refill}\n")
            return
        self.stream.write(f"replay buffer restored: {replay.num_transitions:,} "
                          "transitions\n")
