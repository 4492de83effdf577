"""Time JaxMARL's own IPPO (``ippo_ff_mpe``) on one core, for the side-by-side figures.

Not part of the package or the tests: it needs JaxMARL's stock baseline next to it.

    python3 -m venv /tmp/jaxvenv && . /tmp/jaxvenv/bin/activate
    pip install jax==0.10.2 jaxmarl==0.2.0 distrax pyyaml
    # next to this file: baselines/IPPO/ippo_ff_mpe.py and config/ippo_ff_mpe.yaml from
    # JaxMARL's repository (the PyPI package does not ship its baselines)
    XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1' \\
        taskset -c 0 python run_jaxmarl.py 2000000 2

It runs the baseline's ``make_train`` at its yaml config with one seed and the given
total env steps, compiles it ahead of time (``jax.jit(...).lower(...).compile()``, timed
apart), then times whole training runs and prints one JSON line: compile seconds, run
seconds and env-steps/s per run, and the mean of the last update's logged
``returned_episode_returns``. wandb, which the baseline imports, is replaced by a stub.
"""

from __future__ import annotations

import json
import sys
import time
import types

sys.modules["wandb"] = types.SimpleNamespace(  # type: ignore[assignment]
    log=lambda *a, **k: None, init=lambda *a, **k: None)

import ippo_ff_mpe  # noqa: E402  (JaxMARL's baseline, beside this file)
import jax  # noqa: E402
import yaml  # noqa: E402


def main() -> None:
    total, runs = int(float(sys.argv[1])), int(sys.argv[2])
    with open("ippo_ff_mpe.yaml") as stream:
        config = yaml.safe_load(stream)
    config["TOTAL_TIMESTEPS"], config["NUM_SEEDS"] = total, 1
    batch = config["NUM_STEPS"] * config["NUM_ENVS"]
    env_steps = total // batch * batch
    rng = jax.random.PRNGKey(config["SEED"])
    start = time.perf_counter()
    train = jax.jit(ippo_ff_mpe.make_train(config)).lower(rng).compile()
    out: dict[str, object] = {"compile_s": round(time.perf_counter() - start, 1)}
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = jax.block_until_ready(train(rng))
        seconds.append(time.perf_counter() - start)
    out["run_s"] = [round(s, 2) for s in seconds]
    out["env_steps_per_s"] = [round(env_steps / s) for s in seconds]
    returns = result["metrics"]["returned_episode_returns"]
    out["last_logged_return"] = round(float(returns[-1].mean()), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
