# The front door. `make run` starts the server, `make test` runs every test;
# both install what is missing first (see scripts/deps.sh).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CONF       ?= conf/depth-realtime.conf
# Development secrets for `make run` only; production reads them from the environment.
export JWT_SECRET ?= dev-secret-change-me
export API_KEY ?= dev-api-key-change-me

.PHONY: all build asan deps run test unit integration bench clean deb rpm package-test directive-docs fuzz fuzz-ci fuzz-build

all: build

deps:
	@scripts/deps.sh

.deps-ok:
	@scripts/deps.sh check || scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: .deps-ok $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDR_SANITIZE=ON

asan: .deps-ok $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	scripts/run.sh $(BUILD) $(CONF)

# Unit and integration tests on the normal build, then again under ASan+UBSan.
test: build asan
	cmake -S . -B $(BUILD) >/dev/null
	cmake -S . -B $(ASAN_BUILD) >/dev/null
	cd $(BUILD) && ctest --output-on-failure
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure
	$(MAKE) fuzz-ci

# Coverage-guided fuzzing of the parsers (tests/fuzz/README.md): libFuzzer
# targets built with clang into $(FUZZ_BUILD)/, each run for FUZZ_SECONDS on
# a working copy of its corpus. fuzz-ci: a short run of each (part of `make test`).
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60

$(FUZZ_BUILD)/CMakeCache.txt:
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDR_FUZZ=ON -DDR_TESTS=OFF

fuzz-build: .deps-ok $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-ci: fuzz-build
	FUZZ_JOBS=$(JOBS) tests/fuzz/run.sh $(FUZZ_BUILD) 12

bench: build
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
