// bench/meta: the tracking server's speed, measured over HTTP on loopback against an
// in-process `dlsys server` (SQLite in a temporary data directory, or --meta postgresql://...).
//   1. metric points logged per second through the batch API (1000 point objects per request,
//      then 10,000 points per request in the columnar "series" form)
//   2. time to list the first page (100 runs) among 100,000 runs
//   3. latency of GET /api/v1/runs/{id} under 200 concurrent keep-alive clients
// MLflow, the peer, is not installable here (no PyPI); see docs/benchmarks.md.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>

#include "api/client.h"
#include "api/http_server.h"
#include "api/services.h"
#include "core/file_util.h"

using namespace dlsys;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  return v[i];
}

void die(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.to_string().c_str());
  std::exit(1);
}

// Seeds `n` runs (3 params, 2 latest metrics each) in one transaction per 10,000.
void seed_runs(meta::SqlDatabase& db, int64_t experiment_id, int n) {
  auto c = db.acquire();
  if (!c.ok()) die(c.status());
  int64_t t0 = now_ms() - n;
  for (int start = 0; start < n; start += 10000) {
    Status st = meta::with_transaction(**c, true, [&](meta::SqlConnection& conn) -> Status {
      for (int i = start; i < std::min(n, start + 10000); ++i) {
        DLSYS_ASSIGN_OR_RETURN(
            auto rows, conn.query("INSERT INTO runs (experiment_id, name, status, start_time, "
                                  "end_time, created_by) VALUES ($1,$2,'FINISHED',$3,$3,'bench') "
                                  "RETURNING id",
                                  {experiment_id, "run-" + std::to_string(i), t0 + i}));
        int64_t id = meta::sql_int(rows[0][0]);
        DLSYS_RETURN_IF_ERROR(
            conn.exec_many("INSERT INTO run_params (run_id, key, value) VALUES ($1,$2,$3)",
                           {{id, std::string("lr"), std::to_string(0.001 * (i % 10))},
                            {id, std::string("batch"), std::to_string(32 << (i % 3))},
                            {id, std::string("seed"), std::to_string(i)}}));
        DLSYS_RETURN_IF_ERROR(conn.exec_many(
            "INSERT INTO latest_metrics (run_id, key, step, ts, value) VALUES ($1,$2,$3,$4,$5)",
            {{id, std::string("acc"), int64_t{100}, t0 + i, (i % 1000) / 1000.0},
             {id, std::string("loss"), int64_t{100}, t0 + i, 1.0 / (1 + i % 97)}}));
      }
      return Status::OK();
    });
    if (!st.ok()) die(st);
    std::fprintf(stderr, "\rseeding runs %d/%d", std::min(n, start + 10000), n);
  }
  std::fprintf(stderr, "\n");
  // Fresh statistics for the query planner, as autovacuum would give a running deployment.
  if (Status st = (*c)->exec_script("ANALYZE"); !st.ok()) die(st);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench/meta: tracking server throughput and latency over HTTP"};
  std::string meta_url;
  int runs = 100000, clients = 200, log_threads = 2;
  double seconds = 5;
  bool json_out = false;
  app.add_option("--meta", meta_url, "PostgreSQL URL (default: SQLite in a temporary data dir)");
  app.add_option("--runs", runs, "Runs to seed for the listing benchmark")->capture_default_str();
  app.add_option("--clients", clients, "Concurrent keep-alive clients for the lookup benchmark")
      ->capture_default_str();
  app.add_option("--log-threads", log_threads, "Clients logging metrics")->capture_default_str();
  app.add_option("--seconds", seconds, "Duration of each timed phase")->capture_default_str();
  app.add_flag("--json", json_out, "Print one JSON object");
  CLI11_PARSE(app, argc, argv);

  std::string dir =
      (std::filesystem::temp_directory_path() / ("dlsys-meta-bench-" + random_hex(6))).string();
  api::ServicesOptions bo;
  bo.data_dir = dir;
  bo.meta_url = meta_url;
  bo.db_connections = 24;
  auto backend = api::Services::open(bo);
  if (!backend.ok()) die(backend.status());
  api::ServerOptions so;
  so.port = 0;
  so.access_log = nullptr;
  so.handle_signals = false;
  so.workers = 8;
  api::HttpServer server((*backend)->router(), so);
  if (Status st = server.listen(); !st.ok()) die(st);
  std::thread server_thread([&] { server.run(); });
  std::string url = "http://127.0.0.1:" + std::to_string(server.port());
  nlohmann::json result = {{"meta", meta_url.empty() ? "sqlite" : "postgresql"},
                           {"hardware_threads", std::thread::hardware_concurrency()}};

  // 1. Metric logging through the batch API: 1000 point objects a request ("metrics", MLflow's
  // form and limit), then the columnar form ("series", 10,000 points a request).
  for (const bool series : {false, true}) {
    std::vector<int64_t> run_ids;
    auto c = api::connect_http(url, "");
    if (!c.ok()) die(c.status());
    for (int t = 0; t < log_threads; ++t) {
      auto r = (*c)->call("POST", "/api/v1/runs", {{"experiment", "bench-log"}});
      if (!r.ok()) die(r.status());
      run_ids.push_back((*r)["id"]);
    }
    const int per_request = series ? 10000 : 1000;
    std::atomic<int64_t> points{0};
    std::atomic<bool> stop{false};
    auto t0 = Clock::now();
    std::vector<std::thread> th;
    for (int t = 0; t < log_threads; ++t)
      th.emplace_back([&, t] {
        auto cc = api::HttpConnection::open("127.0.0.1", server.port());
        if (!cc.ok()) die(cc.status());
        std::string target = fmt::format("/api/v1/runs/{}/log-batch", run_ids[t]);
        int64_t step = 0;
        while (!stop) {
          // Built as text: the client's JSON encoding is not what is measured.
          std::string body;
          if (series) {
            // Two keys, each with its steps and values.
            body = "{\"series\":[";
            for (int k = 0; k < 2; ++k) {
              body +=
                  fmt::format("{}{{\"key\":\"{}\",\"steps\":[", k ? "," : "", k ? "loss" : "acc");
              for (int i = 0; i < per_request / 2; ++i)
                fmt::format_to(std::back_inserter(body), "{}{}", i ? "," : "", step + i);
              body += "],\"values\":[";
              for (int i = 0; i < per_request / 2; ++i)
                fmt::format_to(std::back_inserter(body), "{}{}", i ? "," : "",
                               1.0 / (step + i + 1));
              body += "]}";
            }
            body += "]}";
            step += per_request / 2;
          } else {
            body = "{\"metrics\":[";
            for (int i = 0; i < per_request; ++i, ++step)
              body += fmt::format("{}{{\"key\":\"{}\",\"value\":{},\"step\":{}}}", i ? "," : "",
                                  i % 2 ? "loss" : "acc", 1.0 / (step + 1), step / 2);
            body += "]}";
          }
          auto r = (*cc)->request("POST", target, body);
          if (!r.ok() || r->status != 200)
            die(r.ok() ? Status::Internal("{}", r->body) : r.status());
          points += per_request;
        }
      });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : th) t.join();
    double secs = ms_since(t0) / 1000;
    result[series ? "series_points_per_s" : "metric_points_per_s"] = points / secs;
    std::fprintf(stderr, "metric logging%s: %.0f points/s (%d clients, %d per batch)\n",
                 series ? " in series" : "", points / secs, log_threads, per_request);
  }

  // 2. First page among `runs` runs.
  {
    auto c = api::connect_http(url, "");
    auto e = (*c)->call("POST", "/api/v1/experiments", {{"name", "bench-list"}});
    if (!e.ok()) die(e.status());
    auto db = meta::SqlDatabase::open(meta_url.empty() ? dir + "/meta.db" : meta_url, 1);
    if (!db.ok()) die(db.status());
    seed_runs(**db, (*e)["id"], runs);
    auto cc = api::HttpConnection::open("127.0.0.1", server.port());
    auto time_list = [&](const std::string& target) {
      std::vector<double> t;
      for (int i = 0; i < 30; ++i) {
        auto t0 = Clock::now();
        auto r = (*cc)->request("GET", target, "");
        if (!r.ok() || r->status != 200) die(r.ok() ? Status::Internal("{}", r->body) : r.status());
        t.push_back(ms_since(t0));
      }
      return t;
    };
    std::string exp = std::to_string((*e)["id"].get<int64_t>());
    auto first = time_list("/api/v1/runs?page_size=100&experiment_ids=" + exp);
    auto filtered = time_list("/api/v1/runs?page_size=100&experiment_ids=" + exp + "&filter=" +
                              api::url_encode("params.lr = '0.003' and metrics.acc > 0.5"));
    auto ordered = time_list("/api/v1/runs?page_size=100&experiment_ids=" + exp +
                             "&order_by=" + api::url_encode("metrics.acc DESC"));
    result["list_first_page_ms"] = {{"median", percentile(first, 50)},
                                    {"p99", percentile(first, 99)}};
    result["list_filtered_ms"] = {{"median", percentile(filtered, 50)},
                                  {"p99", percentile(filtered, 99)}};
    result["list_ordered_by_metric_ms"] = {{"median", percentile(ordered, 50)},
                                           {"p99", percentile(ordered, 99)}};
    result["runs"] = runs;
    std::fprintf(stderr,
                 "first page of %d runs: median %.2f ms (p99 %.2f); filtered %.2f ms; ordered by "
                 "metric %.2f ms\n",
                 runs, percentile(first, 50), percentile(first, 99), percentile(filtered, 50),
                 percentile(ordered, 50));
  }

  // 3. Run lookups under `clients` concurrent keep-alive clients.
  {
    std::atomic<bool> stop{false};
    std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
    std::atomic<int> ready{0};
    std::vector<std::thread> th;
    for (int t = 0; t < clients; ++t)
      th.emplace_back([&, t] {
        auto cc = api::HttpConnection::open("127.0.0.1", server.port());
        if (!cc.ok()) die(cc.status());
        std::mt19937 rng(static_cast<unsigned>(t));
        std::uniform_int_distribution<int> pick(1, runs);
        ++ready;
        while (ready < clients) std::this_thread::yield();
        while (!stop) {
          auto t0 = Clock::now();
          auto r = (*cc)->request("GET", fmt::format("/api/v1/runs/{}", pick(rng)), "");
          if (!r.ok() || r->status != 200)
            die(r.ok() ? Status::Internal("{}", r->body) : r.status());
          lat[static_cast<size_t>(t)].push_back(ms_since(t0));
        }
      });
    while (ready < clients) std::this_thread::yield();
    auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : th) t.join();
    double secs = ms_since(t0) / 1000;
    std::vector<double> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    result["lookup"] = {{"clients", clients},
                        {"requests_per_s", all.size() / secs},
                        {"p50_ms", percentile(all, 50)},
                        {"p99_ms", percentile(all, 99)}};
    std::fprintf(stderr,
                 "run lookup, %d keep-alive clients: %.0f req/s, p50 %.2f ms, p99 %.2f ms\n",
                 clients, all.size() / secs, percentile(all, 50), percentile(all, 99));
  }

  server.shutdown();
  server_thread.join();
  std::filesystem::remove_all(dir);
  if (json_out) std::printf("%s\n", result.dump(2).c_str());
  return 0;
}
