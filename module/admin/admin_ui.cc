// The server side of the Socket.IO Admin UI (@socket.io/admin-ui 0.5.x, see
// shared/protocols/admin-ui.md): what Node's `instrument(io, options)` does,
// on the namespace admin_ui_namespace names.
//
//  - login (ui_login.cc): the dashboard's form sends auth {username,
//    password}, then {sessionId} after a page reload;
//  - on connect: `config` (the features), and in development mode
//    `all_sockets` (fetch_sockets of every namespace, cluster-wide);
//  - worker 0 of each node sends `server_stats` for its node;
//  - development mode: each worker reports its own sockets (socket_connected,
//    socket_disconnected, room_joined, room_left, socket_updated on a
//    transport upgrade, event_received, event_sent) as broadcasts to the
//    dashboards, in Node's order (a disconnect: socket_disconnected, then a
//    room_left for each of its rooms in the order joined);
//  - the dashboard's actions: join, leave, _disconnect, emit, cluster-wide.
//
// The verbose reports cost a broadcast each, so they are only sent while a
// dashboard is open somewhere: this node's share of the namespace's gauge
// says so for this node, and a worker holding dashboards tells the other
// nodes every few seconds (a server-side event).
//
// Not done: `socket_updated` for changes of a socket's data (modules set it
// at CONNECT, before `socket_connected` reports it).

#include <depth-realtime/cluster.h>
#include <depth-realtime/redis.h>
#include <depth-realtime/validate.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <map>
#include <unordered_map>

#include "admin.h"
#include "app.h"
#include "stats.h"
#include "ui_login.h"
#include "ui_state.h"
#include "ui_static.h"

