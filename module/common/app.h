// What the application modules (chat, projects, notifications, admin, api)
// share: who a socket is, access checks, error answers, timestamps and the
// Redis Stream entries they store. Built into each module (module.cmake).
#pragma once

#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dr::app {

// ------------------------------------------------------------ identity

// The user id and role auth_jwt set; empty when the socket has none.
const std::string& user_id(const Socket& s);
bool is_admin(const Socket& s);

// Every socket of the user `id` (as auth_jwt identified it), in every
// namespace, on every node, disconnected (`close`: their whole connections).
// Not by room: a socket may leave user:<id> (notifications:unsubscribe) and an
// admin may join another user's. Each node scans its own sockets: a rare act.
// Without Redis it reaches this worker only.
void disconnect_user(Worker& w, const std::string& id, bool close);
// Lets this worker take part when other nodes disconnect a user: call from
// init_worker of each module that calls disconnect_user.
void serve_disconnect_user(Worker& w);

// ---------------------------------------------------------------- access

enum class Access { Allowed, Denied, Unavailable };

// Membership of a conversation or project (contract §8 "Access"): role admin,
// or the token's access claim (a JSON array kept by auth_jwt as "claim:<name>")
// names `id`, or the Redis set `key_pattern` ({id} replaced, app prefix added)
// holds the user id. Answers at once when the token decides, else after Redis.
// `done` is not called if the socket went away meanwhile.
void check_access(Socket& s, std::string_view claim, std::string_view key_pattern, const std::string& id,
                  std::function<void(Socket& s, Access a)> done);

// check_access in two parts, for a caller that keeps its own state while
// Redis answers: what the token decides (nullopt: Redis must tell, by
// SISMEMBER `key` user_id(s)), and what that SISMEMBER's reply means.
std::optional<Access> access_by_token(const Socket& s, std::string_view claim, std::string_view key_pattern,
                                      const std::string& id, std::string& key);
Access access_of(const redis::Reply& r);

// The room guard (Worker::on_room_check) of the rooms named <prefix><id>: the
// same check as joining one (check_access), for a socket that is not
// connected yet; Redis unable to tell refuses. Other rooms are not its to refuse.
void check_room(Socket& s, const std::string& room, std::string_view prefix, std::string_view claim,
                std::string_view key_pattern, RoomVerdict done);

// `pattern` with "{id}" replaced by `id`.
std::string expand(std::string_view pattern, std::string_view id);

// Directive setters shared by the app modules (see module.h's generic ones):
// a Redis key pattern that must hold {id} (quoted in the conf: braces open
// blocks), and a claim name or `off` (stored empty).
template <auto Field>
bool set_key_pattern(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  using C = MemberClass<Field>;
  if (a[0].find("{id}") == std::string::npos) {
    err = "expected a key pattern holding {id}, quoted, e.g. \"items:{id}:members\"";
    return false;
  }
  static_cast<C*>(c)->*Field = a[0];
  return true;
}
template <auto Field>
bool set_claim(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  using C = MemberClass<Field>;
  if (a[0].empty()) {
    err = "expected a claim name or off";
    return false;
  }
  static_cast<C*>(c)->*Field = a[0] == "off" ? "" : a[0];
  return true;
}

// ----------------------------------------------------------------- errors

inline constexpr const char* kInvalidMessage = "Invalid data";
inline constexpr const char* kForbiddenMessage = "Forbidden";
inline constexpr const char* kNotFoundMessage = "Not found";
inline constexpr const char* kSocketErrorMessage = "A connection error occurred";

void forbidden(Socket& s, const Event& ev, std::string_view details = {});
void not_found(Socket& s, const Event& ev, std::string_view details = {});
void invalid(Socket& s, const Event& ev, std::string_view details);
// SOCKET_ERROR: an internal failure (Redis away, a bad reply); the connection stays.
void internal_error(Socket& s, const Event& ev, std::string_view details);
// SOCKET_ERROR for a write Redis may have applied (sent, no answer came):
// `details` says the outcome is unknown; with the client's idempotency key it
// also carries `retry: true` and `clientMessageId`: sending the same event
// with the same key again is safe and returns what was stored.
void outcome_unknown(Socket& s, const Event& ev, std::string_view details, std::string_view client_key = {});
// The answer for an Access that is not Allowed.
void refuse(Socket& s, const Event& ev, Access a, std::string_view what);

// ------------------------------------------------------------------ time

int64_t now_ms();
// ISO 8601 UTC with milliseconds: 2024-05-01T12:31:30.123Z (the API's).
using dr::iso_time;
inline std::string iso_now() { return iso_time(now_ms()); }
// The same text in a buffer of the caller's (for a value copied at once).
struct IsoTime {
  char text[32];
  size_t size;
  std::string_view view() const { return {text, size}; }
};
IsoTime iso_time_of(int64_t ms);
// The ms part of a stream id ("1714567890123-0"), or -1.
int64_t stream_id_ms(std::string_view id);
// A well-formed stream id: <ms>-<seq>.
bool is_stream_id(std::string_view id);

// --------------------------------------------------------------- streams

// One XRANGE/XREVRANGE entry: its id and its field/value pairs as an object of
// strings; false when the reply is not an entry.
bool stream_entry(const redis::Reply& entry, std::string& id, Json& fields);
// The value of `field` in a fields object, parsed as JSON (metadata,
// attachments), or `fallback` when absent or not JSON.
Json json_field(const json_t* fields, const char* field, Json fallback);

// ------------------------------------------------------------- payloads

// {data: X} to the client's ack (if it asked for one), `bin` being the binary
// values X's placeholders refer to.
void ack_with(Socket& s, const Event& ev, const json_t* data, std::vector<std::string> bin = {});
// [X] as JSON text, encoded once to be shared: a broadcast's Payload::text,
// and ack_with's below. Null when X cannot be written (invalid UTF-8 in a
// string built without checks): then each is encoded as without it.
std::shared_ptr<const std::string> args_text(const json_t* data);
// ack_with, built around `data_args` = args_text(data) (may be null) rather
// than encoding X again.
void ack_with(Socket& s, const Event& ev, const json_t* data, std::vector<std::string> bin,
              const std::shared_ptr<const std::string>& data_args);

// [X] (MessageTexts::args, as args_text gives it) and, `with_ack`, the text
// ack_with sends for it, [{"data":X}] (`ack`), made together: one shared
// allocation holds both. Null texts when X cannot be written (see args_text).
struct MessageTexts {
  std::shared_ptr<const std::string> args, ack;
};
MessageTexts message_texts(const json_t* data, bool with_ack);
// ack_with, its text being `ack_text` = message_texts(data, true).ack (may be null).
void ack_with_text(Socket& s, const Event& ev, const json_t* data, std::vector<std::string> bin,
                   std::shared_ptr<const std::string> ack_text);

// A JSON array of strings.
Json string_array(const std::vector<std::string>& items);
// The value of name="value" in a metric label (see Worker::metric_read), or empty.
std::string label_value(const std::string& label, std::string_view name);

// The event's first argument (its payload object); null if there is none.
inline const json_t* payload(const Event& ev) { return json_array_get(ev.args.args.get(), 0); }
// The id field `name` as its string form (validated already by the schema).
std::string id_field(const Event& ev, const char* name);

}  // namespace dr::app
