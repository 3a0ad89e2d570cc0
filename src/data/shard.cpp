#include "data/shard.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include <functional>

namespace dlsys::data {

namespace {

constexpr char kMagic[8] = {'D', 'L', 'S', 'H', 'A', 'R', 'D', '1'};
constexpr uint64_t kMaxHeader = 16ull << 20;
constexpr uint64_t kMaxColumnBytes = 8ull << 30;

void put_u64(std::string* out, uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);  // little-endian hosts only (x86-64, aarch64)
  out->append(b, 8);
}

uint64_t get_u64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

template <typename T>
void append_pod(std::string* out, const std::vector<T>& v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string hex64(uint64_t v) {
  return fmt::format("{:016x}", v);
}

// Reads `len` bytes at `offset` of the shard (file or memory).
using ReadAt = std::function<Status(uint64_t offset, uint64_t len, std::string* out)>;

Result<ShardHeader> parse_header(const ReadAt& read, uint64_t total, const std::string& where) {
  std::string head;
  if (total < 24) return Status::Invalid("{}: {} bytes is too short for a shard", where, total);
  DLSYS_RETURN_IF_ERROR(read(0, 16, &head));
  if (std::memcmp(head.data(), kMagic, 8) != 0)
    return Status::Invalid("{}: not a dlsys shard (bad magic); the file is corrupted", where);
  uint64_t hlen = get_u64(head.data() + 8);
  if (hlen > kMaxHeader || 24 + hlen > total)
    return Status::Invalid("{}: header length {} does not fit the shard ({} bytes)", where, hlen,
                           total);
  std::string hbytes;
  DLSYS_RETURN_IF_ERROR(read(16, hlen + 8, &hbytes));
  if (XXH3_64bits(hbytes.data(), hlen) != get_u64(hbytes.data() + hlen))
    return Status::Invalid("{}: header checksum mismatch; the shard is corrupted", where);
  json j = json::parse(hbytes.begin(), hbytes.begin() + hlen, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("rows") || !j.contains("columns") ||
      !j["columns"].is_array())
    return Status::Invalid("{}: malformed shard header", where);
  ShardHeader h;
  h.data_start = 24 + hlen;
  try {
    h.rows = j["rows"].get<int64_t>();
    if (h.rows < 0) return Status::Invalid("{}: negative row count", where);
    DLSYS_ASSIGN_OR_RETURN(Schema s, Schema::from_json(j));
    for (size_t i = 0; i < s.columns.size(); ++i) {
      const json& jc = j["columns"][i];
      ShardColumnInfo c;
      c.schema = s.columns[i];
      c.nulls = jc.at("nulls").get<int64_t>();
      c.offset = jc.at("offset").get<uint64_t>();
      c.size = jc.at("size").get<uint64_t>();
      c.raw_size = jc.at("raw_size").get<uint64_t>();
      c.xxh3 = std::stoull(jc.at("xxh3").get<std::string>(), nullptr, 16);
      if (c.offset + c.size > total - h.data_start || c.raw_size > kMaxColumnBytes || c.nulls < 0 ||
          c.nulls > h.rows)
        return Status::Invalid("{}: column '{}' has an impossible offset or size", where,
                               c.schema.name);
      h.columns.push_back(std::move(c));
    }
  } catch (const std::exception& e) {
    return Status::Invalid("{}: malformed shard header ({})", where, e.what());
  }
  return h;
}

// Decodes one column frame into `d`.
Status decode_column(const ShardColumnInfo& c, int64_t rows, const std::string& frame,
                     ColumnData* d, const std::string& where) {
  if (XXH3_64bits(frame.data(), frame.size()) != c.xxh3)
    return Status::Invalid("{}: checksum mismatch in column '{}'; the shard is corrupted", where,
                           c.schema.name);
  std::string raw(c.raw_size, '\0');
  size_t n = ZSTD_decompress(raw.data(), raw.size(), frame.data(), frame.size());
  if (ZSTD_isError(n) || n != c.raw_size)
    return Status::Invalid("{}: column '{}' does not decompress ({})", where, c.schema.name,
                           ZSTD_isError(n) ? ZSTD_getErrorName(n) : "size mismatch");
  const char* p = raw.data();
  size_t left = raw.size();
  auto take = [&](size_t bytes, void* dst) -> Status {
    if (bytes > left)
      return Status::Invalid("{}: column '{}' is shorter than its row count", where, c.schema.name);
    if (bytes) std::memcpy(dst, p, bytes);
    p += bytes;
    left -= bytes;
    return Status::OK();
  };
  if (c.nulls > 0) {
    d->valid.resize(rows);
    DLSYS_RETURN_IF_ERROR(take(rows, d->valid.data()));
  }
  switch (c.schema.type) {
    case ColumnType::kInt64:
      d->i64.resize(rows);
      DLSYS_RETURN_IF_ERROR(take(rows * 8, d->i64.data()));
      break;
    case ColumnType::kFloat64:
      d->f64.resize(rows);
      DLSYS_RETURN_IF_ERROR(take(rows * 8, d->f64.data()));
      break;
    case ColumnType::kString: {
      d->offsets.resize(rows + 1);
      DLSYS_RETURN_IF_ERROR(take((rows + 1) * 8, d->offsets.data()));
      for (int64_t r = 0; r < rows; ++r)
        if (d->offsets[r] > d->offsets[r + 1])
          return Status::Invalid("{}: column '{}' has decreasing string offsets", where,
                                 c.schema.name);
      if (d->offsets[0] != 0 || d->offsets[rows] != left)
        return Status::Invalid("{}: column '{}' string offsets do not match its bytes", where,
                               c.schema.name);
      d->bytes.assign(p, left);
      left = 0;
      break;
    }
    default: {
      size_t bytes = rows * c.schema.numel() * c.schema.elem_bytes();
      d->raw.resize(bytes);
      DLSYS_RETURN_IF_ERROR(take(bytes, d->raw.data()));
    }
  }
  if (left != 0)
    return Status::Invalid("{}: column '{}' has {} bytes past its values", where, c.schema.name,
                           left);
  return Status::OK();
}

Result<RowBatch> decode_with(const ReadAt& read, uint64_t total,
                             const std::vector<std::string>& columns, const std::string& where) {
  DLSYS_ASSIGN_OR_RETURN(ShardHeader h, parse_header(read, total, where));
  std::vector<int> pick;
  if (columns.empty()) {
    for (size_t i = 0; i < h.columns.size(); ++i) pick.push_back(static_cast<int>(i));
  } else {
    for (const auto& name : columns) {
      int i = h.index(name);
      if (i < 0) return Status::NotFound("{}: no column '{}'", where, name);
      pick.push_back(i);
    }
  }
  Schema s;
  for (int i : pick) s.columns.push_back(h.columns[i].schema);
  RowBatch b = RowBatch::empty(s);
  b.rows = h.rows;
  std::string frame;
  for (size_t k = 0; k < pick.size(); ++k) {
    const ShardColumnInfo& c = h.columns[pick[k]];
    DLSYS_RETURN_IF_ERROR(read(h.data_start + c.offset, c.size, &frame));
    b.columns[k] = ColumnData();
    DLSYS_RETURN_IF_ERROR(decode_column(c, h.rows, frame, &b.columns[k], where));
  }
  return b;
}

ReadAt memory_reader(std::string_view bytes) {
  return [bytes](uint64_t off, uint64_t len, std::string* out) -> Status {
    if (off + len > bytes.size()) return Status::Invalid("read past the end of the shard");
    out->assign(bytes.data() + off, len);
    return Status::OK();
  };
}

// An open file read with pread; closes on destruction.
struct FileReader {
  int fd = -1;
  uint64_t size = 0;
  ~FileReader() {
    if (fd >= 0) ::close(fd);
  }
  Status open(const std::string& path, const std::string& where) {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::IOError("{}: cannot open {}: {}", where, path, strerror(errno));
    off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) return Status::IOError("{}: cannot size {}", where, path);
    size = static_cast<uint64_t>(end);
    return Status::OK();
  }
  ReadAt reader(const std::string& where) {
    return [this, where](uint64_t off, uint64_t len, std::string* out) -> Status {
      out->resize(len);
      uint64_t done = 0;
      while (done < len) {
        ssize_t n = ::pread(fd, out->data() + done, len - done, off + done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return Status::IOError("{}: short read at byte {}", where, off + done);
        done += n;
      }
      return Status::OK();
    };
  }
};

}  // namespace

int64_t ShardHeader::raw_bytes() const {
  int64_t n = 0;
  for (const auto& c : columns) n += c.raw_size;
  return n;
}

int ShardHeader::index(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i].schema.name == name) return static_cast<int>(i);
  return -1;
}

