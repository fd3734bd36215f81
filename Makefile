# pagewise: top-level entry points. See README.md.
#   make demo   install what is missing, build, run the main job
#   make test   install, build, run every test (plain, ASan+UBSan, TSan)
#   make build / make unit / make asan / make tsan / make format / make clean
#   make install PREFIX=/usr/local   install the library, headers, pkg-config and
#                                    CMake files, the tool and the man pages

JOBS ?= $(shell nproc)
BUILD ?= build
PREFIX ?= /usr/local
# The project's own builds: tests on, warnings are errors (a user's plain
# `cmake -S . -B b` builds the library and tool without either).
# Precompiled standard/GoogleTest/CLI11 headers: 0.79x the compile CPU per file
# (interleaved A/B of 23 files, 104.7 s vs 132.9 s), plus one precompile per target.
OUR_FLAGS := -DPAGEWISE_BUILD_TESTS=ON -DPAGEWISE_WERROR=ON -DPAGEWISE_PCH=ON
# -g1: line tables (backtraces keep file:line); cli/cmd_probe.cc compiled in
# 0.71x the CPU of -g (20.7 s vs 29.0 s).
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"
# Sanitizer builds: -O1 with line tables only (stack traces keep file:line);
# full debug info at -O2 made them take 3.6 instead of 2.1 min each.
# Benchmarks are timed in the plain build only (their smoke tests run there).
SAN_FLAGS ?= -DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=-O1 -g1" "-DCMAKE_C_FLAGS=-O1 -g1" \
  -DPAGEWISE_BUILD_BENCH=OFF
# ccache, when installed, speeds up rebuilds across build trees and worktrees
# (optional: a fresh machine builds without it).
ifneq ($(shell command -v ccache),)
CMAKE_FLAGS += -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache
SAN_FLAGS += -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache
endif
# A test may skip for what a user's machine lacks (/dev/kvm, CRIU 4.1+); CI
# sets PAGEWISE_FORBID_SKIP=1 (.ci/run) and then every skip fails the run.

.PHONY: all deps build demo test unit asan tsan lint format clean install check-build-types

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja $(OUR_FLAGS) $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/pagewise demo

# Plain build first (fast feedback), then the sanitizer builds of the tests.
test: unit asan tsan lint
	@echo "make test: all suites passed"

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

asan: deps
	CXX=clang++ CC=clang cmake -S . -B build-asan -G Ninja $(SAN_FLAGS) $(OUR_FLAGS) -DPAGEWISE_SANITIZE=address -DPAGEWISE_BUILD_FUZZ=ON -DPAGEWISE_FUZZ_SECONDS=30
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS) --timeout 600

tsan: deps
	cmake -S . -B build-tsan -G Ninja $(SAN_FLAGS) $(OUR_FLAGS) -DPAGEWISE_SANITIZE=thread
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -j $(JOBS) --timeout 600

# Structural rules the code base keeps (raw syscalls only in src/sys, ...).
lint:
	@bash scripts/lint.sh

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

# Installs what `make build` built (no tests) under $(PREFIX).
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# Configures and builds the library and tool in every CMake build type with
# GCC and with Clang, without this Makefile's flags (slow: not part of test).
check-build-types: deps
	bash scripts/check-build-types.sh

clean:
	rm -rf $(BUILD) build-asan build-tsan
