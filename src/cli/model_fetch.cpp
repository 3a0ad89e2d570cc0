#include "cli/model_fetch.h"

#include <unistd.h>

#include <cctype>

#include "cli/client_options.h"
#include "core/file_util.h"
#include "core/json_get.h"
#include "core/sha256.h"

namespace dlsys::cli {

using nlohmann::json;

Result<ModelFile> fetch_model_version(api::ApiClient& c, const std::string& text,
                                      const std::string& work) {
  const size_t at = text.find('@');
  ModelFile m;
  m.name = text.substr(0, at);
  std::string ref = at == std::string::npos ? "latest" : text.substr(at + 1);
  if (m.name.empty() || ref.empty())
    return Status::Invalid("model '{}': give name@version, name@alias or name (its newest)", text);
  const bool number = std::isdigit(static_cast<unsigned char>(ref[0]));
  const std::string base = "/api/v1/models/" + enc(m.name);
  const std::string target = base + (number ? "/versions/" + enc(ref) : "/aliases/" + enc(ref));
  DLSYS_ASSIGN_OR_RETURN(json v, c.call("GET", target));
  const std::string what = answer_to("GET", target);
  DLSYS_ASSIGN_OR_RETURN(m.version, json_get<int64_t>(v, "version", what));
  DLSYS_ASSIGN_OR_RETURN(std::string sha, json_get<std::string>(v, "sha256", what));
  m.path = work + "/model-" + std::to_string(m.version) + ".onnx";
  if (auto have = read_file(m.path); have.ok() && sha256_hex(*have) == sha) return m;
  const std::string tmp = m.path + ".tmp-" + random_hex(4);
  Status st = c.download(base + "/versions/" + std::to_string(m.version) + "/artifact", tmp);
  auto bytes = st.ok() ? read_file(tmp) : Result<std::string>(st);
  if (!bytes.ok() || sha256_hex(*bytes) != sha) {
    ::unlink(tmp.c_str());
    if (!bytes.ok()) return bytes.status().with_context("downloading " + m.label());
    return Status::IOError("the file of {} does not match its SHA-256", m.label());
  }
  DLSYS_RETURN_IF_ERROR(commit_file(tmp, m.path));
  return m;
}

}  // namespace dlsys::cli
