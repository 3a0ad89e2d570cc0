// The serving fixture: a real dlsys HTTP server on loopback with a ModelServer on its router
// (the alias watcher polls every 20 ms), helpers to register versions of a tiny MLP through the
// API, move its alias, and compute the engine's reference answer.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "../api/server_fixture.h"
#include "graph/onnx_import.h"
#include "graph/session.h"
#include "serve/model_server.h"
#include "serve/serve_routes.h"
#include "testing/onnx_builder.h"

namespace dlsys::serve {

using api::HttpConnection;
using api::HttpResult;
using nlohmann::json;

// tiny_mlp with W2 scaled by `scale`: version 1 and 2 of the same model give different answers.
inline std::string mlp_bytes(float scale) {
  auto b = testing::tiny_mlp();
  for (auto& init : *b.model().mutable_graph()->mutable_initializer())
    if (init.name() == "W2")
      for (int i = 0; i < init.float_data_size(); ++i)
        init.set_float_data(i, init.float_data(i) * scale);
  return b.bytes();
}

class ServingTest : public api::ServerFixture {
 protected:
  void SetUp() override {
    Start(
        auth_, 16 << 20,
        [this](api::Router& r) {
          ModelServerOptions o = model_options_;
          if (o.sample_dir.empty()) o.sample_dir = (dir_ / "samples").string();
          models_ = std::make_unique<ModelServer>(backend_->store(), backend_->objects(), o);
          add_serve_routes(r, *models_, backend_->store());
          ASSERT_TRUE(models_->start().ok());
        },
        [this](api::ServerOptions& so) {
          so.extra_metrics = [this] { return models_->metrics_text(); };
        });
    if (auth_) {
      // The router checks tokens on in-process calls too: set-up goes over HTTP as an admin.
      meta::Principal root{"root", meta::Role::kAdmin};
      auto admin = backend_->store().tokens().create_token("setup", meta::Role::kAdmin, root);
      ASSERT_TRUE(admin.ok());
      auto c =
          api::connect_http("http://127.0.0.1:" + std::to_string(server_->port()), admin->token);
      ASSERT_TRUE(c.ok()) << c.status().to_string();
      local_ = std::move(c).value();
    } else {
      local_ = api::connect_local(*backend_);
    }
  }
  void TearDown() override {
    conn_.reset();
    if (server_) server_->shutdown();
    if (thread_.joinable()) thread_.join();
    models_.reset();
    ServerFixture::TearDown();
  }

  // Registers `onnx` as the next version of model "mlp" (through the API, as a user would).
  int64_t Register(const std::string& onnx, const std::string& model = "mlp") {
    auto run = local_->call("POST", "/api/v1/runs", {{"experiment", "serving"}});
    EXPECT_TRUE(run.ok()) << run.status().to_string();
    int64_t id = (*run)["id"].get<int64_t>();
    std::string f = (dir_ / ("m" + std::to_string(id) + ".onnx")).string();
    EXPECT_TRUE(write_file_atomic(f, onnx).ok());
    EXPECT_TRUE(
        local_->upload("/api/v1/runs/" + std::to_string(id) + "/artifacts/model.onnx", f).ok());
    (void)local_->call("POST", "/api/v1/models", {{"name", model}});
    auto v = local_->call("POST", "/api/v1/models/" + model + "/versions", {{"run_id", id}});
    EXPECT_TRUE(v.ok()) << v.status().to_string();
    return v.ok() ? (*v)["version"].get<int64_t>() : 0;
  }
  void Alias(int64_t version) {
    ASSERT_TRUE(
        local_->call("PUT", "/api/v1/models/mlp/aliases/production", {{"version", version}}).ok());
  }
  // Sends one JSON inference of `rows` rows to `name` (with X-Request-Key `key` when set).
  HttpResult Infer(const std::string& name, const std::vector<float>& x, int64_t rows,
                   const std::string& key = "") {
    std::map<std::string, std::string> h;
    if (!key.empty()) h["X-Request-Key"] = key;
    if (!conn_) conn_ = std::move(HttpConnection::open("127.0.0.1", server_->port()).value());
    auto r = conn_->request("POST", "/v2/models/" + name + "/infer", InferBody(x, rows).dump(), h);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : HttpResult{};
  }
  // Waits (up to 10 s) until deployment `name` serves `version`.
  bool WaitForVersion(const std::string& name, int64_t version) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      auto v = models_->find(name);
      if (v.ok() && (*v)->version == version) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  // The reference answer: the ONNX model run directly.
  static std::vector<float> Expected(const std::string& onnx, const std::vector<float>& x,
                                     int64_t rows) {
    auto m = Session::from_graph(*import_onnx_bytes(onnx, "test model"));
    std::vector<Tensor> out;
    Tensor in = Tensor::from_f32({rows, 4}, x.data());
    EXPECT_TRUE(m->run({{"x", in}}, &out).ok());
    const float* p = out[0].data_as<float>();
    return std::vector<float>(p, p + out[0].numel());
  }
  static json InferBody(const std::vector<float>& x, int64_t rows, const std::string& id = "") {
    json b = {
        {"inputs", {{{"name", "x"}, {"shape", {rows, 4}}, {"datatype", "FP32"}, {"data", x}}}}};
    if (!id.empty()) b["id"] = id;
    return b;
  }

  // Set by a derived fixture's constructor to serve under other options.
  ModelServerOptions model_options_ = [] {
    ModelServerOptions o;
    o.poll = std::chrono::milliseconds(20);  // aliases checked often: tests move them
    return o;
  }();
  bool auth_ = false;  // tokens required (set by a derived fixture's constructor)
  std::unique_ptr<ModelServer> models_;
  std::unique_ptr<api::ApiClient> local_;
};

inline std::vector<float> Inputs(int64_t rows, float seed) {
  std::vector<float> x(static_cast<size_t>(rows * 4));
  for (size_t i = 0; i < x.size(); ++i) x[i] = seed + 0.25f * static_cast<float>(i % 7) - 0.5f;
  return x;
}

inline void ExpectNear(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "element " << i;
}

// The nice value of thread `tid` of this process (field 19 of /proc/self/task/TID/stat).
inline int ThreadNice(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));  // the name may hold spaces
  std::string field;
  for (int i = 3; i <= 19 && rest >> field; ++i) {
  }
  return std::stoi(field);
}

inline std::string ThreadName(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string name;
  std::getline(f, name);
  return name;
}

// Every thread of this process with its nice value.
inline std::vector<std::pair<pid_t, int>> ThreadNices() {
  std::vector<std::pair<pid_t, int>> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    pid_t tid = static_cast<pid_t>(std::stol(e.path().filename().string()));
    out.emplace_back(tid, ThreadNice(tid));
  }
  return out;
}

// Loads plan at nice +10 on the server's planner thread ('dlsys-load', and the OpenMP threads it
// starts, which take its name); every other thread, a version's batcher among them, must serve
// at the process's priority.
inline void ExpectEveryThreadAtTheProcessPriority() {
  int main_nice = ThreadNice(::getpid());
  for (const auto& [tid, nice] : ThreadNices()) {
    if (ThreadName(tid) == "dlsys-load")
      EXPECT_EQ(nice, main_nice + 10) << "the planner thread " << tid << " is not niced";
    else
      EXPECT_EQ(nice, main_nice) << "thread " << tid << " ('" << ThreadName(tid)
                                 << "') runs at another priority than the server";
  }
}

}  // namespace dlsys::serve
