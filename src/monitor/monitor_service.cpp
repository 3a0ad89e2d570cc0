#include "monitor/monitor_service.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <limits>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "api/client.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "data/export.h"
#include "monitor/drift_score.h"
#include "serve/v2_codec.h"
#include "tensor/dtype.h"

namespace dlsys::monitor {

namespace {

constexpr int kLatencyBuckets = 4 * 40;        // quarter octaves of microseconds, up to 2^40 us
constexpr int64_t kReferenceRetryMs = 30'000;  // a failed reference is tried again after this

int latency_bucket(int64_t us) {
  if (us <= 1) return 0;
  return std::min(kLatencyBuckets - 1, static_cast<int>(4 * std::log2(double(us))));
}

// The 99th percentile (ms, the bucket's upper edge) of a latency histogram, and its count.
double p99_ms(const std::vector<int64_t>& buckets, int64_t* count) {
  int64_t n = 0;
  for (int64_t c : buckets) n += c;
  *count = n;
  const int64_t need = static_cast<int64_t>(std::ceil(0.99 * double(n)));
  int64_t seen = 0;
  for (size_t b = 0; b < buckets.size(); ++b) {
    seen += buckets[b];
    if (n > 0 && seen >= need) return std::exp2(double(b + 1) / 4) / 1000;
  }
  return 0;
}

// A sampled tensor read as numbers: rows (dimension 0), elements per row, and element `i` as
// a double. Its datatype is looked up once (not per element, on the monitor's per-sample path).
struct NumericView {
  const char* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0, numel = 0;

