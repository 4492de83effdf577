"""MPE tasks as batched PyTorch envs: thousands of copies in one set of tensors.

Ports of ``mpe2``'s ``simple_spread_v3`` (any number of agents),
``simple_speaker_listener_v4`` and ``simple_reference_v3``, with the same observations,
actions (discrete and continuous), dynamics, rewards and episode length, on CPU or CUDA::

    import marl_envs

    env = marl_envs.make("torch/simple_spread_v3", num_envs=4096, kwargs={"N": 3},
                         device="cuda")
    first = env.reset(seed=0)           # first.groups["agent"].obs: [4096, 3, 18]

:mod:`~marl_envs.torch_mpe.world` holds the physics, :mod:`~marl_envs.torch_mpe.scenarios`
the tasks, :mod:`~marl_envs.torch_mpe.env` the batched env and
:mod:`~marl_envs.torch_mpe.parallel` a PettingZoo view of one copy.
"""

from marl_envs.torch_mpe.env import TorchMPEEnv, Transition
from marl_envs.torch_mpe.parallel import TorchMPEParallelEnv
from marl_envs.torch_mpe.scenarios import (
    SimpleReference,
    SimpleSpeakerListener,
    SimpleSpread,
)
from marl_envs.torch_mpe.tasks import (
    TASKS,
    parallel_view,
    simple_reference_v3,
    simple_speaker_listener_v4,
    simple_spread_v3,
)
from marl_envs.torch_mpe.world import Physics, WorldState

__all__ = [
    "TASKS",
    "Physics",
    "SimpleReference",
    "SimpleSpeakerListener",
    "SimpleSpread",
    "TorchMPEEnv",
    "TorchMPEParallelEnv",
    "Transition",
    "WorldState",
    "parallel_view",
    "simple_reference_v3",
    "simple_speaker_listener_v4",
    "simple_spread_v3",
]
