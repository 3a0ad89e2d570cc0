// Serving end to end on a real HTTP server on loopback: deployments through /api/v1/deployments,
// inference through the KServe v2 routes (JSON and binary tensors), answers checked against a
// direct Session::run of the same ONNX model, and alias moves under load that fail no request.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "serve/request_sampler.h"
#include "serving_fixture.h"

namespace dlsys::serve {
namespace {

TEST_F(ServingTest, DeploysAnAliasAndAnswersJsonLikeTheEngine) {
  std::string v1 = mlp_bytes(1.0f);
  ASSERT_EQ(Register(v1), 1);
  Alias(1);
  auto created = Req("POST", "/api/v1/deployments",
                     json{{"name", "mlp"},
                          {"model", "mlp"},
                          {"ref", "production"},
                          {"config", {{"max_batch", 8}, {"max_delay_us", 500}}}}
                         .dump());
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(J(created)["status"]["version"], 1);
  EXPECT_EQ(J(created)["status"]["state"], "ready");

  std::vector<float> x = Inputs(3, 0.1f);
  auto r = Req("POST", "/v2/models/mlp/infer", InferBody(x, 3, "req-7").dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json a = J(r);
  EXPECT_EQ(a["model_name"], "mlp");
  EXPECT_EQ(a["model_version"], "1");
  EXPECT_EQ(a["id"], "req-7");
  ASSERT_EQ(a["outputs"].size(), 1u);
  EXPECT_EQ(a["outputs"][0]["name"], "y");
  EXPECT_EQ(a["outputs"][0]["datatype"], "FP32");
  EXPECT_EQ(a["outputs"][0]["shape"], json({3, 3}));
  ExpectNear(a["outputs"][0]["data"].get<std::vector<float>>(), Expected(v1, x, 3));

  // Nested data is read row-major like flat data.
  json nested = InferBody({}, 2);
  nested["inputs"][0]["data"] = {{0.1, 0.2, 0.3, 0.4}, {0.5, 0.6, 0.7, 0.8}};
  r = Req("POST", "/v2/models/mlp/versions/1/infer", nested.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  ExpectNear(J(r)["outputs"][0]["data"].get<std::vector<float>>(),
             Expected(v1, {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f}, 2));

  // Metadata and readiness.
  auto meta = J(Req("GET", "/v2/models/mlp"));
  EXPECT_EQ(meta["inputs"][0]["name"], "x");
  EXPECT_EQ(meta["inputs"][0]["shape"], json({-1, 4}));
  EXPECT_EQ(meta["versions"], json({"1"}));
  EXPECT_EQ(Req("GET", "/v2/models/mlp/ready").status, 200);
  EXPECT_EQ(Req("GET", "/v2/health/ready").status, 200);
  EXPECT_EQ(Req("GET", "/v2/health/live").status, 200);
  EXPECT_EQ(J(Req("GET", "/v2"))["extensions"], json({"binary_tensor_data"}));
}

// A version registered from a file has no run (`dlsys models register --file`); a deployment
// finds its file all the same and answers like the engine.
// A request's deadline counts from its first byte, not from when its body was complete: a body
// that trickles in past the deadline is answered 503 at once instead of being run late.
TEST_F(ServingTest, DeadlineCountsFromTheRequestsFirstByte) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  ASSERT_EQ(
      Req("POST", "/api/v1/deployments",
          json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "1"}, {"config", {{"timeout_ms", 100}}}}
              .dump())
          .status,
      201);
  const std::string body = InferBody(Inputs(1, 0.1f), 1).dump();
  const std::string head = "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n";
  // Sends head + body (the second half `pause` later) on a fresh connection; returns the answer.
  auto send = [&](std::chrono::milliseconds pause) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(server_->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const std::string first = head + body.substr(0, body.size() / 2);
    const std::string rest = body.substr(body.size() / 2);
    EXPECT_EQ(::send(fd, first.data(), first.size(), MSG_NOSIGNAL), ssize_t(first.size()));
    std::this_thread::sleep_for(pause);  // a slow client: the point of the test
    EXPECT_EQ(::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL), ssize_t(rest.size()));
    std::string out;
    char buf[4096];
    for (ssize_t n; out.find("}") == std::string::npos && (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
      out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
  };
  std::string quick = send(std::chrono::milliseconds(0));
  EXPECT_EQ(quick.rfind("HTTP/1.1 200", 0), 0u) << quick;
  std::string slow = send(std::chrono::milliseconds(150));
  EXPECT_EQ(slow.rfind("HTTP/1.1 503", 0), 0u) << slow;
  EXPECT_NE(slow.find("deadline"), std::string::npos) << slow;
  EXPECT_NE(slow.find("Retry-After"), std::string::npos) << slow;
}

// The batcher works to a deadline earlier by the time answers lately waited for the I/O thread
// (at most a quarter of the timeout), so that an admitted answer still leaves in time.
TEST_F(ServingTest, DeadlinesLeaveTimeForTheAnswerToBeWritten) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"},
                     {"model", "mlp"},
                     {"ref", "1"},
                     {"config", {{"timeout_ms", 1000}, {"max_delay_us", 0}}}}
                    .dump())
                .status,
            201);
  auto v = models_->find("mlp");
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  // Runs one request that arrived `age` ago, whose answers lately waited `delay_us`.
  auto run = [&](std::chrono::milliseconds age, int64_t delay_us) -> Status {
    auto req = parse_v2_infer_request(InferBody(Inputs(1, 0.2f), 1).dump(), std::nullopt,
                                      (*v)->inputs, (*v)->outputs, {}, (*v)->extras.get());
    EXPECT_TRUE(req.ok()) << req.status().to_string();
    req->received = Clock::now() - age;
    req->answer_delay_us = delay_us;
    std::promise<Status> answered;
    Status st = models_->infer(*v, *req, [&](int64_t, Result<std::vector<Tensor>> out) {
      answered.set_value(out.status());
    });
    if (!st.ok()) return st;
    auto f = answered.get_future();
    EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    return f.get();
  };
  using std::chrono::milliseconds;
  EXPECT_TRUE(run(milliseconds(900), 0).ok()) << "100 ms were left";
  Status late = run(milliseconds(900), 200'000);
  EXPECT_EQ(late.code(), StatusCode::kDeadlineExceeded)
      << "100 ms left, less 200 ms for the answer to be written: " << late.to_string();
  // The reserve is capped at a quarter of the timeout (250 ms): 150 ms are left to run.
  Status capped = run(milliseconds(600), 10'000'000);
  EXPECT_TRUE(capped.ok()) << capped.to_string();
}

