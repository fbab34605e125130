#!/usr/bin/env bash
# The objective A/B of docs/training.md ("Objective"): the paper's plain Huber against the
# near-surface weighting, at equal compute — same initial weights, cache, seed, schedule and steps,
# one torch thread each, side by side. Each run validates at step 60 on 6 held-out shapes
# (RUN/val.csv); stop both after that row appears (Ctrl-C / SIGTERM writes a checkpoint, so the
# winner can be resumed with --resume on all cores).
#
#   bench/objective_ab.sh CACHE OUT_DIR [INIT_WEIGHTS]
#   e.g. .venv/bin/log3d prepare ../shared/meshes cache --synthetic 200 --resolution 128,256,512 --seed 2
#        bench/objective_ab.sh cache runs model/weights/log3d-vae.safetensors
set -euo pipefail
cache=${1:?cache folder}; out=${2:?output folder}; init=${3:-model/weights/log3d-vae.safetensors}
log3d=${LOG3D:-.venv/bin/log3d}
common=(--data "$cache" --preset small --init "$init" --max-steps 850 --threads 1 --val-every 60 --val-shapes 6
        --val-sampling uniform --save-every 60 --mixed-precision no --seed 3
        --objective huber --surface-band 0.5 --slope-weight 0)  # the weighted Huber of that A/B, not the preset's recipe
"$log3d" train "${common[@]}" --out "$out/ab-plain" --surface-weight 0 > "$out/ab-plain.log" 2>&1 &
"$log3d" train "${common[@]}" --out "$out/ab-surface" --surface-weight 4 > "$out/ab-surface.log" 2>&1 &
wait
