#include "serve/loadgen.h"

#include <sys/epoll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "api/client.h"
#include "serve/loadgen_connection.h"

namespace dlsys::serve {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Result<Scenario> parse_scenario(const std::string& name) {
  if (name == "single-stream") return Scenario::kSingleStream;
  if (name == "server") return Scenario::kServer;
  if (name == "offline") return Scenario::kOffline;
  return Status::Invalid("scenario '{}' is not one of single-stream, server, offline", name);
}

const char* scenario_name(Scenario s) {
  switch (s) {
    case Scenario::kSingleStream:
      return "single-stream";
    case Scenario::kServer:
      return "server";
    case Scenario::kOffline:
      return "offline";
  }
  return "?";
}

PoissonSchedule::PoissonSchedule(double qps, uint64_t seed) : rng_(seed), gap_(qps) {}

double PoissonSchedule::next() {
  t_ += gap_(rng_);
  return t_;
}

std::vector<double> poisson_arrivals(double qps, double duration_s, uint64_t seed) {
  std::vector<double> out;
  if (qps <= 0 || duration_s <= 0) return out;
  out.reserve(static_cast<size_t>(qps * duration_s * 1.1) + 16);
  PoissonSchedule s(qps, seed);
  for (double t = s.next(); t < duration_s; t = s.next()) out.push_back(t);
  return out;
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  double rank = std::ceil(q * static_cast<double>(sorted.size()));
  size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

std::vector<HistogramBucket> latency_histogram(const std::vector<double>& latencies_ms) {
  static const std::vector<double> bounds = {0.1,
                                             0.2,
                                             0.5,
                                             1,
                                             2,
                                             5,
                                             10,
                                             20,
                                             50,
                                             100,
                                             200,
                                             500,
                                             1000,
                                             2000,
                                             5000,
                                             10000,
                                             std::numeric_limits<double>::infinity()};
  std::vector<HistogramBucket> all(bounds.size());
  for (size_t i = 0; i < bounds.size(); ++i) all[i].le_ms = bounds[i];
  for (double v : latencies_ms) {
    size_t i = std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin();
    ++all[std::min(i, all.size() - 1)].count;
  }
  size_t first = 0, last = all.size();
  while (first < last && all[first].count == 0) ++first;
  while (last > first && all[last - 1].count == 0) --last;
  return std::vector<HistogramBucket>(all.begin() + first, all.begin() + last);
}

void summarize(const std::vector<RequestRecord>& records, double seconds, LoadgenResult* r) {
  std::vector<double> ok, rejected;
  r->sent = static_cast<int64_t>(records.size());
  r->ok = r->rejected = r->failed = 0;
  for (const auto& rec : records) {
    if (rec.status == 200) {
      ++r->ok;
      ok.push_back(rec.latency_ms);
    } else if (rec.status == 503) {
      ++r->rejected;
      rejected.push_back(rec.latency_ms - (rec.sent_s - rec.scheduled_s) * 1e3);
    } else {
      ++r->failed;
    }
  }
  std::sort(ok.begin(), ok.end());
  std::sort(rejected.begin(), rejected.end());
  r->seconds = seconds;
  double rows = static_cast<double>(r->ok) * static_cast<double>(r->batch);
  r->throughput_rows_per_s = seconds > 0 ? rows / seconds : 0;
  r->achieved_qps = seconds > 0 ? static_cast<double>(r->sent) / seconds : 0;
  double sum = 0;
  for (double v : ok) sum += v;
  r->mean_ms = ok.empty() ? 0 : sum / static_cast<double>(ok.size());
  r->p50_ms = percentile(ok, 0.50);
  r->p90_ms = percentile(ok, 0.90);
  r->p99_ms = percentile(ok, 0.99);
  r->max_ms = ok.empty() ? 0 : ok.back();
  r->rejected_p50_ms = percentile(rejected, 0.50);
  r->rejected_p99_ms = percentile(rejected, 0.99);
  r->histogram = latency_histogram(ok);
  r->p99_met = r->ok > 0 && r->failed == 0 && r->p99_ms <= r->p99_bound_ms;
}

json to_json(const LoadgenResult& r) {
  json hist = json::array();
  for (const auto& b : r.histogram)
    hist.push_back(
        {{"le_ms", std::isinf(b.le_ms) ? json("+Inf") : json(b.le_ms)}, {"count", b.count}});
  json j = {{"scenario", scenario_name(r.scenario)},
            {"model", r.model},
            {"batch", r.batch},
            {"seconds", r.seconds},
            {"sent", r.sent},
            {"ok", r.ok},
            {"rejected", r.rejected},
            {"failed", r.failed},
            {"connections", r.connections},
            {"throughput_rows_per_s", r.throughput_rows_per_s},
            {"achieved_qps", r.achieved_qps},
            {"mean_ms", r.mean_ms},
            {"p50_ms", r.p50_ms},
            {"p90_ms", r.p90_ms},
            {"p99_ms", r.p99_ms},
            {"max_ms", r.max_ms},
            {"rejected_p50_ms", r.rejected_p50_ms},
            {"rejected_p99_ms", r.rejected_p99_ms},
            {"histogram", hist},
            {"first_error", r.first_error}};
  if (r.scenario == Scenario::kServer) {
    j["target_qps"] = r.target_qps;
    j["p99_bound_ms"] = r.p99_bound_ms;
    j["p99_met"] = r.p99_met;
    j["late_dispatches"] = r.late_dispatches;
  }
  return j;
}

namespace {

// Bytes per element of a protocol datatype; 0 for one the generator does not make.
size_t datatype_size(const std::string& dt) {
  static const std::map<std::string, size_t> sizes = {{"BOOL", 1},  {"UINT8", 1}, {"INT8", 1},
                                                      {"INT32", 4}, {"INT64", 8}, {"FP16", 2},
                                                      {"BF16", 2},  {"FP32", 4},  {"FP64", 8}};
  auto it = sizes.find(dt);
  return it == sizes.end() ? 0 : it->second;
}

// IEEE half of a float in [-8, 8] (no subnormals or infinities needed for generated inputs).
uint16_t to_half(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000);
  int exp = static_cast<int>((b >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  return static_cast<uint16_t>(sign | (exp << 10) | ((b >> 13) & 0x3ff));
}

// Appends `n` generated values of datatype `dt`: normal floats, integers 0..9, booleans.
void generate(const std::string& dt, int64_t n, std::mt19937_64& rng, std::string* out) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> small(0, 9);
  auto put = [&](const void* p, size_t size) { out->append(static_cast<const char*>(p), size); };
  for (int64_t i = 0; i < n; ++i) {
    float f = std::clamp(normal(rng), -4.f, 4.f);
    if (dt == "FP32") {
      put(&f, 4);
    } else if (dt == "FP64") {
      double d = f;
      put(&d, 8);
    } else if (dt == "FP16") {
      uint16_t h = to_half(f);
      put(&h, 2);
    } else if (dt == "BF16") {
      uint32_t b;
      std::memcpy(&b, &f, 4);
      uint16_t h = static_cast<uint16_t>(b >> 16);
      put(&h, 2);
    } else if (dt == "BOOL") {
      uint8_t v = small(rng) & 1;
      put(&v, 1);
    } else if (dt == "UINT8" || dt == "INT8") {
      uint8_t v = static_cast<uint8_t>(small(rng));
      put(&v, 1);
    } else if (dt == "INT32") {
      int32_t v = small(rng);
      put(&v, 4);
    } else {  // INT64
      int64_t v = small(rng);
      put(&v, 8);
    }
  }
}

}  // namespace

Result<std::string> make_infer_body(const json& metadata, int64_t batch, int64_t timeout_ms,
                                    uint64_t seed, size_t* json_length) {
  if (batch < 1) return Status::Invalid("--batch {} must be 1 or more", batch);
  if (!metadata.is_object() || !metadata.contains("inputs") || !metadata["inputs"].is_array() ||
      metadata["inputs"].empty())
    return Status::Invalid("the model's metadata has no 'inputs' array: {}",
                           metadata.dump().substr(0, 200));
  std::mt19937_64 rng(seed);
  json head = {{"inputs", json::array()}, {"parameters", {{"binary_data_output", true}}}};
  if (timeout_ms > 0) head["parameters"]["timeout"] = timeout_ms * 1000;
  std::string data;
  for (const json& in : metadata["inputs"]) {
    if (!in.is_object() || !in.contains("name") || !in["name"].is_string() ||
        !in.contains("datatype") || !in["datatype"].is_string() || !in.contains("shape") ||
        !in["shape"].is_array())
      return Status::Invalid("the model's metadata has a malformed input: {}",
                             in.dump().substr(0, 200));
    std::string name = in["name"], dt = in["datatype"];
    if (datatype_size(dt) == 0)
      return Status::Unsupported("input '{}': the load generator cannot make datatype {}", name,
                                 dt);
    std::vector<int64_t> shape;
    for (size_t d = 0; d < in["shape"].size(); ++d) {
      if (!in["shape"][d].is_number_integer())
        return Status::Invalid("input '{}': shape {} is not a list of integers", name,
                               in["shape"].dump());
      int64_t v = in["shape"][d];
      if (d == 0 && v != -1 && v != batch)
        return Status::Invalid("input '{}': the model's batch dimension is fixed at {}, not {}",
                               name, v, batch);
      shape.push_back(d == 0 ? batch : (v < 0 ? 1 : v));
    }
    if (shape.empty())
      return Status::Invalid("input '{}' is a scalar: it has no batch dimension", name);
    int64_t n = 1;
    for (int64_t v : shape) n *= v;
    size_t before = data.size();
    generate(dt, n, rng, &data);
    head["inputs"].push_back({{"name", name},
                              {"shape", shape},
                              {"datatype", dt},
                              {"parameters", {{"binary_data_size", data.size() - before}}}});
  }
  std::string body = head.dump();
  *json_length = body.size();
  return body + data;
}

namespace {

struct Run {
  const LoadgenOptions& o;
  std::string target, body;
  std::map<std::string, std::string> headers;
  std::string request;  // the whole HTTP request, serialized once

  // The deadline of every read and write: the request's own timeout with room to answer, and
  // never under 30 s.
  std::chrono::milliseconds io_timeout() const {
    return std::chrono::milliseconds(std::max<int64_t>(30000, 2 * o.timeout_ms));
  }
  Clock::time_point t0;
  std::vector<double> arrivals;  // server
  std::atomic<int64_t> sent{0}, ok{0}, rejected{0}, failed{0}, late{0};
  std::atomic<int> connections{0};  // server: open connections (event_loop)

  std::mutex mu;
  std::condition_variable cv;
  int started = 0, finished = 0;
  std::vector<RequestRecord> records;
  std::string first_error;

  explicit Run(const LoadgenOptions& options) : o(options) {}

  double since_start() const { return std::chrono::duration<double>(Clock::now() - t0).count(); }

  // Sends one query on `*c` (opening it when null) scheduled at `scheduled_s`.
  RequestRecord send(std::unique_ptr<LoadgenConnection>* c, double scheduled_s) {
    RequestRecord rec;
    rec.scheduled_s = scheduled_s;
    rec.sent_s = since_start();
    ++sent;
    std::string error;
    if (!*c || (*c)->closed()) {
      auto opened = LoadgenConnection::open(o.host, o.port, io_timeout());
      if (opened.ok())
        *c = std::move(opened).value();
      else
        error = opened.status().message();
    }
    if (*c && !(*c)->closed()) {
      auto r = (*c)->exchange(request);
      if (!r.ok()) c->reset();
      answered(&rec, r, c->get(), error);
    } else {
      answered(&rec, Status::Unavailable("{}", error), nullptr, error);
    }
    return rec;
  }

  // Completes `rec` with the answer `r` (read from `c`, if any), counts it, and keeps the first
  // error (`error`, or what the answer says when it is neither 200 nor 503).
  void answered(RequestRecord* rec, Result<int> r, const LoadgenConnection* c, std::string error) {
    if (r.ok()) {
      rec->status = *r;
      if (*r != 200 && *r != 503 && c)
        error = fmt::format("HTTP {}: {}", *r, c->body().substr(0, 300));
    } else if (error.empty()) {
      error = r.status().message();
    }
    rec->latency_ms = (since_start() - rec->scheduled_s) * 1e3;
    if (rec->status == 200)
      ++ok;
    else if (rec->status == 503)
      ++rejected;
    else
      ++failed;
    if (!error.empty()) {
      std::lock_guard<std::mutex> l(mu);
      if (first_error.empty()) first_error = error;
    }
  }

  // server, on one thread: sends each arrival at its time on an idle connection (opening
  // another when none is idle, up to max_connections) and reads answers as their sockets become
  // readable (epoll). One thread, woken once per batch of events, instead of a thread per
  // connection woken for every answer: at thousands of queries a second on one core, those
  // wake-ups were part of the latency measured.
  void event_loop(std::vector<std::unique_ptr<LoadgenConnection>> idle) {
    std::vector<RequestRecord> mine;
    mine.reserve(arrivals.size());
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    struct Pending {
      std::unique_ptr<LoadgenConnection> c;
      RequestRecord rec;
    };
    std::unordered_map<int, Pending> busy;
    std::vector<epoll_event> events(256);
    size_t i = 0;
    connections = static_cast<int>(idle.size());
    auto record_failure = [&](double at, double sent_s, const Status& st) {
      RequestRecord rec;
      rec.scheduled_s = at;
      rec.sent_s = sent_s;
      answered(&rec, st, nullptr, "");
      mine.push_back(rec);
    };
    while (i < arrivals.size() || !busy.empty()) {
      while (i < arrivals.size() && arrivals[i] <= since_start()) {
        std::unique_ptr<LoadgenConnection> c;
        if (!idle.empty()) {
          c = std::move(idle.back());
          idle.pop_back();
        } else if (connections < o.max_connections) {
          auto opened = LoadgenConnection::open(o.host, o.port, io_timeout());
          if (opened.ok()) {
            c = std::move(opened).value();
            ++connections;
          }
        }
        if (!c) break;  // every connection busy: the arrival waits for an answer (late)
        RequestRecord rec;
        rec.scheduled_s = arrivals[i++];
        rec.sent_s = since_start();
        ++sent;
        if (rec.sent_s - rec.scheduled_s > 1e-3) ++late;
        Status st = c->send_request(request);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = c->fd();
        if (st.ok() && ::epoll_ctl(ep, EPOLL_CTL_ADD, c->fd(), &ev) != 0)
          st = Status::Internal("epoll_ctl: {}", std::strerror(errno));
        if (!st.ok()) {
          --connections;  // closed: another opens when needed
          record_failure(rec.scheduled_s, rec.sent_s, st);
          continue;
        }
        const int fd = c->fd();
        busy.emplace(fd, Pending{std::move(c), rec});
      }
      // Wait for an answer, or until the next arrival can be sent.
      const bool can_send =
          i < arrivals.size() && (!idle.empty() || connections < o.max_connections);
      double wait_s = can_send ? std::max(0.0, arrivals[i] - since_start())
                               : std::chrono::duration<double>(io_timeout()).count();
      timespec ts{};
      ts.tv_sec = static_cast<time_t>(wait_s);
      ts.tv_nsec = static_cast<long>((wait_s - static_cast<double>(ts.tv_sec)) * 1e9);
      int n = ::epoll_pwait2(ep, events.data(), static_cast<int>(events.size()), &ts, nullptr);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 && !can_send) {
        // io_timeout with nothing answered: every query in flight failed.
        for (auto& [fd, p] : busy) {
          ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
          answered(&p.rec, Status::DeadlineExceeded("no answer within {} ms", io_timeout().count()),
                   nullptr, "");
          mine.push_back(p.rec);
          --connections;
        }
        busy.clear();
        continue;
      }
      for (int k = 0; k < n; ++k) {
        auto it = busy.find(events[k].data.fd);
        if (it == busy.end()) continue;
        Pending p = std::move(it->second);
        busy.erase(it);
        ::epoll_ctl(ep, EPOLL_CTL_DEL, p.c->fd(), nullptr);
        Result<int> r = p.c->read_answer();
        answered(&p.rec, r, p.c.get(), "");
        mine.push_back(p.rec);
        if (r.ok() && !p.c->closed())
          idle.push_back(std::move(p.c));
        else
          --connections;
      }
    }
    ::close(ep);
    finish(&mine);
  }

  void finish(std::vector<RequestRecord>* mine) {
    std::lock_guard<std::mutex> l(mu);
    records.insert(records.end(), mine->begin(), mine->end());
    ++finished;
    cv.notify_all();
  }

  // single-stream and offline: back to back until the duration is over.
  void closed_loop(std::unique_ptr<LoadgenConnection> c) {
    std::vector<RequestRecord> mine;
    for (double now = since_start(); now < o.duration_s; now = since_start())
      mine.push_back(send(&c, now));
    finish(&mine);
  }
};

}  // namespace

Result<LoadgenResult> run_loadgen(const LoadgenOptions& o,
                                  const std::function<void(const LoadgenProgress&)>& progress) {
  if (o.model.empty()) return Status::Invalid("--model is required");
  if (o.duration_s <= 0) return Status::Invalid("--duration {} must be positive", o.duration_s);
  if (o.scenario == Scenario::kServer && o.qps <= 0)
    return Status::Invalid("--qps {} must be positive for the server scenario", o.qps);
  if (o.concurrency < 1)
    return Status::Invalid("--concurrency {} must be 1 or more", o.concurrency);
  auto run = std::make_unique<Run>(o);
  Run& r = *run;
  if (!o.token.empty()) r.headers["Authorization"] = "Bearer " + o.token;
  std::string model_path = "/v2/models/" + o.model;
  DLSYS_ASSIGN_OR_RETURN(auto first, api::HttpConnection::open(o.host, o.port));
  DLSYS_ASSIGN_OR_RETURN(api::HttpResult meta, first->request("GET", model_path, "", r.headers));
  if (meta.status != 200) {
    // The v2 routes answer {"error": "..."}, the rest of the server (auth) {"error":
    // {"code", "message"}}; anything else is shown as it came.
    json e = json::parse(meta.body, nullptr, false);
    json err = e.is_object() && e.contains("error") ? e["error"] : json();
    if (err.is_object() && err.contains("message")) err = err["message"];
    std::string msg = err.is_string() ? err.get<std::string>() : meta.body.substr(0, 300);
    return Status(api::status_code_of_http(meta.status),
                  fmt::format("GET {}: HTTP {}: {}", model_path, meta.status, msg));
  }
  json metadata = json::parse(meta.body, nullptr, false);
  size_t json_length = 0;
  DLSYS_ASSIGN_OR_RETURN(r.body,
                         make_infer_body(metadata, o.batch, o.timeout_ms, o.seed, &json_length));
  r.headers["Inference-Header-Content-Length"] = std::to_string(json_length);
  r.headers["Content-Type"] = "application/octet-stream";
  r.target = model_path + "/infer";
  r.request = serialize_http_request("POST", o.host, o.port, r.target, r.headers, r.body);
  first.reset();  // the measured requests go through the load generator's own connections

  // Connections opened before the clock starts: one for single-stream, `concurrency` otherwise.
  // The server scenario also opens what it expects to have in flight (twice the arrivals over
  // the p99 bound): growing hundreds of connections after the clock starts made the first second
  // of a run measure the client's start-up, not the server.
  int initial = o.scenario == Scenario::kSingleStream ? 1 : o.concurrency;
  if (o.scenario == Scenario::kServer) {
    const double expected = 2.0 * o.qps * o.p99_bound_ms / 1000.0;
    initial = std::min(std::max(initial, static_cast<int>(std::ceil(expected))), o.max_connections);
  }
  std::vector<std::unique_ptr<LoadgenConnection>> conns;
  while (static_cast<int>(conns.size()) < initial) {
    DLSYS_ASSIGN_OR_RETURN(auto c, LoadgenConnection::open(o.host, o.port, r.io_timeout()));
    conns.push_back(std::move(c));
  }
  if (o.scenario == Scenario::kServer) r.arrivals = poisson_arrivals(o.qps, o.duration_s, o.seed);

  std::vector<std::thread> threads;
  {
    r.t0 = Clock::now();
    std::unique_lock<std::mutex> l(r.mu);
    if (o.scenario == Scenario::kServer) {
      ++r.started;  // one thread runs every connection
      threads.emplace_back([&r, cs = std::move(conns)]() mutable { r.event_loop(std::move(cs)); });
    } else {
      for (auto& c : conns) {
        ++r.started;
        threads.emplace_back([&r, c = std::move(c)]() mutable { r.closed_loop(std::move(c)); });
      }
    }
    auto next_report = Clock::now();
    while (r.finished < r.started) {
      r.cv.wait_until(l, next_report + std::chrono::milliseconds(250),
                      [&] { return r.finished == r.started; });
      // The next wait must be in the future with or without a progress callback: a deadline
      // left in the past would make this thread spin (and take CPU from the server it measures).
      if (Clock::now() < next_report + std::chrono::milliseconds(250)) continue;
      next_report = Clock::now();
      if (progress) {
        LoadgenProgress p;
        p.elapsed_s = r.since_start();
        p.sent = r.sent;
        p.ok = r.ok;
        p.rejected = r.rejected;
        p.failed = r.failed;
        p.connections = o.scenario == Scenario::kServer ? r.connections.load() : r.started;
        l.unlock();
        progress(p);
        l.lock();
      }
    }
  }
  for (auto& t : threads) t.join();
  // From the start to the last answer.
  double seconds = 0;
  for (const auto& rec : r.records)
    seconds = std::max(seconds, rec.scheduled_s + rec.latency_ms / 1e3);

  LoadgenResult out;
  out.scenario = o.scenario;
  out.model = o.model;
  out.batch = o.batch;
  out.target_qps = o.scenario == Scenario::kServer ? o.qps : 0;
  out.p99_bound_ms = o.p99_bound_ms;
  out.connections = o.scenario == Scenario::kServer ? r.connections.load() : r.started;
  out.late_dispatches = r.late;
  std::sort(r.records.begin(), r.records.end(), [](const RequestRecord& a, const RequestRecord& b) {
    return a.scheduled_s < b.scheduled_s;
  });
  summarize(r.records, seconds, &out);
  // Server: the arrival rate the schedule produced (its answers may end after the duration).
  if (o.scenario == Scenario::kServer)
    out.achieved_qps = static_cast<double>(out.sent) / o.duration_s;
  out.first_error = r.first_error;
  if (o.keep_records) out.records = std::move(r.records);
  return out;
}

}  // namespace dlsys::serve
