#include "cluster/redis_link.h"

#include <hiredis/sds.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <utility>

#include <unistd.h>

#include "cluster/lua_scripts.h"
#include "cluster/redis_api.h"
#include "cluster/redis_cluster.h"
#include "cluster/redis_sentinel.h"
#include "cluster/reply_pool.h"
#include "depth-realtime/module.h"

namespace dr::cluster {
namespace {

constexpr uint64_t kBackoffFirstMs = 200;
constexpr uint64_t kBackoffMaxMs = 10000;
constexpr int64_t kWarnEveryMs = 60000;  // "still unreachable" at most once a minute
constexpr size_t kSubscribeChunk = 256;  // channels per SUBSCRIBE on a resubscribe

// 0.75x .. 1.25x: workers that lost Redis together do not retry in step.
uint64_t jitter(uint64_t ms) {
  static uint64_t x = uv_hrtime() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return ms * 3 / 4 + (ms ? x % (ms / 2 + 1) : 0);
}

// hiredis' event hooks on a uv_poll_t. Like <hiredis/adapters/libuv.h>, but
// that one ignores poll errors, so a refused connect was never reported (it
// waited for the connect timeout): here an error lets hiredis find out.
struct UvEvents {
  redisAsyncContext* ac = nullptr;
  uv_poll_t poll{};
  int events = 0;
};

void uv_events_poll(uv_poll_t* h, int status, int events) {
  auto* e = static_cast<UvEvents*>(h->data);
  if (!e->ac) return;
  if (status < 0) {
    if (e->ac->c.flags & REDIS_CONNECTED) redisAsyncHandleRead(e->ac);
    else redisAsyncHandleWrite(e->ac);  // the connect's outcome
    return;
  }
  if (events & UV_READABLE) redisAsyncHandleRead(e->ac);
  if (e->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(e->ac);  // the read may have freed it
}

void uv_events_set(void* data, int add, int remove) {
  auto* e = static_cast<UvEvents*>(data);
  e->events = (e->events | add) & ~remove;
  if (e->events) uv_poll_start(&e->poll, e->events, uv_events_poll);
  else uv_poll_stop(&e->poll);
}

void uv_events_cleanup(void* data) {
  auto* e = static_cast<UvEvents*>(data);
  e->ac = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&e->poll),
           [](uv_handle_t* h) { std::unique_ptr<UvEvents> owned(static_cast<UvEvents*>(h->data)); });
}

bool uv_events_attach(redisAsyncContext* ac, uv_loop_t* loop) {
  if (ac->ev.data) return false;
  auto e = std::make_unique<UvEvents>();
  if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) return false;
  e->ac = ac;
  e->poll.data = e.get();
  ac->ev.addRead = [](void* d) { uv_events_set(d, UV_READABLE, 0); };
  ac->ev.delRead = [](void* d) { uv_events_set(d, 0, UV_READABLE); };
  ac->ev.addWrite = [](void* d) { uv_events_set(d, UV_WRITABLE, 0); };
  ac->ev.delWrite = [](void* d) { uv_events_set(d, 0, UV_WRITABLE); };
  ac->ev.cleanup = uv_events_cleanup;
  ac->ev.data = e.release();  // freed by uv_events_cleanup's close callback
  return true;
}

// Writes what is queued on a connected `ac`. After a whole write hiredis
// frees its output buffer and starts an empty one, which the next commands
// grow again (an allocation or more per loop turn); written here, the buffer
// is emptied in place and keeps its room. A short write, EAGAIN or an error
// is left to hiredis, as is a buffer grown large.
void write_now(redisAsyncContext* ac) {
  constexpr size_t kKeptOutput = 64 << 10;
  redisContext* c = &ac->c;
  const size_t len = sdslen(c->obuf);
  if (len > 0 && sdsalloc(c->obuf) <= kKeptOutput) {
    const ssize_t n = ::write(c->fd, c->obuf, len);
    if (n == ssize_t(len)) {
      sdssetlen(c->obuf, 0);  // sdsclear (sds.h declares it without C linkage)
      c->obuf[0] = '\0';
      // As hiredis after a whole write: no more writable events, replies read.
      if (ac->ev.delWrite) ac->ev.delWrite(ac->ev.data);
      if (ac->ev.addRead) ac->ev.addRead(ac->ev.data);
      return;
    }
    if (n > 0) {  // the rest to the front, for hiredis
      std::memmove(c->obuf, c->obuf + n, len - size_t(n));
      sdssetlen(c->obuf, len - size_t(n));
      c->obuf[len - size_t(n)] = '\0';
    }
  }
  redisAsyncHandleWrite(ac);
}

