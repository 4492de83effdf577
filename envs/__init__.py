"""marl_envs: PettingZoo tasks as batched, grouped torch tensors.

Quick start::

    import marl_envs

    env = marl_envs.make("mpe2/simple_spread_v3", num_envs=8)
    first = env.reset(seed=0)           # first.groups["agent"].obs: [8, 3, 18]
    step = env.step({"agent": actions}) # actions: [8, 3] int64

Batched torch ports of MPE tasks (:mod:`marl_envs.torch_mpe`) run thousands of copies
in one set of tensors: ``make("torch/simple_spread_v3", num_envs=4096, device="cuda")``.

See :mod:`marl_envs.core` for the protocol and tensor shapes, :mod:`marl_envs.registry`
for task ids.
"""

from marl_envs.batched_wrappers import (
    AgentCentric,
    BatchedWrapper,
    FrameStack,
    ObservationWrapper,
    PixelNorm,
    wrap,
)
from marl_envs.core import (
    BatchedEnv,
    BatchedReset,
    BatchedStep,
    GroupObs,
    GroupSpec,
    GroupStep,
)
from marl_envs.errors import (
    ActionError,
    GroupingError,
    MissingDependencyError,
    NotAParallelEnvError,
    NotParallelizableError,
    TaskBuildError,
    TaskKwargsError,
    TaskOptionError,
    UnknownTaskError,
    UnsupportedSpaceError,
    WorkerError,
)
from marl_envs.families import FAMILIES
from marl_envs.frames import FrameSpec
from marl_envs.layout import default_groups
from marl_envs.registry import (
    TaskFactory,
    list_families,
    list_tasks,
    make,
    make_parallel_env,
)
from marl_envs.sampling import random_actions
from marl_envs.subproc import SubprocVectorEnv
from marl_envs.vector import SyncVectorEnv
from marl_envs.wrappers import ActionRepeat, TimeLimit

__all__ = [
    "FAMILIES",
    "ActionError",
    "ActionRepeat",
    "AgentCentric",
    "BatchedEnv",
    "BatchedReset",
    "BatchedStep",
    "BatchedWrapper",
    "FrameSpec",
    "FrameStack",
    "GroupObs",
    "GroupSpec",
    "GroupStep",
    "GroupingError",
    "MissingDependencyError",
    "NotAParallelEnvError",
    "NotParallelizableError",
    "ObservationWrapper",
    "PixelNorm",
    "SubprocVectorEnv",
    "SyncVectorEnv",
    "TaskBuildError",
    "TaskFactory",
    "TaskKwargsError",
    "TaskOptionError",
    "TimeLimit",
    "UnknownTaskError",
    "UnsupportedSpaceError",
    "WorkerError",
    "default_groups",
    "list_families",
    "list_tasks",
    "make",
    "make_parallel_env",
    "random_actions",
    "wrap",
]