TEST_F(ServingTest, AVersionWithoutARunServes) {
  std::string v1 = mlp_bytes(0.5f);
  std::string f = (dir_ / "own.onnx").string();
  ASSERT_TRUE(write_file_atomic(f, v1).ok());
  ASSERT_TRUE(local_->call("POST", "/api/v1/models", {{"name", "mlp"}}).ok());
  auto v = local_->upload("/api/v1/models/mlp/versions/upload", f, "POST");
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_TRUE((*v)["run_id"].is_null());
  Alias((*v)["version"].get<int64_t>());
  auto created = Req("POST", "/api/v1/deployments",
                     json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "production"}}.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(J(created)["status"]["state"], "ready");
  std::vector<float> x = Inputs(2, 0.3f);
  auto r = Infer("mlp", x, 2);
  ASSERT_EQ(r.status, 200) << r.body;
  ExpectNear(J(r)["outputs"][0]["data"].get<std::vector<float>>(), Expected(v1, x, 2));
  EXPECT_TRUE(J(Req("GET", "/api/v1/runs"))["runs"].empty());
}

TEST_F(ServingTest, BinaryTensorsInAndOut) {
  std::string v1 = mlp_bytes(1.0f);
  ASSERT_EQ(Register(v1), 1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "1"}}.dump())
                .status,
            201);
  std::vector<float> x = Inputs(5, -0.3f);
  json head = {{"inputs",
                {{{"name", "x"},
                  {"shape", {5, 4}},
                  {"datatype", "FP32"},
                  {"parameters", {{"binary_data_size", x.size() * 4}}}}}},
               {"parameters", {{"binary_data_output", true}}}};
  std::string h = head.dump();
  std::string body = h + std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4);
  auto r = Req("POST", "/v2/models/mlp/infer", body,
               {{"Inference-Header-Content-Length", std::to_string(h.size())}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(r.headers.count("inference-header-content-length"));
  size_t jl = std::stoul(r.headers["inference-header-content-length"]);
  json a = json::parse(r.body.substr(0, jl));
  EXPECT_EQ(a["outputs"][0]["parameters"]["binary_data_size"], 5 * 3 * 4);
  ASSERT_EQ(r.body.size(), jl + 5 * 3 * 4);
  std::vector<float> got(15);
  std::memcpy(got.data(), r.body.data() + jl, 60);
  ExpectNear(got, Expected(v1, x, 5));
}

TEST_F(ServingTest, BadRequestsNameTheInputAndWhatWasExpected) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "1"}}.dump())
                .status,
            201);
  auto expect_400 = [&](const json& body, const std::string& needle) {
    auto r = Req("POST", "/v2/models/mlp/infer", body.dump());
    EXPECT_EQ(r.status, 400) << body.dump();
    EXPECT_NE(J(r)["error"].get<std::string>().find(needle), std::string::npos) << r.body;
  };
  json b = InferBody(Inputs(2, 0), 2);
  b["inputs"][0]["name"] = "z";
  expect_400(b, "input 'z' is not an input of the model (it has 'x')");
  b = InferBody(Inputs(2, 0), 2);
  b["inputs"][0]["shape"] = {2, 5};
  expect_400(b, "shape [2, 5] does not match the model's [-1, 4]");
  b = InferBody(Inputs(2, 0), 2);
  b["inputs"][0]["datatype"] = "FP64";
  expect_400(b, "datatype FP64 does not match the model's FP32");
  b = InferBody(Inputs(2, 0), 3);
  expect_400(b, "\"data\" holds 8 elements, shape [3, 4] needs 12");
  b = InferBody(Inputs(2, 0), 2);
  b["inputs"][0]["data"][3] = "x";
  expect_400(b, "element 3 is a string, expected a number");
  expect_400(json{{"inputs", json::array()}}, "non-empty array");
  auto r = Req("POST", "/v2/models/mlp/infer", "{not json");
  EXPECT_EQ(r.status, 400);
  // Too many rows for the deployment's max_batch (32 by default).
  r = Req("POST", "/v2/models/mlp/infer", InferBody(Inputs(33, 0), 33).dump());
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("33"), std::string::npos) << r.body;
  // Unknown model and version.
  EXPECT_EQ(Req("POST", "/v2/models/nope/infer", InferBody(Inputs(1, 0), 1).dump()).status, 404);
  EXPECT_EQ(
      Req("POST", "/v2/models/mlp/versions/9/infer", InferBody(Inputs(1, 0), 1).dump()).status,
      404);
  // A deployment of a version that does not exist is refused and not stored.
  auto bad = Req("POST", "/api/v1/deployments",
                 json{{"name", "other"}, {"model", "mlp"}, {"ref", "7"}}.dump());
  EXPECT_EQ(bad.status, 404) << bad.body;
  EXPECT_EQ(Req("GET", "/api/v1/deployments/other").status, 404);
  EXPECT_EQ(Req("GET", "/v2/health/ready").status, 200) << "the refused deployment lingers";
  // An update to a version that cannot load changes nothing: version 1 still answers.
  auto upd = Req("PUT", "/api/v1/deployments/mlp", json{{"model", "mlp"}, {"ref", "9"}}.dump());
  EXPECT_EQ(upd.status, 404) << upd.body;
  EXPECT_EQ(J(Req("GET", "/api/v1/deployments/mlp"))["ref"], "1");
  r = Req("POST", "/v2/models/mlp/infer", InferBody(Inputs(1, 0), 1).dump());
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(J(r)["model_version"], "1");
  // A configuration typo is refused with the field's name.
  bad = Req("POST", "/api/v1/deployments",
            json{{"name", "other"}, {"model", "mlp"}, {"ref", "1"}, {"config", {{"max_bach", 4}}}}
                .dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("max_bach"), std::string::npos) << bad.body;
}

