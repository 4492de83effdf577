"""Config loading, overrides and their error messages."""

import re
from pathlib import Path

import pytest
import yaml

from marl.config import (
    CHOICES,
    RANGES,
    Config,
    ConfigError,
    apply,
    dump,
    flat_keys,
    flatten,
    from_dict,
    help_text,
    load,
    to_dict,
)
from marl.config_rules import coerce, numeric_type


def test_defaults_and_dotted_overrides() -> None:
    config = load(overrides={"optim.lr": "3e-4", "groups.sharing": "independent",
                             "env.kwargs.N": "5", "env.kwargs.continuous_actions": "true",
                             "groups.hidden": "[128, 128]", "seed": "7"})
    assert config.optim.lr == pytest.approx(3e-4)
    assert config.groups.sharing == "independent"
    assert config.env.kwargs == {"N": 5, "continuous_actions": True}
    assert config.groups.hidden == [128, 128]
    assert config.seed == 7
    assert Config().optim.lr != config.optim.lr  # defaults untouched (frozen)


def test_unknown_key_names_closest_valid_key() -> None:
    with pytest.raises(ConfigError, match="optim.lr"):
        load(overrides={"optim.lrr": "0.1"})
    with pytest.raises(ConfigError, match="train.total_env_steps"):
        load(overrides={"total_env_steps": "10"})
    with pytest.raises(ConfigError, match="groups.sharing"):
        load(overrides={"group.sharing": "shared"})


def test_bad_values_say_what_was_expected() -> None:
    with pytest.raises(ConfigError, match="expected one of shared, independent"):
        load(overrides={"groups.sharing": "sometimes"})
    with pytest.raises(ConfigError, match="env.num_envs: expected int"):
        load(overrides={"env.num_envs": "many"})
    with pytest.raises(ConfigError, match="key=value"):
        from marl.config import parse_overrides

        parse_overrides(["optim.lr"])


def test_yaml_round_trip_and_precedence(tmp_path: Path) -> None:
    config = load(overrides={"algo.name": "mappo", "env.kwargs.N": "4", "optim.lr": "0.002"})
    dump(config, tmp_path / "config.yaml")
    again = load(tmp_path / "config.yaml")
    assert again == config
    # Overrides beat the file, which beats the hpset, which beats the defaults.
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(
        {"hpset": "ippo_tiny", "optim": {"lr": 0.5}, "env": {"num_envs": 3}}))
    layered = load(tmp_path / "small.yaml", {"env.num_envs": "2"})
    assert layered.env.task == "toy/coop_match"  # from the hpset
    assert layered.optim.lr == 0.5  # from the file
    assert layered.env.num_envs == 2  # from the override


