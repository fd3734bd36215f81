#!/usr/bin/env bash
# Installs pagewise into a temporary prefix and builds and runs, against that
# installed tree only (no path into the source or build tree but the sources
# being compiled): the examples (pkg-config and find_package), the C API test
# program, a C++ program (find_package, shared and static targets), a program
# linking libpagewise-interpose, the Rust crate (cargo test --offline) and the
# Python module (unittest).
# Usage: install_test.sh BUILD_DIR SOURCE_DIR   (ctest runs it: packaging.install)
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
tmp=$(mktemp -d /tmp/pagewise-pkg-install-XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
prefix=$tmp/prefix
step() { echo "---- $*"; }

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
for f in lib/libpagewise.so.0 lib/libpagewise.a lib/libpagewise-interpose.so.0 \
         lib/libpagewise-interpose.a lib/pkgconfig/pagewise.pc lib/pkgconfig/pagewise-interpose.pc \
         lib/cmake/pagewise/pagewiseConfig.cmake include/pagewise/pagewise.h \
         include/pagewise/version.h bin/pagewise share/man/man1/pagewise.1 \
         share/man/man3/libpagewise.3; do
  [ -e "$prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done

# Only the installed tree from here on.
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
unset PKG_CONFIG_LIBDIR LD_PRELOAD
export LD_LIBRARY_PATH=$prefix/lib
CC=${CC:-cc} CXX=${CXX:-c++}
pkg-config --exists pagewise || { echo "pkg-config does not find pagewise"; exit 1; }
case "$(pkg-config --cflags --libs pagewise)" in
  *"$build"*|*"$src"*) echo "pagewise.pc points into the build or source tree"; exit 1 ;;
esac

step "examples with pkg-config (make)"
cp -r "$src/examples" "$tmp/ex"
make -s -C "$tmp/ex" CC="$CC"

step "examples with find_package (CMake)"
cmake -S "$tmp/ex" -B "$tmp/ex-cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$CC" \
  -DCMAKE_CXX_COMPILER="$CXX" >"$tmp/ex-cmake.log"
cmake --build "$tmp/ex-cmake" >>"$tmp/ex-cmake.log"

step "run the examples"
for dir in "$tmp/ex" "$tmp/ex-cmake"; do
  "$dir/checkpoint_loop" 300
  "$dir/heap_snapshot" "$tmp/heap.pwimg"
  rm -f "$tmp/heap.pwimg"
done
# vmm_client against the installed `pagewise serve` (one client, then it exits).
head -c $((8 << 20)) /dev/urandom >"$tmp/guest.mem"
sock=$tmp/serve.sock
coproc SERVE { exec "$prefix/bin/pagewise" serve --socket "$sock" --mem-file "$tmp/guest.mem" \
                 --clients 1 --quiet; }
server_pid=$SERVE_PID
read -r line <&"${SERVE[0]}"  # "pagewise serve: listening on ..." once the socket exists
echo "$line"
"$tmp/ex/vmm_client" "$sock" "$tmp/guest.mem"
wait "$server_pid"
server_pid=""

step "the C API test program (C11, pkg-config)"
$CC -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags pagewise) "$src/tests/capi_test.c" \
  -o "$tmp/capi_test" $(pkg-config --libs pagewise)
"$tmp/capi_test"

step "a C program linking libpagewise-interpose gets the mprotect backend"
cat >"$tmp/interpose.c" <<'C'
#include <pagewise/pagewise.h>
#include <stdio.h>
int main(void) {
  const char* why = NULL;
  pagewise_tracker* t = NULL;
  if (pagewise_backend_available(PAGEWISE_BACKEND_MPROTECT, &why) != 1) {
    printf("mprotect backend unavailable: %s\n", why);
    return 1;
  }
  if (pagewise_tracker_create(PAGEWISE_BACKEND_MPROTECT, &t) != 0) {
    printf("mprotect tracker: %s\n", pagewise_errmsg());
    return 1;
  }
  pagewise_tracker_destroy(t);
  printf("interpose: mprotect backend available and created\n");
  return 0;
}
C
$CC -std=c11 $(pkg-config --cflags pagewise-interpose) "$tmp/interpose.c" -o "$tmp/interpose" \
  -Wl,--as-needed $(pkg-config --libs pagewise-interpose)
"$tmp/interpose"

step "a C++20 program with find_package (shared and static targets)"
mkdir -p "$tmp/cxx"
cat >"$tmp/cxx/main.cc" <<'CXX'
#include <cstdio>
#include <cstring>
#include <pagewise/probe.h>
#include <pagewise/tracker.h>
#include <pagewise/version.h>
int main() {
  if (std::strcmp(pagewise::Version(), PAGEWISE_VERSION_STRING) != 0) return 1;
  auto t = pagewise::Tracker::Create();
  if (!t.ok()) {
    std::printf("Tracker::Create: %s\n", t.status().ToString().c_str());
    return 1;
  }
  std::printf("cxx: pagewise %s, backend %s\n", pagewise::Version(),
              std::string(pagewise::BackendName((*t)->backend())).c_str());
  return 0;
}
CXX
cat >"$tmp/cxx/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(consumer LANGUAGES C CXX)
find_package(pagewise 0.1 REQUIRED)
add_executable(shared main.cc)
target_link_libraries(shared PRIVATE pagewise::pagewise)
add_executable(static main.cc)
target_link_libraries(static PRIVATE pagewise::pagewise_static)
# The interposers, with --as-needed in force, must still be linked.
add_executable(interpose interpose.c)
target_link_options(interpose PRIVATE -Wl,--as-needed)
target_link_libraries(interpose PRIVATE pagewise::interpose)
add_executable(interpose_static interpose.c)
set_target_properties(interpose_static PROPERTIES LINKER_LANGUAGE CXX)
target_link_libraries(interpose_static PRIVATE pagewise::interpose_static pagewise::pagewise_static)
CMAKE
cp "$tmp/interpose.c" "$tmp/cxx/"
cmake -S "$tmp/cxx" -B "$tmp/cxx/b" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_C_COMPILER="$CC" \
  >"$tmp/cxx.log"
cmake --build "$tmp/cxx/b" >>"$tmp/cxx.log"
"$tmp/cxx/b/shared"
"$tmp/cxx/b/static"
"$tmp/cxx/b/interpose"
"$tmp/cxx/b/interpose_static"
if ldd "$tmp/cxx/b/static" | grep -q libpagewise; then
  echo "the static consumer needs libpagewise.so"; exit 1
fi

step "Rust crate (cargo test --offline)"
command -v cargo >/dev/null || { echo "cargo is missing: scripts/install-deps.sh installs it"; exit 1; }
cp -r "$src/bindings/rust" "$tmp/rust"
rm -rf "$tmp/rust/target"
(cd "$tmp/rust" && CARGO_TARGET_DIR="$tmp/rust/target" cargo test --offline --quiet 2>&1 | tail -n 20)

step "Python module (unittest)"
cp -r "$src/bindings/python" "$tmp/python"
(cd "$tmp/python" && python3 -m unittest -v test_pagewise 2>&1 | tail -n 12)

echo "install test: ok"