  double at(int64_t i) const {
    auto load = [&](auto v) {
      std::memcpy(&v, data + i * sizeof(v), sizeof(v));
      return v;
    };
    switch (dtype) {
      case DType::kF32:
        return load(float{});
      case DType::kF64:
        return load(double{});
      case DType::kF16:
        return f16_to_f32(load(uint16_t{}));
      case DType::kBF16:
        return bf16_to_f32(load(uint16_t{}));
      case DType::kI64:
        return double(load(int64_t{}));
      case DType::kI32:
        return load(int32_t{});
      case DType::kI16:
        return load(int16_t{});
      case DType::kI8:
        return load(int8_t{});
      case DType::kU64:
        return double(load(uint64_t{}));
      case DType::kU32:
        return load(uint32_t{});
      case DType::kU16:
        return load(uint16_t{});
      case DType::kU8:
      case DType::kBool:
        return load(uint8_t{});
      default:
        return NAN;
    }
  }
};

// The view of `t`, or false for a datatype without numbers (BYTES) or bytes that do not match
// its shape.
bool numeric_view(const serve::SampledTensor& t, NumericView* v) {
  const std::optional<DType> dt = serve::v2_dtype(t.datatype);
  if (!dt || t.shape.empty() || t.shape[0] <= 0) return false;
  int64_t n = 1;
  for (size_t i = 1; i < t.shape.size(); ++i) n *= t.shape[i];
  if (n <= 0 || t.data.size() != size_t(t.shape[0] * n) * dtype_size(*dt)) return false;
  *v = NumericView{t.data.data(), *dt, t.shape[0], n};
  return true;
}

// `text` as a Prometheus label value: backslash, double quote and line feed escaped (column
// names come from a dataset's schema, rule names from the configuration).
std::string label_value(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"')
      out += {'\\', c};
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

// A window's start as UTC text, for messages: "2026-12-04T11:04:06Z".
std::string utc(int64_t seconds) {
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string label_text(const json& label) {
  if (label.is_string()) return label.get<std::string>();
  if (label.is_number_integer()) return std::to_string(label.get<int64_t>());
  return label.dump();
}

}  // namespace

MonitorService::MonitorService(meta::MetaStore& store, MonitorServiceOptions options)
    : store_(store), options_(std::move(options)) {
  notifier_ = std::thread([this] { notifier_loop(); });
}

MonitorService::~MonitorService() {
  stop();
  {
    std::lock_guard<std::mutex> l(note_mu_);
    notes_stop_ = true;
  }
  note_cv_.notify_all();
  notifier_.join();
}

int64_t MonitorService::now_ms() const {
  return options_.clock_ms ? options_.clock_ms() : dlsys::now_ms();
}

void MonitorService::start() {
  std::lock_guard<std::mutex> l(run_mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lk(run_mu_);
    while (!stopping_) {
      lk.unlock();
      Status st = tick();
      if (!st.ok()) std::fprintf(stderr, "monitor: %s\n", st.message().c_str());
      lk.lock();
      run_cv_.wait_for(lk, options_.interval, [this] { return stopping_ || woken_; });
      woken_ = false;
    }
  });
}

void MonitorService::stop() {
  {
    std::lock_guard<std::mutex> l(run_mu_);
    stopping_ = true;
  }
  run_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MonitorService::wake() {
  {
    std::lock_guard<std::mutex> l(run_mu_);
    woken_ = true;
  }
  run_cv_.notify_all();
}

Status MonitorService::load_config() {
  DLSYS_ASSIGN_OR_RETURN(auto rec, store_.monitor().config());
  const int64_t version = rec ? rec->version : 0;
  if (version == config_version_) return Status::OK();
  MonitorConfig c;
  if (rec) {
    auto parsed = parse_monitor_config(rec->spec_text, fmt::format("monitor config v{}", version));
    if (!parsed.ok()) return parsed.status();  // checked when stored: only a newer server's
    c = std::move(*parsed);
  }
  config_ = std::move(c);
  config_version_ = version;
  // New settings (windows, thresholds): the deployments start over from their samples.
  deployments_.clear();
  return Status::OK();
}

Result<int64_t> MonitorService::served_version(const meta::Deployment& d) {
  if (!d.ref.empty() && std::all_of(d.ref.begin(), d.ref.end(), ::isdigit))
    return std::stoll(d.ref);
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion v,
                         store_.registry().get_version_by_alias(d.model, d.ref));
  return v.version;
}

Status MonitorService::prepare(Deployment& d, const meta::Deployment& stored,
                               Result<int64_t> served) {
  d.ref.reset();
  d.ref_error.clear();
  d.prediction_column = -1;
  auto fail = [&](const Status& st) {
    d.ref_error = st.message();
    return Status::OK();  // shown by report(); not an error of the pass
  };
  if (!served.ok()) return fail(served.status());
  const int64_t version = *served;
  d.model = stored.model;
  d.version = version;
  if (!options_.model_facts) return fail(Status::FailedPrecondition("no model reader"));
  auto facts = options_.model_facts(stored.model, version);
  if (!facts.ok()) return fail(facts.status());
  d.facts = *facts;
  if (!options_.datasets) return fail(Status::FailedPrecondition("no dataset store"));
  // The reference: configured, or the training split of the version's lineage.
  std::string label = d.settings.reference, split = "train";
  if (label.empty()) {
    auto mv = store_.registry().get_model_version(stored.model, version);
    if (!mv.ok()) return fail(mv.status());
    if (!mv->run_id)
      return fail(Status::NotFound(
          "{}@{} was registered from a file, not a run: no training data in its lineage; set "
          "deployments.{}.reference in the monitoring config",
          stored.model, version, d.name));
    auto g = store_.lineage().graph("run", std::to_string(*mv->run_id), 1);
    if (!g.ok()) return fail(g.status());
    // The version the run trained on: the edge named "train"; else another edge from a version
    // to the run (a run that read a whole version; or one that validated on the same version,
    // whose single edge says "validation"): its train split is read below either way.
    std::string other;
    for (const auto& e : g->edges) {
      if (e.src.kind != "dataset_version" || e.dst.kind != "run" ||
          e.dst.id != std::to_string(*mv->run_id))
        continue;
      if (e.relation == "train")
        label = e.src.id;
      else if (e.relation != "test")
        other = e.src.id;
    }
    if (label.empty()) label = other;
    if (label.empty())
      return fail(Status::NotFound(
          "run {} of {}@{} records no training dataset version; set deployments.{}.reference "
          "in the monitoring config",
          *mv->run_id, stored.model, version, d.name));
  } else if (size_t colon = label.find(':'); colon != std::string::npos) {
    split = label.substr(colon + 1);
    label = label.substr(0, colon);
  }
  auto ref = data::parse_version_ref(label);
  if (!ref.ok()) return fail(ref.status());
  auto v = options_.datasets->resolve(*ref);
  if (!v.ok()) return fail(v.status());
  if (data::split_rows(*v, split) <= 0) split = "";  // a version without that split: all rows
  // The label: the one column that is neither a feature nor internal.
  std::string label_column;
  auto schema = data::Schema::from_json(v->manifest.at("schema"));
  if (!schema.ok()) return fail(schema.status());
  int others = 0;
  for (const auto& c : schema->columns) {
    if (c.name.rfind("__", 0) == 0) continue;
    if (std::find(d.facts.feature_names.begin(), d.facts.feature_names.end(), c.name) !=
        d.facts.feature_names.end())
      continue;
    ++others;
    label_column = c.name;
  }
  if (others != 1 || d.facts.feature_names.empty()) label_column.clear();
  TensorColumns tensors;
  if (d.settings.tensors == "element") tensors.max_elements = std::numeric_limits<int64_t>::max();
  if (d.settings.tensors == "channel") tensors.max_elements = 0;
  auto profile = profile_dataset(*options_.datasets, *v, split, d.facts.feature_names, label_column,
                                 d.facts.class_names, tensors);
  if (!profile.ok()) return fail(profile.status());
  d.ref = std::make_shared<const ReferenceProfile>(std::move(*profile));
  d.prediction_column = d.ref->index_of("__prediction");
  return Status::OK();
}

Status MonitorService::refresh_deployments() {
  DLSYS_ASSIGN_OR_RETURN(std::vector<meta::Deployment> stored, store_.deployments().list());
  std::map<std::string, const meta::Deployment*> sampling;
  for (const auto& s : stored) {
    auto it = s.config.find("sample_rate");
    if (it != s.config.end() && it->is_number() && it->get<double>() > 0) sampling[s.name] = &s;
  }
  for (auto it = deployments_.begin(); it != deployments_.end();)
    it = sampling.count(it->first) ? std::next(it) : deployments_.erase(it);
  for (const auto& [name, s] : sampling) {
    auto it = deployments_.find(name);
    // The served version changed (an alias moved): a new reference, the windows start over.
    Result<int64_t> served = served_version(*s);
    if (it != deployments_.end() && it->second.model == s->model) {
      // An alias that cannot be read now keeps what is monitored.
      const int64_t now_version = served.ok() ? *served : it->second.version;
      // Unchanged: kept. A reference that failed is tried again after a while (a model or
      // dataset that was missing may be there now).
      const Deployment& cur = it->second;
      const bool retry = !cur.ref && now_ms() - cur.ref_failed_ms > kReferenceRetryMs;
      if (now_version == cur.version && !retry) continue;
    }
    Deployment d;
    d.name = name;
    d.settings = config_.settings(name);
    d.change = PageHinkley(d.settings.change);
    DLSYS_RETURN_IF_ERROR(prepare(d, *s, served));
    d.since_ms = now_ms();
    if (!d.ref) d.ref_failed_ms = d.since_ms;
    d.tail = std::make_unique<serve::SampleTail>(serve::sample_dir(options_.sample_root, name));
    for (int64_t len : d.settings.windows_s) d.series.push_back(Series{len, {}});
    deployments_[name] = std::move(d);
  }
  return Status::OK();
}

const MonitorService::InputMap& MonitorService::input_map(Deployment& d,
                                                          const serve::SampledTensor& t,
                                                          int64_t numel) {
  const std::string key = fmt::format("{}/{}", t.name, numel);
  auto it = d.inputs.find(key);
  if (it != d.inputs.end()) return it->second;
  InputMap m;
  m.element_column.assign(static_cast<size_t>(numel), -1);
  const auto& f = d.facts.feature_names;
  const ReferenceProfile& ref = *d.ref;
  if (numel == 1 && ref.index_of(t.name) >= 0) {
    m.element_column[0] = ref.index_of(t.name);  // one column per input, by name
  } else if (!f.empty() && numel == static_cast<int64_t>(f.size())) {
    for (int64_t i = 0; i < numel; ++i) m.element_column[i] = ref.index_of(f[i]);
  } else {
    // A tensor: the reference's columns of the dataset column it was trained on, named after
    // the input itself or (a model with one tensor feature, "x" or "image", served as "input")
    // after that feature.
    for (const std::string& base : {t.name, f.size() == 1 ? f[0] : std::string()}) {
      if (base.empty()) continue;
      for (int64_t i = 0; i < numel; ++i)
        m.element_column[i] = ref.index_of(fmt::format("{}[{}]", base, i));
      // Per channel: as many "<name>[c=K]" columns as the reference has.
      m.channel_column.clear();
      for (int64_t c = 0;; ++c) {
        int k = ref.index_of(fmt::format("{}[c={}]", base, c));
        if (k < 0) break;
        m.channel_column.push_back(k);
      }
      if (!m.channel_column.empty() && numel % int64_t(m.channel_column.size()) == 0)
        m.channels = static_cast<int64_t>(m.channel_column.size());
      const bool found =
          m.channels > 0 || std::any_of(m.element_column.begin(), m.element_column.end(),
                                        [](int k) { return k >= 0; });
      if (found) break;
    }
  }
  return d.inputs.emplace(key, std::move(m)).first->second;
}

MonitorService::Window& MonitorService::window_for(Deployment& d, Series& s, int64_t time_s,
                                                   bool* dropped) {
  const int64_t start = time_s - ((time_s % s.length_s) + s.length_s) % s.length_s;
  *dropped = false;
  for (auto it = s.windows.rbegin(); it != s.windows.rend(); ++it)
    if (it->start_s == start) return *it;
  if (!s.windows.empty() && start < s.windows.front().start_s &&
      static_cast<int64_t>(s.windows.size()) >= d.settings.history) {
    *dropped = true;  // older than anything kept
    return s.windows.front();
  }
  Window w;
  w.start_s = start;
  for (const auto& c : d.ref->columns) w.columns.emplace_back(c.bins.size());
  auto pos = std::find_if(s.windows.begin(), s.windows.end(),
                          [&](const Window& x) { return x.start_s > start; });
  auto inserted = s.windows.insert(pos, std::move(w));
  Window* out = &*inserted;
  const int64_t keep_from = start;
  while (static_cast<int64_t>(s.windows.size()) > d.settings.history) {
    if (s.windows.front().start_s == keep_from) break;
    s.windows.pop_front();
  }
  // pop_front may move nothing else in a deque: `out` stays valid.
  return *out;
}

Status MonitorService::consume(Deployment& d, serve::SampleRecord&& r) {
  const int64_t time_s = r.time_us / 1'000'000;
  ++d.samples;
  // Every row of the request as a dense vector of the reference's columns (NaN: not given):
  // the inputs' elements or channel means, the prediction, then the projection's scores.
  const size_t ncols = d.ref->columns.size();
  std::vector<NumericView> inputs(r.inputs.size());
  std::vector<bool> readable(r.inputs.size());
  int64_t rows = 0;
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    readable[i] = numeric_view(r.inputs[i], &inputs[i]);
    if (readable[i]) rows = std::max(rows, inputs[i].rows);
  }
  if (rows == 0) {
    ++d.skipped_records;  // nothing of it can be read as columns
    return Status::OK();
  }
  std::vector<double> values(static_cast<size_t>(rows) * ncols, NAN);
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    const NumericView& t = inputs[i];
    if (!readable[i] || t.rows != rows) continue;
    const int64_t numel = t.numel;
    const InputMap& m = input_map(d, r.inputs[i], numel);
    for (int64_t row = 0; row < rows; ++row) {
      double* out = &values[row * ncols];
      for (int64_t e = 0; e < numel; ++e)
        if (m.element_column[e] >= 0) out[m.element_column[e]] = t.at(row * numel + e);
      if (m.channels > 0) {
        const int64_t per = numel / m.channels;
        for (int64_t c = 0; c < m.channels; ++c) {
          double sum = 0;
          for (int64_t e = 0; e < per; ++e) sum += t.at(row * numel + c * per + e);
          out[m.channel_column[c]] = sum / double(per);
        }
      }
    }
  }
  // The prediction of each row (first output): a class id or a value. Requests of one row are
  // what labels are joined to (a batch request's id names its first row).
  double predicted = NAN;
  NumericView o;
  if (!r.outputs.empty() && numeric_view(r.outputs[0], &o) && o.rows == rows) {
    const int64_t numel = o.numel;
    for (int64_t row = 0; row < rows; ++row) {
      double v;
      if (d.facts.classifier() && numel > 1) {
        int64_t best = 0;
        for (int64_t e = 1; e < numel; ++e)
          if (o.at(row * numel + e) > o.at(row * numel + best)) best = e;
        v = double(best);
      } else if (d.facts.task == "binary_classification") {
        v = o.at(row * numel) > 0 ? 1 : 0;
      } else {
        v = o.at(row * numel);
      }
      if (row == 0) predicted = v;
      if (d.prediction_column >= 0) values[row * ncols + d.prediction_column] = v;
    }
  }
  const Projection& proj = d.ref->projection;
  if (!proj.empty())
    for (int64_t row = 0; row < rows; ++row)
      proj.project(&values[row * ncols], &values[row * ncols + d.ref->projection_first]);
  for (Series& s : d.series) {
    bool dropped = false;
    Window& w = window_for(d, s, time_s, &dropped);
    if (dropped) continue;
    ++w.samples;
    auto& lat = w.latency[r.version];
    if (lat.empty()) lat.assign(kLatencyBuckets, 0);
    ++lat[latency_bucket(r.latency_us)];
    for (int64_t row = 0; row < rows; ++row) {
      const double* v = &values[row * ncols];
      for (size_t c = 0; c < ncols; ++c)
        if (!std::isnan(v[c])) w.columns[c].add(v[c], d.ref->columns[c].bins);
    }
  }
  if (!r.request_id.empty() && !std::isnan(predicted)) {
    // A repeated request id: the newer prediction is the one a label joins.
    const uint64_t seq = ++d.prediction_seq;
    d.predictions[r.request_id] = Prediction{time_s, r.version, predicted, seq};
    d.prediction_order.push_back(PendingId{time_s, r.request_id, seq});
    while (static_cast<int64_t>(d.prediction_order.size()) > options_.max_pending_predictions)
      drop_oldest_prediction(d);
    if (auto e = d.early_labels.find(r.request_id); e != d.early_labels.end()) {
      json label = std::move(e->second.first);
      const int64_t received = e->second.second;
      d.early_labels.erase(e);
      join_one(d, r.request_id, label, received);
    }
  }
  return Status::OK();
}

