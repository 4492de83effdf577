"""Sweep files: grids, repeat, hpsets, list-typed keys, validation, descriptors."""

from pathlib import Path

import pytest
import yaml

from marl.config import HPSETS, Config, ConfigError, flatten, to_dict
from marl.experiments.sweep import (
    descriptor,
    expand,
    flat_values,
    load_sweep,
    revision_label,
    varying_keys,
)

ISSUE_EXAMPLE = [{"hpset": "ippo_mpe", "groups.sharing": ["shared", "independent"],
                  "optim.lr": [0.0003, 0.001], "repeat": 3}]


def test_grid_times_repeat_is_the_product() -> None:
    runs = expand(ISSUE_EXAMPLE)
    assert len(runs) == 12
    combos = {(r.config.groups.sharing, r.config.optim.lr, r.seed) for r in runs}
    assert len(combos) == 12
    assert {r.seed for r in runs} == {1, 2, 3}
    assert all(r.config.algo.name == "ippo" for r in runs)


def test_nested_sections_expand_like_dotted_keys() -> None:
    nested = expand([{"optim": {"lr": [0.1, 0.2]}, "algo": {"gamma": 0.9}}])
    assert [r.config.optim.lr for r in nested] == [0.1, 0.2]
    assert all(r.config.algo.gamma == 0.9 for r in nested)


def test_precedence_block_beats_hpset_beats_defaults() -> None:
    tiny = HPSETS["ippo_tiny"]
    (run,) = expand([{"hpset": "ippo_tiny", "optim.lr": 0.5}])
    assert run.config.optim.lr == 0.5  # block key beats the hpset's 3e-3
    assert run.config.env.task == tiny["env.task"]  # hpset beats the default task
    assert run.config.algo.gamma == 0.95  # untouched default


def test_list_typed_key_plain_list_is_one_value_list_of_lists_is_a_grid() -> None:
    (single,) = expand([{"groups.hidden": [32, 32]}])
    assert single.config.groups.hidden == [32, 32]
    grid = expand([{"groups.hidden": [[16], [32, 32]]}])
    assert [r.config.groups.hidden for r in grid] == [[16], [32, 32]]


def test_seed_list_and_base_seed_with_repeat() -> None:
    assert [r.seed for r in expand([{"seed": [4, 9]}])] == [4, 9]
    assert [r.seed for r in expand([{"seed": 10, "repeat": 2}])] == [10, 11]


def test_bad_key_names_block_and_closest_key() -> None:
    with pytest.raises(ConfigError, match=r"block 2 \('typo'\).*'optim.lr'"):
        expand([{"seed": 1}, {"name": "typo", "optim.lrr": [0.1, 0.2]}])
    with pytest.raises(ConfigError, match="block 1.*repeat"):
        expand([{"repeat": 0}])
    with pytest.raises(ConfigError, match="block 1: optim.lr: an empty list"):
        expand([{"optim.lr": []}])
    with pytest.raises(ConfigError, match="block 1.*hpset"):
        expand([{"hpset": "nope"}])


def test_descriptors_are_stable_and_exclude_seed() -> None:
    runs = expand(ISSUE_EXAMPLE)
    keys = varying_keys(runs)
    assert keys == ["groups.sharing", "optim.lr"]
    names = [descriptor(revision_label("a1b2c3d4e5"), r, keys) for r in runs]
    again = [descriptor(revision_label("a1b2c3d4e5"), r, varying_keys(expand(ISSUE_EXAMPLE)))
             for r in expand(ISSUE_EXAMPLE)]
    assert names == again
    assert len(set(names)) == 4  # three seeds share each descriptor
    assert "a1b2c3d__groups.sharing=shared__optim.lr=0.001" in names
    assert all("seed" not in name for name in names)


def test_revision_label_marks_uncommitted_changes() -> None:
    assert revision_label("a1b2c3d4e5") == "a1b2c3d"
    dirty = revision_label("a1b2c3d4e5", "diff --git a/x b/x")
    assert dirty.startswith("a1b2c3d-dirty") and dirty != revision_label("a1b2c3d4e5", "other")