void append_resp_header(std::string& f, char kind, size_t n) {
  char num[24];
  f += kind;
  f.append(num, std::to_chars(num, num + sizeof num, n).ptr);  // (snprintf showed in connect profiles)
  f += "\r\n";
}

void append_resp_arg(std::string& f, std::string_view a) {
  append_resp_header(f, '$', a.size());
  f += a;
  f += "\r\n";
}

}  // namespace

bool attach_to_loop(redisAsyncContext* ac, uv_loop_t* loop) { return uv_events_attach(ac, loop); }

void AsyncContext::reset() {
  if (!ac_) return;
  redisAsyncContext* ac = ac_;
  ac_ = nullptr;
  ac->data = nullptr;  // its connect/disconnect callbacks now ignore it
  redisAsyncFree(ac);
}

RedisLink::RedisLink(uv_loop_t* loop, Timers& timers, const CoreConf::Redis& conf, Message on_message,
                     StateChange on_state)
    : loop_(loop), timers_(timers), conf_(conf), on_message_(std::move(on_message)), on_state_(std::move(on_state)) {}

RedisLink::~RedisLink() {
  destroying_ = true;
  cluster_.reset();
  cmd_.ac.reset();
  sub_.ac.reset();
}

void RedisLink::start() {
  if (started_) return;
  started_ = true;
  if (conf_.cluster()) {
    cluster_ = std::make_unique<RedisCluster>(loop_, timers_, conf_, on_message_, [this] { cluster_changed(); });
    for (auto& ch : channels_) cluster_->subscribe(ch);
    cluster_->start();
    return;
  }
  if (conf_.sentinel()) {  // the sentinels first: master_is() connects
    sentinel_ = std::make_unique<RedisSentinel>(loop_, timers_, conf_,
                                                [this](const std::string& host, int port) { master_is(host, port); });
    sentinel_->start();
    return;
  }
  connect(cmd_);
  connect(sub_);
}

bool RedisLink::ready() const {
  if (cluster_) return cluster_->ready();
  return cmd_.state == State::Up && sub_.state == State::Up;
}

bool RedisLink::commands_up() const {
  if (cluster_) return cluster_->commands_up();
  return cmd_.state == State::Up;
}

uint64_t RedisLink::dropped() const { return dropped_ + (cluster_ ? cluster_->dropped() : 0); }

size_t RedisLink::pending_bytes() const { return cluster_ ? cluster_->pending_bytes() : pending_bytes_; }

// The shards' connections and subscriptions, seen as one link's.
void RedisLink::cluster_changed() {
  if (destroying_) return;
  bool ready = cluster_->ready(), subscribed = cluster_->subscribed();
  if (cluster_subscribed_ && !subscribed) {
    cluster_subscribed_ = false;
    subscriber_event(false);
  }
  if (ready != cluster_ready_) {
    cluster_ready_ = ready;
    after_ready_change(!ready);
  }
  if (!cluster_subscribed_ && subscribed) {
    cluster_subscribed_ = true;
    subscriber_event(true);
  }
}

void RedisLink::master_is(const std::string& host, int port) {
  if (host == conf_.host && port == conf_.port) return;  // known: a lost connection is retried with backoff
  std::string was = conf_.host.empty() ? std::string("not known") : conf_.host + ":" + std::to_string(conf_.port);
  logf(LogLevel::Notice, "redis: master %s is at %s:%d (was %s)", conf_.master_name.c_str(), host.c_str(), port,
       was.c_str());
  for (Conn* c : {&cmd_, &sub_}) drop(*c, "the master moved");
  conf_.host = host;
  conf_.port = port;
  for (Conn* c : {&cmd_, &sub_}) {
    c->backoff = 0;
    connect(*c);
  }
}

