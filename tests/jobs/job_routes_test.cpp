// The training service's REST routes (jobs/job_routes.h) on a real HTTP server with API tokens:
// who may submit, cancel and read; the owner of a job; errors for bad specs and ids; the log
// read in pieces that never cut a character and never carry bytes that are not UTF-8.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "api/server_fixture.h"
#include "jobs/job_routes.h"

namespace dlsys::jobs {
namespace {

using api::Access;
using api::HttpResult;
using api::Route;
using nlohmann::json;

class JobRoutesTest : public api::ServerFixture {
 protected:
  void Start(bool auth) {
    work_dir_ = std::filesystem::temp_directory_path() / ("dlsys-job-routes-" + random_hex(6));
    api::ServerFixture::Start(auth, 16 << 20, [this, auth](api::Router& r) {
      JobRoutesOptions o;
      o.work_dir = work_dir_.string();
      o.wake = [this] { ++wakes_; };
      o.command_jobs_need_admin = auth;
      add_job_routes(r, backend_->store(), o);
    });
  }
  void TearDown() override {
    api::ServerFixture::TearDown();
    std::filesystem::remove_all(work_dir_);
  }
  // "Bearer <token>" of a new token called `name` with `role`.
  std::string Token(const std::string& name, meta::Role role) {
    meta::Principal root{"root", meta::Role::kAdmin};
    auto t = backend_->store().tokens().create_token(name, role, root);
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return "Bearer " + t->token;
  }
  HttpResult As(const std::string& auth, const std::string& method, const std::string& target,
                const std::string& body = "") {
    return Req(method, target, body, {{"Authorization", auth}});
  }

