// Starts a real PostgreSQL server (Debian's postgresql package) for a test: initdb in a
// temporary directory, a free loopback port, stopped and removed by the destructor. When the
// test runs as root, the server runs as the `postgres` user (PostgreSQL refuses root).
#pragma once

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "core/status.h"
#include "testing/free_port.h"

namespace dlsys::testing {

class PostgresServer {
 public:
  static Result<std::unique_ptr<PostgresServer>> start() {
    const std::string bin = "/usr/lib/postgresql/15/bin";
    if (!std::filesystem::exists(bin + "/initdb"))
      return Status::NotFound(
          "{}/initdb is missing: install Debian's postgresql package "
          "(scripts/install-deps.sh does)",
          bin);
    char tmpl[] = "/tmp/dlsys-pg-XXXXXX";
    if (!mkdtemp(tmpl)) return Status::IOError("mkdtemp failed");
    std::unique_ptr<PostgresServer> s(new PostgresServer());
    s->dir_ = tmpl;
    s->port_ = free_loopback_port();
    std::string as;
    if (geteuid() == 0) {
      passwd* pw = getpwnam("postgres");
      if (!pw)
        return Status::NotFound("running as root needs the 'postgres' user to start PostgreSQL");
      if (chown(s->dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
        return Status::IOError("cannot chown {}", s->dir_);
      as = "runuser -u postgres -- ";
    }
    s->as_ = as;
    std::string data = s->dir_ + "/data";
    std::string cmd = as + bin + "/initdb -D " + data +
                      " -U postgres --auth=trust -E UTF8 --no-sync >" + s->dir_ +
                      "/initdb.log 2>&1";
    if (std::system(cmd.c_str()) != 0)
      return Status::Internal("initdb failed; see {}/initdb.log", s->dir_);
    cmd = as + bin + "/pg_ctl -D " + data + " -l " + s->dir_ + "/server.log -w -t 60 -o \"-p " +
          std::to_string(s->port_) + " -k " + s->dir_ +
          " -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" start >/dev/null "
          "2>&1";
    if (std::system(cmd.c_str()) != 0)
      return Status::Internal("pg_ctl start failed; see {}/server.log", s->dir_);
    s->running_ = true;
    return s;
  }

  ~PostgresServer() {
    if (running_) {
      std::string cmd = as_ + "/usr/lib/postgresql/15/bin/pg_ctl -D " + dir_ +
                        "/data -m immediate -w stop >/dev/null 2>&1";
      (void)std::system(cmd.c_str());
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // URL of database `db` (the default database is "postgres").
  std::string url(const std::string& db = "postgres") const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
  }

 private:
  PostgresServer() = default;
  std::string dir_, as_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace dlsys::testing
