// api: the HTTP API for backends (contract §6, §8 "HTTP API"), on the main
// listener, behind `Authorization: Bearer <api_key>`.
//
//   POST /api/v1/emit           {namespace="/", rooms?, except?, event, data?}
//                               -> {data: {namespace, rooms, except, event}}
//   POST /api/v1/notifications  {userIds, notification: {type, title, body="", data={}}}
//                               -> stored in each inbox, notification:new to user:<id>
//                                  in /notifications; {data: {notification, userIds}}
//   POST /api/v1/disconnect     {userId} -> every socket in user:<userId>, every
//                               namespace, every node; {data: {userId}}
//   POST /api/v1/rooms/leave    {namespace, room, userIds} -> the sockets of these
//                               users (by identity) leave `room` on every node;
//                               {data: {namespace, room, userIds, sockets}}
//   GET  /api/v1/stats          -> {data: <the node's statistics>}
//
// Success is 200 {data}; a failure is {error: {code, message, details?}}: 400
// INVALID_DATA, 401 UNAUTHORIZED, 404 NOT_FOUND, 405 METHOD_NOT_ALLOWED, 413
// PAYLOAD_TOO_LARGE, 503 UNAVAILABLE (Redis away: nothing stored, nothing
// sent), 500 INTERNAL. Without api_key the API is off: every path answers 404.

#include <depth-realtime/cluster.h>
#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>
#include <depth-realtime/validate.h>
#include <sys/random.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <memory>
#include <optional>
#include <unordered_set>

#include "app.h"
#include "inbox.h"
#include "stats.h"

