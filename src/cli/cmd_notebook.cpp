// `dlsys notebook` (issue 25, docs/notebooks.md): Jupyter (Debian's jupyter-notebook) started
// beside a dlsys server, on loopback with a login token, in a working directory inside the data
// directory, with the Python client (clients/python) importable and the server's address and a
// token of its own in its environment. `--execute NB` runs a notebook to its end in the same
// environment instead (what the tests and scheduled reports do).
//
// The token: without --auth on the server, none is needed. With it, an admin's token is used to
// make a token of --role (editor by default) for this notebook alone, revoked when Jupyter
// stops; anyone else's token is passed on as it is.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "api/client.h"
#include "cli/client_options.h"
#include "cli/commands.h"
#include "core/file_util.h"
#include "jobs/child_process.h"

namespace dlsys::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct NotebookArgs : ClientArgs {
  int port = 8888;
  std::string dir, jupyter = "jupyter-notebook", role = "editor", execute, output;
  int64_t timeout_s = 600, max_seconds = 3600, start_timeout_s = 60;
};

// The first directory holding the Python client's package (dlsys/__init__.py): $DLSYS_PYTHON_
// CLIENT, then python/ beside this program (a build tree links it to clients/python), then
// ../share/dlsys/python (installed).
Result<std::string> python_client_dir() {
  auto holds = [](const fs::path& d) {
    std::error_code ec;
    return fs::is_regular_file(d / "dlsys" / "__init__.py", ec);
  };
  std::vector<std::string> tried;
  if (const char* env = std::getenv("DLSYS_PYTHON_CLIENT"); env && *env) tried.push_back(env);
  for (const std::string& d : program_data_dirs("python")) tried.push_back(d);
  std::error_code ec;
  for (const std::string& d : tried)
    if (holds(d)) return fs::weakly_canonical(d, ec).string();
  return Status::NotFound(
      "the Python client (package dlsys) is not beside this program (looked in {}): build dlsys "
      "from its source tree, or set DLSYS_PYTHON_CLIENT to the clients/python directory",
      fmt::join(tried, ", "));
}

// Example notebooks shipped with the program, copied into a new working directory.
void copy_examples(const fs::path& dir) {
  std::error_code ec;
  for (const std::string& src : program_data_dirs("notebooks")) {
    if (!fs::is_directory(src, ec)) continue;
    for (const auto& e : fs::directory_iterator(src, ec)) {
      if (e.path().extension() != ".ipynb") continue;
      const fs::path to = dir / e.path().filename();
      if (!fs::exists(to, ec)) fs::copy_file(e.path(), to, ec);
    }
    return;
  }
}

// The lines at the end of a log file, for an error message.
std::string log_tail(const std::string& path, size_t max_bytes = 2000) {
  auto text = read_file(path);
  if (!text.ok()) return "";
  std::string t = *text;
  if (t.size() > max_bytes) t = "..." + t.substr(t.size() - max_bytes);
  return t;
}

volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) {
  g_stop_signal = sig;
}