// The alias moves three times while four clients send requests: every request succeeds, each
// answer is exactly one version's answer, and both versions answer.
TEST_F(ServingTest, AliasMovesUnderLoadFailNoRequest) {
  std::string v1 = mlp_bytes(1.0f), v2 = mlp_bytes(2.0f);
  ASSERT_EQ(Register(v1), 1);
  ASSERT_EQ(Register(v2), 2);
  Alias(1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"},
                     {"model", "mlp"},
                     {"ref", "production"},
                     {"config", {{"max_batch", 8}, {"max_delay_us", 200}, {"instances", 2}}}}
                    .dump())
                .status,
            201);
  std::vector<float> x = Inputs(2, 0.7f);
  const std::vector<float> want1 = Expected(v1, x, 2), want2 = Expected(v2, x, 2);
  const std::string body = InferBody(x, 2).dump();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ok{0}, failed{0}, seen1{0}, seen2{0};
  std::vector<std::string> errors;
  std::mutex errors_mu;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t)
    clients.emplace_back([&] {
      auto c = HttpConnection::open("127.0.0.1", server_->port());
      if (!c.ok()) {
        ++failed;
        return;
      }
      while (!stop.load()) {
        auto r = (*c)->request("POST", "/v2/models/mlp/infer", body);
        json a = r.ok() ? json::parse(r->body, nullptr, false) : json();
        bool good = r.ok() && r->status == 200 && a.is_object();
        if (good) {
          auto y = a["outputs"][0]["data"].get<std::vector<float>>();
          auto close = [&](const std::vector<float>& w) {
            for (size_t i = 0; i < w.size(); ++i)
              if (std::fabs(y[i] - w[i]) > 1e-5) return false;
            return y.size() == w.size();
          };
          std::string ver = a["model_version"];
          if (ver == "1" && close(want1))
            ++seen1;
          else if (ver == "2" && close(want2))
            ++seen2;
          else
            good = false;
        }
        if (good) {
          ++ok;
        } else {
          ++failed;
          std::lock_guard<std::mutex> l(errors_mu);
          if (errors.size() < 5)
            errors.push_back(r.ok() ? std::to_string(r->status) + " " + r->body
                                    : r.status().to_string());
        }
      }
    });
  auto wait_some = [&](int64_t n) {
    int64_t start = ok.load();
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ok.load() < start + n && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
  };
  wait_some(50);
  for (int64_t v : {2, 1, 2}) {
    Alias(v);
    EXPECT_TRUE(WaitForVersion("mlp", v)) << "the deployment did not roll to version " << v;
    wait_some(50);
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0) << (errors.empty() ? "" : errors[0]);
  EXPECT_GT(seen1.load(), 0);
  EXPECT_GT(seen2.load(), 0);
  auto status = models_->status("mlp");
  EXPECT_EQ(status["switches"], 3) << status.dump();
  EXPECT_EQ(status["version"], 2);
  // Only the loaded version has series.
  std::string m = Req("GET", "/metrics").body;
  EXPECT_NE(m.find("dlsys_serve_queue_depth{deployment=\"mlp\",model=\"mlp\",version=\"2\",role="
                   "\"primary\"}"),
            std::string::npos);
  EXPECT_EQ(m.find("version=\"1\""), std::string::npos) << "an unloaded version's series stay";
  // The new versions were planned at nice +10; their batchers serve at the server's priority.
  ExpectEveryThreadAtTheProcessPriority();
}

