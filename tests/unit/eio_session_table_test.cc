// The engine's sessions by sid (eio::SessionTable): every session found by
// its sid through the table's growth, taken out exactly once, and listed.
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/timers.h"
#include "eio/session.h"

namespace dr::eio {
namespace {

TEST(SessionTable, FindsTakesAndListsThroughGrowth) {
  int64_t now = 1000;
  Timers timers([&now] { return now; });
  CoreConf conf;
  Server server(conf, 0, 1, timers, nullptr);
  SessionTable table;
  std::vector<Session*> made;
  for (int i = 0; i < 1000; i++) {
    auto s = std::make_unique<Session>(server, "sid-" + std::to_string(i), Transport::WebSocket, Handshake());
    made.push_back(s.get());
    table.insert(std::move(s));
  }
  EXPECT_EQ(table.size(), 1000u);
  for (int i = 0; i < 1000; i++) EXPECT_EQ(table.find("sid-" + std::to_string(i)), made[size_t(i)]);
  EXPECT_EQ(table.find("sid-1000"), nullptr);
  EXPECT_EQ(table.find(""), nullptr);

  // Every other one taken out: the rest are still found, the taken ones not.
  for (int i = 0; i < 1000; i += 2) {
    std::unique_ptr<Session> taken = table.take(*made[size_t(i)]);
    EXPECT_EQ(taken.get(), made[size_t(i)]);
    EXPECT_EQ(table.take(*made[size_t(i)]), nullptr) << "taken once only";
    EXPECT_EQ(table.find(taken->sid()), nullptr);
  }
  EXPECT_EQ(table.size(), 500u);
  std::set<std::string> listed;
  table.for_each([&listed](Session& s) { listed.emplace(s.sid()); });
  EXPECT_EQ(listed.size(), 500u);
  for (int i = 1; i < 1000; i += 2) {
    EXPECT_EQ(table.find("sid-" + std::to_string(i)), made[size_t(i)]);
    EXPECT_EQ(listed.count("sid-" + std::to_string(i)), 1u);
  }
}

TEST(SessionTable, AnEmptyTableFindsNothing) {
  SessionTable table;
  EXPECT_EQ(table.find("x"), nullptr);
  EXPECT_EQ(table.size(), 0u);
  int n = 0;
  table.for_each([&n](Session&) { n++; });
  EXPECT_EQ(n, 0);
}

}  // namespace
}  // namespace dr::eio