void RedisLink::connect(Conn& c) {
  c.gen++;
  int64_t now = timers_.now();
  if (conf_.sentinel() && conf_.host.empty()) {  // no master known yet: master_is() connects
    c.state = State::Down;
    c.retry_at = now + int64_t(kBackoffMaxMs);
    rearm();
    return;
  }
  redisAsyncContext* ac = conf_.unix_path.empty() ? redisAsyncConnect(conf_.host.c_str(), conf_.port)
                                                  : redisAsyncConnectUnix(conf_.unix_path.c_str());
  if (!ac || ac->err || !uv_events_attach(ac, loop_)) {
    std::string why = ac && ac->err ? ac->errstr : "out of memory";
    if (ac) redisAsyncFree(ac);
    c.state = State::Connecting;  // so that lost() reports a failed attempt
    lost(c, why.c_str());
    return;
  }
  ac->c.reader->fn = pooled_replies();  // nothing parsed yet: the table may change
  ac->data = &c;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  c.ac.adopt(ac);
  c.state = State::Connecting;
  c.connect_deadline = now + int64_t(conf_.connect_timeout);
  rearm();
  // The handshake is queued at once (hiredis sends it when the socket is
  // connected); the PING reply says the connection is usable.
  auto check = [this, &c](const char* what) {
    return [this, &c, what](redisReply* r) {
      if (r && r->type == REDIS_REPLY_ERROR) {
        logf(LogLevel::Error, "redis: %s refused on the %s connection to %s: %s", what, c.role, conf_.text().c_str(),
             r->str);
        drop(c, what);
      }
    };
  };
  if (!conf_.password.empty()) raw_command(c, {"AUTH", conf_.password}, check("AUTH"), false);
  std::string db = std::to_string(conf_.db);
  if (&c == &cmd_ && conf_.db) raw_command(c, {"SELECT", db}, check("SELECT"), false);
  uint64_t gen = c.gen;
  // What a sentinel said may be stale (a failover under way): only a master will do.
  if (sentinel_)
    raw_command(c, {"ROLE"}, [this, &c, gen](redisReply* r) {
      if (!r || c.gen != gen || c.state != State::Connecting) return;
      bool master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING &&
                    std::string_view(r->element[0]->str, r->element[0]->len) == "master";
      if (master) return;
      logf(LogLevel::Warn, "redis: %s is not the master (ROLE); asking the sentinels again", conf_.text().c_str());
      drop(c, "not the master");
    }, false);
  c.told_noscript = false;
  if (&c == &cmd_) load_scripts(c);
  raw_command(c, {"PING"}, [this, &c, gen](redisReply* r) {
    if (r && r->type != REDIS_REPLY_ERROR && c.gen == gen && c.state == State::Connecting) connected(c);
  }, false);
}

// Before any command of ours: a Redis that restarted, or a replica promoted
// since (script caches are not replicated), knows them for the first EVALSHA.
// A refusal (SCRIPT renamed away) only means EVAL after each NOSCRIPT.
void RedisLink::load_scripts(Conn& c) {
  for (auto& s : lua::scripts()) raw_command(c, {"SCRIPT", "LOAD", s.body}, {}, false);
}

void RedisLink::connected(Conn& c) {
  bool was_ready = ready();
  int64_t now = timers_.now();
  if (c.down_since)
    logf(LogLevel::Notice, "redis: %s connection to %s is back after %.1fs", c.role, conf_.text().c_str(),
         double(now - c.down_since) / 1000);
  else
    logf(LogLevel::Info, "redis: %s connection to %s ready", c.role, conf_.text().c_str());
  c.state = State::Up;
  c.backoff = 0;
  c.failures = 0;
  c.down_since = 0;
  c.last_warn = 0;
  rearm();
  if (&c == &sub_) resubscribe();
  // Redis is back: the other connection need not wait out its backoff (while
  // our subscriber is away, the other nodes' broadcasts pass us by).
  Conn& other = &c == &cmd_ ? sub_ : cmd_;
  if (other.state == State::Down) connect(other);
  after_ready_change(was_ready);
}