Result<std::string> encode_shard(const RowBatch& batch, int level) {
  DLSYS_RETURN_IF_ERROR(batch.check());
  json cols = json::array();
  std::string area, payload, frame;
  for (size_t c = 0; c < batch.columns.size(); ++c) {
    const ColumnData& d = batch.columns[c];
    const ColumnSchema& s = batch.schema.columns[c];
    payload.clear();
    int64_t nulls = 0;
    for (uint8_t v : d.valid) nulls += v == 0;
    if (nulls > 0) append_pod(&payload, d.valid);
    switch (s.type) {
      case ColumnType::kInt64:
        append_pod(&payload, d.i64);
        break;
      case ColumnType::kFloat64:
        append_pod(&payload, d.f64);
        break;
      case ColumnType::kString:
        append_pod(&payload, d.offsets);
        payload += d.bytes;
        break;
      default:
        append_pod(&payload, d.raw);
        break;
    }
    frame.resize(ZSTD_compressBound(payload.size()));
    size_t n = ZSTD_compress(frame.data(), frame.size(), payload.data(), payload.size(), level);
    if (ZSTD_isError(n)) return Status::Internal("zstd: {}", ZSTD_getErrorName(n));
    frame.resize(n);
    json jc = {{"name", s.name},
               {"type", column_type_name(s.type)},
               {"nulls", nulls},
               {"offset", area.size()},
               {"size", n},
               {"raw_size", payload.size()},
               {"xxh3", hex64(XXH3_64bits(frame.data(), n))}};
    if (is_tensor(s.type)) jc["shape"] = s.shape;
    cols.push_back(std::move(jc));
    area += frame;
  }
  std::string header = json{{"rows", batch.rows}, {"columns", std::move(cols)}}.dump();
  std::string out(kMagic, 8);
  put_u64(&out, header.size());
  out += header;
  put_u64(&out, XXH3_64bits(header.data(), header.size()));
  out += area;
  return out;
}

Result<ShardHeader> decode_shard_header(std::string_view bytes, const std::string& where) {
  return parse_header(memory_reader(bytes), bytes.size(), where);
}

Result<ShardHeader> read_shard_header(const std::string& path, const std::string& where) {
  FileReader f;
  DLSYS_RETURN_IF_ERROR(f.open(path, where));
  return parse_header(f.reader(where), f.size, where);
}

Result<RowBatch> decode_shard(std::string_view bytes, const std::vector<std::string>& columns,
                              const std::string& where) {
  return decode_with(memory_reader(bytes), bytes.size(), columns, where);
}

Result<RowBatch> read_shard(const std::string& path, const std::vector<std::string>& columns,
                            const std::string& where) {
  FileReader f;
  DLSYS_RETURN_IF_ERROR(f.open(path, where));
  return decode_with(f.reader(where), f.size, columns, where);
}

}  // namespace dlsys::data
