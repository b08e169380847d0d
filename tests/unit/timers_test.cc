// The timer facility on an injected clock (no sleeping): order, moving and
// cancelling, callbacks that arm or cancel timers, and an Engine.IO session's
// heartbeat and connect timeout to the millisecond.
#include "core/timers.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/module_timeout.h"
#include "eio/session.h"

namespace dr {
namespace {

struct Clocked {
  int64_t now = 1000;
  Timers timers{[this] { return now; }};
  std::vector<std::string> fired;

  // A timer that records its name when it fires.
  struct Named {
    Named(Clocked& c, std::string name)
        : owner(c), name(std::move(name)), timer(c.timers, [](void* p) { static_cast<Named*>(p)->fire(); }, this) {}
    void fire() { owner.fired.push_back(name); }
    Clocked& owner;
    std::string name;
    Timer timer;
  };
  void advance_to(int64_t t) {
    now = t;
    timers.run_due();
  }
};

TEST(Timers, FireInDeadlineOrderAndOnlyWhenDue) {
  Clocked c;
  Clocked::Named a(c, "a"), b(c, "b"), d(c, "d");
  b.timer.arm_at(1200);
  a.timer.arm_at(1100);
  d.timer.arm_at(1300);
  EXPECT_EQ(c.timers.next_deadline(), 1100);
  c.advance_to(1099);
  EXPECT_TRUE(c.fired.empty());
  c.advance_to(1200);
  EXPECT_EQ(c.fired, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(a.timer.armed());
  EXPECT_TRUE(d.timer.armed());
  c.advance_to(5000);
  EXPECT_EQ(c.fired, (std::vector<std::string>{"a", "b", "d"}));
  EXPECT_EQ(c.timers.size(), 0u);
}

TEST(Timers, EqualDeadlinesRunInArmOrder) {
  Clocked c;
  std::vector<std::unique_ptr<Clocked::Named>> ts;
  for (int i = 0; i < 20; i++) {
    ts.push_back(std::make_unique<Clocked::Named>(c, std::to_string(i)));
    ts.back()->timer.arm_at(1500);
  }
  c.advance_to(1500);
  ASSERT_EQ(c.fired.size(), 20u);
  for (int i = 0; i < 20; i++) EXPECT_EQ(c.fired[i], std::to_string(i));
}

TEST(Timers, MovingAndCancelling) {
  Clocked c;
  Clocked::Named a(c, "a"), b(c, "b");
  a.timer.arm_at(1100);
  b.timer.arm_at(1200);
  a.timer.arm_at(1300);  // moved later
  b.timer.cancel();
  c.advance_to(1250);
  EXPECT_TRUE(c.fired.empty());
  c.advance_to(1300);
  EXPECT_EQ(c.fired, std::vector<std::string>{"a"});
  {
    Clocked::Named gone(c, "gone");
    gone.timer.arm_at(1400);
    EXPECT_EQ(c.timers.size(), 1u);
  }  // destroyed: cancelled
  EXPECT_EQ(c.timers.size(), 0u);
  c.advance_to(2000);
  EXPECT_EQ(c.fired, std::vector<std::string>{"a"});
}

TEST(Timers, ArmInCountsFromTheClock) {
  Clocked c;
  Clocked::Named a(c, "a");
  c.now = 5000;
  a.timer.arm_in(25);
  EXPECT_EQ(a.timer.deadline(), 5025);
  c.advance_to(5024);
  EXPECT_TRUE(c.fired.empty());
  c.advance_to(5025);
  EXPECT_EQ(c.fired.size(), 1u);
}

// A callback may re-arm itself and cancel or arm others.
TEST(Timers, CallbacksMayArmAndCancel) {
  Clocked c;
  struct Periodic {
    Clocked& c;
    int runs = 0;
    Timer timer;
    Timer* victim = nullptr;
    explicit Periodic(Clocked& c) : c(c), timer(c.timers, [](void* p) { static_cast<Periodic*>(p)->tick(); }, this) {}
    void tick() {
      runs++;
      if (victim) victim->cancel();
      if (runs < 5) timer.arm_at(timer.deadline() + 100);  // a cadence that does not drift
    }
  } p(c);
  Clocked::Named later(c, "later");
  p.timer.arm_at(1000);
  later.timer.arm_at(1000);  // due at the same time, but cancelled by the first run
  p.victim = &later.timer;
  c.advance_to(1000);
  EXPECT_EQ(p.runs, 1);
  EXPECT_TRUE(c.fired.empty());
  c.advance_to(1399);
  EXPECT_EQ(p.runs, 4);
  c.advance_to(10000);
  EXPECT_EQ(p.runs, 5);
  EXPECT_EQ(c.timers.size(), 0u);
}

// The heap stays a heap under random arms, moves and cancels.
TEST(Timers, RandomOperationsFireEverythingInOrder) {
  Clocked c;
  std::mt19937 rng(42);
  std::vector<std::unique_ptr<Clocked::Named>> ts;
  for (int i = 0; i < 500; i++) ts.push_back(std::make_unique<Clocked::Named>(c, std::to_string(i)));
  std::vector<int64_t> expected(500, 0);
  for (int round = 0; round < 5000; round++) {
    int i = int(rng() % 500);
    if (rng() % 4 == 0) {
      ts[i]->timer.cancel();
      expected[i] = 0;
    } else {
      int64_t d = 2000 + int64_t(rng() % 10000);
      ts[i]->timer.arm_at(d);
      expected[i] = d;
    }
  }
  std::vector<std::pair<int64_t, std::string>> want;
  for (int i = 0; i < 500; i++)
    if (expected[i]) want.emplace_back(expected[i], std::to_string(i));
  c.advance_to(20000);
  ASSERT_EQ(c.fired.size(), want.size());
  // Deadlines never go backwards.
  int64_t last = 0;
  for (auto& name : c.fired) {
    int64_t d = expected[std::stoi(name)];
    EXPECT_LE(last, d);
    last = d;
  }
}

// ------------------------------------- timers owning callbacks, posted calls

TEST(CallbackTimer, RearmsFromItsCallbackAndMayBeDestroyedThere) {
  Clocked c;
  int runs = 0;
  std::unique_ptr<CallbackTimer> t;
  t = std::make_unique<CallbackTimer>(c.timers, [&] {
    if (++runs < 3) t->arm_in(50);  // a repeating timer re-arms itself
    else t.reset();                 // and may go from inside its own callback
  });
  t->arm_in(50);
  c.advance_to(1049);
  EXPECT_EQ(runs, 0);
  c.advance_to(1050);
  EXPECT_EQ(runs, 1);
  c.advance_to(1100);
  EXPECT_EQ(runs, 2);
  c.advance_to(1150);
  EXPECT_EQ(runs, 3);
  EXPECT_EQ(t, nullptr);
  EXPECT_EQ(c.timers.size(), 0u);
}

TEST(CallbackTimer, AnExceptionStaysInsideAndTheTimerLives) {
  Clocked c;
  int runs = 0;
  CallbackTimer t(c.timers, [&] {
    runs++;
    throw std::runtime_error("module bug");
  });
  t.arm_in(10);
  c.advance_to(1010);
  t.arm_in(10);  // its callback is still there
  c.advance_to(1020);
  EXPECT_EQ(runs, 2);
}

TEST(CallbackTimer, DestroyedBeforeItsDeadlineNeverRuns) {
  Clocked c;
  int runs = 0;
  auto t = std::make_unique<CallbackTimer>(c.timers, [&] { runs++; });
  t->arm_in(10);
  t.reset();
  c.advance_to(2000);
  EXPECT_EQ(runs, 0);
  EXPECT_EQ(c.timers.size(), 0u);
}

// Worker::timeout_fn's timeout: a function and its argument.
struct FnCounter {
  int runs = 0;
  bool fail = false;
  std::unique_ptr<Timeout> timeout;
  static void fire(void* p) {
    auto* self = static_cast<FnCounter*>(p);
    self->runs++;
    if (self->fail) throw std::runtime_error("module bug");
    if (self->runs == 3) self->timeout.reset();  // may go from inside its own callback
  }
};

TEST(ModuleFnTimeout, RunsItsFunctionOncePerArmAndMayBeDestroyedThere) {
  Clocked c;
  FnCounter f;
  f.timeout = std::make_unique<ModuleFnTimeout>(c.timers, FnCounter::fire, &f);
  EXPECT_FALSE(f.timeout->armed());
  f.timeout->arm_in(50);
  c.advance_to(1049);
  EXPECT_EQ(f.runs, 0);
  c.advance_to(1050);
  EXPECT_EQ(f.runs, 1);
  EXPECT_FALSE(f.timeout->armed());
  f.timeout->arm_in(10);
  f.timeout->cancel();
  c.advance_to(2000);
  EXPECT_EQ(f.runs, 1);
  f.timeout->arm_in(10);
  c.advance_to(2010);
  f.timeout->arm_in(10);
  c.advance_to(2020);
  EXPECT_EQ(f.runs, 3);
  EXPECT_EQ(f.timeout, nullptr);
  EXPECT_EQ(c.timers.size(), 0u);
}

TEST(ModuleFnTimeout, AnExceptionStaysInsideAndTheTimeoutLives) {
  Clocked c;
  FnCounter f;
  f.fail = true;
  f.timeout = std::make_unique<ModuleFnTimeout>(c.timers, FnCounter::fire, &f);
  f.timeout->arm_in(10);
  c.advance_to(1010);
  f.timeout->arm_in(10);
  c.advance_to(1020);
  EXPECT_EQ(f.runs, 2);
}

TEST(Timers, PostedCallsRunAfterTheCallerInPostOrder) {
  Clocked c;
  std::vector<int> order;
  c.timers.post([&] {
    order.push_back(1);
    c.timers.post([&] { order.push_back(3); });  // posted from a posted call: after the others
  });
  c.timers.post([&] { order.push_back(2); });
  EXPECT_TRUE(order.empty());  // never inside post()
  c.timers.run_due();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(Timers, OneShotsRunOnceAtTheirDeadlineAndAreFreed) {
  Clocked c;
  std::vector<int> order;
  c.timers.after(30, [&] { order.push_back(30); });
  c.timers.after(10, [&] { order.push_back(10); });
  c.advance_to(1029);
  EXPECT_EQ(order, (std::vector<int>{10}));
  c.advance_to(1030);
  c.advance_to(5000);
  EXPECT_EQ(order, (std::vector<int>{10, 30}));
  EXPECT_EQ(c.timers.size(), 0u);
}

// ------------------------------------------ an Engine.IO session on the clock

struct Recorder : eio::SessionHandler {
  std::vector<std::string>* closes;
  explicit Recorder(std::vector<std::string>* c) : closes(c) {}
  void on_message(bool, std::string_view) override {}
  void on_close(std::string_view reason) override { closes->emplace_back(reason); }
};

TEST(SessionTimers, UnansweredPingClosesAtIntervalPlusTimeoutToTheMillisecond) {
  Clocked c;
  CoreConf conf;
  conf.ping_interval = 300;
  conf.ping_timeout = 200;
  conf.connect_timeout = 100000;
  eio::Server server(conf, 0, 1, c.timers, nullptr);
  std::vector<std::string> closes;
  eio::Session s(server, "sid", eio::Transport::Polling, Handshake());
  s.handler = std::make_unique<Recorder>(&closes);
  EXPECT_EQ(c.timers.next_deadline(), 1300);  // the first ping
  c.advance_to(1299);
  EXPECT_EQ(c.timers.next_deadline(), 1300);
  c.advance_to(1300);                         // ping sent, the pong awaited
  EXPECT_EQ(c.timers.next_deadline(), 1500);
  c.advance_to(1499);
  EXPECT_TRUE(closes.empty());
  c.advance_to(1500);
  EXPECT_EQ(closes, std::vector<std::string>{"ping timeout"});
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(c.timers.size(), 0u);
}

TEST(SessionTimers, ConnectTimeoutUnlessCancelled) {
  Clocked c;
  CoreConf conf;
  conf.ping_interval = 25000;
  conf.ping_timeout = 20000;
  conf.connect_timeout = 1000;
  eio::Server server(conf, 0, 1, c.timers, nullptr);
  std::vector<std::string> closes;
  eio::Session late(server, "late", eio::Transport::Polling, Handshake());
  late.handler = std::make_unique<Recorder>(&closes);
  eio::Session joined(server, "joined", eio::Transport::Polling, Handshake());
  joined.handler = std::make_unique<Recorder>(&closes);
  joined.cancel_connect_timeout();  // a namespace joined
  c.advance_to(1999);
  EXPECT_TRUE(closes.empty());
  c.advance_to(2000);
  EXPECT_EQ(closes, std::vector<std::string>{"transport close"});
  EXPECT_TRUE(late.closed());
  EXPECT_FALSE(joined.closed());
  // Left: the closed session waits 10 s for a GET to fetch its close packet,
  // and the joined one's heartbeat.
  EXPECT_EQ(c.timers.size(), 2u);
  EXPECT_EQ(c.timers.next_deadline(), 2000 + 10000);
  c.advance_to(12000);
  EXPECT_EQ(c.timers.next_deadline(), 1000 + 25000);
}

}  // namespace
}  // namespace dr