void RedisLink::lost(Conn& c, const char* why) {
  bool was_ready = ready();
  int64_t now = timers_.now();
  State was = c.state;
  c.state = State::Down;
  c.gen++;  // callbacks of that connection still to come are stale
  if (&c == &cmd_) {
    sent_.clear();
    pending_bytes_ = 0;
  }
  c.backoff = c.backoff ? std::min(c.backoff * 2, kBackoffMaxMs) : kBackoffFirstMs;
  c.retry_at = now + int64_t(jitter(c.backoff));
  c.failures++;
  rearm();
  if (&c == &sub_) {
    resubscribed_last_.clear();
    subscriber_event(false);
  }
  if (was == State::Up) {
    c.down_since = now;
    c.last_warn = now;
    logf(LogLevel::Warn, "redis: lost the %s connection to %s (%s); reconnecting, local delivery goes on", c.role,
         conf_.text().c_str(), why);
  } else if (!c.last_warn) {
    if (!c.down_since) c.down_since = now;
    c.last_warn = now;
    logf(LogLevel::Warn, "redis: cannot connect the %s connection to %s (%s); retrying with backoff up to %llus",
         c.role, conf_.text().c_str(), why, (unsigned long long)(kBackoffMaxMs / 1000));
  } else if (now - c.last_warn >= kWarnEveryMs) {
    c.last_warn = now;
    logf(LogLevel::Warn, "redis: %s still unreachable after %llu attempts (%s)", conf_.text().c_str(),
         (unsigned long long)c.failures, why);
  }
  after_ready_change(was_ready);
  if (sentinel_) sentinel_->ask();  // after any loss: has the master moved?
}

void RedisLink::drop(Conn& c, const char* why) {
  if (c.state == State::Down) return;
  lost(c, why);
  c.ac.reset();  // pending callbacks run now (or when hiredis leaves its callback) with no reply
}

void RedisLink::after_ready_change(bool was_ready) {
  bool now_ready = ready();
  if (now_ready == was_ready || destroying_ || !on_state_) return;
  try {
    on_state_(now_ready);
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "redis: state handler: %s", e.what());
  }
}

void RedisLink::subscriber_event(bool subscribed) {
  if (destroying_ || !on_subscriber_) return;
  try {
    on_subscriber_(subscribed);
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "redis: subscriber handler: %s", e.what());
  }
}

void RedisLink::on_connect(const redisAsyncContext* ac, int status) {
  auto* c = static_cast<Conn*>(ac->data);
  if (!c || c->link->destroying_) return;
  if (status != REDIS_OK) {
    c->ac.forget();  // hiredis frees it when we return
    c->link->lost(*c, ac->errstr[0] ? ac->errstr : "connection failed");
    return;
  }
  redisEnableKeepAlive(&c->ac.get()->c);  // a silently dead peer is noticed too
}

void RedisLink::on_disconnect(const redisAsyncContext* ac, int status) {
  auto* c = static_cast<Conn*>(ac->data);
  if (!c || c->link->destroying_) return;
  c->ac.forget();  // hiredis frees it when we return
  c->link->lost(*c, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "connection error"));
}

void RedisLink::on_reply(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<Callback> cb(static_cast<Callback*>(privdata));
  Conn* c = cb->conn;
  RedisLink* self = c->link;
  if (self->destroying_) return;
  if (cb->counted && cb->gen == c->gen && !self->sent_.empty()) {
    self->pending_bytes_ -= std::min(self->pending_bytes_, self->sent_.front().bytes);
    self->sent_.pop_front();
  }
  auto* r = static_cast<redisReply*>(reply);
  if (r && r->type == REDIS_REPLY_ERROR && !cb->script.empty() && cb->gen == c->gen &&
      std::string_view(r->str, r->len).starts_with("NOSCRIPT") && self->resend_as_eval(cb))
    return;  // its reply is the EVAL's
  if (cb->fn) {
    try {
      cb->fn(r);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "redis: reply handler: %s", e.what());
    }
  } else if (cb->module_fn) {
    try {
      cb->module_fn(module_reply(r));
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "redis callback: %s", e.what());
    }
  }
  self->recycle(std::move(cb));
}

