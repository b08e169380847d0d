# The front door. `make run` starts the server, `make test` runs every test;
# both install what is missing first (scripts/deps.sh: `run` only what serving
# needs, `test` the test tools as well).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CONF       ?= conf/depth-realtime.conf
# Development secrets for `make run` and `make token` only; production reads
# them from the environment. They are public, so `make run` listens on the
# loopback addresses only (127.0.0.1 and ::1) unless LISTEN_ADDRESS says
# otherwise, e.g. `make run LISTEN_ADDRESS=[::]` (every address, both families).
export JWT_SECRET ?= dev-secret-change-me
export API_KEY ?= dev-api-key-change-me
export LISTEN_ADDRESS ?= localhost

.PHONY: all build build-test asan deps deps-run deps-test run token test unit integration bench clean \
        deb rpm package-test newcomer-test directive-docs fuzz fuzz-ci fuzz-build

all: build

deps: deps-test

deps-run:
	@scripts/deps.sh check run || scripts/deps.sh run

deps-test:
	@scripts/deps.sh check test || scripts/deps.sh test

# `make run` configures without the tests (no GoogleTest, Node or load
# generator needed); `make test` turns them on in the same tree.
$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDR_TESTS=OFF

build: deps-run $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

build-test: deps-test $(BUILD)/CMakeCache.txt
	cmake -S . -B $(BUILD) -DDR_TESTS=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDR_SANITIZE=ON

asan: deps-test $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	scripts/run.sh $(BUILD) $(CONF)

# make token USER=<id> [ROLE=admin] [CONVERSATIONS=a,b] [PROJECTS=p]: a
# development JWT signed with the JWT_SECRET above. USER counts only when
# given on the command line (the environment's USER is the login name).
token: deps-run
	@scripts/dev-token.sh "$(if $(filter command line,$(origin USER)),$(USER))" "$(ROLE)" "$(CONVERSATIONS)" "$(PROJECTS)"

# Unit and integration tests on the normal build, then again under ASan+UBSan,
# then a short fuzzing run. Every part runs even when an earlier one fails;
# the summary of each comes at the end, and make fails if any part did.
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test: build-test asan
	@scripts/test-all.sh \
	  "normal build ($(BUILD))" "cd $(BUILD) && ctest --output-on-failure" \
	  "ASan+UBSan build ($(ASAN_BUILD))" "cd $(ASAN_BUILD) && $(ASAN_ENV) ctest --output-on-failure" \
	  "fuzz-ci" "$(MAKE) --no-print-directory fuzz-ci"

# A fresh Debian 12 root (debootstrap), only git in it, the README's Quick start
# followed literally, then `make test` inside it (root only; scripts/newcomer-test.sh).
newcomer-test:
	scripts/newcomer-test.sh

# Coverage-guided fuzzing of the parsers (tests/fuzz/README.md): libFuzzer
# targets built with clang into $(FUZZ_BUILD)/, each run for FUZZ_SECONDS on
# a working copy of its corpus. fuzz-ci: a short run of each (part of `make test`).
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60

$(FUZZ_BUILD)/CMakeCache.txt:
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDR_FUZZ=ON -DDR_TESTS=OFF

fuzz-build: deps-test $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-ci: fuzz-build
	FUZZ_JOBS=$(JOBS) tests/fuzz/run.sh $(FUZZ_BUILD) 12

# Load benchmarks beside Node (tests/bench/README.md), JSON in bench-results/:
# every scenario, or some: make bench BENCH_SCENARIOS="chat scale".
bench: build-test
	tests/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

# Packages (packaging/, docs/install.md), built from a copy of the tree into
# build-pkg/: `make deb` -> build-pkg/deb/*.deb, `make rpm` -> build-pkg/rpm/RPMS/*/*.rpm.
PKG_OUT ?= build-pkg

deb:
	OUT=$(PKG_OUT) JOBS=$(JOBS) packaging/build-packages.sh deb

rpm:
	OUT=$(PKG_OUT) JOBS=$(JOBS) packaging/build-packages.sh rpm

# Builds both, lints them, installs the .deb into a Debian 12 root booted with
# systemd-nspawn and the .rpm into a scratch root (root only; about 5 minutes).
package-test:
	OUT=$(PKG_OUT) tests/package/run.sh

# Regenerates docs/directives.md and packaging/depth-realtime.conf.5 from `-T`.
directive-docs: build
	packaging/gen-directive-docs.sh $(BUILD)
