# dlsys: `make demo` and `make test` are all a fresh Debian machine needs.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_GEN  := -G Ninja
# ccache keys on relative paths, so a fresh clone elsewhere reuses what an earlier build compiled.
export CCACHE_BASEDIR := $(CURDIR)

.PHONY: all deps build test test-unit test-asan demo bench format clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Every test: the parsers under ASan/UBSan, then unit, ONNX conformance, PyTorch-exported models and
# CLI tests (ctest's summary closes the output).
test: test-asan test-unit

test-unit: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The parser and import tests (NPY, ONNX protobuf, malformed models, CSV/IDX, shards and dataset
# ingest), the HTTP server (request
# parsing, JSON bodies, async connection lifetimes) and the metadata store under AddressSanitizer
# and UndefinedBehaviorSanitizer.
test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDLSYS_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS) --target tensor_test graph_test server_test meta_store_test loader_test safetensors_test data_test
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_BUILD)/tests/tensor_test --gtest_brief=1
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_BUILD)/tests/graph_test --gtest_brief=1
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_BUILD)/tests/server_test --gtest_brief=1
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_BUILD)/tests/meta_store_test --gtest_brief=1
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_BUILD)/tests/loader_test --gtest_brief=1
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_BUILD)/tests/safetensors_test --gtest_brief=1
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(ASAN_BUILD)/tests/data_test --gtest_brief=1

demo: build
	@bash scripts/demo.sh $(BUILD)

bench: build
	@bash bench/engine/run.sh $(BUILD)

format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
