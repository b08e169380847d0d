// bench: events for load tests (tests/bench). Never enabled by the shipped
// configuration: any connected client could join any room and broadcast to it.
//
//   bench:echo      any args          -> ack with the same args (binary included)
//   bench:join      {room}            -> joins the room; ack {data:{room}}
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

void ack_data(dr::Socket& s, const dr::Event& e, dr::Json data) {
  if (!e.ack_id) return;
  dr::Json reply(json_object());
  json_object_set_new(reply.get(), "data", data.release());
  s.ack(*e.ack_id, dr::Payload::of(std::move(reply)));
}

// As the contract's errors: to the ack when there is one, else the `error` event.
void reply_invalid(dr::Socket& s, const dr::Event& e, const char* details) {
  dr::Json err(json_pack("{s:s, s:s, s:s}", "code", "INVALID_DATA", "message", "Invalid data",
                         "details", details));
  if (e.ack_id) {
    dr::Json reply(json_object());
    json_object_set_new(reply.get(), "error", err.release());
    s.ack(*e.ack_id, dr::Payload::of(std::move(reply)));
  } else {
    s.emit("error", dr::Payload::of(std::move(err)));
  }
}

// Copies `v`, renumbering its binary placeholders to index `out`, which
// receives only the attachments `v` uses.
dr::Json copy_with_binary(const json_t* v, const std::vector<std::string>& in,
                          std::vector<std::string>& out) {
  if (json_is_array(v)) {
    dr::Json arr(json_array());
    size_t i;
    json_t* item;
    json_array_foreach(v, i, item) json_array_append_new(arr.get(), copy_with_binary(item, in, out).release());
    return arr;
  }
  if (!json_is_object(v)) return dr::json_share(const_cast<json_t*>(v));
  const json_t* num = json_object_get(v, "num");
  if (json_is_true(json_object_get(v, "_placeholder")) && json_is_integer(num)) {
    json_int_t n = json_integer_value(num);
    if (n < 0 || static_cast<size_t>(n) >= in.size()) return dr::Json(json_null());
    out.push_back(in[static_cast<size_t>(n)]);
    return dr::Json(json_pack("{s:b, s:I}", "_placeholder", 1, "num", static_cast<json_int_t>(out.size() - 1)));
  }
  dr::Json obj(json_object());
  const char* key;
  json_t* item;
  json_object_foreach(const_cast<json_t*>(v), key, item) {
    json_object_set_new(obj.get(), key, copy_with_binary(item, in, out).release());
  }
  return obj;
}

void on_echo(dr::Socket& s, dr::Event& e) {
  if (e.ack_id) s.ack(*e.ack_id, std::move(e.args));
}

void on_join(dr::Socket& s, dr::Event& e) {
  std::optional<std::string> room = str_field(e, "room");
  if (!room) return reply_invalid(s, e, "room: is required");
  s.join(*room);
  ack_data(s, e, dr::Json(json_pack("{s:s%}", "room", room->data(), room->size())));
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
    json_array_append_new(p.args.get(), copy_with_binary(payload, e.args.attachments, p.attachments).release());
    w.broadcast(opts, "bench:msg", std::move(p));
  }
  ack_data(s, e, dr::Json(json_true()));
}

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<BenchConf>(); }
bool check_conf(dr::ModuleConf*, std::string&) { return true; }

bool init_worker(dr::Worker& w, const dr::Module&) {
  for (const std::string& nsp : w.namespaces()) {
    w.on(nsp, "bench:echo", on_echo);
    w.on(nsp, "bench:join", on_join);
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
