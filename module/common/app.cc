#include "app.h"

#include <depth-realtime/access_claims.h>
#include <depth-realtime/cluster.h>
#include <depth-realtime/validate.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace dr::app {

const std::string& user_id(const Socket& s) {
  static const std::string none;
  const std::string* id = s.get("userId");
  return id ? *id : none;
}

bool is_admin(const Socket& s) {
  const std::string* role = s.get("role");
  return role && *role == "admin";
}

std::string expand(std::string_view pattern, std::string_view id) {
  std::string out(pattern);
  std::string value = redis::tag(id);  // with a cluster, "{id}" stays a hash tag: "{42}"
  for (size_t at = out.find("{id}"); at != std::string::npos; at = out.find("{id}", at + value.size()))
    out.replace(at, 4, value);
  return out;
}

namespace {

constexpr const char* kDisconnectUser = "depth:disconnect-user";

void disconnect_local(Worker& w, const std::string& id, bool close) {
  for (const std::string& nsp : w.namespaces())
    for (auto& weak : w.local_sockets(nsp))
      if (auto s = weak.lock(); s && s->connected() && user_id(*s) == id) s->disconnect(close);
}

}  // namespace

void disconnect_user(Worker& w, const std::string& id, bool close) {
  auto nsps = w.namespaces();
  if (!nsps.empty())
    cluster::server_side_emit(nsps.front(), kDisconnectUser,
                              Payload::of(Json(json_pack("{s:s%, s:b}", "userId", id.data(), id.size(), "close", close))));
  disconnect_local(w, id, close);
}

void serve_disconnect_user(Worker& w) {
  auto nsps = w.namespaces();
  if (nsps.empty()) return;
  cluster::on_server_event(nsps.front(), kDisconnectUser, [&w](const Payload& args, cluster::ServerAck) {
    const json_t* p = json_array_get(args.args.get(), 0);
    const char* id = json_string_value(json_object_get(p, "userId"));
    if (id) disconnect_local(w, id, json_is_true(json_object_get(p, "close")));
  });
}

namespace {

// The claim names `id` (as a string, or as the integer it spells).
bool claim_grants(const Socket& s, std::string_view claim, const std::string& id) {
  if (claim.empty()) return false;
  // auth_jwt's, parsed at CONNECT (access_claims.h): nothing parsed per check.
  static const SocketSlot<AccessClaims> slot = socket_slot<AccessClaims>(kAccessClaimsSlot);
  if (const AccessClaims* kept = slot ? s.find_context(slot) : nullptr) {
    const std::vector<std::string>* ids = kept->ids(claim);
    return ids && std::find(ids->begin(), ids->end(), id) != ids->end();
  }
  // Claims another hook set as text, under "claim:<name>" (named on the stack: most names are short).
  constexpr std::string_view kPrefix = "claim:";
  char name[64];
  std::string long_name;
  std::string_view data_key;
  if (kPrefix.size() + claim.size() <= sizeof name) {
    std::memcpy(name, kPrefix.data(), kPrefix.size());
    std::memcpy(name + kPrefix.size(), claim.data(), claim.size());
    data_key = std::string_view(name, kPrefix.size() + claim.size());
  } else {
    long_name = std::string(kPrefix) + std::string(claim);
    data_key = long_name;
  }
  const std::string* text = s.get(data_key);
  if (!text) return false;
  Json list = json_parse(*text);
  size_t i;
  json_t* v;
  json_array_foreach(list.get(), i, v) {
    std::optional<std::string> item = schema::id_string(v);
    if (item && *item == id) return true;
  }
  return false;
}

}  // namespace

namespace {

// redis::key(expand(pattern, id)) written into `out`, whose capacity a
// caller may keep between checks (one string made per check otherwise).
void expanded_key(std::string& out, std::string_view pattern, std::string_view id) {
  const std::string value = redis::tag(id);
  out.assign(redis::key({}));  // the app prefix
  for (size_t at = 0; at < pattern.size();) {
    if (pattern.compare(at, 4, "{id}") == 0) {
      out += value;
      at += 4;
    } else {
      out += pattern[at++];
    }
  }
}

// `connecting`: the socket is not connected yet (a room guard), so only its
// going away stops the answer.
void access(Socket& s, std::string_view claim, std::string_view key_pattern, const std::string& id, bool connecting,
            std::function<void(Socket& s, Access a)> done) {
  thread_local std::string key;  // only read by the command below: its capacity is kept
  if (std::optional<Access> a = access_by_token(s, claim, key_pattern, id, key)) {
    done(s, *a);
    return;
  }
  const std::string_view argv[] = {"SISMEMBER", key, user_id(s)};
  redis::command(argv, [weak = s.weak(), connecting, done = std::move(done)](redis::Reply r) {
    auto sock = weak.lock();
    if (!sock || (!connecting && !sock->connected())) return;
    done(*sock, access_of(r));
  });
}

}  // namespace

