// Socket slots (dr::socket_slot): one index per name for every module of the
// process, refused when a name is asked for with another type.
#include <gtest/gtest.h>

#include "depth-realtime/access_claims.h"
#include "depth-realtime/module.h"
#include "sio/socket_slots.h"

namespace dr {
namespace {

struct Counter {
  int n = 0;
};

TEST(SocketSlots, ANameIsOneSlotAndAnotherTypeIsRefused) {
  auto a = socket_slot<Counter>("test.counter");
  auto b = socket_slot<Counter>("test.counter");
  auto other = socket_slot<AccessClaims>("test.other");
  ASSERT_TRUE(a);
  EXPECT_EQ(a.index, b.index);
  EXPECT_NE(a.index, other.index);
  EXPECT_LT(size_t(other.index), sio::socket_slot_count());
  EXPECT_FALSE(socket_slot<AccessClaims>("test.counter"));  // the name holds a Counter
}

TEST(AccessClaims, IdsOfAClaim) {
  AccessClaims c;
  c.claims = {{"conversations", {"a", "7"}}, {"projects", {}}};
  ASSERT_TRUE(c.ids("conversations"));
  EXPECT_EQ(*c.ids("conversations"), (std::vector<std::string>{"a", "7"}));
  EXPECT_TRUE(c.ids("projects")->empty());
  EXPECT_EQ(c.ids("teams"), nullptr);
}

}  // namespace
}  // namespace dr
