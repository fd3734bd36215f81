#!/usr/bin/env bash
# Structural rules from docs/DEVELOPING.md that a compiler cannot check.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# Allow-lists: one repository path per line ('#' comments). They hold today's
# offenders and only shrink: an entry whose file is clean (or gone) fails the
# lint until it is removed, so a fixed file cannot regress unnoticed.
# (Here-strings, not pipes into grep -q: with pipefail, grep -q's early exit
# can fail the writer with SIGPIPE.)
allowed() {  # allowed LIST PATH
  grep -qxF "$2" <<<"$(grep -vE '^\s*(#|$)' "$1")"
}
stale_entries() {  # stale_entries LIST "OFFENDING PATHS"
  # (|| true: a list with no entry left is the goal, not an error; grep's
  # status 1 would end the lint silently under set -e and pipefail.)
  { grep -vE '^\s*(#|$)' "$1" || true; } | while read -r p; do
    grep -qxF "$p" <<<"$2" || echo "$p"
  done
}

# 1. Raw system calls (every libc system-call wrapper: open, read, mmap, ioctl,
# socket, fork, ... see scripts/lint_syscalls.py) live in src/sys/ only.
# Checked: the library (src/ except src/sys and src/testing), the tool (cli/)
# and the benchmarks (bench/). Clients may call the OS directly: tests (tests/,
# *_test.cc), examples/, bindings/.
sys_files=$(git ls-files -co --exclude-standard 'src/*.cc' 'src/*.h' 'cli/*.cc' 'cli/*.h' \
              'bench/*.cc' 'bench/*.h' | grep -vE '^src/(sys|testing)/|_test\.cc$' || true)
raw=$(python3 scripts/lint_syscalls.py $sys_files || true)
offenders=$(echo "$raw" | cut -d: -f1 | sort -u | grep . || true)
hits=$(while IFS= read -r h; do
         [ -z "$h" ] || allowed scripts/lint-syscall-allow.txt "${h%%:*}" || echo "$h"
       done <<<"$raw")
if [ -n "$hits" ]; then
  echo "lint: raw system calls outside src/sys/ (go through Env, src/sys/env.h, or a src/sys helper):"
  echo "$hits"; fail=1
fi
stale=$(stale_entries scripts/lint-syscall-allow.txt "$offenders")
if [ -n "$stale" ]; then
  echo "lint: no raw system call left in these files: remove them from scripts/lint-syscall-allow.txt:"
  echo "$stale"; fail=1
fi

