# dlsys: `make demo` and `make test` are all a fresh Debian machine needs.
BUILD      ?= build
# One clang build with ASan/UBSan for the sanitized tests and the fuzzers (docs/engineering.md).
SAN_BUILD  ?= build-san
# Seconds each fuzzer runs in `make test` (longer campaigns: fuzz/README.md).
FUZZ_SECONDS ?= 8
JOBS       ?= $(shell nproc)
CMAKE_GEN  := -G Ninja
# ccache keys on relative paths, so a fresh clone elsewhere reuses what an earlier build compiled.
export CCACHE_BASEDIR := $(CURDIR)
# The sanitized build has debug info (-g): ccache would hash the build directory into every key
# and miss in a fresh clone. Paths in debug info then name the first clone; nothing reads them.
export CCACHE_NOHASHDIR := true

.PHONY: all deps build build-san lint test test-unit test-avx2 test-asan test-fuzz demo bench format clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Every test: formatting and module dependencies first (seconds), the parsers under ASan/UBSan,
# the fuzzers for a few seconds each, then unit, ONNX conformance, PyTorch-exported models and
# CLI tests (ctest's summary), then the engine and training tests again with oneDNN limited to
# AVX2.
test: lint test-asan test-fuzz test-unit test-avx2

# The tree is clang-formatted (no diff), every #include follows docs/architecture.md, and the
# Kubernetes manifests under deploy/ parse and fit together (deploy/k8s/README.md).
lint: deps
	@bash scripts/check-format.sh
	@python3 scripts/check_deps.py
	@python3 scripts/check_k8s.py

test-unit: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The engine and training tests again with oneDNN's kernels limited to AVX2 (no AVX-512, VNNI,
# bf16 or AMX: other kernels, int8 models op by op in f32), so a machine with a newer CPU checks
# the AVX2 paths too. Their fixtures (ONNX cases, PyTorch exports and training references) come
# from ctest's setup tests.
AVX2_TESTS := ops_test graph_test quantize_test steady_state_alloc_test pytorch_models_test \
  foreign_models_test onnx_conformance_test autodiff_test train_vs_torch_test layers_vs_torch_test \
  trainer_test
test-avx2: build
	@cd $(BUILD) && ctest -R '^(onnx_cases_generate|pytorch_models_export|foreign_models_export|torch_train_reference)$$' --output-on-failure >/dev/null
	@set -e; for t in $(AVX2_TESTS); do echo "$$t (ONEDNN_MAX_CPU_ISA=AVX2)"; \
	  ONEDNN_MAX_CPU_ISA=AVX2 $(BUILD)/tests/$$t --gtest_brief=1; done

# The sanitized build (clang, -O0, ASan and UBSan; the libraries also carry libFuzzer's coverage
# instrumentation): the tests below and the fuzzers, in one build directory so a cold `make test`
# compiles the libraries twice (release and this), not three times.
ASAN_TESTS := tensor_test graph_test server_test meta_store_test loader_test safetensors_test \
  data_test serve_test monitor_test onnx_conformance_test
SAN_ENV := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
build-san: deps
	@CXX=clang++ cmake -S . -B $(SAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDLSYS_SANITIZE=ON -DDLSYS_FUZZ=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS) --target $(ASAN_TESTS) fuzzers

# The parser and import tests (NPY, ONNX protobuf, malformed models, CSV/IDX, shards and dataset
# ingest), the HTTP server (request parsing, JSON bodies, async connection lifetimes) and the
# metadata store under AddressSanitizer and UndefinedBehaviorSanitizer; and the ONNX conformance
# cases (generated into $(SAN_BUILD) by ctest's fixture) through the whole engine.
test-asan: build-san
	@set -e; for t in $(filter-out onnx_conformance_test,$(ASAN_TESTS)); do \
	  $(SAN_ENV) $(SAN_BUILD)/tests/$$t --gtest_brief=1; done
	@cd $(SAN_BUILD) && ctest -R '^onnx_cases_generate$$' --output-on-failure
	@$(SAN_ENV) $(SAN_BUILD)/tests/onnx_conformance_test --gtest_brief=1

# libFuzzer targets (fuzz/README.md), each run for FUZZ_SECONDS over a copy of its seed corpus;
# any crash fails.
test-fuzz: build-san
	@bash fuzz/run.sh $(SAN_BUILD) $(FUZZ_SECONDS)

demo: build
	@bash scripts/demo.sh $(BUILD)

bench: build
	@bash bench/engine/run.sh $(BUILD)

format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(SAN_BUILD) build-asan build-fuzz
