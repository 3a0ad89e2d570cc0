// The server as an attacker sees it (issue 17): every finding has a test here, against a real
// server on loopback. Refs that escape the data directory, JSON nested to crash the parser,
// bodies read before the caller is known, unbounded bodies, connections and memory, malformed
// numbers and malformed HTTP, and a role matrix over every route the router knows.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <utime.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>

#include "api/request_util.h"
#include "api/server_fixture.h"

namespace dlsys::api {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A raw TCP client: sends bytes as they are, reads whatever comes back.
class RawConn {
 public:
  explicit RawConn(int port, int timeout_ms = 5000) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Reads until `done(text)` says so, the peer closes, or the receive timeout passes.
  std::string read_until(const std::function<bool(const std::string&)>& done) {
    std::string out;
    char buf[4096];
    while (!done(out)) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = n == 0;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // Reads one response with a Content-Length body (the server's are).
  std::string read_response() {
    return read_until([](const std::string& t) {
      size_t end = t.find("\r\n\r\n");
      if (end == std::string::npos) return false;
      std::string head = t.substr(0, end);
      for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      size_t cl = head.find("content-length: ");
      size_t len = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 16));
      return t.size() >= end + 4 + len;
    });
  }
  std::string read_to_close() {
    return read_until([](const std::string&) { return false; });
  }
  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
};

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

json body_of(const std::string& response) {
  size_t end = response.find("\r\n\r\n");
  if (end == std::string::npos) return json();
  return json::parse(response.substr(end + 4), nullptr, false);
}

class SecurityTest : public ServerFixture {
 protected:
  std::string Token(meta::Role role) {
    meta::Principal root{"root", meta::Role::kAdmin};
    auto t =
        backend_->store().tokens().create_token(meta::role_name(role) + random_hex(2), role, root);
    EXPECT_TRUE(t.ok());
    return "Bearer " + t->token;
  }
  // Pushes a small CSV dataset `name` through the API; returns the version label.
  void PushDataset(const std::string& name, const std::string& auth = "") {
    std::map<std::string, std::string> h;
    if (!auth.empty()) h["Authorization"] = auth;
    auto r = Req("POST", "/api/v1/datasets/" + name + "/versions?format=csv",
                 "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", h);
    ASSERT_EQ(r.status, 201) << r.body;
  }
  size_t FilesIn(const fs::path& dir) {
    size_t n = 0;
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it)
      ++n;
    return n;
  }
};

// ---- Critical: dataset refs are a closed grammar ----

TEST_F(SecurityTest, DatasetRefsNeverReachFilesOutsideTheStore) {
  Start();
  PushDataset("d");
  const std::string secret_dir = (dir_ / "secret").string();
  fs::create_directories(secret_dir);
  std::ofstream(secret_dir + "/canary") << "CANARY-7f3a";
  for (std::string ref : {"../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                          "%2Fdev%2Fzero", "..%2F..%2Fsecret%2Fcanary", "v1%2F..%2F..%2Fx",
                          "%2e%2e", "v99999999999999999999999", "latest%00"}) {
    for (std::string target :
         {"/api/v1/datasets/d/diff?from=v1&to=" + ref, "/api/v1/datasets/d/diff?from=" + ref,
          "/api/v1/datasets/d/versions/" + ref, "/api/v1/datasets/d/versions/" + ref + "/rows"}) {
      auto t0 = Clock::now();
      auto r = Req("GET", target);
      EXPECT_GE(r.status, 400) << target;
      EXPECT_LT(r.status, 500) << target << " " << r.body;
      EXPECT_EQ(r.body.find("root:"), std::string::npos) << target;
      EXPECT_EQ(r.body.find("CANARY"), std::string::npos) << target;
      EXPECT_EQ(r.body.find(dir_.string()), std::string::npos) << target << ": " << r.body;
      EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5)) << target;
    }
  }
  // A tag may only name an existing version.
  for (std::string v : {"../../../../etc/passwd", "v7", "deadbeef00"}) {
    auto r = Req("PUT", "/api/v1/datasets/d/tags/prod", json{{"version", v}}.dump());
    EXPECT_GE(r.status, 400) << v;
    EXPECT_LT(r.status, 500) << v;
  }
  EXPECT_EQ(Req("PUT", "/api/v1/datasets/d/tags/prod", R"({"version": "v1"})").status, 200);
  EXPECT_EQ(Req("GET", "/api/v1/datasets/d/versions/prod").status, 200);
  EXPECT_EQ(Req("GET", "/api/v1/datasets/d/diff?from=prod&to=latest").status, 200);
}

