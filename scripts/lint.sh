#!/usr/bin/env bash
# Structural rules from docs/DEVELOPING.md that a compiler cannot check.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# 1. Raw syscalls and ioctls live in src/sys/ only.
hits=$(git ls-files -co --exclude-standard '*.cc' '*.h' |
  grep -v '^src/sys/' |
  xargs grep -nE '(^|[^A-Za-z_.>:])(syscall|ioctl)[[:space:]]*\(' 2>/dev/null || true)
if [ -n "$hits" ]; then
  echo "lint: raw syscall()/ioctl() outside src/sys/:"; echo "$hits"; fail=1
fi

# 2. The CLI uses only the public API.
hits=$(git ls-files -co --exclude-standard 'cli/*' | xargs grep -nE '#include "(src/|sys/|track/|image/|snapshot/|restore/|live/)' 2>/dev/null || true)
if [ -n "$hits" ]; then
  echo "lint: cli/ includes private headers:"; echo "$hits"; fail=1
fi

# 3. No sleeps used in tests.
hits=$(git ls-files -co --exclude-standard '*_test.cc' 'tests/*' | xargs grep -nE '\b(usleep|sleep_for|sleep_until|nanosleep)\b|[^a-z_]sleep\(' 2>/dev/null || true)
if [ -n "$hits" ]; then
  echo "lint: sleeps in tests (synchronise with joins, futexes or eventfds):"; echo "$hits"; fail=1
fi

# 4. Every header opens with a comment stating its purpose.
for h in $(git ls-files -co --exclude-standard '*.h'); do
  first=$(grep -m1 -vE '^\s*$' "$h" || true)
  case "$first" in
    //*|/\**) ;;
    *) echo "lint: $h does not open with a purpose comment"; fail=1 ;;
  esac
done

# 5. clang-format (Google style, 100 columns: .clang-format) is applied.
if command -v clang-format >/dev/null; then
  bad=$(for f in $(git ls-files -co --exclude-standard '*.cc' '*.h'); do
          clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "$f"
        done)
  if [ -n "$bad" ]; then
    echo "lint: not clang-formatted (run make format):"; echo "$bad"; fail=1
  fi
else
  echo "lint: clang-format is missing (scripts/install-deps.sh installs it)"; fail=1
fi

[ $fail -eq 0 ] && echo "lint: ok"
exit $fail
