"""Input wrappers over batched envs (marl_envs.batched_wrappers, marl_envs.frames)."""

from __future__ import annotations

import math

import marl_envs
import pytest
import torch
from marl_envs import AgentCentric, FrameSpec, FrameStack, PixelNorm, wrap
from scripted_batched import ScriptedBatchedEnv, code


def _first(obs: torch.Tensor, copy: int, agent: int, frames: int, size: int = 2) -> list[float]:
    """The first feature of each stacked frame of one agent."""
    return [float(obs[copy, agent, k * size]) for k in range(frames)]


def _act(env: marl_envs.BatchedEnv) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(env.num_envs, spec.num_agents, dtype=torch.int64)
            for name, spec in env.groups.items()}


def test_frame_stack_restarts_at_auto_resets_inside_the_batch() -> None:
    env = FrameStack(ScriptedBatchedEnv(lengths=[2, 3]), num_frames=3)
    obs = env.reset().groups["agent"].obs
    assert obs.shape == (2, 2, 6)
    assert _first(obs, 0, 1, 3) == [code(0, 1, 0, 0)] * 3
    # Feature order inside one frame is kept: [code, code + 0.1] per frame, oldest first.
    assert obs[1, 0].tolist() == pytest.approx([code(1, 0, 0, 0), code(1, 0, 0, 0) + 0.1] * 3)
    step = env.step(_act(env)).groups["agent"]
    assert _first(step.next.obs, 0, 0, 3) == [code(0, 0, 0, 0)] * 2 + [code(0, 0, 0, 1)]
    step = env.step(_act(env)).groups["agent"]
    # Copy 0 ended at its second step: final_obs holds its last stack, next.obs the new
    # episode's first observation three times. Copy 1 goes on.
    assert _first(step.final_obs, 0, 0, 3) == [code(0, 0, 0, t) for t in (0, 1, 2)]
    assert _first(step.next.obs, 0, 0, 3) == [code(0, 0, 1, 0)] * 3
    assert _first(step.next.obs, 1, 1, 3) == [code(1, 1, 0, t) for t in (0, 1, 2)]
    assert torch.equal(step.final_obs[1], step.next.obs[1])
    step = env.step(_act(env)).groups["agent"]
    assert _first(step.next.obs, 0, 0, 3) == [code(0, 0, 1, 0)] * 2 + [code(0, 0, 1, 1)]
    assert _first(step.final_obs, 1, 0, 3) == [code(1, 0, 0, t) for t in (1, 2, 3)]
    assert _first(step.next.obs, 1, 0, 3) == [code(1, 0, 1, 0)] * 3


def test_frame_stack_zeroes_agents_that_left_and_keeps_their_final_stack() -> None:
    env = FrameStack(ScriptedBatchedEnv(lengths=[3], leaves=[(0, 1, 1)]), num_frames=2)
    env.reset()
    step = env.step(_act(env)).groups["agent"]
    assert bool(step.terminated[0, 1]) and not bool(step.next.alive[0, 1])
    assert _first(step.final_obs, 0, 1, 2) == [code(0, 1, 0, 0), code(0, 1, 0, 1)]
    assert not step.next.obs[0, 1].any()
    step = env.step(_act(env)).groups["agent"]
    assert not step.next.obs[0, 1].any() and not step.final_obs[0, 1].any()
    step = env.step(_act(env)).groups["agent"]  # new episode: agent 1 is back, stack restarts
    assert _first(step.next.obs, 0, 1, 2) == [code(0, 1, 1, 0)] * 2


def test_frame_stack_restarts_the_stack_of_an_agent_that_enters_late() -> None:
    inner = marl_envs.make("toy/leave_early", num_envs=2, kwargs={"late_agent": True})
    env = FrameStack(inner, num_frames=3)
    late = env.groups["late"]
    assert late.obs_shape == (9,) and late.obs_mask.shape == (1, 9)
    assert not env.reset(seed=0).groups["late"].obs.any()
    env.step(_act(env))
    step = env.step(_act(env))  # late_0 enters at step 2 and observes [2, 3, 1]
    entered = step.groups["late"].next
    assert bool(entered.alive.all())
    assert entered.obs[0, 0].tolist() == [2.0, 3.0, 1.0] * 3


