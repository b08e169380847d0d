// bench: events for load tests (tests/bench). Never enabled by the shipped
// configuration: any connected client could join any room and broadcast to it.
//
//   bench:echo      any args          -> ack with the same args (binary included)
//   bench:join      {room}            -> joins the room; ack {data:{room}}
//   bench:join      {rooms: [...]}    -> joins them all in one handler; ack {data:{rooms: n}}
//   bench:leave     {room}            -> leaves the room; ack {data:{room}}
//   bench:broadcast {room, payload}   -> "bench:msg" payload to the room; ack {data:true}

#include <depth-realtime/module.h>

namespace {

struct BenchConf : dr::ModuleConfBase<BenchConf> {};

// Non-empty string field of the first argument.
std::optional<std::string> str_field(const dr::Event& e, const char* key) {
  const json_t* v = json_object_get(json_array_get(e.args.args.get(), 0), key);
  if (!json_is_string(v) || json_string_length(v) == 0) return std::nullopt;
  return std::string(json_string_value(v), json_string_length(v));
}


void reply_invalid(dr::Socket& s, const dr::Event& e, const char* details) {
  dr::send_error(s, e, "INVALID_DATA", "Invalid data", details);
}


void on_echo(dr::Socket& s, dr::Event& e) {
  if (e.ack_id) s.ack(*e.ack_id, std::move(e.args));
}

void on_join(dr::Socket& s, dr::Event& e) {
  const json_t* rooms = json_object_get(json_array_get(e.args.args.get(), 0), "rooms");
  if (json_is_array(rooms)) {
    size_t i, n = 0;
    const json_t* r;
    json_array_foreach(rooms, i, r) {
      if (!json_is_string(r) || json_string_length(r) == 0) return reply_invalid(s, e, "rooms: non-empty strings");
    }
    json_array_foreach(rooms, i, r) {
      s.join(std::string(json_string_value(r), json_string_length(r)));
      n++;
    }
    return dr::ack_data(s, e, dr::Json(json_pack("{s:I}", "rooms", json_int_t(n))));
  }
  std::optional<std::string> room = str_field(e, "room");
  if (!room) return reply_invalid(s, e, "room: is required");
  s.join(*room);
  dr::ack_data(s, e, dr::Json(json_pack("{s:s%}", "room", room->data(), room->size())));
}

void on_leave(dr::Socket& s, dr::Event& e) {
  std::optional<std::string> room = str_field(e, "room");
  if (!room) return reply_invalid(s, e, "room: is required");
  s.leave(*room);
  dr::ack_data(s, e, dr::Json(json_pack("{s:s%}", "room", room->data(), room->size())));
}

void on_broadcast(dr::Worker& w, const std::string& nsp, dr::Socket& s, dr::Event& e) {
  std::optional<std::string> room = str_field(e, "room");
  if (!room) return reply_invalid(s, e, "room: is required");
  json_t* payload = json_object_get(json_array_get(e.args.args.get(), 0), "payload");
  if (!payload) return reply_invalid(s, e, "payload: is required");

  dr::BroadcastOptions opts;
  opts.nsp = nsp;
  opts.rooms = {*room};
  if (e.args.attachments.empty()) {
    w.broadcast(opts, "bench:msg", dr::Payload::of(dr::json_share(payload)));
  } else {
    dr::Payload p;
    json_array_append_new(p.args.get(), dr::copy_with_binary(payload, e.args.attachments, p.attachments).release());
    w.broadcast(opts, "bench:msg", std::move(p));
  }
  dr::ack_data(s, e, dr::Json(json_true()));
}

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<BenchConf>(); }
bool check_conf(dr::ModuleConf*, std::string&) { return true; }

bool init_worker(dr::Worker& w, const dr::Module&) {
  for (const std::string& nsp : w.namespaces()) {
    w.on(nsp, "bench:echo", on_echo);
    w.on(nsp, "bench:join", on_join);
    w.on(nsp, "bench:leave", on_leave);
    w.on(nsp, "bench:broadcast", [&w, nsp](dr::Socket& s, dr::Event& e) { on_broadcast(w, nsp, s, e); });
  }
  dr::log(dr::LogLevel::Warn, "bench: module loaded; it lets any client broadcast, never use it in production");
  return true;
}

void exit_worker(dr::Worker&, const dr::Module&) {}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "bench", nullptr,
    create_conf,    check_conf,          init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
