#include "dist/elastic.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace dlsys::dist {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string join_list(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

// A comma-separated list of ids ("1,3"; empty: none) into `out`; false when it is not one.
bool parse_ids(const std::string& text, std::vector<int>* out) {
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find(',', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    if (item.empty() || item.size() > 8 ||
        item.find_first_not_of("0123456789") != std::string::npos)
      return false;
    out->push_back(std::stoi(item));
    at = end + 1;
  }
  return true;
}

// The claimed decision: the ids that came, and the world the claimer chose from them with its
// --min-workers and micro-batches (0: too few to go on). Every survivor follows it, whatever its
// own flags say, so that no two can act differently.
struct Decision {
  std::vector<int> came;    // in the group or not needed
  std::vector<int> silent;  // joined, but a majority of those who joined found them silent
  int world = 0;
  int min_workers = 0;
  int64_t divides = 0;
  int64_t power_of_two = 0;  // 1: the world had to be a power of two
};

// The largest world at most `n` that `d` allows.
int allowed_world(const Decision& d, int n) {
  while (n > 0 && ((d.divides > 0 && d.divides % n != 0) || (d.power_of_two && (n & (n - 1)) != 0)))
    --n;
  return n;
}

std::string encode(const Decision& d) {
  return fmt::format("came={};silent={};world={};min={};divides={};pow2={}", join_list(d.came),
                     join_list(d.silent), d.world, d.min_workers, d.divides, d.power_of_two);
}

Result<Decision> decode(const std::string& text, const std::string& key, const Membership& failed) {
  auto bad = [&] {
    return Status::FailedPrecondition(
        "rendezvous key '{}' holds '{}', not a re-formed group: is the rendezvous shared with "
        "another run? (use a fresh one)",
        key, text.substr(0, 80));
  };
  auto number = [](const std::string& s, int64_t* out) {
    if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789") != std::string::npos)
      return false;
    *out = std::stoll(s);
    return true;
  };
  Decision d;
  std::string came, silent, world, min, divides, pow2;
  for (size_t at = 0; at <= text.size();) {
    size_t end = text.find(';', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    const size_t eq = item.find('=');
    const std::string name = item.substr(0, eq),
                      value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (name == "came")
      came = value;
    else if (name == "silent")
      silent = value;
    else if (name == "world")
      world = value;
    else if (name == "min")
      min = value;
    else if (name == "divides")
      divides = value;
    else if (name == "pow2")
      pow2 = value;
    else
      return bad();
    at = end + 1;
  }
  int64_t v = 0;
  if (!number(world, &v)) return bad();
  d.world = static_cast<int>(v);
  if (!number(min, &v)) return bad();
  d.min_workers = static_cast<int>(v);
  if (!number(divides, &d.divides) || !number(pow2, &d.power_of_two)) return bad();
  if (!parse_ids(came, &d.came) || !parse_ids(silent, &d.silent)) return bad();
  // Ids of the failed generation, each once, in increasing order.
  for (const std::vector<int>* ids : {&d.came, &d.silent})
    for (size_t i = 0; i < ids->size(); ++i)
      if ((i > 0 && (*ids)[i] <= (*ids)[i - 1]) ||
          std::find(failed.members.begin(), failed.members.end(), (*ids)[i]) ==
              failed.members.end())
        return bad();
  for (int id : d.silent)
    if (std::find(d.came.begin(), d.came.end(), id) != d.came.end()) return bad();
  if (d.world < 0 || d.world > static_cast<int>(d.came.size()) || d.min_workers < 0 ||
      d.min_workers > (1 << 24))
    return bad();
  return d;
}

// Waits for the members of `failed` to join generation g, until all have or `deadline`, or
// until another survivor claimed the generation; returns the ids that joined.
Result<std::map<int, std::string>> wait_for_joins(Rendezvous& rv, const Membership& failed,
                                                  const std::string& join, const std::string& claim,
                                                  Clock::time_point deadline) {
  std::map<int, std::string> joined;
  for (;;) {
    DLSYS_ASSIGN_OR_RETURN(std::optional<std::string> held, rv.get(claim, milliseconds(0)));
    if (held) break;  // another survivor closed the join already
    int waiting_on = -1;
    for (int id : failed.members) {
      if (joined.count(id)) continue;
      DLSYS_ASSIGN_OR_RETURN(std::optional<std::string> j,
                             rv.get(join + std::to_string(id), milliseconds(0)));
      if (j)
        joined[id] = *j;
      else if (waiting_on < 0)
        waiting_on = id;
    }
    if (waiting_on < 0 || Clock::now() >= deadline) break;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    // Wake at that member's join, or within 100 ms to see a claim by another survivor.
    DLSYS_RETURN_IF_ERROR(rv.get(join + std::to_string(waiting_on),
                                 std::clamp(left, milliseconds(1), milliseconds(100)))
                              .status());
  }
  return joined;
}

// The ids a join's value names as silent ("1,3"; anything else names none).
std::vector<int> suspects_of(const std::string& value) {
  std::vector<int> ids;
  return parse_ids(value, &ids) ? ids : std::vector<int>();
}

}  // namespace

