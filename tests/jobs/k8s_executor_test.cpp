// The Kubernetes executor (jobs/k8s_executor.h): the API answers it reads (Job lists, pod ends),
// and the job service running command jobs through it as a Job per attempt: retried as new
// Jobs, tokens in Secrets, cancelled by deleting the Job, re-attached by a restarted service,
// and kubectl's errors reported. No cluster runs here: kubectl is tests/jobs/kubectl_standin.py,
// which runs each Job's container command as a local process and checks every manifest with
// scripts/check_k8s_job.py and every flag against the real kubectl's --help.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "jobs/job_service.h"
#include "jobs/k8s_executor.h"
#include "testing/submit_job.h"

namespace dlsys::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;

const meta::Principal kAlice{"alice", meta::Role::kEditor};

TEST(K8sAnswers, JobListsGiveEachJobsEnd) {
  json list = json::parse(R"({"apiVersion": "v1", "kind": "List", "items": [
    {"metadata": {"name": "dlsys-job-1-1"}, "status": {"active": 1}},
    {"metadata": {"name": "dlsys-job-2-1"}, "status": {"succeeded": 1, "conditions": [
      {"type": "Complete", "status": "True"}]}},
    {"metadata": {"name": "dlsys-job-3-2"}, "status": {"failed": 1, "conditions": [
      {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
       "message": "Job was active longer than specified deadline"}]}},
    {"metadata": {"name": "dlsys-job-4-1", "deletionTimestamp": "2026-12-03T10:00:00Z"},
     "status": {"conditions": [{"type": "Failed", "status": "False"}]}}]})");
  auto jobs = parse_k8s_jobs(list);
  ASSERT_TRUE(jobs.ok()) << jobs.status().to_string();
  ASSERT_EQ(jobs->size(), 4u);
  EXPECT_FALSE(jobs->at("dlsys-job-1-1").complete || jobs->at("dlsys-job-1-1").failed);
  EXPECT_TRUE(jobs->at("dlsys-job-2-1").complete);
  EXPECT_TRUE(jobs->at("dlsys-job-3-2").failed);
  EXPECT_EQ(jobs->at("dlsys-job-3-2").reason, "DeadlineExceeded");
  EXPECT_FALSE(jobs->at("dlsys-job-4-1").failed) << "a condition that is False does not count";
  EXPECT_TRUE(jobs->at("dlsys-job-4-1").deleting);

  auto bad = parse_k8s_jobs(json::parse(R"({"items": [{"metadata": {}}]})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("items[0]"), std::string::npos) << bad.status().message();
  EXPECT_FALSE(parse_k8s_jobs(json::parse(R"({"kind": "Status"})")).ok());
}

TEST(K8sAnswers, PodEndsReadExitCodesSignalsAndReasons) {
  auto pods = [](int code, const std::string& reason) {
    json t = {{"exitCode", code}, {"reason", reason}};
    return json{
        {"items", {{{"status", {{"containerStatuses", {{{"state", {{"terminated", t}}}}}}}}}}}};
  };
  auto oom = parse_k8s_pod_end(pods(137, "OOMKilled"));
  ASSERT_TRUE(oom.has_value());
  EXPECT_FALSE(oom->exited);
  EXPECT_EQ(oom->signal, SIGKILL);
  EXPECT_EQ(oom->detail, "OOMKilled");
  EXPECT_EQ(oom->describe(), "killed by signal 9 (SIGKILL) (OOMKilled)");
  auto error = parse_k8s_pod_end(pods(3, "Error"));
  ASSERT_TRUE(error.has_value());
  EXPECT_TRUE(error->exited);
  EXPECT_EQ(error->code, 3);
  EXPECT_EQ(error->detail, "") << "Error says nothing more than the code";
  auto running = parse_k8s_pod_end(json::parse(
      R"({"items": [{"status": {"containerStatuses": [{"state": {"running": {}}}]}}]})"));
  EXPECT_FALSE(running.has_value());
  EXPECT_FALSE(parse_k8s_pod_end(json::parse(R"({"items": []})")).has_value());
}

class K8sExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys-k8s-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto s = meta::MetaStore::open((dir_ / "meta.db").string(), 4);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    ::setenv("KUBECTL_STANDIN_STATE", (dir_ / "cluster").c_str(), 1);
    ::unsetenv("KUBECTL_STANDIN_FAIL");
    ko_.kubectl = DLSYS_KUBECTL_STANDIN;
    ko_.poll_interval = milliseconds(100);
    ko_.job.mount = dir_.string();  // the pods' volume: the same path as the service's
    ko_.job.server_url = "";
    ko_.job.stop_grace_seconds = 2;
    ko_.scratch_dir = dir_.string();
    options_.work_dir = (dir_ / "jobs").string();
    options_.scheduler.threads = 2;
    options_.retry_backoff_ms = 0;
    options_.stop_grace = milliseconds(2000);
    options_.tokens = &store_->tokens();
  }
  void TearDown() override {
    ::unsetenv("KUBECTL_STANDIN_FAIL");
    store_.reset();
    fs::remove_all(dir_);
  }
  int64_t submit(const std::string& yaml) { return submit_job(*store_, yaml, kAlice); }
  // A command job that prints "started", waits until file `go` exists, then prints "finished".
  static std::string waiting_job(const fs::path& go) {
    return "kind: command\nname: long\ncommand: [sh, -c, 'echo started; while [ ! -e " +
           go.string() + " ]; do sleep 0.05; done; echo finished']\n";
  }
  // Ticks until `done` holds or 20 s pass.
  void run_until(JobService& svc, const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      auto started = svc.tick();
      ASSERT_TRUE(started.ok()) << started.status().to_string();
      if (done()) return;
      svc.wait(milliseconds(200));
    }
    FAIL() << "not done in 20 s";
  }
  bool ended(int64_t id) {
    const std::string s = job(id).state;
    return s == "SUCCEEDED" || s == "FAILED" || s == "CANCELLED";
  }
  std::string read(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // The kubectl calls made so far, one JSON array per line.
  std::vector<json> calls() {
    std::vector<json> out;
    std::istringstream in(read(dir_ / "cluster" / "calls.log"));
    for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
    return out;
  }
  size_t count_calls(const std::string& verb, const std::string& what) {
    size_t n = 0;
    for (const json& c : calls())
      if (c.size() >= 2 && c[0] == verb && c[1] == what) ++n;
    return n;
  }
  meta::Job job(int64_t id) { return store_->jobs().get(id).value(); }

  fs::path dir_;
  std::unique_ptr<meta::MetaStore> store_;
  KubernetesExecutorOptions ko_;
  JobServiceOptions options_;
};

