"""The one registry of algorithms: name -> learner, what it needs, and its help line.

Everything that depends on the algorithm's name reads this table: the config's choices
and ``--help`` text for ``algo.name`` (:mod:`marl.config_rules`, :mod:`marl.config`), the
env's ``include_state`` and the action-space check (:mod:`marl.build`), the learner
construction (:func:`marl.build.make_learner`). Adding an algorithm is one learner file
implementing :class:`marl.algos.base.Learner` plus one line here.

This module imports nothing of ``marl``: the config layer reads it, and the learners
import the config layer, so a table holding the learner classes themselves could not be
imported by the config without a cycle (config -> registry -> learner -> config). The
learner is therefore named by its import path, ``"module:Class"``, and resolved in one
place only, :func:`marl.build.learner_class`.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTION_KINDS = ("discrete", "continuous")
"""``discrete``: ``Discrete(n)`` action spaces; ``continuous``: 1-D ``Box`` spaces."""


@dataclass(frozen=True)
class AlgoSpec:
    """One algorithm.

    Attributes:
        learner: import path ``"package.module:Class"`` of the learner; the class is
            called as ``Class(env, config, device)``.
        global_state: whether its critic or mixer reads the global state
            (``env.state()``), so the env must provide it (``include_state``).
        actions: the action kinds (:data:`ACTION_KINDS`) every group must have.
        on_policy: whether it learns from rollouts (the ``algo.num_minibatches`` rules)
            rather than from a replay buffer (the ``algo.buffer_size`` rules).
        summary: one line for ``--help``.
        recurrent: whether it trains recurrent agents (``groups.rnn=gru``).
    """

    learner: str
    global_state: bool
    actions: tuple[str, ...]
    on_policy: bool
    summary: str
    recurrent: bool = True


_PPO = "marl.algos.ppo:PPO"
_Q = "marl.algos.q_learning:QLearning"
_DDPG = "marl.algos.ddpg:DDPG"
_ANY = ACTION_KINDS
_DISCRETE = ("discrete",)
_CONTINUOUS = ("continuous",)

ALGORITHMS: dict[str, AlgoSpec] = {
    "ippo": AlgoSpec(_PPO, False, _ANY, True, "PPO, critic on the agent's own observation"),
    "mappo": AlgoSpec(_PPO, True, _ANY, True, "PPO, critic on the global state"),
    "iql": AlgoSpec(_Q, False, _DISCRETE, False, "independent Q-learning (discrete actions)"),
    "vdn": AlgoSpec(_Q, False, _DISCRETE, False,
                    "Q-learning on the sum of the agents' Q values (discrete actions)"),
    "qmix": AlgoSpec(_Q, True, _DISCRETE, False,
                     "Q-learning through a monotonic mixer of the global state (discrete "
                     "actions)"),
    "maddpg": AlgoSpec(_DDPG, True, _CONTINUOUS, False,
                       "deterministic actors, centralised critics (continuous actions)",
                       recurrent=False),
    "matd3": AlgoSpec(_DDPG, True, _CONTINUOUS, False,
                      "MADDPG with twin critics, delayed actors and target smoothing "
                      "(continuous actions)", recurrent=False),
}
"""Every algorithm ``algo.name`` can name, in ``--help`` order."""


def algo_help() -> str:
    """The ``--help`` text of ``algo.name``: every algorithm with its summary."""
    return "; ".join(f"'{name}': {spec.summary}" for name, spec in ALGORITHMS.items())
