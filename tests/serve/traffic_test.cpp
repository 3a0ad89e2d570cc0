// Traffic between versions of one deployment, over a real HTTP server on loopback: a canary
// split by weight and sticky per X-Request-Key, promote and roll back without a reload or a
// failed request, shadow copies compared and never returned, and the response cache.
#include <atomic>
#include <functional>
#include <map>

#include "serving_fixture.h"

namespace dlsys::serve {
namespace {

class TrafficTest : public ServingTest {
 protected:
  json Status(const std::string& name) {
    auto r = Req("GET", "/api/v1/deployments/" + name);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body)["status"];
  }
  std::string VersionOf(const HttpResult& r) {
    EXPECT_EQ(r.status, 200) << r.body;
    json a = json::parse(r.body, nullptr, false);
    return a.is_object() ? a.value("model_version", "") : "";
  }
  std::vector<float> OutputOf(const HttpResult& r) {
    return json::parse(r.body)["outputs"][0]["data"].get<std::vector<float>>();
  }
};

TEST_F(TrafficTest, CanarySplitsByWeightStickyPerKeyThenPromotesAndRollsBack) {
  std::string v1 = mlp_bytes(1.0f), v2 = mlp_bytes(2.0f);
  ASSERT_EQ(Register(v1), 1);
  ASSERT_EQ(Register(v2), 2);
  Alias(1);
  auto created = Req(
      "POST", "/api/v1/deployments",
      json{{"name", "mlp"},
           {"model", "mlp"},
           {"ref", "production"},
           {"config",
            {{"max_delay_us", 0}, {"canary", {{"model", "mlp"}, {"version", 2}, {"weight", 30}}}}}}
          .dump());
  ASSERT_EQ(created.status, 201) << created.body;
  json st = Status("mlp");
  EXPECT_EQ(st["version"], 1);
  EXPECT_EQ(st["canary"]["version"], 2);
  EXPECT_EQ(st["canary"]["weight"], 30);

  // Each side answers with its own model: checked against the engine.
  const std::vector<float> x = Inputs(1, 0.3f);
  const std::vector<float> want1 = Expected(v1, x, 1), want2 = Expected(v2, x, 1);
  std::map<std::string, std::string> side;  // key -> version that answered
  int canary = 0;
  const int keys = 300;
  for (int k = 0; k < keys; ++k) {
    std::string key = "user-" + std::to_string(k);
    HttpResult r = Infer("mlp", x, 1, key);
    std::string v = VersionOf(r);
    ASSERT_TRUE(v == "1" || v == "2") << r.body;
    ExpectNear(OutputOf(r), v == "1" ? want1 : want2);
    side[key] = v;
    canary += v == "2";
  }
  // 30% of 300 keys: 90 expected, sd 7.9; 5 sd either way.
  EXPECT_GT(canary, 50);
  EXPECT_LT(canary, 130);
  // Sticky: the same key lands on the same side every time.
  for (int k = 0; k < keys; k += 7) {
    std::string key = "user-" + std::to_string(k);
    EXPECT_EQ(VersionOf(Infer("mlp", x, 1, key)), side[key]) << key;
  }
  // Without a key the split is random: both sides answer (P(no canary in 200) = 0.7^200).
  std::set<std::string> seen;
  for (int i = 0; i < 200 && seen.size() < 2; ++i) seen.insert(VersionOf(Infer("mlp", x, 1)));
  EXPECT_EQ(seen.size(), 2u);
  // An explicit version reaches the canary too.
  EXPECT_EQ(Req("POST", "/v2/models/mlp/versions/2/infer", InferBody(x, 1).dump()).status, 200);

  // Promote under load: the alias moves to the canary's version, the canary's loaded version
  // becomes the primary (the same object: nothing reloads) and no request fails.
  auto canary_before = models_->find("mlp", 2);
  ASSERT_TRUE(canary_before.ok());
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread load([&] {
    auto c = HttpConnection::open("127.0.0.1", server_->port());
    ASSERT_TRUE(c.ok());
    std::string body = InferBody(x, 1).dump();
    while (!stop) {
      auto r = (*c)->request("POST", "/v2/models/mlp/infer", body);
      (r.ok() && r->status == 200 ? ok : failed)++;
    }
  });
  while (ok < 20) std::this_thread::yield();
  auto promoted = Req("POST", "/api/v1/deployments/mlp/promote");
  ASSERT_EQ(promoted.status, 200) << promoted.body;
  int at_promote = ok;
  while (ok < at_promote + 20) std::this_thread::yield();
  stop = true;
  load.join();
  EXPECT_EQ(failed.load(), 0);
  auto alias = local_->call("GET", "/api/v1/models/mlp");
  ASSERT_TRUE(alias.ok());
  EXPECT_EQ((*alias)["aliases"]["production"], 2) << alias->dump();
  auto primary = models_->find("mlp");
  ASSERT_TRUE(primary.ok());
  EXPECT_EQ(primary->get(), canary_before->get()) << "promote reloaded the canary";
  st = Status("mlp");
  EXPECT_EQ(st["version"], 2);
  EXPECT_FALSE(st.contains("canary")) << st.dump();
  json stored = json::parse(Req("GET", "/api/v1/deployments/mlp").body);
  EXPECT_FALSE(stored["config"].contains("canary")) << stored.dump();
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(VersionOf(Infer("mlp", x, 1, "k" + std::to_string(i))), "2");

  // Roll back: a new canary (version 1 at 50%) is dropped, and unloaded.
  auto put = Req(
      "PUT", "/api/v1/deployments/mlp",
      json{{"model", "mlp"},
           {"ref", "production"},
           {"config",
            {{"max_delay_us", 0}, {"canary", {{"model", "mlp"}, {"version", 1}, {"weight", 50}}}}}}
          .dump());
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(Status("mlp")["canary"]["version"], 1);
  EXPECT_EQ(primary->get(), models_->find("mlp")->get()) << "adding a canary reloaded the primary";
  auto rolled = Req("POST", "/api/v1/deployments/mlp/rollback");
  ASSERT_EQ(rolled.status, 200) << rolled.body;
  EXPECT_FALSE(Status("mlp").contains("canary"));
  EXPECT_EQ(models_->find("mlp", 1).status().code(), StatusCode::kNotFound);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(VersionOf(Infer("mlp", x, 1, "k" + std::to_string(i))), "2");
  // Nothing to promote now: the error says how to add a canary.
  auto none = Req("POST", "/api/v1/deployments/mlp/promote");
  EXPECT_EQ(none.status, 400);
  EXPECT_NE(none.body.find("--canary"), std::string::npos) << none.body;
}

TEST_F(TrafficTest, CanaryAndShadowSettingsAreCheckedBeforeTheyAreStored) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  auto bad = [&](const json& config, const std::string& expect, int status = 400) {
    auto r = Req("POST", "/api/v1/deployments",
                 json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "1"}, {"config", config}}.dump());
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_NE(r.body.find(expect), std::string::npos) << r.body;
  };
  bad({{"canary", {{"model", "mlp"}, {"version", "production"}}}}, "config.canary.version");
  bad({{"canary", {{"model", "mlp"}, {"version", 1}, {"weight", 101}}}}, "config.canary.weight");
  bad({{"shadow", {{"model", "mlp"}, {"version", 1}, {"weight", 5}}}}, "config.shadow.weight");
  bad({{"canary", {{"version", 1}}}}, "config.canary.model");
  bad({{"shadow", "mlp@1"}}, "config.shadow must be an object");
  // A canary version that does not exist: nothing is stored or served.
  bad({{"canary", {{"model", "mlp"}, {"version", 9}}}}, "canary mlp@9", 404);
  EXPECT_EQ(Req("GET", "/api/v1/deployments/mlp").status, 404);
}

