// bench/meta/store_bench: the metadata store itself (no HTTP), on SQLite.
//
//   store_bench seed    --db PATH [--points 3000000] [--legacy yes]   one run, one key ("loss"),
//       N points: logged as chunks, or (--legacy yes) as rows of the table from before chunks
//   store_bench history --db PATH [--max-points 1000]  times metric_history; peak RSS
//   store_bench wal     --db PATH [--seconds 90] [--writers 4] [--readers 4] [--batch 100]
//       writers log batches of metrics, readers read metric histories and search runs without
//       pause; reports the largest -wal file seen (sampled every 10 ms), throughput and write
//       latency.
//
// `seed` and `history` are separate processes so that the peak RSS of `history` (getrusage
// ru_maxrss) is the read's alone. Only calls that every version of the store since its split into
// concepts (issue 18) has are used, so the same program measures the code before and after a
// change.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "meta/meta_store.h"

using namespace dlsys;
using Clock = std::chrono::steady_clock;

namespace {

const meta::Principal kBench{"bench", meta::Role::kAdmin};

[[noreturn]] void die(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.to_string().c_str());
  std::exit(1);
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

long peak_rss_kib() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

std::string arg(int argc, char** argv, const char* name, const std::string& def) {
  for (int i = 2; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

// Seeds one run with `points` points of "loss": through log_batch in batches of 100,000 points
// (chunks, how points are stored since schema 9), or with `legacy` as rows of the `metrics`
// table written by direct SQL in transactions of 100,000 (how a database from before holds them).
int seed(const std::string& db_path, int64_t points, bool legacy) {
  auto store = meta::MetaStore::open(db_path, 2);
  if (!store.ok()) die(store.status());
  auto e = (*store)->runs().ensure_experiment("bench", kBench);
  if (!e.ok()) die(e.status());
  auto r = (*store)->runs().create_run(e->id, "history", {}, {}, kBench);
  if (!r.ok()) die(r.status());
  int64_t run = r->id;
  auto value = [points](int64_t i) {
    return i == points / 2 ? 50.0  // a spike
                           : 1.0 / (1.0 + static_cast<double>(i) / 1000.0) + (i % 97) * 1e-4;
  };
  if (!legacy) {
    for (int64_t start = 0; start < points; start += 100000) {
      std::vector<meta::MetricPoint> batch;
      for (int64_t i = start; i < std::min(points, start + 100000); ++i)
        batch.push_back({"loss", value(i), i, int64_t{1700000000000} + i});
      Status st = (*store)->runs().log_batch(run, batch, {}, {}, kBench);
      if (!st.ok()) die(st);
      std::fprintf(stderr, "\rseeded %lld/%lld",
                   static_cast<long long>(std::min(points, start + 100000)),
                   static_cast<long long>(points));
    }
  }
  store->reset();
  if (legacy) {
    auto db = meta::SqlDatabase::open(db_path, 1);
    if (!db.ok()) die(db.status());
    auto c = (*db)->acquire();
    if (!c.ok()) die(c.status());
    for (int64_t start = 0; start < points; start += 100000) {
      std::vector<meta::SqlParams> rows;
      for (int64_t i = start; i < std::min(points, start + 100000); ++i)
        rows.push_back({run, std::string("loss"), i, int64_t{1700000000000} + i, value(i)});
      Status st = meta::with_transaction(**c, true, [&](meta::SqlConnection& conn) {
        return conn.exec_many(
            "INSERT INTO metrics (run_id, key, step, ts, value) VALUES "
            "($1,$2,$3,$4,$5)",
            rows);
      });
      if (!st.ok()) die(st);
      std::fprintf(stderr, "\rseeded %lld/%lld",
                   static_cast<long long>(std::min(points, start + 100000)),
                   static_cast<long long>(points));
    }
  }
  std::fprintf(stderr, "\n");
  std::printf("{\"run_id\": %lld, \"points\": %lld}\n", static_cast<long long>(run),
              static_cast<long long>(points));
  return 0;
}

int history(const std::string& db_path, int max_points) {
  auto store = meta::MetaStore::open(db_path, 2);
  if (!store.ok()) die(store.status());
  long rss_before = peak_rss_kib();
  std::vector<double> times;
  size_t returned = 0;
  int64_t total = 0;
  for (int i = 0; i < 3; ++i) {
    auto t0 = Clock::now();
    auto h = (*store)->runs().metric_history(1, "loss", max_points);
    times.push_back(ms_since(t0));
    if (!h.ok()) die(h.status());
    returned = h->points.size();
    total = h->total_points;
    bool spike = false;
    for (auto& p : h->points) spike |= p.value == 50;
    if (!spike) std::fprintf(stderr, "warning: the spike is not in the result\n");
  }
  std::sort(times.begin(), times.end());
  std::printf(
      "{\"max_points\": %d, \"total_points\": %lld, \"returned\": %zu, \"ms_first\": %.1f, "
      "\"ms_median\": %.1f, \"peak_rss_mib_before\": %.1f, \"peak_rss_mib\": %.1f}\n",
      max_points, static_cast<long long>(total), returned, times[0], times[1], rss_before / 1024.0,
      peak_rss_kib() / 1024.0);
  return 0;
}

int wal(const std::string& db_path, double seconds, int writers, int readers, int batch) {
  auto opened = meta::MetaStore::open(db_path, 16);
  if (!opened.ok()) die(opened.status());
  meta::MetaStore& store = **opened;
  auto e = store.runs().ensure_experiment("wal-bench", kBench);
  if (!e.ok()) die(e.status());
  std::vector<int64_t> runs;
  for (int w = 0; w < writers; ++w) {
    auto r = store.runs().create_run(e->id, "writer-" + std::to_string(w), {}, {}, kBench);
    if (!r.ok()) die(r.status());
    runs.push_back(r->id);
  }
  std::string wal_path = db_path + "-wal";
  auto wal_size = [&] {
    struct stat st;
    return ::stat(wal_path.c_str(), &st) == 0 ? int64_t{st.st_size} : int64_t{0};
  };
  std::atomic<bool> stop{false};
  std::atomic<int64_t> points{0}, reads{0}, max_wal{0}, errors{0};
  std::vector<std::vector<double>> latency(static_cast<size_t>(writers));
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w)
    threads.emplace_back([&, w] {
      int64_t step = 0;
      while (!stop) {
        std::vector<meta::MetricPoint> pts;
        for (int i = 0; i < batch; ++i)
          pts.push_back({"m" + std::to_string(i % 10), static_cast<double>(step % 1000) / 1000.0,
                         step + i / 10, 0});
        step += batch / 10;
        auto t0 = Clock::now();
        Status st = store.runs().log_batch(runs[w], pts, {}, {}, kBench);
        latency[w].push_back(ms_since(t0));
        if (!st.ok()) {
          ++errors;
          std::fprintf(stderr, "log_batch: %s\n", st.to_string().c_str());
        }
        points += batch;
      }
    });
  for (int r = 0; r < readers; ++r)
    threads.emplace_back([&, r] {
      while (!stop) {
        auto h =
            store.runs().metric_history(runs[r % runs.size()], "m" + std::to_string(r % 10), 1000);
        meta::SearchRunsRequest q;
        q.filter = "metrics.m0 > 0.5";
        auto s = store.runs().search_runs(q);
        if (!h.ok() || !s.ok()) ++errors;
        ++reads;
      }
    });
  auto t0 = Clock::now();
  int64_t last_report = 0;
  while (ms_since(t0) < seconds * 1000) {
    int64_t size = wal_size();
    if (size > max_wal) max_wal = size;
    int64_t now = static_cast<int64_t>(ms_since(t0) / 1000);
    if (now >= last_report + 10) {
      last_report = now;
      std::fprintf(stderr, "%3llds: wal %.1f MiB (max %.1f), %lld points, %lld reads\n",
                   static_cast<long long>(now), size / 1048576.0, max_wal / 1048576.0,
                   static_cast<long long>(points.load()), static_cast<long long>(reads.load()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop = true;
  for (auto& t : threads) t.join();
  double secs = ms_since(t0) / 1000;
  std::vector<double> all;
  for (auto& v : latency) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0
                       : all[std::min(all.size() - 1, static_cast<size_t>(p / 100 * all.size()))];
  };
  std::printf(
      "{\"seconds\": %.1f, \"writers\": %d, \"readers\": %d, \"batch\": %d, \"max_wal_mib\": %.1f, "
      "\"final_wal_mib\": %.1f, \"points_per_s\": %.0f, \"reads_per_s\": %.1f, "
      "\"write_ms_p50\": %.2f, \"write_ms_p99\": %.2f, \"write_ms_max\": %.1f, \"errors\": %lld}\n",
      secs, writers, readers, batch, max_wal / 1048576.0, wal_size() / 1048576.0, points / secs,
      reads / secs, pct(50), pct(99), all.empty() ? 0.0 : all.back(),
      static_cast<long long>(errors.load()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  std::string db = arg(argc, argv, "--db", "");
  if (db.empty() || (mode != "seed" && mode != "history" && mode != "wal")) {
    std::fprintf(stderr,
                 "usage: store_bench seed|history|wal --db PATH [--points N] [--max-points N] "
                 "[--seconds S] [--writers N] [--readers N] [--batch N]\n");
    return 2;
  }
  if (mode == "seed")
    return seed(db, std::stoll(arg(argc, argv, "--points", "3000000")),
                arg(argc, argv, "--legacy", "no") == "yes");
  if (mode == "history") return history(db, std::stoi(arg(argc, argv, "--max-points", "1000")));
  return wal(db, std::stod(arg(argc, argv, "--seconds", "90")),
             std::stoi(arg(argc, argv, "--writers", "4")),
             std::stoi(arg(argc, argv, "--readers", "4")),
             std::stoi(arg(argc, argv, "--batch", "100")));
}
