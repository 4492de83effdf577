"""What every config value must be: the allowed choices, the numeric ranges, the combinations.

:data:`CHOICES` lists the values a string key takes, :data:`RANGES` the numbers a numeric
key takes (every int and float key has a rule; a test enforces it), and
:func:`check_combinations` the few rules that tie keys together. :func:`check_values` runs
all three over a config's dotted keys; :func:`marl.config.from_dict` calls it, so YAML
files, hyperparameter sets and ``key=value`` overrides all pass through it.

Every message is one line: the key, what it accepts, what arrived, and a value that works
(``algo.gamma: expected a number in (0, 1], got 1.5; e.g. algo.gamma=0.99``).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from marl.algos.registry import ALGORITHMS


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Rule:
    """The finite numbers a key accepts: between ``low`` and ``high``, each bound open,
    closed or absent. ``example`` is a value that passes, shown in every message."""

    example: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, number: float) -> bool:
        if not math.isfinite(number):
            return False
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return False
        return self.high is None or (number < self.high if self.high_open else number <= self.high)

    def describe(self) -> str:
        """``in (0, 1]``, ``>= 1``, ``> 0`` or ``""`` (any finite number)."""
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{low}, {high}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return ""


def at_least(low: float, example: str) -> Rule:
    return Rule(example, low=low)


def positive(example: str) -> Rule:
    return Rule(example, low=0.0, low_open=True)


def within(low: float, high: float, example: str, low_open: bool = False) -> Rule:
    return Rule(example, low=low, high=high, low_open=low_open)


def finite(example: str) -> Rule:
    return Rule(example)


CHOICES: dict[str, tuple[str, ...]] = {
    "env.vector": ("sync", "subprocess"),
    "algo.name": tuple(ALGORITHMS),
    "algo.target_update": ("soft", "hard"),
    "algo.reward_norm": ("none", "running", "episode"),
    "algo.critic_input": ("state", "obs_state"),
    "groups.sharing": ("shared", "independent", "selective"),
    "groups.backend": ("batched", "fork", "loop"),
    "groups.activation": ("tanh", "relu"),
    "groups.encoder": ("auto", "mlp", "cnn", "entity"),
    "groups.entity_pool": ("attention", "mean", "max"),
    "groups.rnn": ("none", "gru"),
    "optim.clip_mode": ("global", "group"),
    "optim.mode": ("common", "per_agent"),
    "optim.impl": ("fused", "foreach", "loop"),
    "train.eval_mode": ("mode", "sample"),
    "device": ("cpu", "cuda", "auto"),
}

# Seeds feed numpy's generator, which takes 0 .. 2**32 - 1.
_MAX_SEED = 2**32 - 1

RANGES: dict[str, Rule] = {
    "env.num_envs": at_least(1, "8"),
    "env.num_workers": at_least(1, "2"),
    "env.max_episode_steps": at_least(1, "25"),
    "env.action_repeat": at_least(1, "1"),
    "env.frame_stack": at_least(1, "1"),
    "env.pixel_channels": at_least(0, "[0, 1, 2]"),
    "algo.num_steps": at_least(1, "50"),
    "algo.gamma": within(0.0, 1.0, "0.99", low_open=True),
    # (0, 1] as gamma: lambda = 1 is Monte Carlo; lambda = 0 (one-step TD advantages) is
    # refused so a typo cannot silently switch off the advantage trace.
    "algo.gae_lambda": within(0.0, 1.0, "0.95", low_open=True),
    "algo.update_epochs": at_least(1, "5"),
    "algo.num_minibatches": at_least(1, "2"),
    "algo.chunk_rows": at_least(0, "4800"),
    "algo.clip_coef": positive("0.2"),
    "algo.ent_coef": at_least(0.0, "0.01"),
    "algo.ent_coef_final": at_least(0.0, "0.0"),
    "algo.vf_coef": positive("0.5"),
    "algo.log_std_init": finite("-0.5"),
    "algo.buffer_size": at_least(1, "200000"),
    "algo.batch_size": at_least(1, "256"),
    "algo.warmup_steps": at_least(0, "5000"),
    "algo.gradient_steps": at_least(1, "1"),
    "algo.n_step": at_least(1, "3"),
    "algo.tau": within(0.0, 1.0, "0.005"),
    "algo.target_update_interval": at_least(1, "200"),
    "algo.eps_start": within(0.0, 1.0, "1.0"),
    "algo.eps_end": within(0.0, 1.0, "0.05"),
    "algo.eps_anneal_steps": at_least(0, "50000"),
    "algo.mixer_embed": at_least(1, "32"),
    "algo.return_penalty": at_least(0.0, "0.0"),
    "algo.exploration_noise": at_least(0.0, "0.1"),
    "algo.policy_delay": at_least(1, "2"),
    "algo.target_noise": at_least(0.0, "0.2"),
    "algo.target_noise_clip": positive("0.5"),
    "groups.hidden": at_least(1, "[64, 64]"),
    "groups.rnn_hidden": at_least(1, "64"),
    "groups.selective_warmup": at_least(1, "10000"),
    "groups.clusters": at_least(1, "3"),
    "algo.seq_len": at_least(1, "25"),
    "algo.burn_in": at_least(0, "10"),
    "optim.lr": positive("0.0003"),
    "optim.eps": positive("1e-05"),
    "optim.max_grad_norm": positive("0.5"),
    "train.total_env_steps": at_least(1, "300000"),
    "train.log_every": at_least(1, "10000"),
    "train.checkpoint_every": at_least(1, "50000"),
    "train.eval_every": at_least(0, "20000"),
    "train.eval_episodes": at_least(1, "32"),
    "train.replay_checkpoint_mb": at_least(0, "2048"),
    "seed": within(0, _MAX_SEED, "1"),
    "torch_threads": at_least(1, "1"),
}
"""Numeric rules by dotted key. A rule for a key the config does not have is skipped."""


def numeric_type(hint: Any) -> tuple[type | None, bool, bool]:
    """``(int or float or None, None allowed, a list of them)`` for a config type hint."""
    options = (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union,
               types.UnionType) else (hint,))
    optional = type(None) in options
    for option in options:
        is_list = typing.get_origin(option) in (list, tuple)
        base = (typing.get_args(option) or (None,))[0] if is_list else option
        if base in (int, float):
            return base, optional, is_list
    return None, optional, False


def check_number(key: str, value: Any, hint: Any, rule: Rule) -> None:
    """Raise :class:`ConfigError` unless ``value`` fits the type ``hint`` and ``rule``."""
    base, optional, is_list = numeric_type(hint)
    if value is None and optional:
        return
    numbers = value if is_list and isinstance(value, (list, tuple)) else [value]
    wanted = int if base is int else (int, float)
    fits = (not is_list or isinstance(value, (list, tuple))) and all(
        isinstance(n, wanted) and not isinstance(n, bool) and rule.admits(n) for n in numbers)
    if fits:
        return
    noun = "an integer" if base is int else "a number"
    if rule.low is None and rule.high is None and base is not int:
        noun = "a finite number"
    expected = f"{noun} {rule.describe()}".rstrip()
    if is_list:
        expected = f"a list of {'integers' if base is int else 'numbers'} {rule.describe()}"
    if optional:
        expected += " or None"
    shown = f"{value!r} ({type(value).__name__})" if isinstance(value, (str, bool)) else (
        repr(value))
    raise ConfigError(f"{key}: expected {expected.rstrip()}, got {shown}; "
                      f"e.g. {key}={rule.example}")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {', '.join(allowed)}; got {value!r}; "
                          f"e.g. {key}={allowed[0]}")


def check_values(values: Mapping[str, Any], hints: Mapping[str, Any]) -> None:
    """Check a config's dotted ``values`` (types from ``hints``) against every rule."""
    for key, allowed in CHOICES.items():
        if key in values:
            check_choice(key, values[key], allowed)
    for group, sharing in (values.get("groups.overrides") or {}).items():
        check_choice(f"groups.overrides.{group}", sharing, CHOICES["groups.sharing"])
    check_selective(values)  # before the ranges: its message names 'auto' too
    check_compile(values.get("train.compile", "auto"))
    for key, rule in RANGES.items():
        if key in values and key in hints:
            if isinstance(values[key], str) and str in typing.get_args(hints[key]):
                continue  # a word the key also takes ('auto'): its own rule checks it
            check_number(key, values[key], hints[key], rule)
    if values.get("run.dir") == "":  # Path("") is the current folder: a run would fill it
        raise ConfigError("run.dir: expected a directory path or None, got ''; "
                          "e.g. run.dir=runs/my_run")
    check_entity_layout(values.get("groups.entity_layout"), values.get("groups.encoder", "auto"))
    check_combinations(values)


