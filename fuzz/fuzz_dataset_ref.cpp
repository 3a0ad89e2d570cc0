// fuzz_dataset_ref: dataset version references ("digits@v3", "digits@prod:train", ...) as
// every caller gets them from users: data::parse_version_ref, then DatasetStore::resolve
// against a small store (dataset "d": v1 and v2, tag "t" on v1, tag "prod" on v2).
//
// Each input is tried as a whole reference, and as the part after "d@" (what the REST routes
// build from {ref}, ?from= and ?to=: name + "@" + ref).
//
// A finding is a sanitizer report, an Internal error, or an error message that holds the bytes
// of a file that is no ref: canary files with a unique marker lie in every directory between
// the tags' and the store's parent, and no message may ever contain the marker (it would mean
// a reference escaped the refs and a file's content reached the caller, e.g. through a tag
// name with "../").
#include <cstdint>
#include <memory>
#include <string>

#include "data/dataset_store.h"
#include "data/push.h"
#include "fuzz_common.h"

namespace {

using dlsys::fuzz::fail;
using dlsys::fuzz::shown;
namespace data = dlsys::data;

struct Fixture {
  std::unique_ptr<data::DatasetStore> store;
  std::string marker;
};
Fixture* g = nullptr;

void push_version(const std::string& dir, int v) {
  std::string csv = dir + "/seed" + std::to_string(v) + ".csv";
  std::string rows = "x,y\n";
  for (int i = 0; i < 10; ++i) rows += std::to_string(i) + "," + std::to_string(i * v) + "\n";
  dlsys::fuzz::write_text(csv, rows);
  auto src = data::open_source(csv, "csv", {});
  if (!src.ok()) fail("open_source: %s", src.status().to_string().c_str());
  data::PushOptions po;
  po.message = "fuzz fixture";
  auto r = data::push(*g->store, "d", **src, po);
  if (!r.ok()) fail("push: %s", r.status().to_string().c_str());
}

void check(const dlsys::Status& st, const std::string& text) {
  if (st.ok()) return;
  if (st.code() == dlsys::StatusCode::kInternal)
    fail("an internal error for %s: %s", shown(text).c_str(), st.to_string().c_str());
  // An input may hold the marker itself (libFuzzer learns it from the comparisons below) and
  // the message quote it back: only a marker the input did not carry is a leak.
  if (text.find(g->marker) == std::string::npos &&
      st.message().find(g->marker) != std::string::npos)
    fail("the error for %s holds the content of a file outside the store: %s", shown(text).c_str(),
         shown(st.message()).c_str());
}

void try_ref(const std::string& text) {
  auto ref = data::parse_version_ref(text);
  check(ref.status(), text);
  if (!ref.ok()) return;
  auto v = g->store->resolve(*ref);
  check(v.status(), text);
  if (v.ok() && text.find(g->marker) == std::string::npos &&
      v->manifest.dump().find(g->marker) != std::string::npos)
    fail("%s resolved to a manifest holding a file outside the store", shown(text).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string dir = dlsys::fuzz::make_temp_dir("dataset-ref");
  g = new Fixture();
  // Canaries: files that are no ref, holding a unique marker. Their content looks like a
  // manifest id (hex), so a reader that trusts it goes on to use it.
  g->marker = "c0ffee" + dlsys::random_hex(16);
  auto s = data::DatasetStore::open(dir + "/store");
  if (!s.ok()) fail("DatasetStore::open: %s", s.status().to_string().c_str());
  g->store = std::move(s).value();
  push_version(dir, 1);
  push_version(dir, 2);
  for (auto [ref, tag] : {std::pair{"d@v1", "t"}, std::pair{"d@v2", "prod"}}) {
    dlsys::Status st = g->store->tag(*data::parse_version_ref(ref), tag);
    if (!st.ok()) fail("tag: %s", st.to_string().c_str());
  }
  // They lie in every directory on the way from a tag's (<dir>/store/refs/d/tags) to outside
  // the store, under the names refs have, so that one "../" in a reference the fuzzer already
  // has ("d@t" -> "d@../t") reaches one: any traversal is found, not one exact path.
  for (const char* d : {"", "/store", "/store/refs", "/store/refs/d"})
    for (const char* name : {"canary", "t", "prod", "1", "v1", "latest"})
      dlsys::fuzz::write_text(dir + d + "/" + name, g->marker);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  std::string text(reinterpret_cast<const char*>(data), size);
  try_ref(text);
  try_ref("d@" + text);
  return 0;
}