// ---- Critical: nesting depth is limited at parse time, on every route ----

TEST_F(SecurityTest, DeeplyNestedJsonIs400OnEveryRoute) {
  Start();
  size_t tried = 0;
  for (const Route& route : backend_->router().routes()) {
    if (route.body_to_file || route.method == "GET" || route.method == "DELETE") continue;
    size_t depth = std::min<size_t>(65536, (route.max_body - 16) / 2);
    std::string target;
    for (const std::string& seg : route.segments) target += "/" + (seg[0] == '{' ? "1" : seg);
    std::string body = "{\"a\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
    auto r = Req(route.method, target, body);
    EXPECT_EQ(r.status, 400) << route.method << " " << route.pattern << ": " << r.body;
    EXPECT_NE(r.body.find("deeper than 256 levels"), std::string::npos) << route.pattern;
    ++tried;
  }
  EXPECT_GE(tried, 10u);
  // 256 levels are still fine.
  std::string ok = "{\"name\":\"deep\",\"description\":\"x\",\"x\":" + std::string(250, '[') +
                   std::string(250, ']') + "}";
  EXPECT_EQ(Req("POST", "/api/v1/experiments", ok).status, 201);
  EXPECT_EQ(Req("GET", "/api/v1/health").status, 200);
}

TEST(JsonLimits, ScanCountsDepthAndValuesAndIgnoresBracketsInStrings) {
  auto s = scan_json(R"({"a": [1, 2, {"b": "[[[[\"]]"}], "c": null})", {4, 100}, "x");
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->depth, 3u);
  EXPECT_EQ(s->values, 10u);  // object, "a", array, 1, 2, object, "b", string, "c", null
  auto deep = scan_json("[[[[[]]]]]", {4, 100}, "the body");
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("deeper than 4 levels (line 1, column 5)"),
            std::string::npos)
      << deep.status().message();
  auto many = parse_json("[1,2,3,4,5]", {4, 5}, "the body");
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.status().message().find("more than 5 values"), std::string::npos);
  auto bad = parse_json("[1,", {4, 100}, "the body");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 1, column 4"), std::string::npos)
      << bad.status().message();
}

// ---- Nothing is spent before the caller is authenticated ----

TEST_F(SecurityTest, UnauthenticatedUploadIsRefusedBeforeItsBody) {
  Start(/*auth=*/true);
  std::string admin = Token(meta::Role::kAdmin), viewer = Token(meta::Role::kViewer);
  auto run = Req("POST", "/api/v1/runs", R"({"experiment": "e"})", {{"Authorization", admin}});
  ASSERT_EQ(run.status, 201);
  std::string target = fmt::format("/api/v1/runs/{}/artifacts/big.bin", J(run)["id"].get<int>());
  fs::path tmp = dir_ / "objects" / "tmp";
  for (std::string auth : {std::string(), std::string("Authorization: Bearer dls_nope\r\n"),
                           "Authorization: " + viewer + "\r\n"}) {
    // Expect: 100-continue is answered with the refusal, never with 100.
    RawConn c(server_->port());
    ASSERT_TRUE(c.connected());
    auto t0 = Clock::now();
    c.send("PUT " + target + " HTTP/1.1\r\nHost: x\r\n" + auth +
           "Content-Length: 8000000000\r\nExpect: 100-continue\r\n\r\n");
    std::string resp = c.read_response();
    EXPECT_TRUE(resp.rfind(auth.empty() || auth.find("nope") != std::string::npos ? "HTTP/1.1 401"
                                                                                  : "HTTP/1.1 403",
                           0) == 0)
        << resp;
    EXPECT_EQ(resp.find("100 Continue"), std::string::npos);
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
    EXPECT_EQ(FilesIn(tmp), 0u) << "an upload file was created before authentication";
    // Without Expect, a body that is sent anyway is discarded, not stored.
    RawConn d(server_->port());
    d.send("PUT " + target + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 1048576\r\n\r\n" +
           std::string(1 << 20, 'x'));
    EXPECT_GE(status_of(d.read_response()), 401);
    EXPECT_EQ(FilesIn(tmp), 0u);
  }
  // The same upload with an editor's token goes through.
  auto up = Req("PUT", target, "payload", {{"Authorization", admin}});
  EXPECT_EQ(up.status, 201) << up.body;
}

