#include "cli/client_options.h"

#include <cstdio>
#include <cstdlib>

namespace dlsys::cli {

using json = nlohmann::json;

void add_client_options(CLI::App* c, ClientArgs* a) {
  c->add_option("--server", a->server, "Server URL, e.g. http://127.0.0.1:8080 (or $DLSYS_SERVER)");
  c->add_option("--data-dir", a->data_dir, "Use this data directory directly instead of a server");
  c->add_option("--meta", a->meta, "With --data-dir: the PostgreSQL URL of the metadata database");
  c->add_option("--token", a->token, "API token (or $DLSYS_TOKEN)");
  c->add_flag("--json", a->json, "Print JSON for scripts");
  c->add_flag("--quiet", a->quiet,
              "No note on stderr saying which server or data directory is used");
}

std::string data_dir_or_default(const std::string& data_dir) {
  return data_dir.empty() ? api::default_data_dir() : data_dir;
}

std::string server_to_use(const std::string& flag, bool local_given, bool* from_env) {
  *from_env = false;
  if (!flag.empty()) return flag;
  if (local_given) return "";
  const char* s = std::getenv("DLSYS_SERVER");
  if (s == nullptr || *s == 0) return "";
  *from_env = true;
  return s;
}

Result<std::unique_ptr<api::ApiClient>> connect_server(const std::string& url, bool from_env,
                                                       const std::string& token,
                                                       const std::string& data_dir) {
  auto c = api::connect_http(url, token);
  if (c.ok()) return c;
  if (c.status().code() != StatusCode::kUnavailable) return c.status();
  // Never a silent fallback to the data directory: the user meant that server.
  std::string cause = c.status().message();
  cause = cause.substr(0, cause.find("; start it with"));
  return Status::Unavailable(
      "{} (the address comes from {}); start it with `dlsys server`, or {} to use the data "
      "directory {} instead",
      cause, from_env ? "$DLSYS_SERVER" : "--server",
      from_env ? "unset DLSYS_SERVER" : "drop --server", data_dir_or_default(data_dir));
}

void note(bool quiet, const std::string& text) {
  if (!quiet) std::fprintf(stderr, "note: %s\n", text.c_str());
}

Result<Connection> connect(const ClientArgs& a) {
  Connection c;
  std::string token = a.token;
  if (token.empty())
    if (const char* t = std::getenv("DLSYS_TOKEN")) token = t;
  bool local_given = !a.data_dir.empty() || !a.meta.empty();
  bool from_env = false;
  std::string server = server_to_use(a.server, local_given, &from_env);
  if (!server.empty()) {
    DLSYS_ASSIGN_OR_RETURN(c.client, connect_server(server, from_env, token, a.data_dir));
    return c;
  }
  if (!local_given) {
    const std::string local_url = "http://127.0.0.1:8080";
    auto local = api::connect_http(local_url, token);
    if (local.ok()) {
      note(a.quiet, "using the dlsys server at " + local_url);
      c.client = std::move(local).value();
      return c;
    }
  }
  api::ServicesOptions bo;
  bo.data_dir = a.data_dir;
  bo.meta_url = a.meta;
  bo.db_connections = 2;
  bo.model_validator = validate_onnx_model;
  DLSYS_ASSIGN_OR_RETURN(c.backend, api::Services::open(bo));
  c.data_dir = c.backend->options().data_dir;
  if (!local_given)
    note(a.quiet, fmt::format("using data directory {} (no server given, none on 127.0.0.1:8080)",
                              c.data_dir));
  c.client = api::connect_local(*c.backend);
  return c;
}

Status with_where(Status st, const Connection& c) {
  if (st.ok() || st.code() != StatusCode::kNotFound) return st;
  std::string where =
      c.backend ? "in data directory " + c.data_dir : "on the server at " + c.client->where();
  return Status(st.code(), fmt::format("{} (looked {})", st.message(), where));
}

std::string answer_to(const std::string& method, const std::string& target) {
  return fmt::format("the server's answer to {} {}", method, target.substr(0, target.find('?')));
}

Result<json> json_list(const json& answer, const char* key, const std::string& what) {
  DLSYS_ASSIGN_OR_RETURN(json list, json_get<json>(answer, key, what));
  if (!list.is_array())
    return Status::Invalid("{}: '{}' must be an array, got {}", what, key, json_type_phrase(list));
  return list;
}

std::string number_text(double v) {
  return fmt::format("{:.6g}", v);
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], std::min<size_t>(r[i].size(), 48));
    }
  for (auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      std::string cell = r[i].size() > 48 ? r[i].substr(0, 45) + "..." : r[i];
      line += cell + std::string(w[i] - cell.size() + (i + 1 < r.size() ? 2 : 0), ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

void print_json(const json& j) {
  std::printf("%s\n", j.dump(2).c_str());
}

std::string enc(const std::string& s) {
  return api::url_encode(s);
}

Status need_server(const Connection& c) {
  if (c.backend)
    return Status::Unavailable(
        "deployments live in a running server: start one with `dlsys server` (or give --server "
        "URL)");
  return Status::OK();
}

}  // namespace dlsys::cli
