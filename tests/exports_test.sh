#!/usr/bin/env bash
# Checks the dynamic symbols of libpagewise.so and libpagewise-interpose.so.
# Usage: exports_test.sh LIBPAGEWISE_SO LIBPAGEWISE_INTERPOSE_SO
#   libpagewise.so: SONAME libpagewise.so.<major>; defines no libc name (no
#     madvise, mprotect, mremap, read family); every defined symbol is the API
#     (pagewise_* C functions, pagewise:: C++ names and their vtables/typeinfo)
#     and carries the version node PAGEWISE_<major>.<minor>.
#   libpagewise-interpose.so: defines exactly the interposers and
#     pagewise_interpose_v1, unversioned (so they interpose libc's).
set -euo pipefail
lib=$1 interpose=$2
fail=0
interposed='madvise mprotect mremap read pread pread64 readv preadv preadv64 preadv2 preadv64v2
recv recvfrom recvmsg __read_chk __pread_chk __pread64_chk __recv_chk __recvfrom_chk'

soname=$(readelf -d "$lib" | sed -n 's/.*SONAME.*\[\(.*\)\].*/\1/p')
case "$soname" in
  libpagewise.so.[0-9]*) echo "SONAME $soname" ;;
  *) echo "FAIL: libpagewise SONAME is '$soname'"; fail=1 ;;
esac

# Defined dynamic symbols: "name@@VERSION" (or name) per line.
defined=$(nm -D --defined-only --with-symbol-versions "$lib" | awk '{print $3}')
count=$(echo "$defined" | grep -c . || true)
echo "libpagewise exports $count symbols"
for name in $interposed; do
  if echo "$defined" | grep -qE "^${name}(@|$)"; then
    echo "FAIL: libpagewise.so defines $name (linking it would replace libc's)"; fail=1
  fi
done
unversioned=$(echo "$defined" | grep -vE '@@?PAGEWISE_[0-9]+\.[0-9]+$' | grep -vE '^PAGEWISE_' || true)
if [ -n "$unversioned" ]; then
  echo "FAIL: symbols without the PAGEWISE_x.y version node:"; echo "$unversioned" | head -20; fail=1
fi
# Every exported name is the API: C names pagewise_*, or C++ names in pagewise::.
non_api=$(echo "$defined" | sed 's/@.*//' | grep -v '^PAGEWISE_' | grep -v '^pagewise_' |
  c++filt | grep -vE '^((vtable|typeinfo|typeinfo name|VTT|construction vtable) for |(non-)?virtual thunk to )?pagewise::' || true)
if [ -n "$non_api" ]; then
  echo "FAIL: libpagewise.so exports names outside the API:"; echo "$non_api" | head -20; fail=1
fi
if ! echo "$defined" | grep -q '^_ZN8pagewise'; then
  echo "FAIL: libpagewise.so exports no pagewise:: symbol (visibility markers lost?)"; fail=1
fi

want=$(printf '%s\n' $interposed pagewise_interpose_v1 | sort)
got=$(nm -D --defined-only "$interpose" | awk '$2 ~ /^[TtWwiV]$/ {print $3}' | sort)
if [ "$want" != "$got" ]; then
  echo "FAIL: libpagewise-interpose.so exports differ from the interposer list:"
  diff <(echo "$want") <(echo "$got") || true
  fail=1
fi
if nm -D --defined-only --with-symbol-versions "$interpose" | awk '{print $3}' | grep -q '@'; then
  echo "FAIL: libpagewise-interpose.so versions its symbols (they would not interpose libc's)"
  fail=1
fi

[ $fail -eq 0 ] && echo "exports: ok"
exit $fail