void MonitorService::drop_oldest_prediction(Deployment& d) {
  const PendingId& o = d.prediction_order.front();
  auto it = d.predictions.find(o.id);
  if (it != d.predictions.end() && it->second.seq == o.seq) d.predictions.erase(it);
  d.prediction_order.pop_front();
}

void MonitorService::join_one(Deployment& d, const std::string& id, const json& label,
                              int64_t received_ms) {
  auto it = d.predictions.find(id);
  if (it == d.predictions.end()) return;
  const Prediction p = it->second;
  d.predictions.erase(it);
  double truth = NAN;
  if (d.facts.classifier()) {
    const std::string text = label_text(label);
    auto c = std::find(d.facts.class_names.begin(), d.facts.class_names.end(), text);
    if (c != d.facts.class_names.end()) {
      truth = double(c - d.facts.class_names.begin());
    } else if (label.is_number()) {
      truth = label.get<double>();
    } else {
      // A class id sent as text ("3") by a model without class names.
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (!text.empty() && end == text.c_str() + text.size()) truth = v;
    }
  } else if (label.is_number()) {
    truth = label.get<double>();
  }
  if (std::isnan(truth)) {
    ++d.labels_unmatched;
    return;
  }
  ++d.labels_joined;
  const bool correct = truth == p.value;
  const double err = d.facts.classifier() ? (correct ? 0.0 : 1.0) : std::fabs(truth - p.value);
  for (Series& s : d.series) {
    bool dropped = false;
    Window& w = window_for(d, s, p.time_s, &dropped);
    if (dropped) continue;
    Quality& q = w.quality[p.version];
    ++q.n;
    q.correct += correct ? 1 : 0;
    q.abs_error += std::fabs(truth - p.value);
  }
  // Flagged when the label that completed the change came (not now: a restarted monitor reads
  // old labels again).
  if (d.change.add(err)) d.last_change_ms = std::max(d.last_change_ms, received_ms);
}

