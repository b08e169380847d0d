#include "cluster/redis_sentinel.h"

#include <algorithm>
#include <charconv>
#include <string>

#include "depth-realtime/module.h"

namespace dr::cluster {
namespace {

constexpr uint64_t kBackoffFirstMs = 200;
constexpr uint64_t kBackoffMaxMs = 5000;
constexpr int64_t kWarnEveryMs = 60000;

uint64_t next_backoff(uint64_t b) { return b ? std::min(b * 2, kBackoffMaxMs) : kBackoffFirstMs; }

bool is_string(const redisReply* r) { return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS); }
std::string_view text(const redisReply* r) { return is_string(r) ? std::string_view(r->str, r->len) : std::string_view(); }

bool parse_port(std::string_view s, int& port) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v <= 0 || v > 65535) return false;
  port = v;
  return true;
}

}  // namespace

RedisSentinel::RedisSentinel(uv_loop_t* loop, Timers& timers, const CoreConf::Redis& conf, Master on_master)
    : loop_(loop),
      conf_(conf),
      on_master_(std::move(on_master)),
      timers_(timers),
      ask_(this,
           [](void* p) {
             auto* c = static_cast<Conn*>(p);
             logf(LogLevel::Warn, "redis: sentinel %s:%d did not answer within redis_connect_timeout",
                  c->self->at(*c).host.c_str(), c->self->at(*c).port);
             c->self->asked(false);
           }),
      sub_(this, [](void* p) { static_cast<Conn*>(p)->self->sub_lost("no answer within redis_connect_timeout"); }),
      ask_retry_(timers_, [](void* p) { static_cast<RedisSentinel*>(p)->ask(); }, this),
      sub_retry_(timers_, [](void* p) { static_cast<RedisSentinel*>(p)->subscribe(); }, this) {}

RedisSentinel::~RedisSentinel() {
  destroying_ = true;
  ask_.ac.reset();
  sub_.ac.reset();
}

void RedisSentinel::start() {
  ask();
  subscribe();
}

bool RedisSentinel::parse_switch(std::string_view body, std::string_view name, std::string& host, int& port) {
  std::string_view f[5];
  size_t n = 0;
  while (n < 5) {
    size_t sp = body.find(' ');
    f[n++] = body.substr(0, sp);
    if (sp == std::string_view::npos) break;
    body.remove_prefix(sp + 1);
  }
  if (n != 5 || f[0] != name || f[3].empty() || !parse_port(f[4], port)) return false;
  host.assign(f[3]);
  return true;
}

bool RedisSentinel::open(Conn& c, const char* purpose) {
  c.ac.reset();
  const auto& e = at(c);
  redisAsyncContext* ac = redisAsyncConnect(e.host.c_str(), e.port);
  if (!ac || ac->err || !attach_to_loop(ac, loop_)) {
    logf(LogLevel::Warn, "redis: cannot open the %s connection to sentinel %s:%d: %s", purpose, e.host.c_str(), e.port,
         ac && ac->err ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    return false;
  }
  ac->data = &c;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  c.ac.adopt(ac);
  c.deadline.arm_in(int64_t(conf_.connect_timeout));
  if (!conf_.sentinel_password.empty()) {
    const char* argv[] = {"AUTH", conf_.sentinel_password.c_str()};
    size_t lens[] = {4, conf_.sentinel_password.size()};
    redisAsyncCommandArgv(ac, on_auth, &c, 2, argv, lens);
  }
  return true;
}

void RedisSentinel::retire(Conn& c) {
  c.deadline.cancel();
  c.ac.reset();  // inside one of its callbacks hiredis frees it on return
}

// ------------------------------------------------------------------ asking

void RedisSentinel::ask() {
  if (asking_ || destroying_) return;
  asking_ = true;
  tried_ = 0;
  ask_retry_.cancel();
  ask_next();
}

void RedisSentinel::ask_next() {
  size_t n = conf_.sentinels.size();
  while (tried_ < n) {
    tried_++;
    if (!open(ask_, "query")) {
      ask_.index = (ask_.index + 1) % n;
      continue;
    }
    const char* argv[] = {"SENTINEL", "get-master-addr-by-name", conf_.master_name.c_str()};
    size_t lens[] = {8, 23, conf_.master_name.size()};
    redisAsyncCommandArgv(ask_.ac.get(), on_answer, &ask_, 3, argv, lens);
    return;
  }
  // A whole round without an answer: again later.
  asking_ = false;
  ask_backoff_ = next_backoff(ask_backoff_);
  ask_retry_.arm_in(int64_t(ask_backoff_));
  int64_t now = timers_.now();
  if (!last_warn_ || now - last_warn_ >= kWarnEveryMs) {
    last_warn_ = now;
    logf(LogLevel::Warn, "redis: none of the %zu sentinels told where master %s is; asking again", n,
         conf_.master_name.c_str());
  }
}

void RedisSentinel::asked(bool ok) {
  retire(ask_);
  if (ok) {
    asking_ = false;
    ask_backoff_ = 0;
    last_warn_ = 0;
    return;
  }
  ask_.index = (ask_.index + 1) % conf_.sentinels.size();
  ask_next();
}

void RedisSentinel::on_answer(redisAsyncContext* ac, void* reply, void* privdata) {
  auto* c = static_cast<Conn*>(privdata);
  auto* r = static_cast<redisReply*>(reply);
  RedisSentinel* self = c->self;
  if (self->destroying_ || c->ac.get() != ac || !r) return;  // stale, or the connection's end says why
  const auto& e = self->at(*c);
  int port = 0;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && is_string(r->element[0]) && r->element[0]->len > 0 &&
      parse_port(text(r->element[1]), port)) {
    std::string host(text(r->element[0]));
    self->asked(true);
    try {
      self->on_master_(host, port);
    } catch (const std::exception& ex) {
      logf(LogLevel::Error, "redis: sentinel handler: %s", ex.what());
    }
    return;
  }
  if (r->type == REDIS_REPLY_ERROR)
    logf(LogLevel::Warn, "redis: sentinel %s:%d refused get-master-addr-by-name: %s", e.host.c_str(), e.port, r->str);
  else
    logf(LogLevel::Warn, "redis: sentinel %s:%d does not know master %s", e.host.c_str(), e.port,
         self->conf_.master_name.c_str());
  self->asked(false);
}