std::unique_ptr<RedisLink::Callback> RedisLink::new_callback() {
  if (spare_callbacks_.empty()) return std::make_unique<Callback>();
  std::unique_ptr<Callback> cb = std::move(spare_callbacks_.back());
  spare_callbacks_.pop_back();
  return cb;
}

void RedisLink::recycle(std::unique_ptr<Callback> cb) {
  constexpr size_t kSpareCallbacks = 256;
  constexpr size_t kKeptScriptArgs = 4096;
  if (spare_callbacks_.size() >= kSpareCallbacks) return;
  cb->fn = nullptr;
  cb->module_fn = nullptr;
  cb->script = {};
  if (cb->script_args.capacity() > kKeptScriptArgs) std::string().swap(cb->script_args);
  else cb->script_args.clear();
  spare_callbacks_.push_back(std::move(cb));
}

// Redis lost its scripts (SCRIPT FLUSH) since this connection loaded them:
// the script goes again, as EVAL (which loads it), on the same connection
// (the same node: the key decides). It comes after whatever was sent since,
// which, being EVALSHAs too, failed alike unless another client loaded the
// script in between.
bool RedisLink::resend_as_eval(std::unique_ptr<Callback>& cb) {
  Conn& c = *cb->conn;
  if (!c.ac || c.gen != cb->gen) return false;
  std::string& f = formatted_;
  f.clear();
  append_resp_header(f, '*', cb->script_argc);
  append_resp_arg(f, "EVAL");
  append_resp_arg(f, cb->script);
  f += cb->script_args;
  cb->script = {};
  if (redisAsyncFormattedCommand(c.ac.get(), on_reply, cb.get(), f.data(), f.size()) != REDIS_OK) return false;
  if (!std::exchange(c.told_noscript, true))
    logf(LogLevel::Notice, "redis: %s lost our Lua scripts (SCRIPT FLUSH?): sending them again", conf_.text().c_str());
  Callback* sent = cb.release();  // on_reply owns it now
  if (sent->counted) {
    size_t bytes = f.size();
    sent_.push_back({timers_.now(), bytes});
    pending_bytes_ += bytes;
    if (sent_.size() == 1) rearm();
  }
  return true;
}

void RedisLink::on_sub_reply(redisAsyncContext*, void* reply, void* privdata) {
  auto* c = static_cast<Conn*>(privdata);
  auto* r = static_cast<redisReply*>(reply);
  RedisLink* self = c->link;
  if (!r || self->destroying_ || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
  redisReply* kind = r->element[0];
  redisReply* ch = r->element[1];
  if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING) return;
  std::string_view verb(kind->str, kind->len);
  if (self->sharded_) {
    // Only the sharded kinds: the classic twins' replies (see
    // send_shard_subscription) are not news.
    // A classic PUBLISH on a twin (@socket.io/redis-emitter) is a message too.
    if (verb != "ssubscribe" && verb != "sunsubscribe" && verb != "smessage" && verb != "message") return;
    if (verb[0] == 's') verb.remove_prefix(1);
    if (verb == "subscribe" && self->on_confirmed_channel_)
      self->on_confirmed_channel_(std::string_view(ch->str, ch->len));
  }
  // Redis answers a connection's SUBSCRIBEs in order: the last one's answer
  // confirms them all.
  if (verb == self->resubscribed_verb_ && !self->resubscribed_last_.empty() &&
      std::string_view(ch->str, ch->len) == self->resubscribed_last_) {
    self->resubscribed_last_.clear();
    self->subscriber_event(true);
    return;
  }
  if (self->sharded_ && verb == "unsubscribe") {
    std::string channel(ch->str, ch->len);
    if (auto it = self->unsubscribing_.find(channel); it != self->unsubscribing_.end()) {
      self->unsubscribing_.erase(it);  // ours
      return;
    }
    // The shard dropped a channel we still want: its slot moved.
    if (self->channels_.erase(channel)) {
      redisAsyncCommand(self->sub_.ac.get(), on_sub_reply, &self->sub_, "UNSUBSCRIBE %b", channel.data(),
                        channel.size());  // the classic twin
      if (self->on_lost_channel_) self->on_lost_channel_(channel);
    }
    return;
  }
  // A pattern's: [pmessage, pattern, channel, body].
  if (verb == "pmessage" && r->elements >= 4) {
    ch = r->element[2];
    verb = "message";
  }
  if (verb != "message" || ch->type != REDIS_REPLY_STRING) return;
  redisReply* body = r->element[r->elements - 1];
  if (body->type != REDIS_REPLY_STRING) return;
  try {
    self->on_message_(std::string_view(ch->str, ch->len), std::string_view(body->str, body->len));
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "redis: message handler: %s", e.what());
  }
}

