// chat: the /chat namespace (contract §2 "/chat", §5, §8).
//
// Events: chat:join (alias conversation:join), chat:leave, chat:message (alias
// message:send), chat:typing, chat:read, chat:history, message:edit. Acting in
// a conversation needs membership (dr::app::check_access); joining its room is
// only needed to receive its traffic.
//
// What it keeps in Redis (keys under the app prefix, `depth:` by default):
//   chat:<conversationId>         stream, one entry per message, fields conversationId,
//                                 senderId, content, type, metadata (JSON text), createdAt,
//                                 clientMessageId (when the client gave one);
//                                 the entry id is the message id; MAXLEN ~ chat_stream_maxlen
//   idem:chat:<n>:<conversationId>:<n>:<userId>:<clientMessageId>
//                                 hash {id, delivered}: a message sent with that key is
//                                 stored once (see idempotent.h); expires after
//                                 chat_idempotency_ttl
//   chat:<conversationId>:read    hash: user id -> id of the last message read
//   chat:<conversationId>:edits   hash: message id -> {"content","editedAt","editedBy"}
//                                 (JSON text). Stream entries cannot change, so an edit is
//                                 one HSET beside the stream and history merges it.
//   conversation:<id>:members     set of user ids, kept by the backend (chat_members_key)
//
// Binary values inside `metadata` are relayed as binary. In the stream, where
// metadata is JSON text, each one is stored as {"$binary":"<base64>"} and read
// back as binary by history and edits; so that only real binary reads back as
// binary, a client's own object keys spelled "$binary", "$$binary", ... are
// stored with one more "$" and lose it again when read. A backend appending
// entries may use the same marker for binary.

#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>
#include <depth-realtime/validate.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <iterator>
#include <span>
#include <memory>
#include <string>
#include <vector>

#include "app.h"
#include "idempotent.h"
#include "stored_json.h"

