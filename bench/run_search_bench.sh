#!/usr/bin/env bash
# The whole search benchmark of issue #3, end to end, for 1,000 patients (and 10,000 with --with-10k):
#   generate the data set (cached by bench/datagen.py) -> start `aegis serve` on a fresh data directory
#   -> load it with bench/ingest.py -> run bench/search_load.py at 1 and 16 clients -> stop the server.
# Ingest and search reports are appended to bench/RESULTS.md (--record); the 10,000-patient search run is compared
# with the 1,000-patient one of the same invocation (p50 growth per shape, target <= 1.5x).
#
# On a 2-core machine the server is pinned to CPU 1 and the clients to CPU 0, so the client never steals the
# server's core; --server-unpinned leaves the server (and its prepare process, which ingest uses) every core, the
# clients staying on CPU 0; --server-workers N serves from N processes (aegis serve --workers N), implying
# --server-unpinned. Everything listens and connects on 127.0.0.1 only.
#
# Usage: bench/run_search_bench.sh [--with-10k | --sizes N,M] [--seconds S] [--clients 1,16] [--shapes LIST] [--port P]
#                                  [--cache DIR] [--seed N] [--ingest-clients N] [--record FILE | --no-record]
#                                  [--label TEXT] [--keep] [--server-unpinned] [--server-workers N]
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi

sizes=(1000)
seconds=5
clients=1,16
shapes=""
port=8765
cache="${AEGIS_BENCH_CACHE:-/tmp/aegis-bench-data}"
seed=42
ingest_clients=4
record=bench/RESULTS.md
label=""
keep=0
pin_server=1
workers=1

while [[ $# -gt 0 ]]; do
  case "$1" in
    --with-10k) sizes=(1000 10000) ;;
    --sizes) IFS=, read -r -a sizes <<< "$2"; shift ;;  # e.g. --sizes 300 for a quick check of the script
    --seconds) seconds="$2"; shift ;;
    --clients) clients="$2"; shift ;;
    --shapes) shapes="$2"; shift ;;
    --port) port="$2"; shift ;;
    --cache) cache="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --ingest-clients) ingest_clients="$2"; shift ;;
    --record) record="$2"; shift ;;
    --no-record) record="" ;;
    --label) label="$2"; shift ;;
    --keep) keep=1 ;;
    --server-unpinned) pin_server=0 ;;
    --server-workers) workers="$2"; pin_server=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

base="http://127.0.0.1:${port}/fhir"
results="${cache}/results"
mkdir -p "$cache" "$results"

# Pin server and client to different cores when there are two or more.
server_pin=()
client_cpu=()
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  [[ "$pin_server" == 1 ]] && server_pin=(taskset -c 1)
  client_cpu=(--cpu 0)
fi
record_args=()
if [[ -n "$record" ]]; then
  record_args=(--record "$record")
fi
shape_args=()
if [[ -n "$shapes" ]]; then
  shape_args=(--shapes "$shapes")
fi

if curl -fsS -o /dev/null "http://127.0.0.1:${port}/healthz" 2>/dev/null; then
  echo "something already answers on port ${port}; choose another with --port" >&2
  exit 2
fi

server_pid=""
store=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ -n "$store" && "$keep" -eq 0 ]]; then
    rm -rf "$store"
  fi
}
trap cleanup EXIT

status=0
for size in "${sizes[@]}"; do
  data="${cache}/p${size}-s${seed}"
  echo "=== ${size} patients: data ${data}"
  started=$(date +%s)
  python bench/datagen.py --patients "$size" --seed "$seed" --out "$data"
  echo "data ready in $(( $(date +%s) - started )) s ($(du -sh "$data" | cut -f1) on disk)"

  store="$(mktemp -d /tmp/aegis-bench-store-XXXXXX)"
  # without authorization (--insecure-no-auth): these figures measure the search engine, not token checks
  "${server_pin[@]}" aegis serve --insecure-no-auth --port "$port" --data-dir "$store" --log-level warning --workers "$workers" \
    > "${results}/server-${size}.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 150); do  # up to 30 s for the server to come up
    if curl -fsS -o /dev/null "http://127.0.0.1:${port}/healthz" 2>/dev/null; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "server exited; see ${results}/server-${size}.log" >&2
      exit 1
    fi
    sleep 0.2
  done

  echo "=== ${size} patients: ingest (server pid ${server_pid}, store ${store})"
  started=$(date +%s)
  python bench/ingest.py --base "$base" --data "$data" --clients "$ingest_clients" "${client_cpu[@]}" \
    --server-pid "$server_pid" --server-data-dir "$store" "${record_args[@]}" --label "$label" || status=1
  echo "ingest finished in $(( $(date +%s) - started )) s"

  baseline_args=()
  if [[ "$size" != "${sizes[0]}" && -f "${results}/search-${sizes[0]}.json" ]]; then
    baseline_args=(--baseline "${results}/search-${sizes[0]}.json")  # growth against the smallest size
  fi
  echo "=== ${size} patients: search"
  python bench/search_load.py --base "$base" --data "$data" --clients "$clients" --seconds "$seconds" \
    "${client_cpu[@]}" --server-pid "$server_pid" --json "${results}/search-${size}.json" \
    "${shape_args[@]}" "${baseline_args[@]}" "${record_args[@]}" --label "$label" || status=1

  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  echo "store of ${size} patients: $(du -sh "$store" | cut -f1) in ${store}"
  if [[ "$keep" -eq 0 ]]; then
    rm -rf "$store"
  fi
  store=""
done
echo "done (exit status ${status}); figures in ${results}${record:+, reports appended to ${record}}"
exit "$status"