// The command in RESP, as hiredis would format it, into formatted_ (no
// allocation once it has grown); hiredis copies it into its output buffer.
bool RedisLink::raw_command(Conn& c, Argv argv, Reply reply, bool counted, redis::Callback* module_fn) {
  if (!c.ac) return false;
  size_t bytes = 16;
  std::string& f = formatted_;
  f.clear();
  append_resp_header(f, '*', argv.size());
  std::unique_ptr<Callback> cb = new_callback();
  // An EVALSHA of ours: what follows its SHA is kept, for a NOSCRIPT.
  size_t script_args_at = 0;
  if (argv.size() >= 2 && argv[0] == "EVALSHA") cb->script = lua::body_of(argv[1]);
  for (size_t i = 0; i < argv.size(); i++) {
    if (i == 2 && !cb->script.empty()) script_args_at = f.size();
    append_resp_arg(f, argv[i]);
    bytes += argv[i].size() + 16;
  }
  if (!cb->script.empty()) {
    cb->script_args.assign(f, script_args_at ? script_args_at : f.size());
    cb->script_argc = argv.size();
  }
  cb->conn = &c;
  cb->gen = c.gen;
  cb->fn = std::move(reply);
  cb->counted = counted;
  if (redisAsyncFormattedCommand(c.ac.get(), on_reply, cb.get(), f.data(), f.size()) != REDIS_OK) {
    recycle(std::move(cb));
    return false;
  }
  if (module_fn) cb->module_fn = std::move(*module_fn);  // sent: no reply comes before the loop runs again
  cb.release();  // on_reply owns it now
  if (f.capacity() > (64u << 10)) std::string().swap(f);  // a large value: not kept
  if (counted) {
    sent_.push_back({timers_.now(), bytes});
    pending_bytes_ += bytes;
    if (sent_.size() == 1) rearm();  // later commands: the timer follows the oldest when it fires
  }
  return true;
}

bool RedisLink::command(Argv argv, Reply reply) {
  if (cluster_) return cluster_->command(std::vector<std::string_view>(argv.begin(), argv.end()), std::move(reply));
  return send_counted(argv, std::move(reply), nullptr);
}

// On the command connection, within redis_max_pending: otherwise dropped
// (and counted).
bool RedisLink::send_counted(Argv argv, Reply reply, redis::Callback* module_fn) {
  size_t bytes = 16;
  for (auto a : argv) bytes += a.size() + 16;
  if (cmd_.state != State::Up || pending_bytes_ + bytes > conf_.max_pending ||
      !raw_command(cmd_, argv, std::move(reply), true, module_fn)) {
    dropped_++;
    return false;
  }
  return true;
}

bool RedisLink::module_command(Argv argv, redis::Callback& cb) {
  if (cluster_) {
    // The shards take a link callback: the module's is wrapped (and kept by the caller until sent).
    redis::Callback copy = cb;
    Reply wrapped;
    if (copy)
      wrapped = [copy = std::move(copy)](redisReply* r) {
        try {
          copy(module_reply(r));
        } catch (const std::exception& e) {
          logf(LogLevel::Error, "redis callback: %s", e.what());
        }
      };
    return cluster_->command(std::vector<std::string_view>(argv.begin(), argv.end()), std::move(wrapped));
  }
  return send_counted(argv, Reply(), &cb);
}