Status MonitorService::join_labels() {
  const int64_t now = now_ms();
  for (auto& [name, d] : deployments_) {
    // Each deployment reads its labels from its own cursor: one rebuilt (its reference changed)
    // reads again those of its horizon; the others are not read twice.
    const int64_t since = now - d.settings.label_horizon_s * 1000;
    for (;;) {
      DLSYS_ASSIGN_OR_RETURN(auto batch,
                             store_.monitor().feedback_after(name, d.feedback_cursor, since, 5000));
      for (const auto& f : batch) {
        d.feedback_cursor = f.id;
        if (d.ref && d.predictions.count(f.request_id))
          join_one(d, f.request_id, f.label, f.received_at);
        else
          d.early_labels[f.request_id] = {f.label, f.received_at};  // its sample may come later
      }
      if (batch.size() < 5000) break;
    }
    // Labels whose prediction never came within the horizon are unmatched; past the cap, the
    // oldest go first.
    for (auto it = d.early_labels.begin(); it != d.early_labels.end();) {
      if (now - it->second.second > d.settings.label_horizon_s * 1000) {
        ++d.labels_unmatched;
        it = d.early_labels.erase(it);
      } else {
        ++it;
      }
    }
    while (d.early_labels.size() > size_t(options_.max_pending_predictions)) {
      auto oldest = d.early_labels.begin();
      for (auto it = d.early_labels.begin(); it != d.early_labels.end(); ++it)
        if (it->second.second < oldest->second.second) oldest = it;
      ++d.labels_unmatched;
      d.early_labels.erase(oldest);
    }
    const int64_t oldest = now / 1000 - d.settings.label_horizon_s;
    while (!d.prediction_order.empty() && d.prediction_order.front().time_s < oldest)
      drop_oldest_prediction(d);
  }
  return Status::OK();
}

MonitorService::Quality MonitorService::total_quality(const Window& w) {
  Quality q;
  for (const auto& [v, x] : w.quality) {
    q.n += x.n;
    q.correct += x.correct;
    q.abs_error += x.abs_error;
  }
  return q;
}