  std::filesystem::path work_dir_;
  std::atomic<int> wakes_{0};
};

const char* kCommandJob = R"({"kind": "command", "command": ["true"]})";
const char* kTrainJob = R"({"kind": "train", "spec": "/specs/mlp.yaml"})";

TEST_F(JobRoutesTest, EditorsSubmitAndCancelTheirOwnJobsAdminsAnyViewersNone) {
  Start(/*auth=*/true);
  const std::string alice = Token("alice", meta::Role::kEditor);
  const std::string bob = Token("bob", meta::Role::kEditor);
  const std::string viewer = Token("val", meta::Role::kViewer);
  const std::string admin = Token("ada", meta::Role::kAdmin);

  auto r = As(alice, "POST", "/api/v1/jobs", kTrainJob);
  ASSERT_EQ(r.status, 201) << r.body;
  const int64_t id = J(r)["id"];
  EXPECT_EQ(J(r)["owner"], "alice");
  EXPECT_EQ(J(r)["state"], "QUEUED");
  EXPECT_EQ(wakes_.load(), 1) << "a submit wakes the service";
  const std::string job = "/api/v1/jobs/" + std::to_string(id);

  EXPECT_EQ(As(viewer, "POST", "/api/v1/jobs", kTrainJob).status, 403);
  EXPECT_EQ(Req("POST", "/api/v1/jobs", kTrainJob).status, 401);
  // Everyone with a read role sees every job.
  r = As(viewer, "GET", "/api/v1/jobs?owner=alice");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(J(r)["jobs"].size(), 1u);
  EXPECT_EQ(As(viewer, "GET", job).status, 200);
  EXPECT_EQ(As(viewer, "GET", job + "/log").status, 200);
  // Cancel: not bob's job, not a viewer's right; the owner may.
  r = As(bob, "POST", job + "/cancel", "{}");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(As(viewer, "POST", job + "/cancel", "{}").status, 403);
  r = As(alice, "POST", job + "/cancel", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(J(r)["state"], "CANCELLED");
  // An ended job cannot be cancelled again: 409 with its state.
  r = As(alice, "POST", job + "/cancel", "{}");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find("CANCELLED"), std::string::npos) << r.body;

  // An admin cancels anyone's job and may submit for someone else; an editor may not.
  r = As(bob, "POST", "/api/v1/jobs", kTrainJob);
  ASSERT_EQ(r.status, 201);
  r = As(admin, "POST", "/api/v1/jobs/" + std::to_string(int64_t(J(r)["id"])) + "/cancel", "{}");
  EXPECT_EQ(r.status, 200) << r.body;
  r = As(bob, "POST", "/api/v1/jobs", R"({"kind": "train", "spec": "/a.yaml", "owner": "x"})");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("only an admin submits jobs for someone else"), std::string::npos);
  r = As(admin, "POST", "/api/v1/jobs",
         R"({"kind": "command", "command": ["true"], "owner": "x"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(J(r)["owner"], "x");
}

TEST_F(JobRoutesTest, EveryJobRouteRefusesCallersWithoutTheRole) {
  Start(/*auth=*/true);
  const std::map<std::string, std::string> callers = {
      {"none", ""}, {"inference", Token("inf", meta::Role::kInference)}};
  size_t checked = 0;
  for (const Route& route : backend_->router().routes()) {
    if (route.pattern.rfind("/api/v1/jobs", 0) != 0) continue;
    std::string target;
    for (const std::string& seg : route.segments)
      target += "/" + (seg.empty() || seg[0] != '{' ? seg : std::string("1"));
    EXPECT_EQ(Req(route.method, target, route.method == "GET" ? "" : "{}").status, 401)
        << route.pattern;
    EXPECT_EQ(
        As(callers.at("inference"), route.method, target, route.method == "GET" ? "" : "{}").status,
        403)
        << route.pattern;
    ++checked;
  }
  EXPECT_EQ(checked, 6u);
}

TEST_F(JobRoutesTest, BadSpecsAndIdsAreNamedErrors) {
  Start(/*auth=*/false);
  auto r = Req("POST", "/api/v1/jobs", R"({"kind": "command"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("a command job needs 'command'"), std::string::npos) << r.body;
  r = Req("POST", "/api/v1/jobs",
          R"({"kind": "command", "command": ["x"], "resources": {"threads": 0}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("resources.threads"), std::string::npos) << r.body;
  r = Req("POST", "/api/v1/jobs", R"({"kind": "command", "command": ["x"], "colour": 1})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("colour"), std::string::npos) << r.body;
  r = Req("POST", "/api/v1/jobs", "{\"kind\": ");
  EXPECT_EQ(r.status, 400);
  r = Req("GET", "/api/v1/jobs/abc");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("job id"), std::string::npos) << r.body;
  r = Req("GET", "/api/v1/jobs/0");
  EXPECT_EQ(r.status, 400);
  r = Req("GET", "/api/v1/jobs/12345");
  EXPECT_EQ(r.status, 404) << r.body;
  r = Req("GET", "/api/v1/jobs/12345/log");
  EXPECT_EQ(r.status, 404) << r.body;
  r = Req("GET", "/api/v1/jobs?state=bogus");
  EXPECT_EQ(r.status, 400) << r.body;
}

TEST_F(JobRoutesTest, TheLogComesInPiecesOfWholeCharactersWithBadBytesReplaced) {
  Start(/*auth=*/false);
  auto r = Req("POST", "/api/v1/jobs", kCommandJob);
  ASSERT_EQ(r.status, 201);
  const std::string base = "/api/v1/jobs/" + std::to_string(int64_t(J(r)["id"])) + "/log";
  // Not started: an empty log.
  r = Req("GET", base);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(J(r)["text"], "");
  EXPECT_EQ(J(r)["offset"], 0);
  // "é" is 2 bytes, "€" 3; \xff is never UTF-8.
  const std::string log =
      "a\xC3\xA9"
      "b\xE2\x82\xAC"
      "c\xFF"
      "d\n";
  std::filesystem::create_directories(work_dir_ / std::to_string(int64_t(J(r)["id"])));
  std::ofstream(work_dir_ / std::to_string(int64_t(J(r)["id"])) / "log") << log;
  for (int piece : {1, 4, 5, 6, 7, 100}) {
    std::string text;
    int64_t offset = 0;
    for (int i = 0; i < 20 && offset < static_cast<int64_t>(log.size()); ++i) {
      r = Req("GET",
              base + "?offset=" + std::to_string(offset) + "&max_bytes=" + std::to_string(piece));
      ASSERT_EQ(r.status, 200) << r.body;
      json j = J(r);
      EXPECT_EQ(j["size"], static_cast<int64_t>(log.size()));
      int64_t next = j["offset"];
      // Every piece moves on (a piece holds at least 4 bytes: a whole character).
      ASSERT_GT(next, offset) << "pieces of " << piece;
      text += j["text"].get<std::string>();
      offset = next;
    }
    EXPECT_EQ(text,
              "a\xC3\xA9"
              "b\xE2\x82\xAC"
              "c\xEF\xBF\xBD"
              "d\n")
        << "pieces of " << piece;
  }
  EXPECT_EQ(Req("GET", base + "?offset=-1").status, 400);
  EXPECT_EQ(Req("GET", base + "?max_bytes=0").status, 400);
  EXPECT_EQ(Req("GET", base + "?max_bytes=99999999").status, 400);
  // Past the end: nothing, and the offset stays.
  r = Req("GET", base + "?offset=1000");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(J(r)["text"], "");
  EXPECT_EQ(J(r)["offset"], 1000);
}

}  // namespace
}  // namespace dlsys::jobs