TEST_F(K8sExecutorTest, EachAttemptIsAJobWithItsTokenInASecretAndFailuresAreRetried) {
  int64_t id = submit(
      "kind: command\nname: flaky\nmax_retries: 1\n"
      "command: [sh, -c, 'echo attempt $DLSYS_ATTEMPT token ${DLSYS_TOKEN:+set} in $(pwd); "
      "echo \\{\\\"metric\\\": \\\"loss\\\", \\\"value\\\": 0.5, \\\"step\\\": 1\\}; "
      "test $DLSYS_ATTEMPT -ge 2']\n");
  KubernetesExecutor k8s(ko_);
  options_.executor = &k8s;
  JobService svc(*store_, options_);
  ASSERT_TRUE(svc.recover().ok());
  run_until(svc, [&] { return ended(id); });
  meta::Job j = job(id);
  EXPECT_EQ(j.state, "SUCCEEDED") << j.end_reason;
  EXPECT_EQ(j.attempts, 2);
  const fs::path jdir = dir_ / "jobs" / std::to_string(id);
  const std::string log = read(jdir / "log");
  EXPECT_NE(log.find("attempt 1 token set in " + jdir.string()), std::string::npos) << log;
  EXPECT_NE(log.find("attempt 2 token set"), std::string::npos) << log;
  // One Job per attempt (named for the attempt and its start), its manifest kept beside the
  // log; the service retried.
  EXPECT_EQ(count_calls("apply", "--namespace"), 2u);
  const std::string m1 = read(jdir / "k8s-1.yaml");
  EXPECT_NE(m1.find("name: dlsys-job-" + std::to_string(id) + "-1-"), std::string::npos) << m1;
  EXPECT_NE(m1.find("backoffLimit: 0"), std::string::npos) << "the service retries, not the Job";
  EXPECT_NE(m1.find("terminationGracePeriodSeconds: 2"), std::string::npos);
  EXPECT_NE(m1.find("secretKeyRef"), std::string::npos);
  EXPECT_NE(read(jdir / "k8s-2.yaml").find("dlsys-job-" + std::to_string(id) + "-2-"),
            std::string::npos);
  // The token went to the cluster in a Secret, and is nowhere on the shared volume: not in the
  // Job, not in a file of the job's directory.
  std::vector<std::string> tokens_sent, jobs_sent;
  std::istringstream applied(read(dir_ / "cluster" / "applied.log"));
  for (std::string line; std::getline(applied, line);) {
    json doc = json::parse(line);
    if (doc["kind"] == "Secret") tokens_sent.push_back(doc["stringData"]["token"]);
    if (doc["kind"] == "Job") jobs_sent.push_back(line);
  }
  ASSERT_EQ(tokens_sent.size(), 2u);
  ASSERT_EQ(jobs_sent.size(), 2u);
  for (const std::string& t : tokens_sent) {
    EXPECT_EQ(t.rfind("dls_", 0), 0u) << t;
    for (const std::string& j : jobs_sent) EXPECT_EQ(j.find(t), std::string::npos) << j;
  }
  for (const auto& entry : fs::recursive_directory_iterator(dir_ / "jobs")) {
    if (!entry.is_regular_file()) continue;
    for (const std::string& t : tokens_sent) {
      EXPECT_EQ(read(entry.path()).find(t), std::string::npos) << entry.path();
    }
  }
  // Secrets go when their attempts end; both tokens are revoked.
  EXPECT_TRUE(fs::is_empty(dir_ / "cluster" / "secrets"));
  auto tokens = store_->tokens().list_tokens().value();
  for (const meta::TokenInfo& ti : tokens) EXPECT_TRUE(ti.revoked) << ti.name;
  // A tracked run with the metric both attempts printed.
  meta::Run run = store_->runs().get_run(j.run_id).value();
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_EQ(run.metrics.at("loss").value, 0.5);
}

