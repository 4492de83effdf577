"""The training loop: collect a rollout, update every group, log, checkpoint, repeat.

One iteration, in the three files that hold it: :meth:`marl.algos.ppo.PPO.collect`
steps the batched env and fills the rollout storage, :meth:`marl.algos.ppo.PPO.update`
computes GAE and sums every group's PPO loss (:mod:`marl.groups` holds the networks)
into one backward and one optimiser step. The off-policy algorithms (IQL, VDN, QMIX in
:mod:`marl.algos.q_learning`; MADDPG, MATD3 in :mod:`marl.algos.ddpg`) follow the same two
calls: ``collect`` steps into a replay buffer, ``update`` takes gradient steps on sampled
batches and moves the target networks (:mod:`marl.algos.off_policy`). This file only wires
them together.
"""

from __future__ import annotations

import dataclasses
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from marl_envs import make as make_env
from marl_envs import wrap as wrap_env
from marl_envs.core import BatchedEnv

from marl import checkpoint
from marl.algos.ddpg import DDPG
from marl.algos.off_policy import CONTINUOUS_ALGOS, DISCRETE_ALGOS, OffPolicy
from marl.algos.ppo import PPO, NonFiniteLossError
from marl.algos.q_learning import QLearning
from marl.config import Config, ConfigError, dump, flatten, to_dict
from marl.logging import EpisodeTracker, MetricsWriter


@dataclasses.dataclass
class RunResult:
    """What a finished run leaves behind."""

    run_dir: Path
    env_steps: int
    last_metrics: dict[str, float]


def train(config: Config, stream: TextIO = sys.stdout) -> RunResult:
    """Train with ``config``; return the run directory and the last metrics."""
    run_dir = _run_dir(config)
    _seed(config.seed)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    env = build_env(config, device)
    algo = make_algorithm(env, config, device)
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, env.num_envs,
                             device)
    writer = MetricsWriter(run_dir, config.run.tensorboard, config.train.progress,
                           config.train.total_env_steps, stream)
    env_steps, wall_offset = 0, 0.0
    if config.run.resume and checkpoint.list_checkpoints(run_dir / "checkpoints"):
        env_steps, wall_offset = _restore(algo, run_dir, device)
        writer.truncate_after(env_steps)
        algo.reset_env(seed=config.seed + env_steps)
        stream.write(f"resuming {run_dir} from env step {env_steps:,}\n")
    dump(config, run_dir / "config.yaml")
    writer.hparams(flatten(to_dict(config)))
    total = config.train.total_env_steps
    next_log = _next_multiple(env_steps, config.train.log_every)
    next_checkpoint = _next_multiple(env_steps, config.train.checkpoint_every)
    start, last_time, last_steps = time.perf_counter(), time.perf_counter(), env_steps
    metrics: dict[str, float] = {}
    try:
        while env_steps < total:
            progress = env_steps / total
            env_steps += algo.collect(tracker)
            try:
                losses = algo.update(progress)
            except NonFiniteLossError as error:
                raise NonFiniteLossError(
                    f"at env step {env_steps:,}: {error}. The run stopped without writing a "
                    f"checkpoint; the last good one is in {run_dir / 'checkpoints'}"
                ) from error
            finished = env_steps >= total
            if env_steps >= next_log or finished:
                now = time.perf_counter()
                metrics = {"env_steps": env_steps,
                           "wall_time": wall_offset + now - start,
                           "sps": (env_steps - last_steps) / max(now - last_time, 1e-9),
                           **tracker.pop(), **losses}
                writer.write(metrics)
                last_time, last_steps = now, env_steps
                next_log = _next_multiple(env_steps, config.train.log_every)
            if env_steps >= next_checkpoint or finished:
                _save(algo, run_dir, env_steps, wall_offset + time.perf_counter() - start)
                next_checkpoint = _next_multiple(env_steps, config.train.checkpoint_every)
    finally:
        env.close()
        writer.close()
    stream.write(f"run directory: {run_dir}\n"
                 f"open it with:  tensorboard --logdir {run_dir}\n")
    return RunResult(run_dir, env_steps, metrics)