TEST_F(SecurityTest, BodyLimitsArePerRoute) {
  Start();
  auto run = Req("POST", "/api/v1/runs", R"({"experiment": "e"})");
  std::string batch = fmt::format("/api/v1/runs/{}/log-batch", J(run)["id"].get<int>());
  // A metric batch is not an upload: 9 MiB is over its 8 MiB limit, named in the answer.
  auto r = Req("POST", batch, std::string(9 << 20, ' '));
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find(std::to_string(kBatchBodyLimit)), std::string::npos) << r.body;
  r = Req("PUT", "/api/v1/models/m/aliases/prod", std::string(100 << 10, ' '));
  EXPECT_EQ(r.status, 413);
  // The limit is checked from Content-Length before the body is read.
  RawConn c(server_->port());
  c.send("POST " + batch + " HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n");
  EXPECT_EQ(status_of(c.read_response()), 413);
  // A chunked body is cut off at the limit too.
  RawConn d(server_->port());
  d.send(
      "PUT /api/v1/models/m/aliases/prod HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
      "chunked\r\n\r\n");
  std::string chunk = fmt::format("{:x}\r\n{}\r\n", 40000, std::string(40000, ' '));
  d.send(chunk + chunk);
  EXPECT_EQ(status_of(d.read_response()), 413);
}

TEST_F(SecurityTest, SlowHeadersAndBodiesAreCutOff) {
  Start(false, 16 << 20, nullptr, [](ServerOptions& o) {
    o.header_timeout = std::chrono::seconds(1);
    o.body_timeout = std::chrono::seconds(1);
    o.min_body_rate = 1 << 20;
  });
  // Headers that never finish.
  auto t0 = Clock::now();
  RawConn h(server_->port());
  h.send("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n");
  h.read_to_close();
  EXPECT_TRUE(h.closed());
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(4));
  // A body that stalls: 100 kB expected at >= 1 MiB/s gets about 1.1 s in all.
  PushDataset("d");
  t0 = Clock::now();
  RawConn b(server_->port());
  b.send(
      "POST /api/v1/datasets/d/versions?format=csv HTTP/1.1\r\nHost: x\r\n"
      "Content-Length: 100000\r\n\r\na,b,label\n1,2,0\n");
  b.read_to_close();
  EXPECT_TRUE(b.closed());
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(4));
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(900));
  // The server removes the partial upload right after it closes the connection.
  auto until = Clock::now() + std::chrono::seconds(2);
  while (FilesIn(dir_ / "objects" / "tmp") > 0 && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(FilesIn(dir_ / "objects" / "tmp"), 0u) << "the partial upload must be removed";
  EXPECT_EQ(Req("GET", "/api/v1/health").status, 200);
}

// ---- Connections are bounded; health checks still get through ----

TEST_F(SecurityTest, IdleConnectionsAreShedAtTheCap) {
  Start(false, 16 << 20, nullptr, [](ServerOptions& o) { o.max_connections = 32; });
  ASSERT_EQ(server_->max_connections(), 32u);
  std::vector<std::unique_ptr<RawConn>> idle;
  for (int i = 0; i < 100; ++i) {
    idle.push_back(std::make_unique<RawConn>(server_->port()));
    ASSERT_TRUE(idle.back()->connected());
  }
  // Each new connection made room for itself by closing the longest idle ones.
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    RawConn c(server_->port());
    c.send("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(status_of(c.read_response()), 200);
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
  }
  auto m = Req("GET", "/metrics");
  EXPECT_NE(m.body.find("dlsys_http_connections_max 32"), std::string::npos) << m.body;
  EXPECT_EQ(m.body.find("dlsys_http_idle_connections_shed_total 0\n"), std::string::npos);
}

