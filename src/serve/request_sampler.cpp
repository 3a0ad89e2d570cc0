#include "serve/request_sampler.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/crc32c.h"
#include "core/file_util.h"

namespace dlsys::serve {

static_assert(std::endian::native == std::endian::little,
              "the sample log stores raw little-endian tensor bytes");

namespace {

// File layout (docs/formats.md, "Request samples").
constexpr char kFileMagic[8] = {'D', 'L', 'S', 'Y', 'S', 'S', 'M', 'P'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint32_t kRecordMagic = 0x52534C44;  // "DLSR" in the file
constexpr size_t kFrameHeader = 16;            // magic, length, payload crc, header crc
constexpr const char* kSuffix = ".dlsys-samples";
constexpr uint32_t kMaxJsonHeader = 1 << 16;

template <typename T>
void put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}
void put_str(std::string* out, std::string_view s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}
void put_tensor(std::string* out, const std::string& name, const Tensor& t) {
  put_str(out, name);
  put_str(out, v2_datatype(t.dtype()));
  put<uint32_t>(out, static_cast<uint32_t>(t.rank()));
  for (int64_t d : t.shape()) put<int64_t>(out, d);
  put<uint64_t>(out, t.nbytes());
  if (t.nbytes() > 0) out->append(static_cast<const char*>(t.data()), t.nbytes());
}

// A whole frame: header (magic, payload length, payload crc, header crc) and payload.
std::string frame(std::string_view payload) {
  std::string f;
  f.reserve(kFrameHeader + payload.size());
  put<uint32_t>(&f, kRecordMagic);
  put<uint32_t>(&f, static_cast<uint32_t>(payload.size()));
  put<uint32_t>(&f, crc32c(payload.data(), payload.size()));
  put<uint32_t>(&f, crc32c(f.data(), 12));
  f.append(payload);
  return f;
}

bool valid_deployment_name(const std::string& s) {
  if (s.empty() || s.size() > 128 || s == "." || s == "..") return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError("{}", std::strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

int64_t unix_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool sample_now(double rate) {
  if (rate <= 0) return false;
  if (rate >= 1) return true;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < rate;
}

}  // namespace

std::string sample_dir(const std::string& root, const std::string& deployment) {
  return (std::filesystem::path(root) / deployment).string();
}

// ---- Writing ----

RequestSampler::RequestSampler(RequestSamplerOptions options) : opts_(std::move(options)) {
  writer_ = std::thread([this] { writer_loop(); });
}

RequestSampler::~RequestSampler() {
  stop();
}

std::shared_ptr<PendingSample> RequestSampler::begin(double rate, const std::string& deployment,
                                                     V2InferRequest& request,
                                                     const std::vector<TensorSpec>& outputs) {
  if (!sample_now(rate)) return nullptr;
  if (request.id.empty()) request.id = random_hex(16);
  auto s = std::make_shared<PendingSample>();
  s->request_id = request.id;
  s->deployment = deployment;
  for (const auto& in : request.inputs) {
    s->input_names.push_back(in.name);
    s->inputs.push_back(in.tensor);  // shares the request's storage
  }
  for (const auto& o : outputs) s->output_names.push_back(o.name);
  return s;
}

void RequestSampler::finish(std::shared_ptr<PendingSample> sample, const std::string& model,
                            int64_t version, int64_t latency_us,
                            const std::vector<Tensor>& outputs) {
  if (!sample) return;
  size_t bytes = sample->request_id.size() + model.size() + 256;
  for (const auto& t : sample->inputs) bytes += t.nbytes();
  for (const auto& t : outputs) bytes += t.nbytes();
  std::lock_guard<std::mutex> lk(mu_);
  Counts& c = counts_[sample->deployment];
  if (stopping_) {
    ++c.dropped_shutdown;
    return;
  }
  if (queue_.size() >= opts_.max_queue || queued_bytes_ + bytes > opts_.max_queue_bytes) {
    ++c.dropped_queue_full;
    return;
  }
  queue_.push_back(Item{unix_us(), latency_us, version, model, std::move(sample), outputs, bytes});
  queued_bytes_ += bytes;
  ++submitted_;
  work_cv_.notify_one();
}

void RequestSampler::flush() {
  std::unique_lock<std::mutex> lk(mu_);
  const uint64_t target = submitted_;
  done_cv_.wait(lk, [&] { return finished_ >= target; });
}

void RequestSampler::stop() {
  std::lock_guard<std::mutex> stop_lk(stop_mu_);
  if (stopped_) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  stopped_ = true;
}

RequestSampler::Counts RequestSampler::counts(const std::string& deployment) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = counts_.find(deployment);
  return it == counts_.end() ? Counts{} : it->second;
}

std::string RequestSampler::metrics_text(const std::vector<std::string>& deployments) const {
  std::string out =
      "# HELP dlsys_serve_samples_written_total Sampled requests written to the deployment's "
      "sample log.\n# TYPE dlsys_serve_samples_written_total counter\n";
  std::vector<std::pair<std::string, Counts>> rows;
  for (const auto& d : deployments) rows.emplace_back(d, counts(d));
  for (const auto& [d, c] : rows)
    out += fmt::format("dlsys_serve_samples_written_total{{deployment=\"{}\"}} {}\n", d, c.written);
  out +=
      "# HELP dlsys_serve_samples_dropped_total Sampled requests not written: the writer's queue "
      "was full, a write failed, or the server was stopping.\n"
      "# TYPE dlsys_serve_samples_dropped_total counter\n";
  for (const auto& [d, c] : rows) {
    std::pair<const char*, int64_t> reasons[] = {{"queue_full", c.dropped_queue_full},
                                                 {"write_error", c.dropped_write_error},
                                                 {"shutdown", c.dropped_shutdown}};
    for (const auto& [r, n] : reasons)
      out += fmt::format(
          "dlsys_serve_samples_dropped_total{{deployment=\"{}\",reason=\"{}\"}} {}\n", d, r, n);
  }
  return out;
}

Status RequestSampler::open_segment(const std::string& deployment, Segment* seg) {
  if (!valid_deployment_name(deployment))
    return Status::Invalid("deployment name '{}' cannot name a sample directory",
                           deployment.substr(0, 64));
  const std::string dir = sample_dir(opts_.dir, deployment);
  DLSYS_RETURN_IF_ERROR(make_dirs(dir));
  const int64_t created = unix_us();
  const std::string path = fmt::format("{}/{:016d}-{}{}", dir, created, random_hex(4), kSuffix);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError("cannot create {}: {}", path, std::strerror(errno));
  const std::string meta = nlohmann::json{
      {"format", "dlsys.samples/1"},
      {"deployment", deployment},
      {"created_us", created}}.dump();
  std::string head(kFileMagic, sizeof(kFileMagic));
  put<uint32_t>(&head, kFormatVersion);
  put<uint32_t>(&head, static_cast<uint32_t>(meta.size()));
  head += meta;
  put<uint32_t>(&head, crc32c(head.data(), head.size()));
  Status st = write_all(fd, head);
  if (st.ok() && ::fdatasync(fd) != 0) st = Status::IOError("{}", std::strerror(errno));
  if (!st.ok()) {
    ::close(fd);
    return Status::IOError("cannot write {}: {}", path, st.message());
  }
  // The new name must survive a crash too.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  seg->fd = fd;
  seg->path = path;
  seg->bytes = static_cast<int64_t>(head.size());
  seg->opened = std::chrono::steady_clock::now();
  seg->dirty = false;
  return Status::OK();
}

void RequestSampler::close_segment(Segment* seg) {
  if (seg->fd < 0) return;
  (void)::fdatasync(seg->fd);
  ::close(seg->fd);
  seg->fd = -1;
}

Status RequestSampler::append(const std::string& deployment, const std::string& record) {
  Segment& seg = segments_[deployment];
  if (seg.fd >= 0 && (seg.bytes >= opts_.rotate_bytes ||
                      std::chrono::steady_clock::now() - seg.opened >= opts_.rotate_after))
    close_segment(&seg);
  if (seg.fd < 0) DLSYS_RETURN_IF_ERROR(open_segment(deployment, &seg));
  Status st = write_all(seg.fd, record);
  if (!st.ok()) {
    // The file may end in part of this record: a torn tail the reader skips. Nothing more is
    // appended to it; the next record starts a new segment.
    close_segment(&seg);
    return Status::IOError("cannot append to {}: {}", seg.path, st.message());
  }
  seg.bytes += static_cast<int64_t>(record.size());
  seg.dirty = true;
  return Status::OK();
}

void RequestSampler::writer_loop() {
  using SteadyClock = std::chrono::steady_clock;
  SteadyClock::time_point last_sync = SteadyClock::now();
  auto sync_dirty = [&] {
    for (auto& [name, seg] : segments_)
      if (seg.fd >= 0 && seg.dirty) {
        (void)::fdatasync(seg.fd);
        seg.dirty = false;
      }
    last_sync = SteadyClock::now();
  };
  std::string last_error;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    if (queue_.empty()) {
      if (stopping_) break;
      bool dirty = false;
      for (const auto& [name, seg] : segments_) dirty = dirty || seg.dirty;
      if (dirty)
        work_cv_.wait_until(lk, last_sync + opts_.sync_every);
      else
        work_cv_.wait(lk);
      if (queue_.empty()) {
        if (dirty && SteadyClock::now() >= last_sync + opts_.sync_every) {
          lk.unlock();
          sync_dirty();
          lk.lock();
        }
        continue;
      }
    }
    std::deque<Item> batch;
    batch.swap(queue_);
    lk.unlock();
    std::vector<std::pair<std::string, bool>> outcomes;  // deployment, written
    size_t bytes = 0;
    std::string payload;
    for (Item& it : batch) {
      bytes += it.bytes;
      const PendingSample& s = *it.sample;
      payload.clear();
      put<int64_t>(&payload, it.time_us);
      put<int64_t>(&payload, it.latency_us);
      put<int64_t>(&payload, it.version);
      put_str(&payload, s.request_id);
      put_str(&payload, s.deployment);
      put_str(&payload, it.model);
      put<uint32_t>(&payload, static_cast<uint32_t>(s.inputs.size()));
      for (size_t i = 0; i < s.inputs.size(); ++i)
        put_tensor(&payload, i < s.input_names.size() ? s.input_names[i] : "", s.inputs[i]);
      put<uint32_t>(&payload, static_cast<uint32_t>(it.outputs.size()));
      for (size_t i = 0; i < it.outputs.size(); ++i)
        put_tensor(&payload, i < s.output_names.size() ? s.output_names[i] : "", it.outputs[i]);
      Status st = payload.size() > UINT32_MAX
                      ? Status::Invalid("a sample of {} bytes is over the 4 GiB record limit",
                                        payload.size())
                      : append(s.deployment, frame(payload));
      if (!st.ok() && st.message() != last_error) {
        last_error = st.message();
        std::fprintf(stderr, "serve: request sampling for '%s' dropped a sample: %s\n",
                     s.deployment.c_str(), st.message().c_str());
      }
      outcomes.emplace_back(s.deployment, st.ok());
    }
    if (SteadyClock::now() >= last_sync + opts_.sync_every) sync_dirty();
    batch.clear();  // release the tensors before the bytes are counted free
    lk.lock();
    queued_bytes_ -= std::min(queued_bytes_, bytes);
    for (const auto& [d, ok] : outcomes)
      ++(ok ? counts_[d].written : counts_[d].dropped_write_error);
    finished_ += outcomes.size();
    done_cv_.notify_all();
  }
  lk.unlock();
  for (auto& [name, seg] : segments_) close_segment(&seg);
}

// ---- Reading ----

namespace {

size_t element_size(const std::string& datatype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1},   {"UINT8", 1}, {"INT8", 1},   {"UINT16", 2}, {"INT16", 2},
      {"FP16", 2},   {"BF16", 2},  {"UINT32", 4}, {"INT32", 4},  {"FP32", 4},
      {"UINT64", 8}, {"INT64", 8}, {"FP64", 8}};
  auto it = sizes.find(datatype);
  return it == sizes.end() ? 0 : it->second;
}