def test_flat_values_agrees_with_config_flatten() -> None:
    assert flat_values(Config()) == flatten(to_dict(Config()))


def test_descriptor_shows_keys_that_differ_through_hpsets() -> None:
    runs = expand([{"hpset": "ippo_mpe"}, {"hpset": "mappo_mpe"}])
    assert varying_keys(runs) == ["algo.name"]


def test_a_list_of_hpsets_is_a_grid_axis() -> None:
    runs = expand([{"hpset": ["ippo_mpe", "vdn_mpe"], "optim.lr": [1e-3, 2e-3], "repeat": 2}])
    assert len(runs) == 2 * 2 * 2
    assert [(r.hpset, r.config.algo.name) for r in runs[::4]] == [("ippo_mpe", "ippo"),
                                                                  ("vdn_mpe", "vdn")]
    assert {r.config.optim.lr for r in runs} == {1e-3, 2e-3}  # block keys beat every hpset
    assert all(r.config.env.num_envs == HPSETS["vdn_mpe"]["env.num_envs"]
               for r in runs if r.hpset == "vdn_mpe")
    with pytest.raises(ConfigError, match="hpset: an empty list"):
        expand([{"hpset": []}])


def test_load_sweep_checks_the_shape(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(ISSUE_EXAMPLE))
    assert load_sweep(path) == ISSUE_EXAMPLE
    path.write_text("- 3\n")
    with pytest.raises(ConfigError, match="list of experiment blocks"):
        load_sweep(path)


def test_descriptor_names_the_entry_of_a_mapping_that_differs() -> None:
    runs = expand([{"hpset": ["vdn_mpe", "matd3_mpe"]},
                   {"env.kwargs.N": 4, "seed": 3}])
    keys = varying_keys(runs)
    assert "env.kwargs.continuous_actions" in keys and "env.kwargs.N" in keys
    assert "env.kwargs" not in keys
    names = [descriptor("a1b2c3d", run, keys) for run in runs]
    assert "env.kwargs.continuous_actions=True" in names[1]
    assert "env.kwargs.continuous_actions=None" in names[0]
    assert "env.kwargs.N=4" in names[2]


def test_config_files_are_read_from_the_sweep_files_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "fast.yaml").write_text("optim:\n  lr: 0.5\nalgo:\n  gamma: 0.8\n")
    (folder / "slow.yaml").write_text("hpset: ippo_mpe\noptim:\n  lr: 0.01\n")
    (folder / "s.yaml").write_text(yaml.safe_dump(
        [{"hpset": "ippo_tiny", "config": ["fast.yaml", "slow.yaml"], "algo.gamma": 0.7}]))
    monkeypatch.chdir(tmp_path)  # neither the sweep's folder nor where the configs are
    blocks = load_sweep(Path("sweeps/s.yaml"))
    assert blocks[0]["config"] == [str(folder.resolve() / "fast.yaml"),
                                   str(folder.resolve() / "slow.yaml")]
    fast, slow = expand(blocks)  # a list of files is one more grid axis
    assert fast.config.optim.lr == 0.5  # the file beats the block's hpset ...
    assert fast.config.env.task == HPSETS["ippo_tiny"]["env.task"]  # ... which still applies
    assert fast.config.algo.gamma == slow.config.algo.gamma == 0.7  # block keys beat files
    assert slow.config.env.task == Config().env.task  # the file's hpset replaced the block's
    assert {"optim.lr", "env.task"} <= set(varying_keys([fast, slow]))


def test_a_missing_config_file_names_the_block_and_the_path(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump([{"seed": 1}, {"config": "base.yaml"}]))
    missing = f"block 2: config file {tmp_path}/base.yaml does not exist"
    with pytest.raises(ConfigError, match=missing):
        expand(load_sweep(tmp_path / "s.yaml"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump([{"config": 3}]))
    with pytest.raises(ConfigError, match="block 1: config: expected a YAML file path"):
        load_sweep(tmp_path / "s.yaml")
