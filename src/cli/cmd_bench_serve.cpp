// `dlsys bench serve --url URL --model NAME --scenario single-stream|server|offline ...`: the
// serving load generator (src/serve/loadgen.h) against a KServe v2 endpoint, with MLPerf
// LoadGen's scenarios. A subcommand of `bench`, so `dlsys bench MODEL.onnx` keeps its meaning.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "api/client.h"
#include "cli/commands.h"
#include "core/json_util.h"
#include "serve/loadgen.h"

namespace dlsys::cli {
namespace {

struct BenchServeArgs {
  std::string url, scenario = "single-stream", token, records;
  serve::LoadgenOptions o;
  bool json = false;
};

std::string ms_text(double ms) {
  return ms < 1 ? fmt::format("{:.3f} ms", ms) : fmt::format("{:.2f} ms", ms);
}

void print_human(const serve::LoadgenResult& r) {
  std::printf("scenario:   %s, model %s, batch %lld, %.1f s, %d connection%s\n",
              serve::scenario_name(r.scenario), r.model.c_str(), static_cast<long long>(r.batch),
              r.seconds, r.connections, r.connections == 1 ? "" : "s");
  if (r.scenario == serve::Scenario::kServer)
    std::printf("arrivals:   Poisson at %.1f/s (achieved %.1f/s; %lld sent over 1 ms late)\n",
                r.target_qps, r.achieved_qps, static_cast<long long>(r.late_dispatches));
  std::printf("requests:   sent %lld, ok %lld, rejected (503) %lld, failed %lld\n",
              static_cast<long long>(r.sent), static_cast<long long>(r.ok),
              static_cast<long long>(r.rejected), static_cast<long long>(r.failed));
  std::printf("latency:    p50 %s, p90 %s, p99 %s, max %s, mean %s%s\n", ms_text(r.p50_ms).c_str(),
              ms_text(r.p90_ms).c_str(), ms_text(r.p99_ms).c_str(), ms_text(r.max_ms).c_str(),
              ms_text(r.mean_ms).c_str(),
              r.scenario == serve::Scenario::kServer ? " (from the scheduled arrival)" : "");
  if (r.rejected)
    std::printf("rejected:   answered after p50 %s, p99 %s\n", ms_text(r.rejected_p50_ms).c_str(),
                ms_text(r.rejected_p99_ms).c_str());
  std::printf("throughput: %.1f rows/s, %.1f requests/s answered 200\n", r.throughput_rows_per_s,
              r.seconds > 0 ? static_cast<double>(r.ok) / r.seconds : 0.0);
  switch (r.scenario) {
    case serve::Scenario::kSingleStream:
      std::printf("result:     p90 %s\n", ms_text(r.p90_ms).c_str());
      break;
    case serve::Scenario::kServer:
      std::printf("result:     p99 %s %s the %.1f ms bound%s: %s\n", ms_text(r.p99_ms).c_str(),
                  r.p99_ms <= r.p99_bound_ms ? "<=" : ">", r.p99_bound_ms,
                  r.failed ? ", with failed requests" : "", r.p99_met ? "MET" : "NOT MET");
      break;
    case serve::Scenario::kOffline:
      std::printf("result:     %.1f rows/s\n", r.throughput_rows_per_s);
      break;
  }
  if (!r.histogram.empty()) {
    int64_t most = 1;
    for (const auto& b : r.histogram) most = std::max(most, b.count);
    std::printf("histogram (ok answers):\n");
    for (const auto& b : r.histogram) {
      std::string le = std::isinf(b.le_ms) ? "+inf" : fmt::format("{:g}", b.le_ms);
      int bar = static_cast<int>(40.0 * static_cast<double>(b.count) / static_cast<double>(most));
      std::printf("  <= %6s ms  %-40s %lld\n", le.c_str(), std::string(bar, '#').c_str(),
                  static_cast<long long>(b.count));
    }
  }
  if (!r.first_error.empty()) std::printf("first error: %s\n", r.first_error.c_str());
}

Status write_records(const std::string& path, const serve::LoadgenResult& r) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return Status::IOError("cannot write --records file '{}'", path);
  std::fprintf(f, "scheduled_s,sent_s,latency_ms,status\n");
  for (const auto& rec : r.records)
    std::fprintf(f, "%.6f,%.6f,%.4f,%d\n", rec.scheduled_s, rec.sent_s, rec.latency_ms, rec.status);
  bool ok = std::fclose(f) == 0;
  return ok ? Status::OK() : Status::IOError("cannot write --records file '{}'", path);
}

int run_bench_serve(BenchServeArgs& a) {
  serve::LoadgenOptions& o = a.o;
  auto scenario = serve::parse_scenario(a.scenario);
  if (!scenario.ok()) return fail(scenario.status().message());
  o.scenario = *scenario;
  std::string url = a.url;
  if (url.empty())
    if (const char* s = std::getenv("DLSYS_SERVER")) url = s;
  if (url.empty()) url = "http://127.0.0.1:8080";
  Status st = api::parse_http_url(url, &o.host, &o.port);
  if (!st.ok()) return fail(st.message());
  o.token = a.token;
  if (o.token.empty())
    if (const char* t = std::getenv("DLSYS_TOKEN")) o.token = t;
  o.keep_records = !a.records.empty();
  bool tty = !a.json && isatty(STDERR_FILENO);
  auto progress = [&](const serve::LoadgenProgress& p) {
    std::fprintf(stderr,
                 "\r%5.1f / %.0f s  sent %lld  ok %lld  rejected %lld  failed %lld  "
                 "connections %d ",
                 p.elapsed_s, o.duration_s, static_cast<long long>(p.sent),
                 static_cast<long long>(p.ok), static_cast<long long>(p.rejected),
                 static_cast<long long>(p.failed), p.connections);
  };
  auto r = tty ? serve::run_loadgen(o, progress) : serve::run_loadgen(o);
  if (tty) std::fprintf(stderr, "\r\033[K");
  if (!r.ok()) return fail(r.status().message());
  if (!a.records.empty()) {
    st = write_records(a.records, *r);
    if (!st.ok()) return fail(st.message());
  }
  if (a.json)
    std::printf("%s\n", json_dump_line(serve::to_json(*r)).c_str());
  else
    print_human(*r);
  return 0;
}

}  // namespace

