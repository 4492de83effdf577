"""Every learner's group networks, built from ``config.groups`` in one place.

:func:`build_group_net` is the one call each learner makes per network: observation
readers (policies, IPPO critics, Q networks, deterministic actors) get the encoder the
observation's shape asks for (``groups.encoder``, ``groups.entity_layout``,
``groups.entity_pool``); networks on the global state or joint actions (MAPPO's state
critic, MADDPG's critics) stay MLPs. Both get the trunk options ``groups.layer_norm`` and
``groups.residual``. An encoder that does not fit a group's observation is a
:class:`~marl.config.ConfigError` naming the group, the shape and what each encoder takes.

:func:`resolved_encoders` gives the encoder ``auto`` picks for every group: a pure
function of the observation shapes and the config, so reloading a run's ``config.yaml``
rebuilds the same networks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marl_envs.core import BatchedEnv, GroupSpec
from torch import nn

from marl.config import Config, ConfigError, GroupsConfig
from marl.config_rules import ENTITY_LAYOUT_PRESETS
from marl.nets import (
    EntityLayout,
    EntitySlice,
    make_composed_group_net,
    mpe_listener_layout,
    mpe_reference_layout,
    mpe_spread_layout,
    resolve_encoder,
)


def _spread(size: int) -> EntityLayout:
    # simple_spread_v3 with N agents observes 2 + 2 + 2N + 2(N - 1) + 2(N - 1) = 6N.
    if size % 6 or size == 0:
        raise ValueError(
            f"entity layout 'mpe_spread' needs mpe2 simple_spread_v3 observations of 6N "
            f"features (N agents), but this one has {size}; give the slices as a list.")
    return mpe_spread_layout(size // 6)


def _fixed_size(name: str, task: str, layouts: Mapping[int, EntityLayout | None],
                size: int) -> EntityLayout | None:
    """The layout of a preset whose task's observations have fixed sizes, one per role."""
    if size in layouts:
        return layouts[size]
    sizes = " or ".join(str(known) for known in layouts)
    raise ValueError(
        f"entity layout {name!r} needs mpe2 {task} observations of {sizes} features, but "
        f"this one has {size}; give the slices as a list.")


def _reference(size: int) -> EntityLayout | None:
    layout = mpe_reference_layout()
    return _fixed_size("mpe_reference", "simple_reference_v3", {layout.stop: layout}, size)


def _speaker_listener(size: int) -> EntityLayout | None:
    # The speaker's observation is one goal colour (3): no entities to attend over.
    layout = mpe_listener_layout()
    return _fixed_size("mpe_speaker_listener", "simple_speaker_listener_v4 (listener, speaker)",
                       {layout.stop: layout, 3: None}, size)


ENTITY_LAYOUT_BUILDERS: dict[str, Callable[[int], EntityLayout | None]] = {
    "mpe_spread": _spread,
    "mpe_reference": _reference,
    "mpe_speaker_listener": _speaker_listener,
}
"""Each preset of ``groups.entity_layout``: a group's observation size -> its layout
(``None``: the group has none, its encoder is chosen as without a layout); ``ValueError``
when the size is not the task's."""

TASK_ENTITY_LAYOUTS: dict[str, str] = {
    "mpe2/simple_spread_v3": "mpe_spread",
    "torch/simple_spread_v3": "mpe_spread",
}
"""``groups.entity_layout=auto``: the preset of the tasks where the entity encoder was
measured to learn better than the MLP (README, "Sample efficiency"); every other task gets
no layout, so ``groups.encoder=auto`` gives it the MLP. Not listed although they have
presets: ``simple_reference_v3`` (level with the MLP at 300k env steps) and
``simple_speaker_listener_v4`` (a little worse), both at 2-3x its wall-clock."""


