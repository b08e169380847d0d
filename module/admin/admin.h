// The admin module's configuration, shared by its two halves: the app's
// `/admin` events (admin.cc) and the Socket.IO Admin UI protocol (admin_ui.cc).
#pragma once

#include <depth-realtime/module.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace dr::admin {

// A repeating timer on the worker's loop that does not keep the loop alive.
// stop() hands it to libuv, which frees it once the handle is closed.
class Ticker {
 public:
  static Ticker* start(uv_loop_t* loop, uint64_t every_ms, std::function<void()> fn) {
    std::unique_ptr<Ticker> t(new Ticker(std::move(fn)));
    uv_timer_init(loop, &t->timer_);
    t->timer_.data = t.get();
    uv_unref(reinterpret_cast<uv_handle_t*>(&t->timer_));
    uv_timer_start(
        &t->timer_,
        [](uv_timer_t* h) {
          try {
            static_cast<Ticker*>(h->data)->fn_();
          } catch (...) {
            // nothing may leave a libuv callback; the next tick tries again
          }
        },
        every_ms, every_ms);
    return t.release();  // owned by the handle from now on
  }
  void stop() {
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_),
             [](uv_handle_t* h) { std::unique_ptr<Ticker> gone(static_cast<Ticker*>(h->data)); });
  }

 private:
  explicit Ticker(std::function<void()> fn) : fn_(std::move(fn)) {}
  uv_timer_t timer_{};
  std::function<void()> fn_;
};

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
