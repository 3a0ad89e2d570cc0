// bench/data: the dataset manager's throughput.
//   1. CSV ingest: a numeric CSV (20 float columns + an int label) of --csv-mb MiB generated
//      here, pushed with `data::push`; MB/s of input.
//   2. Loader throughput of shuffled batches (batch 256) as feature bytes/s and rows/s, both
//      counted from the batches the loader returned: from the decoded cache (second epoch,
//      everything cached), cold (the shard files dropped from the OS page cache before a new
//      loader is opened: fsync + posix_fadvise(POSIX_FADV_DONTNEED) on every shard file, and
//      with --drop-caches as root first `echo 1 > /proc/sys/vm/drop_caches` after sync(); the
//      JSON says which ran and how much of the shards mincore() finds resident before and after),
//      and with a cache of one shard.
//   3. Push of --files small PNG files (an image folder) by a `dlsys data push` child process:
//      wall time and the child's peak RSS.
// Prints one JSON line per measurement and a summary; --json prints only the JSON.
#include <fcntl.h>
#include <png.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include "core/json_util.h"
#include "data/dataset_loader.h"
#include "data/push.h"

using namespace dlsys;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double secs(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string make_csv(const std::string& path, int64_t mib) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  std::string buf;
  for (int c = 0; c < 20; ++c) buf += fmt::format("f{},", c);
  buf += "label\n";
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> u(-100, 100);
  int64_t bytes = 0;
  while (bytes < (mib << 20)) {
    for (int c = 0; c < 20; ++c) buf += fmt::format("{:.6f},", u(rng));
    buf += std::to_string(rng() % 10) + "\n";
    if (buf.size() > (1 << 20)) {
      std::fwrite(buf.data(), 1, buf.size(), f);
      bytes += buf.size();
      buf.clear();
    }
  }
  std::fwrite(buf.data(), 1, buf.size(), f);
  std::fclose(f);
  return path;
}

// Bytes of the version's shard files resident in the OS page cache (mincore).
int64_t resident_bytes(const data::DatasetStore& store, const data::VersionInfo& v) {
  int64_t total = 0;
  long page = ::sysconf(_SC_PAGESIZE);
  for (const auto& s : v.manifest["shards"]) {
    int fd = ::open(store.shard_path(s["id"]).c_str(), O_RDONLY);
    if (fd < 0) continue;
    off_t size = ::lseek(fd, 0, SEEK_END);
    if (size > 0) {
      void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
      if (m != MAP_FAILED) {
        std::vector<unsigned char> vec((size + page - 1) / page);
        if (::mincore(m, size, vec.data()) == 0)
          for (unsigned char c : vec) total += (c & 1) ? page : 0;
        ::munmap(m, size);
      }
    }
    ::close(fd);
  }
  return total;
}

