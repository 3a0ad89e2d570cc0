// dlsys: a deep learning system in one program. This is the command line's front door.
#include <cstdio>

#include "cli/commands.h"

namespace dlsys::cli {

int fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

}  // namespace dlsys::cli

int main(int argc, char** argv) {
  CLI::App app{"dlsys: run, train, track and serve deep learning models on one program"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dlsys 0.1.0");
  int rc = 0;
  dlsys::cli::add_inspect(app, &rc);
  dlsys::cli::add_run(app, &rc);
  dlsys::cli::add_bench(app, &rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return rc;
}