Membership first_membership(int id, int world) {
  Membership m;
  for (int r = 0; r < world; ++r) m.members.push_back(r);
  m.rank = id;
  return m;
}

Result<Membership> reform(Rendezvous& rv, const Membership& failed, const ReformOptions& o) {
  const int g = failed.generation + 1;
  const std::string join = fmt::format("join/{}/", g), claim = fmt::format("members/{}", g);
  DLSYS_RETURN_IF_ERROR(rv.set(join + std::to_string(o.id), join_list(o.suspects)));
  std::string agreed;
  if (rv.outlives_peers()) {
    DLSYS_ASSIGN_OR_RETURN(auto joined,
                           wait_for_joins(rv, failed, join, claim, Clock::now() + o.window));
    // A rank that joined but that most of those who joined found silent is cut off from them
    // (a partition that left it the shared store): it is not taken back.
    std::map<int, int> accused;
    for (const auto& [id, value] : joined)
      for (int s : suspects_of(value))
        if (s != id) ++accused[s];
    Decision d;
    // The process serving a tcp:// store never leaves itself out: the store would go with it.
    const bool serves = rv.url().rfind("tcp://", 0) == 0;
    for (const auto& [id, value] : joined)
      (accused[id] * 2 > static_cast<int>(joined.size()) && !(serves && id == o.id) ? d.silent
                                                                                    : d.came)
          .push_back(id);
    d.min_workers = std::max(o.min_workers, 1);
    d.divides = o.divides;
    d.power_of_two = o.power_of_two ? 1 : 0;
    d.world = allowed_world(d, static_cast<int>(d.came.size()));
    if (d.world < d.min_workers) d.world = 0;
    DLSYS_ASSIGN_OR_RETURN(agreed, rv.set_once(claim, encode(d)));
  } else {
    // The tcp:// store lives in the process that serves it: that one decides (so it is never
    // left out and gone while the others still read the store). It may notice the failure
    // later than this one, so wait for its claim past the window.
    const auto deadline = Clock::now() + o.window + rv.timeout();
    for (;;) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0)
        return Status::DeadlineExceeded(
            "rank 0 of the first group, which serves the rendezvous {}, did not form generation "
            "{} of the group within {} ms: it hangs (a file:// rendezvous lets the others go on "
            "without it)",
            rv.url(), g, (o.window + rv.timeout()).count());
      DLSYS_ASSIGN_OR_RETURN(std::optional<std::string> held, rv.get(claim, left));
      if (held) {
        agreed = *held;
        break;
      }
    }
  }
  DLSYS_ASSIGN_OR_RETURN(Decision d, decode(agreed, claim, failed));
  if (d.came.size() >= failed.members.size())
    return Status::Unavailable(
        "generation {} of the group failed, but all of its {} ranks came back to re-form it: "
        "the failure was not a lost rank (see the error above)",
        failed.generation, failed.members.size());
  if (d.world == 0) {
    const int w = allowed_world(d, static_cast<int>(d.came.size()));
    return Status::Unavailable(
        "{} worker{} would remain (ranks {} of the first group came back{}), fewer than "
        "--min-workers {}: stopping",
        w, w == 1 ? "" : "s", d.came.empty() ? "none" : join_list(d.came),
        std::string(d.divides > 0
                        ? fmt::format("; the world must divide the {} micro-batches", d.divides)
                        : "") +
            (d.power_of_two ? "; and be a power of two" : ""),
        d.min_workers);
  }
  Membership next;
  next.generation = g;
  next.members.assign(d.came.begin(), d.came.begin() + d.world);
  auto at = std::find(d.came.begin(), d.came.end(), o.id);
  if (std::find(d.silent.begin(), d.silent.end(), o.id) != d.silent.end()) {
    next.left_out = "silent";
  } else if (at == d.came.end()) {
    next.left_out = "late";
  } else if (at - d.came.begin() >= d.world) {
    next.left_out = "not needed";
  } else {
    next.rank = static_cast<int>(at - d.came.begin());
  }
  return next;
}

}  // namespace dlsys::dist
