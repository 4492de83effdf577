"""PPO pieces: distributions, masking, and truncation bootstrapping on an endless task."""

import math

import gymnasium
import pytest
import torch
from marl_envs import GroupSpec, make

from marl.algos.ppo import PPO, ppo_loss
from marl.algos.rollout import Minibatch, take
from marl.build import build_env
from marl.config import load
from marl.groups import AgentGroup
from marl.logging import EpisodeTracker
from marl.returns import gae

GAMMA = 0.9


def _spec(action_space: gymnasium.spaces.Space, num_agents: int = 3,
          features: int = 4) -> GroupSpec:
    return GroupSpec("agent", tuple(f"agent_{i}" for i in range(num_agents)), (features,),
                     torch.ones(num_agents, features, dtype=torch.bool), action_space)


def _value_after_training(task: str) -> float:
    """Train only the critic matters here: rewards are 1 whatever the agents do."""
    config = load(overrides={
        "env.task": task, "env.kwargs.max_steps": "20", "env.num_envs": "4",
        "algo.gamma": str(GAMMA), "algo.reward_norm": "none", "algo.obs_norm": "false",
        "algo.num_steps": "40", "algo.update_epochs": "8", "optim.lr": "0.01",
        "optim.anneal_lr": "false", "optim.max_grad_norm": "none",
    })
    torch.manual_seed(0)
    env = make(task, num_envs=4, kwargs={"max_steps": 20})
    algo = PPO(env, config, torch.device("cpu"))
    tracker = EpisodeTracker({"agent": 2}, 4, torch.device("cpu"))
    for _ in range(40):
        algo.collect(tracker)
        algo.update(0.0)
    env.close()
    _, _, values = algo.advantages("agent")
    return float(values.mean())


def test_time_limit_bootstraps_to_one_over_one_minus_gamma() -> None:
    """Constant observation, reward 1 forever, cut every 20 steps.

    Bootstrapping at truncations, the value is 1/(1-gamma) = 10. Storing the time limit
    as a termination, the critic can only learn the average of the remaining discounted
    reward over the episode, 10 * (1 - (1-gamma^20)/(20 (1-gamma))) ~= 5.6.
    """
    bootstrapped = _value_after_training("toy/endless")
    terminating = _value_after_training("toy_factories:endless_as_terminating")
    assert abs(bootstrapped - 1 / (1 - GAMMA)) < 0.5, bootstrapped
    expected_wrong = 10 * (1 - (1 - GAMMA**20) / (20 * (1 - GAMMA)))
    assert abs(terminating - expected_wrong) < 1.0, terminating


def test_categorical_matches_torch_distribution_and_respects_masks() -> None:
    config = load()
    group = AgentGroup(_spec(gymnasium.spaces.Discrete(5)), 4, "shared", config)
    obs = torch.randn(64, 3, 4)
    mask = torch.rand(64, 3, 5) > 0.4
    mask[..., 2] = True  # at least one legal action everywhere
    dist = group.distribution(obs, mask)
    reference = torch.distributions.Categorical(logits=group.actor(obs).masked_fill(~mask, -1e8))
    actions = dist.sample()
    assert mask.gather(-1, actions.unsqueeze(-1)).all(), "a masked action was sampled"
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions))
    torch.testing.assert_close(dist.entropy(), reference.entropy())


def test_gaussian_matches_torch_distribution_and_clips_to_bounds() -> None:
    config = load()
    space = gymnasium.spaces.Box(0.0, 1.0, (2,))
    group = AgentGroup(_spec(space), 4, "independent", config)
    obs = torch.randn(10, 3, 4)
    dist = group.distribution(obs)
    mean = group.actor(obs)
    reference = torch.distributions.Normal(mean, group.log_std.exp().expand_as(mean))
    action = dist.sample()
    torch.testing.assert_close(dist.log_prob(action), reference.log_prob(action).sum(-1))
    torch.testing.assert_close(dist.entropy(), reference.entropy().sum(-1))
    env_action = group.env_action(action * 100)
    assert env_action.min() >= 0.0 and env_action.max() <= 1.0
    assert group.log_std.shape == (3, 2)  # one log-std per agent when independent