int run_notebook(const NotebookArgs& a) {
  // Ctrl-C, a kill or a closed terminal stop Jupyter (its own process group does not get them)
  // and revoke the notebook's token, at any point after this.
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  auto conn = connect(a);
  if (!conn.ok()) return fail(conn.status().message());
  if (Status st = need_server(*conn); !st.ok())
    return fail(st.message() + " (a notebook talks to the server over HTTP: start `dlsys server`)");
  api::ApiClient& client = *conn->client;
  const std::string server = client.where();
  auto me = client.call("GET", "/api/v1/whoami");
  if (!me.ok())
    return fail(
        fmt::format("cannot ask the server at {} who this is: {}", server, me.status().message()));
  const bool auth = me->value("auth", false);
  std::string role = me->value("role", "");
  std::string token = a.token;
  if (token.empty())
    if (const char* t = std::getenv("DLSYS_TOKEN")) token = t;
  // A token of the notebook's own (revoked when it stops) when the caller may make one.
  std::optional<int64_t> own_token;
  if (auth && role == "admin") {
    const std::string name = fmt::format("notebook-{}-{}", getpid(), now_ms());
    auto t = client.call("POST", "/api/v1/tokens", json{{"name", name}, {"role", a.role}});
    if (!t.ok()) return fail("cannot make the notebook's token: " + t.status().message());
    token = t->value("token", "");
    own_token = t->value("id", int64_t{0});
    role = a.role;
  } else if (auth) {
    note(a.quiet, fmt::format("the notebook uses your token (role {}); an admin's token would give "
                              "it a token of its own",
                              role));
  }
  // The notebook's own token is revoked however this returns (the object below, last).
  auto revoke = [&] {
    if (!own_token) return;
    auto r = client.call("DELETE", fmt::format("/api/v1/tokens/{}", *own_token));
    if (!r.ok())
      std::fprintf(stderr,
                   "warning: the notebook's token (id %lld) could not be revoked: %s; revoke it "
                   "with `dlsys tokens revoke %lld`\n",
                   static_cast<long long>(*own_token), r.status().message().c_str(),
                   static_cast<long long>(*own_token));
  };
  struct OnReturn {
    std::function<void()> fn;
    ~OnReturn() { fn(); }
  } revoke_on_return{revoke};

  auto pyclient = python_client_dir();
  if (!pyclient.ok()) return fail(pyclient.status().message());
  const fs::path dir =
      a.dir.empty() ? fs::path(data_dir_or_default(a.data_dir)) / "notebooks" : fs::path(a.dir);
  std::error_code ec;
  const bool fresh = !fs::exists(dir, ec);
  fs::create_directories(dir / ".jupyter" / "runtime", ec);
  if (ec)
    return fail(
        fmt::format("cannot make the notebooks' directory {}: {}", dir.string(), ec.message()));
  if (fresh) copy_examples(dir);

  jobs::ProcessSpec spec;
  std::string pythonpath = *pyclient;
  if (const char* p = std::getenv("PYTHONPATH"); p && *p) pythonpath += ":" + std::string(p);
  spec.env = {{"PYTHONPATH", pythonpath},
              {"DLSYS_URL", server},
              {"DLSYS_SERVER", server},
              {"DLSYS_TOKEN", token},
              // Jupyter's state stays with the notebooks, not in the user's home.
              {"JUPYTER_RUNTIME_DIR", (dir / ".jupyter" / "runtime").string()},
              {"JUPYTER_CONFIG_DIR", (dir / ".jupyter" / "config").string()},
              {"IPYTHONDIR", (dir / ".jupyter" / "ipython").string()}};
  spec.workdir = dir.string();
  spec.threads = std::max(1u, std::thread::hardware_concurrency());  // OMP_NUM_THREADS
  spec.log_path = (dir / ".jupyter" / "notebook.log").string();
  const auto t0 = std::chrono::steady_clock::now();

  if (!a.execute.empty()) {
    // Run one notebook to its end: nbconvert writes the executed copy.
    std::string in = fs::absolute(a.execute, ec).string();
    std::string out = a.output.empty() ? in : fs::absolute(a.output, ec).string();
    spec.argv = {"jupyter-nbconvert",
                 "--to",
                 "notebook",
                 "--execute",
                 in,
                 "--output",
                 out,
                 fmt::format("--ExecutePreprocessor.timeout={}", a.timeout_s)};
    spec.log_path = (dir / ".jupyter" / "execute.log").string();
    fs::remove(spec.log_path, ec);
    auto child = jobs::ChildProcess::start(spec);
    if (!child.ok()) return fail(child.status().message());
    // Each cell has --timeout-s (nbconvert); the whole notebook --max-seconds.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(a.max_seconds);
    std::optional<jobs::ExitStatus> st;
    while (!(st = (*child)->wait_for(std::chrono::milliseconds(200))) && !g_stop_signal &&
           std::chrono::steady_clock::now() < deadline) {
    }
    if (!st) (*child)->stop(std::chrono::seconds(5));
    if (g_stop_signal) return fail("stopped: the notebook did not run to its end");
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!st || !st->ok())
      return fail(fmt::format(
          "the notebook {} did not run to its end ({}); nbconvert said:\n{}\nThe cell's error is "
          "in the output notebook {} when it was written",
          a.execute, st ? st->describe() : "over --max-seconds", log_tail(spec.log_path), out));
    if (a.json)
      print_json({{"notebook", in}, {"output", out}, {"seconds", secs}, {"server", server}});
    else
      std::printf("ran %s in %.1f s against %s; the executed notebook is %s\n", a.execute.c_str(),
                  secs, server.c_str(), out.c_str());
    return 0;
  }

  // Interactive: Jupyter on loopback, with its own login token.
  const std::string jtoken = random_hex(24);
  spec.argv = {a.jupyter,
               "--no-browser",
               "--ip=127.0.0.1",
               fmt::format("--port={}", a.port),
               "--port-retries=0",
               "--NotebookApp.token=" + jtoken,
               "--notebook-dir=" + dir.string()};
  // Jupyter refuses root without it (containers and CI machines run as root).
  if (geteuid() == 0) spec.argv.push_back("--allow-root");
  fs::remove(spec.log_path, ec);
  auto child = jobs::ChildProcess::start(spec);
  if (!child.ok()) return fail(child.status().message());
  jobs::ChildProcess& jp = **child;
  // Ready when Jupyter answers its status with our token (every wait has a deadline).
  const auto deadline = t0 + std::chrono::seconds(a.start_timeout_s);
  bool ready = false;
  while (std::chrono::steady_clock::now() < deadline && !g_stop_signal) {
    if (auto ended = jp.wait_for(std::chrono::milliseconds(100))) {
      std::string tail = log_tail(spec.log_path);
      std::string hint =
          ended->code == 127 ? fmt::format(
                                   " ({} is not installed: `sudo apt-get install "
                                   "jupyter-notebook`, or name it with --jupyter)",
                                   a.jupyter)
          : tail.find("already in use") != std::string::npos
              ? fmt::format(" (port {} is taken: choose another with --port)", a.port)
              : "";
      return fail(fmt::format("Jupyter ended before it was ready: {}{}\n{}", ended->describe(),
                              hint, tail));
    }
    auto c = api::HttpConnection::open("127.0.0.1", a.port);
    if (!c.ok()) continue;
    (*c)->set_io_timeout(std::chrono::seconds(5));
    auto r = (*c)->request("GET", "/api/status", "", {{"Authorization", "token " + jtoken}});
    if (r.ok() && r->status == 200) {
      ready = true;
      break;
    }
  }
  if (!ready && g_stop_signal) {
    jp.stop(std::chrono::seconds(5));
    return fail("stopped before Jupyter was ready");
  }
  if (!ready) {
    jp.stop(std::chrono::seconds(5));
    return fail(
        fmt::format("Jupyter did not answer on port {} within {} s (--start-timeout-s); "
                    "its log:\n{}",
                    a.port, a.start_timeout_s, log_tail(spec.log_path)));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string url = fmt::format("http://127.0.0.1:{}/", a.port);
  if (a.json) {
    std::printf("%s\n", json{{"url", url},
                             {"token", jtoken},
                             {"dir", dir.string()},
                             {"server", server},
                             {"role", role},
                             {"pid", jp.pid()},
                             {"ready_seconds", secs}}
                            .dump()
                            .c_str());
  } else {
    std::printf(
        "Jupyter on %s (ready in %.1f s); log in with the token %s\n"
        "notebooks in %s; they reach the dlsys server at %s (DLSYS_URL%s), and `import dlsys` "
        "works\nCtrl-C stops it\n",
        url.c_str(), secs, jtoken.c_str(), dir.string().c_str(), server.c_str(),
        token.empty() ? "" : fmt::format(", DLSYS_TOKEN with role {}", role).c_str());
  }
  std::fflush(stdout);
  std::optional<jobs::ExitStatus> ended;
  while (!(ended = jp.wait_for(std::chrono::milliseconds(500))) && !g_stop_signal) {
  }
  if (!ended) ended = jp.stop(std::chrono::seconds(10));
  if (!g_stop_signal && !ended->ok())
    return fail(fmt::format("Jupyter ended: {}; its log is {}", ended->describe(), spec.log_path));
  return 0;
}

}  // namespace