std::optional<Access> access_by_token(const Socket& s, std::string_view claim, std::string_view key_pattern,
                                      const std::string& id, std::string& key) {
  if (is_admin(s) || claim_grants(s, claim, id)) return Access::Allowed;
  if (user_id(s).empty()) return Access::Denied;
  expanded_key(key, key_pattern, id);
  return std::nullopt;
}

Access access_of(const redis::Reply& r) {
  return r.error() ? Access::Unavailable : r.as_int() == 1 ? Access::Allowed : Access::Denied;
}

void check_access(Socket& s, std::string_view claim, std::string_view key_pattern, const std::string& id,
                  std::function<void(Socket& s, Access a)> done) {
  access(s, claim, key_pattern, id, false, std::move(done));
}

void check_room(Socket& s, const std::string& room, std::string_view prefix, std::string_view claim,
                std::string_view key_pattern, RoomVerdict done) {
  if (room.size() <= prefix.size() || room.compare(0, prefix.size(), prefix) != 0) return done(true);
  access(s, claim, key_pattern, room.substr(prefix.size()), true,
         [done](Socket&, Access a) { done(a == Access::Allowed); });
}

void forbidden(Socket& s, const Event& ev, std::string_view details) {
  send_error(s, ev, "FORBIDDEN", kForbiddenMessage, details);
}
void not_found(Socket& s, const Event& ev, std::string_view details) {
  send_error(s, ev, "NOT_FOUND", kNotFoundMessage, details);
}
void invalid(Socket& s, const Event& ev, std::string_view details) {
  send_error(s, ev, "INVALID_DATA", kInvalidMessage, details);
}
void internal_error(Socket& s, const Event& ev, std::string_view details) {
  send_error(s, ev, "SOCKET_ERROR", kSocketErrorMessage, details);
}
void outcome_unknown(Socket& s, const Event& ev, std::string_view details, std::string_view client_key) {
  Json err(json_object());
  json_object_set_new(err.get(), "code", json_string("SOCKET_ERROR"));
  json_object_set_new(err.get(), "message", json_string(kSocketErrorMessage));
  json_object_set_new(err.get(), "details", json_stringn(details.data(), details.size()));
  if (!client_key.empty()) {
    json_object_set_new(err.get(), "retry", json_true());
    json_object_set_new(err.get(), "clientMessageId", json_stringn(client_key.data(), client_key.size()));
  }
  send_error_object(s, ev, std::move(err));
}

void refuse(Socket& s, const Event& ev, Access a, std::string_view what) {
  if (a == Access::Unavailable) internal_error(s, ev, "Redis unavailable: cannot check access");
  else forbidden(s, ev, std::string("not a member of ") + std::string(what));
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

IsoTime iso_time_of(int64_t ms) {
  IsoTime out{};
  int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);  // floor: before 1970 too, as iso_time
  time_t t = time_t(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  int n = snprintf(out.text, sizeof out.text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms - secs * 1000));
  out.size = n < 0 ? 0 : std::min(size_t(n), sizeof out.text - 1);
  return out;
}

int64_t stream_id_ms(std::string_view id) {
  size_t dash = id.find('-');
  if (dash == 0 || dash == std::string_view::npos || dash > 19) return -1;
  int64_t v = 0;
  for (size_t i = 0; i < dash; i++) {
    if (id[i] < '0' || id[i] > '9') return -1;
    v = v * 10 + (id[i] - '0');
  }
  return v;
}

bool is_stream_id(std::string_view id) {
  size_t dash = id.find('-');
  if (stream_id_ms(id) < 0 || dash + 1 >= id.size() || id.size() - dash - 1 > 20) return false;
  for (size_t i = dash + 1; i < id.size(); i++)
    if (id[i] < '0' || id[i] > '9') return false;
  return true;
}

bool stream_entry(const redis::Reply& entry, std::string& id, Json& fields) {
  if (entry.type != redis::Reply::Type::Array || entry.elements.size() != 2) return false;
  const redis::Reply& rid = entry.elements[0];
  const redis::Reply& kv = entry.elements[1];
  if (rid.type != redis::Reply::Type::String || kv.type != redis::Reply::Type::Array) return false;
  id = rid.str;
  fields = Json(json_object());
  for (size_t i = 0; i + 1 < kv.elements.size(); i += 2) {
    const std::string& k = kv.elements[i].str;
    const std::string& v = kv.elements[i + 1].str;
    json_object_setn_new(fields.get(), k.data(), k.size(), json_stringn(v.data(), v.size()));
  }
  return true;
}

