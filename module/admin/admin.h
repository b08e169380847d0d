// The admin module's configuration, shared by its two halves: the app's
// `/admin` events (admin.cc) and the Socket.IO Admin UI protocol (admin_ui.cc).
#pragma once

#include <depth-realtime/module.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace dr::admin {

struct AdminConf : ModuleConfBase<AdminConf> {
  // The app's admin namespace (contract: /admin, role admin through auth_jwt).
  std::string nsp = "/admin";
  // How often `admin:stats` is pushed to the sockets that subscribed.
  uint64_t stats_interval_ms = 2000;

  // ---- Socket.IO Admin UI (@socket.io/admin-ui); off while ui_nsp is empty.
  std::string ui_nsp;
  enum class UiAuth { Unset, Basic, Off } ui_auth = UiAuth::Unset;
  std::string ui_user;
  std::string ui_hash;  // bcrypt ($2a$/$2b$/$2y$)
  bool ui_readonly = false;
  bool ui_development = true;  // verbose per-socket events and all_sockets
  std::string ui_server_id;    // empty: <hostname>#<master pid>
  uint64_t ui_stats_interval_ms = 2000;
  uint64_t ui_session_ttl_ms = 86400 * 1000ull;
  std::string ui_static_dir;  // the dashboard's files (ui/dist); empty: not served
  std::string ui_static_prefix = "/admin-ui/";
};

// admin_ui.cc
bool ui_check_conf(const AdminConf& c, std::string& err);
bool ui_init_worker(Worker& w, const Module& self, const AdminConf& c);
void ui_exit_worker();
// The Admin UI's client events (for the validation table of a namespace that
// serves both the app's admin events and the UI protocol).
bool ui_serves(const AdminConf& c, std::string_view nsp);

}  // namespace dr::admin
