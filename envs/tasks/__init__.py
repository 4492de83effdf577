"""Small PettingZoo ParallelEnv tasks of our own, fast and seeded, for testing learners.

Registered in :data:`marl_envs.registry.TOY_TASKS` as ``toy/<name>``.
"""

from marl_envs.tasks.coop_match import CoopMatchEnv
from marl_envs.tasks.endless import EndlessEnv
from marl_envs.tasks.grid_nav import GridNavEnv
from marl_envs.tasks.hidden_roles import HiddenRolesEnv
from marl_envs.tasks.leave_early import LeaveEarlyEnv
from marl_envs.tasks.memory import MemoryEnv
from marl_envs.tasks.one_step import MatrixGameEnv, ReachEnv

__all__ = [
    "CoopMatchEnv", "EndlessEnv", "GridNavEnv", "HiddenRolesEnv", "LeaveEarlyEnv", "MatrixGameEnv",
    "MemoryEnv", "ReachEnv",
]
