#!/usr/bin/env bash
# A real full disk under `unlearnrec serve` (issue 19): the state directory on a small tmpfs, so that writing the
# next version fails with ENOSPC half-way; then the tmpfs is grown and the batch must apply, once. Needs root (it
# mounts a tmpfs); loopback only; bounded (about 30 s). The test suite covers the same path portably with an
# injected write error (`--fault-point disk-full`, crates/cli/tests/serve.rs).
#
# Usage: sudo scripts/disk_full_serve.sh BINARY CKPT UNLEARNER DATA [SIZE_KIB]
#   SIZE_KIB: the tmpfs's size, less than one version (default: 1.7 times the starting checkpoint's size, which on
#   small data holds the next checkpoint, which carries its anchor too, but not the remaining data beside it: a
#   half-written version).
set -euo pipefail
bin=$(realpath "$1"); ckpt=$(realpath "$2"); un=$(realpath "$3"); data=$(realpath "$4")
size=${5:-$(( $(stat -c %s "$ckpt") * 17 / 10240 ))}
tmp=$(mktemp -d)
state="$tmp/state"; mkdir -p "$state"
mount -t tmpfs -o "size=${size}k" tmpfs "$state"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; sleep 0.5; umount "$state" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
echo t > "$tmp/token"
port=18199
"$bin" serve --model "$ckpt" --unlearner "$un" --data "$data" --db "$tmp/ledger.sqlite" --state-dir "$state" \
    --token-file "$tmp/token" --listen "127.0.0.1:$port" --finetune-epochs 0 --batch-wait-ms 20 >/dev/null 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/v1/health" >/dev/null && break; sleep 0.2; done
user=$(awk 'NF > 1 { print $1; exit }' "$data/train.txt")
if [ -f "$data/user_list.txt" ]; then user=$(awk -v r="$user" 'NR > 1 && $2 == r { print $1; exit }' "$data/user_list.txt"); fi
id=$(curl -sf -X POST "127.0.0.1:$port/v1/forget" -H 'Authorization: Bearer t' -d "{\"user\": \"$user\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
echo "posted a forget request for user $user: $id (tmpfs of ${size} KiB for the state)"
sleep 5
errors=$(curl -s "127.0.0.1:$port/metrics" | awk '$1 == "unlearnrec_apply_errors_total" { print $2 }')
status=$(curl -s "127.0.0.1:$port/v1/forget/$id" -H 'Authorization: Bearer t' | sed 's/.*"status":"\([a-z]*\)".*/\1/')
served=$(curl -s "127.0.0.1:$port/v1/health" | sed 's/.*"model_version":\([0-9]*\).*/\1/')
left=$(ls -A "$state" | tr '\n' ' ')
echo "disk full: apply errors $errors, request $status, serving version $served, state dir: ${left:-empty}"
grep -m1 -i "no space\|space left" "$tmp/serve.log" || true
[ "$errors" -ge 1 ] && [ "$status" = queued ] && [ "$served" = 0 ] || { echo "FAIL: the batch must stay queued and version 0 served"; exit 1; }
case "$left" in *v000001*|*.tmp*) echo "FAIL: a partial version 1 was left: $left"; exit 1;; esac
mount -o "remount,size=$(( size * 8 ))k" "$state"
for _ in $(seq 100); do
    status=$(curl -s "127.0.0.1:$port/v1/forget/$id" -H 'Authorization: Bearer t' | sed 's/.*"status":"\([a-z]*\)".*/\1/')
    [ "$status" = applied ] && break; sleep 0.2
done
served=$(curl -s "127.0.0.1:$port/v1/health" | sed 's/.*"model_version":\([0-9]*\).*/\1/')
echo "room again: request $status, serving version $served, state dir: $(ls -A "$state" | tr '\n' ' ')"
[ "$status" = applied ] && [ "$served" = 1 ] || { echo "FAIL: the batch must apply once there is room"; exit 1; }
kill -TERM "$pid"; wait "$pid"; pid=
echo "OK"