ENTITY_LAYOUT_PRESETS = ("auto", "mpe_spread", "mpe_reference", "mpe_speaker_listener")
"""Named ``groups.entity_layout`` values (:mod:`marl.group_nets` builds them; ``auto``
takes the one named for the task where it measured better than the MLP)."""

_SLICE_KEYS = {"kind": str, "start": int, "count": int, "width": int, "always_present": bool}
_SLICE_EXAMPLE = "[{kind: landmark, start: 4, count: 3, width: 2}]"


def check_entity_layout(layout: Any, encoder: str) -> None:
    """``groups.entity_layout``: ``None``, a preset name or a list of slice mappings."""
    key = "groups.entity_layout"
    if layout is None:
        return
    if encoder in ("mlp", "cnn"):
        raise ConfigError(f"{key} feeds the entity encoder, but groups.encoder={encoder}; set "
                          f"groups.encoder=entity (or auto), or {key}=null")
    if isinstance(layout, str):
        check_choice(key, layout, ENTITY_LAYOUT_PRESETS)
        return
    if not isinstance(layout, (list, tuple)) or not layout:
        raise ConfigError(f"{key}: expected a preset ({', '.join(ENTITY_LAYOUT_PRESETS)}) or "
                          f"a non-empty list of slices, got {layout!r}; "
                          f"e.g. {key}={_SLICE_EXAMPLE}")
    for index, item in enumerate(layout):
        missing = [name for name in ("kind", "start", "count", "width")
                   if not isinstance(item, Mapping) or name not in item]
        extra = [name for name in item if name not in _SLICE_KEYS] if isinstance(
            item, Mapping) else []
        wrong = [name for name, kind in _SLICE_KEYS.items()
                 if isinstance(item, Mapping) and name in item and (
                     not isinstance(item[name], kind)
                     or (kind is int and isinstance(item[name], bool)))]
        if missing or extra or wrong:
            problem = "; ".join(filter(None, [
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(map(str, extra))}" if extra else "",
                f"wrong type for {', '.join(wrong)}" if wrong else ""]))
            raise ConfigError(f"{key}[{index}]: expected {{kind: str, start: int, count: int, "
                              f"width: int[, always_present: bool]}}, got {item!r} ({problem}); "
                              f"e.g. {key}={_SLICE_EXAMPLE}")


