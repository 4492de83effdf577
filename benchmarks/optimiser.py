"""One common Adam over all agents' parameters against one Adam per agent.

    python -m benchmarks.optimiser [--quick] [--out DIR] [--n 2 8 32] [--sizes 2x64]
                                   [--threads 1]

Times one ``step()`` (gradients already in place, so nothing but the optimiser runs) for
N agents' MLPs, in a fresh process per variant:

- ``loop`` modules (one ``nn.Sequential`` per agent): a common Adam over every
  parameter, or one Adam per agent over its own parameters (the same update: Adam is
  element-wise, ``tests/test_optim.py``), each with PyTorch's ``for-loop``,
  ``foreach`` and ``fused`` implementations;
- ``batched`` modules (weights stacked over agents): only a common Adam is possible;
- the library's :class:`marl.optim.CommonOptimizer` in ``common`` and ``per_agent`` mode
  (no clipping, but it still computes the gradient norm), as training uses it.

A variant PyTorch refuses (e.g. ``fused`` where unsupported) is recorded with its error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.backends import (
    IN_FEATURES,
    OUT_FEATURES,
    SIZES,
    pick_device,
    time_blocks,
)
from benchmarks.common import add_output_arguments, emit, plot_vs_agents, run_fresh, write_results

MODULE = "benchmarks.optimiser"
IMPLEMENTATIONS: dict[str, dict[str, Any]] = {
    "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
"""Keyword arguments of ``torch.optim.Adam`` selecting each implementation."""
VARIANTS = (
    *(f"loop/common/{impl}" for impl in IMPLEMENTATIONS),
    *(f"loop/per_agent/{impl}" for impl in IMPLEMENTATIONS),
    *(f"batched/common/{impl}" for impl in IMPLEMENTATIONS),
    "loop/CommonOptimizer/common", "loop/CommonOptimizer/per_agent",
    "batched/CommonOptimizer/common",
)
"""``backend/optimiser/implementation``."""


def _step_function(variant: str, net: nn.Module) -> tuple[Callable[[], object], int]:
    """Return (a no-argument step, number of Adam instances) for ``variant``."""
    from marl.config import OptimConfig
    from marl.nets import IndependentNets
    from marl.optim import CommonOptimizer

    _, optimiser, impl = variant.split("/")
    if optimiser == "CommonOptimizer":
        common = CommonOptimizer({"agents": net}, OptimConfig(lr=1e-4, max_grad_norm=None,
                                                                mode=impl))
        return common.clip_and_step, len(common.optimizers)
    assert isinstance(net, IndependentNets)
    groups = (net.per_agent_parameters() if optimiser == "per_agent"
              else [list(net.parameters())])
    adams = [torch.optim.Adam(params, lr=1e-4, **IMPLEMENTATIONS[impl]) for params in groups]

    def step() -> None:
        for adam in adams:
            adam.step()

    return step, len(adams)


def _worker(args: argparse.Namespace) -> None:
    from marl.nets import make_group_net

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = pick_device(args.device)
    backend = args.variant.split("/")[0]
    net = make_group_net("independent", IN_FEATURES, OUT_FEATURES, args.n[0],
                         SIZES[args.sizes[0]], backend=backend).to(device)
    for parameter in net.parameters():  # fixed gradients: each step() does the same work
        parameter.grad = torch.randn_like(parameter) * 1e-3
    result: dict[str, Any] = {"threads": torch.get_num_threads(), "device": str(device),
                              "tensors": len(list(net.parameters()))}
    try:
        step, result["optimizers"] = _step_function(args.variant, net)
        result["step"] = time_blocks(step, device, args.blocks, args.block_s, args.budget_s)
    except (RuntimeError, ValueError, TypeError) as error:  # e.g. fused unsupported here
        result["error"] = f"{type(error).__name__}: {error}"
    emit(result)


def _table(rows: list[dict[str, Any]], size: str, variants: list[str]) -> list[str]:
    ns = sorted({r["n"] for r in rows if r["size"] == size})
    lines = [f"### {size} MLP: Adam step, us (median over blocks)", "",
             "| variant | " + " | ".join(f"N={n}" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]
    for variant in variants:
        cells = []
        for n in ns:
            row = next(r for r in rows if (r["size"], r["n"], r["variant"]) == (size, n, variant))
            cells.append("error" if "error" in row else f"{row['step']['median']:,.0f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["2x64"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks")
    parser.add_argument("--block-s", type=float, default=0.05, help="target seconds a block")
    parser.add_argument("--budget-s", type=float, default=0.3,
                        help="cap on timed seconds per variant and N")
    add_output_arguments(parser, "optimiser", "tiny grid, for tests")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.quick:
        args.n, args.sizes = [2], ["2x64"]
        args.variants = ["loop/common/foreach", "loop/per_agent/fused",
                         "batched/common/fused", "loop/CommonOptimizer/per_agent"]
        args.blocks, args.block_s, args.budget_s = 2, 0.005, 0.05
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        for n in args.n:
            for variant in args.variants:  # back to back, so background load hits all alike
                flags = ["--variant", variant, "--n", str(n), "--sizes", size,
                         "--threads", str(args.threads), "--device", args.device,
                         "--blocks", str(args.blocks), "--block-s", str(args.block_s),
                         "--budget-s", str(args.budget_s)]
                rows.append({"variant": variant, "size": size, "n": n,
                             **run_fresh(MODULE, flags)})
            print(f"{size} N={n}: " + ", ".join(
                f"{r['variant']} {r['step']['median']:,.0f}us" if "step" in r
                else f"{r['variant']} error" for r in rows[-len(args.variants):]), flush=True)
    lines = [f"torch threads {args.threads}, device {rows[0]['device']}; MLP input 18 -> "
             "output 5; the time of one optimiser step over all N agents.", ""]
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for size in args.sizes:
        lines += _table(rows, size, args.variants)
        panels[f"{size} Adam step"] = {
            variant: [(r["n"], r["step"]["median"]) for r in rows
                      if (r["variant"], r["size"]) == (variant, size) and "step" in r]
            for variant in args.variants}
    errors = sorted({f"{r['variant']}: {r['error']}" for r in rows if "error" in r})
    if errors:
        lines += ["Errors:", "", *(f"- {error}" for error in errors), ""]
    table = "\n".join(lines)
    write_results(args.out, "optimiser", rows, table,
                  {"threads": args.threads, "unit": "microseconds per step",
                   "sizes": {s: list(SIZES[s]) for s in args.sizes}})
    plot_vs_agents(args.out / "optimiser.png", panels, "us per step",
                   columns=len(args.sizes))
    print(table)
    print(f"wrote {args.out / 'results.json'}, results.md and optimiser.png")


if __name__ == "__main__":
    main()