int64_t MonitorService::judged_start(int64_t now_ms, int64_t len) const {
  const int64_t judged = (now_ms - options_.grace.count()) / 1000;
  return judged - ((judged % len) + len) % len - len;
}

const MonitorService::Window* MonitorService::judged_window(const Series& s, int64_t now_ms) const {
  const int64_t start = judged_start(now_ms, s.length_s);
  for (const Window& x : s.windows)
    if (x.start_s == start) return &x;
  return nullptr;
}

const MonitorService::Series* MonitorService::series_of(const Deployment& d,
                                                        int64_t window_s) const {
  if (d.series.empty()) return nullptr;
  if (window_s <= 0) return &d.series.front();
  for (const Series& s : d.series)
    if (s.length_s == window_s) return &s;
  return nullptr;
}

json MonitorService::window_drift(const Deployment& d, const Window& w) const {
  const auto& cols = d.ref->columns;
  const double alpha = d.settings.drift.false_alarm_rate / double(std::max<size_t>(1, cols.size()));
  json out = json::array();
  int64_t drifted = 0, projected = 0;
  for (size_t c = 0; c < cols.size(); ++c) {
    DriftScore s = score_drift(cols[c].counts, w.columns[c].bins, d.settings.drift, alpha);
    if (s.drift && cols[c].name.rfind("__pc", 0) == 0)
      ++projected;
    else if (s.drift && cols[c].name != "__prediction")
      ++drifted;
    out.push_back({{"column", cols[c].name},
                   {"count", s.count},
                   {"psi", s.psi},
                   {"ks", s.ks},
                   {"psi_limit", s.psi_limit},
                   {"ks_limit", s.ks_limit},
                   {"decided", s.decided},
                   {"drift", s.drift},
                   {"mean", w.columns[c].mean()},
                   {"reference_mean", cols[c].mean},
                   {"nulls", w.columns[c].nulls},
                   {"out_of_range", w.columns[c].out_of_range()}});
  }
  return {{"start", w.start_s},
          {"samples", w.samples},
          {"drifted", drifted},
          {"multivariate_drifted", projected},
          {"columns", out}};
}

bool MonitorService::signal_value(const Deployment& d, const AlertRule& rule, double* value,
                                  std::string* detail) const {
  const int64_t now = now_ms();
  const Series* s = series_of(d, rule.window_s);
  if (!s) return false;
  const int64_t len = s->length_s;
  if (rule.signal == "error_rate" || rule.signal == "rejection_rate") {
    // Per model version served (primary, canary, shadow): the worst over the window.
    if (d.counts.size() < 2) return false;
    const auto& [last_ms, last] = d.counts.back();
    const bool errors = rule.signal == "error_rate";
    bool any = false;
    for (const auto& [version, now_counts] : last) {
      // The oldest snapshot within the window that has this version.
      const RequestCounts* first = nullptr;
      for (const auto& [ms, snap] : d.counts) {
        auto it = snap.find(version);
        if (it == snap.end()) continue;
        if (ms <= last_ms - len * 1000 || !first) first = &it->second;
      }
      if (!first) continue;
      const int64_t req = now_counts.requests - first->requests;
      const int64_t bad =
          errors ? now_counts.failed - first->failed : now_counts.rejected - first->rejected;
      if (req <= 0 || bad < 0) continue;  // no traffic, or its counters restarted
      const double rate = double(bad) / double(req);
      if (!any || rate > *value) {
        *value = rate;
        *detail = fmt::format("{} of {} requests to version {} {} in the last {} s", bad, req,
                              version, errors ? "failed" : "were refused", len);
      }
      any = true;
    }
    return any;
  }
  if (rule.signal == "accuracy_change") {
    *value = d.last_change_ms > 0 && now - d.last_change_ms <= len * 1000 ? 1 : 0;
    *detail = *value > 0 ? "Page-Hinkley flagged a rise of the error rate of the joined labels"
                         : "no change flagged";
    return true;
  }
  if (rule.signal == "accuracy" || rule.signal == "mae") {
    for (auto it = s->windows.rbegin(); it != s->windows.rend(); ++it) {
      const Quality q = total_quality(*it);
      if (q.n < d.settings.change.min_count) continue;
      *value =
          rule.signal == "accuracy" ? double(q.correct) / double(q.n) : q.abs_error / double(q.n);
      *detail = fmt::format("{} {:.4f} over {} labelled predictions of the window at {}",
                            rule.signal, *value, q.n, utc(it->start_s));
      return true;
    }
    return false;
  }
  // The newest ended window.
  const int64_t start = judged_start(now, len);
  const Window* w = judged_window(*s, now);
  if (!w && rule.signal == "samples" && d.since_ms > 0 && now - d.since_ms > 2 * len * 1000) {
    // No request at all in a window of a deployment followed for longer than two: 0 samples
    // (a "samples below" rule is how silence alerts).
    *value = 0;
    *detail = fmt::format("no request sampled in the window at {}", utc(start));
    return true;
  }
  if (!w) return false;
  if (rule.signal == "samples") {
    *value = double(w->samples);
    *detail = fmt::format("{} requests sampled", w->samples);
    return true;
  }
  if (rule.signal == "latency_p99_ms") {
    // Per model version (a slow canary is not hidden by a fast primary): the slowest.
    bool any = false;
    for (const auto& [version, lat] : w->latency) {
      int64_t n = 0;
      const double p99 = p99_ms(lat, &n);
      if (n == 0) continue;
      if (!any || p99 > *value) {
        *value = p99;
        *detail = fmt::format("p99 latency {:.2f} ms of version {} over {} sampled requests", p99,
                              version, n);
      }
      any = true;
    }
    return any;
  }
  // drift
  const auto& cols = d.ref->columns;
  const double alpha = d.settings.drift.false_alarm_rate / double(std::max<size_t>(1, cols.size()));
  int64_t drifted = 0;
  bool decided = false;
  std::string names;
  const bool multi = rule.signal == "multivariate_drift";
  for (size_t c = 0; c < cols.size(); ++c) {
    const bool pc = cols[c].name.rfind("__pc", 0) == 0;
    if (multi != pc) continue;
    if (!multi && rule.column != "any" && cols[c].name != rule.column) continue;
    if (!multi && rule.column == "any" && cols[c].name == "__prediction") continue;
    DriftScore sc = score_drift(cols[c].counts, w->columns[c].bins, d.settings.drift, alpha);
    decided |= sc.decided;
    if (sc.drift) {
      ++drifted;
      if (drifted <= 5) names += (names.empty() ? "" : ", ") + cols[c].name;
    }
  }
  if (!decided) return false;
  *value = double(drifted);
  const char* what = multi ? "projection component(s)" : "column(s)";
  *detail = drifted == 0 ? fmt::format("no {} drifted in the window at {}", what, utc(start))
                         : fmt::format("{} {} drifted in the window at {}: {}{}", drifted, what,
                                       utc(start), names, drifted > 5 ? ", ..." : "");
  return true;
}

