// auth_jwt's live token lifetimes (module/auth_jwt/expiry.cc) on the core's
// timer facility with an injected clock: the warning refresh_before ahead, the
// disconnect at exp + leeway, a refresh moving both for every socket of the
// user on the connection, other users and connections untouched, and the
// clock check that holds even before the timer has run.
#include "expiry.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/module_timeout.h"
#include "core/timers.h"

namespace dr {
namespace {

using auth_jwt::Expiry;

int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Only what Expiry uses does anything.
class TestWorker final : public Worker {
 public:
  int64_t now = 1'000'000;
  Timers timers{[this] { return now; }};
  int expired_count = 0;

  void advance(int64_t ms) {
    now += ms;
    timers.run_due();
  }

  uv_loop_t* loop() override { return nullptr; }
  int slot() const override { return 0; }
  int64_t now_ms() const override { return now; }
  std::unique_ptr<Timeout> timeout(std::function<void()> fn) override {
    return std::make_unique<ModuleTimeout>(timers, std::move(fn));  // as the worker gives it
  }
  std::unique_ptr<Timeout> timeout_fn(void (*fn)(void*), void* arg) override {
    return std::make_unique<ModuleFnTimeout>(timers, fn, arg);
  }
  void post(std::function<void()> fn) override { timers.post(std::move(fn)); }
  const ModuleConf* conf(const Module&, std::string_view) const override { return nullptr; }
  std::vector<std::string> namespaces() const override { return {"/", "/chat"}; }
  void use_connect(std::string_view, ConnectHook, ConnectPhase) override {}
  void use_event(std::string_view, EventMiddleware, EventPhase) override {}
  void on_connection(std::string_view, ConnectionHandler) override {}
  void on(std::string_view, std::string_view, EventHandler) override {}
  void on_disconnect(std::string_view, DisconnectHandler) override {}
  void on_room(std::string_view, RoomHandler) override {}
  void on_transport(std::string_view, ConnectionHandler) override {}
  void on_room_check(std::string_view, RoomGuard) override {}
  void on_event_sent(std::string_view, SentHandler) override {}
  void broadcast(const BroadcastOptions&, std::string_view, Payload) override {}
  std::vector<std::weak_ptr<Socket>> local_sockets(std::string_view, std::string_view) override { return {}; }
  void route(Listener, std::string_view, std::string_view, HttpHandler) override {}
  void metric_declare(std::string_view, MetricType, std::string_view) override {}
  void metric_add(std::string_view name, std::string_view, int64_t delta) override {
    if (name == "depth_realtime_auth_expired_total") expired_count += int(delta);
  }
  std::vector<MetricSample> metric_read(std::string_view) const override { return {}; }
  std::span<std::byte> shared_zone(std::string_view) override { return {}; }
};

// A connected namespace socket that records what it was sent; its disconnect
// comes back to Expiry as the core's disconnect handlers would bring it.
class TestSocket final : public Socket, public std::enable_shared_from_this<TestSocket> {
 public:
  TestSocket(Expiry& e, std::string id, std::string nsp, std::string client, std::string user)
      : expiry_(e), id_(std::move(id)), nsp_(std::move(nsp)), client_(std::move(client)) {
    data_.emplace_back("userId", std::move(user));
  }
  std::vector<std::string> sent;  // "event json"
  bool disconnected = false;

  const std::string& id() const override { return id_; }
  const std::string& nsp() const override { return nsp_; }
  const Handshake& handshake() const override { return hs_; }
  const json_t* auth() const override { return nullptr; }
  bool connected() const override { return !disconnected; }
  void set(std::string_view k, std::string v) override { data_.emplace_back(std::string(k), std::move(v)); }
  const std::string* get(std::string_view k) const override {
    for (auto& [key, v] : data_)
      if (key == k) return &v;
    return nullptr;
  }
  const std::vector<std::pair<std::string, std::string>>& data() const override { return data_; }
  void emit(std::string_view event, Payload args, bool) override {
    sent.push_back(std::string(event) + " " + json_text(json_array_get(args.args.get(), 0)));
  }
  void emit_with_ack(std::string_view, Payload, uint64_t, AckCallback) override {}
  void ack(uint64_t, Payload) override {}
  void join(std::string_view) override {}
  void leave(std::string_view) override {}
  bool in_room(std::string_view) const override { return false; }
  std::vector<std::string> rooms() const override { return {}; }
  void disconnect(bool) override {
    if (disconnected) return;
    disconnected = true;
    expiry_.disconnected(*this);
  }
  std::weak_ptr<Socket> weak() override { return weak_from_this(); }
  std::shared_ptr<void> delay_next_events() override { return nullptr; }
  Resume defer(Event&) override { return [](bool) {}; }
  const std::string& client_id() const override { return client_; }
  std::string_view transport() const override { return "websocket"; }
  std::shared_ptr<void>& context_slot(uint32_t index) override {
    if (contexts_.size() <= index) contexts_.resize(index + 1);
    return contexts_[index];
  }
  const void* context_value(uint32_t index) const override {
    return index < contexts_.size() ? contexts_[index].get() : nullptr;
  }
  std::vector<std::shared_ptr<void>> contexts_;

 private:
  Expiry& expiry_;
  std::string id_, nsp_, client_;
  Handshake hs_;
  std::vector<std::pair<std::string, std::string>> data_;
};

struct AuthExpiry : ::testing::Test {
  TestWorker w;
  Expiry expiry{w, [] {
                  Expiry::Settings st;
                  st.refresh_before_ms = 2000;
                  st.leeway_ms = 500;
                  return st;
                }};
  // An exp `ms` from now on the wall clock.
  double exp_in(int64_t ms) const { return double(wall_ms() + ms) / 1000.0; }