namespace {

using dr::Json;
using dr::app::Access;
namespace redis = dr::redis;
namespace idem = dr::app::idem;

constexpr const char* kNsp = "/chat";
constexpr const char* kMessagesMetric = "depth_realtime_chat_messages_total";

// ------------------------------------------------------------ configuration

struct ChatConf : dr::ModuleConfBase<ChatConf> {
  uint64_t stream_maxlen = 10000;
  std::string members_key = "conversation:{id}:members";
  std::string access_claim = "conversations";  // empty: the token grants nothing
  uint64_t history_limit = 50;
  uint64_t history_max = 200;
  uint64_t idempotency_ttl = idem::kDefaultTtlMs;
};

constexpr unsigned S = dr::kConfServer;
constexpr unsigned N = dr::kConfNamespace;

const dr::Directive kDirectives[] = {
    {"chat_stream_maxlen", S | N, 1, 1, dr::set_uint<&ChatConf::stream_maxlen>, "10000", true,
     "Messages kept per conversation stream (XADD MAXLEN ~: Redis trims whole nodes, so it may keep up to ~100 more)."},
    {"chat_members_key", S | N, 1, 1, dr::app::set_key_pattern<&ChatConf::members_key>, "conversation:{id}:members", true,
     "Redis set of a conversation's members (with redis_app_prefix; {id} = the conversation id); "
     "quote it: chat_members_key \"room:{id}:users\";"},
    {"chat_access_claim", S | N, 1, 1, dr::app::set_claim<&ChatConf::access_claim>, "conversations", true,
     "Token claim (an array kept by auth_jwt_access_claims) whose conversation ids the user may act in; off: none."},
    {"chat_history_limit", S | N, 1, 1, dr::set_uint<&ChatConf::history_limit>, "50", true,
     "Messages chat:history returns when the client gives no limit."},
    {"chat_history_max", S | N, 1, 1, dr::set_uint<&ChatConf::history_max>, "200", true,
     "Largest limit chat:history honours; larger ones are clamped to it."},
    {"chat_idempotency_ttl", S | N, 1, 1, dr::set_msec<&ChatConf::idempotency_ttl>, "24h", true,
     "How long a message's clientMessageId is remembered: a retry with it within this time returns the stored message."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

bool check_chat_conf(const ChatConf& c, std::string& err) {
  if (c.stream_maxlen < 1) err = "chat_stream_maxlen must be at least 1";
  else if (c.history_max < 1) err = "chat_history_max must be at least 1";
  else if (c.idempotency_ttl < 1000) err = "chat_idempotency_ttl must be at least 1s";
  else if (c.history_limit < 1 || c.history_limit > c.history_max)
    err = "chat_history_limit must be between 1 and chat_history_max";
  return err.empty();
}

// ------------------------------------------------------------------ schema

using dr::schema::Kind;

const dr::schema::Table kEvents = {
    {"chat:join", {{"conversationId", Kind::Id, true}}},
    {"conversation:join", {{"conversationId", Kind::Id, true}}},
    {"chat:leave", {{"conversationId", Kind::Id, true}}},
    {"chat:message",
     {{"conversationId", Kind::Id, true},
      {"content", Kind::String, true, 1, 10000},
      {"type", Kind::String, false, 0, 0, {"text", "image", "file"}},
      {"metadata", Kind::Object},
      {idem::kField, Kind::String, false, 1, idem::kMaxLength}}},
    {"message:send",
     {{"conversationId", Kind::Id, true},
      {"content", Kind::String, true, 1, 10000},
      {"type", Kind::String, false, 0, 0, {"text", "image", "file"}},
      {"metadata", Kind::Object},
      {idem::kField, Kind::String, false, 1, idem::kMaxLength}}},
    {"chat:typing", {{"conversationId", Kind::Id, true}, {"isTyping", Kind::Boolean, true}}},
    {"chat:read", {{"conversationId", Kind::Id, true}, {"messageId", Kind::Id, true}}},
    // limit: positive (checked by the handler: the schema bounds numbers only
    // on both sides) and clamped to chat_history_max; before: a message id.
    {"chat:history",
     {{"conversationId", Kind::Id, true}, {"before", Kind::String, false, 1, 128}, {"limit", Kind::Integer}}},
    {"message:edit",
     {{"conversationId", Kind::Id, true}, {"messageId", Kind::Id, true}, {"content", Kind::String, true, 1, 10000}}},
};

// ------------------------------------------------------------------ state

dr::Worker* g_worker = nullptr;
const dr::Module* g_self = nullptr;

bool same_conf(const ChatConf& a, const ChatConf& b) {
  return a.stream_maxlen == b.stream_maxlen && a.members_key == b.members_key && a.access_claim == b.access_claim &&
         a.history_limit == b.history_limit && a.history_max == b.history_max && a.idempotency_ttl == b.idempotency_ttl;
}

// The namespace's conf as a call keeps it (a reload may replace the module's
// meanwhile): one copy, shared by the calls while it stays the same.
std::shared_ptr<const ChatConf> current_conf(const dr::Socket& s) {
  static std::shared_ptr<const ChatConf> last;  // the worker's one loop: no lock
  const auto* c = static_cast<const ChatConf*>(g_worker->conf(*g_self, s.nsp()));
  static const ChatConf defaults;
  const ChatConf& now = c ? *c : defaults;
  if (!last || !same_conf(*last, now)) last = std::make_shared<const ChatConf>(now);
  return last;
}

// What a handler keeps while it waits for Redis.
struct Call {
  std::weak_ptr<dr::Socket> socket;
  std::string socket_id;        // excluded from "to the others" broadcasts (only their calls keep it)
  std::string nsp;
  dr::Event ev;                 // name, ack id and arguments
  std::shared_ptr<void> hold;   // the socket's next events wait for this one
  std::string conversation;
  std::string user;
  std::shared_ptr<const ChatConf> conf;  // as it was: a reload may replace the module's meanwhile
  // chat:message: the message as clients see it, and its binary values.
  Json message;
  std::vector<std::string> bin;
  // when_member's continuation.
  void (*next)(dr::Socket&, const std::shared_ptr<Call>&) = nullptr;
  const char* unavailable = nullptr;

  // The socket, if it is still connected.
  std::shared_ptr<dr::Socket> live() const {
    auto s = socket.lock();
    return s && s->connected() ? s : nullptr;
  }
  const json_t* in() const { return dr::app::payload(ev); }
};
using CallPtr = std::shared_ptr<Call>;

// `to_others`: the call broadcasts to the room but the socket (so it keeps
// the socket's id, which may be gone by then).
CallPtr start(dr::Socket& s, const dr::Event& ev, bool to_others = false) {
  // The event's arguments shared, not copied: nothing changes them (they are
  // read, and what is sent is built anew).
  return std::make_shared<Call>(Call{s.weak(), to_others ? s.id() : std::string(), s.nsp(),
                                     dr::Event{ev.name, dr::Payload(dr::json_share(ev.args.args.get()), ev.args.attachments), ev.ack_id},
                                     s.delay_next_events(), dr::app::id_field(ev, "conversationId"),
                                     dr::app::user_id(s), current_conf(s), Json(), {}});
}

std::string room_of(const std::string& conversation) { return "conversation:" + conversation; }
// With a cluster, the conversation is the keys' hash tag: its stream, read
// markers, edits and idempotency records (one script) share a slot.
std::string stream_key(const std::string& conversation) { return redis::key("chat:" + redis::tag(conversation)); }
std::string read_key(const std::string& conversation) {
  return redis::key("chat:" + redis::tag(conversation) + ":read");
}
std::string edits_key(const std::string& conversation) {
  return redis::key("chat:" + redis::tag(conversation) + ":edits");
}

// "Redis unavailable: the read marker was not stored". A write that was sent
// but not answered may have been applied: then `maybe` ("... may have been
// stored") is what the client is told.
std::string failure(const redis::Reply& r, const char* consequence, const char* maybe = nullptr) {
  if (maybe && r.unanswered) return std::string("Redis did not answer: ") + maybe;
  std::string why = r.error() && !r.str.empty() ? r.str : "unexpected Redis reply";
  return why + ": " + consequence;
}

json_t* jstr(const std::string& s) { return json_stringn(s.data(), s.size()); }

// The sender's user id as a JSON string, kept on the socket: each of its
// messages carries the same one (made again only if the id changed).
struct SenderId {
  Json value;
};
dr::SocketSlot<SenderId> g_sender_slot;

json_t* sender_id(dr::Socket& s, const std::string& user) {
  if (!g_sender_slot) return jstr(user);
  SenderId& kept = s.context(g_sender_slot);
  const json_t* v = kept.value.get();
  if (!v || std::string_view(json_string_value(v), json_string_length(v)) != user) kept.value = Json(jstr(user));
  return json_incref(kept.value.get());
}

// The metadata of a message sent without any: one empty object for all of
// them (a message is only encoded, never changed once built).
json_t* empty_metadata() {
  static const Json empty(json_object());
  return empty.get();
}
// The type of a message sent without one, shared likewise.
json_t* default_type() {
  static const Json text(json_string("text"));
  return text.get();
}

// Continues with `next` once the user may act in the call's conversation;
// otherwise answers FORBIDDEN (or SOCKET_ERROR when Redis cannot tell).
void when_member(dr::Socket& s, CallPtr c, void (*next)(dr::Socket&, const CallPtr&),
                 const char* unavailable = "Redis unavailable: cannot check access") {
  c->next = next;
  c->unavailable = unavailable;
  auto answer = [](dr::Socket& s, const CallPtr& c, Access a) {
    if (a == Access::Allowed) return c->next(s, c);
    if (a == Access::Unavailable) return dr::app::internal_error(s, c->ev, c->unavailable);
    dr::app::forbidden(s, c->ev, "not a member of conversation " + c->conversation);
  };
  // dr::app::check_access, its Redis part here: the reply's callback holds
  // the call itself, not a function holding it.
  const ChatConf& conf = *c->conf;
  thread_local std::string key;  // only read by the command below: its capacity is kept
  if (auto a = dr::app::access_by_token(s, conf.access_claim, conf.members_key, c->conversation, key))
    return answer(s, c, *a);
  const std::string_view argv[] = {"SISMEMBER", key, c->user};
  redis::command(argv, [c, answer](redis::Reply r) {
    if (auto s = c->live()) answer(*s, c, dr::app::access_of(r));
  });
}

// To the conversation's room.
dr::BroadcastOptions room_options(const Call& c, bool to_others = false, bool is_volatile = false) {
  dr::BroadcastOptions opts;
  opts.nsp = c.nsp;
  opts.rooms = {room_of(c.conversation)};
  if (to_others) opts.except = {c.socket_id};  // every socket is in the room of its id (see start)
  opts.is_volatile = is_volatile;
  return opts;
}

void broadcast(const dr::BroadcastOptions& opts, const char* event, const json_t* data,
               const std::vector<std::string>& bin, std::shared_ptr<const std::string> text = nullptr) {
  // Shared, not copied: the server encodes it and keeps nothing it changes.
  dr::Payload p = dr::Payload::of(dr::json_share(const_cast<json_t*>(data)));
  p.attachments = bin;
  p.text = std::move(text);
  if (g_worker) g_worker->broadcast(opts, event, std::move(p));
}

void broadcast(const Call& c, const char* event, const json_t* data, const std::vector<std::string>& bin,
               bool to_others = false, bool is_volatile = false) {
  broadcast(room_options(c, to_others, is_volatile), event, data, bin);
}

Json id_object(const char* name, const std::string& id) {
  Json o(json_object());
  json_object_set_new(o.get(), name, jstr(id));
  return o;
}

// ---------------------------------------------------------------- messages

// A stored message as clients see it: the stream entry `fields` (strings),
// merged with its edit (JSON text, may be null). Fields a backend left out get
// the defaults; binary in metadata is appended to `bin`.
Json message_of(const std::string& id, const json_t* fields, const std::string& conversation, const char* edit,
                std::vector<std::string>& bin) {
  const char* conv = dr::json_str(fields, "conversationId");
  const json_t* sender = json_object_get(fields, "senderId");
  const json_t* content = json_object_get(fields, "content");
  const char* type = dr::json_str(fields, "type");
  const json_t* created = json_object_get(fields, "createdAt");
  Json metadata = dr::app::json_field(fields, "metadata", Json(json_object()));

  Json m(json_object());
  json_object_set_new(m.get(), "id", jstr(id));
  json_object_set_new(m.get(), "conversationId", json_string(conv ? conv : conversation.c_str()));
  json_object_set_new(m.get(), "senderId", sender ? json_copy(const_cast<json_t*>(sender)) : json_null());
  json_object_set_new(m.get(), "content", content ? json_copy(const_cast<json_t*>(content)) : json_string(""));
  json_object_set_new(m.get(), "type", json_string(type ? type : "text"));
  json_object_set_new(m.get(), "metadata", dr::app::from_stored(metadata.get(), bin).release());
  int64_t ms = dr::app::stream_id_ms(id);
  json_object_set_new(m.get(), "createdAt",
                      created ? json_copy(const_cast<json_t*>(created))
                              : ms >= 0 ? jstr(dr::app::iso_time(ms)) : json_null());
  if (const char* key = dr::json_str(fields, idem::kField)) json_object_set_new(m.get(), idem::kField, json_string(key));
  if (edit) {
    Json e = dr::json_parse(edit);
    const json_t* text = json_object_get(e.get(), "content");
    const json_t* at = json_object_get(e.get(), "editedAt");
    if (json_is_string(text) && json_is_string(at)) {
      json_object_set(m.get(), "content", const_cast<json_t*>(text));
      json_object_set(m.get(), "editedAt", const_cast<json_t*>(at));
    }
  }
  return m;
}

// A message id as Redis writes it: <ms>-<seq>, both within 64 bits.
bool parse_stream_id(std::string_view id, uint64_t& ms, uint64_t& seq) {
  size_t dash = id.find('-');
  if (dash == std::string_view::npos) return false;
  auto number = [](std::string_view digits, uint64_t& out) {
    if (digits.empty() || digits.size() > 20) return false;
    out = 0;
    for (char ch : digits) {
      if (ch < '0' || ch > '9') return false;
      uint64_t d = uint64_t(ch - '0');
      if (out > (UINT64_MAX - d) / 10) return false;
      out = out * 10 + d;
    }
    return true;
  };
  return number(id.substr(0, dash), ms) && number(id.substr(dash + 1), seq);
}

bool is_message_id(std::string_view id) {
  uint64_t ms, seq;
  return parse_stream_id(id, ms, seq);
}

// ------------------------------------------------------------------ events

void on_join(dr::Socket& s, dr::Event& ev) {
  when_member(s, start(s, ev), [](dr::Socket& s, const CallPtr& c) {
    s.join(room_of(c->conversation));
    dr::ack_data(s, c->ev, id_object("conversationId", c->conversation));
  });
}

void on_leave(dr::Socket& s, dr::Event& ev) {
  std::string conversation = dr::app::id_field(ev, "conversationId");
  s.leave(room_of(conversation));
  dr::ack_data(s, ev, id_object("conversationId", conversation));
}

// The answer to a message Redis did not answer for: it may be stored.
void unknown(const Call& c, const std::string& key) {
  auto s = c.live();
  if (!s) return;
  if (key.empty())
    dr::app::outcome_unknown(*s, c.ev,
                             "Redis did not answer: the message may have been stored (a clientMessageId makes a retry safe)");
  else
    dr::app::outcome_unknown(
        *s, c.ev, "Redis did not answer: the message may have been stored; send it again with the same clientMessageId",
        key);
}

// Stored on the master, but redis_wait_replicas' replicas did not confirm it
// in time: a failover now could lose it, so the ack must not say "stored".
void unreplicated(const Call& c, const std::string& key, const redis::Replication& rep) {
  auto s = c.live();
  if (!s) return;
  dr::app::outcome_unknown(*s, c.ev,
                           "the message is " + rep.details() +
                               (key.empty() ? ": a failover now may lose it (a clientMessageId makes a retry safe)"
                                            : "; send it again with the same clientMessageId"),
                           key);
}

// To the whole room as both chat:message and message:new. `text`: [m] as
// JSON (message_texts), encoded once for both names and the ack.
void deliver(const Call& c, const json_t* m, const std::vector<std::string>& bin,
             const std::shared_ptr<const std::string>& text) {
  // Options kept for the next message (their list of rooms keeps its
  // capacity); a delivery inside another one's gets its own.
  static dr::BroadcastOptions kept;
  static bool kept_in_use = false;
  dr::BroadcastOptions fresh;
  dr::BroadcastOptions& opts = kept_in_use ? fresh : kept;
  struct Release {
    bool& in_use;
    bool was;
    ~Release() { in_use = was; }
  } release{kept_in_use, kept_in_use};
  kept_in_use = true;
  opts.nsp = c.nsp;
  opts.rooms.resize(1);
  opts.rooms[0] = room_of(c.conversation);
  broadcast(opts, "chat:message", m, bin, text);
  broadcast(opts, "message:new", m, bin, text);
}

// Stored first (the ack means it is), then to the whole room as both
// chat:message and message:new, then the ack. With a clientMessageId the
// store is idempotent: a retry gets the stored message, and the room hears of
// it once (from the retry when the first attempt's answer was lost).
void on_message(dr::Socket& s, dr::Event& ev) {
  const char* given = dr::json_str(dr::app::payload(ev), idem::kField);
  if (given && !idem::valid_key(given)) return dr::app::invalid(s, ev, idem::kInvalidDetails);
  when_member(
      s, start(s, ev),
      [](dr::Socket& s, const CallPtr& c) {
        const json_t* in = c->in();
        const json_t* content = json_object_get(in, "content");
        const json_t* type = json_object_get(in, "type");  // a string when given (the schema)
        const json_t* metadata = json_object_get(in, "metadata");
        const char* given = dr::json_str(in, idem::kField);
        std::string key = given ? given : "";
        // No metadata, or {}: nothing to write out or copy.
        const bool no_metadata = !json_is_object(metadata) || json_object_size(metadata) == 0;
        const dr::app::IsoTime created_at = dr::app::iso_time_of(dr::app::now_ms());
        const std::string_view created = created_at.view();
        std::string_view text(json_string_value(content), json_string_length(content));
        std::string_view type_text = json_is_string(type) ? json_string_value(type) : "text";
        std::string metadata_text =
            no_metadata ? "{}" : dr::json_text(dr::app::to_stored(metadata, c->ev.args.attachments).get());
        // The stream entry's fields, as views (copied into the command or the record).
        const std::string_view fields[] = {"conversationId", c->conversation, "senderId", c->user, "content", text,
                                           "type", type_text, "metadata", metadata_text, "createdAt", created,
                                           idem::kField, key};
        const size_t field_count = key.empty() ? std::size(fields) - 2 : std::size(fields);

        // The message as clients see it, but for its id. What the client sent
        // is shared where it is the same value (the event is never changed).
        // Kept by the call: its callbacks capture nothing else.
        c->message = Json(json_object());
        json_t* m = c->message.get();
        std::vector<std::string>& bin = c->bin;
        const json_t* conversation = json_object_get(in, "conversationId");
        json_object_set_new(m, "id", json_null());
        if (json_is_string(conversation)) json_object_set(m, "conversationId", const_cast<json_t*>(conversation));
        else json_object_set_new(m, "conversationId", jstr(c->conversation));
        json_object_set_new(m, "senderId", sender_id(s, c->user));
        json_object_set(m, "content", const_cast<json_t*>(content));
        if (json_is_string(type)) json_object_set(m, "type", const_cast<json_t*>(type));
        else json_object_set(m, "type", default_type());
        if (no_metadata) json_object_set(m, "metadata", empty_metadata());
        else json_object_set_new(m, "metadata", dr::copy_with_binary(metadata, c->ev.args.attachments, bin).release());
        json_object_set_new(m, "createdAt", json_stringn(created.data(), created.size()));
        if (!key.empty()) json_object_set_new(m, idem::kField, jstr(key));

        if (key.empty()) {
          const std::string stream = stream_key(c->conversation);
          const std::string maxlen = std::to_string(c->conf->stream_maxlen);
          std::string_view argv[6 + std::size(fields)] = {"XADD", stream, "MAXLEN", "~", maxlen, "*"};
          std::copy(fields, fields + field_count, argv + 6);
          redis::command(std::span<const std::string_view>(argv, 6 + field_count), [c](redis::Reply r) {
            if (r.type != redis::Reply::Type::String) {
              if (r.unanswered) return unknown(*c, {});
              if (auto s = c->live()) dr::app::internal_error(*s, c->ev, failure(r, "the message was not stored"));
              return;
            }
            if (g_worker) g_worker->metric_add(kMessagesMetric, "");
            json_object_set_new(c->message.get(), "id", jstr(r.str));
            redis::replicated([c](redis::Replication rep) {
              // Stored: the room gets it even if the sender has gone meanwhile.
              const auto texts = dr::app::message_texts(c->message.get(), c->ev.ack_id.has_value());
              deliver(*c, c->message.get(), c->bin, texts.args);
              if (!rep.confirmed) return unreplicated(*c, {}, rep);
              if (auto s = c->live()) dr::app::ack_with_text(*s, c->ev, c->message.get(), c->bin, texts.ack);
            });
          });
          return;
        }

        idem::Append a;
        a.record = idem::record_key("chat", c->conversation, c->user, key);
        a.stream = stream_key(c->conversation);
        a.edits = edits_key(c->conversation);
        a.maxlen = c->conf->stream_maxlen;
        a.ttl_ms = c->conf->idempotency_ttl;
        a.fields.assign(fields, fields + field_count);
        idem::append(std::move(a), [c, key](idem::Result r) {
          switch (r.outcome) {
            case idem::Outcome::Unknown:
              return unknown(*c, key);
            case idem::Outcome::NotStored:
              if (auto s = c->live())
                dr::app::internal_error(*s, c->ev, std::string(redis::kUnavailable) + ": the message was not stored");
              return;
            case idem::Outcome::Failed:
              if (auto s = c->live()) dr::app::internal_error(*s, c->ev, r.error + ": the message was not stored");
              return;
            case idem::Outcome::Stored:
              if (g_worker) g_worker->metric_add(kMessagesMetric, "");
              json_object_set_new(c->message.get(), "id", jstr(r.id));
              break;
            case idem::Outcome::Found:
              if (r.fields) {
                c->bin.clear();
                c->message = message_of(r.id, r.fields.get(), c->conversation,
                                        r.edit.empty() ? nullptr : r.edit.c_str(), c->bin);
              } else {  // trimmed from the stream since: as sent, timed by its id
                json_object_set_new(c->message.get(), "id", jstr(r.id));
                int64_t ms = dr::app::stream_id_ms(r.id);
                if (ms >= 0) json_object_set_new(c->message.get(), "createdAt", jstr(dr::app::iso_time(ms)));
              }
              break;
          }
          const auto texts = dr::app::message_texts(c->message.get(), c->ev.ack_id.has_value());
          if (r.deliver) deliver(*c, c->message.get(), c->bin, texts.args);
          if (!r.replication.confirmed) return unreplicated(*c, key, r.replication);
          if (auto s = c->live()) dr::app::ack_with_text(*s, c->ev, c->message.get(), c->bin, texts.ack);
        });
      },
      "Redis unavailable: cannot check access, the message was not stored");
}

void on_typing(dr::Socket& s, dr::Event& ev) {
  when_member(s, start(s, ev, true), [](dr::Socket& s, const CallPtr& c) {
    Json data(json_object());
    json_object_set_new(data.get(), "userId", jstr(c->user));
    json_object_set_new(data.get(), "conversationId", jstr(c->conversation));
    json_object_set_new(data.get(), "isTyping", json_boolean(json_is_true(json_object_get(c->in(), "isTyping"))));
    broadcast(*c, "user:typing", data.get(), {}, true, true);
    dr::ack_data(s, c->ev, std::move(data));
  });
}

void on_read(dr::Socket& s, dr::Event& ev) {
  when_member(s, start(s, ev, true), [](dr::Socket&, const CallPtr& c) {
    std::string message = dr::app::id_field(c->ev, "messageId");
    redis::command({"HSET", read_key(c->conversation), c->user, message}, [c, message](redis::Reply r) {
      if (r.error()) {
        if (auto s = c->live()) dr::app::internal_error(*s, c->ev, failure(r, "the read marker was not stored", "the read marker may have been stored"));
        return;
      }
      Json data(json_object());
      json_object_set_new(data.get(), "conversationId", jstr(c->conversation));
      json_object_set_new(data.get(), "messageId", jstr(message));
      json_object_set_new(data.get(), "userId", jstr(c->user));
      json_object_set_new(data.get(), "readAt", jstr(dr::app::iso_now()));
      broadcast(*c, "chat:read", data.get(), {}, true);
      if (auto s = c->live()) dr::ack_data(*s, c->ev, std::move(data));
    });
  });
}

// Answers history with `entries` (XREVRANGE, newest first), their edits merged in.
void answer_history(const CallPtr& c, const redis::Reply& reply) {
  struct Entry {
    std::string id;
    Json fields;
  };
  auto entries = std::make_shared<std::vector<Entry>>();
  std::vector<std::string> argv{"HMGET", edits_key(c->conversation)};
  for (const redis::Reply& e : reply.elements) {
    Entry entry;
    if (!dr::app::stream_entry(e, entry.id, entry.fields)) continue;
    argv.push_back(entry.id);
    entries->push_back(std::move(entry));
  }
  auto finish = [c, entries](const redis::Reply* edits) {
    auto s = c->live();
    if (!s) return;
    Json list(json_array());
    std::vector<std::string> bin;
    for (size_t i = 0; i < entries->size(); i++) {
      const Entry& e = (*entries)[i];
      const redis::Reply* edit = edits && i < edits->elements.size() ? &edits->elements[i] : nullptr;
      const char* edit_text = edit && edit->type == redis::Reply::Type::String ? edit->str.c_str() : nullptr;
      json_array_append_new(list.get(), message_of(e.id, e.fields.get(), c->conversation, edit_text, bin).release());
    }
    dr::app::ack_with(*s, c->ev, list.get(), std::move(bin));
  };
  if (entries->empty()) return finish(nullptr);
  redis::command(std::move(argv), [c, finish](redis::Reply r) {
    if (r.type != redis::Reply::Type::Array) {
      if (auto s = c->live()) dr::app::internal_error(*s, c->ev, failure(r, "cannot read the history"));
      return;
    }
    finish(&r);
  });
}

void on_history(dr::Socket& s, dr::Event& ev) {
  const json_t* in = dr::app::payload(ev);
  const json_t* limit = json_object_get(in, "limit");
  if (limit && !json_is_null(limit) && json_number_value(limit) < 1)
    return dr::app::invalid(s, ev, "limit: must be a positive integer");
  const char* before = dr::json_str(in, "before");
  uint64_t ms = 0, seq = 0;
  if (before && !parse_stream_id(before, ms, seq))
    return dr::app::invalid(s, ev, "before: must be a message id (<ms>-<seq>, e.g. 1714567890123-0)");

  when_member(s, start(s, ev), [](dr::Socket& s, const CallPtr& c) {
    const json_t* limit = json_object_get(c->in(), "limit");
    uint64_t count = c->conf->history_limit;
    if (json_is_number(limit))
      count = json_number_value(limit) >= double(c->conf->history_max) ? c->conf->history_max
                                                                       : uint64_t(json_number_value(limit));
    // `before` is exclusive: read up to the id just below it (works on any
    // Redis 5+, unlike the "(" prefix of 6.2).
    std::string end = "+";
    uint64_t ms = 0, seq = 0;
    if (const char* before = dr::json_str(c->in(), "before"); before && parse_stream_id(before, ms, seq)) {
      if (ms == 0 && seq == 0) return dr::app::ack_with(s, c->ev, Json(json_array()).get(), {});
      end = seq > 0 ? std::to_string(ms) + "-" + std::to_string(seq - 1)
                    : std::to_string(ms - 1) + "-" + std::to_string(UINT64_MAX);
    }
    redis::command({"XREVRANGE", stream_key(c->conversation), end, "-", "COUNT", std::to_string(count)},
                   [c](redis::Reply r) {
                     if (r.type != redis::Reply::Type::Array) {
                       if (auto s = c->live())
                         dr::app::internal_error(*s, c->ev, failure(r, "cannot read the history"));
                       return;
                     }
                     answer_history(c, r);
                   });
  });
}

// Only the sender may edit. The edit is one HSET into the conversation's edits
// hash (atomic); message:updated carries the whole message with editedAt.
void on_edit(dr::Socket& s, dr::Event& ev) {
  when_member(s, start(s, ev), [](dr::Socket& s, const CallPtr& c) {
    std::string id = dr::app::id_field(c->ev, "messageId");
    if (!is_message_id(id)) return dr::app::not_found(s, c->ev, "messageId: no such message in this conversation");
    redis::command({"XRANGE", stream_key(c->conversation), id, id}, [c, id](redis::Reply r) {
      auto s = c->live();
      if (!s) return;
      if (r.type != redis::Reply::Type::Array)
        return dr::app::internal_error(*s, c->ev, failure(r, "the edit was not stored"));
      std::string found;
      Json fields;
      if (r.elements.empty() || !dr::app::stream_entry(r.elements[0], found, fields) || found != id)
        return dr::app::not_found(*s, c->ev, "messageId: no such message in this conversation");
      const char* sender = dr::json_str(fields.get(), "senderId");
      if (!sender || c->user != sender) return dr::app::forbidden(*s, c->ev, "only the sender may edit a message");

      Json edit(json_object());
      json_object_set(edit.get(), "content", json_object_get(c->in(), "content"));
      json_object_set_new(edit.get(), "editedAt", jstr(dr::app::iso_now()));
      json_object_set_new(edit.get(), "editedBy", jstr(c->user));
      std::string edit_text = dr::json_text(edit.get());
      auto shared_fields = std::shared_ptr<json_t>(fields.release(), json_decref);
      redis::command({"HSET", edits_key(c->conversation), id, edit_text},
                     [c, id, shared_fields, edit_text](redis::Reply r) {
                       if (r.error()) {
                         if (auto s = c->live())
                           dr::app::internal_error(
                               *s, c->ev, failure(r, "the edit was not stored", "the edit may have been stored"));
                         return;
                       }
                       std::vector<std::string> bin;
                       Json m = message_of(id, shared_fields.get(), c->conversation, edit_text.c_str(), bin);
                       broadcast(*c, "message:updated", m.get(), bin);
                       if (auto s = c->live()) dr::app::ack_with(*s, c->ev, m.get(), std::move(bin));
                     });
    });
  });
}

// ------------------------------------------------------------ lifecycle

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<ChatConf>(); }

bool check_conf(dr::ModuleConf* conf, std::string& err) {
  return check_chat_conf(*static_cast<ChatConf*>(conf), err);
}

bool init_worker(dr::Worker& w, const dr::Module& self) {
  g_worker = &w;
  g_self = &self;
  bool declared = false;
  for (const std::string& nsp : w.namespaces()) declared = declared || nsp == kNsp;
  if (!declared) {
    dr::logf(dr::LogLevel::Warn, "chat: namespace %s is not declared; the chat events are off", kNsp);
    return true;
  }
  const auto* conf = static_cast<const ChatConf*>(w.conf(self, kNsp));
  std::string err;
  if (conf && !check_chat_conf(*conf, err)) {
    dr::logf(dr::LogLevel::Crit, "chat: namespace %s: %s", kNsp, err.c_str());
    return false;
  }
  if (!redis::configured())
    dr::logf(dr::LogLevel::Warn, "chat: no redis configured: messages cannot be stored, %s answers SOCKET_ERROR",
             kNsp);

  g_sender_slot = dr::socket_slot<SenderId>("chat.sender_id");
  w.metric_declare(kMessagesMetric, dr::MetricType::Counter, "Chat messages stored and broadcast");
  w.use_event(kNsp, dr::schema::middleware(kEvents));
  w.on(kNsp, "chat:join", on_join);
  w.on(kNsp, "conversation:join", on_join);
  w.on(kNsp, "chat:leave", on_leave);
  w.on(kNsp, "chat:message", on_message);
  w.on(kNsp, "message:send", on_message);
  w.on(kNsp, "chat:typing", on_typing);
  w.on(kNsp, "chat:read", on_read);
  w.on(kNsp, "chat:history", on_history);
  w.on(kNsp, "message:edit", on_edit);
  // A recovered session rejoins a conversation's room only if still a member.
  w.on_room_check(kNsp, [](dr::Socket& s, const std::string& room, dr::RoomVerdict done) {
    std::shared_ptr<const ChatConf> conf = current_conf(s);
    dr::app::check_room(s, room, room_of(""), conf->access_claim, conf->members_key, std::move(done));
  });
  return true;
}

void exit_worker(dr::Worker&, const dr::Module&) {
  g_worker = nullptr;
  g_self = nullptr;
}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "chat", kDirectives, create_conf, check_conf, init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