void add_notebook(CLI::App& app, int* rc) {
  auto a = std::make_shared<NotebookArgs>();
  CLI::App* c = app.add_subcommand(
      "notebook",
      "Start Jupyter beside a dlsys server: loopback, a login token, the Python client "
      "importable, the server's address and a token in its environment (docs/notebooks.md)");
  add_client_options(c, a.get());
  c->add_option("--port", a->port, "Jupyter's port (loopback only)")->capture_default_str();
  c->add_option("--dir", a->dir,
                "The notebooks' directory (default: notebooks/ in the data "
                "directory; example notebooks are copied into a new one)");
  c->add_option("--role", a->role,
                "With --auth on the server and an admin's token: the role of the token made for "
                "the notebook (revoked when it stops)")
      ->capture_default_str()
      ->check(CLI::IsMember({"viewer", "editor"}));
  c->add_option("--jupyter", a->jupyter, "The Jupyter program to start")->capture_default_str();
  c->add_option("--execute", a->execute,
                "Run this notebook to its end in the same environment instead (nbconvert), and "
                "exit with its result");
  c->add_option("--output", a->output,
                "With --execute: where the executed notebook goes "
                "(default: over the input)");
  c->add_option("--timeout-s", a->timeout_s, "With --execute: seconds a cell may run")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-seconds", a->max_seconds,
                "With --execute: seconds the whole notebook may run before it is stopped")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--start-timeout-s", a->start_timeout_s,
                "Seconds Jupyter may take to answer before it counts as failed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->callback([a, rc] { *rc = run_notebook(*a); });
}

}  // namespace dlsys::cli
