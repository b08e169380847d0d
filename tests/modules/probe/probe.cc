// probe: a test module, built out of tree against the installed headers only
// (see CMakeLists.txt beside it), so the integration tests also prove that a
// third party can write a module. It exposes the module API to the tests:
//
//   probe:whoami                                  -> ack {data:{sid, nsp, userId, role, rooms}}
//   probe:join {room}, probe:leave {room}         -> ack {data:{rooms}}
//   probe:emit {rooms?, except?, excludeSelf?, event, args}
//                                                 -> worker.broadcast(...); ack {data:true}
//   probe:ask {event, args, timeoutMs}            -> emit_with_ack to this socket; the
//                                                    answer comes back as probe:answer
//                                                    {timedOut, reply}
//   probe:disconnect {close?}                     -> socket.disconnect(close)
//   probe:volatile {event, count}                 -> `count` volatile events, arg i
//   GET /probe on the main listener               -> 200 "probe ok"
//   on connection                                 -> probe:hello <probe_greeting>

#include <depth-realtime/module.h>

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
    w.on(nsp, "probe:whoami", on_whoami);
    w.on(nsp, "probe:join", [](dr::Socket& s, dr::Event& e) { on_join_leave(s, e, true); });
    w.on(nsp, "probe:leave", [](dr::Socket& s, dr::Event& e) { on_join_leave(s, e, false); });
    w.on(nsp, "probe:emit", [&w](dr::Socket& s, dr::Event& e) { on_emit(w, s, e); });
    w.on(nsp, "probe:ask", on_ask);
    w.on(nsp, "probe:disconnect", on_disconnect);
    w.on(nsp, "probe:volatile", on_volatile);
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
