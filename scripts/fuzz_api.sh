#!/usr/bin/env bash
# Fuzzes the HTTP API of `unlearnrec serve` with schemathesis against its own /openapi.json and fails on any
# 5xx (or a crash of the server). Everything stays on loopback and under target/fuzz-api/.
#
#   scripts/fuzz_api.sh                      # defaults: 60 examples per operation, 300 s wall clock
#   MAX_EXAMPLES=200 FUZZ_SECONDS=600 scripts/fuzz_api.sh
#
# Steps: build the release binary; a tiny synthetic dataset, a 2-epoch LightGCN and a 1-epoch encoder;
# schemathesis installed with pip into target/fuzz-api/venv; the server on 127.0.0.1 with an ephemeral port;
# `st run` bounded by --max-examples and `timeout`; the server stopped with SIGTERM (it must exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=${MAX_EXAMPLES:-60}
FUZZ_SECONDS=${FUZZ_SECONDS:-300}
SCHEMATHESIS=${SCHEMATHESIS:-"schemathesis>=4,<5"}
W=target/fuzz-api
BIN=target/release/unlearnrec

cargo build --release -p unlearnrec-cli
rm -rf "$W/run"
mkdir -p "$W/run"
R=$W/run

if [ ! -x "$W/venv/bin/st" ]; then
  python3 -m venv "$W/venv"
  "$W/venv/bin/pip" install --quiet "$SCHEMATHESIS"
fi

$BIN -q data synth --out "$R/data" --users 200 --items 150 --interactions 5000 --seed 1
$BIN -q train --data "$R/data" --model lightgcn --dim 16 --epochs 2 --batch-size 512 --out "$R/lg.safetensors"
$BIN -q pretrain --model "$R/lg.safetensors" --data "$R/data" --epochs 1 --batch-size 512 --max-steps 4 \
  --out "$R/un.safetensors"
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$TOKEN" > "$R/token"

$BIN -q serve --model "$R/lg.safetensors" --unlearner "$R/un.safetensors" --data "$R/data" \
  --db "$R/ledger.sqlite" --state-dir "$R/state" --token-file "$R/token" --listen 127.0.0.1:0 \
  --finetune-epochs 0 > "$R/serve.out" 2> "$R/serve.log" &
PID=$!
trap 'kill -9 $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  grep -q '^listening on ' "$R/serve.out" 2>/dev/null && break
  kill -0 $PID 2>/dev/null || { echo "server died:"; cat "$R/serve.log"; exit 1; }
  sleep 0.1
done
URL=$(sed -n 's/^listening on //p' "$R/serve.out" | head -1)
[ -n "$URL" ] || { echo "server did not report its address"; cat "$R/serve.log"; exit 1; }
echo "fuzzing $URL (max $MAX_EXAMPLES examples per operation, $FUZZ_SECONDS s)"

status=0
# Run from $W so that schemathesis keeps its cache (.schemathesis/) there.
(cd "$W" && timeout --signal=INT --kill-after=30 "$FUZZ_SECONDS" \
  venv/bin/st run "$URL/openapi.json" \
    --checks not_a_server_error \
    --max-examples "$MAX_EXAMPLES" \
    --header "Authorization: Bearer $TOKEN" \
    --seed 1) || status=$?

kill -0 $PID 2>/dev/null || { echo "the server crashed during fuzzing:"; cat "$R/serve.log"; exit 1; }
# The server's own count of 5xx answers (schemathesis may stop early at the time bound).
fives=$(python3 -c "import urllib.request,sys; t=urllib.request.urlopen(sys.argv[1]+'/metrics').read().decode(); print(sum(int(float(l.rsplit(' ',1)[1])) for l in t.splitlines() if l.startswith('unlearnrec_http_requests_total') and 'status=\"5' in l))" "$URL")
echo "server answered $fives 5xx response(s)"
kill -TERM $PID
server=0
wait $PID || server=$?
trap - EXIT
if [ "$server" -ne 0 ]; then
  echo "the server exited with $server after SIGTERM:"; cat "$R/serve.log"; exit 1
fi
[ "$fives" -eq 0 ] || exit 1
# 124: the wall-clock bound ran out before every operation was covered; no failure was found until then.
if [ "$status" -eq 124 ]; then
  echo "fuzzing stopped at the ${FUZZ_SECONDS}s bound with no failure"
  exit 0
fi
exit "$status"
