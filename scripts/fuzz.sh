#!/usr/bin/env bash
# Runs berth's fuzz targets (fuzz/: cargo-fuzz, libFuzzer), each for a few
# seconds (CI) or as long as you like (by hand).
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [--cmin] [TARGET...]
#
#   -t SECONDS  per target (default: $FUZZ_SECONDS, else 10)
#   -j JOBS     targets run at once (default 1)
#   --cmin      afterwards, merge what the runs found into the committed
#               corpus, minimized (cargo fuzz cmin)
#   TARGET      default: every target (`cargo fuzz list`)
#
# FUZZ_OPT=N: the build's optimization level (default 0: quickest to build,
# for CI; 1 builds in about twice the time and fuzzes several times faster,
# for long runs by hand).
#
# Toolchain: nightly when rustup has one (with AddressSanitizer); else the
# default (stable) toolchain with RUSTC_BOOTSTRAP=1 and no sanitizer:
# libFuzzer's coverage instrumentation needs no nightly feature, only the
# sanitizers do. FUZZ_TOOLCHAIN=nightly|stable picks one.
#
# A run reads the committed fuzz/seeds/TARGET (small real inputs, by hand)
# and fuzz/corpus/TARGET (what earlier runs found, minimized); what it
# finds goes to fuzz/target/corpus/TARGET (not committed) until --cmin
# merges it into fuzz/corpus/TARGET. A crash
# leaves its input in fuzz/artifacts/TARGET/ and makes the script fail;
# the log (with the stack) is in fuzz/target/logs/TARGET.log. Replay:
#   cd fuzz && cargo fuzz run --dev TARGET artifacts/TARGET/crash-...
# (with `+nightly`, or RUSTC_BOOTSTRAP=1 and `-s none` on stable).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/../fuzz"

seconds=${FUZZ_SECONDS:-10}
jobs=1
cmin=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) seconds=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    --cmin) cmin=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
  if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
    toolchain=nightly
  else
    toolchain=stable
  fi
fi
case "$toolchain" in
  nightly) cargo=(cargo +nightly fuzz); sanitizer=address ;;
  stable) cargo=(cargo fuzz); sanitizer=none; export RUSTC_BOOTSTRAP=1 ;;
  *) echo "fuzz.sh: FUZZ_TOOLCHAIN must be nightly or stable" >&2; exit 2 ;;
esac
opt=${FUZZ_OPT:-0}
export CARGO_PROFILE_DEV_OPT_LEVEL=$opt
# One target dir per toolchain and level, so switching rebuilds nothing.
flags=(--dev --sanitizer "$sanitizer" --target-dir "target/$toolchain-o$opt")

[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${cargo[@]}" list)
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, $toolchain toolchain, sanitizer $sanitizer, opt-level $opt"
"${cargo[@]}" build "${flags[@]}"

mkdir -p target/logs
run() {
  local t=$1 scratch=target/corpus/$1 log=target/logs/$1.log tmp=$PWD/target/tmp/$1
  mkdir -p "$scratch" "corpus/$t" "seeds/$t" "$tmp"
  local extra=()
  # A tar needs room for a few 512-byte headers.
  [ "$t" = unpack ] && extra=(-max_len=16384)
  # The targets' temp dirs (bundles, the unpack sandbox) live as long as
  # the process, which libFuzzer ends with exit(): they go with $tmp.
  local rc=0
  TMPDIR=$tmp "${cargo[@]}" run "${flags[@]}" "$t" "$scratch" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || rc=$?
  rm -rf "$tmp"
  if [ "$rc" = 0 ]; then
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "fuzz.sh: $t: ok, ${runs:-?} runs in ${seconds}s"
  else
    echo "fuzz.sh: $t: FAILED (log: fuzz/target/logs/$t.log)"
    grep -E '^(thread .* panicked|.*panicked at|==[0-9]+==ERROR|SUMMARY|Test unit written)' -A3 "$log" | head -20 | sed 's/^/    /'
    return 1
  fi
}

failed=()
running=0
declare -A pids=()
for t in "${targets[@]}"; do
  if [ "$jobs" -le 1 ]; then
    run "$t" || failed+=("$t")
    continue
  fi
  run "$t" &
  pids[$!]=$t
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n -p done_pid || failed+=("${pids[$done_pid]}")
    unset "pids[$done_pid]"
    running=$((running - 1))
  fi
done
for pid in "${!pids[@]}"; do
  wait "$pid" 2>/dev/null || failed+=("${pids[$pid]}")
done

if [ "$cmin" = 1 ]; then
  for t in "${targets[@]}"; do
    cp -n target/corpus/"$t"/* seeds/"$t"/* corpus/"$t"/ 2>/dev/null || true
    # Kept small: the fewest inputs that reach every edge (set cover, hit
    # counts ignored); the runs rebuild the rest from them in seconds.
    mkdir -p "target/tmp/$t"
    TMPDIR=$PWD/target/tmp/$t "${cargo[@]}" cmin "${flags[@]}" "$t" "corpus/$t" -- -set_cover_merge=1 -use_counters=0 \
      >"target/logs/$t.cmin.log" 2>&1
    rm -rf "target/tmp/$t"
    echo "fuzz.sh: $t: corpus minimized to $(find "corpus/$t" -type f | wc -l) inputs"
  done
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
