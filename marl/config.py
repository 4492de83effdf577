"""The experiment configuration: frozen dataclasses, YAML files and ``key=value`` overrides.

A config is built in three layers, later layers winning: the dataclass defaults, an
optional named hyperparameter set (``hpset``), an optional YAML file, then command-line
overrides with dotted keys (``optim.lr=3e-4``). Every key is checked: an unknown key is
refused with the closest valid key, a bad value with the expected type, and every value
against the rules of :mod:`marl.config_rules` (choices, numeric ranges, combinations).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marl_envs.frames import FrameSpec

from marl.algos.registry import algo_help
from marl.atomic import atomic_write_text
from marl.config_rules import CHOICES as CHOICES
from marl.config_rules import RANGES as RANGES
from marl.config_rules import ConfigError as ConfigError
from marl.config_rules import check_values, coerce, yaml_error_text


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class EnvConfig:
    task: str = _help(
        "task id: 'mpe2/simple_spread_v3', 'toy/coop_match', or 'package.module:function' "
        "returning a PettingZoo ParallelEnv",
        default="mpe2/simple_spread_v3",
    )
    kwargs: dict[str, Any] = _help(
        "keyword arguments for the env constructor (env.kwargs.N=3)", default_factory=dict
    )
    num_envs: int = _help("number of env copies stepped together", default=32)
    vector: str = _help("'sync' (in-process) or 'subprocess' (shared-memory workers)",
                        default="sync")
    num_workers: int | None = _help("subprocess workers (default: one per CPU core)", default=None)
    groups: dict[str, list[str]] | None = _help(
        "explicit agent groups {group: [agent, ...]}; default groups by name prefix", default=None
    )
    max_episode_steps: int | None = _help(
        "time limit applied on top of the task's own (truncation); counts env steps, also "
        "with action_repeat", default=None
    )
    action_repeat: int = _help(
        "repeat each decision for up to this many env steps, summing the rewards; stops early "
        "when an agent terminates, is truncated or enters (1 = off)", default=1
    )
    frame_stack: int = _help(
        "observe the last k observations of each agent, concatenated on the last axis and "
        "restarted at every episode start (1 = off)", default=1
    )
    pixel_norm: bool = _help(
        "scale image observations (groups with [height, width, channels] observations) from "
        "0..255 to [0, 1]", default=False
    )
    pixel_channels: list[int] | None = _help(
        "with pixel_norm: the channels (last axis) that hold pixels; default every channel",
        default=None
    )
    agent_centric: dict[str, Any] | None = _help(
        "agent-centric observations: where the own position, other entities' world positions "
        "and 2-D vectors sit in each flat observation, and optionally the heading to rotate "
        "into, e.g. {position: 2, points: [4, 6], vectors: [0], heading_vector: 0}; an optional "
        "groups: [...] limits it to some groups (marl_envs.frames.FrameSpec)", default=None
    )

    def __post_init__(self) -> None:
        if self.pixel_channels is not None and not self.pixel_norm:
            raise ConfigError(f"env.pixel_channels={self.pixel_channels} has no effect while "
                              "env.pixel_norm is false; set env.pixel_norm=true or drop it")
        if self.agent_centric is not None:
            spec = {k: v for k, v in self.agent_centric.items() if k != "groups"}
            try:
                FrameSpec.from_mapping(spec)
            except ValueError as error:
                raise ConfigError(f"env.agent_centric: {error}") from error


@dataclass(frozen=True)
class AlgoConfig:
    name: str = _help(algo_help(), default="ippo")
    num_steps: int = _help("rollout length per env copy between updates (off-policy: env "
                           "steps per copy between bursts of algo.gradient_steps updates)",
                           default=50)
    # 0.95, not 0.99: MPE episodes are cut at 25 steps and bootstrapped there; at 0.99 most
    # of each target is the critic's own guess at the cut state, and shared-reward tasks
    # drifted into a policy that flies off (README, "Choosing gamma on MPE").
    gamma: float = _help("discount factor", default=0.95)
    gae_lambda: float = _help("GAE lambda", default=0.95)
    update_epochs: int = _help("passes over each rollout", default=5)
    num_minibatches: int = _help("minibatches per pass (split over env copies)", default=2)
    clip_coef: float = _help("PPO ratio clip", default=0.2)
    clip_vloss: bool = _help("clip the value loss around the old values", default=False)
    ent_coef: float = _help("entropy bonus coefficient at the start", default=0.01)
    ent_coef_final: float | None = _help(
        "entropy coefficient at the end (linear schedule); None keeps it constant", default=0.0
    )
    vf_coef: float = _help("value loss coefficient", default=0.5)
    norm_adv: bool = _help("normalise advantages over alive agents of each minibatch",
                           default=True)
    chunk_rows: int | None = _help(
        "ppo: agent rows (samples x agents, x sequence length for recurrent groups) per "
        "forward and backward pass; a larger minibatch runs in chunks whose gradients add up "
        "to the whole minibatch's (the same update, up to float rounding; the smaller "
        "matrices stay in a CPU's caches). None: 4800 on a CPU with one torch thread, else "
        "the whole minibatch; 0: always the whole minibatch", default=None)
    obs_norm: bool = _help("running observation normalisation per group", default=True)
    reward_norm: str = _help(
        "'none'; 'running' (divide by the running std of the discounted return); 'episode' "
        "(standardise with reward statistics updated at episode ends)",
        default="running",
    )
    value_norm: bool = _help("learn values on running-normalised targets", default=True)
    log_std_init: float = _help("initial log std of Gaussian policies", default=-0.5)
    # Off-policy family (iql, vdn, qmix, maddpg, matd3). PPO ignores these keys, and the
    # off-policy algorithms ignore the PPO-only ones (GAE, clipping, entropy, reward and
    # value normalisation).
    buffer_size: int = _help("off-policy: replay capacity in transitions (per env copy "
                             "counted; preallocated)", default=200_000)
    batch_size: int = _help("off-policy: transitions per gradient update (iql/vdn/qmix with "
                            "groups.rnn=gru: max(1, batch_size // seq_len) sequences of "
                            "algo.seq_len steps)", default=256)
    warmup_steps: int = _help("off-policy: env steps collected before the first update",
                                 default=5_000)
    gradient_steps: int = _help("off-policy: gradient updates after every algo.num_steps "
                                "steps of all env copies", default=1)
    n_step: int = _help("off-policy: steps of reward before the bootstrap (cut at episode "
                        "ends)", default=1)
    target_update: str = _help("off-policy: 'soft' (Polyak with algo.tau every update) or "
                               "'hard' (copy every algo.target_update_interval updates)",
                               default="soft")
    tau: float = _help("off-policy: Polyak factor of soft target updates", default=0.005)
    target_update_interval: int = _help("off-policy: updates between hard target copies",
                                        default=200)
    double_q: bool = _help("iql/vdn/qmix: pick the next action with the online network, "
                           "value it with the target (double Q-learning)", default=True)
    eps_start: float = _help("iql/vdn/qmix: epsilon-greedy exploration at the start",
                             default=1.0)
    eps_end: float = _help("iql/vdn/qmix: epsilon after the schedule", default=0.05)
    eps_anneal_steps: int = _help("iql/vdn/qmix: env steps of the linear epsilon schedule",
                                  default=50_000)
    mixer_embed: int = _help("qmix: hidden size of the mixing network", default=32)
    critic_input: str = _help(
        "mappo: what the critic reads. 'state': the global state (env.state(), else the "
        "group's observations concatenated). 'obs_state': the agent's own observation "
        "followed by the global state (the agent-specific global state of Yu et al. 2022), "
        "read by the observation's encoder: with an entity layout the state is one more "
        "entity row; the critic stays feed-forward with groups.rnn=gru", default="state")
    return_penalty: float = _help(
        "vdn/qmix: weight of a penalty (Q_tot - G)^2 added to the TD loss, G the team's "
        "discounted return observed from the sampled step to its episode's end (RES, Pan et "
        "al. 2021): holds the mixed value near returns that happened; 0 = off", default=0.0)
    seq_len: int | None = _help(
        "recurrent agents (groups.rnn=gru): training sequence length in env steps. PPO: "
        "chunks of the rollout, each replayed from the hidden state stored at its start "
        "(None: the whole rollout; must divide algo.num_steps). iql/vdn/qmix: replayed "
        "sequences, aligned to episode starts (None: 32)", default=None)
    burn_in: int = _help(
        "iql/vdn/qmix with groups.rnn=gru: steps before a replayed sequence that only warm "
        "up the hidden state (no loss); sequences that start an episode need none",
        default=10)
    exploration_noise: float = _help("maddpg/matd3: std of Gaussian action noise (actions "
                                     "scaled to [-1, 1])", default=0.1)
    policy_delay: int = _help("matd3: critic updates per actor and soft target "
                              "update (maddpg: 1)", default=2)
    target_noise: float = _help("matd3: std of the target policy smoothing noise",
                                default=0.2)
    target_noise_clip: float = _help("matd3: clip of the target policy smoothing noise",
                                     default=0.5)


@dataclass(frozen=True)
class GroupsConfig:
    sharing: str = _help("'shared' (one network per group), 'independent' (one per agent) or "
                         "'selective' (K networks, agents clustered after a warm-up)",
                         default="shared")
    backend: str = _help("independent networks: 'batched' (stacked weights), 'fork' "
                         "(TorchScript + torch.jit.fork) or 'loop'", default="batched")
    agent_id: bool = _help("append a one-hot agent ID to shared networks' inputs", default=True)
    hidden: list[int] = _help("hidden layer sizes", default_factory=lambda: [64, 64])
    activation: str = _help("'tanh' or 'relu'", default="tanh")
    overrides: dict[str, str] = _help(
        "per-group sharing, e.g. {speaker: independent}", default_factory=dict
    )
    encoder: str = _help(
        "observation encoder before the trunk: 'auto' (by the observation's shape: [H, W, C] "
        "-> cnn, [N, F] -> entity, flat -> mlp, flat with entity_layout -> entity), 'mlp' "
        "(none), 'cnn' or 'entity'", default="auto")
    entity_pool: str = _help("entity encoder: pool over entity rows, 'attention', 'mean' or "
                             "'max'", default="attention")
    entity_layout: list[dict[str, Any]] | str | None = _help(
        "entity slices of flat observations, for the entity encoder: 'auto' (the preset of "
        "tasks where it learns better than the MLP: spread; none elsewhere), a preset "
        "('mpe_spread', 'mpe_reference', 'mpe_speaker_listener': the listener's rows, the "
        "speaker none) or a list of {kind, start, count, width[, always_present]}",
        default=None)
    layer_norm: bool = _help("LayerNorm after every hidden layer of the trunk", default=False)
    residual: bool = _help("residual hidden layers in the trunk where sizes match",
                           default=False)
    rnn: str = _help(
        "'none' (feed-forward) or 'gru': encoder -> input layers (groups.hidden) -> GRU -> "
        "head, for policies, IPPO critics and Q networks; a state critic stays feed-forward",
        default="none")
    rnn_hidden: int = _help("groups.rnn=gru: the GRU's hidden-state size", default=64)
    clusters: int | str = _help(
        "selective sharing: the number of networks K (1 .. agents in the group), or 'auto' "
        "(one network if the agents look alike, else the K of best Davies-Bouldin score)",
        default="auto")
    selective_warmup: int = _help(
        "selective sharing: env steps in which the group acts through one shared network "
        "and records transitions, before its agents are clustered", default=10_000)

    def sharing_of(self, group: str) -> str:
        """The sharing mode of ``group``: its entry in ``overrides``, else ``sharing``."""
        return self.overrides.get(group, self.sharing)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = _help("Adam learning rate", default=7e-4)
    anneal_lr: bool = _help("linearly decay the learning rate to 0", default=True)
    eps: float = _help("Adam epsilon", default=1e-5)
    max_grad_norm: float | None = _help("gradient clipping norm (None: no clipping)", default=0.5)
    clip_mode: str = _help("'global' (one norm over all groups) or 'group' (one per group)",
                           default="global")
    mode: str = _help("'common' (one optimiser) or 'per_agent' (benchmarks only; needs "
                      "backend loop or fork)", default="common")
    impl: str = _help("Adam kernels: 'fused' (one kernel over all tensors, 3-8x faster steps "
                      "on CPU), 'foreach' or 'loop' (PyTorch's per-tensor reference)",
                      default="fused")


@dataclass(frozen=True)
class TrainConfig:
    total_env_steps: int = _help("env steps to train for (summed over env copies)",
                                 default=300_000)
    log_every: int = _help("env steps between metric lines", default=10_000)
    checkpoint_every: int = _help("env steps between checkpoints", default=50_000)
    progress: bool = _help("print progress lines", default=True)
    replay_checkpoint_mb: float = _help(
        "off-policy: save the replay buffer beside each checkpoint (its filled part) while it "
        "holds at most this many megabytes (10^6 bytes); over it, or at 0, resuming refills "
        "the buffer for algo.warmup_steps env steps", default=2048.0)
    eval_every: int = _help(
        "env steps between evaluations in separate env copies (greedy Q methods, actors "
        "without noise, frozen observation statistics), and one at the end; 0 = off",
        default=20_000)
    eval_episodes: int = _help("episodes per evaluation (mean per-agent return, 95% CI)",
                               default=32)
    compile: bool | str = _help(
        "compiled rollouts and updates (torch.compile) on torch-vectorised tasks: true, "
        "false, or 'auto' (compile PPO runs of at least 500,000 env steps and IQL/VDN/QMIX "
        "runs of at least 200,000, where the compile time pays for itself); the run's "
        "config.yaml notes which path ran", default="auto")
    compile_update: bool = _help(
        "on the compiled path, each gradient step as one graph (PPO's minibatch, the Q "
        "learners' sampled batch: loss, gradients by torch.func, clipping and Adam); "
        "false: the loss graph with its backward, then eager clipping and fused Adam",
        default=True)
    retain_memory: bool = _help(
        "keep freed memory in the process for the next minibatch instead of returning it "
        "to the OS (glibc malloc: no mmap per large block, no trimming); saves a page fault "
        "per 4 KiB of every large batch, and the process keeps its peak memory",
        default=True)
    eval_mode: str = _help("PPO actions in evaluation: 'mode' (the most likely action) or "
                           "'sample'", default="mode")


@dataclass(frozen=True)
class RunConfig:
    dir: str | None = _help("run directory (default: runs/<task>__<algo>__<sharing>__<time>)",
                            default=None)
    resume: bool = _help("continue the run in run.dir from its last checkpoint", default=False)
    tensorboard: bool = _help("write tensorboard event files", default=True)


@dataclass(frozen=True)
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = _help("random seed", default=1)
    device: str = _help("'cpu', 'cuda' or 'auto'", default="cpu")
    torch_threads: int | None = _help(
        "torch intra-op threads; None leaves torch's default. One is fastest for MPE-sized "
        "networks on CPU, and leaves the other cores to env workers", default=1)


# Named hyperparameter sets: defaults for a family of tasks, applied before the user's keys.
HPSETS: dict[str, dict[str, Any]] = {
    "ippo_mpe": {"algo.name": "ippo"},
    "mappo_mpe": {"algo.name": "mappo"},
    # IPPO with the entity encoder where it was measured to learn better (spread: own
    # state, landmarks, other agents as rows), the MLP elsewhere (groups.entity_layout=auto):
    # the setting chosen by the sample-efficiency search (README, "Sample efficiency").
    "ippo_entity_mpe": {"algo.name": "ippo", "groups.encoder": "auto",
                        "groups.entity_layout": "auto"},
    # MAPPO with the same entity-encoder actor and a critic on the agent's own observation
    # followed by the global state, through the same encoder (the state one more row):
    # level with ippo_entity_mpe on spread at 1M (README, "Sample efficiency").
    "mappo_entity_mpe": {"algo.name": "mappo", "algo.critic_input": "obs_state",
                         "groups.encoder": "auto", "groups.entity_layout": "auto"},
    # EPyMARL's default recurrent agent: one input layer of 64, a GRU of 64, a linear head.
    "ippo_rnn_mpe": {"algo.name": "ippo", "groups.rnn": "gru", "groups.hidden": [64],
                     "groups.rnn_hidden": 64},
    # Off-policy on MPE: 8 copies, one update per step of all copies (8 env steps),
    # 3-step targets, relu networks, 300k env steps (README, "Off-policy learners": VDN and
    # MATD3 reach -16 or better on simple_spread_v3 in that budget).
    **{f"{name}_mpe": {
        "algo.name": name, "env.num_envs": 8, "algo.num_steps": 1, "algo.gradient_steps": 1,
        "algo.batch_size": 256, "algo.n_step": 3, "algo.warmup_steps": 5_000,
        "algo.eps_anneal_steps": 50_000, "optim.lr": 5e-4, "optim.max_grad_norm": 10.0,
        "groups.activation": "relu",
        "train.total_env_steps": 300_000,
        **({"env.kwargs.continuous_actions": True} if name in ("maddpg", "matd3") else {}),
    } for name in ("iql", "vdn", "qmix", "maddpg", "matd3")},
    "ippo_tiny": {
        "env.task": "toy/coop_match", "env.num_envs": 8, "algo.num_steps": 16,
        "algo.update_epochs": 4, "algo.num_minibatches": 2, "optim.lr": 3e-3,
        "train.total_env_steps": 8_000, "train.log_every": 2_000,
        "train.checkpoint_every": 4_000,
    },
}

# QMIX held near the observed team return (RES's penalty, weak) with half qmix_mpe's
# learning rate: stable on spread, where qmix_mpe's Q_tot grows past zero and its return
# collapses (README, "Sample efficiency").
HPSETS["qmix_res_mpe"] = {**HPSETS["qmix_mpe"], "optim.lr": 2.5e-4, "algo.return_penalty": 0.01}

# qmix_res_mpe's agent Q networks reading spread's observation through the entity encoder
# (the MLP elsewhere, groups.entity_layout=auto), held down by the strong penalty (0.1; the
# weak one let these networks' Q_tot diverge): QMIX's winner of the sample-efficiency
# search (README, "Sample efficiency").
HPSETS["qmix_entity_mpe"] = {**HPSETS["qmix_res_mpe"], "groups.encoder": "auto",
                             "groups.entity_layout": "auto", "algo.return_penalty": 0.1}

# ippo_rnn_mpe's GRU agents reading spread's observation through the entity encoder before
# the GRU (the MLP elsewhere, groups.entity_layout=auto): the GRU agents' winner of the
# sample-efficiency search (README, "Sample efficiency").
HPSETS["ippo_rnn_entity_mpe"] = {**HPSETS["ippo_rnn_mpe"], "groups.encoder": "auto",
                                 "groups.entity_layout": "auto"}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flat_keys(cls: type = Config, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Every dotted key of the config with its type and help text."""
    keys: dict[str, tuple[Any, str]] = {}
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys.update(flat_keys(typing.cast(type, hint), name + "."))
        else:
            keys[name] = (hint, f.metadata.get("help", ""))
    return keys


