#include "api/http_types.h"

#include <cctype>

namespace dlsys::api {

std::string Request::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

std::string Request::query_or(const std::string& name, const std::string& fallback) const {
  auto it = query.find(name);
  return it == query.end() ? fallback : it->second;
}

Response Response::json_body(const json& j, int status) {
  Response r;
  r.status = status;
  r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

Response Response::error(int http_status, const std::string& code, const std::string& message) {
  return json_body({{"error", {{"code", code}, {"message", message}}}}, http_status);
}

Response Response::error(const Status& st) {
  return error(http_status_of(st.code()), error_code_of(st.code()), st.message());
}

int http_status_of(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
      return 409;
    case StatusCode::kUnsupported:
      return 501;
    case StatusCode::kUnavailable:
    case StatusCode::kDeadlineExceeded:  // a queued request that waited too long: retry later
      return 503;
    case StatusCode::kIOError:
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

const char* error_code_of(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    case StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kUnsupported:
      return "UNSUPPORTED";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kIOError:
      return "IO_ERROR";
    case StatusCode::kInternal:
      return "INTERNAL";
  }
  return "INTERNAL";
}

StatusCode status_code_of_http(int s) {
  switch (s) {
    case 400:
    case 413:
      return StatusCode::kInvalidArgument;
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
    case 405:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kAlreadyExists;
    case 501:
      return StatusCode::kUnsupported;
    case 503:
      return StatusCode::kUnavailable;
    default:
      return s < 400 ? StatusCode::kOk : StatusCode::kInternal;
  }
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool url_decode(std::string_view s, std::string* out) {
  out->clear();
  out->reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out->push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return false;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

std::string url_encode(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Status parse_target(std::string_view target, std::string* path,
                    std::map<std::string, std::string>* query) {
  size_t q = target.find('?');
  std::string_view raw_path = target.substr(0, q);
  if (raw_path.empty() || raw_path[0] != '/')
    return Status::Invalid("request target '{}' must start with '/'",
                           std::string(target.substr(0, 100)));
  if (!url_decode(raw_path, path)) return Status::Invalid("request path has a malformed %-escape");
  if (q == std::string_view::npos) return Status::OK();
  std::string_view qs = target.substr(q + 1);
  while (!qs.empty()) {
    size_t amp = qs.find('&');
    std::string_view kv = qs.substr(0, amp);
    size_t eq = kv.find('=');
    std::string k, v;
    std::string raw_k(kv.substr(0, eq)),
        raw_v(eq == std::string_view::npos ? "" : kv.substr(eq + 1));
    for (char& c : raw_k)
      if (c == '+') c = ' ';
    for (char& c : raw_v)
      if (c == '+') c = ' ';
    if (!url_decode(raw_k, &k) || !url_decode(raw_v, &v))
      return Status::Invalid("query parameter '{}' has a malformed %-escape",
                             std::string(kv.substr(0, 64)));
    if (!k.empty()) (*query)[k] = v;
    if (amp == std::string_view::npos) break;
    qs = qs.substr(amp + 1);
  }
  return Status::OK();
}

}  // namespace dlsys::api