// Drops the version's shard files from the OS page cache: fsync (dirty pages are not dropped)
// then posix_fadvise(DONTNEED) on every shard file. With `global` and as root (when /proc/sys is
// writable), first sync() and `1` into /proc/sys/vm/drop_caches (the whole machine's page cache).
// Returns which method ran: "drop_caches+posix_fadvise" or "posix_fadvise".
std::string drop_page_cache(const data::DatasetStore& store, const data::VersionInfo& v,
                            bool global) {
  std::string method = "posix_fadvise";
  if (global && ::geteuid() == 0) {
    ::sync();
    if (std::FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w")) {
      if (std::fputs("1\n", f) >= 0 && std::fclose(f) == 0)
        method = "drop_caches+posix_fadvise";
      else
        method = "posix_fadvise";
    }
  }
  for (const auto& s : v.manifest["shards"]) {
    int fd = ::open(store.shard_path(s["id"]).c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fsync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  return method;
}

// Bytes of features per second over one epoch; *rows gets the rows the batches held.
double epoch_rate(data::DatasetLoader& l, double* seconds, int64_t* rows) {
  auto t0 = Clock::now();
  int64_t bytes = 0;
  *rows = 0;
  for (int64_t b = 0; b < l.batches_per_epoch(); ++b) {
    auto batch = l.next();
    if (!batch.ok()) {
      std::fprintf(stderr, "loader: %s\n", batch.status().message().c_str());
      std::exit(1);
    }
    bytes += batch->x.numel() * 4;
    *rows += batch->x.shape()[0];
  }
  *seconds = secs(t0);
  return bytes / *seconds;
}

void write_png(const std::string& path, int size, uint8_t v) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = size;
  img.height = size;
  img.format = PNG_FORMAT_GRAY;
  std::vector<uint8_t> px(size * size);
  for (int i = 0; i < size * size; ++i) px[i] = static_cast<uint8_t>(v + i);
  png_image_write_to_file(&img, path.c_str(), 0, px.data(), 0, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("dlsys dataset benchmarks");
  int64_t csv_mb = 220, files = 100000;
  int threads = 1;
  std::string work = "/tmp/dlsys-data-bench", dlsys_bin;
  bool json_only = false, drop_caches = false;
  app.add_option("--csv-mb", csv_mb, "Size of the generated CSV in MiB (issue floor: >= 200)");
  app.add_option("--files", files, "Image files to push (0: skip)");
  app.add_option("--threads", threads, "Loader prefetch threads");
  app.add_option("--work", work, "Scratch folder (deleted at the end)");
  app.add_option("--dlsys", dlsys_bin, "The dlsys binary (for the image push)")->required();
  app.add_flag("--json", json_only, "Print only JSON lines");
  app.add_flag("--drop-caches", drop_caches,
               "Before the cold epoch, also drop the whole page cache (root only; default: "
               "fsync + posix_fadvise on the shard files)");
  CLI11_PARSE(app, argc, argv);
  fs::remove_all(work);
  fs::create_directories(work);
  auto report = [&](const nlohmann::json& j) { std::printf("%s\n", json_dump_line(j).c_str()); };

  // 1. CSV ingest.
  auto t0 = Clock::now();
  std::string csv = make_csv(work + "/numeric.csv", csv_mb);
  double gen_s = secs(t0);
  int64_t csv_bytes = fs::file_size(csv);
  auto store = std::move(data::DatasetStore::open(work + "/home/datasets")).value();
  auto src = data::open_source(csv, "", {});
  if (!src.ok()) return std::fprintf(stderr, "%s\n", src.status().message().c_str()), 1;
  t0 = Clock::now();
  auto pushed = data::push(*store, "numeric", **src, {});
  double push_s = secs(t0);
  if (!pushed.ok()) return std::fprintf(stderr, "%s\n", pushed.status().message().c_str()), 1;
  report({{"bench", "csv_ingest"},
          {"input_mb", csv_bytes / 1e6},
          {"rows", pushed->rows},
          {"shards", pushed->shards},
          {"stored_mb", pushed->stored_bytes / 1e6},
          {"seconds", push_s},
          {"mb_per_s", csv_bytes / 1e6 / push_s},
          {"generate_s", gen_s}});

  // 2. Loader.
  data::DatasetLoaderOptions lo;
  lo.batch_size = 256;
  lo.threads = threads;
  lo.prefetch = 8;
  lo.label = "label";
  {
    auto l = std::move(data::DatasetLoader::open(*store, {"numeric", "latest", ""}, lo)).value();
    double s0, s1;
    int64_t rows = 0;
    epoch_rate(*l, &s0, &rows);  // fills the cache
    double rate = epoch_rate(*l, &s1, &rows);
    report({{"bench", "loader_cached"},
            {"global_shuffle", l->global_shuffle()},
            {"rows", rows},
            {"first_epoch_s", s0},
            {"epoch_s", s1},
            {"rows_per_s", rows / s1},
            {"gb_per_s", rate / 1e9}});
  }
  {
    // Cold: the shard files are dropped from the page cache, then a new loader (empty cache).
    int64_t before = resident_bytes(*store, pushed->version);
    std::string method = drop_page_cache(*store, pushed->version, drop_caches);
    int64_t after = resident_bytes(*store, pushed->version);
    auto l = std::move(data::DatasetLoader::open(*store, {"numeric", "latest", ""}, lo)).value();
    double s;
    int64_t rows = 0;
    double rate = epoch_rate(*l, &s, &rows);
    report({{"bench", "loader_cold"},
            {"global_shuffle", l->global_shuffle()},
            {"page_cache_drop", method},
            {"resident_before_mb", before / 1e6},
            {"resident_after_drop_mb", after / 1e6},
            {"rows", rows},
            {"epoch_s", s},
            {"rows_per_s", rows / s},
            {"mb_per_s", rate / 1e6},
            {"loaded_mb", l->bytes_loaded() / 1e6}});
  }
  {
    // A cache of one shard: shards shuffled in windows, each read and decoded every epoch.
    lo.cache_bytes = 1;
    auto l = std::move(data::DatasetLoader::open(*store, {"numeric", "latest", ""}, lo)).value();
    double s;
    int64_t rows = 0;
    epoch_rate(*l, &s, &rows);
    double rate = epoch_rate(*l, &s, &rows);
    report({{"bench", "loader_one_shard_cache"},
            {"global_shuffle", l->global_shuffle()},
            {"rows", rows},
            {"epoch_s", s},
            {"rows_per_s", rows / s},
            {"mb_per_s", rate / 1e6}});
  }
  fs::remove(csv);

  // 3. An image folder of small files, pushed by the CLI.
  if (files > 0) {
    t0 = Clock::now();
    for (int64_t i = 0; i < files; ++i) {
      std::string dir = fmt::format("{}/images/class{}", work, i % 10);
      if (i < 10) fs::create_directories(dir);
      write_png(fmt::format("{}/{:06d}.png", dir, i), 16, static_cast<uint8_t>(i));
    }
    double gen = secs(t0);
    t0 = Clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      std::string home = work + "/home";
      setenv("DLSYS_HOME", home.c_str(), 1);
      int null = ::open("/dev/null", O_WRONLY);
      dup2(null, 1);
      execl(dlsys_bin.c_str(), dlsys_bin.c_str(), "data", "push", (work + "/images").c_str(),
            "--name", "images", "--channels", "1", "--json", nullptr);
      _exit(127);
    }
    int status = 0;
    rusage ru{};
    wait4(pid, &status, 0, &ru);
    double s = secs(t0);
    report({{"bench", "image_folder_push"},
            {"files", files},
            {"ok", WIFEXITED(status) && WEXITSTATUS(status) == 0},
            {"seconds", s},
            {"files_per_s", files / s},
            {"peak_rss_mb", ru.ru_maxrss / 1024.0},
            {"generate_s", gen}});
  }
  fs::remove_all(work);
  return 0;
}