def test_loss_ignores_agents_that_are_not_alive() -> None:
    config = load()
    torch.manual_seed(0)
    group = AgentGroup(_spec(gymnasium.spaces.Discrete(5)), 4, "shared", config)
    n = 32
    alive = torch.rand(n, 3) > 0.3
    batch = Minibatch(torch.randn(n, 3, 4), torch.randn(n, 3, 4), torch.randint(0, 5, (n, 3)),
                      torch.randn(n, 3) - 1.6, torch.randn(n, 3), torch.randn(n, 3),
                      torch.randn(n, 3), alive, None)
    noise = torch.randn(n, 3) * 100
    dead = (~alive).float()
    changed = batch._replace(advantage=batch.advantage + noise * dead,
                             returns=batch.returns + noise * dead,
                             log_prob=batch.log_prob + noise * dead)
    first = ppo_loss(group, batch, 0.2, 0.01, 0.5, True, True)
    second = ppo_loss(group, changed, 0.2, 0.01, 0.5, True, True)
    for key in first:
        torch.testing.assert_close(first[key], second[key])


def test_unsupported_action_space_says_what_fits() -> None:
    config = load()
    with pytest.raises(TypeError, match=r"MultiDiscrete.*expected Discrete\(n\) or a 1-D Box"):
        AgentGroup(_spec(gymnasium.spaces.MultiDiscrete([2, 3])), 4, "shared", config)


def test_entropy_of_uniform_policy_at_init() -> None:
    """The 0.01-gain policy head starts near uniform (orthogonal init of the last layer)."""
    config = load()
    group = AgentGroup(_spec(gymnasium.spaces.Discrete(5)), 4, "shared", config)
    entropy = group.distribution(torch.randn(100, 3, 4)).entropy()
    assert torch.allclose(entropy, torch.full_like(entropy, math.log(5)), atol=1e-2)


def _rollout_with_value_norm(task: str) -> PPO:
    """A PPO learner after one rollout on ``task``, value normalisation and clipping on."""
    config = load(overrides={
        "env.task": task, "env.num_envs": "4", "algo.num_steps": "16",
        "algo.value_norm": "true", "algo.clip_vloss": "true", "algo.reward_norm": "none",
        "groups.hidden": "[16]",
    })
    torch.manual_seed(0)
    env = make(task, num_envs=4)
    algo = PPO(env, config, torch.device("cpu"))
    algo.collect(EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, 4,
                                torch.device("cpu")))
    return algo


def test_value_clipping_is_centred_on_the_critics_own_old_prediction() -> None:
    """Before any gradient step the prediction equals the old one, so clipping the value
    loss changes neither the loss nor its gradient, even though the value normaliser's
    statistics move when they absorb the rollout's returns."""
    algo = _rollout_with_value_norm("toy/endless")
    group = algo.groups["agent"]
    assert isinstance(group, AgentGroup) and group.value_norm is not None
    mean_before = group.value_norm.mean.clone()
    batch = algo._flat_batches()["agent"]
    assert float((group.value_norm.mean - mean_before).abs()) > 1.0  # the statistics moved
    first = torch.randperm(batch.obs.shape[0]).chunk(algo.algo.num_minibatches)[0]
    minibatch = take(batch, first)
    grads, values = [], []
    for clip in (False, True):
        group.zero_grad()
        terms = ppo_loss(group, minibatch, 0.2, 0.0, 0.5, clip, True)
        terms["value"].backward()
        values.append(terms["value"].detach())
        grads.append([p.grad.clone() for p in group.critic.parameters()])
    torch.testing.assert_close(values[0], values[1])
    for unclipped, clipped in zip(*grads, strict=True):
        torch.testing.assert_close(unclipped, clipped)
    with torch.no_grad():
        prediction = group.critic(minibatch.critic_input).squeeze(-1)
    torch.testing.assert_close(minibatch.old_prediction, prediction)