Status MonitorService::evaluate_rules() {
  if (!episodes_loaded_) {
    for (const char* state : {"PENDING", "FIRING"}) {
      DLSYS_ASSIGN_OR_RETURN(auto open, store_.monitor().list_alerts(state, "", 10000));
      for (auto& a : open) episodes_[{a.rule, a.deployment}] = Episode{a};
    }
    episodes_loaded_ = true;
  }
  const int64_t now = now_ms();
  Status first = Status::OK();
  std::set<std::pair<std::string, std::string>> seen;
  for (const AlertRule& rule : config_.rules) {
    for (auto& [name, d] : deployments_) {
      if (rule.deployment != "*" && rule.deployment != name) continue;
      seen.insert({rule.name, name});
      double value = 0;
      std::string detail;
      const bool has = d.ref && signal_value(d, rule, &value, &detail);
      const bool holds = has && (rule.above ? value > rule.threshold : value < rule.threshold);
      auto key = std::make_pair(rule.name, name);
      auto it = episodes_.find(key);
      Status st = Status::OK();
      if (holds && it == episodes_.end()) {
        meta::AlertRecord a;
        a.rule = rule.name;
        a.deployment = name;
        a.severity = rule.severity;
        a.state = "PENDING";
        a.value = value;
        a.message = detail;
        a.started_at = now;
        auto ins = store_.monitor().insert_alert(a);
        if (!ins.ok()) {
          st = ins.status();
        } else {
          it = episodes_.emplace(key, Episode{*ins}).first;
        }
      }
      if (st.ok() && it != episodes_.end()) {
        meta::AlertRecord& a = it->second.record;
        if (holds) {
          a.value = value;
          a.message = detail;
          if (a.state == "PENDING" && now - a.started_at >= rule.for_s * 1000) {
            a.state = "FIRING";
            a.fired_at = now;
            st = store_.monitor().update_alert(a);
            if (st.ok()) notify(rule, a);
          }
        } else if (a.state == "PENDING") {
          st = store_.monitor().delete_alert(a.id);
          if (st.ok()) episodes_.erase(it);
        } else {
          a.state = "RESOLVED";
          a.resolved_at = now;
          a.message = has ? detail : "no data for the signal";
          if (has) a.value = value;
          st = store_.monitor().update_alert(a);
          if (st.ok()) {
            notify(rule, a);
            episodes_.erase(it);
          }
        }
      }
      if (!st.ok() && first.ok()) first = st.with_context("alert rule " + rule.name);
    }
  }
  // Episodes of rules (or deployments) that are gone resolve.
  for (auto it = episodes_.begin(); it != episodes_.end();) {
    if (seen.count(it->first)) {
      ++it;
      continue;
    }
    meta::AlertRecord a = it->second.record;
    a.state = "RESOLVED";
    a.resolved_at = now;
    a.message = "its rule or deployment is no longer monitored";
    Status st = store_.monitor().update_alert(a);
    if (!st.ok()) {
      if (first.ok()) first = st;
      ++it;
      continue;
    }
    it = episodes_.erase(it);
  }
  return first;
}

void MonitorService::notify(const AlertRule& rule, const meta::AlertRecord& a) {
  json body = a;
  body["alert"] = a.rule;
  if (rule.log)
    std::fprintf(stderr, "alert %s: %s on deployment %s (%s): %s\n", a.state.c_str(),
                 a.rule.c_str(), a.deployment.c_str(), a.severity.c_str(), a.message.c_str());
  if (a.state == "FIRING" && !rule.pipeline.empty() && options_.fire_pipeline) {
    Status st = options_.fire_pipeline(rule.pipeline, a.rule, fmt::format("alert-{}", a.id));
    if (!st.ok())
      std::fprintf(stderr, "alert %s: starting pipeline %s: %s\n", a.rule.c_str(),
                   rule.pipeline.c_str(), st.message().c_str());
  }
  if (!rule.webhook.empty()) {
    std::lock_guard<std::mutex> l(note_mu_);
    notes_.push_back(Webhook{rule.webhook, std::move(body)});
    note_cv_.notify_all();
  }
}