# 1b. src/sys's private headers (those whose opening comment says "Private to
# src/sys") are included only by src/sys. Tests (tests/, *_test.cc) and
# src/testing may include one only with a reason in a trailing comment on the
# #include line (e.g. a test asserting a uapi value the kernel reports).
for h in $(git ls-files -co --exclude-standard 'src/sys/*.h'); do
  grep -q 'Private to src/sys' <<<"$(head -30 "$h")" || continue
  inc=${h#src/}
  users=$(git ls-files -co --exclude-standard '*.cc' '*.h' | grep -v '^src/sys/' |
            xargs grep -nF "#include \"$inc\"" 2>/dev/null || true)
  bad=$(while IFS= read -r u; do
          [ -n "$u" ] || continue
          f=${u%%:*}
          case "$f" in
            tests/*|src/testing/*|*_test.cc) grep -qE '#include "[^"]*"[[:space:]]*//.+' <<<"$u" && continue ;;
          esac
          allowed scripts/lint-sys-include-allow.txt "$f" || echo "$u"
        done <<<"$users")
  if [ -n "$bad" ]; then
    echo "lint: $h is private to src/sys (tests: say why in a comment on the #include):"
    echo "$bad"; fail=1
  fi
done
sys_inc_offenders=$(for h in $(git ls-files -co --exclude-standard 'src/sys/*.h'); do
    grep -q 'Private to src/sys' <<<"$(head -30 "$h")" || continue
    git ls-files -co --exclude-standard '*.cc' '*.h' | grep -v '^src/sys/' |
      xargs grep -lF "#include \"${h#src/}\"" 2>/dev/null || true
  done | sort -u)
stale=$(stale_entries scripts/lint-sys-include-allow.txt "$sys_inc_offenders")
if [ -n "$stale" ]; then
  echo "lint: these files no longer include a private src/sys header: remove them from"
  echo "scripts/lint-sys-include-allow.txt:"; echo "$stale"; fail=1
fi

# 1c. Source files stay within 500 lines (docs/DEVELOPING.md).
big=$(git ls-files -co --exclude-standard '*.cc' '*.h' '*.c' '*.rs' '*.py' |
        xargs wc -l 2>/dev/null | awk '$2 != "total" && $1 > 500 {print $2}' | sort)
over=$(while IFS= read -r f; do
         [ -z "$f" ] || allowed scripts/lint-size-allow.txt "$f" || echo "$f ($(wc -l <"$f") lines)"
       done <<<"$big")
if [ -n "$over" ]; then
  echo "lint: source files over 500 lines (split them by responsibility):"; echo "$over"; fail=1
fi
stale=$(stale_entries scripts/lint-size-allow.txt "$big")
if [ -n "$stale" ]; then
  echo "lint: within 500 lines now: remove from scripts/lint-size-allow.txt:"; echo "$stale"; fail=1
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

# 6. Every public C++ header marks its declarations as the exported API
# (pagewise/export.h): without the pair its symbols stay hidden in libpagewise.so.
for h in $(git ls-files -co --exclude-standard 'include/pagewise/*.h'); do
  case "$h" in include/pagewise/export.h|include/pagewise/pagewise.h) continue ;; esac
  if ! grep -q '^PAGEWISE_API_BEGIN' "$h" || ! grep -q '^PAGEWISE_API_END' "$h"; then
    echo "lint: $h lacks PAGEWISE_API_BEGIN/PAGEWISE_API_END around its declarations"; fail=1
  fi
done

# 7. Every subcommand of the tool has a man page, man/pagewise-NAME.1 (commands
# whose help starts with "(internal)" are not for users and have none).
cmds=$(cat cli/*.cc | tr '\n' ' ' |
       grep -oE 'CommandRegistration [A-Za-z_]+\([[:space:]]*"[a-z0-9-]+",[[:space:]]*"[^"]{0,12}' |
       grep -v '"(internal)' | sed -E 's/.*\([[:space:]]*"([a-z0-9-]+)".*/\1/' | sort -u)
for c in $cmds; do
  if [ ! -f "man/pagewise-$c.1" ]; then
    echo "lint: \`pagewise $c\` has no man page: write man/pagewise-$c.1 (see man/pagewise-probe.1)"
    fail=1
  fi
done
[ -f man/pagewise.1 ] || { echo "lint: man/pagewise.1 is missing"; fail=1; }

# 8. Every C API function (PAGEWISE_EXPORT in pagewise/pagewise.h) has a man
# page man/NAME.3: its group's page, or a one-line ".so man3/GROUP.3".
capi=$(tr '\n' ' ' <include/pagewise/pagewise.h | grep -oE 'PAGEWISE_EXPORT[^;(]*\(' |
         grep -oE 'pagewise_[a-z0-9_]+[[:space:]]*\($' | tr -d ' (' | sort -u)
for f in $capi; do
  [ -f "man/$f.3" ] || { echo "lint: C API $f has no man page man/$f.3"; fail=1; }
done

# 9. Tests skip only through PAGEWISE_SKIP (src/testing/skip.h), which turns a
# skip into a failure under PAGEWISE_FORBID_SKIP=1 (ctest counts a plain
# GTEST_SKIP as skipped whatever the exit code).
bad=$(git ls-files -co --exclude-standard '*.cc' '*.h' | grep -v '^src/testing/skip\.h$' |
        xargs grep -nE '\bGTEST_SKIP(_)?\b' 2>/dev/null || true)
if [ -n "$bad" ]; then
  echo "lint: skip with PAGEWISE_SKIP() (src/testing/skip.h), not GTEST_SKIP:"; echo "$bad"; fail=1
fi

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
