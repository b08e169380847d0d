// A worker's link to Redis: hiredis' async API on the worker's libuv loop,
// with one connection for commands and one in subscriber mode.
//
// Redis may be away at start or go away at any time: the link reconnects with
// exponential backoff, restores its subscriptions when it is back, and while
// it is away (or too slow) refuses commands instead of queueing them, so that
// memory stays bounded; refusals are counted.
#pragma once

#include <hiredis/async.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/timers.h"
#include "core/uv_util.h"
#include "depth-realtime/redis.h"

namespace dr::cluster {

// Owns a redisAsyncContext until hiredis frees it itself (after a failed
// connect or a disconnect, hiredis frees the context when its callback returns).
class AsyncContext {
 public:
  AsyncContext() = default;
  ~AsyncContext() { reset(); }
  AsyncContext(const AsyncContext&) = delete;
  AsyncContext& operator=(const AsyncContext&) = delete;

  redisAsyncContext* get() const { return ac_; }
  explicit operator bool() const { return ac_ != nullptr; }
  void adopt(redisAsyncContext* ac) {
    reset();
    ac_ = ac;
  }
  // hiredis is freeing it: forget it without freeing.
  void forget() { ac_ = nullptr; }
  // Frees it now; its pending callbacks run with a null reply.
  void reset();

 private:
  redisAsyncContext* ac_ = nullptr;
};

// Puts hiredis' events of `ac` on `loop` (a uv_poll_t, freed with the context).
bool attach_to_loop(redisAsyncContext* ac, uv_loop_t* loop);

class RedisSentinel;
class RedisCluster;

class RedisLink {
 public:
  // `reply` is null when no answer will come (connection lost).
  using Reply = std::function<void(redisReply* reply)>;
  using Message = std::function<void(std::string_view channel, std::string_view body)>;
  using StateChange = std::function<void(bool ready)>;
  // The subscriber connection was lost (false), or is back with the SUBSCRIBE
  // of every channel confirmed (true): from then on nothing published is missed.
  using Subscriber = std::function<void(bool subscribed)>;

  RedisLink(uv_loop_t* loop, Timers& timers, const CoreConf::Redis& conf, Message on_message, StateChange on_state);
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  void start();
  // Both connections are up (authenticated, database selected). With
  // `redis cluster=`: the slot map is known and every master's are.
  bool ready() const;
  // The commands connection is up: a PUBLISH can leave (whether or not ours
  // to receive is).
  bool commands_up() const;
  // A link to one shard of a Redis Cluster (RedisCluster makes them):
  // channels are SSUBSCRIBEd, and `lost` is told of one the shard dropped
  // (its slot moved elsewhere), which is then no longer in the set.
  // `confirmed` is told of each SSUBSCRIBE Redis confirmed.
  void shard_mode(std::function<void(std::string_view channel)> lost,
                  std::function<void(std::string_view channel)> confirmed) {
    sharded_ = true;
    on_lost_channel_ = std::move(lost);
    on_confirmed_channel_ = std::move(confirmed);
  }
  bool cluster() const { return cluster_ != nullptr; }

  // A command's arguments, as views: nothing is copied but into the
  // connection's output buffer.
  using Argv = std::span<const std::string_view>;
  // Sends a command. False when Redis is away or too much is pending: the
  // command is dropped (and counted) and `reply` is never called.
  bool command(Argv argv, Reply reply = {});
  bool command(std::initializer_list<std::string_view> argv, Reply reply = {}) {
    return command(Argv(argv.begin(), argv.size()), std::move(reply));
  }
  // A module's command (redis.h): `cb` gets the reply converted to
  // redis::Reply. Moved from only when sent (true), so a refused command
  // still has it to answer "unavailable".
  bool module_command(Argv argv, redis::Callback& cb);
  // Several commands, all sent or none (a MULTI ... EXEC must not be cut);
  // `reply` gets the last one's reply.
  bool commands(std::span<const Argv> cmds, Reply reply = {});
  bool commands(const std::vector<std::vector<std::string_view>>& cmds, Reply reply = {});
  bool commands(std::initializer_list<std::initializer_list<std::string_view>> cmds, Reply reply = {});
  // The subscription set: kept across reconnects.
  void subscribe(const std::string& channel);
  void unsubscribe(const std::string& channel);
  bool subscribed(const std::string& channel) const { return channels_.count(channel) != 0; }
  size_t subscription_count() const { return channels_.size(); }
  // Glob patterns (PSUBSCRIBE), kept across reconnects like channels and
  // restored before them; their messages come to on_message with the channel
  // they were published on. Not with `redis cluster=` (sharded Pub/Sub has none).
  void psubscribe(const std::string& pattern);
  void punsubscribe(const std::string& pattern);
  size_t pattern_count() const { return patterns_.size(); }
  void on_subscriber(Subscriber fn) { on_subscriber_ = std::move(fn); }