TEST_F(TrafficTest, ShadowGetsACopyComparedAndNeverReturned) {
  std::string v1 = mlp_bytes(1.0f);
  ASSERT_EQ(Register(v1), 1);
  ASSERT_EQ(Register(mlp_bytes(2.0f)), 2);   // same argmax as v1 (scaled scores)
  ASSERT_EQ(Register(mlp_bytes(-1.0f)), 3);  // the opposite ranking
  auto create = [&](const std::string& name, int64_t shadow) {
    auto r = Req(
        "POST", "/api/v1/deployments",
        json{{"name", name},
             {"model", "mlp"},
             {"ref", "1"},
             {"config", {{"max_delay_us", 0}, {"shadow", {{"model", "mlp"}, {"version", shadow}}}}}}
            .dump());
    ASSERT_EQ(r.status, 201) << r.body;
  };
  create("same", 2);
  create("flipped", 3);
  const int n = 40;
  for (int i = 0; i < n; ++i) {
    std::vector<float> x = Inputs(2, 0.1f * static_cast<float>(i));
    for (const char* name : {"same", "flipped"}) {
      HttpResult r = Infer(name, x, 2);
      ASSERT_EQ(VersionOf(r), "1") << "a shadow answered: " << r.body;
      ExpectNear(OutputOf(r), Expected(v1, x, 2));
    }
  }
  // The copies finish on the shadow's own batcher: wait for every comparison.
  auto compared = [&](const std::string& name) {
    json c = Status(name)["shadow"]["comparison"];
    return c["agreed"].get<int64_t>() + c["disagreed"].get<int64_t>() + c["failed"].get<int64_t>() +
           c["dropped"].get<int64_t>();
  };
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((compared("same") < n || compared("flipped") < n) &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  json same = Status("same")["shadow"], flipped = Status("flipped")["shadow"];
  EXPECT_EQ(same["version"], 2);
  EXPECT_EQ(same["comparison"]["agreed"], n) << same.dump();
  EXPECT_EQ(same["comparison"]["agreement"], 1.0);
  EXPECT_GT(flipped["comparison"]["disagreed"].get<int64_t>(), n / 2) << flipped.dump();
  EXPECT_EQ(flipped["stats"]["done"], n);  // the shadow ran every copy
  std::string m = Req("GET", "/metrics").body;
  EXPECT_NE(m.find("dlsys_serve_shadow_comparisons_total{deployment=\"same\",outcome=\"agree\"} " +
                   std::to_string(n) + "\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("deployment=\"same\",model=\"mlp\",version=\"2\",role=\"shadow\""),
            std::string::npos);
  // Dropping the shadow unloads it.
  auto put = Req("PUT", "/api/v1/deployments/same",
                 json{{"model", "mlp"}, {"ref", "1"}, {"config", {{"max_delay_us", 0}}}}.dump());
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_FALSE(Status("same").contains("shadow"));
  EXPECT_FALSE(models_->find("same", 2).ok());
}

TEST_F(TrafficTest, ResponseCacheAnswersRepeatsWithoutRunning) {
  std::string v1 = mlp_bytes(1.0f);
  ASSERT_EQ(Register(v1), 1);
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"},
                     {"model", "mlp"},
                     {"ref", "1"},
                     {"config", {{"max_delay_us", 0}, {"cache_mb", 1}}}}
                    .dump())
                .status,
            201);
  std::vector<float> x = Inputs(3, 0.2f), y = Inputs(3, 0.9f);
  for (int i = 0; i < 5; ++i) ExpectNear(OutputOf(Infer("mlp", x, 3)), Expected(v1, x, 3));
  ExpectNear(OutputOf(Infer("mlp", y, 3)), Expected(v1, y, 3));
  json st = Status("mlp");
  EXPECT_EQ(st["stats"]["done"], 2) << st.dump();  // x once, y once: the rest from the cache
  EXPECT_EQ(st["cache"]["hits"], 4);
  EXPECT_EQ(st["cache"]["misses"], 2);
  EXPECT_EQ(st["cache"]["entries"], 2);
  std::string m = Req("GET", "/metrics").body;
  const std::string l = "deployment=\"mlp\",model=\"mlp\",version=\"1\",role=\"primary\"";
  EXPECT_NE(m.find("dlsys_serve_cache_requests_total{" + l + ",result=\"hit\"} 4\n"),
            std::string::npos)
      << m;
  // Hits count as successful requests.
  EXPECT_NE(m.find("dlsys_serve_requests_total{" + l + ",outcome=\"success\"} 6\n"),
            std::string::npos);
  // Without cache_mb there is no cache.
  ASSERT_EQ(Req("PUT", "/api/v1/deployments/mlp",
                json{{"model", "mlp"}, {"ref", "1"}, {"config", {{"max_delay_us", 0}}}}.dump())
                .status,
            200);
  EXPECT_FALSE(Status("mlp").contains("cache"));
}