void MonitorService::notifier_loop() {
  std::unique_lock<std::mutex> l(note_mu_);
  for (;;) {
    note_cv_.wait(l, [this] { return notes_stop_ || !notes_.empty(); });
    if (notes_.empty()) return;  // stopping with nothing left
    Webhook w = std::move(notes_.front());
    notes_.pop_front();
    ++notes_busy_;
    const bool stopping = notes_stop_;
    l.unlock();
    // Checked when the configuration was stored.
    auto url = parse_webhook_url(w.url, "webhook");
    const std::string host = url.ok() ? url->host : "";
    const std::string path = url.ok() ? url->path : "/";
    const int port = url.ok() ? url->port : 0;
    std::string err;
    const int attempts = stopping ? 1 : static_cast<int>(options_.webhook_attempts);
    for (int i = 0; i < attempts; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(250 << i));
      auto conn = api::HttpConnection::open(host, port);
      if (!conn.ok()) {
        err = conn.status().message();
        continue;
      }
      (*conn)->set_io_timeout(options_.webhook_timeout);
      auto r =
          (*conn)->request("POST", path, w.body.dump(), {{"content-type", "application/json"}});
      if (r.ok() && r->status >= 200 && r->status < 300) {
        err.clear();
        break;
      }
      err = r.ok() ? fmt::format("HTTP {}", r->status) : r.status().message();
    }
    if (!err.empty())
      std::fprintf(stderr, "alert %s: webhook %s failed after %d attempt(s): %s\n",
                   w.body.value("alert", "").c_str(), w.url.c_str(), attempts, err.c_str());
    l.lock();
    --notes_busy_;
    note_done_cv_.notify_all();
  }
}

void MonitorService::flush_notifications() {
  std::unique_lock<std::mutex> l(note_mu_);
  note_done_cv_.wait_for(l, std::chrono::seconds(60),
                         [this] { return notes_.empty() && notes_busy_ == 0; });
}

Status MonitorService::tick() {
  std::lock_guard<std::mutex> l(mu_);
  last_pass_ms_ = now_ms();
  Status first = load_config();
  if (!first.ok()) return first;
  first = refresh_deployments();
  for (auto& [name, d] : deployments_) {
    if (options_.request_counts) {
      d.counts.emplace_back(now_ms(), options_.request_counts(name));
      const int64_t longest = d.settings.windows_s.back() * 1000;
      while (d.counts.size() > 2 && d.counts[1].first < d.counts.back().first - longest)
        d.counts.pop_front();
    }
    if (!d.ref || !d.tail) continue;
    Deployment& dep = d;  // a lambda may not capture a structured binding (clang)
    auto n = dep.tail->poll([&](serve::SampleRecord&& r) { return consume(dep, std::move(r)); });
    if (!n.ok() && first.ok()) first = n.status().with_context("deployment " + name);
  }
  Status st = join_labels();
  if (!st.ok() && first.ok()) first = st;
  st = evaluate_rules();
  if (!st.ok() && first.ok()) first = st;
  std::string text = render_metrics();
  {
    std::lock_guard<std::mutex> m(metrics_mu_);
    metrics_ = std::move(text);
  }
  return first;
}

Result<json> MonitorService::report(const std::string& deployment, int64_t window_s,
                                    int64_t history) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = deployments_.find(deployment);
  if (it == deployments_.end())
    return Status::NotFound(
        "deployment '{}' is not monitored: monitoring follows deployments whose config sets "
        "sample_rate above 0 (`dlsys deploy update {} --sample-rate 0.1`)",
        deployment, deployment);
  const Deployment& d = it->second;
  json out = {
      {"deployment", d.name}, {"model", d.model}, {"version", d.version}, {"samples", d.samples}};
  if (!d.ref) {
    out["error"] = d.ref_error;
    return out;
  }
  out["reference"] = {
      {"source", d.ref->source}, {"rows", d.ref->rows}, {"columns", d.ref->columns.size()}};
  const Series* s = series_of(d, window_s);
  if (!s)
    return Status::Invalid("deployment '{}' has no {} s window; its windows are {} s", deployment,
                           window_s, fmt::join(d.settings.windows_s, ", "));
  out["window_s"] = s->length_s;
  out["windows_s"] = d.settings.windows_s;
  json windows = json::array(), quality = json::array();
  const size_t from = s->windows.size() > size_t(history) ? s->windows.size() - history : 0;
  // Judged: ended before the last pass (less the grace for samples still being written), as
  // the rules see it; the newer windows are still filling.
  const int64_t judged_s = (last_pass_ms_ - options_.grace.count()) / 1000;
  for (size_t i = from; i < s->windows.size(); ++i) {
    const Window& w = s->windows[i];
    windows.push_back(window_drift(d, w));
    windows.back()["judged"] = w.start_s + s->length_s <= judged_s;
    json lat = json::object();
    for (const auto& [version, buckets] : w.latency) {
      int64_t n = 0;
      const double p99 = p99_ms(buckets, &n);
      lat[std::to_string(version)] = {{"samples", n}, {"p99_ms", p99}};
    }
    windows.back()["latency"] = lat;
    json q = {{"start", w.start_s}};
    const Quality all = total_quality(w);
    json by_version = json::object();
    for (const auto& [v, x] : w.quality) {
      by_version[std::to_string(v)] = {
          {"labels", x.n},
          {d.facts.classifier() ? "accuracy" : "mae",
           d.facts.classifier() ? double(x.correct) / double(x.n) : x.abs_error / double(x.n)}};
    }
    q["labels"] = all.n;
    if (all.n > 0)
      q[d.facts.classifier() ? "accuracy" : "mae"] = d.facts.classifier()
                                                         ? double(all.correct) / double(all.n)
                                                         : all.abs_error / double(all.n);
    q["by_version"] = by_version;
    quality.push_back(q);
  }
  out["windows"] = windows;
  out["quality"] = quality;
  out["labels"] = {{"joined", d.labels_joined},
                   {"unmatched", d.labels_unmatched},
                   {"waiting_for_sample", d.early_labels.size()},
                   {"predictions_waiting", d.predictions.size()}};
  out["change"] = {{"statistic", d.change.statistic()},
                   {"count", d.change.count()},
                   {"last_flag_ms", d.last_change_ms}};
  json alerts = json::array();
  for (const auto& [k, e] : episodes_)
    if (k.second == deployment) alerts.push_back(e.record);
  out["alerts"] = alerts;
  return out;
}

