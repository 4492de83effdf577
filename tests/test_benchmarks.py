"""Benchmarks' --quick modes write their files with the documented fields (never timed)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("marl")
MARL = str(_SCRIPT) if _SCRIPT.exists() else "marl"
"""The installed ``marl`` command of this interpreter's environment."""


def _bench_quick(name: str, cwd: Path) -> Path:
    """``marl bench NAME --quick --out out`` run in ``cwd``, outside the repository: the
    results must land in ``cwd/out`` and nowhere else in ``cwd``."""
    result = subprocess.run([MARL, "bench", name, "--quick", "--out", "out"], cwd=cwd,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [path.name for path in cwd.iterdir()] == ["out"]
    return cwd / "out"


def test_default_out_is_the_checkouts_results_folder_from_any_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.common import add_output_arguments
    from benchmarks.sharing import output_folders

    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_output_arguments(parser, "backends", "tiny")
    assert parser.parse_args([]).out == REPO / "benchmarks" / "results" / "backends"
    # The sharing benchmark's runs stay out of the committed results folder by default,
    # and go under --out when it is given.
    assert output_folders(None, None) == (REPO / "benchmarks" / "results" / "sharing",
                                          REPO / "runs" / "bench-sharing")
    assert output_folders(Path("x"), None) == (tmp_path / "x", tmp_path / "x" / "runs")
    assert output_folders(Path("x"), Path("r")) == (tmp_path / "x", tmp_path / "r")


def test_throughput_quick_writes_results(tmp_path: Path) -> None:
    out = _bench_quick("throughput", tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "throughput"
    assert {"torch", "cpu_count", "python"} <= set(results["machine"])
    rows = results["rows"]
    assert {row["vector"] for row in rows} == {"sync", "subprocess"}
    for row in rows:
        assert {"algo", "num_envs", "ceiling", "training", "ratio", "raw"} <= set(row)
        assert row["ceiling"]["min"] <= row["ceiling"]["median"] <= row["ceiling"]["max"]
        assert row["training"]["median"] > 0
        assert row["agent_steps_per_s"] == row["training"]["median"] * row["agents"]
        assert row["agents"] == 3  # simple_spread_v3
    assert "| algo | vector | num_envs |" in (out / "results.md").read_text()
    assert (out / "throughput.png").stat().st_size > 0


def _run_quick(module: str, cwd: Path) -> dict:
    out = _bench_quick(module, cwd)
    for name in ("results.json", "results.md", f"{module}.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == module
    assert {"torch", "cpu_count", "python"} <= set(results["machine"])
    assert results["threads"] == 1
    return results


def _check_summary(stats: dict) -> None:
    assert 0 < stats["min"] <= stats["median"] <= stats["max"]


def test_backends_quick_writes_results(tmp_path: Path) -> None:
    results = _run_quick("backends", tmp_path)
    rows = results["rows"]
    kinds = {"loop", "fork", "batched", "shared"}
    # Every kind for the MLP, the GRU network (run over a short sequence) and the CNN.
    assert {(row["size"], row["kind"]) for row in rows} == {
        (size, kind) for size in ("2x64", "gru64", "cnn") for kind in kinds}
    for row in rows:
        assert {"size", "n", "batch", "seq", "threads", "device", "forward", "train"} <= set(row)
        assert row["threads"] == 1
        assert row["seq"] == (4 if row["size"] == "gru64" else None)
        for mode in ("forward", "train"):
            _check_summary(row[mode])
            assert len(row[mode]["blocks"]) >= 2
    assert results["recurrent"] == {"gru64": {"rnn_hidden": 64, "seq": 4}}
    assert results["encoders"] == {"cnn": {"obs_shape": [7, 7, 3], "hidden": [64, 64]}}
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| N | batch/agent | loop | fork | batched | shared |" in table
    assert "### gru64 GRU over 4 steps, train + backward + Adam" in table
    assert "### cnn encoder on 7x7x3 + MLP 2x64, forward" in table


def test_optimiser_quick_writes_results(tmp_path: Path) -> None:
    results = _run_quick("optimiser", tmp_path)
    rows = results["rows"]
    assert len({row["variant"] for row in rows}) == len(rows) >= 4
    by_variant = {row["variant"]: row for row in rows}
    # One Adam per agent (plus none left over) against one Adam in all.
    assert by_variant["loop/CommonOptimizer/per_agent"]["optimizers"] == 2
    assert by_variant["loop/common/foreach"]["optimizers"] == 1
    for row in rows:
        assert "error" in row or row["step"]["median"] > 0
        if "step" in row:
            _check_summary(row["step"])
    assert "| variant | N=2 |" in (tmp_path / "out" / "results.md").read_text()


def test_scaling_quick_writes_results(tmp_path: Path) -> None:
    results = _run_quick("scaling", tmp_path)
    rows = results["rows"]
    assert {row["kind"] for row in rows} == {"shared", "batched", "fork", "selective"}
    by_kind = {row["kind"]: row for row in rows}
    # Independent networks hold about N times the shared network's parameters.
    assert by_kind["batched"]["parameters"] == by_kind["fork"]["parameters"]
    assert by_kind["batched"]["parameters"] > by_kind["shared"]["parameters"]
    for row in rows:
        for key in ("rollout", "update", "iteration"):
            _check_summary(row[key])
        assert row["peak_rss_mib"] >= row["rss_before_learner_mib"] > 0
        assert row["env_steps_per_iteration"] == results["num_envs"] * results["num_steps"]
    assert "| N | kind | rollout ms |" in (tmp_path / "out" / "results.md").read_text()


def test_sharing_quick_from_another_directory_writes_everything_under_out(
        tmp_path: Path) -> None:
    # Launched outside the repository with a relative --out: the sweeps still run this
    # checkout's revision, and their runs go under --out, not under the current directory.
    result = subprocess.run([MARL, "bench", "sharing", "--quick", "--out", "rel/out"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = (tmp_path / "rel" / "out").resolve()
    assert [path.name for path in tmp_path.iterdir()] == ["rel"]
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "sharing"
    rows = results["rows"]
    # 4 settings (shared with and without IDs, independent, selective) x 2 seeds, each its
    # own run; the selective runs clustered after their warm-up.
    assert len(rows) == 8 and len({row["setting"] for row in rows}) == 4
    selective = [row for row in rows if "sharing=selective" in row["setting"]]
    assert len(selective) == 2
    for row in selective:
        assert (Path(row["run_dir"]) / "sharing.json").is_file()
    assert {row["seed"] for row in rows} == {1, 2}
    for row in rows:
        assert row["best_return"] >= row["final_return"] - 1e-9  # max >= mean of the last 3
        assert row["env_steps"] >= 512 and row["wall_time_s"] > 0
        assert Path(row["run_dir"]).resolve().is_relative_to(out / "runs" / "quick")
    for name in ("report.md", "marl_eval.json", "curves_episode_return_env_steps.png",
                 "curves_episode_return_wall_time.png"):
        assert (out / "quick" / name).stat().st_size > 0, name
    assert "| group | seeds |" in (out / "results.md").read_text()


def test_marl_bench_names_the_benchmarks_on_a_typo() -> None:
    result = subprocess.run([MARL, "bench", "sharng"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
    assert "unknown benchmark 'sharng'" in result.stderr and "sharing" in result.stderr


def test_frames_quick_writes_results(tmp_path: Path) -> None:
    results = _run_quick("frames", tmp_path)
    assert results["frames"] == ["world", "agent"]
    rows = results["rows"]
    assert sorted((row["frame"], row["seed"]) for row in rows) == [("agent", 1), ("world", 1)]
    for row in rows:
        assert len(row["env_steps"]) == len(row["returns"]) >= 1
        assert row["total_env_steps"] >= results["env_steps_per_run"]
    for frame in ("world", "agent"):
        for score in ("final", "mean_over_training"):
            entry = results["summary"][frame][score]
            assert entry["seeds"] == 1 and len(entry["per_seed"]) == 1
            for statistic in ("mean", "iqm"):
                low, high = entry[statistic]["ci95"]
                assert low <= entry[statistic]["value"] <= high
    # An upper bound on the return: shortest paths cost at least nothing and pay at most 1.
    assert 0 < results["best_possible"]["agent"] <= results["best_possible"]["world"] <= 1
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| frame | seeds | final: mean [95% CI] |" in table


def test_torch_mpe_quick_writes_results(tmp_path: Path) -> None:
    results = _run_quick("torch_mpe", tmp_path)
    rows = results["rows"]
    env_rows = {row["task"]: row for row in rows if row["kind"] == "env"}
    assert set(env_rows) == {"torch/simple_spread_v3", "mpe2/simple_spread_v3"}
    assert env_rows["torch/simple_spread_v3"]["device"] == results["device"] == "cpu"
    training = [row for row in rows if row["kind"] == "training"]
    assert [row["task"] for row in training] == ["torch/simple_spread_v3"]
    for row in rows:
        _check_summary(row["env_steps_per_s"])
        assert len(row["raw"]) == results["repeats"]
    # Three agents: agent-steps are three env-steps.
    assert training[0]["agent_steps_per_s"]["median"] == 3 * training[0]["env_steps_per_s"][
        "median"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| task | num_envs | mpe2 | torch | torch / mpe2 |" in table
    assert "| task | device | num_envs | env-steps/s | agent-steps/s |" in table


def test_throughput_recurrent_reports_gru_over_mlp(tmp_path: Path) -> None:
    """``--recurrent`` trains the MLP and the GRU agent and tables their ratio."""
    result = subprocess.run([MARL, "bench", "throughput", "--quick", "--recurrent", "--vectors",
                             "sync", "--out", "out"], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [row["algo"] for row in rows] == ["ippo:groups.sharing=shared",
                                             "ippo_rnn:groups.sharing=shared"]
    table = (tmp_path / "out" / "results.md").read_text()
    mlp, gru = (row["training"]["median"] for row in rows)
    assert f"| shared | sync | 2 | {mlp:,.0f} | {gru:,.0f} | {gru / mlp:.2f} |" in table


def test_profile_quick_splits_each_phase_by_kind(tmp_path: Path) -> None:
    """``marl bench profile --quick``: eager and compiled rows, each phase's profiled time
    split into the documented kinds, the compiled row with its compile time."""
    out = _bench_quick("profile", tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "profile" and results["threads"] == 1
    rows = results["rows"]
    assert [row["compiled"] for row in rows] == [False, True]
    eager, compiled = rows
    assert compiled["eager_reason"] is None and eager["eager_reason"] == "train.compile=false"
    assert compiled["compile_s"] > 0 and eager["compile_s"] == 0
    for row in rows:
        _check_summary(row["collect_ms"])
        _check_summary(row["env_steps_per_s"])
        for phase in ("collect", "update"):
            kinds = row["profile"][phase]
            assert set(kinds) == {"compiled graphs", "matmul", "other ops", "optimiser",
                                  "autograd", "guards & calls", "python", "wall"}
            assert all(value >= 0 for value in kinds.values()) and kinds["wall"] > 0
    assert eager["profile"]["update"]["compiled graphs"] == 0
    assert compiled["profile"]["update"]["compiled graphs"] > 0
    table = (out / "results.md").read_text()
    assert "| 2 | eager |" in table and "| 2 | compiled |" in table


def test_throughput_compiled_tables_compiled_over_eager(tmp_path: Path) -> None:
    """``--compiled`` trains each algorithm with train.compile=false and true and tables
    the ratio and the compile time."""
    result = subprocess.run([MARL, "bench", "throughput", "--quick", "--compiled", "--task",
                             "torch/simple_spread_v3", "--vectors", "sync", "--out", "out"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [row["algo"] for row in rows] == ["ippo:train.compile=false",
                                             "ippo:train.compile=true"]
    eager, compiled = rows
    assert eager["compile_s"] == 0 and compiled["compile_s"] > 0
    slow, fast = eager["training"]["median"], compiled["training"]["median"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert f"| ippo | 2 | {compiled['ceiling']['median']:,.0f} | {slow:,.0f} | {fast:,.0f} " \
           f"| {fast / slow:.2f} |" in table


def test_training_rate_leaves_out_graphs_that_compile_inside_the_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The throughput benchmark's training rate is taken between two metric lines and
    leaves out compile time, also where a graph compiles between them (the Q learners'
    one-graph update compiles on its second update)."""
    import marl.trainer
    from benchmarks.throughput import _training

    def fake_train(config):  # type: ignore[no-untyped-def]
        lines = [{"env_steps": 100, "wall_time": 30.0, "compile_time": 20.0},
                 {"env_steps": 200, "wall_time": 31.0, "compile_time": 20.0},
                 {"env_steps": 300, "wall_time": 37.0, "compile_time": 25.0},
                 {"env_steps": 1200, "wall_time": 40.0, "compile_time": 25.0}]
        with open(Path(config.run.dir) / "metrics.jsonl", "w") as stream:
            stream.writelines(json.dumps(line) + "\n" for line in lines)

    monkeypatch.setattr(marl.trainer, "train", fake_train)
    result = _training("torch/simple_spread_v3", 4, "sync", "ippo", 1200, [])
    # lines 2-4: 1,000 env steps in 9 s of which 5 s compiling
    assert result["env_steps_per_s"] == pytest.approx(1000 / 4.0)
    assert result["compile_s"] == 25.0