def check_combinations(values: Mapping[str, Any]) -> None:
    """Rules over several keys, for values that passed their own rules."""
    if values["algo.eps_end"] > values["algo.eps_start"]:
        raise ConfigError(
            f"algo.eps_end={values['algo.eps_end']} is above algo.eps_start="
            f"{values['algo.eps_start']}; exploration should fall, e.g. algo.eps_start=1.0 "
            "algo.eps_end=0.05")
    num_envs = values["env.num_envs"]
    if ALGORITHMS[values["algo.name"]].on_policy:
        samples = values["algo.num_steps"] * num_envs
        if values["algo.num_minibatches"] > samples:
            raise ConfigError(
                f"algo.num_minibatches={values['algo.num_minibatches']} is more than the "
                f"{samples} samples of a rollout (algo.num_steps={values['algo.num_steps']} x "
                f"env.num_envs={num_envs}); e.g. algo.num_minibatches=1")
    elif values["algo.buffer_size"] < 2 * num_envs:
        raise ConfigError(
            f"algo.buffer_size={values['algo.buffer_size']} holds fewer than 2 steps of "
            f"env.num_envs={num_envs} copies; e.g. algo.buffer_size={max(200_000, 2 * num_envs)}")
    if values.get("algo.critic_input", "state") != "state" and not (
            ALGORITHMS[values["algo.name"]].on_policy
            and ALGORITHMS[values["algo.name"]].global_state):
        raise ConfigError(
            f"algo.critic_input={values['algo.critic_input']} chooses what MAPPO's "
            f"centralised critic reads, but algo.name={values['algo.name']} has none; use "
            "algo.name=mappo, or algo.critic_input=state")
    if values.get("algo.return_penalty", 0.0) > 0.0:
        if values["algo.name"] not in ("vdn", "qmix"):
            raise ConfigError(
                f"algo.return_penalty={values['algo.return_penalty']} holds a mixed team value "
                f"near the team's return, but algo.name={values['algo.name']} has none; use "
                "algo.name=vdn or qmix, or algo.return_penalty=0")
        if values.get("groups.rnn", "none") == "gru":
            raise ConfigError(
                "algo.return_penalty is computed on replayed transitions, not on the "
                "sequences groups.rnn=gru trains on; set algo.return_penalty=0 or "
                "groups.rnn=none")
    check_recurrent(values)
    workers = values["env.num_workers"]
    if values["env.vector"] == "subprocess" and workers is not None and workers > num_envs:
        raise ConfigError(
            f"env.num_workers={workers} is more than env.num_envs={num_envs} (each worker "
            f"steps at least one copy); e.g. env.num_workers={num_envs}")


