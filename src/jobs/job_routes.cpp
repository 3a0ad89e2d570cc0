#include "jobs/job_routes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>

#include "api/meta_routes.h"
#include "api/request_util.h"
#include "core/utf8.h"

namespace dlsys::jobs {
namespace {

using api::Access;
using api::Request;
using api::Response;
using nlohmann::json;

// How many bytes at the end of `s` begin a UTF-8 sequence that `s` cuts short (0 when none):
// a chunk of a log ends before them, and the next chunk starts with them.
size_t cut_sequence(std::string_view s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return len > back ? back : 0;
  }
  return 0;
}

Result<int64_t> job_id(const Request& r) {
  DLSYS_ASSIGN_OR_RETURN(int64_t id, api::parse_int(r.param("id"), "job id"));
  if (id < 1) return Status::Invalid("job id {} must be 1 or more", id);
  return id;
}

}  // namespace

void add_job_routes(api::Router& router, meta::MetaStore& store, JobRoutesOptions options) {
  auto o = std::make_shared<const JobRoutesOptions>(std::move(options));
  meta::MetaStore* s = &store;
  router.add("POST", "/api/v1/jobs", Access::kWrite, [s, o](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json body, api::body_object(r));
    DLSYS_ASSIGN_OR_RETURN(JobSpec spec, job_spec_from_json(body, "the job spec"));
    // The owner is who submits; an admin may submit for someone else.
    meta::Principal owner = r.principal;
    if (!spec.owner.empty() && spec.owner != owner.name) {
      if (owner.role != meta::Role::kAdmin)
        return Status::PermissionDenied(
            "'owner' is '{}' but you are '{}': only an admin submits jobs for someone else "
            "(leave owner out)",
            spec.owner, owner.name);
      owner.name = spec.owner;
    }
    spec.owner = owner.name;
    if (o->command_jobs_need_admin && spec.kind == JobKind::kCommand &&
        r.principal.role != meta::Role::kAdmin)
      return Status::PermissionDenied(
          "a command job runs any program as the server's user: on a server with --auth only an "
          "admin submits one (train jobs are open to editors)");
    if (o->validate) DLSYS_RETURN_IF_ERROR(o->validate(spec));
    meta::NewJob n;
    n.name = spec.name;
    n.kind = job_kind_name(spec.kind);
    n.spec = to_json(spec);
    n.priority = spec.priority;
    n.threads = spec.resources.threads;
    n.memory_bytes = spec.resources.memory_bytes;
    n.max_retries = spec.max_retries;
    DLSYS_ASSIGN_OR_RETURN(meta::Job j, s->jobs().submit(n, owner));
    if (o->wake) o->wake();
    return Response::json_body(j, 201);
  });
  router.add("GET", "/api/v1/jobs", Access::kRead, [s](Request& r) -> Result<Response> {
    std::string state = r.query_or("state", "");
    for (char& c : state) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    DLSYS_ASSIGN_OR_RETURN(int n, api::page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(
        auto p, s->jobs().list(state, r.query_or("owner", ""), n, r.query_or("page_token", "")));
    return api::page_response(p, "jobs");
  });
  // Before /api/v1/jobs/{id}: routes match in the order added.
  router.add("GET", "/api/v1/jobs/usage", Access::kRead, [s, o](Request& r) -> Result<Response> {
    const std::string by = r.query_or("by", "owner");
    DLSYS_ASSIGN_OR_RETURN(int64_t since, api::parse_int(r.query_or("since_ms", "0"), "since_ms"));
    if (since < 0) return Status::Invalid("since_ms {} must be 0 or more", since);
    DLSYS_ASSIGN_OR_RETURN(auto rows, s->jobs().usage(by, since));
    json out = {{"by", by}, {"since_ms", since}, {"core_hour_price", o->core_hour_price}};
    json list = json::array();
    for (const meta::JobUsage& u : rows) {
      json j = u;
      j["cost"] = static_cast<double>(u.core_ms) / 3.6e6 * o->core_hour_price;
      list.push_back(std::move(j));
    }
    out["usage"] = std::move(list);
    return Response::json_body(out);
  });
  router.add("GET", "/api/v1/jobs/{id}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, job_id(r));
    DLSYS_ASSIGN_OR_RETURN(meta::Job j, s->jobs().get(id));
    return Response::json_body(j);
  });
  router.add("POST", "/api/v1/jobs/{id}/cancel", Access::kWrite,
             [s, o](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, job_id(r));
               DLSYS_ASSIGN_OR_RETURN(meta::Job j, s->jobs().cancel(id, r.principal));
               if (o->wake) o->wake();
               return Response::json_body(j);
             });
  router.add("GET", "/api/v1/jobs/{id}/log", Access::kRead, [s, o](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, job_id(r));
    DLSYS_ASSIGN_OR_RETURN(meta::Job j, s->jobs().get(id));
    DLSYS_ASSIGN_OR_RETURN(int64_t offset, api::parse_int(r.query_or("offset", "0"), "offset"));
    DLSYS_ASSIGN_OR_RETURN(
        int64_t max_bytes,
        api::parse_int(r.query_or("max_bytes", std::to_string(kMaxLogChunk)), "max_bytes"));
    if (offset < 0) return Status::Invalid("offset {} must be 0 or more", offset);
    if (max_bytes < 1 || max_bytes > kMaxLogChunk)
      return Status::Invalid("max_bytes {} must be from 1 to {}", max_bytes, kMaxLogChunk);
    json out = {{"id", j.id}, {"state", j.state}, {"offset", offset}, {"text", ""}, {"size", 0}};
    const std::string path = o->work_dir + "/" + std::to_string(id) + "/log";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Response::json_body(out);  // not started yet: an empty log
    struct stat st {};
    ::fstat(fd, &st);
    const int64_t size = st.st_size;
    // At least 4 bytes, so that a piece always holds the character it starts with.
    const int64_t want = std::min(std::max<int64_t>(max_bytes, 4), size - offset);
    std::string buf(static_cast<size_t>(std::max<int64_t>(0, want)), '\0');
    ssize_t got = buf.empty() ? 0 : ::pread(fd, buf.data(), buf.size(), offset);
    ::close(fd);
    if (got < 0) return Status::IOError("cannot read the log of job {}", id);
    buf.resize(static_cast<size_t>(got));
    // A multi-byte character cut at the end comes whole with the next piece.
    if (offset + got < size) buf.resize(buf.size() - cut_sequence(buf));
    out["text"] = printable_utf8(buf);
    out["offset"] = offset + static_cast<int64_t>(buf.size());
    out["size"] = size;
    return Response::json_body(out);
  });
}

}  // namespace dlsys::jobs
