#!/usr/bin/env bash
# A prepared check of at most ~5 minutes for a machine with an NVIDIA GPU:
#   1. the CUDA-only tests (pytest -m cuda): the script exits 1 if any fails,
#   2. throughput of the Zaremba-medium LM (2x650, batch 20, bptt 35) through pbexp, fp32 and bf16,
#      against the plain PyTorch loop, on the real PTB data.
# Usage: scripts/gpu_check.sh          (after `make install`; PBEXP_DATA_MIRROR or data/ must hold ptb/)
#        scripts/gpu_check.sh tables   the report's rnn_types table at full size (40 epochs a cell) instead:
#        all five jobs at once on the one GPU (joblib), cuDNN RNNs, bf16 autocast, no deterministic
#        algorithms; at most 10 minutes, then the table from what finished (a cut job resumes on rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
if [ -z "${PBEXP_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then export PBEXP_DATA_MIRROR="$(cd ../shared/data && pwd)"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU" >&2; exit 2; }
if [ "${1:-}" = tables ]; then
  out=outputs/gpu_check/rnn_types_full
  start=$(date +%s)
  timeout 600 .venv/bin/pbexp-train -m experiment=rnn_types preset=full hydra.sweep.dir=$out \
    hydra/launcher=joblib hydra.launcher.n_jobs=5 trainer.amp=bf16 trainer.deterministic=false \
    trainer.num_threads=2 || true
  echo "rnn_types at full size: $(( $(date +%s) - start )) s wall"
  .venv/bin/pbexp-report $out --table rnn_types --with-report || true
  exit 0
fi
echo "== CUDA tests"
# They skip themselves where torch sees no GPU, which here would pass with nothing tested.
"$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device")'
# A failure (or a timeout: 124) makes the whole check fail, after the measurements below have run.
cuda_tests=0
timeout 120 "$py" -m pytest -m cuda -q -rs -p no:cacheprovider || cuda_tests=$?
echo "== Zaremba medium LM, pbexp vs plain loop (fp32), then pbexp bf16 vs plain fp32"
timeout 90 "$py" benches/lm_throughput.py --case medium --device cuda --steps 60 --repeats 3
timeout 90 "$py" benches/lm_throughput.py --case medium --device cuda --steps 60 --repeats 3 --amp bf16
echo "== one real epoch-slice through the CLI on the GPU"
timeout 60 .venv/bin/pbexp-train experiment=ptb_medium trainer.max_steps=300 trainer.log_every=100 \
  hydra.run.dir=outputs/gpu_check/ptb_medium || true
if [ "$cuda_tests" -ne 0 ]; then
  echo "gpu_check: the CUDA tests failed (pytest exit status $cuda_tests; 124 is the 120 s timeout)" >&2
  exit 1
fi