// Reads fields from one record's payload; every read is bounds-checked.
class Cursor {
 public:
  explicit Cursor(std::string_view b) : b_(b) {}
  template <typename T>
  Status get(T* v, const char* what) {
    if (b_.size() - pos_ < sizeof(T)) return Status::Invalid("the record ends inside {}", what);
    std::memcpy(v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::OK();
  }
  Status bytes(uint64_t n, std::string* out, const char* what) {
    if (b_.size() - pos_ < n)
      return Status::Invalid("{} of {} bytes runs past the record's end", what, n);
    out->assign(b_.data() + pos_, n);
    pos_ += n;
    return Status::OK();
  }
  Status str(std::string* out, const char* what) {
    uint32_t n = 0;
    DLSYS_RETURN_IF_ERROR(get(&n, what));
    return bytes(n, out, what);
  }
  Status tensor(SampledTensor* t) {
    DLSYS_RETURN_IF_ERROR(str(&t->name, "a tensor name"));
    DLSYS_RETURN_IF_ERROR(str(&t->datatype, "a datatype"));
    const size_t esize = element_size(t->datatype);
    if (esize == 0)
      return Status::Invalid("tensor '{}' has unknown datatype '{}'", t->name.substr(0, 64),
                             t->datatype.substr(0, 16));
    uint32_t rank = 0;
    DLSYS_RETURN_IF_ERROR(get(&rank, "a rank"));
    if (rank > 32) return Status::Invalid("tensor '{}' has rank {}", t->name.substr(0, 64), rank);
    t->shape.resize(rank);
    uint64_t numel = 1;
    for (auto& d : t->shape) {
      DLSYS_RETURN_IF_ERROR(get(&d, "a dimension"));
      if (d < 0 || (d > 0 && numel > (uint64_t{1} << 48) / static_cast<uint64_t>(d)))
        return Status::Invalid("tensor '{}' has dimension {}", t->name.substr(0, 64), d);
      numel *= static_cast<uint64_t>(d);
    }
    uint64_t n = 0;
    DLSYS_RETURN_IF_ERROR(get(&n, "a byte length"));
    if (n != numel * esize)
      return Status::Invalid("tensor '{}' holds {} bytes; {} elements of {} need {}",
                             t->name.substr(0, 64), n, numel, t->datatype, numel * esize);
    return bytes(n, &t->data, "tensor data");
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  std::string_view b_;
  size_t pos_ = 0;
};

Status parse_record(std::string_view payload, SampleRecord* r) {
  Cursor c(payload);
  DLSYS_RETURN_IF_ERROR(c.get(&r->time_us, "the time"));
  DLSYS_RETURN_IF_ERROR(c.get(&r->latency_us, "the latency"));
  DLSYS_RETURN_IF_ERROR(c.get(&r->version, "the version"));
  DLSYS_RETURN_IF_ERROR(c.str(&r->request_id, "the request id"));
  DLSYS_RETURN_IF_ERROR(c.str(&r->deployment, "the deployment"));
  DLSYS_RETURN_IF_ERROR(c.str(&r->model, "the model"));
  for (auto* list : {&r->inputs, &r->outputs}) {
    uint32_t n = 0;
    DLSYS_RETURN_IF_ERROR(c.get(&n, "a tensor count"));
    if (n > 4096) return Status::Invalid("{} tensors in one record", n);
    list->resize(n);
    for (auto& t : *list) DLSYS_RETURN_IF_ERROR(c.tensor(&t));
  }
  if (!c.done()) return Status::Invalid("bytes left after the record's last field");
  return Status::OK();
}

bool all_zero(std::string_view b) {
  return std::all_of(b.begin(), b.end(), [](char c) { return c == 0; });
}

uint32_t u32_at(std::string_view b, size_t off) {
  uint32_t v;
  std::memcpy(&v, b.data() + off, 4);
  return v;
}

}  // namespace

Status parse_sample_segment(std::string_view b, const std::string& path,
                            const SampleReadOptions& opts,
                            const std::function<Status(SampleRecord&&)>& visit, SampleScan* scan,
                            size_t* end) {
  if (end) *end = 0;
  auto damaged = [&](size_t off, const std::string& what) {
    return Status::IOError("sample log {} at offset {}: {}", path, off, what);
  };
  auto torn = [&](size_t off) { scan->torn.push_back(fmt::format("{} at offset {}", path, off)); };
  // File header: magic, version, JSON length, JSON, crc, written in one write when the file is
  // created. A file cut inside it (or still zeros) was never used: a torn tail at offset 0.
  const size_t magic_seen = std::min(b.size(), sizeof(kFileMagic));
  if (std::memcmp(b.data(), kFileMagic, magic_seen) != 0) {
    if (all_zero(b)) {
      torn(0);
      return Status::OK();
    }
    return damaged(0, "not a dlsys sample log (bad magic)");
  }
  if (b.size() < 16) {
    torn(0);
    return Status::OK();
  }
  if (u32_at(b, 8) != kFormatVersion)
    return damaged(
        8, fmt::format("format version {} (this reader knows {})", u32_at(b, 8), kFormatVersion));
  const uint32_t jlen = u32_at(b, 12);
  if (jlen > kMaxJsonHeader) return damaged(12, fmt::format("header length {}", jlen));
  if (b.size() < 20 + size_t{jlen}) {
    torn(0);
    return Status::OK();
  }
  if (crc32c(b.data(), 16 + jlen) != u32_at(b, 16 + jlen)) {
    if (b.size() == 20 + size_t{jlen}) {  // nothing after it: the header's own write was torn
      torn(0);
      return Status::OK();
    }
    return damaged(0, "the file header fails its checksum");
  }
  size_t off = 20 + jlen;
  if (end) *end = off;
  while (off < b.size()) {
    const std::string_view rest = b.substr(off);
    if (rest.size() < kFrameHeader) {
      torn(off);
      break;
    }
    const bool header_ok =
        u32_at(rest, 0) == kRecordMagic && crc32c(rest.data(), 12) == u32_at(rest, 12);
    if (!header_ok) {
      if (all_zero(rest)) {  // space the file system extended but the data never reached
        torn(off);
        break;
      }
      return damaged(off, "a record header fails its magic or checksum");
    }
    const uint64_t len = u32_at(rest, 4);
    if (kFrameHeader + len > rest.size()) {
      torn(off);
      break;
    }
    const std::string_view payload = rest.substr(kFrameHeader, len);
    const bool last = kFrameHeader + len == rest.size();
    if (crc32c(payload.data(), payload.size()) != u32_at(rest, 8)) {
      if (last) {
        torn(off);
        break;
      }
      return damaged(off, "a record fails its checksum");
    }
    SampleRecord r;
    Status st = parse_record(payload, &r);
    if (!st.ok()) return damaged(off, st.message());
    if (r.time_us >= opts.since_us && r.time_us < opts.until_us) {
      ++scan->records;
      DLSYS_RETURN_IF_ERROR(visit(std::move(r)));
    }
    off += kFrameHeader + len;
    if (end) *end = off;
  }
  return Status::OK();
}

namespace {

// The segments of one deployment's log, oldest first (names start with the creation time); none
// when the directory does not exist.
Result<std::vector<std::string>> list_segments(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file(ec) && name.size() > std::strlen(kSuffix) && name.ends_with(kSuffix))
      files.push_back(e.path().string());
  }
  if (ec) return Status::IOError("cannot list sample log {}: {}", dir, ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

Result<int64_t> SampleTail::poll(const std::function<Status(SampleRecord&&)>& visit) {
  DLSYS_ASSIGN_OR_RETURN(std::vector<std::string> files, list_segments(dir_));
  std::error_code ec;
  SampleScan scan;
  Status first_error = Status::OK();
  // Files that are gone (an operator removed old segments) are forgotten.
  for (auto it = files_.begin(); it != files_.end();)
    it = std::binary_search(files.begin(), files.end(), it->first) ? std::next(it)
                                                                   : files_.erase(it);
  for (const auto& f : files) {
    File& st = files_[f];
    const int64_t size = static_cast<int64_t>(std::filesystem::file_size(f, ec));
    if (ec || size <= st.consumed || st.damaged) continue;
    std::string bytes;
    if (st.consumed == 0) {
      DLSYS_ASSIGN_OR_RETURN(bytes, read_file(f));
    } else {
      // The header again (parse_sample_segment checks it), then what came after the last
      // whole record read.
      std::ifstream in(f, std::ios::binary);
      if (!in) return Status::IOError("cannot open sample log {}", f);
      in.seekg(st.consumed);
      std::string tail(static_cast<size_t>(size - st.consumed), '\0');
      in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
      tail.resize(static_cast<size_t>(in.gcount()));
      bytes = st.header + tail;
    }
    size_t end = 0;
    Status parsed = parse_sample_segment(bytes, f, {}, visit, &scan, &end);
    if (end > 0) {  // the records before `end` were read (also when damage follows them)
      if (st.consumed == 0) {
        st.header = bytes.substr(0, 20 + u32_at(bytes, 12));
        st.consumed = static_cast<int64_t>(end);
      } else {
        st.consumed += static_cast<int64_t>(end - st.header.size());
      }
    }
    if (!parsed.ok()) {
      // Damage: what came before it was read once; the rest of this file is skipped from now
      // on (and said once), and the newer files are still read.
      st.damaged = true;
      if (first_error.ok()) first_error = parsed;
    }
  }
  if (!first_error.ok()) return first_error;
  return scan.records;
}

Result<SampleScan> scan_samples(const std::string& dir, const SampleReadOptions& options,
                                const std::function<Status(SampleRecord&&)>& visit) {
  SampleScan scan;
  DLSYS_ASSIGN_OR_RETURN(std::vector<std::string> files, list_segments(dir));
  for (const auto& f : files) {
    ++scan.files;
    DLSYS_ASSIGN_OR_RETURN(std::string bytes, read_file(f));
    DLSYS_RETURN_IF_ERROR(parse_sample_segment(bytes, f, options, visit, &scan));
  }
  return scan;
}

Result<std::vector<SampleRecord>> read_samples(const std::string& dir,
                                               const SampleReadOptions& options, SampleScan* scan) {
  std::vector<SampleRecord> out;
  DLSYS_ASSIGN_OR_RETURN(SampleScan s, scan_samples(dir, options, [&](SampleRecord&& r) {
                           out.push_back(std::move(r));
                           return Status::OK();
                         }));
  if (scan) *scan = std::move(s);
  return out;
}

}  // namespace dlsys::serve
