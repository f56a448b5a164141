#!/usr/bin/env bash
# The server's memory while browsers page through a large fleet (BENCHMARKS.md §6a): a
# `magicpush-loadtest demo` with DEVICES (100,000) devices, then pager.bench.mjs with BROWSERS
# (20) signed-in browsers paging for DURATION_S (60). Prints the bench's JSON line.
#   bash loadtest/console/rss-bench.sh     # after cargo build --release -p magicpush-loadtest
#                                          # and npm ci in loadtest/console
set -euo pipefail
cd "$(dirname "$0")/../.."
devices=${DEVICES:-100000}
listen=${LISTEN:-127.0.0.1:28090}
bin=${MAGICPUSH_LOADTEST:-target/release/magicpush-loadtest}
work=$(mktemp -d)
demo=""
finish() {
  if [ -n "$demo" ]; then
    kill -INT "$demo" 2>/dev/null || true
    wait "$demo" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap finish EXIT

started=$SECONDS
"$bin" demo --devices "$devices" --offline-fraction 0 --listen "$listen" \
  --api-key-file "$work/api-key" > "$work/demo.out" 2> "$work/demo.log" &
demo=$!
until grep -q '^ready ' "$work/demo.out"; do
  if ! kill -0 "$demo" 2>/dev/null; then
    echo "the demo stopped:"; tail -20 "$work/demo.log"; exit 1
  fi
  sleep 1
done
echo "fleet of $devices devices ready in $((SECONDS - started)) s" >&2
url=$(sed -n 's/^server //p' "$work/demo.out")
pid=$(sed -n 's/^server-pid //p' "$work/demo.out")
MAGICPUSH_URL=$url MAGICPUSH_API_KEY=$(cat "$work/api-key") SERVER_PID=$pid \
  node loadtest/console/pager.bench.mjs