def _closest(key: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    # Also try matching on the last component, which catches a right key in the wrong section.
    tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
    tail = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.8)
    if tail:
        return tails[tail[0]]
    return match[0] if match else ""


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested sections to dotted keys; dict-valued fields (``env.kwargs``) stay whole."""
    keys = flat_keys()
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = prefix + str(name)
        if isinstance(value, Mapping) and key not in keys:
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def apply(config: Config, updates: Mapping[str, Any]) -> Config:
    """Return ``config`` with dotted-key ``updates`` applied and checked.

    Keys under a dict-valued field (``env.kwargs.N``) set one entry of that dict.
    """
    return from_dict(_updated(to_dict(config), updates))


def _updated(tree: dict[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` with ``updates`` set, each value parsed and type-checked (ranges come later,
    once every layer is in: a file and the overrides may each change half of a pair)."""
    keys = flat_keys()
    for key, value in updates.items():
        if key in keys:
            _set(tree, key, coerce(key, value, keys[key][0]))
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if parent in keys and typing.get_origin(_strip_optional(keys[parent][0])) is dict:
            sub = dict(tree_get(tree, parent) or {})
            sub[key.rsplit(".", 1)[1]] = _parse_entry(key, value)
            _set(tree, parent, sub)
            continue
        section = [k for k in keys if k.startswith(f"{key}.")]
        if section:
            raise ConfigError(f"{key}: a section; expected a mapping of its keys "
                              f"({', '.join(section[:3])}, ...), got {value!r}; e.g. "
                              f"{section[0]}=...")
        closest = _closest(key, keys)
        raise ConfigError(
            f"unknown config key {key!r}; did you mean {closest!r}? "
            "(`marl train --help` lists every key)"
        )
    return tree


