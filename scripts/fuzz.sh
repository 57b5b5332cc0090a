#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) on the stable toolchain: each target of fuzz/ runs for a
# bounded time, starting from its seed corpus (fuzz/corpus/<target>) and the crash inputs kept as
# regressions (fuzz/regressions/<target>), both replayed first, with the target's dictionary of tokens
# (fuzz/dicts/<target>.dict). Fails on any crash, panic, timeout or OOM;
# the input is left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                 # 60 s per target, every target
#   scripts/fuzz.sh 20              # CI's short run
#   scripts/fuzz.sh 600 checkpoint  # one target for 10 minutes
#
# Stable needs `--sanitizer none` (sanitizers are nightly-only) and RUSTC_BOOTSTRAP=1 (cargo-fuzz passes
# `-Z` flags to cargo). Without a sanitizer libFuzzer still catches panics (abort), hangs (-timeout) and
# allocations over -rss_limit_mb / -malloc_limit_mb. The fuzz crate has its own target dir (fuzz/target);
# the growing working corpus lives in fuzz/target/corpus/<target>, logs in fuzz/target/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(readers requests config checkpoint api)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The fuzz crate builds into its own fuzz/target (other flags than the workspace's; cargo-fuzz finds its
# binaries there), whatever CI sets.
unset CARGO_TARGET_DIR
# Every target in one build: they share the instrumented dependencies.
(cd fuzz && cargo fuzz build --sanitizer none)

mkdir -p fuzz/target/logs
# The targets write their input to temporary files: on tmpfs they run several times faster (7.5x for readers).
# A directory of this run's own, removed at the end: a target that crashes (or `api`, whose service lives
# until the process exits) leaves its temporary directory behind.
base=/tmp
if [[ -z "${TMPDIR:-}" && -d /dev/shm && -w /dev/shm ]]; then
  base=/dev/shm
fi
TMPDIR=$(mktemp -d "${TMPDIR:-$base}/unlearnrec-fuzz.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
failed=()
for t in "${targets[@]}"; do
  work=fuzz/target/corpus/$t
  mkdir -p "$work" "fuzz/regressions/$t"
  log=fuzz/target/logs/$t.log
  dict=()
  if [[ -f fuzz/dicts/$t.dict ]]; then
    dict=(-dict="dicts/$t.dict")
  fi
  status=0
  (cd fuzz && cargo fuzz run --sanitizer none "$t" "../$work" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 "${dict[@]}") >"$log" 2>&1 ||
    status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
  printf '%-11s %8s executions in %s s (%s)%s\n' "$t" "${execs:-?}" "$secs" "${cov:-cov: ?}" \
    "$([[ $status -ne 0 ]] && echo "  FAILED (exit $status), see $log")"
  if [[ $status -ne 0 ]]; then
    failed+=("$t")
    grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -8 || true
  fi
done
if [[ ${#failed[@]} -ne 0 ]]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