// /metrics counts what was served: requests by outcome, the latency histogram, batch sizes.
TEST_F(ServingTest, MetricsCountRequestsBatchesAndOutcomes) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"},
                     {"model", "mlp"},
                     {"ref", "1"},
                     {"config", {{"max_batch", 4}, {"max_delay_us", 0}}}}
                    .dump())
                .status,
            201);
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(Req("POST", "/v2/models/mlp/infer", InferBody(Inputs(3, 0), 3).dump()).status, 200);
  // One request over max_batch: refused by the batcher.
  EXPECT_EQ(Req("POST", "/v2/models/mlp/infer", InferBody(Inputs(5, 0), 5).dump()).status, 400);
  std::string m = Req("GET", "/metrics").body;
  auto has = [&](const std::string& line) {
    EXPECT_NE(m.find(line + "\n"), std::string::npos) << line << "\n" << m;
  };
  const std::string l = "deployment=\"mlp\",model=\"mlp\",version=\"1\",role=\"primary\"";
  has("dlsys_serve_requests_total{" + l + ",outcome=\"success\"} 5");
  has("dlsys_serve_requests_total{" + l + ",outcome=\"rejected\"} 1");
  has("dlsys_serve_requests_total{" + l + ",outcome=\"timeout\"} 0");
  has("dlsys_serve_request_duration_seconds_count{" + l + "} 5");
  has("dlsys_serve_request_duration_seconds_bucket{" + l + ",le=\"+Inf\"} 5");
  // Sequential requests of 3 rows: five batches of 3 rows, in the le="4" bucket.
  has("dlsys_serve_batch_size_bucket{" + l + ",le=\"2\"} 0");
  has("dlsys_serve_batch_size_bucket{" + l + ",le=\"4\"} 5");
  has("dlsys_serve_batch_size_sum{" + l + "} 15");
  has("# TYPE dlsys_serve_request_duration_seconds histogram");
  // Queue time per request that ran, compute time per batch: five of each here. Buckets are
  // cumulative up to +Inf = _count, and the older counters carry the same sums.
  has("# TYPE dlsys_serve_queue_duration_seconds histogram");
  has("# TYPE dlsys_serve_compute_duration_seconds histogram");
  for (const std::string fam :
       {"dlsys_serve_queue_duration_seconds", "dlsys_serve_compute_duration_seconds"}) {
    has(fam + "_count{" + l + "} 5");
    has(fam + "_bucket{" + l + ",le=\"+Inf\"} 5");
    uint64_t last = 0;
    int buckets = 0;
    for (size_t at = m.find(fam + "_bucket{"); at != std::string::npos;
         at = m.find(fam + "_bucket{", at + 1)) {
      size_t sp = m.find("} ", at);
      uint64_t v = std::stoull(m.substr(sp + 2, m.find('\n', sp) - sp - 2));
      EXPECT_GE(v, last) << fam << " buckets are not cumulative\n" << m;
      last = v;
      ++buckets;
    }
    EXPECT_EQ(buckets, 17) << fam;  // 16 bounds and +Inf
    EXPECT_EQ(last, 5u);
  }
  auto value = [&](const std::string& series) {
    size_t at = m.find(series + " ");
    EXPECT_NE(at, std::string::npos) << series;
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + series.size() + 1));
  };
  EXPECT_EQ(value("dlsys_serve_queue_seconds_total{" + l + "}"),
            value("dlsys_serve_queue_duration_seconds_sum{" + l + "}"));
  EXPECT_EQ(value("dlsys_serve_compute_seconds_total{" + l + "}"),
            value("dlsys_serve_compute_duration_seconds_sum{" + l + "}"));
  EXPECT_GT(value("dlsys_serve_compute_duration_seconds_sum{" + l + "}"), 0);
  EXPECT_NE(m.find("dlsys_serve_model_memory_bytes{" + l + "} "), std::string::npos);
  EXPECT_NE(m.find("dlsys_http_requests_total"), std::string::npos);  // the server's own
}

