// dlsys's /metrics scraped by the real Prometheus server (Debian's `prometheus`): a dlsys server
// on loopback serves a small model and answers a few inferences; Prometheus, started on its own
// loopback port with a config and a TSDB directory the test writes, scrapes it every 200 ms; the
// test reads the series back through Prometheus's query API (polled up to a deadline, no fixed
// sleeps) and stops Prometheus (SIGTERM, then SIGKILL past a deadline). It takes about 5.5 s:
// Prometheus's service discovery hands the configured targets to the scraper only after its
// fixed 5 s update tick (no flag shortens it; --scrape.discovery-reload-interval does not).
//
// A machine without the `prometheus` binary fails this test: install it with
// scripts/install-deps.sh.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "../api/server_fixture.h"
#include "serve/model_server.h"
#include "serve/serve_routes.h"
#include "testing/onnx_builder.h"

extern char** environ;

namespace dlsys::serve {
namespace {

using api::HttpConnection;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

// The first executable `name` on $PATH, or "".
std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    std::string p = (d.empty() ? "." : d) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// A loopback port that was free a moment ago (bound to port 0 and released).
int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

std::string url_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

std::string read_tail(const std::filesystem::path& p, size_t n = 3000) {
  std::ifstream f(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s.size() > n ? s.substr(s.size() - n) : s;
}

// A Prometheus server process: started with posix_spawn (stdout and stderr to `log`), stopped by
// the destructor: SIGTERM, up to 10 s for it to exit, then SIGKILL.
class PrometheusProcess {
 public:
  PrometheusProcess() = default;
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;
  ~PrometheusProcess() { stop(); }

  bool start(const std::string& bin, const std::vector<std::string>& args,
             const std::filesystem::path& log) {
    log_ = log;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addclose(&fa, 0);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int rc = posix_spawn(&pid_, bin.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) pid_ = 0;
    return rc == 0;
  }
  // True while the process runs; false (and reaped) once it exited.
  bool running() {
    if (pid_ == 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      exit_status_ = status;
      return false;
    }
    return true;
  }
  // SIGTERM, wait up to 10 s, then SIGKILL. Returns how it ended ("" when not started).
  std::string stop() {
    if (pid_ == 0) return "";
    ::kill(pid_, SIGTERM);
    const auto until = steady_clock::now() + seconds(10);
    while (steady_clock::now() < until) {
      if (!running()) return "exited after SIGTERM";
      std::this_thread::sleep_for(milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = 0;
    return "killed (SIGTERM was not enough within 10 s)";
  }
  std::string log_tail() const { return read_tail(log_); }
  int exit_status() const { return exit_status_; }

 private:
  pid_t pid_ = 0;
  int exit_status_ = 0;
  std::filesystem::path log_;
};

class PrometheusTest : public api::ServerFixture {
 protected:
  void SetUp() override {
    Start(
        false, 16 << 20,
        [this](api::Router& r) {
          models_ = std::make_unique<ModelServer>(backend_->store(), backend_->objects(),
                                                  ModelServerOptions{});
          add_serve_routes(r, *models_, backend_->store());
          ASSERT_TRUE(models_->start().ok());
        },
        [this](api::ServerOptions& so) {
          so.extra_metrics = [this] { return models_->metrics_text(); };
        });
    local_ = api::connect_local(*backend_);
  }
  void TearDown() override {
    conn_.reset();
    if (server_) server_->shutdown();
    if (thread_.joinable()) thread_.join();
    models_.reset();
    ServerFixture::TearDown();
  }
  // Registers the tiny MLP as version 1 of model "mlp" and deploys it as `name`.
  void Deploy(const std::string& name) {
    auto run = local_->call("POST", "/api/v1/runs", {{"experiment", "prometheus"}});
    ASSERT_TRUE(run.ok()) << run.status().to_string();
    int64_t id = (*run)["id"].get<int64_t>();
    std::string f = (dir_ / "model.onnx").string();
    ASSERT_TRUE(write_file_atomic(f, testing::tiny_mlp().bytes()).ok());
    ASSERT_TRUE(
        local_->upload("/api/v1/runs/" + std::to_string(id) + "/artifacts/model.onnx", f).ok());
    ASSERT_TRUE(local_->call("POST", "/api/v1/models", {{"name", "mlp"}}).ok());
    ASSERT_TRUE(local_->call("POST", "/api/v1/models/mlp/versions", {{"run_id", id}}).ok());
    auto r = Req("POST", "/api/v1/deployments",
                 json{{"name", name}, {"model", "mlp"}, {"ref", "1"}}.dump());
    ASSERT_EQ(r.status, 201) << r.body;
  }

  std::unique_ptr<ModelServer> models_;
  std::unique_ptr<api::ApiClient> local_;
};

// GET /api/v1/query on Prometheus: the result vector, or nullopt while it cannot answer.
std::optional<json> query(int port, const std::string& promql) {
  auto c = HttpConnection::open("127.0.0.1", port);
  if (!c.ok()) return std::nullopt;
  auto r = (*c)->request("GET", "/api/v1/query?query=" + url_encode(promql), "");
  if (!r.ok() || r->status != 200) return std::nullopt;
  json j = json::parse(r->body, nullptr, false);
  if (!j.is_object() || j.value("status", "") != "success") return std::nullopt;
  return j["data"]["result"];
}

// The value of a one-series result, or nullopt.
std::optional<double> single_value(const std::optional<json>& result) {
  if (!result || !result->is_array() || result->size() != 1) return std::nullopt;
  return std::stod((*result)[0]["value"][1].get<std::string>());
}

TEST_F(PrometheusTest, PrometheusScrapesServingAndServerMetrics) {
  const std::string bin = find_on_path("prometheus");
  ASSERT_FALSE(bin.empty())
      << "the Prometheus server ('prometheus') is not on PATH; install it with "
         "scripts/install-deps.sh (Debian package prometheus)";
  ASSERT_NO_FATAL_FAILURE(Deploy("digits-mlp"));
  const int kRequests = 7;
  json body = {{"inputs",
                {{{"name", "x"},
                  {"shape", {2, 4}},
                  {"datatype", "FP32"},
                  {"data", {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}}}}}};
  for (int i = 0; i < kRequests; ++i)
    ASSERT_EQ(Req("POST", "/v2/models/digits-mlp/infer", body.dump()).status, 200);

  const std::filesystem::path pdir = dir_ / "prometheus";
  std::filesystem::create_directories(pdir / "tsdb");
  const int prom_port = free_loopback_port();
  ASSERT_GT(prom_port, 0);
  ASSERT_TRUE(write_file_atomic((pdir / "prometheus.yml").string(),
                                fmt::format("global:\n"
                                            "  scrape_interval: 200ms\n"
                                            "  scrape_timeout: 150ms\n"
                                            "scrape_configs:\n"
                                            "  - job_name: dlsys\n"
                                            "    metrics_path: /metrics\n"
                                            "    static_configs:\n"
                                            "      - targets: ['127.0.0.1:{}']\n",
                                            server_->port()))
                  .ok());
  PrometheusProcess prom;
  ASSERT_TRUE(
      prom.start(bin,
                 {"--config.file=" + (pdir / "prometheus.yml").string(),
                  "--storage.tsdb.path=" + (pdir / "tsdb").string(),
                  fmt::format("--web.listen-address=127.0.0.1:{}", prom_port), "--log.level=warn"},
                 pdir / "prometheus.log"))
      << "cannot start " << bin;

  // Poll the query API until the deployment's requests are in, up to a deadline.
  const std::string requests = "sum(dlsys_serve_requests_total{deployment=\"digits-mlp\"})";
  const auto until = steady_clock::now() + seconds(30);
  std::optional<double> seen;
  while (steady_clock::now() < until) {
    ASSERT_TRUE(prom.running()) << "prometheus exited (status " << prom.exit_status() << "):\n"
                                << prom.log_tail();
    seen = single_value(query(prom_port, requests));
    if (seen && *seen == kRequests) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_TRUE(seen && *seen == kRequests)
      << requests << " is " << (seen ? std::to_string(*seen) : "absent")
      << " after 30 s; targets: " << (query(prom_port, "up") ? query(prom_port, "up")->dump() : "?")
      << "\n"
      << prom.log_tail();

  // The series as Prometheus stored it: its labels, scraped from this server.
  auto ok = query(prom_port,
                  "dlsys_serve_requests_total{deployment=\"digits-mlp\","
                  "outcome=\"success\"}");
  ASSERT_TRUE(ok && ok->size() == 1) << (ok ? ok->dump() : "no answer");
  const json& metric = (*ok)[0]["metric"];
  EXPECT_EQ(metric["version"], "1") << metric.dump();
  EXPECT_EQ(metric["job"], "dlsys") << metric.dump();
  EXPECT_EQ(metric["instance"], fmt::format("127.0.0.1:{}", server_->port())) << metric.dump();
  EXPECT_EQ(single_value(ok), kRequests);
  // Histograms are usable as histograms: a median over the request latency buckets is a
  // finite duration (NaN without a well-formed +Inf bucket), and the queue-time histogram
  // counts every request.
  auto median = single_value(query(prom_port,
                                   "histogram_quantile(0.5, dlsys_serve_request_duration_seconds_"
                                   "bucket{deployment=\"digits-mlp\"})"));
  ASSERT_TRUE(median.has_value());
  EXPECT_TRUE(*median > 0 && *median <= 5) << *median;
  EXPECT_EQ(single_value(query(prom_port,
                               "dlsys_serve_queue_duration_seconds_bucket{deployment=\"digits-"
                               "mlp\",le=\"+Inf\"}")),
            kRequests);
  EXPECT_EQ(single_value(query(
                prom_port, "dlsys_serve_queue_duration_seconds_count{deployment=\"digits-mlp\"}")),
            kRequests);
  // The tracking server's own request metrics are scraped too: at least the deployment's
  // creation and the inferences were 2xx answers.
  auto http = single_value(query(prom_port, "dlsys_http_requests_total{code=\"2xx\"}"));
  ASSERT_TRUE(http.has_value()) << prom.log_tail();
  EXPECT_GE(*http, kRequests + 1);
  EXPECT_EQ(single_value(query(prom_port, "up{job=\"dlsys\"}")), 1.0);

  EXPECT_EQ(prom.stop(), "exited after SIGTERM");
}

}  // namespace
}  // namespace dlsys::serve
