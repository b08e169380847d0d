// depth-realtime Redis API: commands to the Redis the cluster shares, for the
// data modules keep there (chat streams, read markers, inboxes, access sets,
// rate-limit counters). It uses the worker's own link (see `redis` in the
// configuration): commands of one worker are sent, and answered, in order.
//
// Redis may be away. A command is then not queued: its callback gets an error
// reply saying so, so a module can tell its client ("the ack says so and
// nothing is half-written"). A command that was sent but got no answer (Redis
// stalled past redis_command_timeout, or the connection was lost meanwhile)
// gets the same error with `unanswered` set: Redis may still have applied it,
// so a module must not tell its client "not stored". Callbacks run later on
// the worker's loop, never inside the call.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/export.h"

namespace dr::redis {

struct DR_API Reply {
  enum class Type { Nil, Error, Status, Integer, String, Array };
  Type type = Type::Nil;
  long long integer = 0;
  std::string str;             // String, Status, Error
  std::vector<Reply> elements; // Array
  // Error kUnavailable only: the command had been sent (its outcome is
  // unknown) rather than refused before sending (it was not applied).
  bool unanswered = false;

  bool error() const { return type == Type::Error; }
  bool nil() const { return type == Type::Nil; }
  // Integer replies, and strings holding an integer (e.g. HGET of a counter).
  long long as_int(long long fallback = 0) const;
};

// The text of the error reply given when a command cannot be sent or no
// answer came in time (`unanswered` tells the two apart).
inline constexpr std::string_view kUnavailable = "Redis unavailable";

using Callback = std::function<void(Reply reply)>;

// Redis is configured / both connections are up right now.
DR_API bool configured();
DR_API bool ready();

// `redis cluster=...`: the keys are spread over the cluster's shards by slot.
// A command goes to the shard of its first key: argv[1] for most commands;
// for EVAL/EVALSHA/FCALL, KEYS[1], so numkeys must be right and every key a
// script touches must be passed in KEYS and share KEYS[1]'s slot (give them
// one hash tag: tag() below); XREAD/XREADGROUP, the first stream. A command
// without a key (EVAL with numkeys 0, PING) goes to any shard.
DR_API bool cluster();

// Sends one command, e.g. {"XADD", key, "MAXLEN", "~", "10000", "*", ...}.
DR_API void command(std::vector<std::string> argv, Callback cb = {});
// The same with views of the arguments: they are copied only into the
// connection's output, before it returns.
DR_API void command(std::span<const std::string_view> argv, Callback cb = {});
// MULTI, the commands, EXEC: all of them are applied or none. `cb` gets the
// EXEC reply (an array with one reply per command) or an error. With a
// cluster, the commands of each slot are one MULTI ... EXEC on their shard
// (all or none per slot), and the reply is the same array, in order; the
// commands of a slot whose transaction failed have its error as their reply.
DR_API void transaction(std::vector<std::vector<std::string>> commands, Callback cb = {});

// `redis_wait_replicas N TIMEOUT`: is what this worker wrote so far on N
// replicas? Call it once a write is answered, before acking it: `cb` gets
// `confirmed` once WAIT says N replicas have it, or not when WAIT gave up
// (`replicas` had it by then) or Redis did not answer (`replicas` -1). The
// write is on the master either way: tell the client "stored, replication not
// confirmed", not "not stored". Off (the default): confirmed at once.
struct DR_API Replication {
  bool confirmed = true;
  long long replicas = 0;  // how many WAIT counted
  long long wanted = 0;    // N (0: off)
  long long timeout_ms = 0; // how long WAIT waited (0: not asked, replicas were missing a moment ago)
  // For a client: "stored on the Redis master, confirmed on 0 of 1 replicas within 500ms".
  std::string details() const;
};
DR_API void replicated(std::function<void(Replication)> cb);

// The prefix of the keys the application keeps (`redis_app_prefix`, default
// "depth:") followed by `suffix`: key("chat:42") = "depth:chat:42".
DR_API std::string key(std::string_view suffix);
// `id` (a conversation, project, user) as the part of a key that chooses its
// slot: "{id}" with a cluster (a hash tag: the keys of one id share a slot,
// so its scripts and transactions run on one shard), `id` as it is with one
// Redis (the key layout of one Redis does not change).
DR_API std::string tag(std::string_view id);

}  // namespace dr::redis
