// probe: a test module, built out of tree against the installed headers only
// (see CMakeLists.txt beside it), so the integration tests also prove that a
// third party can write a module. It exposes the module API to the tests:
//
//   probe:whoami                                  -> ack {data:{sid, nsp, userId, role, rooms}}
//   probe:join {room}, probe:leave {room}         -> ack {data:{rooms}}
//   probe:emit {rooms?, except?, excludeSelf?, volatile?, event, args}
//                                                 -> worker.broadcast(...); ack {data:true}
//   probe:ask {event, args, timeoutMs}            -> emit_with_ack to this socket; the
//                                                    answer comes back as probe:answer
//                                                    {timedOut, reply}
//   probe:disconnect {close?}                     -> socket.disconnect(close)
//   probe:volatile {event, count}                 -> `count` volatile events, arg i
//   probe:later {ms, value}                       -> delays the socket's next events (they wait),
//                                                    then after `ms` acks {data: value}
//   probe:connectPhases                           -> ack {data: the CONNECT hooks the probe ran, in
//                                                    order: "identify" (its Identify phase hook,
//                                                    registered last) and "app:user" or "app:none"
//                                                    (its App phase hook, registered first, seeing
//                                                    a userId or not)}
//   probe:redis {argv}                            -> dr::redis::command; ack {data: reply}
//                                                    (errors as {error: text})
//   GET /probe on the main listener               -> 200 "probe ok"
//   on connection                                 -> probe:hello <probe_greeting>
//
// Cluster operations (include/depth-realtime/cluster.h), rooms/except select sockets:
//   probe:fetch {rooms?, except?}                 -> ack {data:{error, sockets:[{id, rooms, data}]}}
//   probe:socketsJoin {rooms?, except?, join}     -> cluster::sockets_join; ack {data:true}
//   probe:socketsLeave {rooms?, except?, leave}   -> cluster::sockets_leave; ack {data:true}
//   probe:disconnectSockets {rooms?, except?, close?} -> ack {data:true}, then cluster::disconnect_sockets
//   probe:serverSideEmit {event, args, ack?, timeoutMs?}
//                                                 -> ack {data:true}, or with ack {data:{error, replies}}
//   probe:emitWithAck {rooms?, except?, event, args, timeoutMs?}
//                                                 -> ack {data:{timedOut, replies}}
//   probe:serverCount                             -> ack {data: count}
//   probe:allRooms                                -> ack {data:{error, rooms}}
//   probe:presence {room}                         -> ack {data:{error, members:[{socketId, userId, node}]}}
//   server-side event probe:sse (from other nodes) -> acked with {from:"depth-realtime", got:args};
//                                                    local sockets in room "sse-watchers" get
//                                                    probe:sse-received args

#include <depth-realtime/cluster.h>
#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>

#include <unordered_map>