bool RedisLink::commands(const std::vector<std::vector<std::string_view>>& cmds, Reply reply) {
  if (cluster_) return cluster_->commands(cmds, std::move(reply));
  std::vector<Argv> spans(cmds.begin(), cmds.end());
  return commands(std::span<const Argv>(spans), std::move(reply));
}

bool RedisLink::commands(std::initializer_list<std::initializer_list<std::string_view>> cmds, Reply reply) {
  constexpr size_t kMax = 8;
  if (cluster_ || cmds.size() > kMax) {
    std::vector<std::vector<std::string_view>> v;
    for (auto& c : cmds) v.emplace_back(c);
    return commands(v, std::move(reply));
  }
  Argv spans[kMax];
  size_t n = 0;
  for (auto& c : cmds) spans[n++] = Argv(c.begin(), c.size());
  return commands(std::span<const Argv>(spans, n), std::move(reply));
}

bool RedisLink::commands(std::span<const Argv> cmds, Reply reply) {
  if (cluster_) {
    std::vector<std::vector<std::string_view>> v;
    for (auto c : cmds) v.emplace_back(c.begin(), c.end());
    return cluster_->commands(v, std::move(reply));
  }
  size_t bytes = 0;
  for (auto argv : cmds)
    for (auto a : argv) bytes += a.size() + 16;
  if (cmd_.state != State::Up || pending_bytes_ + bytes > conf_.max_pending) {
    dropped_++;
    return false;
  }
  for (size_t i = 0; i < cmds.size(); i++)
    if (!raw_command(cmd_, cmds[i], i + 1 == cmds.size() ? std::move(reply) : Reply(), true)) {
      dropped_++;
      return false;  // only when hiredis refuses: the connection is going away anyway
    }
  return true;
}

void RedisLink::send_subscription(const char* verb, const std::vector<std::string>& channels) {
  if (sub_.state != State::Up || channels.empty()) return;
  if (sharded_) return send_shard_subscription(verb, channels);
  std::vector<const char*> ptrs{verb};
  std::vector<size_t> lens{strlen(verb)};
  for (auto& ch : channels) {
    ptrs.push_back(ch.data());
    lens.push_back(ch.size());
  }
  // The callback stays registered per channel in hiredis: privdata is not owned.
  redisAsyncCommandArgv(sub_.ac.get(), on_sub_reply, &sub_, int(ptrs.size()), ptrs.data(), lens.data());
}

// hiredis 0.14 knows nothing of sharded Pub/Sub: the replies of a subscribed
// connection reach the callback registered for their channel by a classic
// SUBSCRIBE, whatever their kind. So each shard channel is SUBSCRIBEd too (a
// classic PUBLISH on it, from @socket.io/redis-emitter, is then received as
// well; the connection's first SUBSCRIBE, of a channel nobody uses, keeps it
// in subscribed mode), and the SSUBSCRIBE /
// SUNSUBSCRIBE bytes are appended without a callback of their own, whose
// reply hiredis would otherwise wait for in vain. One channel per command:
// the channels of one SSUBSCRIBE must share a slot.
void RedisLink::send_shard_subscription(const char* verb, const std::vector<std::string>& channels) {
  redisAsyncContext* ac = sub_.ac.get();
  bool sub = strcmp(verb, "SSUBSCRIBE") == 0;
  for (auto& ch : channels) {
    // Subscribing: the classic entry first (it routes the replies); leaving:
    // the classic one last, once the SUNSUBSCRIBE's reply has been routed.
    if (sub) redisAsyncCommand(ac, on_sub_reply, &sub_, "SUBSCRIBE %b", ch.data(), ch.size());
    const char* argv[] = {verb, ch.data()};
    size_t lens[] = {strlen(verb), ch.size()};
    char* cmd = nullptr;
    int len = redisFormatCommandArgv(&cmd, 2, argv, lens);
    if (len > 0) redisAppendFormattedCommand(&ac->c, cmd, size_t(len));
    redisFreeCommand(cmd);
    if (!sub) {
      unsubscribing_.insert(ch);
      redisAsyncCommand(ac, on_sub_reply, &sub_, "UNSUBSCRIBE %b", ch.data(), ch.size());
    }
  }
  if (ac->ev.addWrite) ac->ev.addWrite(ac->ev.data);
}