// Request sampling at rate 1: every successful request is recorded with the inputs it sent and
// the outputs it got back (binary outputs, so the bytes compare exactly); a request without an
// id gets a generated one, in the response and in the record; a refused request is not recorded.
TEST_F(ServingTest, SampleRateOneRecordsEveryRequestAsSentAndAnswered) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"},
                     {"model", "mlp"},
                     {"ref", "1"},
                     {"config", {{"sample_rate", 1.0}, {"max_delay_us", 0}}}}
                    .dump())
                .status,
            201);
  struct Sent {
    std::vector<float> x;
    int64_t rows;
    std::string output;  // the returned output's bytes
  };
  std::map<std::string, Sent> sent;  // by request id
  for (int i = 0; i < 5; ++i) {
    const int64_t rows = 1 + i % 3;
    std::vector<float> x = Inputs(rows, 0.3f * i);
    json b = InferBody(x, rows, i < 3 ? "req-" + std::to_string(i) : "");
    b["parameters"] = {{"binary_data_output", true}};
    auto r = Req("POST", "/v2/models/mlp/infer", b.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    size_t jl = std::stoul(r.headers["inference-header-content-length"]);
    json a = json::parse(r.body.substr(0, jl));
    ASSERT_TRUE(a.contains("id")) << "a sampled request's answer carries its id: " << a.dump();
    std::string id = a["id"];
    if (i < 3)
      EXPECT_EQ(id, "req-" + std::to_string(i));
    else
      EXPECT_EQ(id.size(), 32u) << id;
    sent[id] = {x, rows, r.body.substr(jl)};
  }
  EXPECT_EQ(Req("POST", "/v2/models/mlp/infer", InferBody(Inputs(40, 0), 40).dump()).status, 400);
  // The writer counts what it wrote (polled: it runs on its own thread).
  const std::string written = "dlsys_serve_samples_written_total{deployment=\"mlp\"} 5\n";
  std::string m;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(std::chrono::milliseconds(5))) {
    m = Req("GET", "/metrics").body;
    if (m.find(written) != std::string::npos) break;
  }
  EXPECT_NE(m.find(written), std::string::npos) << m;
  EXPECT_NE(m.find("dlsys_serve_samples_dropped_total{deployment=\"mlp\",reason=\"queue_full\"} 0"),
            std::string::npos);

  models_->stop();  // drains and closes the log
  auto got = read_samples(sample_dir((dir_ / "samples").string(), "mlp"));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 5u);
  for (const SampleRecord& rec : *got) {
    ASSERT_TRUE(sent.count(rec.request_id)) << rec.request_id;
    const Sent& s = sent[rec.request_id];
    EXPECT_EQ(rec.deployment, "mlp");
    EXPECT_EQ(rec.model, "mlp");
    EXPECT_EQ(rec.version, 1);
    EXPECT_GT(rec.latency_us, 0);
    ASSERT_EQ(rec.inputs.size(), 1u);
    EXPECT_EQ(rec.inputs[0].name, "x");
    EXPECT_EQ(rec.inputs[0].datatype, "FP32");
    EXPECT_EQ(rec.inputs[0].shape, (std::vector<int64_t>{s.rows, 4}));
    EXPECT_EQ(rec.inputs[0].data,
              std::string(reinterpret_cast<const char*>(s.x.data()), s.x.size() * 4));
    ASSERT_EQ(rec.outputs.size(), 1u);
    EXPECT_EQ(rec.outputs[0].name, "y");
    EXPECT_EQ(rec.outputs[0].shape, (std::vector<int64_t>{s.rows, 3}));
    EXPECT_EQ(rec.outputs[0].data, s.output) << rec.request_id;
  }
}

