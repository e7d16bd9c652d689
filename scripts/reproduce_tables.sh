#!/usr/bin/env bash
# Run every report-table preset as a sweep and write all tables, beside the report's numbers,
# into one markdown file.
#   scripts/reproduce_tables.sh [quick|cpu|full] [output.md]
# quick: the pipeline check, minutes per table (smoke-scale numbers).
# cpu:   the report's models, sizes and data on a budget per run (configs/experiment/*.yaml, sizes.cpu),
#        two jobs at a time with one thread each (measured: 2 x 1 thread gives 2.0x one job's tokens/s,
#        one job on 2 threads 1.75x); all six tables in about 2 hours on a 2-core CPU.
# full:  the report's epochs (days on a CPU; a GPU or hydra/launcher=slurm).
# Sweeps land in outputs/tables/<preset>/<table>/. Rerunning the same command resumes: finished jobs
# are kept ("already complete"), cut ones continue from their last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-quick}"
out="${2:-outputs/tables/$preset/TABLES.md}"
case "$preset" in quick|cpu|full) ;; *) echo "usage: $0 [quick|cpu|full] [output.md]" >&2; exit 2 ;; esac
speed=()
if [ "$preset" = cpu ]; then
  speed=(hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.num_threads=1)
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
fi
bin=".venv/bin"
[ -x "$bin/pbexp-train" ] || { echo "run 'make install' (or make test) first" >&2; exit 2; }
if [ -z "${PBEXP_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then export PBEXP_DATA_MIRROR="$(cd ../shared/data && pwd)"; fi
tables=(rnn_types embedding_size hidden_units pretrained layers imdb_models)
root="outputs/tables/$preset"
mkdir -p "$root" "$(dirname "$out")"
{
  echo "# The report's tables, regenerated ($preset preset)"
  echo
  echo "Made by \`scripts/reproduce_tables.sh $preset\` on $(date -u +%Y-%m-%d) ($(nproc --all) CPU cores$(command -v nvidia-smi >/dev/null && echo ', GPU present'))."
  echo
} > "$out"
status=0
for table in "${tables[@]}"; do
  start=$(date +%s)
  echo "== $table ($preset)" >&2
  if ! "$bin/pbexp-train" -m "experiment=$table" "preset=$preset" "hydra.sweep.dir=$root/$table" ${speed[@]+"${speed[@]}"} >&2; then
    status=1  # a failed job still gets its row (marked failed) in the table
  fi
  secs=$(( $(date +%s) - start ))
  {
    echo "## $table"
    echo
    echo "Command: \`pbexp-train -m experiment=$table preset=$preset${speed[*]:+ ${speed[*]}}\` — ${secs} s wall."
    echo
    "$bin/pbexp-report" "$root/$table" --table "$table" --with-report
    echo
  } >> "$out"
done
echo "tables written to $out" >&2
exit $status