Algorithm = PPO | OffPolicy
"""What :func:`make_algorithm` returns: each has ``collect``, ``update``, ``modules``,
``optimizer`` and ``reset_env``."""

# Algorithms whose critic or mixer reads the global state (env.state()).
_STATE_ALGOS = ("mappo", "qmix", *CONTINUOUS_ALGOS)


def make_algorithm(env: BatchedEnv, config: Config, device: torch.device) -> Algorithm:
    """The learner ``config.algo.name`` names, for the groups of ``env``."""
    name = config.algo.name
    if name in DISCRETE_ALGOS:
        return QLearning(env, config, device)
    if name in CONTINUOUS_ALGOS:
        return DDPG(env, config, device)
    return PPO(env, config, device)


def build_env(config: Config, device: torch.device) -> BatchedEnv:
    """The batched env described by ``config.env``."""
    cfg = config.env
    env = make_env(cfg.task, num_envs=cfg.num_envs, kwargs=dict(cfg.kwargs), vector=cfg.vector,
                   num_workers=cfg.num_workers, groups=cfg.groups,
                   max_episode_steps=cfg.max_episode_steps,
                   include_state=config.algo.name in _STATE_ALGOS, action_repeat=cfg.action_repeat,
                   device=device)
    try:
        return wrap_env(env, frame_stack=cfg.frame_stack, pixel_norm=cfg.pixel_norm,
                        pixel_channels=cfg.pixel_channels, agent_centric=cfg.agent_centric)
    except ValueError as error:  # options that do not fit this task's observations
        env.close()
        raise ConfigError(f"env: {error}") from error


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or "
                          "device=auto")
    return torch.device(name)


def _run_dir(config: Config) -> Path:
    if config.run.dir is not None:
        run_dir = Path(config.run.dir)
        if (run_dir / "checkpoints").exists() and not config.run.resume:
            raise ConfigError(
                f"run directory {run_dir} already holds a run; pass run.resume=true to continue "
                "it, or choose another run.dir"
            )
    else:
        if config.run.resume:
            raise ConfigError("run.resume=true needs run.dir=<the run directory to continue>")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.env.task)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / (f"{name}__{config.algo.name}__{config.groups.sharing}"
                                  f"__s{config.seed}__{stamp}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every


def _save(algo: Algorithm, run_dir: Path, env_steps: int, wall_time: float) -> Path:
    state: dict[str, Any] = {
        "env_steps": env_steps,
        "wall_time": wall_time,
        "modules": {name: module.state_dict() for name, module in algo.modules().items()},
        "optimizer": algo.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if isinstance(algo, OffPolicy):
        state["algo"] = algo.extra_state()
    return checkpoint.save(run_dir / "checkpoints", env_steps, state)


def _restore(algo: Algorithm, run_dir: Path, device: torch.device) -> tuple[int, float]:
    path = checkpoint.latest(run_dir / "checkpoints")
    state = checkpoint.load(path, map_location=device)
    load_modules(algo, state, path)
    algo.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    if isinstance(algo, OffPolicy):
        algo.load_extra_state(state["algo"])
    return int(state["env_steps"]), float(state["wall_time"])


def load_modules(algo: Algorithm, state: dict[str, Any], path: Path) -> None:
    """Load network and normaliser weights; a mismatch names the checkpoint and the cause."""
    for name, module in algo.modules().items():
        try:
            module.load_state_dict(state["modules"][name])
        except (KeyError, RuntimeError) as error:
            raise checkpoint.CheckpointError(
                f"checkpoint {path} does not fit this run's {name!r} (was it written with other "
                f"groups.sharing, groups.backend, groups.hidden or task?): {error}"
            ) from error
