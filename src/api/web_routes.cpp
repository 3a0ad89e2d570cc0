// The web UI's files: see web_routes.h.
#include "api/web_routes.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "core/file_util.h"

namespace dlsys::api {

namespace fs = std::filesystem;

namespace {

const char* content_type_of(const fs::path& p) {
  const std::string ext = p.extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".woff2") return "font/woff2";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

// The page may load only this server's scripts and talk only to this server: a script
// injected into data the UI shows (a run name, a param value) cannot run or send anything out.
// Styles may be inline (charts set element styles); images may be data: and blob: URLs (an
// artifact preview is a blob made from a fetch that carried the token).
constexpr const char* kPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'";

void add_page_headers(Response* r) {
  r->headers.push_back({"Cache-Control", "no-cache"});
  r->headers.push_back({"Content-Security-Policy", kPolicy});
  r->headers.push_back({"X-Content-Type-Options", "nosniff"});
  r->headers.push_back({"X-Frame-Options", "DENY"});
  r->headers.push_back({"Referrer-Policy", "no-referrer"});
}

bool safe_asset_path(const std::string& p) {
  if (p.empty() || p.size() > 512 || p.front() == '/') return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t slash = p.find('/', start);
    if (slash == std::string::npos) slash = p.size();
    const std::string part = p.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = slash + 1;
  }
  for (unsigned char c : p)
    if (c < 0x20 || c == 0x7f || c == '\\') return false;
  return true;
}

Response not_built() {
  Response r;
  r.status = 404;
  r.content_type = "text/html; charset=utf-8";
  r.body =
      "<!doctype html><meta charset=utf-8><title>dlsys</title><p>The dlsys web UI is not "
      "built into this program. Build it with <code>make build</code> (it runs <code>npm "
      "ci</code> and <code>vite build</code> in <code>web/</code>), or start the server with "
      "<code>--web-dir DIR</code> naming a built UI. The REST API is at <code>/api/v1</code>.";
  add_page_headers(&r);
  return r;
}

}  // namespace

std::string default_web_dir() {
  auto holds_ui = [](const fs::path& d) {
    std::error_code ec;
    return fs::is_regular_file(d / "index.html", ec);
  };
  if (const char* env = std::getenv("DLSYS_WEB_DIR"); env && *env)
    return holds_ui(env) ? fs::path(env).string() : "";
  std::error_code ec;
  for (const std::string& d : program_data_dirs("web"))
    if (holds_ui(d)) return fs::weakly_canonical(d, ec).string();
  return "";
}

void add_web_routes(Router& router, const std::string& dir) {
  std::error_code ec;
  const fs::path root = dir.empty() ? fs::path() : fs::weakly_canonical(dir, ec);
  const bool built = !dir.empty() && !ec && fs::is_regular_file(root / "index.html", ec);
  router.add("GET", "/", Access::kPublic, [root, built](Request&) -> Result<Response> {
    std::error_code ec;
    // (A build in progress may have removed it since the start.)
    if (!built || !fs::is_regular_file(root / "index.html", ec)) return not_built();
    Response r;
    r.content_type = "text/html; charset=utf-8";
    r.file_path = (root / "index.html").string();
    add_page_headers(&r);
    return r;
  });
  router.add(
      "GET", "/assets/{path...}", Access::kPublic, [root, built](Request& req) -> Result<Response> {
        const std::string& p = req.param("path");
        auto missing = [&p] { return Status::NotFound("no web asset '{}'", p); };
        if (!built || !safe_asset_path(p)) return missing();
        std::error_code ec;
        const fs::path file = fs::weakly_canonical(root / "assets" / p, ec);
        // A link inside assets/ may not lead out of the UI's assets (which may be a link).
        std::error_code ec2;
        const std::string prefix = fs::weakly_canonical(root / "assets", ec2).string() + "/";
        if (ec || ec2 || file.string().rfind(prefix, 0) != 0 || !fs::is_regular_file(file, ec))
          return missing();
        Response r;
        r.content_type = content_type_of(file);
        r.file_path = file.string();
        r.headers.push_back({"Cache-Control", "public, max-age=31536000, immutable"});
        r.headers.push_back({"X-Content-Type-Options", "nosniff"});
        return r;
      });
}

}  // namespace dlsys::api