def test_bad_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="optim.lr"):
        load(tmp_path / "typo.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="unknown hpset 'nope'; available"):
        load(overrides={"hpset": "nope"})


def test_every_key_has_help() -> None:
    text = help_text()
    for key, (_, meaning) in flat_keys().items():
        assert meaning, f"{key} has no help text"
        assert key in text


def test_apply_keeps_frozen_original() -> None:
    base = Config()
    changed = apply(base, {"train.total_env_steps": 10})
    assert base.train.total_env_steps != 10 and changed.train.total_env_steps == 10


def test_input_wrapper_keys_parse_from_the_command_line() -> None:
    config = load(overrides={"env.frame_stack": "4", "env.action_repeat": "2",
                             "env.pixel_norm": "true", "env.pixel_channels": "[0, 2]",
                             "env.agent_centric": "{position: 2, points: [4, 6]}"})
    assert (config.env.frame_stack, config.env.action_repeat) == (4, 2)
    assert config.env.pixel_norm and config.env.pixel_channels == [0, 2]
    assert config.env.agent_centric == {"position": 2, "points": [4, 6]}
    config = load(overrides={"env.agent_centric.vectors": "[0]",
                             "env.agent_centric.heading_vector": "0"})
    assert config.env.agent_centric == {"vectors": [0], "heading_vector": 0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"env.frame_stack": "0"}, r"env.frame_stack: expected an integer >= 1, got 0"),
        ({"env.action_repeat": "-1"}, r"env.action_repeat: expected an integer >= 1, got -1"),
        ({"env.pixel_channels": "[0]"}, "env.pixel_norm is false"),
        ({"env.agent_centric": "{points: [4]}"}, "env.agent_centric: .*position is None"),
        ({"env.agent_centric": "{position: 0, vector: [2]}"}, "Did you mean 'vectors'"),
    ],
)
def test_bad_input_wrapper_values_are_refused_at_load(overrides: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(overrides=overrides)


# Keys that other parts of the config are adding; their rules may come before the keys do.
PENDING_KEYS = {"train.eval_every", "train.eval_episodes", "train.replay_checkpoint_mb",
                "train.eval_mode"}


def _numeric_keys() -> dict[str, object]:
    return {key: hint for key, (hint, _) in flat_keys().items()
            if numeric_type(hint)[0] is not None}


def test_every_numeric_key_has_a_range_rule() -> None:
    numeric = _numeric_keys()
    assert {"algo.gamma", "groups.hidden", "torch_threads", "env.pixel_channels"} <= set(numeric)
    assert not set(numeric) - set(RANGES), "add a rule to marl.config_rules.RANGES"
    # A rule under a misspelt key would never run.
    assert not set(RANGES) - set(flat_keys()) - PENDING_KEYS
    assert not set(CHOICES) - set(flat_keys()) - PENDING_KEYS


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_rule_example_is_accepted(key: str) -> None:
    if key not in flat_keys():
        pytest.skip(f"{key} is not a config key yet")
    needs = {"env.pixel_channels": {"env.pixel_norm": "true"}}.get(key, {})
    config = load(overrides={key: RANGES[key].example, **needs})
    hint = flat_keys()[key][0]
    assert flatten(to_dict(config))[key] == coerce(key, RANGES[key].example, hint)


@pytest.mark.parametrize("key", sorted(k for k, hint in _numeric_keys().items()
                                       if numeric_type(hint)[0] is float))
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_are_refused_for_every_float_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: expected .* got {value}; e\.g\. "):
        load(overrides={key: value})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo.gamma": "1.5"},
         r"^algo\.gamma: expected a number in \(0, 1\], got 1\.5; e\.g\. algo\.gamma=0\.99$"),
        ({"algo.gamma": "0"}, r"algo\.gamma: expected a number in \(0, 1\], got 0\.0"),
        ({"algo.gae_lambda": "0"}, r"algo\.gae_lambda: expected a number in \(0, 1\]"),
        ({"optim.lr": "0"}, r"optim\.lr: expected a number > 0, got 0\.0; e\.g\. optim\.lr="),
        ({"optim.eps": "-1e-5"}, r"optim\.eps: expected a number > 0"),
        ({"optim.max_grad_norm": "0"}, r"optim\.max_grad_norm: expected a number > 0 or None"),
        ({"algo.tau": "1.01"}, r"algo\.tau: expected a number in \[0, 1\]"),
        ({"algo.eps_start": "2"}, r"algo\.eps_start: expected a number in \[0, 1\]"),
        ({"algo.ent_coef": "-0.01"}, r"algo\.ent_coef: expected a number >= 0"),
        ({"algo.vf_coef": "0"}, r"algo\.vf_coef: expected a number > 0"),
        ({"env.num_envs": "0"}, r"env\.num_envs: expected an integer >= 1, got 0"),
        ({"algo.batch_size": "0"}, r"algo\.batch_size: expected an integer >= 1"),
        ({"algo.warmup_steps": "-1"}, r"algo\.warmup_steps: expected an integer >= 0"),
        ({"train.log_every": "0"}, r"train\.log_every: expected an integer >= 1"),
        ({"env.max_episode_steps": "0"}, r"env\.max_episode_steps: expected an integer >= 1 "
                                         r"or None"),
        ({"groups.hidden": "[0]"}, r"groups\.hidden: expected a list of integers >= 1"),
        ({"env.pixel_norm": "true", "env.pixel_channels": "[-1]"},
         r"env\.pixel_channels: expected a list of integers >= 0"),
        ({"seed": str(2**32)}, r"seed: expected an integer in \[0, 4294967295\]"),
        ({"torch_threads": "0"}, r"torch_threads: expected an integer >= 1 or None, got 0"),
        ({"algo.eps_start": "0.01"}, r"algo\.eps_end=0\.05 is above algo\.eps_start=0\.01"),
        ({"env.num_envs": "2", "algo.num_steps": "3", "algo.num_minibatches": "7"},
         r"algo\.num_minibatches=7 is more than the 6 samples of a rollout"),
        ({"algo.name": "vdn", "env.num_envs": "64", "algo.buffer_size": "100"},
         r"algo\.buffer_size=100 holds fewer than 2 steps of env\.num_envs=64"),
        ({"env.vector": "subprocess", "env.num_envs": "2", "env.num_workers": "3"},
         r"env\.num_workers=3 is more than env\.num_envs=2"),
        ({"groups.overrides": "{speaker: alone}"}, r"groups\.overrides\.speaker: expected one"),
    ],
)
def test_out_of_range_values_are_refused_in_one_line(overrides: dict[str, str],
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(overrides=overrides)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [{"algo.gamma": "1"}, {"algo.gae_lambda": "1"}, {"algo.tau": "0"}, {"algo.tau": "1"},
     {"optim.max_grad_norm": "None"}, {"torch_threads": "none"}, {"algo.ent_coef": "0"},
     {"algo.eps_start": "0.05"}, {"algo.warmup_steps": "0"}, {"seed": "0"},
     {"groups.hidden": "[]"},
     # Off-policy runs ignore minibatches; PPO ignores the replay buffer.
     {"algo.name": "vdn", "env.num_envs": "1", "algo.num_steps": "1"},
     {"env.num_envs": "64", "algo.buffer_size": "100"}],
)
def test_values_on_the_boundary_are_accepted(overrides: dict[str, str]) -> None:
    flat = flatten(to_dict(load(overrides=overrides)))
    keys = flat_keys()
    for key, value in overrides.items():
        assert flat[key] == coerce(key, value, keys[key][0])


def test_layers_are_checked_together_and_name_the_file(tmp_path: Path) -> None:
    # The file lowers eps_start below the default eps_end; the override lowers eps_end.
    (tmp_path / "low.yaml").write_text("algo:\n  eps_start: 0.01\n")
    config = load(tmp_path / "low.yaml", {"algo.eps_end": "0.001"})
    assert (config.algo.eps_start, config.algo.eps_end) == (0.01, 0.001)
    (tmp_path / "bad.yaml").write_text("algo:\n  gamma: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: algo\.gamma: expected a number in"):
        load(tmp_path / "bad.yaml")
    # An override of the same key is the value that arrived, not the file's.
    with pytest.raises(ConfigError, match=r"^algo\.gamma: .* got 3\.0"):
        load(tmp_path / "bad.yaml", {"algo.gamma": "3"})


def test_from_dict_checks_whole_configs_and_sections() -> None:
    with pytest.raises(ConfigError, match=r"algo\.gamma: expected a number in \(0, 1\]"):
        from_dict({"algo": {"gamma": 2.0}})
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number > 0, got 'fast' \(str\)"):
        from_dict({"optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"section OptimConfig: expected a mapping"):
        from_dict({"optim": 3})
    with pytest.raises(ConfigError, match="algo.name: expected one of"):
        from_dict({"algo": {"name": "ppo"}})
    assert from_dict({"algo": {"gamma": 0.9}}).algo.gamma == 0.9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"config file .*missing\.yaml does not exist"),
        ("optim: [1\n", r"c\.yaml: not valid YAML: line 2, column 1: "),
        (b"\xff\xfe", r"config file .*c\.yaml cannot be read"),
        ("optim: 3\n", r"c\.yaml: optim: a section; expected a mapping of its keys"),
    ],
)
def test_unusable_config_files_are_named(tmp_path: Path, content: str | bytes | None,
                                         message: str) -> None:
    path = tmp_path / ("missing.yaml" if content is None else "c.yaml")
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path)
