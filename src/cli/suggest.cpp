#include "cli/suggest.h"

#include <algorithm>

namespace dlsys::cli {
namespace {

// The closest of `known` to `word`, if close enough to be a typo.
std::string nearest(const std::string& word, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& k : known) {
    size_t d = edit_distance(word, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best;
}

std::vector<std::string> long_flags(CLI::App* app) {
  std::vector<std::string> out;
  for (CLI::App* a = app; a != nullptr; a = a->get_parent())
    for (const CLI::Option* o : a->get_options())
      for (const std::string& n : o->get_lnames()) out.push_back("--" + n);
  return out;
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<std::string> suggest_corrections(CLI::App& app, int argc, const char* const* argv) {
  std::vector<std::string> out;
  CLI::App* at = &app;
  bool positional_seen = false;  // past the subcommands: words are arguments, not commands
  for (int i = 1; i < argc; ++i) {
    std::string w = argv[i];
    if (w == "--") break;
    if (w.rfind("--", 0) == 0) {
      std::string flag = w.substr(0, w.find('='));
      std::vector<std::string> flags = long_flags(at);
      if (std::find(flags.begin(), flags.end(), flag) == flags.end()) {
        std::string s = nearest(flag, flags);
        if (!s.empty()) out.push_back("did you mean '" + s + "' for '" + flag + "'?");
      }
      continue;
    }
    if (w.rfind('-', 0) == 0 || positional_seen) continue;
    std::vector<CLI::App*> subs = at->get_subcommands([](CLI::App*) { return true; });
    if (subs.empty()) {
      positional_seen = true;
      continue;
    }
    CLI::App* next = nullptr;
    std::vector<std::string> names;
    for (CLI::App* s : subs) {
      names.push_back(s->get_name());
      if (s->get_name() == w) next = s;
    }
    if (next) {
      at = next;
      continue;
    }
    std::string s = nearest(w, names);
    if (!s.empty()) out.push_back("did you mean '" + s + "' for '" + w + "'?");
    positional_seen = true;
  }
  return out;
}

}  // namespace dlsys::cli