TEST_F(SecurityTest, ANewConnectionGets503WhenEveryConnectionIsBusy) {
  std::mutex mu;
  std::condition_variable cv;
  int waiting = 0;
  bool release = false;
  Start(
      false, 16 << 20,
      [&](Router& r) {
        r.add("GET", "/api/v1/test/block", Access::kRead, [&](Request&) -> Result<Response> {
          std::unique_lock<std::mutex> g(mu);
          ++waiting;
          cv.notify_all();
          cv.wait_for(g, std::chrono::seconds(10), [&] { return release; });
          return Response::json_body({{"ok", true}});
        });
      },
      [](ServerOptions& o) {
        o.max_connections = 8;
        o.workers = 8;
      });
  conn_.reset();
  std::vector<std::unique_ptr<RawConn>> busy;
  for (int i = 0; i < 8; ++i) {
    busy.push_back(std::make_unique<RawConn>(server_->port()));
    busy.back()->send("GET /api/v1/test/block HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  {
    std::unique_lock<std::mutex> g(mu);
    ASSERT_TRUE(cv.wait_for(g, std::chrono::seconds(10), [&] { return waiting == 8; }));
  }
  RawConn c(server_->port());
  c.send("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string resp = c.read_response();
  EXPECT_EQ(status_of(resp), 503) << resp;
  EXPECT_NE(body_of(resp)["error"]["message"].get<std::string>().find("limit of 8 connections"),
            std::string::npos);
  {
    std::lock_guard<std::mutex> g(mu);
    release = true;
  }
  cv.notify_all();
  for (auto& b : busy) EXPECT_EQ(status_of(b->read_response()), 200);
}

// ---- Memory per request and across requests ----

TEST_F(SecurityTest, RequestMemoryIsBounded) {
  Start(false, 16 << 20, nullptr, [](ServerOptions& o) { o.memory_budget = 24 << 20; });
  PushDataset("d");
  // Over a million values: refused by the pre-scan, before anything is allocated.
  std::string many = "{\"a\":[1";
  for (int i = 0; i < (1 << 20) + 10; ++i) many += ",1";
  many += "]}";
  auto r = Req("POST", "/api/v1/datasets/d/versions/v1/drift", many);
  EXPECT_EQ(r.status, 400) << r.body.substr(0, 300);
  EXPECT_NE(r.body.find("more than 1048576 values"), std::string::npos);
  // 300,000 values would take ~38 MB parsed: over this server's 24 MiB budget, so 503.
  std::string mid = "{\"a\":[1";
  for (int i = 1; i < 300000; ++i) mid += ",1";
  mid += "]}";
  r = Req("POST", "/api/v1/datasets/d/versions/v1/drift", mid);
  EXPECT_EQ(r.status, 503) << r.body.substr(0, 300);
  EXPECT_EQ(J(r)["error"]["code"], "UNAVAILABLE");
  // A body larger than the budget is refused from its Content-Length.
  RawConn c(server_->port());
  c.send(
      "POST /api/v1/datasets/d/versions/v1/drift HTTP/1.1\r\nHost: x\r\n"
      "Content-Length: 26214400\r\n\r\n");
  EXPECT_EQ(status_of(c.read_response()), 413);  // over the route's 16 MiB limit first
  // Everything reserved was given back.
  auto m = Req("GET", "/metrics");
  EXPECT_NE(m.body.find("dlsys_http_request_memory_bytes 0\n"), std::string::npos) << m.body;
}

// ---- Temporary files go when the response ends ----

TEST_F(SecurityTest, RowExportsAreDeletedAfterTheResponseAndStaleTempFilesAreSwept) {
  Start();
  PushDataset("d");
  fs::path tmp = dir_ / "datasets" / "tmp";
  size_t before = FilesIn(tmp);
  for (int i = 0; i < 3; ++i) {
    auto r = Req("GET", "/api/v1/datasets/d/versions/v1/rows");
    ASSERT_EQ(r.status, 200);
    EXPECT_NE(r.body.find("label"), std::string::npos);
  }
  // The next request on the connection is read only after the previous response finished.
  EXPECT_EQ(Req("GET", "/api/v1/health").status, 200);
  EXPECT_EQ(FilesIn(tmp), before);
  // The periodic sweep removes what died an hour ago and leaves fresh files alone.
  std::ofstream((tmp / "stale").string()) << "x";
  std::ofstream((tmp / "fresh").string()) << "x";
  std::ofstream((dir_ / "objects" / "tmp" / "upload-stale").string()) << "x";
  utimbuf old{std::time(nullptr) - 7200, std::time(nullptr) - 7200};
  ::utime((tmp / "stale").c_str(), &old);
  ::utime((dir_ / "objects" / "tmp" / "upload-stale").c_str(), &old);
  EXPECT_EQ(backend_->sweep_temp_files(), 2u);
  EXPECT_TRUE(fs::exists(tmp / "fresh"));
  EXPECT_FALSE(fs::exists(tmp / "stale"));
}

// ---- Validation: what the docs call invalid is rejected ----

TEST_F(SecurityTest, NumbersKeysAndNamesAreValidated) {
  Start();
  PushDataset("d");
  auto run = Req("POST", "/api/v1/runs", R"({"experiment": "e"})");
  int64_t id = J(run)["id"].get<int64_t>();
  std::string batch = fmt::format("/api/v1/runs/{}/log-batch", id);
  auto expect400 = [&](const std::string& method, const std::string& target,
                       const std::string& body, const std::string& says) {
    auto r = Req(method, target, body);
    EXPECT_EQ(r.status, 400) << method << " " << target << " " << body << ": " << r.body;
    EXPECT_NE(r.body.find(says), std::string::npos) << target << " " << body << ": " << r.body;
  };
  expect400("POST", batch, R"({"metrics": [{"key": "", "value": 1}]})", "metrics[0].key is empty");
  expect400("POST", batch,
            R"({"metrics": [{"key": "a", "value": 1, "step": 9223372036854775808}]})",
            "beyond the largest integer");
  expect400("POST", batch, R"({"metrics": [{"key": "a", "value": 1, "step": 1.5}]})",
            "must be an integer");
  expect400("POST", batch, R"({"metrics": [{"key": "a", "value": 1, "step": 1e300}]})",
            "must be an integer");
  expect400("POST", "/api/v1/runs", R"({"experiment_id": 18446744073709551615})",
            "beyond the largest integer");
  for (std::string bad : {"%205", "5%20", "+5", "0x5", "99999999999999999999", "5a"})
    expect400("GET", "/api/v1/runs/" + bad, "", "run id");
  for (std::string q : {"psi=abc", "psi=nan", "psi=inf", "ks=2", "psi=-1", "ks=0.1x"})
    expect400("GET", "/api/v1/datasets/d/diff?from=v1&" + q, "", "");
  for (std::string s : {"nan,0.1,0.1", "0.8,inf,0.1", "0.8,0.1,abc"}) {
    auto r = Req("POST", "/api/v1/datasets/d/versions?format=csv&split=" + s, "a,label\n1,0\n");
    EXPECT_EQ(r.status, 400) << s << ": " << r.body;
  }
  expect400("POST", "/api/v1/runs/search", R"({"filter": "metrics.a > 1e999"})", "");
  expect400("POST", "/api/v1/runs/search", R"({"filter": "metrics.a > 99999999999999999999999"})",
            "");
  // A column name that is not UTF-8 is refused (the fuzzer's find: it used to end the process).
  auto col = Req("POST", "/api/v1/datasets/u/versions?format=csv", "\x9c,y\n1,2\n");
  EXPECT_EQ(col.status, 400) << col.body;
  EXPECT_NE(col.body.find("not valid UTF-8"), std::string::npos) << col.body;
  EXPECT_EQ(Req("GET", "/api/v1/health").status, 200);
  // Artifact names are valid UTF-8.
  auto r = Req("PUT", fmt::format("/api/v1/runs/{}/artifacts/bad%ff%fe.txt", id), "x");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(Req("PUT", fmt::format("/api/v1/runs/{}/artifacts/caf%C3%A9.txt", id), "x").status,
            201);
}

TEST_F(SecurityTest, MetricHistoryIsBoundedByDefault) {
  Start();
  auto run = Req("POST", "/api/v1/runs", R"({"experiment": "e"})");
  int64_t id = J(run)["id"].get<int64_t>();
  for (int b = 0; b < 5; ++b) {
    json batch = {{"metrics", json::array()}};
    for (int s = 0; s < 1000; ++s)
      batch["metrics"].push_back(
          {{"key", "loss"}, {"value", b * 1000 + s == 2345 ? 1e6 : 1.0}, {"step", b * 1000 + s}});
    ASSERT_EQ(Req("POST", fmt::format("/api/v1/runs/{}/log-batch", id), batch.dump()).status, 200);
  }
  auto h = Req("GET", fmt::format("/api/v1/runs/{}/metrics/loss", id));
  ASSERT_EQ(h.status, 200) << h.body;
  EXPECT_EQ(J(h)["total_points"], 5000);
  EXPECT_LE(J(h)["points"].size(), 1000u * 3);
  h = Req("GET", fmt::format("/api/v1/runs/{}/metrics/loss?max_points=20", id));
  ASSERT_EQ(h.status, 200);
  bool spike = false;
  json history = J(h);
  for (const auto& p : history["points"]) spike |= p["value"].get<double>() == 1e6;
  EXPECT_TRUE(spike) << "a one-point spike must survive downsampling: " << h.body;
}

// ---- Malformed HTTP gets a 400 in the documented error shape ----

TEST_F(SecurityTest, MalformedHttpGets400WithAJsonError) {
  Start();
  const std::string post = "POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\n";
  for (std::string req : {
           post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",   // bad chunk size
           post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n{}{}{}",       // conflicting
           post + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",           // duplicated
           post + "Content-Length: -1\r\n\r\n{}",                               // negative
           post + "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",  // both
           post + "Transfer-Encoding: gzip\r\n\r\n{}",                          // unknown coding
           post + "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
           std::string("GET /\r\n\r\n"),  // HTTP/0.9
           std::string("GET /api/v1/health HTTP/2.0\r\nHost: x\r\n\r\n"),
           std::string("GET /api/v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\n"
                       "Authorization: Bearer b\r\n\r\n"),
       }) {
    RawConn c(server_->port());
    c.send(req);
    std::string resp = c.read_response();
    EXPECT_EQ(status_of(resp), 400) << req << "\n---\n" << resp;
    json b = body_of(resp);
    EXPECT_TRUE(b.is_object() && b["error"]["code"].is_string() &&
                b["error"]["message"].is_string())
        << req << "\n---\n"
        << resp;
  }
  EXPECT_EQ(Req("GET", "/api/v1/health").status, 200);
}

TEST_F(SecurityTest, InternalErrorsKeepTheirDetailsInTheLog) {
  Start(false, 16 << 20, [](Router& r) {
    r.add("GET", "/api/v1/test/fail", Access::kRead, [](Request&) -> Result<Response> {
      return Status::IOError("cannot open /srv/secret/meta.db: disk on fire");
    });
  });
  auto r = Req("GET", "/api/v1/test/fail");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body.find("/srv/secret"), std::string::npos) << r.body;
  EXPECT_EQ(J(r)["error"]["code"], "IO_ERROR");
  EXPECT_NE(r.body.find("server log"), std::string::npos) << r.body;
}

// ---- Every route x every caller: no unauthorized success ----

TEST_F(SecurityTest, RoleMatrixOverEveryRoute) {
  Start(/*auth=*/true);
  struct Caller {
    std::string name, auth;
    std::optional<meta::Role> role;
  };
  std::vector<Caller> callers = {{"no token", "", std::nullopt},
                                 {"bad token", "Bearer dls_0000", std::nullopt},
                                 {"not bearer", "Basic YTpi", std::nullopt}};
  for (meta::Role role :
       {meta::Role::kInference, meta::Role::kViewer, meta::Role::kEditor, meta::Role::kAdmin})
    callers.push_back({meta::role_name(role), Token(role), role});
  auto allowed = [](Access a, const std::optional<meta::Role>& r) {
    switch (a) {
      case Access::kPublic:
        return true;
      case Access::kInfer:
        return r.has_value();
      case Access::kRead:
        return r.has_value() && *r != meta::Role::kInference;
      case Access::kWrite:
        return r == meta::Role::kEditor || r == meta::Role::kAdmin;
      case Access::kAdmin:
        return r == meta::Role::kAdmin;
    }
    return false;
  };
  size_t checked = 0;
  for (const Route& route : backend_->router().routes()) {
    std::string target;
    for (const std::string& seg : route.segments)
      target += "/" + (seg.empty() || seg[0] != '{' ? seg : std::string("999999"));
    for (const Caller& c : callers) {
      std::map<std::string, std::string> h;
      if (!c.auth.empty()) h["Authorization"] = c.auth;
      auto r = Req(route.method, target, route.method == "GET" ? "" : "{}", h);
      bool denied = r.status == 401 || r.status == 403;
      if (allowed(route.access, c.role))
        EXPECT_FALSE(denied) << c.name << " " << route.method << " " << route.pattern << ": "
                             << r.status << " " << r.body;
      else
        EXPECT_EQ(r.status, c.role ? 403 : 401)
            << "unauthorized " << c.name << " got " << r.status << " on " << route.method << " "
            << route.pattern << ": " << r.body;
      ++checked;
    }
  }
  EXPECT_EQ(checked, backend_->router().routes().size() * callers.size());
  EXPECT_GE(backend_->router().routes().size(), 30u);
}

}  // namespace
}  // namespace dlsys::api
