// Request sampling (issue 19, read by monitoring, issue 24): for a deployment whose config sets
// `sample_rate` (0..1), that fraction of its successful requests is appended to a typed,
// append-only sample log under the server's data directory, one directory per deployment:
//
//   DATA_DIR/samples/<deployment>/<created_us, 16 digits>-<8 hex>.dlsys-samples
//
// Each record holds the time, the request id, deployment, model, version, latency and every
// input and output tensor (datatype, shape, raw little-endian bytes). The format (docs/formats.md,
// "Request samples") is framed and checksummed: a record torn by a crash is the last one of its
// file and is detected and skipped by the reader; damage anywhere else is an error naming the
// file and the offset.
//
// Threading: the serving path only decides (begin) and queues (finish); one background writer
// thread serializes, appends, rotates and syncs. The queue is bounded (records and bytes): when
// it is full a sample is dropped and counted, never waited for. Every public method is
// thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/status.h"
#include "serve/v2_codec.h"
#include "tensor/tensor.h"

namespace dlsys::serve {

struct RequestSamplerOptions {
  std::string dir;                            // the root: DATA_DIR/samples
  size_t max_queue = 1024;                    // records waiting for the writer
  size_t max_queue_bytes = size_t{64} << 20;  // their tensor bytes; a larger record is dropped
  int64_t rotate_bytes = int64_t{64} << 20;   // a segment is closed once it holds this many
  std::chrono::milliseconds rotate_after{std::chrono::hours(1)};  // or is this old
  std::chrono::milliseconds sync_every{1000};  // fdatasync at most this often (and at rotation
                                               // and stop): the most a power loss can take
};

// A sampled request on its way to the log: tensors share the request's and the answer's
// storage (no copy on the serving path); the writer serializes them.
struct PendingSample {
  std::string request_id, deployment;
  std::vector<std::string> input_names, output_names;
  std::vector<Tensor> inputs;
};

class RequestSampler {
 public:
  explicit RequestSampler(RequestSamplerOptions options);
  ~RequestSampler();  // stop()
  RequestSampler(const RequestSampler&) = delete;
  RequestSampler& operator=(const RequestSampler&) = delete;

  // With probability `rate` (<= 0: never, >= 1: always) starts a sample of `request` to
  // `deployment`: when the request has no id, one is generated (32 hex digits) and set in
  // `request.id`, so the response carries it. Returns nullptr when not sampled. `outputs` are
  // the model's outputs (their names label the recorded outputs).
  std::shared_ptr<PendingSample> begin(double rate, const std::string& deployment,
                                       V2InferRequest& request,
                                       const std::vector<TensorSpec>& outputs);
  // Queues the finished sample for the writer: the model and version that answered, the
  // request's latency and every output. Never blocks on I/O; when the queue is full (or after
  // stop()) the sample is dropped and counted.
  void finish(std::shared_ptr<PendingSample> sample, const std::string& model, int64_t version,
              int64_t latency_us, const std::vector<Tensor>& outputs);

  // Returns once every sample queued before the call is written (or counted as failed).
  void flush();
  // Writes what is queued, syncs and closes every segment, joins the writer. Idempotent.
  void stop();

  struct Counts {
    int64_t written = 0;
    int64_t dropped_queue_full = 0;   // the writer's queue was full
    int64_t dropped_write_error = 0;  // a write failed (the server log says why)
    int64_t dropped_shutdown = 0;     // finished after stop()
  };
  Counts counts(const std::string& deployment) const;
  // Prometheus families dlsys_serve_samples_written_total{deployment} and
  // dlsys_serve_samples_dropped_total{deployment,reason} for `deployments`.
  std::string metrics_text(const std::vector<std::string>& deployments) const;

 private:
  struct Item {
    int64_t time_us, latency_us, version;
    std::string model;
    std::shared_ptr<PendingSample> sample;
    std::vector<Tensor> outputs;
    size_t bytes;
  };
  struct Segment {
    int fd = -1;
    std::string path;
    int64_t bytes = 0;
    std::chrono::steady_clock::time_point opened;
    bool dirty = false;
  };
  void writer_loop();
  Status append(const std::string& deployment, const std::string& record);
  Status open_segment(const std::string& deployment, Segment* seg);
  void close_segment(Segment* seg);

