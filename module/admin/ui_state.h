// What the Admin UI keeps in a worker, shared by its files (admin_ui.cc, the
// protocol; ui_login.cc, the login).
#pragma once

#include <depth-realtime/module.h>

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "admin.h"

namespace dr::admin {

struct UiState {
  Worker* w = nullptr;
  const Module* self = nullptr;
  std::string nsp;
  std::string hostname;
  std::unique_ptr<Timeout> ticker;
  // Is a dashboard open anywhere?
  int64_t remote_until = 0;
  int64_t local_checked = 0;
  bool local_watch = false;
  int64_t last_ping = 0;
  // Logins: the session id waits here until its socket is connected.
  std::unordered_map<std::string, std::string> new_sessions;  // socket id -> session id
  std::unordered_map<std::string, int64_t> sessions;          // without Redis: session id -> expiry (ms)
  // server_stats (worker 0): the counters at the last sample, and the
  // per-second entries since the last server_stats.
  std::map<std::pair<std::string, std::string>, int64_t> counts;
  bool sampled = false;
  Json aggregated{json_array()};
  int64_t last_stats = 0;
};
extern std::unique_ptr<UiState> g_ui;  // while the Admin UI serves in this worker

// The module's server-level configuration (its defaults before init_worker).
const AdminConf& conf();

}  // namespace dr::admin
