// `dlsys completion bash|zsh`: shell completion scripts generated from the CLI11 App tree (every
// subcommand, its subcommands and its flags, as suggest.cpp walks it), so they list exactly
// what the command accepts and never drift from it.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace dlsys::cli {

// A bash script defining `_dlsys` and registering it with `complete -o default -F _dlsys dlsys`:
// subcommands after the command words typed so far, flags after a `-`, files (bash's default)
// for arguments and option values.
std::string bash_completion(CLI::App& app);

// The same for zsh, through zsh's bash-compatible completion (bashcompinit runs the bash
// script's `_dlsys`).
std::string zsh_completion(CLI::App& app);

// Adds `completion SHELL`, which prints the script for `app` (the root) to stdout.
void add_completion(CLI::App& app, int* rc);

}  // namespace dlsys::cli
