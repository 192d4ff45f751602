# Thin wrapper over the CMake build that ./configure set up.
-include config.mk
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: all check check-unit check-integration check-guest install fuzz fuzz-run fuzz-smoke bench clean distclean

all: $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

$(BUILD_DIR)/CMakeCache.txt:
	./configure

# Every test: unit, integration (real processes), guest (real Linux guest).
check: all
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

check-unit: all
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

check-integration: all
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L integration

check-guest: all
	cd $(BUILD_DIR) && ctest --output-on-failure -L guest

install: all
	cmake --install $(BUILD_DIR)

# libFuzzer targets in their own clang build (build-fuzz/).
fuzz:
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DMPQ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build-fuzz -j $(JOBS)

# A short run of every fuzz target after replaying its regression inputs
# (CI). FUZZ_SECONDS per target, default 30.
fuzz-smoke: fuzz
	fuzz/run-smoke.sh

bench: all
	@ls $(BUILD_DIR)/*_bench 2>/dev/null || true

clean:
	-cmake --build $(BUILD_DIR) --target clean

distclean:
	rm -rf $(BUILD_DIR) build-fuzz config.mk
