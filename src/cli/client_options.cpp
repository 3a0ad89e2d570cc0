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
}

Result<Connection> connect(const ClientArgs& a) {
  Connection c;
  std::string token = a.token;
  if (token.empty())
    if (const char* t = std::getenv("DLSYS_TOKEN")) token = t;
  std::string server = a.server;
  if (server.empty() && a.data_dir.empty())
    if (const char* s = std::getenv("DLSYS_SERVER")) server = s;
  if (!server.empty()) {
    DLSYS_ASSIGN_OR_RETURN(c.client, api::connect_http(server, token));
    return c;
  }
  if (a.data_dir.empty() && a.meta.empty()) {
    auto local = api::connect_http("http://127.0.0.1:8080", token);
    if (local.ok()) {
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
  c.client = api::connect_local(*c.backend);
  return c;
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