// Rate 0 (the default) records nothing and answers as before (no id when none was sent); rate
// 0.5 records about half, within a binomial tolerance, and exactly the requests whose answers
// carry a generated id.
TEST_F(ServingTest, SampleRatesZeroAndHalf) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  for (auto [name, rate] : {std::pair<const char*, double>{"none", 0.0}, {"half", 0.5}})
    ASSERT_EQ(Req("POST", "/api/v1/deployments",
                  json{{"name", name},
                       {"model", "mlp"},
                       {"ref", "1"},
                       {"config", {{"sample_rate", rate}, {"max_delay_us", 0}}}}
                      .dump())
                  .status,
              201);
  EXPECT_EQ(J(Req("GET", "/api/v1/deployments/half"))["status"]["config"]["sample_rate"], 0.5);
  const std::string body = InferBody(Inputs(1, 0.2f), 1).dump();
  for (int i = 0; i < 50; ++i) {
    auto r = Req("POST", "/v2/models/none/infer", body);
    ASSERT_EQ(r.status, 200);
    EXPECT_FALSE(J(r).contains("id")) << r.body;
  }
  const int kN = 400;
  std::set<std::string> ids;
  for (int i = 0; i < kN; ++i) {
    auto r = Req("POST", "/v2/models/half/infer", body);
    ASSERT_EQ(r.status, 200);
    json a = J(r);
    if (a.contains("id")) ids.insert(a["id"].get<std::string>());
  }
  models_->stop();
  auto none = read_samples(sample_dir((dir_ / "samples").string(), "none"));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->size(), 0u);
  auto half = read_samples(sample_dir((dir_ / "samples").string(), "half"));
  ASSERT_TRUE(half.ok()) << half.status().to_string();
  // Binomial(400, 0.5): mean 200, standard deviation 10; 5 deviations either side.
  EXPECT_GE(half->size(), 150u);
  EXPECT_LE(half->size(), 250u);
  std::set<std::string> recorded;
  for (const auto& rec : *half) recorded.insert(rec.request_id);
  EXPECT_EQ(recorded, ids) << "the recorded requests are not those answered with an id";
  // A rate outside 0..1 is refused with the field's name.
  auto bad =
      Req("POST", "/api/v1/deployments",
          json{{"name", "bad"}, {"model", "mlp"}, {"ref", "1"}, {"config", {{"sample_rate", 1.5}}}}
              .dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("config.sample_rate must be a number in 0..1"), std::string::npos)
      << bad.body;
}

TEST_F(ServingTest, DeploymentsAreRestoredWhenTheServerRestarts) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "1"}}.dump())
                .status,
            201);
  models_->stop();
  EXPECT_FALSE(models_->find("mlp").ok());
  ModelServer again(backend_->store(), backend_->objects(), {});
  ASSERT_TRUE(again.start().ok());
  auto v = again.find("mlp");
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ((*v)->version, 1);
  again.stop();
  // Deleting drains and unloads; the deployment is gone from the store too.
  EXPECT_EQ(Req("DELETE", "/api/v1/deployments/mlp").status, 200);
  EXPECT_EQ(Req("GET", "/api/v1/deployments/mlp").status, 404);
}

}  // namespace
}  // namespace dlsys::serve