Json json_field(const json_t* fields, const char* field, Json fallback) {
  const char* text = json_string_value(json_object_get(fields, field));
  if (!text) return fallback;
  Json v = json_parse(text);
  return v ? std::move(v) : std::move(fallback);
}

void ack_with(Socket& s, const Event& ev, const json_t* data, std::vector<std::string> bin) {
  if (!ev.ack_id) return;
  Json wrap(json_object());
  json_object_set(wrap.get(), "data", const_cast<json_t*>(data));  // shared: the ack is encoded at once
  Payload p = Payload::of(std::move(wrap));
  p.attachments = std::move(bin);
  s.ack(*ev.ack_id, std::move(p));
}

std::shared_ptr<const std::string> args_text(const json_t* data) {
  // json_text's flags are the Socket.IO encoder's: the same bytes.
  std::string text = json_text(data, "[", "]");
  if (text.empty()) return nullptr;
  return std::make_shared<const std::string>(std::move(text));
}

namespace {
struct TextsHeld {
  std::string args, ack;
};
}  // namespace

MessageTexts message_texts(const json_t* data, bool with_ack) {
  // json_text's flags are the Socket.IO encoder's: the same bytes.
  std::string text = json_text(data, "[", "]");
  if (text.empty()) return {};
  auto held = std::make_shared<TextsHeld>();
  held->args = std::move(text);
  MessageTexts out;
  out.args = std::shared_ptr<const std::string>(held, &held->args);
  if (with_ack) {
    // What encoding [{"data":X}] gives: compact JSON, members in order.
    const std::string_view x = std::string_view(held->args).substr(1, held->args.size() - 2);
    constexpr std::string_view open = "[{\"data\":", close = "}]";
    held->ack.reserve(open.size() + x.size() + close.size());
    held->ack.append(open).append(x).append(close);
    out.ack = std::shared_ptr<const std::string>(held, &held->ack);
  }
  return out;
}

void ack_with_text(Socket& s, const Event& ev, const json_t* data, std::vector<std::string> bin,
                   std::shared_ptr<const std::string> ack_text) {
  if (!ev.ack_id) return;
  if (ack_text) {  // the text alone: the server reads it back only where it needs the tree (Socket::ack)
    Payload p{Json(), std::move(bin)};
    p.text = std::move(ack_text);
    return s.ack(*ev.ack_id, std::move(p));
  }
  Json wrap(json_object());
  json_object_set(wrap.get(), "data", const_cast<json_t*>(data));  // shared: msgpack and batching encode it
  Payload p = Payload::of(std::move(wrap));
  p.attachments = std::move(bin);
  p.text = std::move(ack_text);
  s.ack(*ev.ack_id, std::move(p));
}

void ack_with(Socket& s, const Event& ev, const json_t* data, std::vector<std::string> bin,
              const std::shared_ptr<const std::string>& data_args) {
  if (!ev.ack_id) return;
  Json wrap(json_object());
  json_object_set(wrap.get(), "data", const_cast<json_t*>(data));  // shared: msgpack and batching encode it
  Payload p = Payload::of(std::move(wrap));
  p.attachments = std::move(bin);
  if (data_args && data_args->size() >= 2) {
    // What encoding [{"data":X}] gives: compact JSON, members in order.
    const std::string_view x = std::string_view(*data_args).substr(1, data_args->size() - 2);
    constexpr std::string_view open = "[{\"data\":", close = "}]";
    std::string text;
    text.reserve(open.size() + x.size() + close.size());
    text.append(open).append(x).append(close);
    p.text = std::make_shared<const std::string>(std::move(text));
  }
  s.ack(*ev.ack_id, std::move(p));
}

Json string_array(const std::vector<std::string>& items) {
  Json a(json_array());
  for (const std::string& s : items) json_array_append_new(a.get(), json_stringn(s.data(), s.size()));
  return a;
}

std::string label_value(const std::string& label, std::string_view name) {
  std::string key = std::string(name) + "=\"";
  size_t at = label.find(key);
  if (at == std::string::npos) return {};
  std::string out;
  for (size_t i = at + key.size(); i < label.size() && label[i] != '"'; i++) {
    if (label[i] == '\\' && i + 1 < label.size()) i++;
    out.push_back(label[i]);
  }
  return out;
}

std::string id_field(const Event& ev, const char* name) {
  return schema::id_string(json_object_get(payload(ev), name)).value_or(std::string());
}

}  // namespace dr::app