void RedisSentinel::on_auth(redisAsyncContext* ac, void* reply, void* privdata) {
  auto* c = static_cast<Conn*>(privdata);
  auto* r = static_cast<redisReply*>(reply);
  RedisSentinel* self = c->self;
  if (self->destroying_ || c->ac.get() != ac || !r || r->type != REDIS_REPLY_ERROR) return;
  logf(LogLevel::Error, "redis: sentinel %s:%d refused AUTH (sentinel_password): %s", self->at(*c).host.c_str(),
       self->at(*c).port, r->str);
  if (c == &self->ask_) self->asked(false);
  else self->sub_lost("AUTH refused");
}

// ------------------------------------------------------- +switch-master

void RedisSentinel::subscribe() {
  if (destroying_) return;
  sub_retry_.cancel();
  if (!open(sub_, "subscriber")) return sub_lost("cannot connect");
  const char* argv[] = {"SUBSCRIBE", "+switch-master"};
  size_t lens[] = {9, 14};
  // hiredis keeps the callback for the channel: privdata is not owned.
  redisAsyncCommandArgv(sub_.ac.get(), on_sub, &sub_, 2, argv, lens);
}

void RedisSentinel::sub_lost(const char* why) {
  retire(sub_);
  const auto& e = at(sub_);
  if (sub_up_)
    logf(LogLevel::Warn, "redis: lost the +switch-master subscription on sentinel %s:%d (%s); trying the next one",
         e.host.c_str(), e.port, why);
  sub_up_ = false;
  sub_.index = (sub_.index + 1) % conf_.sentinels.size();
  sub_backoff_ = next_backoff(sub_backoff_);
  sub_retry_.arm_in(int64_t(sub_backoff_));
  ask();  // a switch may have passed while nobody listened
}

void RedisSentinel::on_sub(redisAsyncContext* ac, void* reply, void* privdata) {
  auto* c = static_cast<Conn*>(privdata);
  auto* r = static_cast<redisReply*>(reply);
  RedisSentinel* self = c->self;
  if (self->destroying_ || c->ac.get() != ac || !r || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
  std::string_view kind = text(r->element[0]);
  if (kind == "subscribe") {
    c->deadline.cancel();
    self->sub_up_ = true;
    self->sub_backoff_ = 0;
    logf(LogLevel::Info, "redis: following master %s through sentinel %s:%d", self->conf_.master_name.c_str(),
         self->at(*c).host.c_str(), self->at(*c).port);
    self->ask();  // what changed between the first answer and this subscription
    return;
  }
  if (kind != "message") return;
  std::string host;
  int port = 0;
  if (!parse_switch(text(r->element[2]), self->conf_.master_name, host, port)) return;
  logf(LogLevel::Notice, "redis: sentinel %s:%d: master %s switched to %s:%d", self->at(*c).host.c_str(),
       self->at(*c).port, self->conf_.master_name.c_str(), host.c_str(), port);
  try {
    self->on_master_(host, port);
  } catch (const std::exception& ex) {
    logf(LogLevel::Error, "redis: sentinel handler: %s", ex.what());
  }
}

// --------------------------------------------------------- connections

void RedisSentinel::on_connect(const redisAsyncContext* ac, int status) {
  auto* c = static_cast<Conn*>(ac->data);
  if (!c || c->self->destroying_) return;
  if (status == REDIS_OK) {
    redisEnableKeepAlive(&c->ac.get()->c);  // a silently dead sentinel is noticed too
    return;
  }
  c->ac.forget();  // hiredis frees it when we return
  std::string why = ac->errstr[0] ? ac->errstr : "connection failed";
  RedisSentinel* self = c->self;
  if (c == &self->ask_) {
    logf(LogLevel::Warn, "redis: cannot reach sentinel %s:%d (%s)", self->at(*c).host.c_str(), self->at(*c).port,
         why.c_str());
    self->asked(false);
  } else {
    self->sub_lost(why.c_str());
  }
}

void RedisSentinel::on_disconnect(const redisAsyncContext* ac, int status) {
  auto* c = static_cast<Conn*>(ac->data);
  if (!c || c->self->destroying_) return;
  c->ac.forget();  // hiredis frees it when we return
  std::string why = status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "connection error");
  RedisSentinel* self = c->self;
  if (c == &self->ask_) self->asked(false);
  else self->sub_lost(why.c_str());
}

}  // namespace dr::cluster
