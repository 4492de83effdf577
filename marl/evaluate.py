"""Evaluate a trained run: mean per-agent episode return with a 95% confidence interval.

The episodes are played by :func:`marl.play.play_episodes`, the same code that evaluates
during training (``train.eval_every``); ``random_play`` plays uniform random actions
(:class:`RandomActions`) through the same code, the reference a policy is compared with.

``overrides`` evaluate the checkpoint in another env than the one it trained in, such as
more agents (``env.kwargs.N=5``); they take the env keys of :data:`EVAL_KEYS` only, since
the networks come from the checkpoint. Then what acting reads is loaded strictly and what
only training reads (:data:`TRAINING_ONLY`: critics, value and reward normalisers, target
networks, mixers) where it fits. A policy tensor whose shape the new env changes is
refused in one line naming the tensors and the config keys that tie the policy to the
env's size (:mod:`marl.transfer`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from marl_envs import random_actions
from marl_envs.core import BatchedEnv, BatchedReset, GroupSpec

from marl import checkpoint
from marl.algos.base import Learner
from marl.build import build_env, load_modules, make_learner, resolve_device
from marl.config import CHOICES, Config, ConfigError, apply, load, to_dict, tree_get
from marl.memory import AgentMemory
from marl.play import bootstrap_ci, play_episodes
from marl.transfer import (
    EVAL_KEYS,
    TRAINING_ONLY,
    check_eval_key,
    check_layouts,
    fit_checkpoint,
    group_sizes,
    mismatch_message,
)

__all__ = ["EVAL_KEYS", "TRAINING_ONLY", "RandomActions", "bootstrap_ci", "eval_overrides",
           "evaluate"]


class RandomActions:
    """Uniform random actions for every group (within action masks): random play.

    Acts like a learner in :func:`marl.play.play_episodes`: no recurrent state, actions on
    the env's device, drawn from torch's RNG, which ``play_episodes`` seeds.
    """

    samples_actions = True

    def __init__(self, env: BatchedEnv) -> None:
        self.env = env
        self.device = env.device

    def new_memory(self, num_envs: int) -> AgentMemory:
        """An empty memory: random play keeps no state."""
        return AgentMemory({}, num_envs, self.device)

    def eval_actions(self, current: BatchedReset, sample: bool,
                     memory: AgentMemory) -> dict[str, torch.Tensor]:
        """``[E, A]`` int64 (Discrete) or ``[E, A, D]`` float (Box) per group; ``sample``
        and ``memory`` change nothing."""
        actions = random_actions(self.env.groups, current.groups)
        return {name: action.to(self.env.device) for name, action in actions.items()}


def eval_overrides(items: Iterable[str]) -> dict[str, str]:
    """``--override KEY=VALUE`` strings as a mapping, each key checked by
    :func:`marl.transfer.check_eval_key`."""
    overrides: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--override: expected KEY=VALUE, got {item!r}; e.g. "
                              "--override env.kwargs.N=5")
        key, value = item.split("=", 1)
        check_eval_key(key.strip())
        overrides[key.strip()] = value
    return overrides


def _check_options(episodes: int, seed: int, device: str | None) -> None:
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"episodes: expected an integer >= 1, got {episodes!r}; "
                          "e.g. --episodes 20")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed: expected an integer in [0, {2**32 - 1}], got {seed!r}; "
                          "e.g. --seed 12345")
    if device is not None and device not in CHOICES["device"]:
        raise ConfigError(f"device: expected one of {', '.join(CHOICES['device'])}, got "
                          f"{device!r}; e.g. --device cpu")


def evaluate(run_dir: str | Path, episodes: int = 20, greedy: bool = False,
             seed: int = 12345, device: str | None = None,
             overrides: Mapping[str, Any] | None = None,
             random_play: bool = False) -> dict[str, Any]:
    """Run the latest checkpoint of ``run_dir`` for ``episodes`` episodes.

    Observation statistics are frozen; a PPO policy samples its actions unless
    ``greedy``; off-policy learners always act greedily (Q methods) or take the
    actor's action without noise (MADDPG, MATD3). The episodes are spread over
    ``min(episodes, env.num_envs)`` env copies, each counting a number of episodes fixed
    in advance (see :func:`marl.play.play_episodes`).

    Args:
        overrides: env keys (:data:`EVAL_KEYS`) set on top of the run's config, e.g.
            ``{"env.kwargs.N": 5}``; recorded in the result.
        random_play: play uniform random actions in the run's (overridden) env instead
            of the checkpoint (which need not exist).
    """
    _check_options(episodes, seed, device)
    overrides = dict(overrides or {})
    for key in overrides:
        check_eval_key(key)
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no config.yaml in it "
                                "(pass the folder `marl train` printed as its run directory)")
    trained: Config = load(config_path)
    config = apply(trained, overrides)
    num_envs = max(1, min(episodes, config.env.num_envs))
    config = apply(config, {"env.num_envs": num_envs, "env.vector": "sync",
                            "env.num_workers": None, "seed": seed})
    torch_device = resolve_device(device or config.device)
    env = build_env(config, torch_device)
    try:
        actor: Learner | RandomActions = RandomActions(env)
        path: Path | None = None
        env_steps: int | None = None
        skipped: list[str] = []
        if not random_play:
            path, env_steps, actor, skipped = _load_actor(run_dir, env, config, trained,
                                                          overrides, torch_device)
        result = play_episodes(actor, env, episodes, seed, sample=not greedy)
        sizes = group_sizes(env.groups)
    finally:
        env.close()
    returns = result.returns
    low, high = bootstrap_ci(returns)
    per_group = {name: float(np.mean(values)) for name, values in result.group_returns.items()}
    tree = to_dict(config)
    return {"run_dir": str(run_dir), "checkpoint": None if path is None else str(path),
            "env_steps": env_steps, "policy": "random" if random_play else "checkpoint",
            "overrides": {key: tree_get(tree, key) for key in overrides},
            "num_agents": {name: agents for name, (agents, _) in sizes.items()},
            "episodes": len(returns), "greedy": greedy or not actor.samples_actions,
            "episode_return_mean": float(np.mean(returns)), "ci95": [low, high],
            "episode_return_std": float(np.std(returns)), "per_group": per_group,
            "not_loaded": skipped}


def _load_actor(run_dir: Path, env: BatchedEnv, config: Config, trained: Config,
                overrides: Mapping[str, Any], device: torch.device
                ) -> tuple[Path, int, Learner, list[str]]:
    """The learner with the run's latest checkpoint loaded: ``(path, env_steps, learner,
    training-only tensors left out because the overridden env changed their shape)``."""
    path = checkpoint.latest(run_dir / "checkpoints")
    algo = make_learner(env, config, device)
    state = checkpoint.load(path, map_location=device)
    if not overrides:  # the env the run trained in: everything must fit
        load_modules(algo, state, path)
        return path, int(state["env_steps"]), algo, []
    before = _trained_groups(trained)
    check_layouts(config, before, env.groups)
    fitted, skipped, mismatches = fit_checkpoint(algo.modules(), state["modules"])
    if mismatches:
        message = mismatch_message(path, mismatches, config, before, env.groups, overrides)
        if message is None:  # the overrides changed no group: a checkpoint of another run
            load_modules(algo, state, path)  # raises, naming the module that does not fit
        raise checkpoint.CheckpointError(message or f"checkpoint {path} does not fit this run")
    load_modules(algo, {"modules": fitted}, path)
    return path, int(state["env_steps"]), algo, skipped


def _trained_groups(trained: Config) -> dict[str, GroupSpec]:
    """The group specs of the env the run trained in (one copy, on the CPU)."""
    env = build_env(apply(trained, {"env.num_envs": 1, "env.vector": "sync",
                                    "env.num_workers": None}), torch.device("cpu"))
    try:
        return dict(env.groups)
    finally:
        env.close()