def check_compile(value: Any) -> None:
    """``train.compile``: true, false or 'auto'."""
    if value is True or value is False or value == "auto":
        return
    raise ConfigError(f"train.compile: expected true, false or 'auto', got {value!r}; e.g. "
                      "train.compile=false")


def check_selective(values: Mapping[str, Any]) -> None:
    """``groups.clusters``: ``auto`` or an integer >= 1 (the upper bound, the group's size,
    is checked when the env is known: :func:`marl.selective.runtime.check_clusters`)."""
    clusters = values.get("groups.clusters", "auto")
    if clusters == "auto":
        return
    if isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 1:
        raise ConfigError(f"groups.clusters: expected 'auto' or an integer >= 1 (the number "
                          f"of networks of a selective group), got {clusters!r}; e.g. "
                          "groups.clusters=auto or groups.clusters=3")


def check_recurrent(values: Mapping[str, Any]) -> None:
    """``groups.rnn=gru``: an algorithm that trains recurrent agents, a trunk without the
    feed-forward options, PPO sequences that tile the rollout."""
    if values.get("groups.rnn", "none") != "gru":
        return
    name = values["algo.name"]
    spec = ALGORITHMS[name]
    if not spec.recurrent:
        able = ", ".join(n for n, s in ALGORITHMS.items() if s.recurrent)
        raise ConfigError(f"groups.rnn=gru: algo.name={name} trains feed-forward agents only; "
                          f"use one of {able}, or groups.rnn=none")
    for key in ("groups.layer_norm", "groups.residual"):
        if values.get(key):
            raise ConfigError(f"{key}=true shapes the feed-forward trunk, which groups.rnn=gru "
                              f"replaces (input layers -> GRU -> head); set {key}=false or "
                              "groups.rnn=none")
    seq_len, steps = values.get("algo.seq_len"), values["algo.num_steps"]
    if not spec.on_policy:
        return
    if seq_len is not None and steps % seq_len:
        raise ConfigError(
            f"algo.seq_len={seq_len} does not divide algo.num_steps={steps}: the rollout is "
            f"cut into chunks of algo.seq_len steps; e.g. algo.seq_len={steps} (or null)")
    chunks = steps // (seq_len or steps) * values["env.num_envs"]
    if values["algo.num_minibatches"] > chunks:
        raise ConfigError(
            f"algo.num_minibatches={values['algo.num_minibatches']} is more than the "
            f"{chunks} sequences of a rollout (algo.num_steps / algo.seq_len x "
            f"env.num_envs); minibatches split sequences, never time inside one; e.g. "
            f"algo.num_minibatches={max(1, min(chunks, 2))}")


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint``; parse strings from the command line.

    Ranges are not checked here (:func:`check_values` does, once every layer is in).
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be None")
    if isinstance(value, str) and hint is float:
        try:  # YAML 1.1 reads "3e-4" as a string; Python reads it as the float it means
            return float(value)
        except ValueError:
            pass
    if isinstance(value, str) and hint is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"{key}: could not parse {value!r}: {yaml_error_text(error)}; "
                              f"e.g. {key}={_example(key, hint)}") from None
    expected = origin or hint
    if expected is Any:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if expected in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return [coerce(key, v, inner) for v in value]
    if expected is dict and isinstance(value, dict):
        return dict(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{key}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__}); "
            f"e.g. {key}={_example(key, hint)}")
    return value


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (list, tuple):
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _example(key: str, hint: Any) -> str:
    if key in RANGES:
        return RANGES[key].example
    if key in CHOICES:
        return CHOICES[key][0]
    if typing.get_origin(hint) is dict:
        return "{name: value}"
    return {int: "10", float: "0.001", bool: "true", str: "name"}.get(hint, "...")


def yaml_error_text(error: yaml.YAMLError) -> str:
    """A YAML parser error on one line: where it is and what is wrong."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = ": ".join(filter(None, [error.context, error.problem])) or "invalid YAML"
        return f"{where}{what}"
    return " ".join(str(error).split())


def _number_text(number: float | None) -> str:
    if number is None:
        return ""
    return str(int(number)) if float(number).is_integer() else repr(number)