void RedisLink::subscribe(const std::string& channel) {
  if (!channels_.insert(channel).second) return;
  if (cluster_) cluster_->subscribe(channel);
  else send_subscription(sharded_ ? "SSUBSCRIBE" : "SUBSCRIBE", {channel});
}

void RedisLink::unsubscribe(const std::string& channel) {
  if (!channels_.erase(channel)) return;
  if (cluster_) cluster_->unsubscribe(channel);
  else send_subscription(sharded_ ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", {channel});
}

void RedisLink::psubscribe(const std::string& pattern) {
  if (cluster_ || sharded_ || !patterns_.insert(pattern).second) return;
  send_subscription("PSUBSCRIBE", {pattern});
}

void RedisLink::punsubscribe(const std::string& pattern) {
  if (!patterns_.erase(pattern)) return;
  send_subscription("PUNSUBSCRIBE", {pattern});
}

void RedisLink::resubscribe() {
  unsubscribing_.clear();
  if (sharded_)
    redisAsyncCommand(sub_.ac.get(), on_sub_reply, &sub_, "SUBSCRIBE %s", (conf_.key_prefix + "#shard-link#").c_str());
  // Patterns first: Redis confirms in order, so the last channel's answer
  // (or the last pattern's, without channels) confirms everything.
  if (!patterns_.empty()) send_subscription("PSUBSCRIBE", {patterns_.begin(), patterns_.end()});
  if (channels_.empty() && patterns_.empty()) return subscriber_event(true);
  resubscribed_verb_ = channels_.empty() ? "psubscribe" : "subscribe";
  resubscribed_last_ = channels_.empty() ? *patterns_.rbegin() : *channels_.rbegin();
  if (channels_.empty()) return;
  std::vector<std::string> chunk;
  for (auto& ch : channels_) {
    chunk.push_back(ch);
    if (chunk.size() == kSubscribeChunk) {
      send_subscription(sharded_ ? "SSUBSCRIBE" : "SUBSCRIBE", chunk);
      chunk.clear();
    }
  }
  send_subscription(sharded_ ? "SSUBSCRIBE" : "SUBSCRIBE", chunk);
}

void RedisLink::flush() {
  if (cluster_) return cluster_->flush();
  for (Conn* c : {&cmd_, &sub_}) {
    redisAsyncContext* ac = c->ac.get();
    if (c->state == State::Up && ac && sdslen(ac->c.obuf) > 0) write_now(ac);
  }
}

void RedisLink::on_timer() {
  int64_t now = timers_.now();
  for (Conn* c : {&cmd_, &sub_}) {
    if (c->state == State::Down && now >= c->retry_at) connect(*c);
    else if (c->state == State::Connecting && now >= c->connect_deadline) drop(*c, "connect timed out");
  }
  if (cmd_.state == State::Up && !sent_.empty() && now - sent_.front().at >= int64_t(conf_.command_timeout))
    drop(cmd_, "no reply within redis_command_timeout");
  rearm();
}

void RedisLink::rearm() {
  if (!started_ || destroying_) return;
  int64_t next = INT64_MAX;
  for (Conn* c : {&cmd_, &sub_}) {
    if (c->state == State::Down) next = std::min(next, c->retry_at);
    else if (c->state == State::Connecting) next = std::min(next, c->connect_deadline);
  }
  if (cmd_.state == State::Up && !sent_.empty()) next = std::min(next, sent_.front().at + int64_t(conf_.command_timeout));
  if (next == INT64_MAX) timer_.cancel();
  else if (!timer_.armed() || timer_.deadline() != next) timer_.arm_at(next);
}

}  // namespace dr::cluster
