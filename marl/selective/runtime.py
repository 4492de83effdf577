"""Selective sharing in a training run: warm-up, clustering, and the assignment kept.

``groups.sharing=selective`` (or a group's entry in ``groups.overrides``) builds the
group's networks in the selective form with one network (:mod:`marl.selective.share`),
which with its one-hot agent IDs is a shared network. For the first
``groups.selective_warmup`` env steps the group trains that way while
:class:`TransitionRecorder`, a thin layer over the training env, keeps its transitions.
Then :class:`SelectiveSharing` fits the identity encoder on them
(:func:`~marl.selective.identity.fit_identity_model`), clusters the embeddings
(:func:`~marl.selective.cluster.choose_k` with ``groups.clusters``), writes
``sharing.json`` and ``sharing_<group>.png`` into the run directory, and gives every
network of the group (policies, critics, Q networks, targets) the K networks, each a copy
of the warm-up network, with the optimiser's moments carried along.

The assignment then never changes. Checkpoints hold it (each stack's index buffer), so
resuming and ``marl eval`` rebuild the K networks from the checkpoint before loading
(:func:`adopt_checkpoint_index`), and a run whose ``sharing.json`` exists never clusters
again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import gymnasium
import torch
from marl_envs.core import BatchedEnv, BatchedReset, BatchedStep
from torch import nn

from marl.config import Config, ConfigError
from marl.groups import discrete_start
from marl.selective.cluster import choose_k
from marl.selective.identity import Transitions, fit_identity_model
from marl.selective.share import Swap, group_index, iter_stacks, set_index
from marl.selective.sharing import GroupSharing, plot_embeddings, read_sharing, write_sharing

SHARING_FILE = "sharing.json"


def selective_groups(config: Config, group_names: Sequence[str]) -> list[str]:
    """The groups whose sharing mode (after ``groups.overrides``) is ``selective``."""
    return [name for name in group_names if config.groups.sharing_of(name) == "selective"]


def check_clusters(config: Config, env: BatchedEnv) -> None:
    """``groups.clusters`` fits every selective group: ``1 <= K <= agents``.

    Raises:
        ConfigError: naming the group and its size.
    """
    clusters = config.groups.clusters
    if clusters == "auto":
        return
    for name in selective_groups(config, list(env.groups)):
        agents = env.groups[name].num_agents
        if not isinstance(clusters, int) or not 1 <= clusters <= agents:
            raise ConfigError(
                f"groups.clusters={clusters!r}: group {name!r} has {agents} agents, so K must "
                f"be in 1 .. {agents} (1 = one shared network, {agents} = one per agent) or "
                "'auto'; e.g. groups.clusters=auto")


class TransitionRecorder:
    """The training env, recording the transitions of some groups while ``recording``.

    Every attribute but :meth:`reset` and :meth:`step` is the wrapped env's. Rows stay on
    the env's device while recording (no host copy per step) and come to the CPU once, in
    :meth:`transitions`: ``obs`` and ``next_obs`` flattened to ``[E, A, F]``, the action
    as the policy's index (``Discrete``) or the Box action, the reward and ``alive``.
    """

    def __init__(self, env: BatchedEnv, groups: Sequence[str]) -> None:
        self.env = env
        self.record_groups = list(groups)
        self.recording = bool(groups)
        self.rows: dict[str, dict[str, list[torch.Tensor]]] = {
            name: {key: [] for key in Transitions._fields} for name in groups}
        self._current: BatchedReset | None = None
        self._starts = {name: discrete_start(env.groups[name].action_space) for name in groups}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, seed: int | None = None) -> BatchedReset:
        result = self.env.reset(seed=seed)
        self._current = result
        return result

    def step(self, actions: dict[str, torch.Tensor]) -> BatchedStep:
        result = self.env.step(actions)
        if self.recording and self._current is not None:
            for name in self.record_groups:
                before, after = self._current.groups[name], result.groups[name]
                action = actions[name] - self._starts[name] if self._starts[name] else (
                    actions[name])
                values = (before.obs, action, after.final_obs, after.reward, before.alive)
                for key, value in zip(Transitions._fields, values, strict=True):
                    if key in ("obs", "next_obs"):
                        value = value.reshape(*value.shape[:2], -1)
                    # A copy: an env may reuse its output buffers in the next step.
                    self.rows[name][key].append(value.detach().clone())
        self._current = BatchedReset(
            {name: group.next for name, group in result.groups.items()}, result.state)
        return result

    def transitions(self, group: str) -> Transitions:
        """Everything recorded for ``group`` (``N`` = env steps recorded)."""
        columns = self.rows[group]
        return Transitions(*(torch.cat(columns[key]).cpu() for key in Transitions._fields))

    def recorded(self, group: str) -> int:
        return sum(int(part.shape[0]) for part in self.rows[group]["obs"])

    def stop(self) -> None:
        """Stop recording and free what was kept."""
        self.recording = False
        for columns in self.rows.values():
            for values in columns.values():
                values.clear()


class SelectiveSharing:
    """Clusters each selective group once, after its warm-up, and keeps the assignment.

    Args:
        config: the run's config.
        recorder: the training env as the learner sees it.
        run_dir: the run directory (``sharing.json`` lives there).
        stream: where the assignment is printed.
    """

    def __init__(self, config: Config, recorder: TransitionRecorder, run_dir: Path,
                 stream: TextIO) -> None:
        self.config = config
        self.recorder = recorder
        self.path = Path(run_dir) / SHARING_FILE
        self.stream = stream
        self.groups = list(recorder.record_groups)
        self.found: dict[str, GroupSharing] = read_sharing(self.path) if self.path.exists() \
            else {}
        if all(name in self.found for name in self.groups):
            recorder.stop()

    def start(self, modules: Mapping[str, nn.Module], optimizer: Any) -> None:
        """After building (and restoring) the learner: give every group already clustered
        its recorded assignment (a checkpoint written between clustering and the next
        checkpoint still holds the warm-up network), and say what it is."""
        for name, sharing in self.found.items():
            if name not in self.groups:
                continue
            index = torch.tensor(sharing.index)
            current = _index_of(modules, name)
            if current is not None and not torch.equal(current, index):
                if int(current.max()) != 0:
                    raise ConfigError(
                        f"{self.path} gives group {name!r} networks {index.tolist()}, but the "
                        f"checkpoint holds {current.tolist()}; the run directory mixes two runs")
                optimizer.swap_parameters(set_index(list(modules.values()), name, index))
            self.stream.write(_assignment_line(name, sharing, "kept from"))

    def after_iteration(self, env_steps: int, modules: Mapping[str, nn.Module],
                        optimizer: Any, writer: Any) -> None:
        """Cluster every group whose warm-up is over (once per run)."""
        pending = [name for name in self.groups if name not in self.found]
        if not pending or env_steps < self.config.groups.selective_warmup:
            return
        if any(self.recorder.recorded(name) == 0 for name in pending):
            return  # resumed at the end of the warm-up: record one more iteration first
        for name in pending:
            sharing = self._cluster(name)
            self.found[name] = sharing
            optimizer.swap_parameters(set_index(list(modules.values()), name,
                                                torch.tensor(sharing.index)))
            self.stream.write(_assignment_line(name, sharing, "written to", env_steps))
            if writer is not None:
                writer.text(f"sharing/{name}", json.dumps(sharing.mapping), env_steps,
                            {f"sharing/{name}/num_networks": float(sharing.num_networks)})
        write_sharing(self.path, {name: self.found[name] for name in self.groups
                                  if name in self.found})
        for name in pending:
            suffix = f"_{name}" if len(self.groups) > 1 or name != "agent" else ""
            plot_embeddings(self.path.with_name(f"sharing{suffix}.png"), self.found[name],
                            f"group {name}: K = {self.found[name].num_networks}")
        self.recorder.stop()

    def _cluster(self, name: str) -> GroupSharing:
        spec = self.recorder.env.groups[name]
        transitions = self.recorder.transitions(name)
        space = spec.action_space
        num_actions = int(space.n) if isinstance(space, gymnasium.spaces.Discrete) else None
        fit = fit_identity_model(transitions, num_actions, seed=self.config.seed)
        clustering = choose_k(fit.mean, self.config.groups.clusters, fit.posterior_std,
                              seed=self.config.seed, gain=fit.gain)
        return GroupSharing.from_clustering(tuple(spec.agents), fit.mean, clustering, fit.gain)


def _index_of(modules: Mapping[str, nn.Module], group: str) -> torch.Tensor | None:
    for module in modules.values():
        index = group_index(module, group)
        if index is not None:
            return index
    return None


def _assignment_line(name: str, sharing: GroupSharing, verb: str,
                     env_steps: int | None = None) -> str:
    networks: dict[int, list[str]] = {}
    for agent, network in sharing.mapping.items():
        networks.setdefault(network, []).append(agent)
    parts = "; ".join(f"{network}: {', '.join(agents)}" for network, agents in
                      sorted(networks.items()))
    score = "" if math.isnan(sharing.score) else f", Davies-Bouldin {sharing.score:.3f}"
    if not math.isnan(sharing.gain):
        score += f", identity gain {sharing.gain:.3f}"
    when = "" if env_steps is None else f" after {env_steps:,} env steps"
    return (f"selective sharing, group {name!r}{when}: K = {sharing.num_networks}"
            f"{score} ({verb} {SHARING_FILE}) networks {parts}\n")


def adopt_checkpoint_index(module: nn.Module, state: Mapping[str, Any]) -> list[Swap]:
    """Give ``module``'s selective stacks the assignment saved in ``state`` (its state
    dict), so that ``module.load_state_dict(state)`` fits; return the swapped parameters
    (for the optimiser). Stacks the state does not name are left alone."""
    wanted: dict[str, torch.Tensor] = {}
    for stack in iter_stacks(module):
        saved = state.get(stack.index_key)
        if isinstance(saved, torch.Tensor) and stack.gather.group not in wanted:
            wanted[stack.gather.group] = saved.detach().cpu().to(torch.int64)
    swaps: list[Swap] = []
    for group, index in wanted.items():
        current = group_index(module, group)
        if current is None or torch.equal(current, index) or index.numel() != current.numel():
            continue  # a size mismatch is load_state_dict's to report
        try:
            num_networks = int(index.max()) + 1
            swaps += set_index([module], group, index,
                               sources=torch.zeros(num_networks, dtype=torch.int64))
        except ValueError:
            continue  # a malformed index: load_state_dict reports the mismatch
    return swaps
