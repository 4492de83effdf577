"""The shipped hyperparameter sets and sweep files: every one loads, and the entity hpset
builds the network it promises."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import torch

from marl.build import build_env, make_learner
from marl.config import HPSETS, load
from marl.experiments.sweep import _descriptive_values, expand, load_sweep
from marl.nets.entity_layout import mpe_spread_layout

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(HPSETS))
def test_every_hpset_loads(name: str) -> None:
    values = _descriptive_values(load(hpset=name))  # env.kwargs opened into dotted keys
    for key, value in HPSETS[name].items():
        assert values[key] == value, key


@pytest.mark.parametrize("path", SWEEPS, ids=lambda path: path.name)
def test_every_shipped_sweep_expands_and_shows_its_own_command(path: Path) -> None:
    """Each sweep file validates (all its configs load) and its header names the command
    that runs it."""
    runs = expand(load_sweep(path))
    assert runs, f"{path.name} gives no runs"
    assert len({(run.block, run.hpset, repr(sorted(run.overrides.items()))) for run in runs}) \
        == len(runs), f"{path.name} repeats a run"
    commands = [line for line in path.read_text().splitlines()
                if line.startswith("#") and ("marl sweep " in line or "marl bench " in line)]
    named = [word.rsplit("/", 1)[-1] for line in commands for word in line.split()
             if word.startswith("benchmarks/sweeps/")]
    assert any(fnmatch.fnmatch(path.name, pattern) for pattern in named), (
        f"{path.name}: its header should show the `marl sweep` (or `marl bench`) command "
        "that runs it")


def _swap_slots(obs: torch.Tensor, start: int, order: list[int], width: int) -> torch.Tensor:
    """``obs`` with the ``width``-wide slots from ``start`` reordered to ``order``."""
    out = obs.clone()
    for slot, source in enumerate(order):
        out[..., start + slot * width: start + (slot + 1) * width] = \
            obs[..., start + source * width: start + (source + 1) * width]
    return out


@pytest.mark.parametrize("n", [3, 4])
def test_entity_hpset_policy_ignores_landmark_and_agent_order(n: int) -> None:
    """``hpset=ippo_entity_mpe`` reads spread's observation as entity rows: reordering the
    landmark slots or the other agents' slots leaves every action distribution (and value)
    unchanged, while moving one landmark changes them. A flat MLP fails the first part."""
    config = load(overrides={"env.task": "torch/simple_spread_v3", "env.num_envs": 4,
                             "env.kwargs.N": n}, hpset="ippo_entity_mpe")
    env = build_env(config, torch.device("cpu"))
    group = make_learner(env, config, torch.device("cpu")).groups["agent"]
    obs = env.reset(seed=0).groups["agent"].obs.float()
    slots = {item.kind: item for item in mpe_spread_layout(n).slices}
    landmarks = slots["landmark"].start
    with torch.no_grad():
        logits, value = group.actor(obs), group.critic(obs)
        for kind in ("landmark", "agent"):
            item = slots[kind]
            moved = _swap_slots(obs, item.start, list(range(item.count))[::-1], item.width)
            assert not torch.equal(moved, obs)
            torch.testing.assert_close(group.actor(moved), logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(group.critic(moved), value, atol=1e-5, rtol=1e-5)
        shifted = obs.clone()
        shifted[..., landmarks] += 0.5
        # The policy head starts at gain 0.01, so its logits move little; far above the
        # float noise of the reordering (1e-7) all the same.
        assert (group.actor(shifted) - logits).abs().max() > 1e-4
        assert (group.critic(shifted) - value).abs().max() > 1e-3


def test_mappo_entity_hpset_shares_the_ippo_actor_and_reads_obs_then_state() -> None:
    """``hpset=mappo_entity_mpe`` builds ``ippo_entity_mpe``'s policy (the same weights under
    the same seed) and a critic over ``[own observation, global state]`` whose entity rows
    end with the state."""
    cpu = torch.device("cpu")
    base = {"env.task": "torch/simple_spread_v3", "env.num_envs": 4}
    groups = {}
    for name in ("ippo_entity_mpe", "mappo_entity_mpe"):
        config = load(overrides=base, hpset=name)
        env = build_env(config, cpu)
        torch.manual_seed(0)
        groups[name] = make_learner(env, config, cpu).groups["agent"]
    ippo, mappo = groups["ippo_entity_mpe"], groups["mappo_entity_mpe"]
    mine, theirs = mappo.actor.state_dict(), ippo.actor.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    layout = mappo.critic.layout
    assert [item.kind for item in layout.slices] == ["self", "landmark", "agent", "state"]
    assert layout.slices[-1].start == 18 and layout.slices[-1].width == 54


def test_rnn_entity_hpset_reads_entity_rows_before_its_gru_on_spread_only() -> None:
    """``hpset=ippo_rnn_entity_mpe`` gives spread's GRU agents the entity encoder: over a
    sequence, reordering the landmark slots at every step leaves the policy's outputs and
    states unchanged, moving a landmark changes them. On reference and speaker-listener
    (no ``auto`` layout) it builds ``ippo_rnn_mpe``'s networks, the same weights under a
    seed."""
    from marl.nets.recurrent import RecurrentGroupNet

    cpu = torch.device("cpu")
    config = load(overrides={"env.task": "torch/simple_spread_v3", "env.num_envs": 4},
                  hpset="ippo_rnn_entity_mpe")
    env = build_env(config, cpu)
    torch.manual_seed(0)
    actor = make_learner(env, config, cpu).groups["agent"].actor
    assert isinstance(actor, RecurrentGroupNet)
    first_obs = env.reset(seed=0).groups["agent"].obs.float()
    obs = torch.stack([first_obs, first_obs + 0.1 * torch.randn_like(first_obs)])  # [T=2]
    hidden = actor.initial_hidden(4)
    first = torch.tensor([True, False]).view(2, 1, 1).expand(2, 4, 3)
    landmark = {item.kind: item for item in mpe_spread_layout(3).slices}["landmark"]
    with torch.no_grad():
        out, last = actor(obs, hidden, first)
        moved = _swap_slots(obs, landmark.start, [2, 0, 1], landmark.width)
        assert not torch.equal(moved, obs)
        out_moved, last_moved = actor(moved, hidden, first)
        torch.testing.assert_close(out_moved, out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(last_moved, last, atol=1e-5, rtol=1e-5)
        shifted = obs.clone()
        shifted[0, ..., landmark.start] += 0.5  # step 0 only: the change must carry over
        out_shifted, last_shifted = actor(shifted, hidden, first)
        assert (last_shifted - last).abs().max() > 1e-3
        # The policy head starts at gain 0.01 (logits near 1e-3): a change carried by the
        # state moves them by ~1e-4, far above the reordering's float noise (1e-7).
        assert (out_shifted[1] - out[1]).abs().max() > 1e-5
    for task in ("mpe2/simple_reference_v3", "mpe2/simple_speaker_listener_v4"):
        weights = []
        for name in ("ippo_rnn_entity_mpe", "ippo_rnn_mpe"):
            config = load(overrides={"env.task": task, "env.num_envs": 2}, hpset=name)
            torch.manual_seed(3)
            weights.append(make_learner(build_env(config, cpu), config, cpu).groups.state_dict())
        mine, theirs = weights
        assert list(mine) == list(theirs), task
        assert all(torch.equal(mine[key], theirs[key]) for key in mine), task


def test_qmix_entity_hpset_q_values_ignore_landmark_order_on_spread_only() -> None:
    """``hpset=qmix_entity_mpe`` gives spread's agent Q networks the entity encoder:
    reordering the landmark slots leaves every Q value unchanged, moving a landmark changes
    them. On reference and speaker-listener (no ``auto`` layout) it builds
    ``qmix_res_mpe``'s networks, the same weights under a seed, with the strong penalty."""
    cpu = torch.device("cpu")
    config = load(overrides={"env.task": "torch/simple_spread_v3", "env.num_envs": 4},
                  hpset="qmix_entity_mpe")
    assert config.algo.name == "qmix" and config.algo.return_penalty == 0.1
    env = build_env(config, cpu)
    q = make_learner(env, config, cpu).q["agent"]
    obs = env.reset(seed=0).groups["agent"].obs.float()
    landmark = {item.kind: item for item in mpe_spread_layout(3).slices}["landmark"]
    with torch.no_grad():
        values = q(obs)
        moved = _swap_slots(obs, landmark.start, [1, 2, 0], landmark.width)
        assert not torch.equal(moved, obs)
        torch.testing.assert_close(q(moved), values, atol=1e-5, rtol=1e-5)
        shifted = obs.clone()
        shifted[..., landmark.start] += 0.5
        assert (q(shifted) - values).abs().max() > 1e-3
    for task in ("mpe2/simple_reference_v3", "mpe2/simple_speaker_listener_v4"):
        weights = []
        for name in ("qmix_entity_mpe", "qmix_res_mpe"):
            config = load(overrides={"env.task": task, "env.num_envs": 2}, hpset=name)
            torch.manual_seed(3)
            learner = make_learner(build_env(config, cpu), config, cpu)
            weights.append({**learner.q.state_dict(), **learner.mixer.state_dict()})
        mine, theirs = weights
        assert list(mine) == list(theirs), task
        assert all(torch.equal(mine[key], theirs[key]) for key in mine), task


def test_readme_names_every_hpset_where_it_lists_them() -> None:
    """The README's paragraph on ``hpset=NAME`` lists every shipped hpset, and no other."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("`hpset=NAME` starts from a")
    paragraph = readme[start: readme.index("\n\n", start)]
    listed = set(re.findall(r"`([a-z0-9_]+)`", paragraph))
    assert listed == set(HPSETS), (sorted(set(HPSETS) - listed), sorted(listed - set(HPSETS)))