namespace {

using dr::schema::Kind;

constexpr const char* kNotifications = "/notifications";
constexpr size_t kMaxRecipients = 10000;

// ------------------------------------------------------------ configuration

struct ApiConf : dr::ModuleConfBase<ApiConf> {
  std::string key;  // empty: the API is off
  uint64_t max_body = 1024 * 1024;
  uint64_t inbox_max = dr::app::inbox::kDefaultMaxItems;
};

bool set_key(dr::ModuleConf* c, const std::vector<std::string>& a, std::string&) {
  static_cast<ApiConf*>(c)->key = a[0] == "off" ? "" : a[0];
  return true;
}

const dr::Directive kDirectives[] = {
    {"api_key", dr::kConfServer, 1, 1, set_key, "off", true,
     "Bearer key of the HTTP API (/api/v1/...), e.g. \"${API_KEY:-}\"; empty or off: the API is off (404)."},
    {"api_max_body", dr::kConfServer, 1, 1, dr::set_size<&ApiConf::max_body>, "1m", true,
     "Largest API request body; larger: 413. max_payload bounds every request body of the main listener too."},
    {"api_inbox_max", dr::kConfServer, 1, 1, dr::set_uint<&ApiConf::inbox_max>, "100", true,
     "Notifications kept per user inbox; storing one more drops the oldest."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

std::unique_ptr<dr::ModuleConf> create_conf() {
  return std::make_unique<ApiConf>();
}

bool check_conf(dr::ModuleConf* c, std::string& err) {
  auto* conf = static_cast<ApiConf*>(c);
  if (conf->inbox_max < 1) {
    err = "api_inbox_max must be at least 1";
    return false;
  }
  if (conf->max_body < 1) {
    err = "api_max_body must be at least 1";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------- answers

dr::HttpResponse json_response(int status, dr::Json body) {
  dr::HttpResponse r;
  r.status = status;
  r.body = dr::json_text(body.get());
  return r;
}

dr::HttpResponse ok(dr::Json data) {
  dr::Json body(json_object());
  json_object_set_new(body.get(), "data", data.release());
  return json_response(200, std::move(body));
}

dr::HttpResponse failure(int status, std::string_view code, std::string_view message, std::string_view details = {}) {
  dr::Json err(json_object());
  json_object_set_new(err.get(), "code", json_stringn(code.data(), code.size()));
  json_object_set_new(err.get(), "message", json_stringn(message.data(), message.size()));
  if (!details.empty()) json_object_set_new(err.get(), "details", json_stringn(details.data(), details.size()));
  dr::Json body(json_object());
  json_object_set_new(body.get(), "error", err.release());
  return json_response(status, std::move(body));
}

dr::HttpResponse invalid(std::string_view details) {
  return failure(400, "INVALID_DATA", "Invalid data", details);
}
dr::HttpResponse not_found() {
  return failure(404, "NOT_FOUND", "Not found");
}

// A Redis failure: 503 when Redis is away, 500 for anything else.
dr::HttpResponse redis_failure(const std::string& error, std::string_view what) {
  if (error == dr::redis::kUnavailable)
    return failure(503, "UNAVAILABLE", "Service unavailable", std::string(what) + ": Redis unavailable");
  dr::logf(dr::LogLevel::Error, "api: %.*s: %s", int(what.size()), what.data(), error.c_str());
  return failure(500, "INTERNAL", "Internal error", std::string(what) + ": " + error);
}

// ------------------------------------------------------------------ input

// "Bearer <key>", compared in constant time.
bool authorized(const dr::HttpRequest& req, const std::string& key) {
  const std::string* h = req.header("authorization");
  if (!h || h->size() < 7) return false;
  for (size_t i = 0; i < 6; i++)
    if (tolower(static_cast<unsigned char>((*h)[i])) != "bearer"[i]) return false;
  if ((*h)[6] != ' ') return false;
  size_t begin = h->find_first_not_of(' ', 7);
  size_t end = h->find_last_not_of(" \t");
  if (begin == std::string::npos) return false;
  std::string_view given(h->data() + begin, end + 1 - begin);
  if (given.size() != key.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); i++) diff |= static_cast<unsigned char>(given[i] ^ key[i]);
  return diff == 0;
}

// A room list: one room name or an array of them; absent or null = none.
bool room_list(const json_t* body, const char* field, std::vector<std::string>& out, std::string& details) {
  const json_t* v = json_object_get(body, field);
  if (!v || json_is_null(v)) return true;
  auto add = [&](const json_t* item) {
    if (!json_is_string(item) || json_string_length(item) == 0) return false;
    std::string room(json_string_value(item), json_string_length(item));
    if (std::find(out.begin(), out.end(), room) == out.end()) out.push_back(std::move(room));
    return true;
  };
  bool good = true;
  if (json_is_array(v)) {
    size_t i;
    json_t* item;
    json_array_foreach(v, i, item) good = good && add(item);
  } else {
    good = add(v);
  }
  if (!good) details = std::string(field) + ": must be a room name or an array of room names";
  return good;
}


// A random (version 4) UUID.
std::string uuid4() {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = getrandom(b + got, sizeof b - got, 0);
    if (n > 0) got += size_t(n);
  }
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  char out[37];
  snprintf(out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
           b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return out;
}

bool declared(dr::Worker& w, const std::string& nsp) {
  for (const std::string& n : w.namespaces())
    if (n == nsp) return true;
  return false;
}

// -------------------------------------------------------------- endpoints

const dr::schema::EventShape kEmit{"emit",
                                   {{"namespace", Kind::String, false, 1, 256},
                                    {"event", Kind::String, true, 1, 256},
                                    {"rooms", Kind::Any},
                                    {"except", Kind::Any},
                                    {"data", Kind::Any}}};
const dr::schema::EventShape kNotify{
    "notifications", {{"userIds", Kind::Array, true, 1, double(kMaxRecipients)}, {"notification", Kind::Object, true}}};
const dr::schema::EventShape kNotification{"notification",
                                           {{"type", Kind::String, true, 1, 64},
                                            {"title", Kind::String, true, 1, 256},
                                            {"body", Kind::String, false, 0, 10000},
                                            {"data", Kind::Object}}};
const dr::schema::EventShape kDisconnect{"disconnect", {{"userId", Kind::Id, true}}};
const dr::schema::EventShape kRoomsLeave{"rooms/leave",
                                         {{"namespace", Kind::String, true, 1, 256},
                                          {"room", Kind::String, true, 1, 1024},
                                          {"userIds", Kind::Array, true, 1, double(kMaxRecipients)}}};

// Socket.IO's own event names: a client could not tell them from the real thing.
const char* const kReserved[] = {"connect",       "connect_error", "disconnect",
                                 "disconnecting", "newListener",   "removeListener"};

void emit(dr::Worker& w, const ApiConf&, const json_t* body, dr::HttpRespond respond) {
  std::string details;
  if (!dr::schema::validate(body, kEmit, details)) return respond(invalid(details));
  dr::BroadcastOptions opts;
  if (const char* nsp = dr::json_str(body, "namespace")) opts.nsp = nsp;
  if (!declared(w, opts.nsp)) return respond(invalid("namespace: unknown namespace \"" + opts.nsp + "\""));
  std::string event = dr::json_str(body, "event");
  for (const char* r : kReserved)
    if (event == r) return respond(invalid("event: \"" + event + "\" is a reserved event name"));
  if (!room_list(body, "rooms", opts.rooms, details) || !room_list(body, "except", opts.except, details))
    return respond(invalid(details));

  dr::Payload args;
  if (json_t* data = json_object_get(body, "data")) json_array_append(args.args.get(), data);
  w.broadcast(opts, event, std::move(args));

  dr::Json out(json_object());
  json_object_set_new(out.get(), "namespace", json_string(opts.nsp.c_str()));
  json_object_set_new(out.get(), "rooms", dr::app::string_array(opts.rooms).release());
  json_object_set_new(out.get(), "except", dr::app::string_array(opts.except).release());
  json_object_set_new(out.get(), "event", json_stringn(event.data(), event.size()));
  respond(ok(std::move(out)));
}

// The ids of `userIds` (an array the schema checked), each once, in order;
// false with `details` when one is not an id.
bool user_ids(const json_t* body, std::vector<std::string>& users, std::string& details) {
  std::unordered_set<std::string> seen;
  size_t i;
  json_t* item;
  json_array_foreach(json_object_get(body, "userIds"), i, item) {
    std::optional<std::string> id = dr::schema::id_string(item);
    if (!id) {
      details = "userIds[" + std::to_string(i) + "]: must be an id (string of 1-128 characters or non-negative integer)";
      return false;
    }
    if (seen.insert(*id).second) users.push_back(std::move(*id));
  }
  return true;
}

void notify(dr::Worker& w, const ApiConf& conf, const json_t* body, dr::HttpRespond respond) {
  std::string details;
  if (!dr::schema::validate(body, kNotify, details)) return respond(invalid(details));
  std::vector<std::string> users;
  if (!user_ids(body, users, details)) return respond(invalid(details));
  const json_t* in = json_object_get(body, "notification");
  if (!dr::schema::validate(in, kNotification, details)) return respond(invalid("notification." + details));

  auto text = [&](const char* field, const char* fallback) {
    const json_t* v = json_object_get(in, field);
    return json_is_string(v) ? json_stringn(json_string_value(v), json_string_length(v)) : json_string(fallback);
  };
  dr::Json n(json_object());
  json_object_set_new(n.get(), "id", json_string(uuid4().c_str()));
  json_object_set_new(n.get(), "type", text("type", ""));
  json_object_set_new(n.get(), "title", text("title", ""));
  json_object_set_new(n.get(), "body", text("body", ""));
  json_t* data = json_object_get(in, "data");
  json_object_set_new(n.get(), "data", json_is_object(data) ? json_deep_copy(data) : json_object());
  json_object_set_new(n.get(), "createdAt", json_string(dr::app::iso_now().c_str()));

  // Stored first: a user who subscribes later gets it from the inbox; only
  // then pushed, so that nothing is pushed that was not stored.
  auto note = std::make_shared<dr::Json>(std::move(n));
  dr::app::inbox::add(users, note->get(), conf.inbox_max, [&w, note, users, respond](std::string error) {
    if (!error.empty()) return respond(redis_failure(error, "the notification was not stored"));
    json_object_set_new(note->get(), "read", json_false());
    if (declared(w, kNotifications)) {
      dr::BroadcastOptions opts;
      opts.nsp = kNotifications;
      for (const std::string& u : users) opts.rooms.push_back("user:" + u);
      w.broadcast(opts, "notification:new", dr::Payload::of(dr::Json(json_deep_copy(note->get()))));
    }
    dr::Json out(json_object());
    json_object_set_new(out.get(), "notification", note->release());
    json_object_set_new(out.get(), "userIds", dr::app::string_array(users).release());
    respond(ok(std::move(out)));
  });
}

void disconnect(dr::Worker& w, const ApiConf&, const json_t* body, dr::HttpRespond respond) {
  std::string details;
  if (!dr::schema::validate(body, kDisconnect, details)) return respond(invalid(details));
  std::string user = *dr::schema::id_string(json_object_get(body, "userId"));
  // Not `close`: the clients get "io server disconnect" and do not reconnect
  // by themselves.
  dr::app::disconnect_user(w, user, false);
  respond(ok(dr::Json(json_pack("{s:s%}", "userId", user.data(), user.size()))));
}

// Revoking access live: the members of `room` are fetched from every node,
// those whose identity (the userId auth_jwt set) is one of `userIds` are
// picked, and each leaves through its own room (its socket id), so that every
// node, Node.js servers with the Redis adapter too, applies socketsLeave to
// exactly those sockets. Not by user:<id>: an admin may be in another user's
// room, and a socket may have left its own user's.
void rooms_leave(dr::Worker& w, const ApiConf&, const json_t* body, dr::HttpRespond respond) {
  std::string details;
  if (!dr::schema::validate(body, kRoomsLeave, details)) return respond(invalid(details));
  std::string nsp = dr::json_str(body, "namespace");
  if (!declared(w, nsp)) return respond(invalid("namespace: unknown namespace \"" + nsp + "\""));
  std::string room = dr::json_str(body, "room");
  std::vector<std::string> users;
  if (!user_ids(body, users, details)) return respond(invalid(details));
  if (dr::cluster::configured() && !dr::cluster::ready())
    return respond(failure(503, "UNAVAILABLE", "Service unavailable", "Redis unavailable: no socket left the room"));
  dr::BroadcastOptions members;
  members.nsp = nsp;
  members.rooms = {room};
  dr::cluster::fetch_sockets(members, [nsp, room, users, respond](std::string error,
                                                                  std::vector<dr::cluster::RemoteSocket> sockets) {
    std::unordered_set<std::string> wanted(users.begin(), users.end());
    dr::BroadcastOptions targets;
    targets.nsp = nsp;
    for (const auto& s : sockets) {
      std::optional<std::string> user = dr::schema::id_string(json_object_get(s.data.get(), "userId"));
      if (user && wanted.count(*user)) targets.rooms.push_back(s.id);
    }
    // Never with no rooms: that would select the whole namespace.
    if (!targets.rooms.empty()) dr::cluster::sockets_leave(targets, {room});
    std::string left = std::to_string(targets.rooms.size());
    if (!error.empty())
      return respond(failure(503, "UNAVAILABLE", "Service unavailable",
                             error + ": " + left + " socket(s) left the room, others may not have; call again"));
    dr::Json out(json_object());
    json_object_set_new(out.get(), "namespace", json_stringn(nsp.data(), nsp.size()));
    json_object_set_new(out.get(), "room", json_stringn(room.data(), room.size()));
    json_object_set_new(out.get(), "userIds", dr::app::string_array(users).release());
    json_object_set_new(out.get(), "sockets", json_integer(json_int_t(targets.rooms.size())));
    respond(ok(std::move(out)));
  });
}

void stats(dr::Worker& w, const ApiConf&, const json_t*, dr::HttpRespond respond) {
  respond(ok(dr::app::node_stats(w)));
}

struct Endpoint {
  const char* path;
  const char* method;
  void (*handler)(dr::Worker& w, const ApiConf& conf, const json_t* body, dr::HttpRespond respond);
};
const Endpoint kEndpoints[] = {
    {"/api/v1/emit", "POST", emit},
    {"/api/v1/notifications", "POST", notify},
    {"/api/v1/disconnect", "POST", disconnect},
    {"/api/v1/rooms/leave", "POST", rooms_leave},
    {"/api/v1/stats", "GET", stats},
};

// Every endpoint is routed for all these methods, so that the API answers a
// wrong method itself (405 with Allow) and stays a plain 404 while it is off.
const char* const kMethods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

void serve(dr::Worker& w, const dr::Module& self, const Endpoint& ep, const dr::HttpRequest& req,
           dr::HttpRespond respond) {
  const auto& conf = *static_cast<const ApiConf*>(w.conf(self));
  if (conf.key.empty()) return respond(not_found());
  if (!authorized(req, conf.key)) {
    dr::HttpResponse r =
        failure(401, "UNAUTHORIZED", "Unauthorized",
                req.header("authorization") ? "wrong API key" : "Authorization: Bearer <API key> is required");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return respond(std::move(r));
  }
  if (req.method != ep.method) {
    dr::HttpResponse r = failure(405, "METHOD_NOT_ALLOWED", "Method not allowed", std::string("use ") + ep.method);
    r.headers.emplace_back("Allow", ep.method);
    return respond(std::move(r));
  }
  if (req.body.size() > conf.max_body)
    return respond(failure(413, "PAYLOAD_TOO_LARGE", "Payload too large",
                           "body: larger than " + std::to_string(conf.max_body) + " bytes"));
  dr::Json body;
  if (std::string_view(ep.method) == "POST") {
    json_error_t err;
    body = dr::Json(json_loadb(req.body.data(), req.body.size(), JSON_DECODE_ANY, &err));
    if (!body) return respond(invalid(std::string("body: not valid JSON (") + err.text + ")"));
    if (!json_is_object(body.get())) return respond(invalid("body: must be a JSON object"));
  }
  ep.handler(w, conf, body.get(), std::move(respond));
}

bool init_worker(dr::Worker& w, const dr::Module& self) {
  dr::app::serve_disconnect_user(w);
  for (const Endpoint& ep : kEndpoints)
    for (const char* method : kMethods)
      w.route(dr::Listener::Main, method, ep.path,
              [&w, &self, &ep](const dr::HttpRequest& req, dr::HttpRespond respond) {
                serve(w, self, ep, req, std::move(respond));
              });
  dr::app::stats_start(w);
  const auto& conf = *static_cast<const ApiConf*>(w.conf(self));
  if (conf.key.empty() && w.slot() == 0)
    dr::log(dr::LogLevel::Notice, "api: no api_key configured, the HTTP API is off");
  return true;
}

void exit_worker(dr::Worker&, const dr::Module&) {
  dr::app::stats_stop();
}

const dr::Module kModule = {
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "api", kDirectives, create_conf, check_conf, init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule);