def build_group_net(
    groups: GroupsConfig,
    sharing: str,
    input_shape: Sequence[int],
    out_features: int,
    num_agents: int,
    out_gain: float,
    group: str,
    reads_obs: bool = True,
    task: str | None = None,
    appended: int = 0,
) -> nn.Module:
    """The network of group ``group``: ``[*B, A, prod(input_shape)] -> [*B, A, out_features]``.

    With ``groups.rnn=gru``, observation readers are recurrent
    (:class:`~marl.nets.recurrent.RecurrentGroupNet`: sequences and a hidden state).

    Args:
        groups: the ``groups`` section of the config.
        sharing: ``"shared"``, ``"independent"`` or ``"selective"`` (after
            ``groups.overrides``; selective networks start as one network, see
            :mod:`marl.selective.runtime`).
        input_shape: one agent's observation shape (``reads_obs``), else ``(C,)``.
        out_features: per-agent outputs.
        num_agents: agents in the group.
        out_gain: orthogonal gain of the head (0.01 policies, 1.0 values).
        group: the group's name, for messages.
        reads_obs: the input is the agent's observation (gets an encoder, and the GRU
            of ``groups.rnn``); ``False`` for state or joint-action inputs (always a
            feed-forward MLP).
        task: ``env.task``, for ``groups.entity_layout=auto``.
        appended: features that follow the observation in the input (MAPPO's
            agent-specific critic: the global state). The network reads
            ``[observation, appended]`` through the observation's encoder, the appended
            features as one more entity row (kind ``state``) when the observation has an
            entity layout, and is feed-forward. Needs a flat observation.

    Raises:
        ConfigError: when the encoder or the entity layout does not fit the observation.
    """
    shape = tuple(int(size) for size in input_shape) if reads_obs else (
        math.prod(input_shape),)
    encoder = groups.encoder if reads_obs else "mlp"
    try:
        layout = (entity_layout(groups.entity_layout, shape, task) if reads_obs
                  else None)
        if appended:
            if len(shape) != 1:
                raise ValueError(
                    f"algo.critic_input=obs_state appends the global state to flat "
                    f"observations, but this group observes shape {list(shape)}; use "
                    "algo.critic_input=state")
            if layout is not None:
                layout.check(shape[0])
                layout = EntityLayout((*layout.slices, EntitySlice(
                    "state", shape[0], 1, appended, always_present=True)))
            shape = (shape[0] + appended,)
        return make_composed_group_net(
            sharing, shape, out_features, num_agents, encoder=encoder, hidden=groups.hidden,
            activation=groups.activation, out_gain=out_gain, agent_id=groups.agent_id,
            backend=groups.backend, layer_norm=groups.layer_norm, residual=groups.residual,
            entity_layout=layout, entity_pool=groups.entity_pool,
            rnn=groups.rnn if reads_obs and not appended else "none",
            rnn_hidden=groups.rnn_hidden, group=group,
        )
    except ValueError as error:
        raise ConfigError(f"groups.encoder={groups.encoder}, group {group!r}: {error}") from None


def entity_layout(value: list[dict[str, Any]] | str | None, obs_shape: Sequence[int],
                  task: str | None = None) -> EntityLayout | None:
    """The :class:`EntityLayout` that ``groups.entity_layout`` declares for ``obs_shape``.

    A layout reads flat observations only; for a group whose observation is not flat it
    is ``None`` (images and entity rows have their own encoders). ``auto`` takes the
    preset :data:`TASK_ENTITY_LAYOUTS` names for ``task``, else ``None``.

    Raises:
        ValueError: for a preset that does not fit the observation size, or bad slices.
    """
    if value == "auto":
        value = TASK_ENTITY_LAYOUTS.get(task or "")
    if value is None or len(obs_shape) != 1:
        return None
    size = int(obs_shape[0])
    if isinstance(value, str):
        if value not in ENTITY_LAYOUT_BUILDERS:
            raise ValueError(f"unknown entity layout preset {value!r}; "
                             f"available: {', '.join(ENTITY_LAYOUT_PRESETS)}")
        return ENTITY_LAYOUT_BUILDERS[value](size)
    return EntityLayout(tuple(EntitySlice(**item) for item in value))


def resolved_encoders(specs: Mapping[str, GroupSpec], groups: GroupsConfig,
                      task: str | None = None) -> dict[str, str]:
    """The encoder each group's observation networks use (what ``auto`` chose).

    Raises:
        ConfigError: as :func:`build_group_net`.
    """
    chosen = {}
    for name, spec in specs.items():
        try:
            layout = entity_layout(groups.entity_layout, spec.obs_shape, task)
            chosen[name] = resolve_encoder(spec.obs_shape, groups.encoder, layout)[0]
        except ValueError as error:
            raise ConfigError(
                f"groups.encoder={groups.encoder}, group {name!r}: {error}") from None
    return chosen


def encoder_note(env: BatchedEnv, config: Config) -> str:
    """One line for the run's ``config.yaml``: the encoder each group's observation
    networks use, e.g. ``groups.encoder=auto chose: archer=entity, knight=entity``."""
    groups, task = config.groups, config.env.task
    chosen = resolved_encoders(env.groups, groups, task)
    verb = "chose" if groups.encoder == "auto" else "gives"
    preset = (TASK_ENTITY_LAYOUTS.get(task) if groups.entity_layout == "auto"
              else groups.entity_layout if isinstance(groups.entity_layout, str) else None)
    pairs = ", ".join(
        f"{group}={encoder}" + (f" ({preset} layout)" if encoder == "entity" and preset
                                else "")
        for group, encoder in chosen.items())
    return f"groups.encoder={config.groups.encoder} {verb}: {pairs}"
