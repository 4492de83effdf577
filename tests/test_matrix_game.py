"""VDN and QMIX on the climbing game, a one-step game additive factorisation cannot learn.

Payoff (rows: agent 0): ``[[11, -30, 0], [-30, 7, 6], [0, 0, 5]]``. The optimum (0, 0)
sits next to two -30 miscoordinations, so it is not monotonic in any per-agent utility:
neither VDN's sum nor QMIX's monotonic mixing can represent it, and under epsilon-greedy
exploration both settle on the safe joint action (2, 2) worth 5 (Rashid et al. 2020,
"Weighted QMIX", arXiv:2006.10800, discuss the same failure). What QMIX's state-free
mixing adds over VDN's sum shows in how closely its joint values fit the payoffs it sees
most: the greedy row and column.
"""

from pathlib import Path

import pytest
import torch
from marl_envs.tasks.one_step import PAYOFFS

from marl import checkpoint
from marl.algos.q_learning import QLearning
from marl.build import build_env, load_modules, make_learner
from marl.config import load
from marl.trainer import train

CPU = torch.device("cpu")
PAYOFF = torch.tensor(PAYOFFS["climbing"])


def _train(name: str, seed: int, run_dir: Path) -> QLearning:
    config = load(overrides={
        "algo.name": name, "env.task": "toy/matrix_game", "env.kwargs.payoff": "climbing",
        "env.num_envs": "16", "algo.num_steps": "1", "algo.warmup_steps": "320",
        "algo.batch_size": "64", "algo.eps_anneal_steps": "3000", "optim.lr": "3e-3",
        "optim.max_grad_norm": "10", "optim.anneal_lr": "false", "groups.activation": "relu",
        "train.total_env_steps": "4000", "train.log_every": "4000",
        "train.checkpoint_every": "4000", "seed": str(seed), "run.dir": str(run_dir),
        "run.tensorboard": "false", "train.progress": "false"})
    train(config)
    algo = make_learner(build_env(config, CPU), config, CPU)
    assert isinstance(algo, QLearning)
    path = checkpoint.latest(run_dir / "checkpoints")
    load_modules(algo, checkpoint.load(path), path)
    return algo


@torch.no_grad()
def _joint_values(algo: QLearning) -> torch.Tensor:
    """``[3, 3]`` the learned Q_tot of every joint action."""
    obs = algo.normalize_obs("agent", torch.ones(1, 2, 1))
    q = algo.q["agent"](obs)[0]  # [2 agents, 3 actions]
    pairs = torch.cartesian_prod(torch.arange(3), torch.arange(3))
    agent_q = torch.stack([q[0, pairs[:, 0]], q[1, pairs[:, 1]]], dim=-1)  # [9, 2]
    if algo.mixer is None:
        return agent_q.sum(-1).view(3, 3)
    state = algo.global_state(torch.ones(9, 1), {})
    return algo.mixer(agent_q, state).view(3, 3)


@pytest.mark.parametrize("name", ["vdn", "qmix"])
def test_vdn_and_qmix_both_settle_on_the_safe_joint_action(name: str, tmp_path: Path) -> None:
    values = _joint_values(_train(name, seed=1, run_dir=tmp_path / name))
    best = divmod(int(values.argmax()), 3)
    assert float(PAYOFF[best]) == 5.0, f"{name}: greedy joint action {best}, values {values}"
    # The optimum's learned value stays far below its payoff of 11: it is not representable.
    assert values[0, 0] < 5.0