void add_bench_serve(CLI::App& bench, int* rc) {
  auto a = std::make_shared<BenchServeArgs>();
  CLI::App* s = bench.add_subcommand(
      "serve",
      "Load-test a deployment over KServe v2 (MLPerf LoadGen scenarios): single-stream sends one "
      "query at a time (reports p90); server sends Poisson arrivals at --qps, latency counted "
      "from each scheduled arrival (reports p99 against --p99-bound-ms); offline sends back to "
      "back from --concurrency clients (reports rows/s)");
  s->add_option("--url", a->url, "Server URL (default $DLSYS_SERVER, else http://127.0.0.1:8080)");
  s->add_option("--model", a->o.model, "Model name as served (/v2/models/NAME)")->required();
  s->add_option("--scenario", a->scenario,
                "single-stream, server or offline (default single-stream)")
      ->check(CLI::IsMember({"single-stream", "server", "offline"}));
  s->add_option("--qps", a->o.qps, "server: mean Poisson arrivals per second (default 100)")
      ->check(CLI::PositiveNumber);
  s->add_option("--duration", a->o.duration_s, "Seconds to issue queries (default 10)")
      ->check(CLI::PositiveNumber);
  s->add_option("--batch", a->o.batch, "Rows per query (dimension 0 of each input; default 1)")
      ->check(CLI::PositiveNumber);
  s->add_option("--concurrency", a->o.concurrency,
                "offline: client connections sending back to back; server: connections opened "
                "before the start, at least 2 x qps x the p99 bound (more are added when all "
                "are busy); default 4")
      ->check(CLI::PositiveNumber);
  s->add_option("--max-connections", a->o.max_connections,
                "server: the most connections it may grow to (default 512)")
      ->check(CLI::PositiveNumber);
  s->add_option("--timeout-ms", a->o.timeout_ms,
                "Each query's deadline (the request's 'timeout' parameter); default: the "
                "deployment's timeout_ms")
      ->check(CLI::PositiveNumber);
  s->add_option("--p99-bound-ms", a->o.p99_bound_ms,
                "server: the p99 latency bound the run must meet (default 25 ms, as commonly "
                "used for MLPerf-style server runs)")
      ->check(CLI::PositiveNumber);
  s->add_option("--seed", a->o.seed, "Seed of the arrival schedule and the inputs (default 1)");
  s->add_option("--token", a->token, "API token (or $DLSYS_TOKEN)");
  s->add_option("--records", a->records,
                "Write every query as CSV (scheduled_s,sent_s,latency_ms,status) to this file");
  s->add_flag("--json", a->json, "Print one JSON object for scripts");
  s->callback([a, rc] { *rc = run_bench_serve(*a); });
}

}  // namespace dlsys::cli
