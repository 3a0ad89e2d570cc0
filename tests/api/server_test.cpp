// The HTTP server over a real socket: JSON errors and status codes, request ids, body limits,
// streamed artifacts with verification, tokens and roles, keep-alive and graceful shutdown.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <thread>

#include "api/server_fixture.h"
#include "api/web_routes.h"
#include "core/file_util.h"
#include "core/sha256.h"

namespace dlsys::api {
namespace {

using ServerTest = ServerFixture;

TEST_F(ServerTest, ErrorsAreJsonWithTheRightStatus) {
  Start();
  auto r = Req("GET", "/api/v1/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(J(r)["error"]["code"], "NOT_FOUND");
  r = Req("DELETE", "/api/v1/experiments");
  EXPECT_EQ(r.status, 405);
  r = Req("POST", "/api/v1/experiments", "{\"name\": ");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(J(r)["error"]["message"].get<std::string>().find("line 1, column"), std::string::npos);
  r = Req("POST", "/api/v1/experiments", R"({"name": 5})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("'name' must be a string"), std::string::npos);
  EXPECT_EQ(Req("POST", "/api/v1/experiments", R"({"name": "e"})").status, 201);
  r = Req("POST", "/api/v1/experiments", R"({"name": "e"})");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(J(r)["error"]["code"], "ALREADY_EXISTS");
  EXPECT_EQ(Req("GET", "/api/v1/runs/abc").status, 400);
  EXPECT_EQ(Req("GET", "/api/v1/runs/42").status, 404);
  EXPECT_EQ(Req("GET", "/api/v1/runs?page_size=0").status, 400);
  EXPECT_EQ(Req("GET", "/api/v1/runs?page_token=zzz").status, 400);
  EXPECT_EQ(Req("GET", "/api/v1/runs/1/artifacts/%zz").status, 400);
}

TEST_F(ServerTest, RequestIdsAreEchoedOrMade) {
  Start();
  auto r = Req("GET", "/api/v1/health", "", {{"X-Request-Id", "abc-123"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["x-request-id"], "abc-123");
  r = Req("GET", "/api/v1/health");
  EXPECT_EQ(r.headers["x-request-id"].size(), 16u);
  EXPECT_NE(r.headers["x-request-id"], Req("GET", "/api/v1/health").headers["x-request-id"]);
}

TEST_F(ServerTest, RunsMetricsAndPagesOverRest) {
  Start();
  for (int i = 0; i < 7; ++i) {
    auto r =
        Req("POST", "/api/v1/runs",
            json{{"experiment", "rest"}, {"name", "r" + std::to_string(i)}, {"params", {{"i", i}}}}
                .dump());
    ASSERT_EQ(r.status, 201) << r.body;
    json batch = {{"metrics", json::array()}};
    for (int s = 0; s < 10; ++s)
      batch["metrics"].push_back({{"key", "loss"}, {"value", 1.0 / (s + 1)}, {"step", s}});
    ASSERT_EQ(Req("POST", fmt::format("/api/v1/runs/{}/log-batch", J(r)["id"].get<int64_t>()),
                  batch.dump())
                  .status,
              200);
  }
  std::set<int64_t> ids;
  std::string token;
  do {
    auto r = Req("GET", "/api/v1/runs?page_size=3" +
                            (token.empty() ? "" : "&page_token=" + url_encode(token)));
    ASSERT_EQ(r.status, 200) << r.body;
    json page = J(r);  // named: a range-for over J(r)["runs"] would outlive the temporary
    for (auto& run : page["runs"]) ids.insert(run["id"].get<int64_t>());
    token = page.value("next_page_token", "");
  } while (!token.empty());
  EXPECT_EQ(ids.size(), 7u);
  auto r = Req("GET", "/api/v1/runs?filter=" + url_encode("params.i = '3'"));
  ASSERT_EQ(J(r)["runs"].size(), 1u);
  EXPECT_EQ(J(r)["runs"][0]["name"], "r3");
  r = Req("GET", "/api/v1/runs/1/metrics/loss?max_points=4");
  ASSERT_EQ(r.status, 200) << r.body;
  {
    // 10 points, loss 1/(step+1), at most 4 asked: downsampled to 1..4 points that keep the
    // extremes (1.0 at step 0, 0.1 at step 9, also the last point), in step order.
    json h = J(r);
    EXPECT_EQ(h["total_points"], 10);
    EXPECT_EQ(h["downsampled"], true);
    const json& pts = h["points"];
    ASSERT_GE(pts.size(), 1u);
    ASSERT_LE(pts.size(), 4u);
    EXPECT_EQ(pts.front()["step"], 0);
    EXPECT_DOUBLE_EQ(pts.front()["value"].get<double>(), 1.0);
    EXPECT_EQ(pts.back()["step"], 9);
    EXPECT_DOUBLE_EQ(pts.back()["value"].get<double>(), 0.1);
    for (size_t i = 1; i < pts.size(); ++i)
      EXPECT_LT(pts[i - 1]["step"].get<int64_t>(), pts[i]["step"].get<int64_t>());
  }
  json too_many = {{"metrics", json::array()}};
  for (int i = 0; i < 1001; ++i)
    too_many["metrics"].push_back({{"key", "m"}, {"value", 1}, {"step", i}});
  r = Req("POST", "/api/v1/runs/1/log-batch", too_many.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("1000"), std::string::npos);
}

TEST_F(ServerTest, OversizedBodyGets413) {
  Start(false, 1024);
  auto r = Req("POST", "/api/v1/experiments",
               json{{"name", "x"}, {"description", std::string(4096, 'd')}}.dump());
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(J(r)["error"]["code"], "PAYLOAD_TOO_LARGE");
  // The server stays healthy for the next client.
  auto c = HttpConnection::open("127.0.0.1", server_->port());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->request("GET", "/api/v1/health", "")->status, 200);
}

TEST_F(ServerTest, ArtifactsStreamDeduplicateAndAreVerified) {
  Start();
  ASSERT_EQ(Req("POST", "/api/v1/runs", R"({"experiment": "a"})").status, 201);
  std::string content(5 << 20, '\0');
  for (size_t i = 0; i < content.size(); ++i)
    content[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::string src = (dir_ / "upload.bin").string();
  ASSERT_TRUE(write_file_atomic(src, content).ok());
  auto up = conn_->request_file("PUT", "/api/v1/runs/1/artifacts/weights/model.bin", src);
  ASSERT_TRUE(up.ok());
  ASSERT_EQ(up->status, 201) << up->body;
  EXPECT_EQ(J(*up)["sha256"], sha256_hex(content));
  EXPECT_FALSE(J(*up)["deduplicated"].get<bool>());
  up = conn_->request_file("PUT", "/api/v1/runs/1/artifacts/copy.bin", src);
  EXPECT_TRUE(J(*up)["deduplicated"].get<bool>());
  std::string out = (dir_ / "download.bin").string();
  auto down = conn_->download("/api/v1/runs/1/artifacts/weights/model.bin", out);
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(down->status, 200);
  EXPECT_EQ(down->headers["x-content-sha256"], sha256_hex(content));
  EXPECT_EQ(*read_file(out), content);
  auto list = Req("GET", "/api/v1/runs/1/artifacts");
  EXPECT_EQ(J(list)["artifacts"].size(), 2u);
  // Flip one byte of the stored object: the server refuses to serve it.
  std::string obj = backend_->objects().object_path(sha256_hex(content));
  {
    std::fstream f(obj, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('X');
  }
  auto bad = Req("GET", "/api/v1/runs/1/artifacts/weights/model.bin");
  EXPECT_EQ(bad.status, 500);
  EXPECT_NE(bad.body.find("corrupted"), std::string::npos);
}

// The web UI's files: the page with its security headers, hashed assets cached, and nothing
// outside the UI's directory reachable (.., encoded .., a link out of assets/).
TEST_F(ServerTest, WebUiFilesAreServedAndNothingElse) {
  namespace fs = std::filesystem;
  fs::path web = fs::temp_directory_path() / ("dlsys-web-" + random_hex(6));
  fs::create_directories(web / "assets" / "sub");
  auto put = [](const fs::path& p, const std::string& text) { std::ofstream(p) << text; };
  put(web / "index.html", "<!doctype html><script type=module src=/assets/app-1.js></script>");
  put(web / "assets" / "app-1.js", "console.log(1)");
  put(web / "assets" / "sub" / "s.css", "body{}");
  put(web / "secret.txt", "not an asset");
  fs::create_symlink(web / "secret.txt", web / "assets" / "link.js");
  Start(false, 16 << 20, [&](Router& r) { add_web_routes(r, web.string()); });
  auto page = Req("GET", "/");
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_NE(page.body.find("app-1.js"), std::string::npos);
  EXPECT_EQ(page.headers["content-type"], "text/html; charset=utf-8");
  EXPECT_NE(page.headers["content-security-policy"].find("script-src 'self'"), std::string::npos);
  EXPECT_EQ(page.headers["cache-control"], "no-cache");
  auto js = Req("GET", "/assets/app-1.js");
  ASSERT_EQ(js.status, 200);
  EXPECT_EQ(js.body, "console.log(1)");
  EXPECT_EQ(js.headers["content-type"], "text/javascript; charset=utf-8");
  EXPECT_NE(js.headers["cache-control"].find("immutable"), std::string::npos);
  EXPECT_EQ(Req("GET", "/assets/sub/s.css").headers["content-type"], "text/css; charset=utf-8");
  for (const char* bad :
       {"/assets/../secret.txt", "/assets/%2e%2e/secret.txt", "/assets/sub/../../secret.txt",
        "/assets/link.js", "/assets/none.js", "/assets/sub", "/assets/.%2Fapp-1.js"}) {
    auto r = Req("GET", bad);
    EXPECT_NE(r.status, 200) << bad;
    EXPECT_EQ(r.body.find("not an asset"), std::string::npos) << bad;
  }
  TearDown();
  fs::remove_all(web);
  // Without a built UI the page says how to build it.
  Start(false, 16 << 20, [](Router& r) { add_web_routes(r, ""); });
  auto none = Req("GET", "/");
  EXPECT_EQ(none.status, 404);
  EXPECT_NE(none.body.find("make build"), std::string::npos);
  EXPECT_EQ(Req("GET", "/assets/app-1.js").status, 404);
}

// whoami tells the UI the caller's role: everything without auth, the token's role with it.
TEST_F(ServerTest, WhoamiNamesTheCallersRole) {
  Start();
  auto me = J(Req("GET", "/api/v1/whoami"));
  EXPECT_EQ(me["role"], "admin");
  EXPECT_EQ(me["auth"], false);
  TearDown();
  Start(/*auth=*/true);
  EXPECT_EQ(Req("GET", "/api/v1/whoami").status, 401);
  meta::Principal root{"root", meta::Role::kAdmin};
  for (meta::Role role : {meta::Role::kViewer, meta::Role::kInference, meta::Role::kEditor}) {
    auto t = backend_->store().tokens().create_token(std::string("t-") + meta::role_name(role),
                                                     role, root);
    ASSERT_TRUE(t.ok());
    auto r = Req("GET", "/api/v1/whoami", "", {{"Authorization", "Bearer " + t->token}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(J(r)["role"], meta::role_name(role));
    EXPECT_EQ(J(r)["name"], std::string("t-") + meta::role_name(role));
    EXPECT_EQ(J(r)["auth"], true);
  }
}

// Many runs' histories in one columnar answer, and the step range of one history.
TEST_F(ServerTest, MetricHistoriesOfManyRunsAreColumnar) {
  Start();
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = Req("POST", "/api/v1/runs", json{{"experiment", "cmp"}}.dump());
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(J(r)["id"].get<int64_t>());
    json batch = {{"metrics", json::array()}};
    for (int s = 0; s < 100; ++s)
      batch["metrics"].push_back(
          {{"key", "loss"}, {"value", s == 50 ? 9.5 : 0.25 * i}, {"step", s}});
    ASSERT_EQ(
        Req("POST", fmt::format("/api/v1/runs/{}/log-batch", ids.back()), batch.dump()).status,
        200);
  }
  auto r = Req("POST", "/api/v1/runs/metric-histories",
               json{{"run_ids", ids}, {"keys", {"loss"}}, {"max_points", 12}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json h = J(r);
  ASSERT_EQ(h["histories"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const json& s = h["histories"][i];
    EXPECT_EQ(s["run_id"], ids[i]);
    EXPECT_EQ(s["total_points"], 100);
    EXPECT_EQ(s["downsampled"], true);
    ASSERT_EQ(s["steps"].size(), s["values"].size());
    ASSERT_LE(s["steps"].size(), 12u);
    bool spike = false;
    for (size_t j = 0; j < s["steps"].size(); ++j)
      spike |= s["steps"][j] == 50 && s["values"][j] == 9.5;
    EXPECT_TRUE(spike) << s.dump();
    EXPECT_EQ(s["steps"].back(), 99);
  }
  auto zoom =
      J(Req("GET", fmt::format("/api/v1/runs/{}/metrics/loss?min_step=40&max_step=59", ids[0])));
  EXPECT_EQ(zoom["total_points"], 20);
  EXPECT_EQ(zoom["points"].front()["step"], 40);
  EXPECT_EQ(zoom["points"].back()["step"], 59);
  auto some = J(Req("POST", "/api/v1/runs/search", json{{"run_ids", {ids[1]}}}.dump()));
  ASSERT_EQ(some["runs"].size(), 1u);
  EXPECT_EQ(some["runs"][0]["id"], ids[1]);
  // No run named is no run, not every run.
  auto none = J(Req("POST", "/api/v1/runs/search", R"({"run_ids": []})"));
  EXPECT_EQ(none["runs"].size(), 0u) << none.dump();
  // Bad input is a 400 naming the field.
  for (auto [body, word] : std::vector<std::pair<std::string, std::string>>{
           {R"({"run_ids":[1],"keys":"loss"})", "keys"},
           {R"({"run_ids":"1","keys":["loss"]})", "run_ids"},
           {R"({"run_ids":[1],"keys":["loss"],"max_points":5000})", "max_points"},
           {R"({"run_ids":[1],"keys":["loss"],"min_step":9,"max_step":3})", "min_step"}}) {
    auto bad = Req("POST", "/api/v1/runs/metric-histories", body);
    EXPECT_EQ(bad.status, 400) << body;
    EXPECT_NE(bad.body.find(word), std::string::npos) << bad.body;
  }
  EXPECT_EQ(Req("GET", fmt::format("/api/v1/runs/{}/metrics/loss?min_step=x", ids[0])).status, 400);
  // top_keys instead of keys: the keys the most of these runs logged, named in the answer.
  ASSERT_EQ(
      Req("POST", fmt::format("/api/v1/runs/{}/log-batch", ids[0]),
          R"({"metrics":[{"key":"acc","value":0.5,"step":0},{"key":"job.cpu","value":1,"step":0}]})")
          .status,
      200);
  auto top = Req("POST", "/api/v1/runs/metric-histories",
                 json{{"run_ids", ids}, {"top_keys", 1}, {"max_points", 12}}.dump());
  ASSERT_EQ(top.status, 200) << top.body;
  EXPECT_EQ(J(top)["keys"], json({"loss"}));
  EXPECT_EQ(J(top)["histories"].size(), 3u);
  auto top3 = J(Req("POST", "/api/v1/runs/metric-histories",
                    json{{"run_ids", ids}, {"top_keys", 3}, {"skip_key_prefix", "job."}}.dump()));
  EXPECT_EQ(top3["keys"], json({"loss", "acc"})) << top3.dump();
  ASSERT_EQ(top3["histories"].size(), 6u);
  EXPECT_EQ(top3["histories"][1]["key"], "acc");
  EXPECT_EQ(top3["histories"][1]["total_points"], 1);
  EXPECT_EQ(top3["histories"][3]["total_points"], 0);
  auto bare = Req("POST", "/api/v1/runs", json{{"experiment", "cmp"}}.dump());
  auto nothing = J(Req("POST", "/api/v1/runs/metric-histories",
                       json{{"run_ids", {J(bare)["id"]}}, {"top_keys", 2}}.dump()));
  EXPECT_EQ(nothing["keys"], json::array());
  EXPECT_EQ(nothing["histories"], json::array());
  // digits: the values to that many significant digits, as JSON numbers.
  ASSERT_EQ(Req("POST", fmt::format("/api/v1/runs/{}/log-batch", ids[2]),
                R"({"metrics":[{"key":"pi","value":3.14159265358979,"step":0},)"
                R"({"key":"pi","value":-0.000123456,"step":1}]})")
                .status,
            200);
  auto round = Req("POST", "/api/v1/runs/metric-histories",
                   json{{"run_ids", {ids[2]}}, {"keys", {"pi"}}, {"digits", 3}}.dump());
  ASSERT_EQ(round.status, 200) << round.body;
  EXPECT_NE(round.body.find(R"("values":[3.14,-0.000123])"), std::string::npos) << round.body;
  auto exact = J(Req("POST", "/api/v1/runs/metric-histories",
                     json{{"run_ids", {ids[2]}}, {"keys", {"pi"}}}.dump()));
  EXPECT_EQ(exact["histories"][0]["values"][0], 3.14159265358979);
  for (auto [body, word] : std::vector<std::pair<std::string, std::string>>{
           {R"({"run_ids":[1],"keys":["loss"],"digits":18})", "digits 18"},
           {R"({"run_ids":[1]})", "top_keys"},
           {R"({"run_ids":[1],"keys":["loss"],"top_keys":2})", "one of the two"},
           {R"({"run_ids":[1],"top_keys":0})", "top_keys 0"},
           {R"({"run_ids":[1],"top_keys":"x"})", "top_keys"},
           {R"({"run_ids":[1],"top_keys":2,"skip_key_prefix":3})", "skip_key_prefix"}}) {
    auto bad = Req("POST", "/api/v1/runs/metric-histories", body);
    EXPECT_EQ(bad.status, 400) << body;
    EXPECT_NE(bad.body.find(word), std::string::npos) << bad.body;
  }
}

// The columnar form of log-batch: each series' steps, values and timestamps read back as
// logged, beside point objects in the same batch; bad series are 400s naming the place.
TEST_F(ServerTest, LogBatchTakesColumnarSeries) {
  Start();
  auto run = Req("POST", "/api/v1/runs", json{{"experiment", "series"}}.dump());
  ASSERT_EQ(run.status, 201);
  const std::string batch = fmt::format("/api/v1/runs/{}/log-batch", J(run)["id"].get<int64_t>());
  json steps = json::array(), values = json::array(), ts = json::array();
  for (int i = 0; i < 3000; ++i) {
    steps.push_back(i);
    values.push_back(0.5 + i);
    ts.push_back(1700000000000 + i);
  }
  json body = {{"series",
                {{{"key", "loss"}, {"steps", steps}, {"values", values}, {"timestamps", ts}},
                 {{"key", "lr"}, {"steps", {0, 10}}, {"values", {0.1, 0.01}}}}},
               {"metrics", {{{"key", "acc"}, {"value", 0.9}, {"step", 3}}}}};
  auto r = Req("POST", batch, body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(J(r)["logged"]["metrics"], 3003);
  auto h = J(Req("GET", fmt::format("/api/v1/runs/{}/metrics/loss?max_points=5000",
                                    J(run)["id"].get<int64_t>())));
  ASSERT_EQ(h["points"].size(), 3000u);
  EXPECT_EQ(h["points"][1234]["step"], 1234);
  EXPECT_EQ(h["points"][1234]["value"], 1234.5);
  EXPECT_EQ(h["points"][1234]["timestamp"], 1700000001234);
  auto got = J(Req("GET", fmt::format("/api/v1/runs/{}", J(run)["id"].get<int64_t>())));
  EXPECT_EQ(got["metrics"]["lr"]["value"], 0.01);
  EXPECT_EQ(got["metrics"]["loss"]["value"], 2999.5);
  EXPECT_EQ(got["metrics"]["acc"]["value"], 0.9);
  json big_steps = json::array(), big_values = json::array();
  for (int i = 0; i < 100001; ++i) {
    big_steps.push_back(i);
    big_values.push_back(1);
  }
  for (auto [bad, word] : std::vector<std::pair<json, std::string>>{
           {{{"series", {{{"key", "x"}, {"steps", {1, 2}}, {"values", {1}}}}}}, "series[0]"},
           {{{"series", {{{"key", "x"}, {"steps", {1}}, {"values", {"a"}}}}}}, "values[0]"},
           {{{"series", {{{"key", "x"}, {"steps", {1.5}}, {"values", {1}}}}}}, "steps[0]"},
           {{{"series", {{{"steps", {1}}, {"values", {1}}}}}}, "key"},
           {{{"series", {{{"key", "x"}, {"steps", {1}}, {"values", {1}}, {"timestamps", {1, 2}}}}}},
            "timestamps"},
           {{{"series", {{{"key", "x"}, {"steps", big_steps}, {"values", big_values}}}}}, "100000"},
       }) {
    auto e = Req("POST", batch, bad.dump());
    EXPECT_EQ(e.status, 400) << bad.dump().substr(0, 200);
    EXPECT_NE(e.body.find(word), std::string::npos) << e.body;
  }
}

TEST_F(ServerTest, TokensAndRoles) {
  Start(/*auth=*/true);
  auto r = Req("GET", "/api/v1/runs");
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.body.find("dlsys tokens create"), std::string::npos);
  EXPECT_EQ(Req("GET", "/api/v1/health").status, 200);  // public
  EXPECT_EQ(Req("GET", "/api/v1/runs", "", {{"Authorization", "Bearer dls_bogus"}}).status, 401);
  meta::Principal root{"root", meta::Role::kAdmin};
  auto tok = [&](meta::Role role) {
    return "Bearer " +
           backend_->store().tokens().create_token(meta::role_name(role), role, root)->token;
  };
  std::string admin = tok(meta::Role::kAdmin), editor = tok(meta::Role::kEditor),
              viewer = tok(meta::Role::kViewer), infer = tok(meta::Role::kInference);
  auto as = [&](const std::string& t, const std::string& m, const std::string& target,
                const std::string& body = "") {
    return Req(m, target, body, {{"Authorization", t}}).status;
  };
  EXPECT_EQ(as(editor, "POST", "/api/v1/runs", R"({"experiment": "x"})"), 201);
  EXPECT_EQ(as(viewer, "GET", "/api/v1/runs/1"), 200);
  EXPECT_EQ(as(viewer, "POST", "/api/v1/runs", R"({"experiment": "x"})"), 403);
  EXPECT_EQ(as(infer, "GET", "/api/v1/runs/1"), 403);
  EXPECT_EQ(as(editor, "GET", "/api/v1/tokens"), 403);
  EXPECT_EQ(as(admin, "GET", "/api/v1/tokens"), 200);
  auto audit = Req("GET", "/api/v1/audit", "", {{"Authorization", admin}});
  ASSERT_EQ(audit.status, 200);
  EXPECT_EQ(J(audit)["entries"][0]["action"], "run.create");
  EXPECT_EQ(J(audit)["entries"][0]["actor"], "editor");
}

// A request whose handler is running when the shutdown starts still gets its answer (with
// Connection: close); idle connections are closed, no new ones are accepted, and run() returns
// once the request is done.
TEST_F(ServerTest, GracefulShutdownFinishesInFlightRequests) {
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  bool added = false;
  auto add_slow_route = [&](Router& r) {
    r.add("POST", "/test/slow", Access::kPublic, [&](Request& req) -> Result<Response> {
      entered.set_value();
      released.wait();
      return Response::json_body({{"echo", req.body}});
    });
    added = true;
  };
  Start(false, 16 << 20, add_slow_route);
  ASSERT_TRUE(added);
  std::promise<HttpResult> answer;
  std::thread client([&] {
    auto c = HttpConnection::open("127.0.0.1", server_->port());
    auto r = (*c)->request("POST", "/test/slow", "payload");
    answer.set_value(r.ok() ? *r : HttpResult{});
  });
  entered.get_future().wait();  // the handler runs now
  server_->shutdown();
  release.set_value();
  HttpResult r = answer.get_future().get();
  client.join();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(J(r)["echo"], "payload");
  EXPECT_EQ(r.headers["connection"], "close");
  thread_.join();  // run() returned: nothing left in flight, the idle conn_ was closed
  EXPECT_FALSE(HttpConnection::open("127.0.0.1", server_->port()).ok()) << "still accepting";
}

// An asynchronous route with a small body runs on the I/O thread, so it is answered even while
// every worker is busy; a body over inline_async_max_body goes to a worker and waits for one.
TEST_F(ServerTest, SmallAsynchronousRequestsDoNotWaitForAWorker) {
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  auto routes = [&](Router& r) {
    r.add("POST", "/test/block", Access::kPublic, [&](Request&) -> Result<Response> {
      entered.set_value();
      released.wait();
      return Response::json_body({{"blocked", true}});
    });
    r.add_async(
        "POST", "/test/async", Access::kPublic,
        [](Request& req, Reply reply) {
          reply(Response::json_body({{"bytes", req.body.size()}}));
        },
        1 << 20, /*json_body=*/false);
  };
  Start(false, 16 << 20, routes, [](ServerOptions& so) {
    so.workers = 1;
    so.inline_async_max_body = 1024;
  });
  std::thread blocker([&] {
    auto c = HttpConnection::open("127.0.0.1", server_->port());
    if (c.ok()) (void)(*c)->request("POST", "/test/block", "x");
  });
  entered.get_future().wait();  // the only worker is held now
  auto send = [&](size_t bytes) {
    return std::async(std::launch::async, [this, bytes] {
      auto c = HttpConnection::open("127.0.0.1", server_->port());
      auto r = c.ok() ? (*c)->request("POST", "/test/async", std::string(bytes, 'b'))
                      : Result<HttpResult>(c.status());
      return r.ok() ? *r : HttpResult{};
    });
  };
  auto small = send(100);
  bool answered = small.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  auto large = send(2000);
  bool large_waited = large.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout;
  release.set_value();
  blocker.join();
  ASSERT_TRUE(answered) << "a small asynchronous request waited for the busy worker";
  EXPECT_EQ(J(small.get())["bytes"], 100);
  EXPECT_TRUE(large_waited) << "a body over inline_async_max_body ran on the I/O thread";
  HttpResult r = large.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(J(r)["bytes"], 2000);
}

// With spin_us 0 the I/O threads block at once (no polling): requests are served the same.
TEST_F(ServerTest, IOThreadsThatNeverPollServeToo) {
  Start(false, 16 << 20, nullptr, [](ServerOptions& so) {
    so.spin_us = 0;
    so.io_threads = 2;
  });
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Req("GET", "/api/v1/experiments").status, 200);
  EXPECT_EQ(Req("GET", "/no/such/route").status, 404);
}

// An answer posted from another thread waits for the I/O thread; the server measures that wait
// and tells later requests (Request::answer_delay_us) so that deadline-bound handlers answer
// early enough: here an answer made while the only I/O thread is held for 50 ms.
TEST_F(ServerTest, RequestsLearnHowLongAnswersWaitForTheIOThread) {
  auto routes = [](Router& r) {
    r.add_async(
        "POST", "/test/held", Access::kPublic,
        [](Request&, Reply reply) {
          // Answered from another thread, then the I/O thread (running this handler) is held.
          std::thread([reply] { reply(Response::json_body({{"held", true}})); }).join();
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        },
        1 << 10, /*json_body=*/false);
    r.add_async(
        "POST", "/test/delay", Access::kPublic,
        [](Request& req, Reply reply) {
          reply(Response::json_body({{"answer_delay_us", req.answer_delay_us}}));
        },
        1 << 10, /*json_body=*/false);
  };
  Start(false, 16 << 20, routes, [](ServerOptions& so) { so.io_threads = 1; });
  EXPECT_EQ(J(Req("POST", "/test/delay", "x"))["answer_delay_us"], 0) << "nothing measured yet";
  EXPECT_EQ(Req("POST", "/test/held", "x").status, 200);
  // The first wait measured is the estimate (no spread yet): at least the 50 ms hold, less
  // the time the answering thread took to post.
  int64_t delay = J(Req("POST", "/test/delay", "x"))["answer_delay_us"].get<int64_t>();
  EXPECT_GE(delay, 40'000);
  EXPECT_LT(delay, 5'000'000);
}

// A token the server checked within the token cache's lifetime is accepted on the I/O thread:
// its small asynchronous request is answered while the only worker is busy; a token not seen
// yet needs the token store, on a worker, and waits for it.
TEST_F(ServerTest, AKnownTokenNeedsNoWorker) {
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  auto routes = [&](Router& r) {
    r.add("POST", "/test/block", Access::kPublic, [&](Request&) -> Result<Response> {
      entered.set_value();
      released.wait();
      return Response::json_body({{"blocked", true}});
    });
    r.add_async(
        "POST", "/test/async", Access::kInfer,
        [](Request& req, Reply reply) {
          reply(Response::json_body({{"who", req.principal.name}}));
        },
        1 << 20, /*json_body=*/false);
  };
  Start(/*auth=*/true, 16 << 20, routes, [](ServerOptions& so) { so.workers = 1; });
  meta::Principal root{"root", meta::Role::kAdmin};
  auto token = [&](const std::string& name) {
    return "Bearer " +
           backend_->store().tokens().create_token(name, meta::Role::kInference, root)->token;
  };
  std::string known = token("known"), fresh = token("fresh");
  ASSERT_EQ(Req("POST", "/test/async", "x", {{"Authorization", known}}).status, 200);
  std::thread blocker([&] {
    auto c = HttpConnection::open("127.0.0.1", server_->port());
    if (c.ok()) (void)(*c)->request("POST", "/test/block", "x");
  });
  entered.get_future().wait();  // the only worker is held now
  auto send = [&](const std::string& tok) {
    return std::async(std::launch::async, [this, tok] {
      auto c = HttpConnection::open("127.0.0.1", server_->port());
      auto r = c.ok() ? (*c)->request("POST", "/test/async", "x", {{"Authorization", tok}})
                      : Result<HttpResult>(c.status());
      return r.ok() ? *r : HttpResult{};
    });
  };
  auto with_known = send(known);
  bool answered = with_known.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  auto with_fresh = send(fresh);
  bool waited = with_fresh.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout;
  release.set_value();
  blocker.join();
  ASSERT_TRUE(answered) << "a cached token's request waited for the busy worker";
  EXPECT_EQ(J(with_known.get())["who"], "known");
  EXPECT_TRUE(waited) << "a token not seen yet was accepted without the token store";
  HttpResult r = with_fresh.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(J(r)["who"], "fresh");
}

TEST_F(ServerTest, LocalClientUsesTheSameRoutes) {
  Start();
  auto local = connect_local(*backend_);
  auto run = local->call("POST", "/api/v1/runs", {{"experiment", "local"}});
  ASSERT_TRUE(run.ok()) << run.status().to_string();
  std::string f = (dir_ / "m.onnx").string();
  ASSERT_TRUE(write_file_atomic(f, "onnx bytes").ok());
  ASSERT_TRUE(local->upload("/api/v1/runs/1/artifacts/model.onnx", f).ok());
  ASSERT_TRUE(local->call("POST", "/api/v1/models", {{"name", "m"}}).ok());
  auto v = local->call("POST", "/api/v1/models/m/versions", {{"run_id", 1}});
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  // The HTTP side sees what the local client wrote, and errors come back as Status values.
  auto over_http = connect_http("http://127.0.0.1:" + std::to_string(server_->port()), "");
  ASSERT_TRUE(over_http.ok());
  std::string out = (dir_ / "got.onnx").string();
  ASSERT_TRUE((*over_http)->download("/api/v1/models/m/versions/1/artifact", out).ok());
  EXPECT_EQ(*read_file(out), "onnx bytes");
  auto missing = (*over_http)->call("GET", "/api/v1/models/nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos);
}

}  // namespace
}  // namespace dlsys::api

#include "api/run_logger.h"

namespace dlsys::api {
namespace {

// The logger a training loop uses: batches of at most 1000 points, final status, artifacts;
// over HTTP and in-process alike.
TEST_F(ServerTest, RunLoggerBatchesMetricsAndFinishes) {
  Start();
  auto http = connect_http("http://127.0.0.1:" + std::to_string(server_->port()), "");
  ASSERT_TRUE(http.ok());
  auto local = connect_local(*backend_);
  for (ApiClient* c : {http->get(), local.get()}) {
    auto log = RunLogger::start(*c, "training", "mlp", {{"lr", "0.1"}}, {{"precision", "fp32"}});
    ASSERT_TRUE(log.ok()) << log.status().to_string();
    for (int step = 0; step < 1250; ++step) {
      ASSERT_TRUE((*log)->log_metric("loss", 1.0 / (step + 1), step).ok());
      ASSERT_TRUE((*log)->log_metric("acc", step / 1250.0, step).ok());
    }
    std::string f = (dir_ / "weights.bin").string();
    ASSERT_TRUE(write_file_atomic(f, "weights").ok());
    ASSERT_TRUE((*log)->log_artifact("checkpoints/step-1250.bin", f).ok());
    ASSERT_TRUE((*log)->finish().ok());
    int64_t id = (*log)->run_id();
    auto run = c->call("GET", fmt::format("/api/v1/runs/{}", id));
    ASSERT_TRUE(run.ok());
    EXPECT_EQ((*run)["status"], "FINISHED");
    EXPECT_EQ((*run)["params"]["lr"], "0.1");
    EXPECT_EQ((*run)["metrics"]["loss"]["step"], 1249);
    auto h = c->call("GET", fmt::format("/api/v1/runs/{}/metrics/acc", id));
    EXPECT_EQ((*h)["total_points"], 1250);
  }
  // A logger dropped without finish() marks its run FAILED.
  {
    auto log = RunLogger::start(*local, "training", "crashed", {}, {});
    ASSERT_TRUE(log.ok());
  }
  auto runs = local->call("GET", "/api/v1/runs?filter=" + url_encode("name = 'crashed'"));
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ((*runs)["runs"][0]["status"], "FAILED");
}

// While training sends nothing, the logger sends heartbeats on a client of its own (a wait
// with a deadline, not a busy thread), and stops when the run finishes.
TEST_F(ServerTest, RunLoggerSendsHeartbeatsWhileNothingElseIsSent) {
  Start();
  auto http = connect_http("http://127.0.0.1:" + std::to_string(server_->port()), "");
  ASSERT_TRUE(http.ok());
  RunLoggerOptions fast;
  fast.heartbeat_period = std::chrono::milliseconds(10);
  auto log = RunLogger::start(**http, "training", "slow", {}, {}, fast);
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  // The training thread is quiet: heartbeats arrive (waited for, up to 30 s).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((*log)->heartbeats_sent() < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GE((*log)->heartbeats_sent(), 3);
  // Meanwhile the training thread's own client still works (the heartbeats use another).
  ASSERT_TRUE((*log)->log_metric("loss", 0.5, 1).ok());
  ASSERT_TRUE((*log)->flush().ok());
  auto run = (*http)->call("GET", fmt::format("/api/v1/runs/{}", (*log)->run_id()));
  ASSERT_TRUE(run.ok());
  EXPECT_EQ((*run)["status"], "RUNNING");
  EXPECT_GT((*run)["heartbeat_time"].get<int64_t>(), 0);
  ASSERT_TRUE((*log)->finish().ok());
  int64_t sent = (*log)->heartbeats_sent();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ((*log)->heartbeats_sent(), sent) << "a heartbeat after the run finished";
  // No period: no heartbeats at all.
  RunLoggerOptions none;
  none.heartbeat_period = std::chrono::milliseconds(0);
  auto quiet = RunLogger::start(**http, "training", "quiet", {}, {}, none);
  ASSERT_TRUE(quiet.ok());
  ASSERT_TRUE((*quiet)->finish().ok());
  EXPECT_EQ((*quiet)->heartbeats_sent(), 0);
}

// A run whose process stopped without ending it (no heartbeat, no metric) is FAILED once the
// timeout passes, with the reason; one that sends heartbeats stays RUNNING. The services' clock
// is injected: the test moves it instead of sleeping.
TEST_F(ServerTest, RunsNotHeardFromFailAfterTheTimeout) {
  auto now = std::make_shared<std::atomic<int64_t>>(1'000'000);
  tune_services = [now](ServicesOptions& o) {
    o.run_timeout_ms = 60'000;
    o.clock = [now] { return now->load(); };
  };
  Start();
  auto quiet = J(Req("POST", "/api/v1/runs", R"({"experiment":"e","name":"dies"})"));
  auto alive = J(Req("POST", "/api/v1/runs", R"({"experiment":"e","name":"beats"})"));
  const std::string q = "/api/v1/runs/" + std::to_string(quiet["id"].get<int64_t>());
  const std::string a = "/api/v1/runs/" + std::to_string(alive["id"].get<int64_t>());
  EXPECT_EQ(quiet["heartbeat_time"], 1'000'000);
  *now += 40'000;
  auto hb = Req("POST", a + "/heartbeat");
  ASSERT_EQ(hb.status, 200) << hb.body;
  EXPECT_EQ(J(hb)["heartbeat_time"], 1'040'000);
  EXPECT_EQ(J(hb)["status"], "RUNNING");
  EXPECT_EQ(Req("POST", "/api/v1/runs/999/heartbeat").status, 404);
  *now += 20'000;  // the quiet one: exactly the timeout, not over it
  EXPECT_EQ(J(Req("GET", q))["status"], "RUNNING");
  *now += 10'000;  // quiet: 70 s; alive: 30 s since its heartbeat
  auto failed = J(Req("GET", q));
  EXPECT_EQ(failed["status"], "FAILED");
  EXPECT_EQ(failed["end_time"], 1'070'000);
  EXPECT_NE(failed["end_reason"].get<std::string>().find("no heartbeat for 70 s"),
            std::string::npos)
      << failed.dump();
  EXPECT_EQ(J(Req("GET", a))["status"], "RUNNING");
  auto list = J(Req("GET", "/api/v1/runs?filter=" + url_encode("status = 'FAILED'")));
  ASSERT_EQ(list["runs"].size(), 1u);
  EXPECT_EQ(list["runs"][0]["name"], "dies");
  // Logging metrics is a heartbeat too.
  *now += 50'000;  // alive: 80 s since its heartbeat, but it logs now
  ASSERT_EQ(Req("POST", a + "/log-batch", R"({"metrics":[{"key":"loss","value":1}]})").status, 200);
  EXPECT_EQ(J(Req("GET", a))["status"], "RUNNING");
}

// `models register --file` over REST: the file is the version's own artifact (no run); a file
// that is not a model is refused before anything is stored, and the error names no server path.
TEST_F(ServerTest, AVersionFromAFileHasNoRunAndBadFilesStoreNothing) {
  tune_services = [](ServicesOptions& o) {
    // A stand-in for the ONNX importer: its error names the path it was given, as the real one
    // does.
    o.model_validator = [](const std::string& path) -> Status {
      auto bytes = read_file(path);
      if (!bytes.ok()) return bytes.status();
      if (bytes->rfind("MODEL", 0) != 0) return Status::Invalid("'{}' is not an ONNX model", path);
      return Status::OK();
    };
  };
  Start();
  ASSERT_EQ(Req("POST", "/api/v1/models", R"({"name":"own"})").status, 201);
  auto count_objects = [this] {
    size_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir_ / "objects"))
      if (e.is_regular_file() && e.path().parent_path().filename() != "tmp") ++n;
    return n;
  };
  auto bad = Req("POST", "/api/v1/models/own/versions/upload?artifact_path=m.onnx", "junk");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("'m.onnx' is not a loadable ONNX model: 'm.onnx' is not an ONNX model"),
            std::string::npos)
      << bad.body;
  EXPECT_EQ(bad.body.find("objects"), std::string::npos) << bad.body;
  EXPECT_EQ(bad.body.find(dir_.string()), std::string::npos) << bad.body;
  EXPECT_EQ(count_objects(), 0u);
  EXPECT_TRUE(J(Req("GET", "/api/v1/models/own/versions"))["versions"].empty());
  EXPECT_EQ(Req("POST", "/api/v1/models/nope/versions/upload", "MODEL").status, 404);
  EXPECT_EQ(Req("POST", "/api/v1/models/own/versions/upload?artifact_path=m.txt", "MODEL").status,
            400);
  EXPECT_EQ(count_objects(), 0u);

  const std::string bytes = "MODEL bytes\n\x01\x02";
  auto ok = Req("POST", "/api/v1/models/own/versions/upload?description=from%20a%20file", bytes);
  ASSERT_EQ(ok.status, 201) << ok.body;
  auto v = J(ok);
  EXPECT_EQ(v["version"], 1);
  EXPECT_TRUE(v["run_id"].is_null());
  EXPECT_EQ(v["artifact_path"], "model.onnx");
  EXPECT_EQ(v["description"], "from a file");
  EXPECT_EQ(v["sha256"], sha256_hex(bytes));
  EXPECT_TRUE(J(Req("GET", "/api/v1/runs"))["runs"].empty());
  auto got = Req("GET", "/api/v1/models/own/versions/latest/artifact");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.body, bytes);
  // The in-process client uploads the same way.
  auto local = connect_local(*backend_);
  std::string f = (dir_ / "m.onnx").string();
  ASSERT_TRUE(write_file_atomic(f, "MODEL two").ok());
  auto v2 = local->upload("/api/v1/models/own/versions/upload", f, "POST");
  ASSERT_TRUE(v2.ok()) << v2.status().to_string();
  EXPECT_EQ((*v2)["version"], 2);
  EXPECT_TRUE((*v2)["run_id"].is_null());
}

}  // namespace
}  // namespace dlsys::api

namespace dlsys::api {
namespace {

TEST_F(ServerTest, DatasetsOverRest) {
  Start();
  std::string v1 = "x,label\n", v2 = "x,label\n";
  for (int i = 0; i < 200; ++i) v1 += fmt::format("{},{}\n", i, i % 2);
  for (int i = 0; i < 200; ++i) v2 += fmt::format("{},{}\n", i + 1000, i % 2);
  auto p1 = Req("POST", "/api/v1/datasets/toy/versions?message=first&split=0.5,0.5", v1);
  ASSERT_EQ(p1.status, 201) << p1.body;
  auto p2 = Req("POST", "/api/v1/datasets/toy/versions", v2);
  ASSERT_EQ(p2.status, 201) << p2.body;
  EXPECT_EQ(json::parse(p2.body)["label"], "toy@v2");
  EXPECT_FALSE(json::parse(p2.body)["unchanged"].get<bool>());
  // The same data again: 200, no new version, the answer names the latest one.
  auto same = Req("POST", "/api/v1/datasets/toy/versions?message=again", v2);
  ASSERT_EQ(same.status, 200) << same.body;
  auto sj = json::parse(same.body);
  EXPECT_TRUE(sj["unchanged"].get<bool>()) << same.body;
  EXPECT_EQ(sj["version"], 2);
  EXPECT_EQ(sj["label"], "toy@v2");
  EXPECT_EQ(sj["id"], json::parse(p2.body)["id"]);
  EXPECT_EQ(sj["message"], "");  // v2's; "again" was not recorded
  auto bad = Req("POST", "/api/v1/datasets/toy/versions", "x,label\n1,2\n3,\"4\n");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find(":3"), std::string::npos) << bad.body;

  auto list = json::parse(Req("GET", "/api/v1/datasets").body);
  ASSERT_EQ(list["datasets"].size(), 1u);
  EXPECT_EQ(list["datasets"][0]["latest"]["label"], "toy@v2");
  EXPECT_EQ(json::parse(Req("GET", "/api/v1/datasets/toy/versions").body)["versions"].size(), 2u);
  auto show = json::parse(Req("GET", "/api/v1/datasets/toy/versions/v1").body);
  EXPECT_EQ(show["manifest"]["message"], "first");
  EXPECT_EQ(show["manifest"]["split"]["rows"]["test"], 0);
  EXPECT_EQ(Req("GET", "/api/v1/datasets/toy/versions/v7").status, 404);

  auto diff = json::parse(Req("GET", "/api/v1/datasets/toy/diff?from=v1&to=v2").body);
  EXPECT_EQ(diff["rows"]["added"], 200);
  EXPECT_EQ(diff["rows"]["removed"], 200);
  EXPECT_TRUE(diff["drift"]["x"]["drift"].get<bool>());
  json sample = {{"x", json::array()}};
  for (int i = 0; i < 100; ++i) sample["x"].push_back(i * 2);
  auto drift = Req("POST", "/api/v1/datasets/toy/versions/v1/drift", sample.dump());
  ASSERT_EQ(drift.status, 200) << drift.body;
  EXPECT_FALSE(json::parse(drift.body)["x"]["drift"].get<bool>()) << drift.body;

  EXPECT_EQ(Req("PUT", "/api/v1/datasets/toy/tags/prod", R"({"version":"v1"})").status, 200);
  EXPECT_EQ(json::parse(Req("GET", "/api/v1/datasets/toy/versions/prod").body)["version"], 1);
  auto rows = Req("GET", "/api/v1/datasets/toy/versions/prod/rows?split=train");
  ASSERT_EQ(rows.status, 200);
  EXPECT_EQ(rows.body.rfind("x,label\n", 0), 0u);
  int64_t lines = std::count(rows.body.begin(), rows.body.end(), '\n') - 1;
  EXPECT_EQ(lines, show["manifest"]["split"]["rows"]["train"].get<int64_t>());
  // The push recorded v1 -> v2 as lineage.
  auto lin = json::parse(Req("GET", "/api/v1/lineage/dataset_version/toy@v2").body);
  EXPECT_NE(lin.dump().find("toy@v1"), std::string::npos) << lin.dump();
}

// Uploads left by a server that stopped (or clients that died) are removed when a server starts,
// once untouched for an hour; younger ones stay.
TEST_F(ServerTest, StaleStagedUploadsAreRemovedAtStart) {
  std::filesystem::path stale, fresh;
  tune_services = [&](ServicesOptions& o) {
    std::filesystem::path up = std::filesystem::path(o.data_dir) / "datasets" / "uploads";
    stale = up / std::string(32, 'a');
    fresh = up / std::string(32, 'b');
    for (const auto& d : {stale, fresh}) {
      std::filesystem::create_directories(d / "input");
      std::ofstream(d / "input" / "x.csv") << "x\n1\n";
    }
    std::filesystem::last_write_time(
        stale, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  };
  Start();
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(fresh / "input" / "x.csv"));
  // Unknown to this server: no file can be added to it, and its sweep removes it once stale.
  EXPECT_EQ(
      Req("PUT", "/api/v1/datasets/toy/uploads/" + std::string(32, 'b') + "/files/y", "1").status,
      404);
}

// A staged upload: files PUT one by one under checked relative paths, within the limits (files
// and bytes per upload, the server's body limit per file), then ingested by one POST that
// removes the staging directory whatever happens.
TEST_F(ServerTest, StagedDatasetUploadsCheckPathsAndLimits) {
  tune_services = [](ServicesOptions& o) {
    o.max_upload_files = 3;
    o.max_upload_bytes = 400;
  };
  Start(false, 16 << 20, nullptr, [](ServerOptions& so) { so.max_upload = 300; });
  std::filesystem::path staging = dir_ / "datasets" / "uploads";
  auto create = [&](const std::string& name) {
    auto r = Req("POST", "/api/v1/datasets/" + name + "/uploads");
    EXPECT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(J(r)["max_files"], 3);
    EXPECT_EQ(J(r)["max_bytes"], 400);
    return J(r)["upload"].get<std::string>();
  };
  std::string id = create("toy");
  ASSERT_EQ(id.size(), 32u);
  EXPECT_TRUE(std::filesystem::is_directory(staging / id));
  std::string files = "/api/v1/datasets/toy/uploads/" + id + "/files/";
  // Paths that would leave the upload, or that are not plain relative names: 400 naming `path`.
  for (const std::string& bad :
       {std::string("../x"), std::string("a/../../x"), std::string("a/./b"), std::string(".env"),
        std::string("a//b"), std::string("%2e%2e/x"), std::string("a%5cb"), std::string("a%01b"),
        std::string("%2Fabs"), std::string(300, 'p'), std::string("a/") + std::string(1100, 'q')}) {
    auto r = Req("PUT", files + bad, "data");
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
    EXPECT_NE(r.body.find("\"message\":\"path"), std::string::npos) << bad << ": " << r.body;
  }
  std::string deep;
  for (int i = 0; i < 17; ++i) deep += "d/";
  auto too_deep = Req("PUT", files + deep + "f", "x");
  EXPECT_EQ(too_deep.status, 400) << too_deep.body;
  EXPECT_NE(too_deep.body.find("more than 16 parts"), std::string::npos) << too_deep.body;
  // Unknown uploads, and another dataset's: 404.
  EXPECT_EQ(
      Req("PUT", "/api/v1/datasets/toy/uploads/" + std::string(32, 'a') + "/files/x", "1").status,
      404);
  EXPECT_EQ(Req("PUT", "/api/v1/datasets/other/uploads/" + id + "/files/x", "1").status, 404);
  EXPECT_EQ(Req("PUT", "/api/v1/datasets/toy/uploads/..%2F..%2Fmeta.db/files/x", "1").status, 404);
  // Limits: bytes per upload (a file replaced counts once), files per upload, bytes per file.
  std::string csv = "x,label\n1,0\n2,1\n3,0\n4,1\n";
  ASSERT_EQ(Req("PUT", files + "in/data.csv", csv).status, 201);
  ASSERT_EQ(Req("PUT", files + "in/data.csv", csv).status, 201);
  auto big = Req("PUT", files + "b.bin", std::string(250, 'b'));
  ASSERT_EQ(big.status, 201) << big.body;
  auto over = Req("PUT", files + "c.bin", std::string(200, 'c'));
  EXPECT_EQ(over.status, 400) << over.body;
  EXPECT_NE(over.body.find("over the limit (max_bytes) of 400 bytes"), std::string::npos)
      << over.body;
  ASSERT_EQ(Req("PUT", files + "c.bin", "c").status, 201);
  auto many = Req("PUT", files + "d.bin", "d");
  EXPECT_EQ(many.status, 400) << many.body;
  EXPECT_NE(many.body.find("the limit (max_files) of one upload"), std::string::npos) << many.body;
  auto file_limit = Req("PUT", files + "e.bin", std::string(301, 'e'));
  EXPECT_EQ(file_limit.status, 413) << file_limit.body;
  EXPECT_NE(file_limit.body.find("--max-upload-mb"), std::string::npos) << file_limit.body;
  // A file where a folder of the upload is, and under a file.
  EXPECT_EQ(Req("PUT", files + "in", "x").status, 400);
  auto under = Req("PUT", files + "c.bin/x", "x");
  EXPECT_EQ(under.status, 400) << under.body;
  EXPECT_NE(under.body.find("'c.bin' is a file of the upload"), std::string::npos) << under.body;
  // The ingest: paths checked like files (400 naming the field), the upload gone afterwards.
  std::string push = "/api/v1/datasets/toy/versions?upload=" + id + "&format=csv";
  auto no_path = Req("POST", push);
  EXPECT_EQ(no_path.status, 400) << no_path.body;
  EXPECT_NE(no_path.body.find("path: give"), std::string::npos) << no_path.body;
  EXPECT_FALSE(std::filesystem::exists(staging / id)) << "a failed ingest left its upload";
  EXPECT_EQ(Req("PUT", files + "x", "1").status, 404);
  id = create("toy");
  files = "/api/v1/datasets/toy/uploads/" + id + "/files/";
  ASSERT_EQ(Req("PUT", files + "in/data.csv", csv).status, 201);
  push = "/api/v1/datasets/toy/versions?upload=" + id + "&format=csv";
  auto escape = Req("POST", push + "&path=in/data.csv&labels=../../meta.db");
  EXPECT_EQ(escape.status, 400) << escape.body;
  EXPECT_NE(escape.body.find("labels: path '../../meta.db' has a '..' part"), std::string::npos)
      << escape.body;
  id = create("toy");
  files = "/api/v1/datasets/toy/uploads/" + id + "/files/";
  ASSERT_EQ(Req("PUT", files + "in/data.csv", csv).status, 201);
  push = "/api/v1/datasets/toy/versions?upload=" + id + "&format=csv";
  auto missing = Req("POST", push + "&path=in/other.csv");
  EXPECT_EQ(missing.status, 400) << missing.body;
  EXPECT_NE(missing.body.find("path 'in/other.csv' is not a file of upload"), std::string::npos)
      << missing.body;
  id = create("toy");
  files = "/api/v1/datasets/toy/uploads/" + id + "/files/";
  ASSERT_EQ(Req("PUT", files + "in/data.csv", csv).status, 201);
  push = "/api/v1/datasets/toy/versions?upload=" + id + "&format=csv";
  auto with_body = Req("POST", push + "&path=in/data.csv", "x,label\n1,1\n");
  EXPECT_EQ(with_body.status, 400) << with_body.body;
  EXPECT_FALSE(std::filesystem::exists(staging / id)) << "a refused ingest left its upload";
  id = create("toy");
  files = "/api/v1/datasets/toy/uploads/" + id + "/files/";
  ASSERT_EQ(Req("PUT", files + "in/data.csv", csv).status, 201);
  push = "/api/v1/datasets/toy/versions?upload=" + id + "&format=csv";
  auto ok = Req("POST", push + "&path=in/data.csv&filename=my.csv&split=1,0,0");
  ASSERT_EQ(ok.status, 201) << ok.body;
  EXPECT_EQ(J(ok)["rows"], 4);
  EXPECT_EQ(J(ok)["input"]["path"], "my.csv");
  EXPECT_FALSE(std::filesystem::exists(staging / id));
  // The same rows pushed as a body: no new version (the same shards).
  auto same = Req("POST", "/api/v1/datasets/toy/versions?split=1,0,0", csv);
  EXPECT_EQ(same.status, 200) << same.body;
  EXPECT_TRUE(J(same)["unchanged"].get<bool>());
  // Cancelled, and swept when stale (here: at once).
  id = create("toy");
  EXPECT_EQ(Req("DELETE", "/api/v1/datasets/toy/uploads/" + id).status, 200);
  EXPECT_FALSE(std::filesystem::exists(staging / id));
  id = create("toy");
  EXPECT_EQ(backend_->uploads().sweep(0), 1u);
  EXPECT_FALSE(std::filesystem::exists(staging / id));
  EXPECT_EQ(Req("PUT", "/api/v1/datasets/toy/uploads/" + id + "/files/x", "1").status, 404);
  // Uploads in progress at once are bounded (503, naming the limit).
  std::vector<std::string> open;
  for (int i = 0; i < 256; ++i) {
    auto r = Req("POST", "/api/v1/datasets/toy/uploads");
    ASSERT_EQ(r.status, 201) << i << ": " << r.body;
    open.push_back(J(r)["upload"]);
  }
  auto full = Req("POST", "/api/v1/datasets/toy/uploads");
  EXPECT_EQ(full.status, 503) << full.body;
  EXPECT_NE(full.body.find("its limit (max_open)"), std::string::npos) << full.body;
  EXPECT_EQ(Req("DELETE", "/api/v1/datasets/toy/uploads/" + open.back()).status, 200);
  EXPECT_EQ(Req("POST", "/api/v1/datasets/toy/uploads").status, 201);
}

}  // namespace
}  // namespace dlsys::api
