// Helpers the libFuzzer targets share: a scratch directory per fuzzer process, a loud failure
// (abort: libFuzzer saves the input as crash-<sha1>), and the fixture data a Services is seeded
// with so that routes get past "not found".
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "api/http_types.h"
#include "api/router.h"
#include "core/file_util.h"

namespace dlsys::fuzz {

// Prints the reason and aborts, which libFuzzer reports as a crash with the input saved.
[[noreturn]] inline void fail(const char* format, ...) {
  std::va_list ap;
  va_start(ap, format);
  std::fputs("\n==fuzz== FAILED: ", stderr);
  std::vfprintf(stderr, format, ap);
  std::fputs("\n", stderr);
  va_end(ap);
  std::fflush(stderr);
  std::abort();
}

// At most `n` bytes of `s`, with control bytes escaped, for failure messages.
inline std::string shown(std::string_view s, size_t n = 600) {
  std::string out;
  for (unsigned char c : s.substr(0, n)) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > n) out += "...";
  return out;
}

// A fresh directory for this process's fixtures, removed at exit: under $DLSYS_FUZZ_TMP, else
// /dev/shm (fsync is free there, and the stores fsync every write), else the system temp
// directory. Directories of fuzzer processes that died (a crash ends in abort, which skips the
// exit handlers) are removed first; each name carries its process id.
inline std::string make_temp_dir(const std::string& target) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path base;
  if (const char* t = std::getenv("DLSYS_FUZZ_TMP"); t && *t) {
    base = t;
  } else if (fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) {
    base = "/dev/shm";
  } else {
    base = fs::temp_directory_path();
  }
  const std::string prefix = "dlsys-fuzz-";
  for (const auto& e : fs::directory_iterator(base, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) != 0) continue;
    size_t dash = n.rfind('-');
    long pid = std::strtol(n.c_str() + dash + 1, nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      fs::remove_all(e.path(), ec);
  }
  fs::path dir = base / (prefix + target + "-" + random_hex(4) + "-" + std::to_string(::getpid()));
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create the fixture directory %s: %s", dir.c_str(), ec.message().c_str());
  static std::string to_remove;
  to_remove = dir.string();
  std::atexit([] {
    std::error_code e;
    std::filesystem::remove_all(to_remove, e);
  });
  return dir.string();
}

inline void write_text(const std::string& path, std::string_view text) {
  std::ofstream f(path, std::ios::binary);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!f) fail("cannot write %s", path.c_str());
}

// Calls one route in-process; a fixture that fails to apply is a broken harness, not a finding.
inline api::Response call(const api::Router& router, const std::string& method,
                          const std::string& path, const std::string& body,
                          const std::string& token = "", const std::string& body_file = "") {
  api::Request req;
  req.method = method;
  req.path = path;
  req.body = body;
  req.body_file = body_file;
  req.request_id = "fuzz-seed";
  if (!token.empty()) req.headers["authorization"] = "Bearer " + token;
  return router.dispatch(req);
}

inline void must(const api::Response& r, const char* what) {
  if (r.status < 200 || r.status >= 300)
    fail("fixture step '%s' failed with %d: %s", what, r.status, r.body.c_str());
}

// The fixture every API fuzzer starts from; path parameters of the fuzzers name these:
//   experiment 1 "e", run 1 "r" (param lr, tag team, metric loss, artifacts model.onnx and
//   a/b.txt), model "m" version 1 with alias "prod", dataset "m" v1 and v2 with tag "t",
//   a lineage edge run/1 -> model_version/m@1.
// `token` authenticates the calls when the router requires it.
inline void seed_backend(const api::Router& router, const std::string& scratch,
                         const std::string& token = "") {
  must(call(router, "POST", "/api/v1/experiments", R"({"name":"e","description":"fuzz"})", token),
       "experiment");
  must(call(router, "POST", "/api/v1/runs",
            R"({"experiment_id":1,"name":"r","params":{"lr":"0.1"},"tags":{"team":"a"}})", token),
       "run");
  must(
      call(
          router, "POST", "/api/v1/runs/1/log-batch",
          R"({"metrics":[{"key":"loss","value":0.5,"step":0},{"key":"loss","value":0.25,"step":1}]})",
          token),
      "log-batch");
  must(call(router, "PUT", "/api/v1/runs/1/artifacts/model.onnx", "not really onnx", token),
       "artifact model.onnx");
  must(call(router, "PUT", "/api/v1/runs/1/artifacts/a/b.txt", "hello", token), "artifact a/b.txt");
  must(call(router, "POST", "/api/v1/models", R"({"name":"m","description":"fuzz"})", token),
       "model");
  must(call(router, "POST", "/api/v1/models/m/versions",
            R"({"run_id":1,"artifact_path":"model.onnx"})", token),
       "model version");
  must(call(router, "PUT", "/api/v1/models/m/aliases/prod", R"({"version":1})", token), "alias");
  for (int v = 1; v <= 2; ++v) {
    std::string csv = scratch + "/seed" + std::to_string(v) + ".csv";
    std::string rows = "x,y,label\n";
    for (int i = 0; i < 20; ++i)
      rows += std::to_string(i) + "," + std::to_string(i * v) + "," + (i % 2 ? "a" : "b") + "\n";
    write_text(csv, rows);
    must(call(router, "POST", "/api/v1/datasets/m/versions", "", token, csv), "dataset push");
  }
  must(call(router, "PUT", "/api/v1/datasets/m/tags/t", R"({"version":"v1"})", token),
       "dataset tag");
  must(call(router, "POST", "/api/v1/lineage",
            R"({"src":{"kind":"run","id":"1"},"dst":{"kind":"model_version","id":"m@1"}})", token),
       "lineage");
}

}  // namespace dlsys::fuzz
