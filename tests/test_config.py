"""Config loading, overrides and their error messages."""

from pathlib import Path

import pytest
import yaml

from marl.config import Config, ConfigError, apply, dump, flat_keys, help_text, load


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
