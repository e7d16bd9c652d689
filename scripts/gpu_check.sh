#!/usr/bin/env bash
# The GPU acceptance run (benches/gpu_check.py): at most 10 minutes on one GPU, one summary table at the end
# (check | result | figures | seconds), exit status 1 when any check failed, 2 at once without a CUDA device.
# Checks: pytest -m cuda; SIGKILL + resume of an LSTM LM against an uninterrupted run; determinism; one full
# epoch of rnn_types' LSTM (tokens/s, valid ppl); bf16 vs fp32; the trainer vs the hand-written loop
# (benches/lm_throughput.py); IMDB CNN; a self-trained model (sklearn_linear); 2-process DDP (NCCL, with two
# GPUs; skipped with one); trainer.compile on the LSTM (a refusal is expected) and on the CNN vs eager.
# Each invocation writes its runs and logs under a new outputs/gpu_check/<timestamp>/ (never skips or resumes
# an old run).
# Usage: scripts/gpu_check.sh [--dry-run] [--out DIR] [--only resume,ddp,...] [--budget S] [--min-ratio R]
#        (after `make install`; PBEXP_DATA_MIRROR, else ../shared/data, else data/ must hold ptb/ and imdb/)
#        --dry-run (or PBEXP_GPU_CHECK_DRY=1): every check on the CPU with tiny budgets, 'skipped: no GPU' rows
#        for the CUDA-only ones (a few minutes on 2 cores).
#        scripts/gpu_check.sh tables   the report's rnn_types table at full size (40 epochs a cell) instead:
#        all five jobs at once on the one GPU (joblib), cuDNN RNNs, bf16 autocast, no deterministic
#        algorithms; at most 10 minutes, then the table from what finished (a cut job resumes on rerun).
#        scripts/gpu_check.sh ptb_best_gpu   AWD-LSTM (experiment=ptb_best_gpu) for at most 9 minutes, then its
#        epoch records (valid ppl, tokens/s); SIGTERM checkpoints it and each rerun continues the same run dir.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
if [ -z "${PBEXP_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then export PBEXP_DATA_MIRROR="$(cd ../shared/data && pwd)"; fi
if [ "${1:-}" = tables ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >/dev/null 2>&1 \
    || { echo "gpu_check: no CUDA device (nvidia-smi finds no NVIDIA GPU)" >&2; exit 2; }
  out=outputs/gpu_check/rnn_types_full
  start=$(date +%s)
  timeout 600 .venv/bin/pbexp-train -m experiment=rnn_types preset=full hydra.sweep.dir=$out \
    hydra/launcher=joblib hydra.launcher.n_jobs=5 trainer.amp=bf16 trainer.deterministic=false \
    trainer.num_threads=2 || true
  echo "rnn_types at full size: $(( $(date +%s) - start )) s wall"
  .venv/bin/pbexp-report $out --table rnn_types --with-report || true
  exit 0
fi
if [ "${1:-}" = ptb_best_gpu ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >/dev/null 2>&1 \
    || { echo "gpu_check: no CUDA device (nvidia-smi finds no NVIDIA GPU)" >&2; exit 2; }
  out=outputs/gpu_check/ptb_best_gpu
  timeout 540 .venv/bin/pbexp-train experiment=ptb_best_gpu hydra.run.dir=$out || true
  "$py" - "$out" <<'PY'
import sys
from pbexp.rundir import RunDir
run = RunDir(sys.argv[1])
for r in run.read_metrics():
    print(f"epoch {r['epoch']}: valid ppl {r['valid/ppl']:.2f}, {r['perf/tokens_per_s']:.0f} tokens/s, lr {r['lr']:g}")
print(run.read_results() or "not finished: rerun `scripts/gpu_check.sh ptb_best_gpu` to continue it")
PY
  exit 0
fi
exec "$py" benches/gpu_check.py "$@"