  std::shared_ptr<TestSocket> connect(const std::string& id, const std::string& nsp, const std::string& client,
                                      const std::string& user, std::optional<double> exp) {
    auto s = std::make_shared<TestSocket>(expiry, id, nsp, client, user);
    expiry.admitted(*s, exp);
    expiry.connected(*s);
    return s;
  }
};

size_t count(const std::vector<std::string>& v, const std::string& prefix) {
  size_t n = 0;
  for (auto& x : v) n += x.rfind(prefix, 0) == 0;
  return n;
}

TEST_F(AuthExpiry, WarnsRefreshBeforeAheadThenDisconnectsAtExpPlusLeeway) {
  auto s = connect("s1", "/chat", "c1", "alice", exp_in(10'000));
  w.advance(7'900);  // 2.1 s before exp (a few ms of wall clock may have passed)
  EXPECT_EQ(count(s->sent, "auth:expiring"), 0u);
  w.advance(200);
  ASSERT_EQ(count(s->sent, "auth:expiring"), 1u);
  EXPECT_NE(s->sent[0].find("\"expiresAt\""), std::string::npos);
  w.advance(2'000);  // past exp, inside the leeway
  EXPECT_FALSE(s->disconnected);
  EXPECT_FALSE(expiry.expired(*s));
  w.advance(600);  // past exp + leeway
  EXPECT_TRUE(s->disconnected);
  EXPECT_EQ(count(s->sent, "error {\"code\":\"TOKEN_EXPIRED\""), 1u);
  EXPECT_EQ(w.expired_count, 1);
  EXPECT_EQ(count(s->sent, "auth:expiring"), 1u) << "warned once";
}

TEST_F(AuthExpiry, LessThanRefreshBeforeLeftWarnsAtOnce) {
  auto s = connect("s1", "/", "c1", "alice", exp_in(1'000));
  w.advance(0);
  EXPECT_EQ(count(s->sent, "auth:expiring"), 1u);
}

TEST_F(AuthExpiry, TheClockCheckHoldsBeforeTheTimerRuns) {
  auto s = connect("s1", "/", "c1", "alice", exp_in(3'000));
  w.now += 4'000;  // the clock moved, no timer has run yet
  EXPECT_TRUE(expiry.expired(*s));
  EXPECT_FALSE(s->disconnected);
  expiry.expire(*s);
  EXPECT_TRUE(s->disconnected);
}

TEST_F(AuthExpiry, ARefreshMovesTheLifetimeOfEverySocketOfTheUserOnThatConnection) {
  auto root = connect("r", "/", "c1", "alice", exp_in(5'000));
  auto chat = connect("c", "/chat", "c1", "alice", exp_in(5'000));
  auto other_conn = connect("o", "/chat", "c2", "alice", exp_in(5'000));
  auto other_user = connect("b", "/chat", "c1", "bob", exp_in(5'000));
  auto at = expiry.refreshed(*chat, exp_in(60'000));
  ASSERT_TRUE(at.has_value());
  EXPECT_NEAR(double(*at), double(wall_ms() + 60'000), 50);
  w.advance(6'000);
  EXPECT_FALSE(root->disconnected);
  EXPECT_FALSE(chat->disconnected);
  EXPECT_TRUE(other_conn->disconnected);
  EXPECT_TRUE(other_user->disconnected);
  EXPECT_EQ(count(root->sent, "auth:expiring"), 0u) << "the refresh came before the old warning was due";
  w.advance(60'000);
  EXPECT_TRUE(root->disconnected);
  EXPECT_TRUE(chat->disconnected);
  EXPECT_EQ(w.expired_count, 4);
}

TEST_F(AuthExpiry, ATokenWithoutExpNeverExpiresAndArmsNothing) {
  auto s = connect("s1", "/", "c1", "alice", std::nullopt);
  EXPECT_EQ(w.timers.size(), 0u);
  w.advance(365LL * 86'400'000);
  EXPECT_FALSE(s->disconnected);
  EXPECT_TRUE(s->sent.empty());
}

TEST_F(AuthExpiry, ALaterTokenOnAnotherNamespaceExtendsTheConnectionsLifetime) {
  auto root = connect("r", "/", "c1", "alice", exp_in(3'000));
  auto chat = connect("c", "/chat", "c1", "alice", exp_in(30'000));
  w.advance(4'000);
  EXPECT_FALSE(root->disconnected);
  EXPECT_FALSE(chat->disconnected);
}

TEST_F(AuthExpiry, ADisconnectedSocketLeavesNothingArmed) {
  auto s = connect("s1", "/", "c1", "alice", exp_in(10'000));
  EXPECT_EQ(w.timers.size(), 1u);
  s->disconnect(false);
  EXPECT_EQ(w.timers.size(), 0u);
  w.advance(20'000);
  EXPECT_TRUE(s->sent.empty());
}

// The core tells of every disconnect; should a socket go without, its
// lifetime holds no later socket of the same user and connection.
TEST_F(AuthExpiry, ASocketGoneWithoutADisconnectLendsItsLifetimeToNoOne) {
  auto gone = connect("g", "/", "c1", "alice", exp_in(30'000));
  gone.reset();
  auto s = connect("s", "/chat", "c1", "alice", exp_in(3'000));
  w.advance(4'000);
  EXPECT_TRUE(s->disconnected);
  EXPECT_EQ(w.expired_count, 1);
  w.advance(30'000);
  EXPECT_EQ(w.timers.size(), 0u) << "nothing left armed";
}

}  // namespace
}  // namespace dr
