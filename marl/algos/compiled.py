"""Compiled rollouts and updates for torch-vectorised tasks (``train.compile``).

On a task whose env is a set of tensors (the torch MPE ports), one whole rollout step --
observation normalisation, the policy, the env's physics, observations and rewards,
reward scaling, the global state and the episode bookkeeping -- is a pure function of
tensors, and ``torch.compile`` (the CPU inductor; on CUDA the same graphs) captures it as
one graph; so is a PPO minibatch's loss, whose backward AOTAutograd compiles with it, and
the GAE estimates over the stored rollout. PPO's whole minibatch update -- the loss, its
gradients through :func:`torch.func.grad`, clipping and the Adam step -- is one graph too
(:class:`CompiledUpdate`) where a minibatch runs whole. What stays in Python per step is
one call of the compiled step and the storage writes; once per episode the env is reset
eagerly (its copies run in lockstep, so they all reset at the same step, known without a
sync).

One call of a compiled graph costs a few tens of microseconds however many operators it
fuses; eager PyTorch pays a few microseconds for each of hundreds of small operators.
That is the whole gain at small batches (README, "Where the time goes").

:func:`compile_plan` decides where the compiled path runs; everything else (PettingZoo
tasks, wrapped envs, recurrent or selective groups, action masks) takes the eager path,
which is unchanged.
"""

from __future__ import annotations

import itertools
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from marl_envs.core import BatchedReset, BatchedStep, GroupObs, GroupStep

from marl.config import Config
from marl.logging import EpisodeTracker
from marl.optim import CommonOptimizer
from marl.replay import GroupTransition

AUTO_MIN_ENV_STEPS = 500_000
"""``train.compile=auto`` compiles PPO runs of at least this many env steps: below it the
compile time (20-60 s on a 2-core CPU) is not won back (README, "Compiled loops")."""

AUTO_MIN_ENV_STEPS_OFF_POLICY = 200_000
"""The same for IQL/VDN/QMIX, whose env steps cost more (an update every few of them), so
that compiling pays for itself sooner (README, "Compiled loops")."""


def auto_min_env_steps(algo: str) -> int:
    """The shortest run that ``train.compile=auto`` compiles for ``algo``."""
    return AUTO_MIN_ENV_STEPS if algo in ("ippo", "mappo") else AUTO_MIN_ENV_STEPS_OFF_POLICY


# The env's lru_cache'd helpers build constant tensors from hashable arguments; tracing
# through the cache, as dynamo does, computes the same constants.
warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")

COMPILE_SECONDS: list[float] = []
"""Seconds spent in first calls of compiled graphs in this process (compiling them)."""


_instances = itertools.count()


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a bound method) over a copy of its code object of its own.

    Dynamo keeps compiled graphs on the code object; with a copy per learner, two learners
    in one process (a sweep, a test session) never share a graph, so a graph may skip the
    guards that would tell them apart.
    """
    func = fn.__func__  # type: ignore[attr-defined]
    number = next(_instances)
    code = func.__code__.replace(co_name=f"{func.__name__}_{number}",
                                 co_qualname=f"{func.__qualname__}_{number}")
    copy = types.FunctionType(code, func.__globals__, code.co_name, func.__defaults__,
                              func.__closure__)
    return types.MethodType(copy, fn.__self__)  # type: ignore[attr-defined]


def _exp_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh`` through one ``exp``: within 1e-7 of ``torch.tanh``, and in an inductor CPU
    kernel about 2.7x faster (its ``tanh`` is an accurate SLEEF call, 3.6 ns an element on
    the 2-core machine of the README; ``exp`` is 1.3 ns). Saturates to +-1 without NaNs."""
    return 1.0 - 2.0 / (torch.exp(2.0 * x) + 1.0)


