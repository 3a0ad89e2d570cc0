// fuzz_run_filter: the run search language. Input lines: the filter, then (optionally) the
// order ("metrics.acc DESC"), then a page token. The filter and the order are compiled
// (meta::compile_run_filter, meta::parse_run_order) and run by RunTracking::search_runs on an
// SQLite store with a few runs (params lr and batch, tags team and "val set", metrics
// accuracy, loss and "val loss"; statuses RUNNING and FINISHED).
//
// A finding is a sanitizer report; an Internal or IOError status (the SQL the compiler made
// failed in the database: a 500 for a user's filter); or a filter and order that compile but
// whose search fails anyway (with no page token, nothing else can fail).
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_common.h"
#include "meta/meta_store.h"
#include "meta/run_filter.h"

namespace {

using dlsys::fuzz::fail;
using dlsys::fuzz::shown;
namespace meta = dlsys::meta;

meta::MetaStore* g_store = nullptr;

void check(const dlsys::Status& st, const char* what, const std::string& input) {
  if (st.code() == dlsys::StatusCode::kInternal || st.code() == dlsys::StatusCode::kIOError)
    fail("%s failed with a server error for %s: %s", what, shown(input).c_str(),
         st.to_string().c_str());
}

void must(const dlsys::Status& st, const char* what) {
  if (!st.ok()) fail("fixture step '%s': %s", what, st.to_string().c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string dir = dlsys::fuzz::make_temp_dir("run-filter");
  auto s = meta::MetaStore::open(dir + "/meta.db", 2);
  if (!s.ok()) fail("MetaStore::open: %s", s.status().to_string().c_str());
  g_store = s->release();  // never destroyed: the fuzzer exits with it open
  meta::Principal who{"fuzz", meta::Role::kAdmin};
  auto e = g_store->runs().create_experiment("e", "", who);
  must(e.status(), "experiment");
  int64_t exp = e->id;
  for (int i = 0; i < 4; ++i) {
    auto r = g_store->runs().create_run(
        exp, "run" + std::to_string(i),
        {{"lr", i % 2 ? "0.1" : "0.01"}, {"batch", std::to_string(32 << i)}},
        {{"team", i % 2 ? "a" : "b"}, {"val set", "x"}}, who);
    must(r.status(), "run");
    int64_t id = r->id;
    must(g_store->runs().log_batch(id,
                                   {{"accuracy", 0.5 + 0.1 * i, 0, 0},
                                    {"loss", 1.0 / (i + 1), 0, 0},
                                    {"val loss", 2.0 / (i + 1), 1, 0}},
                                   {}, {}, who),
         "metrics");
    if (i % 2) must(g_store->runs().update_run(id, "FINISHED", who).status(), "finish");
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16384) return 0;
  std::string input(reinterpret_cast<const char*>(data), size);
  std::string lines[3];
  size_t start = 0;
  for (int i = 0; i < 3 && start <= input.size(); ++i) {
    size_t nl = i < 2 ? input.find('\n', start) : std::string::npos;
    lines[i] = input.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  const std::string& filter = lines[0];
  const std::string& order = lines[1];
  const std::string& token = lines[2];

  meta::SqlParams params;
  auto where = meta::compile_run_filter(filter, &params);
  check(where.status(), "compile_run_filter", input);
  auto ord = meta::parse_run_order(order, &params);
  check(ord.status(), "parse_run_order", input);

  meta::SearchRunsRequest req;
  req.filter = filter;
  req.order_by = order;
  req.page_token = token;
  req.page_size = 2;
  auto page = g_store->runs().search_runs(req);
  check(page.status(), "search_runs", input);
  if (where.ok() && ord.ok() && token.empty() && !page.ok())
    fail("the filter and order compile but the search fails: %s\ninput: %s",
         page.status().to_string().c_str(), shown(input).c_str());
  // Follow the next page once: page tokens come back from the server and must work.
  if (page.ok() && !page->next_page_token.empty()) {
    req.page_token = page->next_page_token;
    auto next = g_store->runs().search_runs(req);
    if (!next.ok())
      fail("the next page token %s fails: %s\ninput: %s", req.page_token.c_str(),
           next.status().to_string().c_str(), shown(input).c_str());
  }
  return 0;
}
