// admin: the app's `/admin` namespace (contract §2 and §8 "/admin events") and
// the default namespace `/`, which takes no client events.
//
//   admin:stats                 ack {data: stats of this node} (module/common/stats.h)
//   admin:stats:subscribe       joins "admin:stats": the stats are pushed as
//                               `admin:stats` every admin_stats_interval; ack {data: stats}
//   admin:stats:unsubscribe     ack {data: {}}
//   admin:kick {userId}|{socketId}   every socket of the user (or that socket) is
//                               disconnected, with its connection, in every
//                               namespace on every node; ack {data: the same object}
//   admin:announce {message, rooms?} `announcement {message, from, at}` on `/`
//                               to those rooms (each socket once) or to all;
//                               ack {data: what was broadcast}
//
// The Socket.IO Admin UI protocol lives beside it in admin_ui.cc.

#include "admin.h"

#include <depth-realtime/cluster.h>
#include <depth-realtime/validate.h>

#include <initializer_list>

#include "app.h"
#include "stats.h"

namespace dr::admin {
namespace {

using schema::Kind;

constexpr const char* kStatsRoom = "admin:stats";

// The payloads of /admin. Kick's "exactly one of userId and socketId" and
// announce's "a room or a list of rooms" are checked by their handlers.
const schema::Table kAdminEvents = {
    {"admin:stats", {}, true},
    {"admin:stats:subscribe", {}, true},
    {"admin:stats:unsubscribe", {}, true},
    {"admin:kick", {{"userId", Kind::Id}, {"socketId", Kind::String, false, 1, 128}}},
    {"admin:announce", {{"message", Kind::String, true, 1, 10000}, {"rooms", Kind::Any}}},
};
// The same when the Admin UI protocol is served on the app's admin namespace
// (admin_ui_namespace /admin): its events take positional arguments, which
// their handlers check.
const schema::Table kAdminAndUiEvents = {
    {"admin:stats", {}, true},
    {"admin:stats:subscribe", {}, true},
    {"admin:stats:unsubscribe", {}, true},
    {"admin:kick", {{"userId", Kind::Id}, {"socketId", Kind::String, false, 1, 128}}},
    {"admin:announce", {{"message", Kind::String, true, 1, 10000}, {"rooms", Kind::Any}}},
    {"join", {}, true},
    {"leave", {}, true},
    {"_disconnect", {}, true},
    {"emit", {}, true},
};
// `/` accepts no client events (contract §8).
const schema::Table kNoEvents{std::initializer_list<schema::EventShape>{}};

// ------------------------------------------------------------ directives

bool valid_nsp(const std::string& v) {
  return v.size() >= 1 && v[0] == '/' && v.find_first_of(" \t,") == v.npos;
}

bool set_nsp(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  if (!valid_nsp(a[0])) {
    err = "expected a namespace such as /admin";
    return false;
  }
  static_cast<AdminConf*>(c)->nsp = a[0];
  return true;
}


bool set_ui_nsp(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* conf = static_cast<AdminConf*>(c);
  if (a[0] == "off") {
    conf->ui_nsp.clear();
    return true;
  }
  if (!valid_nsp(a[0]) || a[0] == "/") {
    err = "expected a namespace such as /admin-ui (not /) or off";
    return false;
  }
  conf->ui_nsp = a[0];
  return true;
}

// bcrypt as the Node instrumentation takes it: $2a$, $2b$ or $2y$, cost, 53 characters.
bool bcrypt_hash(const std::string& h) {
  if (h.size() != 60 || h[0] != '$' || h[1] != '2' || (h[2] != 'a' && h[2] != 'b' && h[2] != 'y') || h[3] != '$' ||
      !isdigit(static_cast<unsigned char>(h[4])) || !isdigit(static_cast<unsigned char>(h[5])) || h[6] != '$')
    return false;
  int cost = (h[4] - '0') * 10 + (h[5] - '0');
  if (cost < 4 || cost > 31) return false;
  for (size_t i = 7; i < h.size(); i++) {
    char ch = h[i];
    if (!(isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '/')) return false;
  }
  return true;
}

bool set_ui_auth(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* conf = static_cast<AdminConf*>(c);
  if (a.size() == 1 && a[0] == "off") {
    conf->ui_auth = AdminConf::UiAuth::Off;
    return true;
  }
  if (a.size() != 3 || a[0] != "basic") {
    err = "expected basic USERNAME BCRYPT_HASH, or off";
    return false;
  }
  if (a[1].empty()) {
    err = "expected a non-empty user name";
    return false;
  }
  if (!bcrypt_hash(a[2])) {
    err = "expected a bcrypt hash ($2b$10$..., 60 characters)";
    return false;
  }
  conf->ui_auth = AdminConf::UiAuth::Basic;
  conf->ui_user = a[1];
  conf->ui_hash = a[2];
  return true;
}

bool set_ui_mode(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  if (a[0] != "development" && a[0] != "production") {
    err = "expected development or production";
    return false;
  }
  static_cast<AdminConf*>(c)->ui_development = a[0] == "development";
  return true;
}

bool set_ui_static(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* conf = static_cast<AdminConf*>(c);
  if (a[0] == "off") {
    conf->ui_static_dir.clear();
    return true;
  }
  std::string prefix = a.size() > 1 ? a[1] : "/admin-ui/";
  if (prefix.size() < 2 || prefix.front() != '/' || prefix.back() != '/') {
    err = "expected a URL prefix that starts and ends with / (e.g. /admin-ui/)";
    return false;
  }
  conf->ui_static_dir = a[0];
  conf->ui_static_prefix = prefix;
  return true;
}

bool set_positive_msec(ModuleConf* c, const std::vector<std::string>& a, std::string& err, uint64_t AdminConf::*field) {
  uint64_t v = 0;
  if (!conf_parse_msec(a, v, err)) return false;
  if (v == 0) {
    err = "expected a time above 0";
    return false;
  }
  static_cast<AdminConf*>(c)->*field = v;
  return true;
}
bool set_stats_interval(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_positive_msec(c, a, err, &AdminConf::stats_interval_ms);
}
bool set_ui_stats_interval(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_positive_msec(c, a, err, &AdminConf::ui_stats_interval_ms);
}
bool set_ui_session_ttl(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_positive_msec(c, a, err, &AdminConf::ui_session_ttl_ms);
}

constexpr unsigned S = kConfServer;

const Directive kDirectives[] = {
    {"admin_namespace", S, 1, 1, set_nsp, "/admin", false,
     "Namespace of the admin events (admin:stats, admin:kick, admin:announce); restrict it to role admin with "
     "auth_jwt_require_role admin in its namespace block."},
    {"admin_stats_interval", S, 1, 1, set_stats_interval, "2s", false,
     "How often admin:stats is pushed to the admin sockets that sent admin:stats:subscribe."},
    {"admin_ui_namespace", S, 1, 1, set_ui_nsp, "off", false,
     "Serve the Socket.IO Admin UI (@socket.io/admin-ui dashboard) protocol on this namespace, e.g. /admin-ui "
     "(declare it, with auth_jwt off in its block when admin_ui_auth is basic)."},
    {"admin_ui_auth", S, 1, 3, set_ui_auth, "none (required with admin_ui_namespace)", true,
     "basic USERNAME BCRYPT_HASH: the dashboard's login form, as instrument({auth: {type: \"basic\"}}); off: no login "
     "of its own (the namespace's auth_jwt settings decide who connects)."},
    {"admin_ui_readonly", S, 1, 1, set_flag<&AdminConf::ui_readonly>, "off", false,
     "Offer no actions to the dashboard (join, leave, disconnect, emit)."},
    {"admin_ui_mode", S, 1, 1, set_ui_mode, "development", false,
     "development: the dashboard gets every socket, room and received event; production: server statistics only."},
    {"admin_ui_server_id", S, 1, 1, set_str<&AdminConf::ui_server_id>, "<hostname>#<master pid>", true,
     "Name of this node in the dashboard's server list."},
    {"admin_ui_stats_interval", S, 1, 1, set_ui_stats_interval, "2s", false,
     "How often each node sends server_stats to the dashboards (they call a server unhealthy after 10 s without)."},
    {"admin_ui_session_ttl", S, 1, 1, set_ui_session_ttl, "24h", true,
     "How long a dashboard login (its session id) stays valid; kept in Redis (socket.io-admin#<id>) when configured."},
    {"admin_ui_static", S, 1, 2, set_ui_static, "off", false,
     "DIR [PREFIX]: serve the dashboard's files (node_modules/@socket.io/admin-ui/ui/dist) under PREFIX "
     "(default /admin-ui/) on the main listener."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

// --------------------------------------------------------------- handlers

const AdminConf& conf_of(Worker& w, const Module& self) {
  static const AdminConf defaults;
  const auto* c = static_cast<const AdminConf*>(w.conf(self));
  return c ? *c : defaults;
}

void on_stats(Worker& w, Socket& s, Event& ev) {
  ack_data(s, ev, app::node_stats(w));
}

void on_subscribe(Worker& w, Socket& s, Event& ev) {
  s.join(kStatsRoom);
  ack_data(s, ev, app::node_stats(w));
}

void on_unsubscribe(Socket& s, Event& ev) {
  s.leave(kStatsRoom);
  ack_data(s, ev, Json(json_object()));
}

bool present(const json_t* v) {
  return v && !json_is_null(v);
}

void on_kick(Worker& w, Socket& s, Event& ev) {
  const json_t* p = app::payload(ev);
  bool by_user = present(json_object_get(p, "userId"));
  bool by_socket = present(json_object_get(p, "socketId"));
  if (!by_user && !by_socket) return app::invalid(s, ev, "userId: userId or socketId is required");
  if (by_user && by_socket) return app::invalid(s, ev, "socketId: not allowed together with userId");

  Json answer(json_object());
  std::string user, room;
  if (by_user) {
    user = app::id_field(ev, "userId");
    json_object_set_new(answer.get(), "userId", json_stringn(user.data(), user.size()));
  } else {
    room = json_string_value(json_object_get(p, "socketId"));
    // A socket id names the socket's own room; other room names (user:42,
    // conversation:7) would reach many sockets.
    if (room.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != room.npos)
      return app::invalid(s, ev, "socketId: must be a socket id");
    json_object_set_new(answer.get(), "socketId", json_stringn(room.data(), room.size()));
  }
  logf(LogLevel::Notice, "admin: %s kicked %s %s", app::user_id(s).c_str(), by_user ? "user" : "socket",
       json_string_value(json_object_get(answer.get(), by_user ? "userId" : "socketId")));
  // Redis away: only this node's sockets can be reached, and the ack must not
  // claim more.
  bool everywhere = !cluster::configured() || cluster::ready();
  // The answer leaves first: the admin may be kicking their own user.
  if (everywhere)
    ack_data(s, ev, std::move(answer));
  else
    app::internal_error(s, ev, "Redis unavailable: disconnected on this node only");
  // close=true takes the whole connections down (every namespace on them).
  if (by_user) return app::disconnect_user(w, user, true);
  // Socket ids are per namespace: every namespace is asked.
  for (const std::string& nsp : w.namespaces()) {
    BroadcastOptions opts;
    opts.nsp = nsp;
    opts.rooms = {room};
    cluster::disconnect_sockets(opts, true);
  }
}

void on_announce(Worker& w, Socket& s, Event& ev) {
  const json_t* p = app::payload(ev);
  const json_t* r = json_object_get(p, "rooms");
  std::vector<std::string> rooms;
  constexpr const char* kBadRooms = "rooms: must be a room name or an array of room names";
  if (json_is_string(r)) {
    if (json_string_length(r) == 0) return app::invalid(s, ev, kBadRooms);
    rooms.emplace_back(json_string_value(r), json_string_length(r));
  } else if (json_is_array(r)) {
    size_t i;
    const json_t* item;
    json_array_foreach(r, i, item) {
      if (!json_is_string(item) || json_string_length(item) == 0) return app::invalid(s, ev, kBadRooms);
      rooms.emplace_back(json_string_value(item), json_string_length(item));
    }
  } else if (present(r)) {
    return app::invalid(s, ev, kBadRooms);
  }
  const std::string& from = app::user_id(s);
  std::string at = app::iso_now();
  Json announcement(json_pack("{s:O, s:s%, s:s%}", "message", json_object_get(p, "message"), "from", from.data(),
                              from.size(), "at", at.data(), at.size()));
  BroadcastOptions opts;
  opts.nsp = "/";
  opts.rooms = std::move(rooms);  // none: everyone on `/`; several: each socket once
  w.broadcast(opts, "announcement", Payload::of(Json(json_deep_copy(announcement.get()))));
  ack_data(s, ev, std::move(announcement));
}

// ------------------------------------------------------------ lifecycle

std::unique_ptr<Timeout> g_push;  // admin:stats to the subscribers of this worker

std::unique_ptr<ModuleConf> create_conf() {
  return std::make_unique<AdminConf>();
}

bool check_conf(ModuleConf* c, std::string& err) {
  const auto& conf = *static_cast<AdminConf*>(c);
  if (conf.nsp == "/") {
    err = "admin_namespace cannot be /: the default namespace takes no client events";
    return false;
  }
  return ui_check_conf(conf, err);
}

bool declared(Worker& w, std::string_view nsp) {
  for (const std::string& n : w.namespaces())
    if (n == nsp) return true;
  return false;
}

bool init_worker(Worker& w, const Module& self) {
  const AdminConf& conf = conf_of(w, self);
  app::stats_start(w);
  app::serve_disconnect_user(w);

  if (declared(w, "/")) w.use_event("/", schema::middleware(kNoEvents));

  const std::string nsp = conf.nsp;
  if (!declared(w, nsp)) {
    logf(LogLevel::Warn, "admin: admin_namespace %s is not declared: no admin events", nsp.c_str());
  } else {
    // Belt and braces: auth_jwt_require_role admin refuses others at CONNECT;
    // should a configuration forget it, the events still need the role.
    w.use_event(nsp, [](Socket& s, Event& ev) {
      if (app::is_admin(s)) return true;
      app::forbidden(s, ev, "role admin required");
      return false;
    });
    bool ui_actions = ui_serves(conf, nsp) && !conf.ui_readonly;
    w.use_event(nsp, schema::middleware(ui_actions ? kAdminAndUiEvents : kAdminEvents));
    w.on(nsp, "admin:stats", [&w](Socket& s, Event& ev) { on_stats(w, s, ev); });
    w.on(nsp, "admin:stats:subscribe", [&w](Socket& s, Event& ev) { on_subscribe(w, s, ev); });
    w.on(nsp, "admin:stats:unsubscribe", [](Socket& s, Event& ev) { on_unsubscribe(s, ev); });
    w.on(nsp, "admin:kick", [&w](Socket& s, Event& ev) { on_kick(w, s, ev); });
    w.on(nsp, "admin:announce", [&w](Socket& s, Event& ev) { on_announce(w, s, ev); });
    // Live statistics: each worker pushes to its own subscribers, encoded once.
    g_push = every(w, conf.stats_interval_ms, [&w, nsp] {
      if (w.local_sockets(nsp, kStatsRoom).empty()) return;
      BroadcastOptions opts;
      opts.nsp = nsp;
      opts.rooms = {kStatsRoom};
      opts.local = true;
      w.broadcast(opts, "admin:stats", Payload::of(app::node_stats(w)));
    });
  }
  return ui_init_worker(w, self, conf);
}

void exit_worker(Worker&, const Module&) {
  ui_exit_worker();
  g_push.reset();
  app::stats_stop();
}

const Module kModule{
    kModuleAbi, DR_MODULE_SIGNATURE, "admin", kDirectives, create_conf, check_conf, init_worker, exit_worker,
};

}  // namespace
}  // namespace dr::admin

DR_MODULE_EXPORT(dr::admin::kModule)
