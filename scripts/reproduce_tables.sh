#!/usr/bin/env bash
# Run every report-table preset as a sweep and write all tables, beside the report's numbers,
# into one markdown file.
#   scripts/reproduce_tables.sh [quick|full] [output.md]
# quick: a few minutes per table on a 2-core CPU (short epochs); full: the report's epochs (days on
# a CPU; use a GPU or hydra/launcher=slurm). Sweeps land in outputs/tables/<preset>/<table>/.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-quick}"
out="${2:-outputs/tables/$preset/TABLES.md}"
case "$preset" in quick|full) ;; *) echo "usage: $0 [quick|full] [output.md]" >&2; exit 2 ;; esac
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
  if ! "$bin/pbexp-train" -m "experiment=$table" "preset=$preset" "hydra.sweep.dir=$root/$table" >&2; then
    status=1  # a failed job still gets its row (marked failed) in the table
  fi
  secs=$(( $(date +%s) - start ))
  {
    echo "## $table"
    echo
    echo "Command: \`pbexp-train -m experiment=$table preset=$preset\` — ${secs} s wall."
    echo
    "$bin/pbexp-report" "$root/$table" --table "$table" --with-report
    echo
  } >> "$out"
done
echo "tables written to $out" >&2
exit $status
