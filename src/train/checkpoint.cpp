#include "train/checkpoint.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/file_util.h"
#include "tensor/safetensors.h"

namespace dlsys::train {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string checkpoints_dir(const std::string& run_dir) {
  return run_dir + "/checkpoints";
}

// The N of a folder named exactly "step-N", or -1.
int64_t step_of(const std::string& name) {
  if (name.size() <= 5 || name.rfind("step-", 0) != 0) return -1;
  if (!std::all_of(name.begin() + 5, name.end(), [](char c) { return std::isdigit(c); })) return -1;
  return std::atoll(name.c_str() + 5);
}

// The folder `latest` names, or "" when there is none.
std::string latest_name(const std::string& root) {
  auto latest = read_file(root + "/latest");
  return latest.ok() ? *latest : "";
}

// Copies `src` into `dst` in place; both must have the same shape.
bool copy_same_shape(const Tensor& src, Tensor* dst) {
  if (src.shape() != dst->shape() || src.dtype() != dst->dtype()) return false;
  std::memcpy(dst->data(), src.data(), src.nbytes());
  return true;
}

}  // namespace

Status write_checkpoint(const std::string& run_dir, const Checkpoint& c) {
  std::string root = checkpoints_dir(run_dir);
  DLSYS_RETURN_IF_ERROR(make_dirs(root));
  // 1. Both files into a fresh temporary folder.
  std::string tmp = root + "/.tmp-" + random_hex(6);
  DLSYS_RETURN_IF_ERROR(make_dirs(tmp));
  SafetensorsFile f;
  for (const auto& [name, t] : c.params) f.tensors["param/" + name] = t;
  for (const auto& [name, t] : c.buffers) f.tensors["buffer/" + name] = t;
  for (const auto& [k, t] : c.optimizer_state) f.tensors["optim/" + k] = t;
  f.metadata["format"] = "dlsys-checkpoint-1";
  DLSYS_RETURN_IF_ERROR(safetensors_write(tmp + "/weights.safetensors", f));
  json state = {{"step", c.step},
                {"loader", {{"epoch", c.position.epoch}, {"batch", c.position.batch}}},
                {"optimizer_steps", c.optimizer_steps},
                {"spec_sha256", c.spec_sha256},
                {"extend_sha256", c.extend_sha256}};
  DLSYS_RETURN_IF_ERROR(write_file_atomic(tmp + "/state.json", state.dump(2)));
  // 2. Renamed in; a folder of the same step goes aside first and is removed after.
  std::string name = fmt::format("step-{}", c.step);
  std::string dst = root + "/" + name, old = dst + ".old";
  std::error_code ec;
  if (fs::exists(dst, ec)) {
    fs::remove_all(old, ec);
    fs::rename(dst, old, ec);
    if (ec)
      return Status::IOError("cannot rename checkpoint folder {} aside: {}", dst, ec.message());
  }
  fs::rename(tmp, dst, ec);
  if (ec) return Status::IOError("cannot rename checkpoint folder {}: {}", tmp, ec.message());
  // 3. Named in `latest`.
  DLSYS_RETURN_IF_ERROR(write_file_atomic(root + "/latest", name));
  fs::remove_all(old, ec);
  // 4. The keep-newest policy.
  return prune_checkpoints(run_dir);
}

namespace {
// A .tmp-* folder untouched this long was left by a writer that was killed.
constexpr std::chrono::minutes kStaleTemporary{10};
}  // namespace

Status prune_checkpoints(const std::string& run_dir, int keep) {
  std::string root = checkpoints_dir(run_dir);
  std::string latest = latest_name(root);
  std::vector<std::pair<int64_t, std::string>> steps;
  std::vector<std::string> remove;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(root, ec)) {
    std::string n = e.path().filename().string();
    if (n == latest) continue;
    if (int64_t s = step_of(n); s >= 0) {
      steps.push_back({s, e.path().string()});
    } else if (n.rfind(".tmp-", 0) == 0) {
      // Another writer may be filling a recent one: the rank 0 of a group re-formed over this
      // shared folder while a stale process (stopped, then continued) prunes.
      auto written = fs::last_write_time(e.path(), ec);
      if (!ec && fs::file_time_type::clock::now() - written > kStaleTemporary)
        remove.push_back(e.path().string());
      ec.clear();
    } else if (n.size() > 4 && n.compare(n.size() - 4, 4, ".old") == 0 &&
               step_of(n.substr(0, n.size() - 4)) >= 0 &&
               fs::exists(root + "/" + n.substr(0, n.size() - 4))) {
      remove.push_back(e.path().string());
    }
  }
  if (ec) return Status::IOError("cannot list checkpoints in {}: {}", root, ec.message());
  std::sort(steps.begin(), steps.end());
  // `latest` counts as one of the kept folders.
  int64_t kept_here = latest.empty() ? keep : keep - 1;
  for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(kept_here, 0)) < steps.size(); ++i)
    remove.push_back(steps[i].second);
  for (const std::string& p : remove) fs::remove_all(p, ec);
  return Status::OK();
}

