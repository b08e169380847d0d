# The front door. `make run` starts the server, `make test` runs every test;
# both install what is missing first (see scripts/deps.sh).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CONF       ?= conf/depth-realtime.conf
# Development secrets for `make run` only; production reads them from the environment.
export JWT_SECRET ?= dev-secret-change-me
export API_KEY ?= dev-api-key-change-me

.PHONY: all build asan deps run test unit integration bench clean deb rpm package-test directive-docs

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

bench: build
	tests/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

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
