"""A checkpoint in another env than the one it trained in: which keys may change, what
must fit, and why a policy does not.

``marl eval RUN --override env.kwargs.N=5`` (:func:`marl.evaluate.evaluate`) plays a
policy with another number of agents or entities. The policy fits when no parameter
shape depends on those numbers: shared networks (``groups.sharing=shared``) without the
one-hot agent ID (``groups.agent_id=false``), an entity encoder over a layout that follows
the observation's size (``groups.encoder=entity groups.entity_layout=mpe_spread``) and no
per-feature observation statistics (``algo.obs_norm=false``). Parts only training reads
(:data:`TRAINING_ONLY`) may change shape: they are left out, never read while acting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from marl_envs.core import GroupSpec
from torch import nn

from marl.config import Config, ConfigError, flat_keys
from marl.group_nets import resolved_encoders

EVAL_KEYS = ("env.kwargs", "env.max_episode_steps")
"""What ``marl eval --override`` may set (``env.kwargs.KEY`` sets one entry): the env the
checkpoint plays in. Network, normaliser and algorithm keys are the run's."""

TRAINING_ONLY = ("reward_norm", "state_norm", "groups.*.critic", "groups.*.value_norm",
                 "target_q", "mixer", "target_mixer", "critics", "target_critics",
                 "target_actor")
"""Checkpoint tensors that acting never reads, by dotted prefix (``*`` is one name):
PPO's critics, value and reward normalisers and MAPPO's state statistics; the off-policy
learners' target networks, QMIX's mixers, MADDPG/MATD3's critics and their state
statistics. ``tests/test_evaluate.py`` checks every registered learner against it."""

_EVAL_HELP = ("marl eval --override takes env.kwargs.KEY=VALUE and env.max_episode_steps=N; "
              "--seed, --device and --episodes are options")


def check_eval_key(key: str) -> None:
    """Refuse a key ``marl eval --override`` does not take, in one line saying why."""
    if key in EVAL_KEYS or key.startswith("env.kwargs."):
        return
    section = key.split(".", 1)[0]
    if section in ("groups", "algo"):
        raise ConfigError(
            f"--override {key}: the networks and normalisers come from the checkpoint, so "
            f"groups.* and algo.* keys stay as the run trained them (train a run with {key} "
            f"instead); {_EVAL_HELP}")
    known = key in flat_keys() or any(name.startswith(f"{key}.") for name in flat_keys())
    what = "not an evaluation key" if known else "unknown config key"
    raise ConfigError(f"--override {key}: {what}; {_EVAL_HELP}")


def training_only(name: str) -> bool:
    """Whether the checkpoint tensor ``name`` (``module.key``) matches :data:`TRAINING_ONLY`."""
    parts = name.split(".")
    for pattern in TRAINING_ONLY:
        head = pattern.split(".")
        prefix = parts[:len(head)]
        if len(parts) > len(head) and all(p in ("*", part) for p, part in zip(head, prefix,
                                                                              strict=True)):
            return True
    return False


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """A policy tensor that does not fit: its shape in the checkpoint and in the networks
    built for the new env (``None`` where it is missing)."""

    name: str
    saved: tuple[int, ...] | None
    built: tuple[int, ...] | None

    def text(self) -> str:
        if self.saved is None:
            return f"{self.name} (not in the checkpoint)"
        if self.built is None:
            return f"{self.name} (only in the checkpoint)"
        return f"{self.name} {list(self.saved)} -> {list(self.built)}"


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def fit_checkpoint(modules: Mapping[str, nn.Module], saved: Mapping[str, Mapping[str, Any]]
                   ) -> tuple[dict[str, dict[str, Any]], list[str], list[Mismatch]]:
    """Match the saved state of every module against ``modules`` built for a new env.

    Returns:
        ``(fitted, skipped, mismatches)``: per module, the state to load (saved tensors
        where they fit; the built ones for training-only tensors that do not); the names
        of those training-only tensors; the policy tensors that do not fit. A module the
        checkpoint lacks is left out of ``fitted`` (loading it then names the module).
    """
    fitted: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    mismatches: list[Mismatch] = []
    for module_name, module in modules.items():
        if module_name not in saved:
            continue
        built, old = module.state_dict(), saved[module_name]
        state: dict[str, Any] = {}
        for key in list(built) + [key for key in old if key not in built]:
            name = f"{module_name}.{key}"
            saved_shape, built_shape = _shape(old.get(key)), _shape(built.get(key))
            if key in old and key in built and saved_shape == built_shape:
                state[key] = old[key]
            elif training_only(name):
                skipped.append(name)
                if key in built:
                    state[key] = built[key]
            else:
                mismatches.append(Mismatch(name, saved_shape, built_shape))
        fitted[module_name] = state
    return fitted, skipped, mismatches