def test_returns_use_values_in_return_units_under_value_normalisation() -> None:
    """GAE runs on de-normalised values: ``V = prediction * std + mean``."""
    algo = _rollout_with_value_norm("toy/coop_match")
    group, store = algo.groups["agent"], algo.storage["agent"]
    assert isinstance(group, AgentGroup) and group.value_norm is not None
    group.value_norm.mean.fill_(3.0)
    group.value_norm.var.fill_(4.0)
    advantages, returns, values = algo.advantages("agent")
    with torch.no_grad():
        prediction = group.critic(store.obs).squeeze(-1)
        next_values = group.critic(store.final_obs).squeeze(-1) * 2.0 + 3.0
    torch.testing.assert_close(values, prediction * 2.0 + 3.0)
    expected = gae(store.reward, values, next_values, store.terminated, store.truncated,
                   algo.algo.gamma, algo.algo.gae_lambda)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, advantages + values)


def _updated(chunk_rows: str, overrides: dict[str, str]) -> tuple[PPO, dict[str, float]]:
    """One rollout and one update (2 epochs of 2 minibatches) from seeded starts."""
    config = load(overrides={"env.task": "torch/simple_spread_v3", "env.num_envs": "4",
                             "algo.num_steps": "8", "algo.update_epochs": "2",
                             "algo.num_minibatches": "2", "algo.chunk_rows": chunk_rows,
                             **overrides})
    torch.manual_seed(0)
    env = build_env(config, torch.device("cpu"))
    algo = PPO(env, config, torch.device("cpu"))
    algo.collect(EpisodeTracker({n: s.num_agents for n, s in env.groups.items()},
                                env.num_envs, torch.device("cpu")))
    torch.manual_seed(1)  # the same minibatches
    metrics = algo.update(0.0)
    env.close()
    return algo, metrics


@pytest.mark.parametrize("overrides", [
    {},
    {"algo.norm_adv": "false", "algo.clip_vloss": "true", "algo.value_norm": "false"},
    {"groups.sharing": "independent", "groups.backend": "batched"},
    {"algo.name": "mappo", "env.kwargs.continuous_actions": "true"},
    {"env.task": "toy/leave_early", "env.kwargs.late_agent": "true"},  # two groups, dead agents
    {"groups.rnn": "gru", "algo.seq_len": "4"},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_chunked_minibatches_make_the_whole_minibatchs_update(
        overrides: dict[str, str]) -> None:
    """algo.chunk_rows: chunks of a minibatch, their gradients accumulated, give the
    weights and the logged terms of the whole minibatch, counts and advantage statistics
    taken over the whole minibatch (a chunk normalised by its own would not)."""
    whole, whole_metrics = _updated("0", overrides)
    chunked, chunked_metrics = _updated("7", overrides)
    for (name, want), got in zip(whole.groups.state_dict().items(),
                                 chunked.groups.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
    assert whole_metrics.keys() == chunked_metrics.keys()
    for key, value in whole_metrics.items():
        assert chunked_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    batches = chunked._flat_batches()  # (after the comparison: it updates value statistics)
    first = next(iter(batches.values()))
    samples = first.obs.shape[0 if first.sequences is None else 1] // 2
    assert whole.chunk_count(batches, samples) == 1 < chunked.chunk_count(batches, samples)


def test_chunk_count_divides_the_minibatch_and_auto_follows_the_threads() -> None:
    algo, _ = _updated("48", {})
    batches = algo._flat_batches()  # 3 agents a sample
    assert [algo.chunk_count(batches, n) for n in (16, 17, 100, 96)] == [1, 2, 10, 6]
    auto, _ = _updated("none", {})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert auto.chunk_count(batches, 3200) == 2  # 9,600 rows, 4,800 a chunk
        torch.set_num_threads(2)
        assert auto.chunk_count(batches, 3200) == 1
    finally:
        torch.set_num_threads(threads)
