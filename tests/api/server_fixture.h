// The fixture of the server's tests: a real HttpServer on a loopback port over a Services on a
// fresh data directory, and one keep-alive client connection to it.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <thread>

#include "api/client.h"
#include "api/http_server.h"
#include "api/services.h"
#include "core/file_util.h"

namespace dlsys::api {

class ServerFixture : public ::testing::Test {
 protected:
  // Starts a server on a fresh data directory; `extra_routes` may add test-only routes.
  // `tune` may change the server's options.
  void Start(bool auth = false, uint64_t max_body = 16 << 20,
             std::function<void(Router&)> extra_routes = nullptr,
             std::function<void(ServerOptions&)> tune = nullptr) {
    dir_ = std::filesystem::temp_directory_path() / ("dlsys-server-test-" + random_hex(6));
    ServicesOptions bo;
    bo.data_dir = dir_.string();
    bo.auth = auth;
    if (tune_services) tune_services(bo);
    auto b = Services::open(bo);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    backend_ = std::move(b).value();
    if (extra_routes) extra_routes(backend_->router());
    ServerOptions so;
    so.port = 0;
    so.access_log = nullptr;
    so.handle_signals = false;
    so.max_body = max_body;
    so.workers = 4;
    if (tune) tune(so);
    server_ = std::make_unique<HttpServer>(backend_->router(), so);
    ASSERT_TRUE(server_->listen().ok());
    thread_ = std::thread([this] { server_->run(); });
    auto c = HttpConnection::open("127.0.0.1", server_->port());
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    conn_ = std::move(c).value();
  }
  void TearDown() override {
    conn_.reset();
    if (server_) server_->shutdown();
    if (thread_.joinable()) thread_.join();
    server_.reset();
    backend_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  HttpResult Req(const std::string& method, const std::string& target, const std::string& body = "",
                 std::map<std::string, std::string> headers = {}) {
    auto r = conn_->request(method, target, body, headers);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : HttpResult{};
  }
  static json J(const HttpResult& r) { return json::parse(r.body, nullptr, false); }

  // Set before Start() to change the Services' options (a clock, a run timeout, a validator).
  std::function<void(ServicesOptions&)> tune_services;
  std::filesystem::path dir_;
  std::unique_ptr<Services> backend_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::unique_ptr<HttpConnection> conn_;
};

}  // namespace dlsys::api
