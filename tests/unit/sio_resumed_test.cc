// A recovered socket's missed packets are not sent to it twice: a broadcast
// whose offset was among them (a copy relayed late by a sibling worker or
// read late from Pub/Sub) is dropped for kResumedMs after the recovery, on the
// core's clock, and delivered after that; a socket that did not resume gets
// every one.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/timers.h"
#include "eio/session.h"
#include "sio/server.h"

namespace dr::sio {
namespace {

// Sessions "found" and "claimed" at once, with broadcasts of these offsets
// as the packets missed.
class FakeAdapter final : public Adapter {
 public:
  std::vector<std::string> missed;
  void broadcast(const EncodedBroadcast&) override {}
  void on_remote(std::string_view) override {}
  bool recovers() const override { return true; }
  bool find_session(const std::string&, const std::string& pid, FoundSession cb) override {
    StoredSession s;
    s.sid = "recovered-socket-id";
    s.pid = pid;
    cb(std::move(s));
    return true;
  }
  bool claim_session(const std::string&, const std::string&, const std::string&, const std::string&,
                     ClaimedSession cb) override {
    std::vector<EncodedBroadcast> packets;
    for (auto& offset : missed) packets.push_back(event("missed", offset));
    cb(std::move(packets));
    return true;
  }

  // A broadcast to the whole of "/" with `offset` last.
  static EncodedBroadcast event(std::string_view text, std::string_view offset) {
    EncodedBroadcast b;
    b.header = "2[\"news\",\"" + std::string(text) + "\",\"" + std::string(offset) + "\"]";
    b.offset = offset;
    return b;
  }
};

// A sio::Server on an injected clock, its clients on polling sessions; what
// it delivers is seen through a sent handler (told of each recipient).
struct Harness {
  int64_t now = 1'000'000;
  Timers timers{[this] { return now; }};
  Config cfg;
  std::unique_ptr<eio::Server> eio;
  std::unique_ptr<Server> server;
  FakeAdapter* adapter = nullptr;
  std::vector<std::unique_ptr<eio::Session>> sessions;  // destroyed before server: they hold its clients
  std::vector<std::string> got;                         // the ids of the sockets it went to

  Harness() {
    cfg.namespaces.emplace_back().name = "/";
    eio = std::make_unique<eio::Server>(cfg.core, 0, 1, timers, nullptr);
    server = std::make_unique<Server>(cfg, timers);
    auto a = std::make_unique<FakeAdapter>();
    adapter = a.get();
    server->set_adapter(std::move(a));
    server->find("/")->sent_handlers.push_back([this](Socket& s, const Payload&) { got.push_back(s.id()); });
  }

  std::vector<std::string> connected() const {
    std::vector<std::string> ids;
    for (SocketImpl* s : server->find("/")->members({})) ids.push_back(s->id());
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  // A new client's CONNECT to "/" with this auth; the id of the socket that
  // connected ("" when none did).
  std::string connect(std::string_view auth) {
    const std::vector<std::string> before = connected();
    std::string sid = "session-" + std::to_string(sessions.size());
    auto& s = sessions.emplace_back(std::make_unique<eio::Session>(*eio, sid, eio::Transport::Polling, Handshake()));
    s->handler = server->make_client(*s);
    s->handler->on_message(false, "0" + std::string(auth));
    for (auto& id : connected())
      if (!std::binary_search(before.begin(), before.end(), id)) return id;
    return {};
  }
  // Who gets this broadcast, delivered now on this worker.
  std::vector<std::string> deliver(const EncodedBroadcast& b) {
    got.clear();
    server->deliver(b);
    std::sort(got.begin(), got.end());
    return got;
  }
};

constexpr int64_t kWindowMs = 10'000;  // SocketImpl::kResumedMs

TEST(ResumedSocket, GetsNoSecondCopyOfAMissedPacketWithinTheWindow) {
  Harness h;
  h.adapter->missed = {"off-1", "off-2"};
  const std::string resumed = h.connect(R"({"pid":"the-pid","offset":"off-0"})");
  ASSERT_EQ(resumed, "recovered-socket-id") << "the session was resumed";
  const std::string fresh = h.connect("{}");  // a socket beside it that did not resume
  ASSERT_FALSE(fresh.empty());
  using Ids = std::vector<std::string>;
  const Ids both = h.connected();

  // Within the window, up to its last millisecond: a missed packet's copy
  // reaches only the fresh socket; another broadcast reaches both.
  EXPECT_EQ(h.deliver(FakeAdapter::event("a", "off-1")), Ids{fresh});
  EXPECT_EQ(h.deliver(FakeAdapter::event("c", "off-3")), both);
  h.now += kWindowMs;
  EXPECT_EQ(h.deliver(FakeAdapter::event("b", "off-2")), Ids{fresh});

  // After it: both get it.
  h.now += 1;
  EXPECT_EQ(h.deliver(FakeAdapter::event("b", "off-2")), both);
  EXPECT_EQ(h.deliver(FakeAdapter::event("a", "off-1")), both);
}

TEST(ResumedSocket, ASocketThatDidNotResumeGetsEveryCopy) {
  Harness h;
  h.adapter->missed = {"off-1"};  // what a recovery would have sent
  const std::string plain = h.connect("{}");
  const std::string pid_only = h.connect(R"({"pid":"the-pid"})");  // without an offset: nothing to resume
  ASSERT_FALSE(plain.empty());
  ASSERT_FALSE(pid_only.empty());
  EXPECT_NE(pid_only, "recovered-socket-id");
  const std::vector<std::string> both = h.connected();
  ASSERT_EQ(both.size(), 2u);
  const int64_t start = h.now;
  for (int64_t at : {int64_t(0), kWindowMs, kWindowMs + 1}) {
    h.now = start + at;
    EXPECT_EQ(h.deliver(FakeAdapter::event("a", "off-1")), both) << at;
    EXPECT_EQ(h.deliver(FakeAdapter::event("a", "off-1")), both) << "the same copy again, " << at;
  }
}

}  // namespace
}  // namespace dr::sio
