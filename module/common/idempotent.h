// Stream entries stored at most once per client-chosen key (chat messages,
// project comments): `clientMessageId`.
//
// One Lua script checks and stores atomically: a record
//   <prefix>idem:<kind>:<len>:<scope>:<len>:<user>:<clientMessageId>
// (a hash {id, delivered}, expiring after the module's idempotency TTL; the
// lengths keep any scope and user id apart) either exists, and the stored
// entry is returned, or the entry is appended to its stream and the record
// made. `delivered` is claimed ("0" -> "1", also atomically) by whoever
// broadcasts the entry, so that it is broadcast exactly once: by the call that
// stored it, or, when that one never got its answer (Redis stalled past
// redis_command_timeout), by the retry that finds it.
#pragma once

#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace dr::app::idem {

inline constexpr const char* kField = "clientMessageId";
inline constexpr size_t kMaxLength = 64;
inline constexpr uint64_t kDefaultTtlMs = 24ull * 60 * 60 * 1000;

// 1-64 characters of A-Z a-z 0-9 _ - : .
bool valid_key(std::string_view key);
// The INVALID_DATA details for a bad key (the schema checks type and length).
inline constexpr const char* kInvalidDetails =
    "clientMessageId: must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', ':', '.'";

// The record's Redis key (app prefix included). `kind` is "chat" or "comment";
// `scope` the conversation or project id.
std::string record_key(std::string_view kind, std::string_view scope, std::string_view user, std::string_view key);

enum class Outcome {
  Stored,     // appended now: `id` is new, `fields` empty
  Found,      // stored by an earlier attempt: `id`, and `fields` unless trimmed since
  NotStored,  // Redis refused at once (away): nothing was sent, nothing stored
  Unknown,    // sent, no answer: it may be stored; retry with the same key
  Failed,     // Redis answered with an error (`error`): nothing stored
};

struct Result {
  Outcome outcome = Outcome::Failed;
  std::string id;
  Json fields;         // Found: the stored entry as an object of strings
  std::string edit;    // Found, with an edits hash: the entry's edit (JSON text) or empty
  bool deliver = false;  // Stored / Found: this call won the broadcast: do it now
  std::string error;
  // Stored / Found: whether redis_wait_replicas' replicas have it (confirmed
  // when that is off). Not confirmed: ack an error saying so, and that a
  // retry with the same key is safe.
  dr::redis::Replication replication;
};

struct Append {
  std::string record;          // record_key(...)
  std::string stream;          // the stream key
  std::string edits;           // a hash of edits by entry id, or empty
  uint64_t maxlen = 0;         // XADD MAXLEN ~ (0: not trimmed)
  uint64_t ttl_ms = kDefaultTtlMs;
  std::vector<std::string> fields;  // the entry's field/value pairs
};

// Stores `a` unless its record exists, then calls `done` (later, on the
// worker's loop). For Stored, `deliver` comes from a claim sent after the
// store: false only when a concurrent retry already broadcast it. Stored and
// Found wait for redis::replicated() before `done`.
void append(Append a, std::function<void(Result)> done);

}  // namespace dr::app::idem