def test_frame_stack_final_obs_matches_next_obs_wherever_no_copy_reset() -> None:
    inner = marl_envs.make("toy/grid_nav", num_envs=4, kwargs={"size": 4, "max_steps": 6})
    env = FrameStack(inner, num_frames=4)
    env.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    seen_reset = False
    for _ in range(30):
        step = env.step({"agent": torch.randint(0, 4, (4, 3), generator=generator)})
        group = step.groups["agent"]
        same = group.next.alive & ~step.env_done[:, None]
        assert torch.equal(group.final_obs[same], group.next.obs[same])
        assert not group.next.obs[~group.next.alive].any()
        seen_reset |= bool(step.env_done.any())
    assert seen_reset


def test_frame_stack_of_images_stacks_channels() -> None:
    env = FrameStack(ScriptedBatchedEnv(lengths=[5], obs_shape=(2, 2, 3)), num_frames=2)
    assert env.groups["agent"].obs_shape == (2, 2, 6)
    env.reset()
    obs = env.step(_act(env)).groups["agent"].next.obs
    assert obs[0, 0, 1, 1].tolist() == pytest.approx(
        [code(0, 0, 0, 0) + i / 10 for i in (9, 10, 11)]
        + [code(0, 0, 0, 1) + i / 10 for i in (9, 10, 11)])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_frame_stack_rejects_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="frame_stack must be a positive int"):
        FrameStack(ScriptedBatchedEnv(lengths=[2]), num_frames=bad)  # type: ignore[arg-type]


def test_pixel_norm_scales_only_the_chosen_channels_of_obs_and_final_obs() -> None:
    env = PixelNorm(ScriptedBatchedEnv(lengths=[1], obs_shape=(1, 1, 3)), channels=[0, 2])
    raw = ScriptedBatchedEnv(lengths=[1], obs_shape=(1, 1, 3))
    expected = raw.reset().groups["agent"].obs
    expected[..., [0, 2]] /= 255
    assert torch.allclose(env.reset().groups["agent"].obs, expected)
    step = env.step(_act(env)).groups["agent"]
    assert float(step.final_obs[0, 0, 0, 0, 1]) == pytest.approx(code(0, 0, 0, 1) + 0.1)
    assert float(step.final_obs[0, 0, 0, 0, 2]) == pytest.approx((code(0, 0, 0, 1) + 0.2) / 255)


def test_pixel_norm_by_default_scales_every_channel_of_image_groups() -> None:
    env = PixelNorm(ScriptedBatchedEnv(lengths=[1], obs_shape=(2, 1, 1)))
    obs = env.reset().groups["agent"].obs
    assert obs[0, 0].flatten().tolist() == pytest.approx([1 / 255, 1.1 / 255])


def test_pixel_norm_refuses_flat_observations_and_bad_channels() -> None:
    with pytest.raises(ValueError, match="no group has one"):
        PixelNorm(ScriptedBatchedEnv(lengths=[1]))
    with pytest.raises(ValueError, match=r"pixel_channels \[3\] are outside"):
        PixelNorm(ScriptedBatchedEnv(lengths=[1], obs_shape=(1, 1, 3)), channels=[3])
    with pytest.raises(ValueError, match="not groups of this env"):
        PixelNorm(ScriptedBatchedEnv(lengths=[1]), groups=["pixels"])


# Observation [own x, own y, heading, point x, point y, velocity x, velocity y].
SPEC = FrameSpec(position=0, points=(3,), vectors=(5,), heading_angle=2)


def test_agent_frame_by_hand() -> None:
    obs = torch.tensor([1.0, 1.0, math.pi / 2, 1.0, 3.0, 1.0, 0.0])
    # Heading north: the point 2 north of the agent is 2 ahead; moving east is moving right.
    assert SPEC.apply(obs).tolist() == pytest.approx([1, 1, math.pi / 2, 2, 0, 0, -1], abs=1e-6)
    unrotated = FrameSpec(position=0, points=(3,), vectors=(5,))
    assert unrotated.apply(obs).tolist() == pytest.approx([1, 1, math.pi / 2, 0, 2, 1, 0])
    toward = FrameSpec(position=0, points=(3,), heading_vector=5)
    heading_east = obs.clone()
    assert toward.apply(heading_east)[3:5].tolist() == pytest.approx([0, 2])
    still = obs.clone()
    still[5:7] = 0.0  # no direction of motion: left unrotated
    assert toward.apply(still)[3:5].tolist() == pytest.approx([0, 2])