// precision int8: the version's MatMul weights are quantized when it loads; answers stay close
// to the float model's (int8 weights, activations quantized per batch).
TEST_F(TrafficTest, Int8DeploymentsQuantizeWeightsWhenTheyLoad) {
  std::string v1 = mlp_bytes(1.0f);
  ASSERT_EQ(Register(v1), 1);
  auto r = Req("POST", "/api/v1/deployments",
               json{{"name", "q"},
                    {"model", "mlp"},
                    {"ref", "1"},
                    {"config", {{"precision", "int8"}, {"max_delay_us", 0}}}}
                   .dump());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Status("q")["config"]["precision"], "int8");
  std::vector<float> x = Inputs(4, 0.35f);
  std::vector<float> want = Expected(v1, x, 4), got = OutputOf(Infer("q", x, 4));
  ASSERT_EQ(got.size(), want.size());
  float peak = 0, worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    peak = std::max(peak, std::fabs(want[i]));
    worst = std::max(worst, std::fabs(got[i] - want[i]));
  }
  EXPECT_LT(worst, 0.03f * peak) << "int8 answers too far from fp32";
  EXPECT_GT(worst, 0.0f) << "identical to fp32: the weights were not quantized";
}

// Two servers on one metadata database (replicas behind a load balancer): a deployment created,
// changed or deleted through one is followed by the other within a few polls.
TEST_F(TrafficTest, ReplicasSharingTheStoreFollowEachOthersDeployments) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  ASSERT_EQ(Register(mlp_bytes(2.0f)), 2);
  ModelServerOptions o;
  o.poll = std::chrono::milliseconds(20);
  ModelServer replica(backend_->store(), backend_->objects(), o);
  ASSERT_TRUE(replica.start().ok());
  auto wait_for = [&](const std::function<bool()>& done) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return done();
  };
  auto serves = [&](int64_t v) {
    return [&replica, v] {
      auto got = replica.find("mlp");
      return got.ok() && (*got)->version == v;
    };
  };
  ASSERT_EQ(Req("POST", "/api/v1/deployments",
                json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "1"}}.dump())
                .status,
            201);
  EXPECT_TRUE(wait_for(serves(1))) << replica.status("mlp").dump();
  ASSERT_EQ(Req("PUT", "/api/v1/deployments/mlp",
                json{{"model", "mlp"}, {"ref", "2"}, {"config", json::object()}}.dump())
                .status,
            200);
  EXPECT_TRUE(wait_for(serves(2))) << replica.status("mlp").dump();
  // The server that took the update does not flap back to the old spec meanwhile.
  EXPECT_EQ((*models_->find("mlp"))->version, 2);
  ASSERT_EQ(Req("DELETE", "/api/v1/deployments/mlp").status, 200);
  EXPECT_TRUE(
      wait_for([&] { return replica.find("mlp").status().code() == StatusCode::kNotFound; }));
  replica.stop();
}

