// The Admin UI's static files (admin_ui_static_dir): the dashboard's own
// files on the main listener, one route per file.
#pragma once

#include <depth-realtime/module.h>

#include <string>

namespace dr::admin {

// Routes the files under `dir` at `prefix` ("/admin-ui/"): index.html at the
// prefix, and the prefix without its slash redirects to it.
void serve_static(Worker& w, const std::string& dir, const std::string& prefix);

}  // namespace dr::admin
