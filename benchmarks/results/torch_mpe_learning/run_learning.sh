#!/bin/bash
# Default IPPO config, 300k env steps, 3 seeds, mpe2 then torch, one run at a time.
cd /tmp
for task in mpe2/simple_spread_v3 torch/simple_spread_v3; do
  for seed in 0 1 2; do
    name=$(echo $task | tr / _)_s$seed
    [ -f /work/torchmpe-runs/learning/$name/metrics.jsonl ] && grep -q '"env_steps": 300' /work/torchmpe-runs/learning/$name/metrics.jsonl && continue
    echo "$(date -u +%T) start $name"
    nice -n 10 /work/venv-torchmpe/bin/marl train env.task=$task seed=$seed train.progress=false run.dir=/work/torchmpe-runs/learning/$name
    echo "$(date -u +%T) done $name rc=$?"
  done
done
