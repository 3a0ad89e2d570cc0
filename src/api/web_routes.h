// The web UI's files (web/, built by Vite) on the server's router: `GET /` is the page and
// `GET /assets/{path...}` its scripts, styles and images. The files are read from a directory
// (the build's `web/` beside the dlsys binary, or --web-dir); the page asks the REST API for
// everything it shows, with the token the user logged in with, so the files themselves are
// public and hold no data.
#pragma once

#include <string>

#include "api/router.h"

namespace dlsys::api {

// Where the UI's built files are looked for when no directory is given: $DLSYS_WEB_DIR, then
// `web/` beside the running binary (a build tree), then `../share/dlsys/web` from it (an
// installed program). The first that holds index.html; "" when none does.
std::string default_web_dir();

// Adds `GET /` and `GET /assets/{path...}` serving the files under `dir`. With `dir` empty or
// without index.html, `GET /` answers 404 with a page that says how to build the UI. Asset paths
// with `..`, a backslash or a control character, and files outside `dir`, are 404s. The page
// is sent with no-cache and a Content-Security-Policy that allows only this server's scripts and
// connections; assets (their names carry a content hash) are cached for a year.
void add_web_routes(Router& router, const std::string& dir);

}  // namespace dlsys::api