namespace dr::admin {

std::unique_ptr<UiState> g_ui;

const AdminConf& conf() {
  static const AdminConf defaults;
  const auto* c = g_ui ? static_cast<const AdminConf*>(g_ui->w->conf(*g_ui->self)) : nullptr;
  return c ? *c : defaults;
}

namespace {

constexpr const char* kWatchEvent = "admin-ui:watch";
constexpr int64_t kLocalCheckMs = 500;  // how stale this node's "a dashboard is open here" may be

const schema::Table kUiEvents = {
    {"join", {}, true},
    {"leave", {}, true},
    {"_disconnect", {}, true},
    {"emit", {}, true},
};
const schema::Table kUiReadonlyEvents{std::initializer_list<schema::EventShape>{}};


bool declared(std::string_view nsp) {
  for (const std::string& n : g_ui->w->namespaces())
    if (n == nsp) return true;
  return false;
}

bool present(const json_t* v) {
  return v && !json_is_null(v);
}

Json str(std::string_view s) {
  return Json(json_stringn(s.data(), s.size()));
}

// An array made of `items`, whose references it takes.
Json array_of(std::initializer_list<json_t*> items) {
  Json a(json_array());
  for (json_t* item : items) json_array_append_new(a.get(), item);
  return a;
}

// To every dashboard, on every node.
void tell(std::string_view event, Json args, std::vector<std::string> attachments = {}) {
  BroadcastOptions opts;
  opts.nsp = g_ui->nsp;
  g_ui->w->broadcast(opts, event, Payload(std::move(args), std::move(attachments)));
}

// ------------------------------------------------------------- watching

void ping() {
  g_ui->last_ping = app::now_ms();
  cluster::server_side_emit(g_ui->nsp, kWatchEvent, Payload());
}

bool watching() {
  if (!g_ui) return false;
  int64_t now = app::now_ms();
  if (now < g_ui->remote_until) return true;
  if (now - g_ui->local_checked >= kLocalCheckMs) {
    g_ui->local_checked = now;
    g_ui->local_watch = false;
    std::string label = metric_label("namespace", g_ui->nsp);
    for (auto& m : g_ui->w->metric_read("websocket_namespace_sockets"))
      if (m.label == label && m.value > 0) g_ui->local_watch = true;
  }
  return g_ui->local_watch;
}

// -------------------------------------------------------- serialization

Json pairs_object(const std::vector<std::pair<std::string, std::string>>& pairs) {
  Json o(json_object());
  for (auto& [k, v] : pairs) json_object_set_new(o.get(), k.c_str(), json_stringn(v.data(), v.size()));
  return o;
}

// Socket data as the dashboard shows it: token claims kept as JSON text
// (auth_jwt's "claim:<name>", e.g. an array of project ids) become the values
// they are, as a Node app that put them in socket.data would show them.
void ui_data(json_t* data) {
  const char* key;
  json_t* value;
  void* tmp;
  json_object_foreach_safe(data, tmp, key, value) {
    if (strncmp(key, "claim:", 6) != 0 || !json_is_string(value)) continue;
    Json parsed(json_loadb(json_string_value(value), json_string_length(value), JSON_DECODE_ANY, nullptr));
    if (parsed) json_object_set_new(data, key, parsed.release());
  }
}


// The handshake as the dashboard shows it: never `auth` (it holds tokens and
// passwords), and the address a proxy reports, as the Node instrumentation.
void ui_handshake(json_t* hs) {
  json_object_del(hs, "auth");
  const json_t* headers = json_object_get(hs, "headers");
  for (const char* h : {"cf-connecting-ip", "x-forwarded-for"}) {
    if (const char* v = json_str(headers, h)) {
      json_object_set_new(hs, "address", json_string(v));
      break;
    }
  }
}

// The dashboard's view of a local socket's handshake.
Json ui_handshake_of(const Handshake& h) {
  Json hs = handshake_json(h);
  ui_handshake(hs.get());
  return hs;
}

// A socket of this worker as the dashboard's SerializedSocket.
Json ui_socket(Socket& s) {
  Json o(json_object());
  json_object_set_new(o.get(), "id", str(s.id()).release());
  json_object_set_new(o.get(), "clientId", str(s.client_id()).release());
  json_object_set_new(o.get(), "transport", str(s.transport()).release());
  json_object_set_new(o.get(), "nsp", str(s.nsp()).release());
  Json data = pairs_object(s.data());
  ui_data(data.get());
  json_object_set_new(o.get(), "data", data.release());
  json_object_set_new(o.get(), "handshake", ui_handshake_of(s.handshake()).release());
  json_object_set_new(o.get(), "rooms", app::string_array(s.rooms()).release());
  return o;
}

// A socket from fetch_sockets (any node; Node servers too): clientId and
// transport come from data._admin, which the dashboard does not show.
Json ui_socket(const cluster::RemoteSocket& r, const std::string& nsp) {
  Json data(r.data && json_is_object(r.data.get()) ? json_deep_copy(r.data.get()) : json_object());
  const json_t* admin = json_object_get(data.get(), "_admin");
  const char* client = json_str(admin, "clientId");
  const char* transport = json_str(admin, "transport");
  Json o(json_object());
  json_object_set_new(o.get(), "id", str(r.id).release());
  json_object_set_new(o.get(), "clientId", json_string(client ? client : r.id.substr(0, 12).c_str()));
  json_object_set_new(o.get(), "transport", json_string(transport ? transport : "websocket"));
  json_object_set_new(o.get(), "nsp", str(nsp).release());
  json_object_del(data.get(), "_admin");
  ui_data(data.get());
  json_object_set_new(o.get(), "data", data.release());
  Json hs(r.handshake && json_is_object(r.handshake.get()) ? json_deep_copy(r.handshake.get()) : json_object());
  ui_handshake(hs.get());
  json_object_set_new(o.get(), "handshake", hs.release());
  json_object_set_new(o.get(), "rooms", app::string_array(r.rooms).release());
  return o;
}

// ------------------------------------------------------- server_stats


int64_t metric_sum(std::string_view metric, std::string_view label_name = {}, std::string_view label = {}) {
  int64_t total = 0;
  for (auto& m : g_ui->w->metric_read(metric))
    if (label_name.empty() || app::label_value(m.label, label_name) == label) total += m.value;
  return total;
}

// The node's counters behind aggregatedEvents (Node counts Engine.IO packets
// and their bytes; ours are the Engine.IO messages and the bytes on the wire).
void sample() {
  struct Series {
    const char* type;
    const char* metric;
  };
  static const Series series[] = {
      {"rawConnection", "depth_realtime_engine_sessions_opened_total"},
      {"packetsIn", "depth_realtime_messages_received_total"},
      {"bytesIn", "depth_realtime_bytes_received_total"},
      {"packetsOut", "depth_realtime_messages_sent_total"},
      {"bytesOut", "depth_realtime_bytes_sent_total"},
  };
  std::map<std::pair<std::string, std::string>, int64_t> now;
  for (auto& s : series) now[{s.type, ""}] = metric_sum(s.metric);
  for (auto& m : g_ui->w->metric_read("depth_realtime_engine_sessions_closed_total"))
    now[{"rawDisconnection", app::label_value(m.label, "reason")}] += m.value;
  if (g_ui->sampled) {
    json_int_t second = json_int_t(app::now_ms() / 1000 * 1000);
    for (auto& [key, value] : now) {
      auto it = g_ui->counts.find(key);
      int64_t delta = value - (it == g_ui->counts.end() ? 0 : it->second);
      if (delta <= 0) continue;
      Json e(json_pack("{s:I, s:s}", "timestamp", second, "type", key.first.c_str()));
      if (!key.second.empty()) json_object_set_new(e.get(), "subType", str(key.second).release());
      json_object_set_new(e.get(), "count", json_integer(json_int_t(delta)));
      json_array_append_new(g_ui->aggregated.get(), e.release());
    }
  }
  g_ui->counts = std::move(now);
  g_ui->sampled = true;
}

Json server_stats() {
  const AdminConf& c = conf();
  Json node = app::node_stats(*g_ui->w);
  const json_t* info = json_object_get(node.get(), "node");
  Json st(json_object());
  std::string id = c.ui_server_id;
  if (id.empty()) id = g_ui->hostname + "#" + std::to_string(json_integer_value(json_object_get(info, "pid")));
  json_object_set_new(st.get(), "serverId", str(id).release());
  json_object_set_new(st.get(), "hostname", str(g_ui->hostname).release());
  json_object_set(st.get(), "pid", json_object_get(info, "pid"));
  json_object_set(st.get(), "uptime", json_object_get(info, "uptimeSeconds"));
  json_object_set(st.get(), "clientsCount", json_object_get(node.get(), "connections"));
  json_object_set_new(st.get(), "pollingClientsCount",
                      json_integer(json_int_t(metric_sum("depth_realtime_engine_sessions", "transport", "polling"))));
  json_object_set_new(st.get(), "aggregatedEvents", g_ui->aggregated.release());
  g_ui->aggregated = Json(json_array());
  Json list(json_array());
  const char* name;
  json_t* figures;
  json_object_foreach(json_object_get(node.get(), "namespaces"), name, figures) {
    json_array_append_new(list.get(),
                          json_pack("{s:s, s:O}", "name", name, "socketsCount", json_object_get(figures, "sockets")));
  }
  json_object_set_new(st.get(), "namespaces", list.release());
  return st;
}

void tick() {
  int64_t now = app::now_ms();
  // A worker with dashboards tells the other nodes, once per stats interval.
  int64_t interval = int64_t(conf().ui_stats_interval_ms);
  if (now - g_ui->last_ping >= interval && !g_ui->w->local_sockets(g_ui->nsp).empty()) ping();
  for (auto it = g_ui->sessions.begin(); it != g_ui->sessions.end();) it = it->second <= now ? g_ui->sessions.erase(it) : ++it;
  if (g_ui->w->slot() != 0) return;  // one server_stats per node
  sample();
  if (now - g_ui->last_stats < interval) return;
  g_ui->last_stats = now;
  if (watching())
    tell("server_stats", array_of({server_stats().release()}));
  else
    g_ui->aggregated = Json(json_array());
}


// ------------------------------------------------------------ on connect

Json features(const AdminConf& c) {
  Json f(json_array());
  if (!c.ui_readonly)
    for (const char* name : {"EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"})
      json_array_append_new(f.get(), json_string(name));
  json_array_append_new(f.get(), json_string("AGGREGATED_EVENTS"));
  if (c.ui_development) json_array_append_new(f.get(), json_string("ALL_EVENTS"));
  return f;
}

// Every socket of every namespace, cluster-wide, to one dashboard.
void send_all_sockets(Socket& dashboard) {
  struct Gather {
    std::weak_ptr<Socket> to;
    size_t pending = 0;
    Json list{json_array()};
  };
  auto gather = std::make_shared<Gather>();
  gather->to = dashboard.weak();
  std::vector<std::string> nsps = g_ui->w->namespaces();
  gather->pending = nsps.size();
  for (const std::string& nsp : nsps) {
    BroadcastOptions opts;
    opts.nsp = nsp;
    cluster::fetch_sockets(opts, [gather, nsp](std::string error, std::vector<cluster::RemoteSocket> sockets) {
      if (!error.empty()) logf(LogLevel::Warn, "admin-ui: sockets of %s: %s", nsp.c_str(), error.c_str());
      for (auto& r : sockets) json_array_append_new(gather->list.get(), ui_socket(r, nsp).release());
      if (--gather->pending > 0) return;
      if (auto s = gather->to.lock()) s->emit("all_sockets", Payload::of(std::move(gather->list)));
    });
  }
}

// A fresh login's session id, first (Node sends it from the login middleware).
void send_session(Socket& s) {
  if (auto it = g_ui->new_sessions.find(s.id()); it != g_ui->new_sessions.end()) {
    s.emit("session", Payload::of(str(it->second)));
    g_ui->new_sessions.erase(it);
  }
}

void on_dashboard(Socket& s) {
  if (!g_ui) return;
  const AdminConf& c = conf();
  g_ui->local_watch = true;
  g_ui->local_checked = app::now_ms();
  ping();  // the other nodes start reporting before they answer the fetch below
  send_session(s);
  s.emit("config", Payload::of(Json(json_pack("{s:o}", "supportedFeatures", features(c).release()))));
  if (c.ui_development) send_all_sockets(s);
}

// ------------------------------------------------------ verbose reports

void on_socket_connected(Socket& s) {
  if (s.nsp() == g_ui->nsp) {  // a dashboard: it hears of itself (on_dashboard runs after this)
    g_ui->local_watch = true;
    g_ui->local_checked = app::now_ms();
    send_session(s);
  }
  if (!watching()) return;
  Json ts = str(app::iso_now());
  // As Node: the socket's own room first.
  tell("room_joined",
       array_of({str(s.nsp()).release(), str(s.id()).release(), str(s.id()).release(), json_incref(ts.get())}));
  tell("socket_connected", array_of({ui_socket(s).release(), ts.release()}));
}

// Node's instrumentation reports a leave on the next tick (process.nextTick),
// so after whatever the current event does: here, from the loop once it is done.
void tell_left_later(const std::string& nsp, std::vector<std::string> rooms, const std::string& id) {
  g_ui->w->post([nsp, rooms = std::move(rooms), id, ts = app::iso_now()] {
    if (!g_ui) return;
    for (const std::string& room : rooms)
      tell("room_left", array_of({str(nsp).release(), str(room).release(), str(id).release(), str(ts).release()}));
  });
}

// Node: "disconnect" is emitted once the socket left its rooms, whose
// leave-rooms are reported on the next tick: socket_disconnected (those of
// every socket of a closed connection), then room_left for each of its rooms,
// its own included, in the order joined (the socket's room list still holds them).
void on_socket_disconnected(Socket& s, std::string_view reason) {
  if (!watching()) return;
  tell("socket_disconnected",
       array_of({str(s.nsp()).release(), str(s.id()).release(), str(reason).release(), str(app::iso_now()).release()}));
  tell_left_later(s.nsp(), s.rooms(), s.id());
}

void on_room(Socket& s, std::string_view room, bool joined) {
  if (!watching()) return;
  // Leaving because it is disconnecting (no longer connected): told after socket_disconnected.
  if (!joined && !s.connected()) return;
  if (!joined) return tell_left_later(s.nsp(), {std::string(room)}, s.id());
  tell("room_joined",
       array_of({str(s.nsp()).release(), str(room).release(), str(s.id()).release(), str(app::iso_now()).release()}));
}

void on_transport(Socket& s) {
  if (!watching()) return;
  tell("socket_updated", array_of({json_pack("{s:s, s:s, s:s%}", "id", s.id().c_str(), "nsp", s.nsp().c_str(),
                                             "transport", s.transport().data(), s.transport().size())}));
}

// Runs first on every event (the Limit phase): every received event, valid or not.
bool on_event_received(Socket& s, Event& ev) {
  if (!watching() || s.nsp() == g_ui->nsp) return true;
  Json args(json_array());
  json_array_append_new(args.get(), str(ev.name).release());
  json_array_extend(args.get(), ev.args.args.get());
  tell("event_received",
       array_of({str(s.nsp()).release(), str(s.id()).release(), args.release(), str(app::iso_now()).release()}),
       ev.args.attachments);
  return true;
}

// Every event sent to a socket of a non-admin namespace, one per recipient.
void on_event_sent(Socket& s, const Payload& sent) {
  if (!watching() || s.nsp() == g_ui->nsp) return;
  tell("event_sent",
       array_of({str(s.nsp()).release(), str(s.id()).release(), json_deep_copy(sent.args.get()),
                 str(app::iso_now()).release()}),
       sent.attachments);
}

// ---------------------------------------------------------------- actions

// The sockets an action targets: those of namespace `nsp` in room `filter`
// (the dashboard passes a socket id for one socket), all without a filter.
bool target(Socket& s, Event& ev, const json_t* nsp, const json_t* filter, BroadcastOptions& out) {
  if (!g_ui) return false;
  if (!json_is_string(nsp) || !declared(json_string_value(nsp))) {
    app::invalid(s, ev, "nsp: must be a namespace of this server");
    return false;
  }
  out.nsp = json_string_value(nsp);
  if (present(filter)) {
    if (!json_is_string(filter) || json_string_length(filter) == 0) {
      app::invalid(s, ev, "filter: must be a room name or a socket id");
      return false;
    }
    out.rooms = {json_string_value(filter)};
  }
  return true;
}

const json_t* arg(const Event& ev, size_t i) {
  return json_array_get(ev.args.args.get(), i);
}

void on_join_or_leave(Socket& s, Event& ev, bool join) {
  BroadcastOptions opts;
  if (!target(s, ev, arg(ev, 0), arg(ev, 2), opts)) return;
  const json_t* room = arg(ev, 1);
  if (!json_is_string(room) || json_string_length(room) == 0) return app::invalid(s, ev, "room: must be a room name");
  std::string r = json_string_value(room);
  logf(LogLevel::Notice, "admin-ui: %s %s (%s, %s)", join ? "join" : "leave", r.c_str(), opts.nsp.c_str(),
       opts.rooms.empty() ? "all sockets" : opts.rooms[0].c_str());
  if (join)
    cluster::sockets_join(opts, {r});
  else
    cluster::sockets_leave(opts, {r});
}

void on_disconnect_action(Socket& s, Event& ev) {
  BroadcastOptions opts;
  if (!target(s, ev, arg(ev, 0), arg(ev, 2), opts)) return;
  const json_t* close = arg(ev, 1);
  if (present(close) && !json_is_boolean(close)) return app::invalid(s, ev, "close: must be a boolean");
  logf(LogLevel::Notice, "admin-ui: disconnect %s (%s)%s", opts.nsp.c_str(),
       opts.rooms.empty() ? "all sockets" : opts.rooms[0].c_str(), json_is_true(close) ? ", closing connections" : "");
  cluster::disconnect_sockets(opts, json_is_true(close));
}

void on_emit(Socket& s, Event& ev) {
  BroadcastOptions opts;
  if (!target(s, ev, arg(ev, 0), arg(ev, 1), opts)) return;
  const json_t* name = arg(ev, 2);
  if (!json_is_string(name) || json_string_length(name) == 0)
    return app::invalid(s, ev, "eventName: must be a non-empty string");
  std::string event = json_string_value(name);
  for (const char* reserved :
       {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"})
    if (event == reserved) return app::invalid(s, ev, "eventName: \"" + event + "\" is reserved");
  Payload p;
  for (size_t i = 3; i < json_array_size(ev.args.args.get()); i++)
    json_array_append_new(p.args.get(), copy_with_binary(arg(ev, i), ev.args.attachments, p.attachments).release());
  g_ui->w->broadcast(opts, event, std::move(p));
}


}  // namespace

// ----------------------------------------------------------------- public

bool ui_serves(const AdminConf& c, std::string_view nsp) {
  return !c.ui_nsp.empty() && c.ui_nsp == nsp;
}

bool ui_check_conf(const AdminConf& c, std::string& err) {
  if (!c.ui_static_dir.empty()) {
    struct stat st {};
    if (stat(c.ui_static_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      err = "admin_ui_static: \"" + c.ui_static_dir + "\" is not a directory";
      return false;
    }
  }
  if (c.ui_nsp.empty()) return true;
  if (c.ui_auth == AdminConf::UiAuth::Unset) {
    err = "admin_ui_namespace needs admin_ui_auth: basic USERNAME BCRYPT_HASH, or off";
    return false;
  }
  if (c.ui_nsp == c.nsp && c.ui_auth == AdminConf::UiAuth::Basic) {
    err = "admin_ui_namespace " + c.ui_nsp +
          " is the admin namespace, whose sockets authenticate with a JWT: use admin_ui_auth off there, or another "
          "namespace for the dashboard's login";
    return false;
  }
  return true;
}

bool ui_init_worker(Worker& w, const Module& self, const AdminConf& c) {
  if (!c.ui_static_dir.empty()) serve_static(w, c.ui_static_dir, c.ui_static_prefix);
  if (c.ui_nsp.empty()) return true;
  g_ui = std::make_unique<UiState>();
  g_ui->w = &w;
  g_ui->self = &self;
  g_ui->nsp = c.ui_nsp;
  if (!declared(g_ui->nsp)) {
    logf(LogLevel::Crit, "admin: admin_ui_namespace %s is not declared (add: namespace %s { auth_jwt off; })",
         g_ui->nsp.c_str(), g_ui->nsp.c_str());
    g_ui.reset();
    return false;
  }
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) g_ui->hostname = host;

  const std::string nsp = g_ui->nsp;
  if (c.ui_auth == AdminConf::UiAuth::Basic) w.use_connect(nsp, authenticate, ConnectPhase::Identify);
  if (nsp != c.nsp) w.use_event(nsp, schema::middleware(c.ui_readonly ? kUiReadonlyEvents : kUiEvents));
  if (!c.ui_readonly) {
    w.on(nsp, "join", [](Socket& s, Event& ev) { on_join_or_leave(s, ev, true); });
    w.on(nsp, "leave", [](Socket& s, Event& ev) { on_join_or_leave(s, ev, false); });
    w.on(nsp, "_disconnect", on_disconnect_action);
    w.on(nsp, "emit", on_emit);
  }
  cluster::on_server_event(nsp, kWatchEvent, [](const Payload&, cluster::ServerAck) {
    if (g_ui) g_ui->remote_until = app::now_ms() + 3 * int64_t(conf().ui_stats_interval_ms);  // two pings may be lost
  });
  if (c.ui_development) {
    w.on_connection("", on_socket_connected);
    w.on_disconnect("", on_socket_disconnected);
    w.on_room("", on_room);
    w.on_transport("", on_transport);
    w.use_event("", on_event_received, EventPhase::Limit);
    w.on_event_sent("", on_event_sent);
  }
  // After socket_connected, as Node's instrumentation: a dashboard hears of itself first.
  w.on_connection(nsp, on_dashboard);
  g_ui->ticker = every(w, std::min<uint64_t>(1000, c.ui_stats_interval_ms), [] {
    if (g_ui) tick();
  });
  return true;
}

void ui_exit_worker() {
  if (!g_ui) return;
  g_ui.reset();
}

}  // namespace dr::admin