namespace {

struct ProbeConf : dr::ModuleConfBase<ProbeConf> {
  std::string greeting = "hello";
};

const dr::Directive kDirectives[] = {
    {"probe_greeting", dr::kConfServer, 1, 1, dr::set_str<&ProbeConf::greeting>, "hello", true,
     "Text the probe:hello event carries on every connection."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

constexpr uint64_t kDefaultAskTimeoutMs = 5000;
constexpr json_int_t kMaxVolatileCount = 100000;

// ------------------------------------------------------------- helpers

const json_t* arg0(const dr::Event& e) { return json_array_get(e.args.args.get(), 0); }

std::optional<std::string> str_field(const json_t* obj, const char* key) {
  const json_t* v = json_object_get(obj, key);
  if (!json_is_string(v) || json_string_length(v) == 0) return std::nullopt;
  return std::string(json_string_value(v), json_string_length(v));
}

// A room list: an array of strings, or one string; absent = empty.
bool str_list(const json_t* obj, const char* key, std::vector<std::string>& out) {
  const json_t* v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return true;
  if (json_is_string(v)) {
    out.emplace_back(json_string_value(v), json_string_length(v));
    return true;
  }
  if (!json_is_array(v)) return false;
  size_t i;
  json_t* item;
  json_array_foreach(v, i, item) {
    if (!json_is_string(item)) return false;
    out.emplace_back(json_string_value(item), json_string_length(item));
  }
  return true;
}

dr::Json string_array(const std::vector<std::string>& items) {
  dr::Json arr(json_array());
  for (const std::string& s : items) json_array_append_new(arr.get(), json_stringn(s.data(), s.size()));
  return arr;
}

json_t* string_or_null(const std::string* s) {
  return s ? json_stringn(s->data(), s->size()) : json_null();
}


void reply_invalid(dr::Socket& s, const dr::Event& e, const char* details) {
  dr::send_error(s, e, "INVALID_DATA", "Invalid data", details);
}


// The `args` array of the first argument as a payload of its own, with the
// binary it refers to. Absent = no args; anything else but an array = nullopt.
std::optional<dr::Payload> args_payload(const dr::Event& e) {
  const json_t* args = json_object_get(arg0(e), "args");
  if (!args || json_is_null(args)) return dr::Payload();
  if (!json_is_array(args)) return std::nullopt;
  dr::Payload p;
  p.args = dr::copy_with_binary(args, e.args.attachments, p.attachments);
  return p;
}

// --------------------------------------------------------------- events

void on_whoami(dr::Socket& s, dr::Event& e) {
  dr::Json data(json_object());
  json_object_set_new(data.get(), "sid", json_string(s.id().c_str()));
  json_object_set_new(data.get(), "nsp", json_string(s.nsp().c_str()));
  json_object_set_new(data.get(), "userId", string_or_null(s.get("userId")));
  json_object_set_new(data.get(), "role", string_or_null(s.get("role")));
  json_object_set_new(data.get(), "rooms", string_array(s.rooms()).release());
  dr::ack_data(s, e, std::move(data));
}

void on_join_leave(dr::Socket& s, dr::Event& e, bool join) {
  std::optional<std::string> room = str_field(arg0(e), "room");
  if (!room) return reply_invalid(s, e, "room: is required");
  if (join) {
    s.join(*room);
  } else {
    s.leave(*room);
  }
  dr::Json data(json_object());
  json_object_set_new(data.get(), "rooms", string_array(s.rooms()).release());
  dr::ack_data(s, e, std::move(data));
}

void on_emit(dr::Worker& w, dr::Socket& s, dr::Event& e) {
  const json_t* in = arg0(e);
  std::optional<std::string> event = str_field(in, "event");
  if (!event) return reply_invalid(s, e, "event: is required");
  dr::BroadcastOptions opts;
  opts.nsp = s.nsp();
  if (!str_list(in, "rooms", opts.rooms)) return reply_invalid(s, e, "rooms: must be an array of strings");
  if (!str_list(in, "except", opts.except)) return reply_invalid(s, e, "except: must be an array of strings");
  // Every socket is in the room named by its id, as in Socket.IO.
  if (json_is_true(json_object_get(in, "excludeSelf"))) opts.except.push_back(s.id());
  opts.is_volatile = json_is_true(json_object_get(in, "volatile"));
  std::optional<dr::Payload> args = args_payload(e);
  if (!args) return reply_invalid(s, e, "args: must be an array");
  w.broadcast(opts, *event, std::move(*args));
  dr::ack_data(s, e, dr::Json(json_true()));
}

void on_ask(dr::Socket& s, dr::Event& e) {
  const json_t* in = arg0(e);
  std::optional<std::string> event = str_field(in, "event");
  if (!event) return reply_invalid(s, e, "event: is required");
  std::optional<dr::Payload> args = args_payload(e);
  if (!args) return reply_invalid(s, e, "args: must be an array");
  uint64_t timeout_ms = kDefaultAskTimeoutMs;
  const json_t* t = json_object_get(in, "timeoutMs");
  if (json_is_integer(t) && json_integer_value(t) > 0) timeout_ms = static_cast<uint64_t>(json_integer_value(t));

  // The answer may come after the socket is gone: hold it weakly.
  std::weak_ptr<dr::Socket> weak = s.weak();
  s.emit_with_ack(*event, std::move(*args), timeout_ms, [weak](bool timed_out, dr::Payload reply) {
    std::shared_ptr<dr::Socket> sock = weak.lock();
    if (!sock || !sock->connected()) return;
    dr::Json answer(json_object());
    json_object_set_new(answer.get(), "timedOut", json_boolean(timed_out));
    // The reply array is embedded whole, so its placeholders keep their numbers.
    json_object_set(answer.get(), "reply", reply.args.get());
    dr::Payload out = dr::Payload::of(std::move(answer));
    out.attachments = std::move(reply.attachments);
    sock->emit("probe:answer", std::move(out));
  });
  dr::ack_data(s, e, dr::Json(json_true()));
}

void on_disconnect(dr::Socket& s, dr::Event& e) {
  bool close = json_is_true(json_object_get(arg0(e), "close"));
  dr::ack_data(s, e, dr::Json(json_true()));
  s.disconnect(close);
}

void on_volatile(dr::Socket& s, dr::Event& e) {
  const json_t* in = arg0(e);
  std::optional<std::string> event = str_field(in, "event");
  if (!event) return reply_invalid(s, e, "event: is required");
  const json_t* count = json_object_get(in, "count");
  if (!json_is_integer(count) || json_integer_value(count) < 0 || json_integer_value(count) > kMaxVolatileCount) {
    return reply_invalid(s, e, "count: must be an integer in [0, 100000]");
  }
  for (json_int_t i = 0; i < json_integer_value(count); ++i) {
    s.emit(*event, dr::Payload::of(dr::Json(json_integer(i))), true);
  }
  dr::ack_data(s, e, dr::Json(json_true()));
}

// ---------------------------------------------------- cluster operations

// rooms / except of the first argument, for the socket's namespace.
std::optional<dr::BroadcastOptions> selection(dr::Socket& s, dr::Event& e) {
  dr::BroadcastOptions opts;
  opts.nsp = s.nsp();
  if (!str_list(arg0(e), "rooms", opts.rooms) || !str_list(arg0(e), "except", opts.except)) {
    reply_invalid(s, e, "rooms, except: must be arrays of strings");
    return std::nullopt;
  }
  return opts;
}

// An ack answered later: hold the socket weakly.
template <class F>
void answer_later(dr::Socket& s, const dr::Event& e, F&& make_data) {
  if (!e.ack_id) return;
  std::weak_ptr<dr::Socket> weak = s.weak();
  uint64_t id = *e.ack_id;
  make_data([weak, id](dr::Json data) {
    auto sock = weak.lock();
    if (!sock || !sock->connected()) return;
    dr::Json wrapped(json_object());
    json_object_set_new(wrapped.get(), "data", data.release());
    sock->ack(id, dr::Payload::of(std::move(wrapped)));
  });
}

void on_fetch(dr::Socket& s, dr::Event& e) {
  auto opts = selection(s, e);
  if (!opts) return;
  answer_later(s, e, [&](auto reply) {
    dr::cluster::fetch_sockets(*opts, [reply](std::string error, std::vector<dr::cluster::RemoteSocket> sockets) {
      dr::Json list(json_array());
      for (auto& r : sockets) {
        dr::Json o(json_object());
        json_object_set_new(o.get(), "id", json_string(r.id.c_str()));
        json_object_set_new(o.get(), "rooms", string_array(r.rooms).release());
        json_object_set(o.get(), "data", r.data ? r.data.get() : json_null());
        json_array_append_new(list.get(), o.release());
      }
      dr::Json data(json_object());
      json_object_set_new(data.get(), "error", error.empty() ? json_null() : json_string(error.c_str()));
      json_object_set_new(data.get(), "sockets", list.release());
      reply(std::move(data));
    });
  });
}

void on_sockets_join_leave(dr::Socket& s, dr::Event& e, bool join) {
  auto opts = selection(s, e);
  if (!opts) return;
  std::vector<std::string> rooms;
  if (!str_list(arg0(e), join ? "join" : "leave", rooms)) return reply_invalid(s, e, "join/leave: rooms");
  if (join) dr::cluster::sockets_join(*opts, rooms);
  else dr::cluster::sockets_leave(*opts, rooms);
  dr::ack_data(s, e, dr::Json(json_true()));
}

void on_disconnect_sockets(dr::Socket& s, dr::Event& e) {
  auto opts = selection(s, e);
  if (!opts) return;
  bool close = json_is_true(json_object_get(arg0(e), "close"));
  dr::ack_data(s, e, dr::Json(json_true()));
  dr::cluster::disconnect_sockets(*opts, close);
}

uint64_t timeout_of(const dr::Event& e) {
  const json_t* t = json_object_get(arg0(e), "timeoutMs");
  return json_is_integer(t) && json_integer_value(t) > 0 ? uint64_t(json_integer_value(t)) : kDefaultAskTimeoutMs;
}

void on_server_side_emit(dr::Socket& s, dr::Event& e) {
  std::optional<std::string> event = str_field(arg0(e), "event");
  if (!event) return reply_invalid(s, e, "event: is required");
  std::optional<dr::Payload> args = args_payload(e);
  if (!args) return reply_invalid(s, e, "args: must be an array");
  if (!json_is_true(json_object_get(arg0(e), "ack"))) {
    dr::cluster::server_side_emit(s.nsp(), *event, std::move(*args));
    return dr::ack_data(s, e, dr::Json(json_true()));
  }
  answer_later(s, e, [&](auto reply) {
    dr::cluster::server_side_emit_with_ack(s.nsp(), *event, std::move(*args), timeout_of(e),
                                           [reply](std::string error, std::vector<dr::Json> replies) {
                                             dr::Json list(json_array());
                                             for (auto& r : replies) json_array_append(list.get(), r.get());
                                             dr::Json data(json_object());
                                             json_object_set_new(data.get(), "error",
                                                                 error.empty() ? json_null() : json_string(error.c_str()));
                                             json_object_set_new(data.get(), "replies", list.release());
                                             reply(std::move(data));
                                           });
  });
}

void on_emit_with_ack(dr::Socket& s, dr::Event& e) {
  auto opts = selection(s, e);
  if (!opts) return;
  std::optional<std::string> event = str_field(arg0(e), "event");
  if (!event) return reply_invalid(s, e, "event: is required");
  std::optional<dr::Payload> args = args_payload(e);
  if (!args) return reply_invalid(s, e, "args: must be an array");
  answer_later(s, e, [&](auto reply) {
    dr::cluster::broadcast_with_ack(*opts, *event, std::move(*args), timeout_of(e),
                                    [reply](bool timed_out, std::vector<dr::Payload> replies) {
                                      dr::Json list(json_array());
                                      for (auto& r : replies) json_array_extend(list.get(), r.args.get());
                                      dr::Json data(json_object());
                                      json_object_set_new(data.get(), "timedOut", json_boolean(timed_out));
                                      json_object_set_new(data.get(), "replies", list.release());
                                      reply(std::move(data));
                                    });
  });
}

void on_server_count(dr::Socket& s, dr::Event& e) {
  answer_later(s, e, [&](auto reply) {
    dr::cluster::server_count(s.nsp(), [reply](size_t n) { reply(dr::Json(json_integer(json_int_t(n)))); });
  });
}

void on_all_rooms(dr::Socket& s, dr::Event& e) {
  answer_later(s, e, [&](auto reply) {
    dr::cluster::all_rooms(s.nsp(), [reply](std::string error, std::vector<std::string> rooms) {
      dr::Json data(json_object());
      json_object_set_new(data.get(), "error", error.empty() ? json_null() : json_string(error.c_str()));
      json_object_set_new(data.get(), "rooms", string_array(rooms).release());
      reply(std::move(data));
    });
  });
}

void on_presence(dr::Socket& s, dr::Event& e) {
  std::optional<std::string> room = str_field(arg0(e), "room");
  if (!room) return reply_invalid(s, e, "room: is required");
  answer_later(s, e, [&](auto reply) {
    dr::cluster::room_members(s.nsp(), *room, [reply](std::string error, std::vector<dr::cluster::Member> members) {
      dr::Json list(json_array());
      for (auto& m : members)
        json_array_append_new(list.get(), json_pack("{s:s, s:s, s:s}", "socketId", m.socket_id.c_str(), "userId",
                                                    m.user_id.c_str(), "node", m.node.c_str()));
      dr::Json data(json_object());
      json_object_set_new(data.get(), "error", error.empty() ? json_null() : json_string(error.c_str()));
      json_object_set_new(data.get(), "members", list.release());
      reply(std::move(data));
    });
  });
}

// Answers later (on the worker's timer facility), delaying the socket's next
// events meanwhile: they must wait.
void on_later(dr::Worker& w, dr::Socket& s, dr::Event& e) {
  const json_t* in = arg0(e);
  json_int_t ms = json_integer_value(json_object_get(in, "ms"));
  struct DelayedAnswer {
    std::unique_ptr<dr::Timeout> timeout;
    std::shared_ptr<void> next_events_wait;
    std::weak_ptr<dr::Socket> socket;
    dr::Event event;  // name and ack id
    dr::Json value;
  };
  auto later = std::make_shared<DelayedAnswer>();
  later->next_events_wait = s.delay_next_events();
  later->socket = s.weak();
  later->event.name = e.name;
  later->event.ack_id = e.ack_id;
  const json_t* v = json_object_get(in, "value");
  later->value = dr::Json(v ? json_incref(const_cast<json_t*>(v)) : json_null());
  // The state lives in the timeout's callback; the callback lets the timeout
  // go (a Timeout may be destroyed inside its own callback), which frees the
  // state and lets the next events run.
  later->timeout = w.timeout([later] {
    if (auto sock = later->socket.lock()) dr::ack_data(*sock, later->event, std::move(later->value));
    auto gone = std::move(later->timeout);
  });
  later->timeout->arm_in(uint64_t(ms > 0 ? ms : 0));
}

dr::Json reply_json(const dr::redis::Reply& r) {
  using T = dr::redis::Reply::Type;
  switch (r.type) {
    case T::Nil: return dr::Json(json_null());
    case T::Error: return dr::Json(json_pack("{s:s%}", "error", r.str.data(), r.str.size()));
    case T::Integer: return dr::Json(json_integer(r.integer));
    case T::Status:
    case T::String: return dr::Json(json_stringn(r.str.data(), r.str.size()));
    case T::Array: {
      dr::Json list(json_array());
      for (auto& el : r.elements) json_array_append_new(list.get(), reply_json(el).release());
      return list;
    }
  }
  return dr::Json(json_null());
}

void on_redis(dr::Socket& s, dr::Event& e) {
  std::vector<std::string> argv;
  size_t i;
  json_t* a;
  json_array_foreach(json_object_get(arg0(e), "argv"), i, a) {
    if (!json_is_string(a)) return reply_invalid(s, e, "argv: must be an array of strings");
    argv.emplace_back(json_string_value(a), json_string_length(a));
  }
  if (argv.empty()) return reply_invalid(s, e, "argv: is required");
  // Events hold binary payloads (move-only): the callback keeps what the answer needs.
  dr::redis::command(std::move(argv), [weak = s.weak(), name = e.name, ack_id = e.ack_id, hold = s.delay_next_events()](dr::redis::Reply r) {
    dr::Event answer;
    answer.name = name;
    answer.ack_id = ack_id;
    if (auto sock = weak.lock()) dr::ack_data(*sock, answer, reply_json(r));
  });
}

// The CONNECT hooks of each phase, registered in the reverse order of their
// phases: the worker runs them by phase. What ran is kept here, not in the
// socket's data (which fetchSockets and the admin UI show).
std::unordered_map<std::string, std::string> g_connect_phases;  // by nsp + ' ' + socket id

void record_phase(dr::Socket& s, std::string_view what) {
  std::string& so_far = g_connect_phases[s.nsp() + ' ' + s.id()];
  if (!so_far.empty()) so_far += ',';
  so_far += what;
}

void use_connect_phases(dr::Worker& w, const std::string& nsp) {
  w.use_connect(nsp, [](dr::Socket& s, dr::ConnectNext next) {
    record_phase(s, s.get("userId") ? "app:user" : "app:none");
    next(std::nullopt);
  }, dr::ConnectPhase::App);
  w.use_connect(nsp, [](dr::Socket& s, dr::ConnectNext next) {
    record_phase(s, "identify");
    next(std::nullopt);
  }, dr::ConnectPhase::Identify);
  w.on_disconnect(nsp, [](dr::Socket& s, std::string_view) { g_connect_phases.erase(s.nsp() + ' ' + s.id()); });
}

void on_connect_phases(dr::Socket& s, dr::Event& e) {
  auto it = g_connect_phases.find(s.nsp() + ' ' + s.id());
  dr::ack_data(s, e, dr::Json(it != g_connect_phases.end() ? json_string(it->second.c_str()) : json_null()));
}

// ------------------------------------------------------------ lifecycle

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<ProbeConf>(); }
bool check_conf(dr::ModuleConf*, std::string&) { return true; }

bool init_worker(dr::Worker& w, const dr::Module& self) {
  for (const std::string& nsp : w.namespaces()) {
    w.on_connection(nsp, [&w, &self](dr::Socket& s) {
      const auto* conf = static_cast<const ProbeConf*>(w.conf(self, s.nsp()));
      std::string text = conf ? conf->greeting : ProbeConf().greeting;
      s.emit("probe:hello", dr::Payload::of(dr::Json(json_stringn(text.data(), text.size()))));
    });
    use_connect_phases(w, nsp);
    w.on(nsp, "probe:connectPhases", on_connect_phases);
    w.on(nsp, "probe:whoami", on_whoami);
    w.on(nsp, "probe:join", [](dr::Socket& s, dr::Event& e) { on_join_leave(s, e, true); });
    w.on(nsp, "probe:leave", [](dr::Socket& s, dr::Event& e) { on_join_leave(s, e, false); });
    w.on(nsp, "probe:emit", [&w](dr::Socket& s, dr::Event& e) { on_emit(w, s, e); });
    w.on(nsp, "probe:ask", on_ask);
    w.on(nsp, "probe:disconnect", on_disconnect);
    w.on(nsp, "probe:volatile", on_volatile);
    w.on(nsp, "probe:later", [&w](dr::Socket& s, dr::Event& e) { on_later(w, s, e); });
    w.on(nsp, "probe:redis", on_redis);
    w.on(nsp, "probe:fetch", on_fetch);
    w.on(nsp, "probe:socketsJoin", [](dr::Socket& s, dr::Event& e) { on_sockets_join_leave(s, e, true); });
    w.on(nsp, "probe:socketsLeave", [](dr::Socket& s, dr::Event& e) { on_sockets_join_leave(s, e, false); });
    w.on(nsp, "probe:disconnectSockets", on_disconnect_sockets);
    w.on(nsp, "probe:serverSideEmit", on_server_side_emit);
    w.on(nsp, "probe:emitWithAck", on_emit_with_ack);
    w.on(nsp, "probe:serverCount", on_server_count);
    w.on(nsp, "probe:allRooms", on_all_rooms);
    w.on(nsp, "probe:presence", on_presence);
    dr::cluster::on_server_event(nsp, "probe:sse", [&w, nsp](const dr::Payload& args, dr::cluster::ServerAck ack) {
      dr::BroadcastOptions opts;
      opts.nsp = nsp;
      opts.rooms = {"sse-watchers"};
      opts.local = true;
      w.broadcast(opts, "probe:sse-received", args.copy());
      if (ack) {
        dr::Json reply(json_object());
        json_object_set_new(reply.get(), "from", json_string("depth-realtime"));
        json_object_set(reply.get(), "got", args.args.get());
        ack(std::move(reply));
      }
    });
  }
  w.route(dr::Listener::Main, "GET", "/probe", [](const dr::HttpRequest&, dr::HttpRespond respond) {
    dr::HttpResponse res;
    res.content_type = "text/plain; charset=utf-8";
    res.body = "probe ok";
    respond(std::move(res));
  });
  return true;
}

void exit_worker(dr::Worker&, const dr::Module&) {}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "probe", kDirectives,
    create_conf,    check_conf,          init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
