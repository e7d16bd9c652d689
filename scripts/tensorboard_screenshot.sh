#!/usr/bin/env bash
# A screenshot of TensorBoard over a sweep, taken with headless Chromium (Debian's `chromium` package):
#   scripts/tensorboard_screenshot.sh <sweep dir> [out.png] [dashboard]
# dashboard: custom_scalars (train vs valid on one chart, the default), timeseries, scalars or hparams.
# It serves <sweep dir>/tb (the job links named by what each job varies; the sweep dir itself when absent)
# on a free local port, waits until TensorBoard answers, renders the page and stops TensorBoard.
set -euo pipefail
sweep=${1:?usage: $0 <sweep dir> [out.png] [custom_scalars|timeseries|scalars|hparams]}
out=${2:-docs/tensorboard.png}
dashboard=${3:-custom_scalars}
here=$(cd "$(dirname "$0")/.." && pwd)
tb="$here/.venv/bin/tensorboard"
[ -x "$tb" ] || tb=tensorboard
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$chrome" ] || { echo "tensorboard_screenshot: no chromium found (apt-get install chromium)" >&2; exit 2; }
logdir="$sweep/tb"; [ -d "$logdir" ] || logdir="$sweep"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$tb" --logdir "$logdir" --host 127.0.0.1 --port "$port" > /tmp/tensorboard_screenshot.$$.log 2>&1 &
tb_pid=$!
profile=$(mktemp -d)
trap 'kill $tb_pid 2>/dev/null || true; rm -rf "$profile"' EXIT
for _ in $(seq 120); do  # TensorBoard reads the event files before it answers: up to a minute
  curl -sf "http://127.0.0.1:$port/data/runs" > /dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/data/runs" > /dev/null || { cat /tmp/tensorboard_screenshot.$$.log >&2; exit 1; }
# The flags the machine needs: no sandbox as root, no GPU, and no background network (the network is closed).
"$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
  --window-size=1600,1000 --virtual-time-budget=20000 --screenshot="$out" \
  "http://127.0.0.1:$port/#$dashboard" 2> /dev/null
echo "tensorboard_screenshot: $out ($dashboard of $logdir)"