Result<Checkpoint> read_latest_checkpoint(const std::string& run_dir) {
  std::string root = checkpoints_dir(run_dir);
  auto latest = read_file(root + "/latest");
  if (!latest.ok())
    return Status::NotFound(
        "--resume: {} has no checkpoint (checkpoints/latest is missing); "
        "start without --resume",
        run_dir);
  std::string dir = root + "/" + *latest;
  std::error_code ec;
  // Killed between the two renames of a rewrite: the previous folder of this step is complete.
  if (!fs::exists(dir, ec) && fs::exists(dir + ".old", ec)) dir += ".old";
  DLSYS_ASSIGN_OR_RETURN(std::string state_text, read_file(dir + "/state.json"));
  json state = json::parse(state_text, nullptr, false);
  if (state.is_discarded() || !state.is_object() || !state.contains("step"))
    return Status::Invalid("{}/state.json is not a checkpoint state", dir);
  Checkpoint c;
  c.folder = dir;
  try {
    c.step = state.at("step").get<int64_t>();
    c.position = {state.at("loader").at("epoch").get<int64_t>(),
                  state.at("loader").at("batch").get<int64_t>()};
    c.optimizer_steps = state.at("optimizer_steps").get<int64_t>();
    c.spec_sha256 = state.value("spec_sha256", "");
    c.extend_sha256 = state.value("extend_sha256", "");
  } catch (const json::exception& e) {
    return Status::Invalid("{}/state.json is not a checkpoint state: {}", dir, e.what());
  }
  DLSYS_ASSIGN_OR_RETURN(SafetensorsFile f, safetensors_read(dir + "/weights.safetensors"));
  for (auto& [k, t] : f.tensors) {
    if (k.rfind("param/", 0) == 0)
      c.params[k.substr(6)] = t;
    else if (k.rfind("buffer/", 0) == 0)
      c.buffers[k.substr(7)] = t;
    else if (k.rfind("optim/", 0) == 0)
      c.optimizer_state[k.substr(6)] = t;
  }
  return c;
}

Result<Checkpoint> resume_from_checkpoint(const std::string& run_dir,
                                          const std::string& spec_sha256,
                                          const ResumeTarget& target,
                                          const std::string& extend_sha256) {
  DLSYS_ASSIGN_OR_RETURN(Checkpoint c, read_latest_checkpoint(run_dir));
  const std::string& dir = c.folder;
  const bool extended = !extend_sha256.empty() && c.extend_sha256 == extend_sha256;
  if (c.spec_sha256 != spec_sha256 && !extended)
    return Status::Invalid(
        "--resume: the spec changed since the checkpoint in {}; resume with the same spec (or, "
        "with --extend, the same spec and another train.epochs under a schedule that does not "
        "depend on it), or start a new run directory",
        dir);
  for (auto& [name, dst] : target.params) {
    auto it = c.params.find(name);
    if (it == c.params.end() || !copy_same_shape(it->second, dst))
      return Status::Invalid("checkpoint {} has no parameter '{}' of shape {}", dir, name,
                             shape_str(dst->shape()));
  }
  for (auto& [name, dst] : target.buffers) {
    auto it = c.buffers.find(name);
    if (it == c.buffers.end() || !copy_same_shape(it->second, dst))
      return Status::Invalid("checkpoint {} has no running statistic '{}' of shape {}", dir, name,
                             shape_str(dst->shape()));
  }
  target.optimizer->load_state(c.optimizer_state, c.optimizer_steps);
  return c;
}

}  // namespace dlsys::train