json MonitorService::overview() {
  std::lock_guard<std::mutex> l(mu_);
  json out = json::array();
  for (const auto& [name, d] : deployments_) {
    json j = {{"deployment", name},
              {"model", d.model},
              {"version", d.version},
              {"samples", d.samples},
              {"labels", d.labels_joined}};
    if (!d.ref) j["error"] = d.ref_error;
    if (d.ref && !d.series.empty() && !d.series.front().windows.empty()) {
      const Series& s = d.series.front();
      // The window the rules judge now.
      if (const Window* it = judged_window(s, now_ms()); it) {
        json w = window_drift(d, *it);
        j["window"] = {{"start", it->start_s},
                       {"length_s", s.length_s},
                       {"samples", it->samples},
                       {"drifted", w["drifted"]}};
      }
    }
    int64_t firing = 0;
    for (const auto& [k, e] : episodes_)
      if (k.second == name && e.record.state == "FIRING") ++firing;
    j["alerts_firing"] = firing;
    out.push_back(j);
  }
  return out;
}

std::string MonitorService::render_metrics() const {
  std::string out;
  out +=
      "# HELP dlsys_monitor_samples_total Sampled requests the monitor has read.\n"
      "# TYPE dlsys_monitor_samples_total counter\n";
  for (const auto& [name, d] : deployments_)
    out += fmt::format("dlsys_monitor_samples_total{{deployment=\"{}\"}} {}\n", name, d.samples);
  out +=
      "# HELP dlsys_monitor_labels_total Delayed labels by outcome of the join.\n"
      "# TYPE dlsys_monitor_labels_total counter\n";
  for (const auto& [name, d] : deployments_) {
    out += fmt::format("dlsys_monitor_labels_total{{deployment=\"{}\",outcome=\"joined\"}} {}\n",
                       name, d.labels_joined);
    out += fmt::format("dlsys_monitor_labels_total{{deployment=\"{}\",outcome=\"unmatched\"}} {}\n",
                       name, d.labels_unmatched);
  }
  std::string drifted, multi, psi, accuracy;
  for (const auto& [name, d] : deployments_) {
    if (!d.ref) continue;
    for (const Series& s : d.series) {
      const Window* w = judged_window(s, now_ms());  // as the rules judge: no stale gauge
      if (!w) continue;
      json j = window_drift(d, *w);
      drifted +=
          fmt::format("dlsys_monitor_drifted_columns{{deployment=\"{}\",window=\"{}s\"}} {}\n",
                      name, s.length_s, j["drifted"].get<int64_t>());
      if (!d.ref->projection.empty())
        multi += fmt::format(
            "dlsys_monitor_multivariate_drifted{{deployment=\"{}\",window=\"{}s\"}} {}\n", name,
            s.length_s, j["multivariate_drifted"].get<int64_t>());
      for (const auto& c : j["columns"])
        if (c["decided"].get<bool>())
          psi += fmt::format(
              "dlsys_monitor_column_psi{{deployment=\"{}\",column=\"{}\",window=\"{}s\"}} {}\n",
              name, label_value(c["column"].get<std::string>()), s.length_s,
              c["psi"].get<double>());
      for (auto it = s.windows.rbegin(); it != s.windows.rend(); ++it) {
        const Quality q = total_quality(*it);
        if (q.n < d.settings.change.min_count) continue;
        accuracy += fmt::format(
            "dlsys_monitor_{}{{deployment=\"{}\",window=\"{}s\"}} {}\n",
            d.facts.classifier() ? "accuracy" : "mae", name, s.length_s,
            d.facts.classifier() ? double(q.correct) / double(q.n) : q.abs_error / double(q.n));
        break;
      }
    }
  }
  out +=
      "# HELP dlsys_monitor_drifted_columns Columns drifted in the newest ended window.\n"
      "# TYPE dlsys_monitor_drifted_columns gauge\n" +
      drifted;
  out +=
      "# HELP dlsys_monitor_multivariate_drifted Components of the reference's low-rank "
      "projection drifted in the newest ended window.\n"
      "# TYPE dlsys_monitor_multivariate_drifted gauge\n" +
      multi;
  out +=
      "# HELP dlsys_monitor_column_psi PSI of a column against its reference in the newest "
      "ended window.\n# TYPE dlsys_monitor_column_psi gauge\n" +
      psi;
  out +=
      "# HELP dlsys_monitor_accuracy Live accuracy (joined labels) of the newest window with "
      "enough labels.\n# TYPE dlsys_monitor_accuracy gauge\n"
      "# HELP dlsys_monitor_mae Live mean absolute error (joined labels).\n"
      "# TYPE dlsys_monitor_mae gauge\n" +
      accuracy;
  out +=
      "# HELP dlsys_alerts_firing Alerts firing, by rule.\n"
      "# TYPE dlsys_alerts_firing gauge\n";
  for (const auto& [k, e] : episodes_)
    out += fmt::format("dlsys_alerts_firing{{rule=\"{}\",deployment=\"{}\",severity=\"{}\"}} {}\n",
                       label_value(k.first), k.second, e.record.severity,
                       e.record.state == "FIRING" ? 1 : 0);
  return out;
}

std::string MonitorService::metrics_text() {
  // Not mu_: a pass that builds a reference or reads a long log must not stall /metrics.
  std::lock_guard<std::mutex> l(metrics_mu_);
  return metrics_;
}

}  // namespace dlsys::monitor