def group_sizes(specs: Mapping[str, GroupSpec]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Per group, ``(num_agents, obs_shape)``."""
    return {name: (spec.num_agents, tuple(spec.obs_shape)) for name, spec in specs.items()}


def check_layouts(config: Config, before: Mapping[str, GroupSpec],
                  after: Mapping[str, GroupSpec]) -> None:
    """Refuse explicit entity slices over an observation whose size changed: they would
    read other features than in training without any shape changing."""
    layout = config.groups.entity_layout
    if not isinstance(layout, list):
        return
    encoders = resolved_encoders(after, config.groups, config.env.task)
    old, new = group_sizes(before), group_sizes(after)
    for name, (_, shape) in new.items():
        if name in old and old[name][1] != shape and encoders[name] == "entity":
            raise ConfigError(
                f"groups.entity_layout lists fixed slices of the observation group {name!r} "
                f"trained on, {list(old[name][1])}; at {list(shape)} they would read other "
                "features. Evaluate at another size a run trained with a layout that follows "
                "the size (groups.entity_layout=mpe_spread)")


def mismatch_message(path: Path, mismatches: list[Mismatch], config: Config,
                     before: Mapping[str, GroupSpec], after: Mapping[str, GroupSpec],
                     overrides: Mapping[str, Any]) -> str | None:
    """One line: the checkpoint, the overrides, how the groups changed, the keys that tie
    the policy to those sizes with their fix, and the tensors; ``None`` when the
    overrides changed no group (then the checkpoint is another run's)."""
    old, new = group_sizes(before), group_sizes(after)
    changes = []
    for name, (agents, shape) in new.items():
        was_agents, was_shape = old.get(name, (agents, shape))
        parts = ([f"{was_agents} -> {agents} agents"] if was_agents != agents else []) + (
            [f"observation {list(was_shape)} -> {list(shape)}"] if was_shape != shape else [])
        if parts:
            changes.append(f"group {name!r}: {', '.join(parts)}")
    if not changes:
        return None
    encoders = resolved_encoders(after, config.groups, config.env.task)
    causes = _causes(config, old, new, encoders) or [
        "the networks' input or output sizes depend on what changed"]
    given = " ".join(f"{key}={value}" for key, value in overrides.items())
    # The causes come first: a long line is cut at its end (marl.cli).
    listed = ", ".join(item.text() for item in mismatches[:2])
    more = f" and {len(mismatches) - 2} more" if len(mismatches) > 2 else ""
    return (f"checkpoint {path.name} does not fit {given} ({'; '.join(changes)}): "
            f"{'; '.join(causes)}. Policy tensors that changed: {listed}{more}")


def _causes(config: Config, old: Mapping[str, tuple[int, tuple[int, ...]]],
            new: Mapping[str, tuple[int, tuple[int, ...]]], encoders: Mapping[str, str]
            ) -> list[str]:
    """The config keys that make the policy's shapes follow the sizes that changed
    (``encoders``: each group's resolved observation encoder)."""
    groups = config.groups
    causes: dict[str, None] = {}  # ordered and without repeats
    for name, (agents, shape) in new.items():
        was_agents, was_shape = old.get(name, (agents, shape))
        sharing = groups.sharing_of(name)
        if was_agents != agents and sharing in ("independent", "selective"):
            key = f"groups.overrides.{name}" if name in groups.overrides else "groups.sharing"
            causes[f"{key}={sharing} keeps weights per agent (train with "
                   "groups.sharing=shared)"] = None
        if was_agents != agents and sharing == "shared" and groups.agent_id:
            causes["groups.agent_id=true adds a one-hot ID of size N (train with "
                   "groups.agent_id=false)"] = None
        if was_shape != shape and encoders.get(name) == "mlp":
            causes[f"groups.encoder={groups.encoder} gives {name!r} an MLP over the flat "
                   "observation (train with groups.encoder=entity and a "
                   "groups.entity_layout such as mpe_spread)"] = None
        if was_shape != shape and config.algo.obs_norm:
            causes["algo.obs_norm=true keeps per-feature statistics (train with "
                   "algo.obs_norm=false)"] = None
    return list(causes)