def _parse_entry(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"{key}: could not parse {value!r}: {yaml_error_text(error)}") from None


def _strip_optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def tree_get(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(tree: Mapping[str, Any], cls: type = Config) -> Any:
    """Build ``cls`` from a nested mapping; a whole :class:`Config` is checked against
    every rule of :mod:`marl.config_rules`."""
    if not isinstance(tree, Mapping):
        section = f"section {cls.__name__}" if cls is not Config else "the config"
        raise ConfigError(f"{section}: expected a mapping of keys, got {tree!r} "
                          f"({type(tree).__name__})")
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in tree.items():
        if name not in names:
            raise ConfigError(f"unknown config key {name!r} in section {cls.__name__}; "
                              f"did you mean {_closest(name, names)!r}?")
        hint = hints[name]
        is_section = isinstance(hint, type) and dataclasses.is_dataclass(hint)
        kwargs[name] = from_dict(value, hint) if is_section else value
    built = cls(**kwargs)
    if cls is Config:
        hints = {key: hint for key, (hint, _) in flat_keys().items()}
        check_values(flatten(to_dict(built)), hints)
    return built


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from the command line."""
    updates: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r} (for example optim.lr=3e-4)")
        key, value = item.split("=", 1)
        updates[key.strip()] = value
    return updates


def load(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
         hpset: str | None = None) -> Config:
    """Build a config from defaults, an hpset, a YAML file and overrides, in that order.

    A YAML file may name an ``hpset:`` at its top level. The layers are checked together at
    the end, so a file and the overrides may each set one key of a pair.
    """
    updates: dict[str, Any] = {}
    if path is not None:
        tree = _read_yaml(Path(path))
        hpset = tree.pop("hpset", hpset)
        updates.update(flatten(tree))
    overrides = dict(overrides or {})
    hpset = overrides.pop("hpset", hpset)
    tree = to_dict(Config())
    if hpset is not None:
        if not isinstance(hpset, str) or hpset not in HPSETS:
            raise ConfigError(f"unknown hpset {hpset!r}; available: {', '.join(sorted(HPSETS))}")
        tree = _updated(tree, HPSETS[hpset])
    try:
        tree = _updated(tree, updates)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    tree = _updated(tree, overrides)
    try:
        return typing.cast(Config, from_dict(tree))
    except ConfigError as error:
        from_file = [key for key in updates if key not in overrides]
        if path is not None and any(str(error).startswith(f"{key}:") for key in from_file):
            raise ConfigError(f"{path}: {error}") from None
        raise


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file; a missing, unreadable or invalid file is refused."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file "
                          "(e.g. --config runs/X/config.yaml)")
    if path.is_dir():
        hint = (f" (the run's config is {path / 'config.yaml'})"
                if (path / "config.yaml").is_file() else "")
        raise ConfigError(f"config file {path} is a directory, not a YAML file{hint}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read: {error}") from None
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_text(error)}") from None
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config keys (e.g. `optim: {{lr: 0.001}}`), got "
            f"{type(tree).__name__}")
    return tree


def dump(config: Config, path: str | Path, notes: Sequence[str] = ()) -> None:
    """Write the full resolved config as YAML (reloadable with :func:`load`).

    ``notes`` become ``#`` comment lines at the top: facts about the run that follow from
    the config and the task (such as what ``groups.encoder=auto`` chose), recorded for the
    reader without changing what the file loads as.
    """
    header = "".join(f"# {line}\n" for note in notes for line in note.splitlines())
    atomic_write_text(Path(path), header + yaml.safe_dump(to_dict(config), sort_keys=False))


def help_text() -> str:
    """Every key with its type, range, default and meaning, for ``--help``."""
    defaults = flatten(to_dict(Config()))
    lines = []
    for key, (hint, text) in flat_keys().items():
        type_name = getattr(hint, "__name__", str(hint).replace("typing.", ""))
        allowed = RANGES[key].describe() if key in RANGES else ""
        type_name += f" {allowed}" if allowed else ""
        lines.append(f"  {key:<26} {text} [{type_name}, default {defaults.get(key)!r}]")
    return "\n".join(lines)