class ServingRolesTest : public ServingTest {
 protected:
  ServingRolesTest() { auth_ = true; }
};

// Only `inference` and above may infer; only `editor` and above may change deployments.
TEST_F(ServingRolesTest, InferenceTokensInferAndOnlyEditorsChangeDeployments) {
  ASSERT_EQ(Register(mlp_bytes(1.0f)), 1);
  meta::Principal root{"root", meta::Role::kAdmin};
  auto tok = [&](meta::Role role) {
    return "Bearer " +
           backend_->store().tokens().create_token(meta::role_name(role), role, root)->token;
  };
  std::string editor = tok(meta::Role::kEditor), viewer = tok(meta::Role::kViewer),
              infer = tok(meta::Role::kInference);
  auto as = [&](const std::string& t, const std::string& m, const std::string& target,
                const std::string& body = "") {
    return Req(m, target, body, {{"Authorization", t}}).status;
  };
  const std::string spec = json{{"name", "mlp"}, {"model", "mlp"}, {"ref", "1"}}.dump();
  EXPECT_EQ(as(infer, "POST", "/api/v1/deployments", spec), 403);
  EXPECT_EQ(as(viewer, "POST", "/api/v1/deployments", spec), 403);
  EXPECT_EQ(as(editor, "POST", "/api/v1/deployments", spec), 201);
  const std::string body = InferBody(Inputs(1, 0), 1).dump();
  EXPECT_EQ(Req("POST", "/v2/models/mlp/infer", body).status, 401);  // no token
  EXPECT_EQ(as(infer, "POST", "/v2/models/mlp/infer", body), 200);
  EXPECT_EQ(as(viewer, "POST", "/v2/models/mlp/infer", body), 200);
  EXPECT_EQ(as(infer, "GET", "/v2/models/mlp"), 200);
  EXPECT_EQ(as(infer, "GET", "/api/v1/deployments"), 403);
  EXPECT_EQ(as(viewer, "GET", "/api/v1/deployments"), 200);
  EXPECT_EQ(as(infer, "POST", "/api/v1/deployments/mlp/rollback"), 403);
  EXPECT_EQ(as(viewer, "PUT", "/api/v1/deployments/mlp", spec), 403);
  EXPECT_EQ(as(infer, "DELETE", "/api/v1/deployments/mlp"), 403);
  EXPECT_EQ(as(editor, "DELETE", "/api/v1/deployments/mlp"), 200);
}

}  // namespace
}  // namespace dlsys::serve