  // Writes what the commands of this loop turn queued, now rather than at the
  // next poll: called before clients' output is flushed, so that a SUBSCRIBE
  // (a join) or a PUBLISH leaves before the ack that tells a client it is done.
  void flush();

  // Where it connects, for logs (with Sentinel: the master last learnt).
  std::string where() const { return conf_.text(); }
  uint64_t dropped() const;
  size_t pending_bytes() const;

 private:
  enum class State { Down, Connecting, Up };
  struct Conn {
    Conn(RedisLink* l, const char* r) : link(l), role(r) {}
    RedisLink* link;
    const char* role;  // "commands" or "subscriber", for logs
    AsyncContext ac;
    uint64_t gen = 0;  // bumped per connection attempt: late callbacks of an old one are told apart
    State state = State::Down;
    int64_t connect_deadline = 0;
    int64_t retry_at = 0;
    uint64_t backoff = 0;
    int64_t down_since = 0;   // for "connected again after ..."
    int64_t last_warn = 0;    // failures are logged at most once a minute
    uint64_t failures = 0;
    bool told_noscript = false;  // logged once per connection
  };
  struct Sent {
    int64_t at;
    size_t bytes;
  };
  struct Callback {
    Conn* conn = nullptr;
    uint64_t gen = 0;
    Reply fn;
    redis::Callback module_fn;  // instead of fn: a module's (module_command)
    bool counted = false;  // has an entry in sent_
    // An EVALSHA: its script, the RESP of its arguments after the SHA and
    // their count, to send it again as EVAL on NOSCRIPT (empty once resent).
    std::string_view script;
    std::string script_args;
    size_t script_argc = 0;
  };
  // Callbacks are kept for the next commands (with script_args' capacity):
  // no allocation per command once there are enough.
  std::unique_ptr<Callback> new_callback();
  void recycle(std::unique_ptr<Callback> cb);
  bool resend_as_eval(std::unique_ptr<Callback>& cb);
  void load_scripts(Conn& c);

  void connect(Conn& c);
  void connected(Conn& c);
  void lost(Conn& c, const char* why);
  void drop(Conn& c, const char* why);  // our decision: free the context
  void after_ready_change(bool was_ready);
  void resubscribe();
  void send_subscription(const char* verb, const std::vector<std::string>& channels);
  void send_shard_subscription(const char* verb, const std::vector<std::string>& channels);
  void subscriber_event(bool subscribed);
  bool send_counted(Argv argv, Reply reply, redis::Callback* module_fn);
  bool raw_command(Conn& c, Argv argv, Reply reply, bool counted, redis::Callback* module_fn = nullptr);
  bool raw_command(Conn& c, std::initializer_list<std::string_view> argv, Reply reply, bool counted) {
    return raw_command(c, Argv(argv.begin(), argv.size()), std::move(reply), counted);
  }
  // One timer for the earliest of: a reconnect, a connect deadline, the
  // oldest command's timeout (checked lazily: it fires at the deadline of the
  // command that was oldest when armed, then follows the new oldest).
  void rearm();
  void on_timer();

  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_sub_reply(redisAsyncContext* ac, void* reply, void* privdata);

  // Sentinel mode (conf_.sentinel()): the sentinels told where the master is.
  void master_is(const std::string& host, int port);

  uv_loop_t* loop_;
  Timers& timers_;
  CoreConf::Redis conf_;
  Message on_message_;
  StateChange on_state_;
  Conn cmd_{this, "commands"};
  Conn sub_{this, "subscriber"};
  std::set<std::string> channels_;
  std::set<std::string> patterns_;
  // The last channel (or pattern) of a resubscribe, until Redis confirms it.
  std::string resubscribed_last_;
  const char* resubscribed_verb_ = "subscribe";  // its confirmation's kind
  Subscriber on_subscriber_;
  std::deque<Sent> sent_;  // commands awaiting replies on cmd_, oldest first
  size_t pending_bytes_ = 0;
  std::string formatted_;  // raw_command()'s RESP, kept to stay allocated
  std::vector<std::unique_ptr<Callback>> spare_callbacks_;
  uint64_t dropped_ = 0;
  bool destroying_ = false;
  bool started_ = false;
  Timer timer_{timers_, [](void* l) { static_cast<RedisLink*>(l)->on_timer(); }, this};
  std::unique_ptr<RedisSentinel> sentinel_;  // sentinel mode: where the master is (redis_sentinel.h)
  // Cluster mode (conf_.cluster()): every command and channel goes through it.
  std::unique_ptr<RedisCluster> cluster_;
  void cluster_changed();
  bool cluster_ready_ = false;
  bool cluster_subscribed_ = false;
  bool sharded_ = false;
  std::multiset<std::string> unsubscribing_;  // our SUNSUBSCRIBEs awaiting their reply
  std::function<void(std::string_view)> on_lost_channel_;
  std::function<void(std::string_view)> on_confirmed_channel_;
};

}  // namespace dr::cluster
