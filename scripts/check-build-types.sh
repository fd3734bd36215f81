#!/usr/bin/env bash
# Configures and builds pagewise in every CMake build type (Debug, Release,
# RelWithDebInfo, MinSizeRel) with Debian's GCC and with its Clang: plain
# `cmake -S . -B DIR -DCMAKE_BUILD_TYPE=X && cmake --build DIR`, as a user would,
# plus -DPAGEWISE_WERROR=ON so that a warning in any combination fails too.
# Builds the library and the tool (the defaults); --tests adds the tests,
# benchmarks' tests and packaging tests (PAGEWISE_BUILD_TESTS=ON).
#
# Usage: scripts/check-build-types.sh [--tests] [--keep] [--only gcc|clang] [TYPE...]
# Build trees: build-types/<compiler>-<type> (removed afterwards unless --keep).
# Prints one line per combination with its wall time; exits non-zero if any failed.
# Slow (8 builds from scratch; ccache, when installed, makes reruns fast):
# not part of `make test`.
set -uo pipefail
cd "$(dirname "$0")/.."

tests=OFF keep=0 only="" types=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) tests=ON ;;
    --keep) keep=1 ;;
    --only) only=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) types+=("$1") ;;
  esac
  shift
done
[ ${#types[@]} -eq 0 ] && types=(Debug Release RelWithDebInfo MinSizeRel)
compilers=(gcc clang)
[ -n "$only" ] && compilers=("$only")

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

results=() failed=0
for cc in "${compilers[@]}"; do
  case $cc in
    gcc) c=gcc cxx=g++ ;;
    clang) c=clang cxx=clang++ ;;
    *) echo "unknown compiler $cc (gcc or clang)"; exit 2 ;;
  esac
  for type in "${types[@]}"; do
    dir=build-types/$cc-$type
    log=build-types/$cc-$type.log
    mkdir -p build-types
    start=$(date +%s)
    if cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE="$type" \
         -DCMAKE_C_COMPILER="$c" -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" \
         -DPAGEWISE_WERROR=ON -DPAGEWISE_BUILD_TESTS=$tests >"$log" 2>&1 &&
       cmake --build "$dir" -j "$(nproc)" >>"$log" 2>&1; then
      status=ok
    else
      status=FAILED failed=1
    fi
    secs=$(($(date +%s) - start))
    line=$(printf '%-6s %-15s %-7s %5ds' "$cc" "$type" "$status" "$secs")
    echo "$line"
    results+=("$line")
    if [ "$status" = FAILED ]; then
      echo "---- last lines of $log:"; grep -E 'error|warning' "$log" | head -20; tail -5 "$log"
    elif [ $keep -eq 0 ]; then
      rm -rf "$dir" "$log"
    fi
  done
done
echo "---- summary (tests=$tests, load: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%s\n' "${results[@]}"
exit $failed
