// "Did you mean": after a command line fails to parse, the nearest known subcommand for a word
// that is not one, and the nearest known flag for a --flag the command does not take (edit
// distance at most 2, or a third of the word). Reads the App's own definitions, so it never
// suggests a flag that does not exist.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace dlsys::cli {

// Levenshtein distance between two short strings.
size_t edit_distance(const std::string& a, const std::string& b);

// Suggestions ("did you mean 'deploy'?") for the words of argv[1..argc) that `app` does not know.
std::vector<std::string> suggest_corrections(CLI::App& app, int argc, const char* const* argv);

}  // namespace dlsys::cli
