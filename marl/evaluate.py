"""Evaluate a trained run: mean per-agent episode return with a 95% confidence interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from marl_envs.core import BatchedReset

from marl import checkpoint
from marl.algos.ppo import PPO
from marl.config import CHOICES, Config, ConfigError, apply, load
from marl.groups import AgentGroup
from marl.logging import EpisodeTracker
from marl.trainer import build_env, load_modules, make_algorithm, resolve_device


def bootstrap_ci(values: list[float], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return (float(data.mean()), float(data.mean())) if data.size else (float("nan"),) * 2
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (resamples, data.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@torch.no_grad()
def evaluate(run_dir: str | Path, episodes: int = 20, greedy: bool = False,
             seed: int = 12345, device: str | None = None) -> dict[str, Any]:
    """Run the latest checkpoint of ``run_dir`` for ``episodes`` episodes.

    Observation statistics are frozen; a PPO policy samples its actions unless
    ``greedy``; off-policy learners always act greedily (Q methods) or take the
    actor's action without noise (MADDPG, MATD3). With several env copies the first
    ``episodes`` episodes to finish are counted, which favours short episodes on tasks
    whose length varies.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"episodes: expected an integer >= 1, got {episodes!r}; "
                          "e.g. --episodes 20")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed: expected an integer in [0, {2**32 - 1}], got {seed!r}; "
                          "e.g. --seed 12345")
    if device is not None and device not in CHOICES["device"]:
        raise ConfigError(f"device: expected one of {', '.join(CHOICES['device'])}, got "
                          f"{device!r}; e.g. --device cpu")
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no config.yaml in it "
                                "(pass the folder `marl train` printed as its run directory)")
    path = checkpoint.latest(run_dir / "checkpoints")
    config: Config = load(config_path)
    num_envs = max(1, min(episodes, config.env.num_envs))
    overrides: dict[str, Any] = {"env.num_envs": num_envs, "env.vector": "sync", "seed": seed}
    config = apply(config, overrides)
    torch_device = resolve_device(device or config.device)
    env = build_env(config, torch_device)
    try:
        algo = make_algorithm(env, config, torch_device)
        state = checkpoint.load(path, map_location=torch_device)
        load_modules(algo, state, path)
        tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, num_envs,
                                 torch_device, keep_episodes=True)
        current = env.reset(seed=seed)
        while len(tracker.episodes) < episodes:
            alive = {name: obs.alive.to(torch_device) for name, obs in current.groups.items()}
            if isinstance(algo, PPO):
                actions = _ppo_actions(algo, current, greedy)
            else:  # off-policy learners act greedily / deterministically here
                actions = algo.policy_actions(current, explore=False)[1]
            step = env.step(actions)
            tracker.record(step, alive)
            current = type(current)({n: s.next for n, s in step.groups.items()}, step.state)
    finally:
        env.close()
    counted = tracker.episodes[:episodes]
    returns = [e["episode_return"] for e in counted if "episode_return" in e]
    low, high = bootstrap_ci(returns)
    # A group's mean is over the episodes it took part in (its key is missing elsewhere).
    per_group = {name: float(np.mean(values)) for name in env.groups
                 if (values := [e[f"episode_return/{name}"] for e in counted
                                if f"episode_return/{name}" in e])}
    return {"run_dir": str(run_dir), "checkpoint": str(path), "env_steps": int(state["env_steps"]),
            "episodes": len(returns), "greedy": greedy or not isinstance(algo, PPO),
            "episode_return_mean": float(np.mean(returns)), "ci95": [low, high],
            "episode_return_std": float(np.std(returns)), "per_group": per_group}


def _ppo_actions(algo: PPO, current: BatchedReset, greedy: bool) -> dict[str, torch.Tensor]:
    actions = {}
    for name, group in algo.groups.items():
        assert isinstance(group, AgentGroup)
        obs = current.groups[name]
        flat = group.prepare_obs(obs.obs.to(algo.device))
        mask = None if obs.action_mask is None else obs.action_mask.to(algo.device)
        action = group.act(flat, mask, deterministic=greedy).action
        actions[name] = group.env_action(action).to(algo.env.device)
    return actions