  const RequestSamplerOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Item> queue_;
  size_t queued_bytes_ = 0;
  uint64_t submitted_ = 0, finished_ = 0;  // queued / written-or-failed, for flush()
  bool stopping_ = false;
  std::map<std::string, Counts> counts_;
  std::map<std::string, Segment> segments_;  // writer thread only
  std::thread writer_;
  std::mutex stop_mu_;
  bool stopped_ = false;
};

// ---- Reading the log (the monitoring side) ----

// One recorded tensor.
struct SampledTensor {
  std::string name;
  std::string datatype;  // the KServe v2 datatype: "FP32", "INT64", "BOOL", ...
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian element bytes, row-major
};

struct SampleRecord {
  int64_t time_us = 0;  // Unix time (microseconds) the answer was known
  std::string request_id;
  std::string deployment, model;
  int64_t version = 0;
  int64_t latency_us = 0;  // arrival at the batcher to the answer
  std::vector<SampledTensor> inputs, outputs;
};

struct SampleReadOptions {
  int64_t since_us = std::numeric_limits<int64_t>::min();  // records with since <= time < until
  int64_t until_us = std::numeric_limits<int64_t>::max();
};

struct SampleScan {
  int64_t files = 0;
  int64_t records = 0;  // passed to the visitor
  // Torn tails skipped, as "FILE at offset N" (the last record of a file cut by a crash, or a
  // file created but never written).
  std::vector<std::string> torn;
};

// The directory of `deployment`'s log under the sampling root (DATA_DIR/samples).
std::string sample_dir(const std::string& root, const std::string& deployment);

// Reads every segment in `dir` (one deployment's directory) in the order they were written and
// calls `visit` for each record in the time window; a visitor error stops the scan and is
// returned. Torn tails are skipped and listed; any other damage (a bad file header, a record
// that fails its checksum or does not parse and is not the last) is an error naming the file
// and the offset. A missing directory is an empty log.
Result<SampleScan> scan_samples(const std::string& dir, const SampleReadOptions& options,
                                const std::function<Status(SampleRecord&&)>& visit);
// Parses one segment's bytes (what scan_samples does for each file; `name` is the file named in
// errors and torn tails). Records in the window go to `visit`; torn tails to scan->torn; damage
// is an IOError. scan->files is not counted here. `end`, when given, gets the offset just past
// the last whole record (0 while the file header itself is incomplete).
Status parse_sample_segment(std::string_view bytes, const std::string& name,
                            const SampleReadOptions& options,
                            const std::function<Status(SampleRecord&&)>& visit, SampleScan* scan,
                            size_t* end = nullptr);

// Follows one deployment's log as the server appends to it (monitoring): each poll() reads only
// what was appended since the last one, whole records only (a record still being written is read
// by the next poll), across rotations. Damage (as scan_samples finds it) is returned as the
// poll's error once, after the records before it and every other file were read; the rest of
// that file is skipped from then on. Not thread-safe.
class SampleTail {
 public:
  explicit SampleTail(std::string dir) : dir_(std::move(dir)) {}
  // Calls `visit` for each record appended since the last poll; returns how many (or the
  // damage found, after reading everything else).
  Result<int64_t> poll(const std::function<Status(SampleRecord&&)>& visit);

 private:
  struct File {
    int64_t consumed = 0;  // bytes up to the end of the last whole record read
    std::string header;    // the file header's bytes
    bool damaged = false;  // damage was found: the rest of the file is not read
  };
  std::string dir_;
  std::map<std::string, File> files_;
};
// scan_samples into a vector (for small logs and tests); `scan` gets the summary if given.
Result<std::vector<SampleRecord>> read_samples(const std::string& dir,
                                               const SampleReadOptions& options = {},
                                               SampleScan* scan = nullptr);

}  // namespace dlsys::serve
