#!/usr/bin/env bash
# Installs every Debian package dlsys needs to build, test, demo and benchmark.
# Idempotent: does nothing (and needs no network) when everything is already installed.
# Also the npm packages (bench/engine/package.json).
set -euo pipefail

PKGS=(
  # build
  build-essential cmake ninja-build ccache pkg-config clang-format
  # engine
  libdnnl-dev libonnx-dev libprotobuf-dev protobuf-compiler
  # oneDNN's CMake package asks for OpenCL (Debian builds it with the OpenCL GPU runtime)
  ocl-icd-opencl-dev opencl-c-headers
  # core libraries
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  # metadata and artifact store, HTTP server: SQLite, PostgreSQL (client library, and the server
  # its tests start on loopback), OpenSSL (SHA-256), Boost.Beast/Asio
  libsqlite3-dev libpq-dev postgresql libssl-dev libboost-dev
  # training specs
  libyaml-cpp-dev
  # distributed training: collectives over TCP
  libgloo-dev
  # bench/dist: network namespaces, veth pairs and link shaping (ip, tc); taskset
  iproute2 util-linux
  # datasets: zstd-compressed shards, image folders (PNG, JPEG)
  libzstd-dev libxxhash-dev libpng-dev libjpeg62-turbo-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # the Prometheus server that tests/serve/prometheus_test.cpp starts on a loopback port to
  # scrape /metrics (the package also installs a system service on :9090; the test does not use it)
  prometheus
  # fuzzers (fuzz/): clang, libFuzzer and the sanitizer runtimes (libclang-rt), and clang's
  # OpenMP (the top-level CMakeLists finds OpenMP whatever the compiler)
  clang libclang-rt-14-dev libomp-dev
  # reference models, conformance cases and peers (Debian's Python, not a venv)
  python3 python3-numpy python3-onnx python3-torch python3-torchvision
  # no-recommends would drop these, and the scripts use them
  python3-protobuf
  # scripts/check_k8s.py (make lint) parses the Kubernetes manifests under deploy/
  python3-yaml
  # cli_test loads the script of `dlsys completion zsh` in a real zsh, and runs the README's
  # walkthrough, whose commands use curl
  zsh curl
  # the web UI's browser tests (tests/ui: playwright-core from npm drives Debian's chromium,
  # headless); `dlsys notebook` (Jupyter) and its executed example notebook (nbconvert, the
  # Python kernel); the Python client's tests (pandas when present, a venv it installs into)
  chromium jupyter-notebook python3-nbconvert jupyter-nbconvert python3-ipykernel python3-pandas
  python3-venv python3-pip python3-setuptools python3-wheel
)
# The ONNX Runtime peer runs under node (npm package installed by bench/engine). A machine may
# already carry another node build (nodesource) whose npm conflicts with Debian's: only install
# Debian's when there is none.
if ! command -v node >/dev/null 2>&1; then PKGS+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then PKGS+=(npm); fi
# kubectl: the Kubernetes executor's tests check every flag it passes against the real kubectl's
# --help (tests/jobs/kubectl_standin.py). Debian's kubernetes-client, unless a kubectl is there
# already (another package of it would conflict on /usr/bin/kubectl).
if ! command -v kubectl >/dev/null 2>&1; then PKGS+=(kubernetes-client); fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime for node (npm), the second reference some tests compare with (e.g. the exported
# model with string inputs in tests/train/preprocess_test.cpp) and the engine benchmark's peer.
# --ignore-scripts: the package carries its CPU binary; nothing is downloaded at install.
ENGINE_BENCH="$(cd "$(dirname "$0")/.." && pwd)/bench/engine"
if [ ! -d "$ENGINE_BENCH/node_modules/onnxruntime-node" ]; then
  echo "install-deps: installing onnxruntime-node (npm) into bench/engine/node_modules"
  (cd "$ENGINE_BENCH" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi
