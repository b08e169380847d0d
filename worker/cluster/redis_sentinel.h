// Where the Redis master is, asked of Redis Sentinel (`redis sentinel=...
// master=NAME`): `SENTINEL get-master-addr-by-name` of each sentinel in turn
// until one answers, and a subscription to `+switch-master` on one of them so
// that a failover is followed as soon as the sentinels agree on it.
//
// It only says where the master is; RedisLink connects there, checks ROLE
// and asks again (ask()) whenever a connection is lost or refused, so a
// missed `+switch-master` (the sentinel we listened to was away) costs one
// reconnect attempt, not a wrong master for good.
#pragma once

#include <hiredis/async.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "cluster/redis_link.h"
#include "core/config.h"
#include "core/timers.h"

namespace dr::cluster {

class RedisSentinel {
 public:
  // The master's address, each time a sentinel tells it (the same one again too).
  using Master = std::function<void(const std::string& host, int port)>;

  RedisSentinel(uv_loop_t* loop, Timers& timers, const CoreConf::Redis& conf, Master on_master);
  ~RedisSentinel();
  RedisSentinel(const RedisSentinel&) = delete;
  RedisSentinel& operator=(const RedisSentinel&) = delete;

  // Asks, and subscribes to +switch-master.
  void start();
  // Asks the sentinels afresh (one question at a time: a call while one is
  // under way does nothing).
  void ask();

  // A `+switch-master` message's body "NAME OLD-IP OLD-PORT NEW-IP NEW-PORT":
  // the new address if it is about `name`.
  static bool parse_switch(std::string_view body, std::string_view name, std::string& host, int& port);

 private:
  struct Conn {
    Conn(RedisSentinel* s, Timer::Callback cb) : self(s), deadline(s->timers_, cb, this) {}
    RedisSentinel* self;
    AsyncContext ac;
    size_t index = 0;  // which sentinel
    Timer deadline;    // the connect (and the answer) must come by then
  };

  void ask_next();
  void asked(bool ok);  // the question to sentinel `ask_.index` is over
  void subscribe();
  void sub_lost(const char* why);
  void retire(Conn& c);  // closes its connection, whose callbacks now do nothing
  bool open(Conn& c, const char* purpose);
  const CoreConf::Redis::Endpoint& at(const Conn& c) const { return conf_.sentinels[c.index]; }

  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_answer(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_auth(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_sub(redisAsyncContext* ac, void* reply, void* privdata);

  uv_loop_t* loop_;
  CoreConf::Redis conf_;
  Master on_master_;
  Timers& timers_;  // the worker's facility
  Conn ask_;
  Conn sub_;
  Timer ask_retry_;  // every sentinel failed: a new round later
  Timer sub_retry_;  // the subscriber connection, again (on the next sentinel)
  bool asking_ = false;
  size_t tried_ = 0;         // sentinels tried in this round
  uint64_t ask_backoff_ = 0;
  uint64_t sub_backoff_ = 0;
  bool sub_up_ = false;
  bool destroying_ = false;
  int64_t last_warn_ = 0;    // "no sentinel answers" at most once a minute
};

}  // namespace dr::cluster