def _inductor(graph: torch.fx.GraphModule, inputs: list[Any]) -> Any:
    """The inductor backend with :func:`_exp_tanh` for ``aten.tanh`` (the derivative
    still comes from the saved output, ``1 - y^2``), and on CPU with inductor's C++ wrapper:
    the graph's kernel calls and buffer allocations run as one compiled C++ function instead
    of generated Python: PPO's collect at 16 env copies 5.3 -> 4.3 ms per 50 steps (README,
    "Where one iteration's time goes")."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    table = {**select_decomp_table(), torch.ops.aten.tanh.default: _exp_tanh}
    on_cpu = all(not isinstance(x, torch.Tensor) or x.device.type == "cpu" for x in inputs)
    return compile_fx(graph, inputs, decompositions=table,
                      config_patches={"cpp_wrapper": on_cpu})


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a bound method) as a graph of its own learner, its first call timed as
    compile time (:func:`compile_seconds`)."""
    # Guards on tensors (shape, dtype, device) only: each graph belongs to one learner
    # (:func:`_own_code`), whose config, module types and Python constants never change in
    # a run, and the full guards over every module attribute cost ~100 us a call on a CPU.
    graph = torch.compile(_own_code(fn), dynamic=False, fullgraph=True, backend=_inductor,
                          options={"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe})
    first = True

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal first
        if not first:
            return graph(*args, **kwargs)
        start = time.perf_counter()
        out = graph(*args, **kwargs)
        COMPILE_SECONDS.append(time.perf_counter() - start)
        first = False
        return out

    return call


def compile_seconds() -> float:
    """Seconds spent compiling so far in this process (first calls of the graphs)."""
    return sum(COMPILE_SECONDS)


def compile_note(learner: Any) -> str:
    """One line for the run's config.yaml: which path ran, and why when eager."""
    reason = getattr(learner, "eager_reason", "this algorithm has no compiled path")
    if reason is None:
        return f"train.compile: compiled (torch.compile, inductor): {learner.compiled_parts}"
    return f"train.compile: eager ({reason})"


COMPILED_ALGOS = ("ippo", "mappo", "iql", "vdn", "qmix")
"""Algorithms with a compiled path (MADDPG and MATD3 run eagerly)."""


def compile_plan(config: Config, env: Any) -> str | None:
    """``None`` when the compiled path runs, else why it does not (one line)."""
    from marl_envs.torch_mpe.env import TorchMPEEnv

    setting = config.train.compile
    if setting is False:
        return "train.compile=false"
    if config.algo.name not in COMPILED_ALGOS:
        return f"algo.name={config.algo.name} has no compiled path"
    if not isinstance(env, TorchMPEEnv):
        return "the env is not a torch-vectorised task (compiled loops need one)"
    shortest = auto_min_env_steps(config.algo.name)
    if setting == "auto" and config.train.total_env_steps < shortest:
        return (f"train.compile=auto and train.total_env_steps < {shortest:,} "
                "(compiling would not pay for itself)")
    if config.algo.reward_norm == "episode" and config.algo.name in ("ippo", "mappo"):
        return "algo.reward_norm=episode (it runs eagerly)"
    for name, spec in env.groups.items():
        if config.groups.rnn == "gru":
            return f"group {name} is recurrent (groups.rnn=gru runs eagerly)"
        sharing = config.groups.sharing_of(name)
        if sharing == "independent" and config.groups.backend == "fork":
            return (f"group {name} runs TorchScript (groups.backend=fork), which "
                    "torch.compile does not trace")
        if sharing == "selective":
            return f"group {name} uses selective sharing (it runs eagerly)"
        if spec.has_action_mask:
            return f"group {name} has action masks (they run eagerly)"
    return None


class Lockstep:
    """The env side of a compiled rollout on a torch MPE env.

    Its copies run in lockstep: they all reach ``max_cycles`` at the same step, known
    without reading a tensor back, and are reset together, eagerly, between two calls of a
    compiled step. The step itself goes through ``env.transition`` (a pure function).
    """

    def __init__(self, env: Any, device: torch.device) -> None:
        self.env = env
        self.alive = {name: torch.ones(env.num_envs, len(agents), dtype=torch.bool,
                                       device=device)
                      for name, agents in env.scenario.groups.items()}
        self._flags = {flag: torch.tensor(flag, device=device) for flag in (False, True)}

    def ending(self) -> tuple[bool, torch.Tensor]:
        """Whether the next step ends every copy's episode, as a bool and as a 0-d tensor
        (what a compiled step takes)."""
        ended = self.env.steps + 1 >= self.env.max_cycles
        return ended, self._flags[ended]

    def step(self, world: Any, actions: dict[str, torch.Tensor], ended: torch.Tensor,
             tracker: EpisodeTracker) -> tuple[Any, dict[str, torch.Tensor],
                                                dict[str, GroupStep]]:
        """Inside a compiled step: the next world, observations and every group's
        :class:`GroupStep` (no termination; truncation when ``ended``), recorded by
        ``tracker``."""
        env = self.env
        world, next_obs, rewards = env.transition(world, actions, check=False)
        groups = {}
        for name, agents in env.scenario.groups.items():
            alive = self.alive[name]
            done = ended.expand_as(alive)
            groups[name] = GroupStep(reward=rewards[:, agents[0]:agents[-1] + 1],
                                     terminated=torch.zeros_like(done), truncated=done,
                                     final_obs=next_obs[name],
                                     next=GroupObs(next_obs[name], alive, None))
        tracker.record(BatchedStep(groups, ended.expand(env.num_envs), None, None), self.alive)
        return world, next_obs, groups

    def advance(self, world: Any, next_obs: dict[str, torch.Tensor],
                ended: bool) -> dict[str, torch.Tensor]:
        """After a compiled step: keep its world, and reset every copy when the step
        ended their episodes; the observations the next step acts on."""
        env = self.env
        env.world, env.steps = world, env.steps + 1
        if ended:
            return {name: g.obs for name, g in env.reset().groups.items()}
        return next_obs

    def next_reset(self, obs: dict[str, torch.Tensor]) -> BatchedReset:
        """``obs`` as the learner's ``next`` (what the next rollout starts from)."""
        return BatchedReset({name: GroupObs(o, self.alive[name], None)
                             for name, o in obs.items()}, self.env._state(obs))


class _CompiledSteps:
    """A learner's rollout on a torch MPE env as one compiled graph per step
    (``_pure_step``), the env kept in :class:`Lockstep`."""

    def __init__(self, learner: Any) -> None:
        # A learner's graphs start from a clean dynamo: state left by another learner's
        # graphs in this process has broken a later learner's first compile (a KeyError
        # from its bytecode). Earlier learners' graphs recompile if they are used again.
        torch._dynamo.reset()
        self.learner = learner
        self.env: Any = learner.env
        self.lockstep = Lockstep(learner.env, learner.device)
        self._step = compiled(self._pure_step)

    def _pure_step(self, *args: Any) -> Any:
        raise NotImplementedError

    def _first_obs(self) -> dict[str, torch.Tensor]:
        """The observations a rollout starts from: the learner's ``next``, or the first
        reset of the env (seeded by the config)."""
        learner = self.learner
        if learner.next is None:
            learner.next = self.env.reset(seed=learner.config.seed)
        return {name: group_obs.obs for name, group_obs in learner.next.groups.items()}


class CompiledRollout(_CompiledSteps):
    """PPO's rollout on a torch MPE env, one compiled graph per step.

    Args:
        learner: the PPO learner whose groups, normalisers and storage the rollout fills.
    """

    @torch.no_grad()
    def _pure_step(self, world: Any, obs: dict[str, torch.Tensor], ended: torch.Tensor,
                   tracker: EpisodeTracker) -> tuple[Any, Any, dict[str, tuple[Any, ...]],
                                                     tuple[torch.Tensor, torch.Tensor] | None]:
        ppo, env = self.learner, self.env
        actions, acted = {}, {}
        states = None
        if ppo.state is not None:
            state = ppo._prepare_state(env._state(obs), update=True)
        for name, group in ppo._items():
            flat = group.prepare_obs(obs[name], None, update=True)
            out = group.act(flat, None)
            actions[name] = group.env_action(out.action)
            acted[name] = (flat, out.action, out.log_prob)
        world, next_obs, groups = self.lockstep.step(world, actions, ended, tracker)
        stored = {}
        for name, group in ppo._items():
            step = groups[name]
            final = group.prepare_obs(next_obs[name])
            normalizer = ppo.reward_norm[name]
            scaled = step.reward if isinstance(normalizer, torch.nn.Identity) else normalizer(
                step.reward, step.truncated, step.next.alive)
            stored[name] = (*acted[name], final, scaled)
        if ppo.state is not None:
            states = (state, ppo._prepare_state(env._state(next_obs), update=False))
        return world, next_obs, stored, states

    def collect(self, tracker: EpisodeTracker) -> int:
        """Step every copy ``algo.num_steps`` times into the learner's storage."""
        ppo, env = self.learner, self.env
        obs = self._first_obs()
        for t in range(ppo.algo.num_steps):
            ended, flag = self.lockstep.ending()
            world, next_obs, stored, states = self._step(env.world, obs, flag, tracker)
            for name, (flat, action, log_prob, final, reward) in stored.items():
                store = ppo.storage[name]
                store.obs[t] = flat
                store.action[t] = action
                store.log_prob[t] = log_prob
                store.final_obs[t] = final
                store.reward[t] = reward
                store.truncated[t] = ended
            if states is not None:
                assert ppo.state is not None and ppo.final_state is not None
                ppo.state[t], ppo.final_state[t] = states
            obs = self.lockstep.advance(world, next_obs, ended)
        for name in ppo.storage:  # torch MPE agents never leave nor terminate
            ppo.storage[name].alive.fill_(True)
            ppo.storage[name].terminated.fill_(False)
        ppo.next = self.lockstep.next_reset(obs)
        return ppo.algo.num_steps * env.num_envs


class CompiledCollect(_CompiledSteps):
    """IQL/VDN/QMIX's collection on a torch MPE env, one compiled graph per step:
    observation statistics, epsilon-greedy actions, the env's step and the episode
    bookkeeping; the replay buffer's write follows it eagerly.

    Args:
        learner: the :class:`marl.algos.q_learning.QLearning` whose replay it fills.
    """

    def __init__(self, learner: Any) -> None:
        super().__init__(learner)
        device, num_envs = learner.device, learner.env.num_envs
        self._epsilon = torch.zeros((), device=device)  # the compiled step's epsilon input
        self._env_done = {flag: torch.full((num_envs,), flag, device=device)
                          for flag in (False, True)}

    @torch.no_grad()
    def _pure_step(self, world: Any, obs: dict[str, torch.Tensor], ended: torch.Tensor,
                   epsilon: torch.Tensor, tracker: EpisodeTracker) -> tuple[Any, ...]:
        learner, env = self.learner, self.env
        alive = self.lockstep.alive
        raw = {name: learner._flat_obs(name, o) for name, o in obs.items()}
        state = learner._raw_state(env._state(obs))
        if state is not None and learner.state_norm:
            learner._stats(learner.state_norm, "state").update(state)
        normalised = {}
        for name, flat in raw.items():
            if name in learner.obs_norm:
                learner._stats(learner.obs_norm, name).update(flat, alive[name])
            normalised[name] = learner.normalize_obs(name, flat)
        actions = learner.act(normalised, dict.fromkeys(raw), epsilon)
        env_actions = {name: learner.env_action(name, a) for name, a in actions.items()}
        world, next_obs, groups = self.lockstep.step(world, env_actions, ended, tracker)
        transitions = {name: GroupTransition(
            obs=raw[name], action=actions[name], reward=step.reward,
            terminated=step.terminated, truncated=step.truncated, alive=alive[name],
            final_obs=learner._flat_obs(name, step.final_obs))
            for name, step in groups.items()}
        final_state = learner._raw_state(env._state(next_obs))
        return world, next_obs, transitions, state, final_state

    def collect(self, tracker: EpisodeTracker) -> int:
        """Step every copy ``algo.num_steps`` times into the learner's replay buffer."""
        learner, env = self.learner, self.env
        obs = self._first_obs()
        for _ in range(learner.algo.num_steps):
            ended, flag = self.lockstep.ending()
            self._epsilon.fill_(learner.epsilon())  # a scalar argument: no copy, no sync
            world, next_obs, transitions, state, final_state = self._step(
                env.world, obs, flag, self._epsilon, tracker)
            learner.replay.add(transitions, self._env_done[ended], state, final_state)
            obs = self.lockstep.advance(world, next_obs, ended)
            learner.env_steps += env.num_envs
        learner.next = self.lockstep.next_reset(obs)
        return learner.algo.num_steps * env.num_envs


class _Losses(torch.nn.Module):
    """The trained modules under one module whose call is a learner's loss, so that
    :func:`torch.func.functional_call` can run that loss on given parameters."""

    def __init__(self, modules: dict[str, torch.nn.Module],
                 loss: Callable[..., tuple[torch.Tensor, Any]]) -> None:
        super().__init__()
        self.trained = torch.nn.ModuleDict(modules)
        self._loss = loss

    def forward(self, *args: Any) -> Any:
        return self._loss(*args)


class CompiledUpdate:
    """One gradient step as one graph: a loss, its gradients (:func:`torch.func.grad`, no
    autograd engine), global or per-group clipping and the Adam step, written in place
    into the parameters and the optimiser's own state (PPO's minibatch update, the Q
    learners' sampled update).

    The ordinary path runs the compiled loss, ``backward()``, ``clip_grad_norm_`` and
    fused Adam as four calls with Python between them; at small batches that Python is a
    large part of the update (README, "Where one iteration's time goes"). The first step
    of a run takes the ordinary path (it creates the optimiser's state and shows which
    parameters get gradients); the graph takes over when every parameter got one and has
    its Adam state on its own device (a parameter without a gradient is skipped by Adam,
    which this graph does not model), and the update is Adam's to float rounding
    (``tests/test_compiled.py``).

    Args:
        optimizer: the learner's common optimiser (one Adam, ``optim.mode=common``).
        loss: ``loss(*args) -> (total, aux)``: the scalar to minimise and what to return
            with the gradient norms (detached), over the optimiser's modules.
    """

    def __init__(self, optimizer: CommonOptimizer,
                 loss: Callable[..., tuple[torch.Tensor, Any]]) -> None:
        self.common = optimizer
        self.optimizer = optimizer.optimizers[0]
        self.config = optimizer.config
        self.module = _Losses(optimizer.modules, loss)
        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        by_id = {id(p): i for i, p in enumerate(self.params)}
        # which clipping norm each parameter belongs to (one, or one per group)
        clipping = optimizer.clip_groups()
        self.norm_names = list(clipping)
        self.norm_of = [0] * len(self.params)
        for g, params in enumerate(clipping.values()):
            for p in params:
                self.norm_of[by_id[id(p)]] = g
        self.group_of = [0] * len(self.params)
        for g, group in enumerate(self.optimizer.param_groups):
            for p in group["params"]:
                self.group_of[by_id[id(p)]] = g
        self.ready = False
        self._graph = compiled(self._step)

    def take_over(self) -> bool:
        """After a step on the ordinary path: whether this graph takes the next ones
        (every parameter got a gradient and has Adam state on its own device; then the
        gradients are dropped, since the graph keeps none). False: it never will."""
        state = self.optimizer.state
        self.ready = all(p.grad is not None and "exp_avg" in state[p]
                         and state[p]["step"].device == p.device for p in self.params)
        if self.ready:
            self.common.zero_grad()
        return self.ready

    def step(self, *args: Any) -> tuple[dict[str, torch.Tensor], Any]:
        """One step on the loss of ``args``: the gradient norms before clipping, named as
        the ordinary path names them, and the loss's ``aux``."""
        state = self.optimizer.state
        states = [state[p] for p in self.params]
        lrs = torch.tensor([g["lr"] for g in self.optimizer.param_groups],
                           device=self.params[0].device)
        norms, aux = self._graph(
            args, lrs, [p.detach() for p in self.params], [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states], [s["step"] for s in states])
        return dict(zip(self.norm_names, norms, strict=True)), aux

    def _step(self, args: tuple[Any, ...], lrs: torch.Tensor, params: list[torch.Tensor],
              exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
              steps: list[torch.Tensor]) -> Any:
        names, module = self.names, self.module

        def loss(flat: list[torch.Tensor]) -> Any:
            return torch.func.functional_call(
                module, {names[i]: flat[i] for i in range(len(names))}, args, strict=False)

        grads, aux = torch.func.grad(loss, has_aux=True)(params)
        squares = [torch.zeros((), device=lrs.device) for _ in self.norm_names]
        for i, grad in enumerate(grads):
            g = self.norm_of[i]
            squares[g] = squares[g] + grad.pow(2).sum()
        norms = [s.sqrt() for s in squares]
        max_norm = self.config.max_grad_norm
        scales = [torch.ones_like(n) if max_norm is None
                  else torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
        beta1, beta2 = self.optimizer.defaults["betas"]
        eps = self.optimizer.defaults["eps"]
        for i, param in enumerate(params):
            grad = grads[i] * scales[self.norm_of[i]]
            step = steps[i] + 1
            steps[i].copy_(step)
            exp_avgs[i].lerp_(grad, 1 - beta1)
            exp_avg_sqs[i].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            size = lrs[self.group_of[i]] / (1 - beta1 ** step)
            denom = exp_avg_sqs[i].sqrt() / (1 - beta2 ** step).sqrt() + eps
            param.sub_(size * exp_avgs[i] / denom)
        return norms, aux