def test_agent_frame_preserves_lengths_and_faces_the_heading() -> None:
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 7, generator=generator)
    out = SPEC.apply(obs)
    relative = obs[:, 3:5] - obs[:, 0:2]
    assert torch.allclose(out[:, 3:5].norm(dim=-1), relative.norm(dim=-1), atol=1e-5)
    assert torch.allclose(out[:, 5:7].norm(dim=-1), obs[:, 5:7].norm(dim=-1), atol=1e-5)
    heading = torch.stack([torch.cos(obs[:, 2]), torch.sin(obs[:, 2])], dim=-1)
    ahead = (obs[:, 5:7] * heading).sum(-1)
    assert torch.allclose(out[:, 5], ahead, atol=1e-5)


def test_agent_centric_on_mpe_simple_spread_rotates_into_the_direction_of_motion() -> None:
    spec = {"vectors": [0, 4, 6, 8, 10, 12], "heading_vector": 0}
    raw = marl_envs.make("mpe2/simple_spread_v3", num_envs=2, include_state=False)
    env = wrap(marl_envs.make("mpe2/simple_spread_v3", num_envs=2, include_state=False),
               agent_centric=spec)
    raw.reset(seed=3)
    env.reset(seed=3)
    actions = {"agent": torch.full((2, 3), 2, dtype=torch.int64)}  # accelerate
    before = raw.step(actions).groups["agent"].next.obs
    after = env.step(actions).groups["agent"].next.obs
    speed = before[..., 0:2].norm(dim=-1)
    assert bool((speed > 0).all())
    assert torch.allclose(after[..., 0], speed, atol=1e-5)
    assert torch.allclose(after[..., 1], torch.zeros_like(speed), atol=1e-5)
    landmarks_raw, landmarks = before[..., 4:10].reshape(2, 3, 3, 2), after[..., 4:10]
    assert torch.allclose(landmarks.reshape(2, 3, 3, 2).norm(dim=-1),
                          landmarks_raw.norm(dim=-1), atol=1e-5)
    assert torch.equal(after[..., 2:4], before[..., 2:4])  # own position unchanged
    assert torch.equal(after[..., 14:], before[..., 14:])  # communication unchanged


def test_agent_centric_wrapper_transforms_obs_and_final_obs() -> None:
    # Features [code, code + 0.1, code + 0.2, code + 0.3]: the point at 2 is (0.2, 0.2) away.
    env = AgentCentric(ScriptedBatchedEnv(lengths=[1], obs_shape=(4,)),
                       FrameSpec(position=0, points=(2,)))
    first = env.reset().groups["agent"].obs
    final = env.step(_act(env)).groups["agent"].final_obs
    for t, obs in enumerate((first, final)):
        assert torch.allclose(obs[..., 2:4], torch.full_like(obs[..., 2:4], 0.2), atol=1e-3)
        assert obs[0, :, 0].tolist() == [code(0, 0, 0, t), code(0, 1, 0, t)]  # own position


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"position": 0, "point": [2]}, "unknown agent-centric key 'point'. Did you mean 'points'"),
        ({"points": [2]}, "position is None"),
        ({"position": 0}, "needs at least one entry"),
        ({"vectors": [0], "heading_angle": 2, "heading_vector": 0}, "give the heading once"),
        ({"vectors": 3}, "must be a list of start indices"),
        ({"vectors": [-1]}, "non-negative int"),
        ({"position": 4, "points": [0, 1]}, "overlap"),
    ],
)
def test_frame_spec_rejects_bad_specs(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrameSpec.from_mapping(values)


def test_agent_centric_checks_indices_against_the_observation() -> None:
    with pytest.raises(ValueError, match=r"vectors starting at 1 needs features 1 and 2"):
        AgentCentric(ScriptedBatchedEnv(lengths=[1]), FrameSpec(vectors=(1,)))
    with pytest.raises(ValueError, match="needs flat observations"):
        AgentCentric(ScriptedBatchedEnv(lengths=[1], obs_shape=(2, 2)), FrameSpec(vectors=(0,)))


def test_wrap_orders_agent_frame_before_stacking_and_checks_pixel_channels() -> None:
    env = wrap(ScriptedBatchedEnv(lengths=[4], obs_shape=(4,)), frame_stack=2,
               agent_centric={"position": 0, "points": [2]})
    obs = env.reset().groups["agent"].obs
    assert obs.shape == (1, 2, 8)
    assert obs[0, 0].tolist() == pytest.approx([1, 1.1, 0.2, 0.2] * 2)
    with pytest.raises(ValueError, match="pixel_norm is off"):
        wrap(ScriptedBatchedEnv(lengths=[1]), pixel_channels=[0])
