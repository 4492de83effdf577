"""Experiments: sweep files, jobs pinned to a git revision, executors, reports.

``marl sweep SWEEP.yaml`` expands a sweep (:mod:`~marl.experiments.sweep`) into job files
(:mod:`~marl.experiments.jobs`, :mod:`~marl.experiments.runner`) that run in clean
checkouts (:mod:`~marl.experiments.git`) on local processes or Ray
(:mod:`~marl.experiments.executors`); ``marl report RUNS_DIR`` aggregates the results
(:mod:`~marl.experiments.report`, :mod:`~marl.experiments.stats`,
:mod:`~marl.experiments.plots`).
"""
