// What the commands that talk to a dlsys server share (`runs`, `models`, `artifacts`, `tokens`,
// `deploy`): the --server/--data-dir/--token/--json options, the connection (a server over
// HTTP, or a data directory in process through the same API code), checked reads of answers and
// table printing.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "api/client.h"
#include "api/services.h"
#include "cli/commands.h"
#include "core/json_get.h"
#include "meta/store_db.h"

namespace dlsys::cli {

struct ClientArgs {
  std::string server, data_dir, token, meta;
  bool json = false, quiet = false;
};

// Adds --server, --data-dir, --meta, --token, --json and --quiet to `c`.
void add_client_options(CLI::App* c, ClientArgs* a);

// Where the state lives: `data_dir`, or the default one ($DLSYS_HOME or ~/.dlsys).
std::string data_dir_or_default(const std::string& data_dir);

// The server a command was told to use: `flag` (--server), else $DLSYS_SERVER unless
// `local_given` (an explicit --data-dir or --meta); "" for none. `*from_env` says which.
std::string server_to_use(const std::string& flag, bool local_given, bool* from_env);

// Connects to the server at `url` that a command was told to use (by --server, or by
// $DLSYS_SERVER when `from_env`). Never falls back: when it does not answer the error names the
// URL, the cause (refused, timed out) and what to do, including the data directory `data_dir`
// (default when empty) the command would use without it.
Result<std::unique_ptr<api::ApiClient>> connect_server(const std::string& url, bool from_env,
                                                       const std::string& token,
                                                       const std::string& data_dir);

// Prints "note: <text>" on stderr (never stdout: --json output stays parseable) unless `quiet`.
void note(bool quiet, const std::string& text);

// The client and, for local access, the backend it dispatches to.
struct Connection {
  std::unique_ptr<api::Services> backend;
  std::unique_ptr<api::ApiClient> client;
  std::string data_dir;  // with a backend: the data directory it uses
};

// Where a command's state lives, decided once:
// - --server URL, or $DLSYS_SERVER (without --data-dir/--meta): that server, or an error when it
//   does not answer (connect_server; never a fallback);
// - --data-dir D or --meta URL: the data directory in process, silently (it was asked for);
// - neither: the dlsys server on 127.0.0.1:8080 when one answers, else the default data
//   directory in process, each with a note on stderr saying which (unless --quiet).
Result<Connection> connect(const ClientArgs& a);

// `st` with where it looked appended when it is a NotFound ("... (looked in data directory D)"
// or "... (looked on the server at URL)"), so a user with two stores sees which one answered.
Status with_where(Status st, const Connection& c);

// Unavailable when `c` is a data directory in process rather than a running server (what only a
// server does: deployments).
Status need_server(const Connection& c);

// Runs `fn(client)`, printing its error (with_where); returns the exit code. With
// `server_only`, a data directory in process is refused (need_server).
template <typename Fn>
int with_client(const ClientArgs& a, Fn&& fn, bool server_only = false) {
  auto c = connect(a);
  if (!c.ok()) return fail(c.status().message());
  Status st = server_only ? need_server(*c) : Status::OK();
  if (st.ok()) st = with_where(fn(*c->client), *c);
  if (!st.ok()) return fail(st.message());
  return 0;
}

// "the server's answer to GET /api/v1/runs" (the query left out), for checked reads.
std::string answer_to(const std::string& method, const std::string& target);

// The array answer[key], each element read as a T with meta::from_json.
template <typename T>
Result<std::vector<T>> records(const nlohmann::json& answer, const char* key,
                               const std::string& what) {
  DLSYS_ASSIGN_OR_RETURN(nlohmann::json list, json_get<nlohmann::json>(answer, key, what));
  if (!list.is_array())
    return Status::Invalid("{}: '{}' must be an array, got {}", what, key, json_type_phrase(list));
  std::vector<T> out;
  for (size_t i = 0; i < list.size(); ++i) {
    DLSYS_ASSIGN_OR_RETURN(T r,
                           meta::from_json<T>(list[i], fmt::format("{}: {}[{}]", what, key, i)));
    out.push_back(std::move(r));
  }
  return out;
}

// The array answer[key] (plain JSON objects, read with json_get by the caller).
Result<nlohmann::json> json_list(const nlohmann::json& answer, const char* key,
                                 const std::string& what);
// A number for a table cell ("%.6g").
std::string number_text(double v);
// Prints rows as aligned columns (cells cut at 48 characters); the first row is the header.
void print_table(const std::vector<std::vector<std::string>>& rows);
// Pretty-printed JSON for --json.
void print_json(const nlohmann::json& j);
// Percent-encodes one path segment.
std::string enc(const std::string& s);

}  // namespace dlsys::cli