TEST_F(K8sExecutorTest, ACancelDeletesTheJobAndItsPodStops) {
  int64_t id = submit(
      "kind: command\nname: sleeper\n"
      "command: [sh, -c, 'echo $$ > $DLSYS_OUTPUT_DIR/pid; exec sleep 60']\n");
  KubernetesExecutor k8s(ko_);
  options_.executor = &k8s;
  JobService svc(*store_, options_);
  ASSERT_TRUE(svc.recover().ok());
  const fs::path pid_file = dir_ / "jobs" / std::to_string(id) / "output" / "pid";
  run_until(svc, [&] { return fs::exists(pid_file) && fs::file_size(pid_file) > 0; });
  const pid_t pod = static_cast<pid_t>(std::stol(read(pid_file)));
  ASSERT_EQ(::kill(pod, 0), 0) << "its pod runs";
  ASSERT_TRUE(store_->jobs().cancel(id, kAlice).ok());
  const auto asked = std::chrono::steady_clock::now();
  run_until(svc, [&] { return ended(id); });
  // Far below the pod's 60 s of sleep, with room for a loaded 2-core machine (the fake kubectl
  // is a script per call: 5 s was once missed by 0.19 s while another build ran).
  EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::seconds(20))
      << "SIGTERM ends sleep at once";
  EXPECT_EQ(job(id).state, "CANCELLED") << job(id).end_reason;
  EXPECT_GE(count_calls("delete", "job"), 1u);
  bool foreground = false;
  for (const json& c : calls())
    for (const json& a : c) foreground = foreground || a == "--cascade=foreground";
  EXPECT_TRUE(foreground) << "its pods go before the Job is gone";
  // The pod's process is gone (reaped by the stand-in's pod runner).
  auto gone_by = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (::kill(pod, 0) == 0 && std::chrono::steady_clock::now() < gone_by)
    std::this_thread::sleep_for(milliseconds(20));
  EXPECT_NE(::kill(pod, 0), 0);
}

TEST_F(K8sExecutorTest, ARestartedServiceReattachesToItsJobsWithoutStartingThemAgain) {
  const fs::path go = dir_ / "go";
  int64_t id = submit(waiting_job(go)), other = submit(waiting_job(go));
  KubernetesExecutor k8s(ko_);
  options_.executor = &k8s;
  const fs::path log = dir_ / "jobs" / std::to_string(id) / "log";
  const fs::path other_log = dir_ / "jobs" / std::to_string(other) / "log";
  {
    JobService first(*store_, options_);
    ASSERT_TRUE(first.recover().ok());
    run_until(first, [&] {
      return read(log).find("started") != std::string::npos &&
             read(other_log).find("started") != std::string::npos;
    });
    // It stops without stopping its Job: the pod goes on.
    ASSERT_TRUE(first.shutdown(milliseconds(100)).ok());
  }
  EXPECT_EQ(job(id).state, "RUNNING");
  EXPECT_EQ(count_calls("delete", "job"), 0u) << "a stopping service leaves the cluster's Job";
  std::ofstream(go.string()).put('x');
  KubernetesExecutor k8s2(ko_);
  options_.executor = &k8s2;
  JobService second(*store_, options_);
  const size_t lists = count_calls("get", "jobs");
  ASSERT_TRUE(second.recover().ok());
  EXPECT_EQ(second.running(), 2u) << "both re-attached";
  EXPECT_EQ(count_calls("get", "jobs"), lists + 1) << "one list for all the jobs re-attached";
  run_until(second, [&] { return ended(id) && ended(other); });
  meta::Job j = job(id);
  EXPECT_EQ(j.state, "SUCCEEDED") << j.end_reason;
  EXPECT_EQ(j.attempts, 1) << "not started again";
  EXPECT_EQ(job(other).state, "SUCCEEDED") << job(other).end_reason;
  EXPECT_EQ(count_calls("apply", "--namespace"), 2u) << "one apply per job, none at the restart";
  EXPECT_NE(read(log).find("finished"), std::string::npos);
}

// A server that is gone for good (a pod replaced by a rollout has another name): another server
// whose runner differs adopts its running Job once its heartbeats are stale, instead of deleting
// it and starting the job again.
TEST_F(K8sExecutorTest, AnotherServerAdoptsTheJobsOfOneThatIsGone) {
  const fs::path go = dir_ / "go";
  int64_t id = submit(waiting_job(go));
  KubernetesExecutor k8s(ko_);
  options_.executor = &k8s;
  const fs::path log = dir_ / "jobs" / std::to_string(id) / "log";
  JobServiceOptions a_options = options_, b_options = options_;
  a_options.runner = "pod-a:8080";
  b_options.runner = "pod-b:8080";
  b_options.runner_timeout = milliseconds(300);
  {
    JobService a(*store_, a_options);
    ASSERT_TRUE(a.recover().ok());
    run_until(a, [&] { return read(log).find("started") != std::string::npos; });
    ASSERT_TRUE(a.shutdown(milliseconds(100)).ok());
  }
  KubernetesExecutor k8s_b(ko_);
  b_options.executor = &k8s_b;
  JobService b(*store_, b_options);
  ASSERT_TRUE(b.recover().ok());
  EXPECT_EQ(b.running(), 0u) << "not b's to recover";
  run_until(b, [&] { return job(id).runner == "pod-b:8080"; });
  EXPECT_EQ(b.running(), 1u) << "adopted as it runs";
  EXPECT_EQ(count_calls("delete", "job"), 0u) << "not deleted and started again";
  std::ofstream(go.string()).put('x');
  run_until(b, [&] { return ended(id); });
  meta::Job j = job(id);
  EXPECT_EQ(j.state, "SUCCEEDED") << j.end_reason;
  EXPECT_EQ(j.attempts, 1);
  EXPECT_EQ(count_calls("apply", "--namespace"), 1u);
  EXPECT_NE(read(log).find("finished"), std::string::npos);
}

TEST_F(K8sExecutorTest, AJobDeletedOutsideDlsysIsRetriedAndKubectlErrorsAreReported) {
  int64_t id = submit(
      "kind: command\nname: victim\nmax_retries: 1\n"
      "command: [sh, -c, 'if [ $DLSYS_ATTEMPT = 1 ]; then exec sleep 60; fi; echo second']\n");
  KubernetesExecutor k8s(ko_);
  options_.executor = &k8s;
  JobService svc(*store_, options_);
  ASSERT_TRUE(svc.recover().ok());
  run_until(svc, [&] { return job(id).state == "RUNNING"; });
  // Someone runs `kubectl delete job` by hand.
  const std::string name =
      "dlsys-job-" + std::to_string(id) + "-1-" + std::to_string(job(id).started_at);
  std::ofstream((dir_ / "cluster" / "jobs" / (name + ".deleting")).string()).put('x');
  run_until(svc, [&] { return ended(id); });
  meta::Job j = job(id);
  EXPECT_EQ(j.state, "SUCCEEDED") << j.end_reason;
  EXPECT_EQ(j.attempts, 2);

  // The cluster unreachable: the attempt cannot start, and the job says why.
  ::setenv("KUBECTL_STANDIN_FAIL", "apply", 1);
  int64_t unlucky = submit("kind: command\nname: unlucky\ncommand: [true]\n");
  run_until(svc, [&] { return ended(unlucky); });
  meta::Job u = job(unlucky);
  EXPECT_EQ(u.state, "FAILED");
  EXPECT_NE(u.end_reason.find("kubectl apply failed"), std::string::npos) << u.end_reason;
  EXPECT_NE(u.end_reason.find("Unable to connect to the server"), std::string::npos)
      << u.end_reason;
  EXPECT_NE(u.end_reason.find("Kubernetes"), std::string::npos) << u.end_reason;
}

}  // namespace
}  // namespace dlsys::jobs
