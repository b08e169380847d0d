// CatchUp (worker/cluster/catch_up.h): what a worker delivers after its
// subscriber was away, from the stream entries read back and the broadcasts
// arriving live meanwhile: each once, in the stream's order.
#include <gtest/gtest.h>

#include "cluster/catch_up.h"
#include "core/uv_util.h"

using namespace dr;
using namespace dr::cluster;

namespace {

// An offset of node `uid` ("other..." are other processes).
std::string off(const std::string& uid, int seq, int64_t ms = now_ms()) { return make_offset(ms, uid, uint64_t(seq)); }

sio::EncodedBroadcast bc(const std::string& name) {
  sio::EncodedBroadcast b;
  b.opts.nsp = "/chat";
  b.header = name;
  return b;
}

struct Fixture {
  std::vector<std::string> got;
  CatchUp c{[this](const sio::EncodedBroadcast& b) { got.emplace_back(b.header); },
            [](std::string_view o) { return o.find(".other") != std::string_view::npos; }};
  CatchUp::Entry entry(const std::string& offset, const std::string& name) { return {offset, bc(name).serialize()}; }
};

}  // namespace

TEST(CatchUp, NothingToDoWithoutALoss) {
  Fixture f;
  f.c.subscribed();  // the first subscription after start
  EXPECT_FALSE(f.c.due());
  EXPECT_FALSE(f.c.holding());
  std::string o = off("otherA", 0);
  f.c.live(bc("m1"), o);
  EXPECT_EQ(f.got, std::vector<std::string>{"m1"});
  EXPECT_EQ(f.c.anchor(), o);
}

TEST(CatchUp, ReadEntriesThenHeldLiveInStreamOrderEachOnce) {
  Fixture f;
  std::string a0 = off("otherA", 0);
  f.c.live(bc("before"), a0);
  f.c.lost(now_ms());
  EXPECT_FALSE(f.c.due());
  f.c.subscribed();
  ASSERT_TRUE(f.c.due());
  CatchUp::Read rd = f.c.begin();
  EXPECT_EQ(rd.anchor, a0);
  EXPECT_FALSE(f.c.due());
  // Published after the SUBSCRIBE: live, held until the read is answered.
  std::string a2 = off("otherA", 2), a3 = off("otherA", 3);
  f.c.live(bc("m2"), a2);
  f.c.live(bc("volatile"), "");
  f.c.live(bc("m3"), a3);
  EXPECT_EQ(f.got, std::vector<std::string>{"before"});
  // The stream after the anchor: a missed one, a sibling's (the relay had
  // it), and m2, which came live too.
  size_t n = f.c.read({f.entry(off("otherB", 1), "m1"), f.entry(off("sibling", 0), "sib"), f.entry(a2, "m2")});
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(f.got, (std::vector<std::string>{"before", "m1", "m2", "volatile", "m3"}));
  EXPECT_FALSE(f.c.due());
  EXPECT_FALSE(f.c.holding());
}

TEST(CatchUp, ALateLiveCopyOfAnEntryReadIsDropped) {
  Fixture f;
  f.c.lost(now_ms());
  f.c.subscribed();
  f.c.begin();
  std::string b1 = off("otherB", 1), b2 = off("otherB", 2), b3 = off("otherB", 3);
  f.c.read({f.entry(b1, "m1"), f.entry(b2, "m2")});
  f.c.live(bc("m2"), b2);  // was on its way on the subscriber connection
  f.c.live(bc("m3"), b3);  // newer than the read: the remembered offsets go
  EXPECT_EQ(f.got, (std::vector<std::string>{"m1", "m2", "m3"}));
  EXPECT_EQ(f.c.remembered(), 0u);
  EXPECT_EQ(f.c.anchor(), b3);
}

TEST(CatchUp, CommandsAwayLiveIsDeliveredAndTheReadSkipsIt) {
  Fixture f;
  f.c.lost(now_ms());
  f.c.subscribed();
  int64_t t = now_ms();
  f.c.wait(t);  // no commands connection yet: held a moment
  EXPECT_TRUE(f.c.holding());
  f.c.wait(t + CatchUp::kWaitMs);  // still none: live delivery meanwhile
  EXPECT_FALSE(f.c.holding());
  std::string b2 = off("otherB", 2);
  f.c.live(bc("m2"), b2);
  EXPECT_EQ(f.got, std::vector<std::string>{"m2"});
  ASSERT_TRUE(f.c.due());
  f.c.begin();
  f.c.read({f.entry(off("otherB", 1), "m1"), f.entry(b2, "m2")});
  EXPECT_EQ(f.got, (std::vector<std::string>{"m2", "m1"}));
}

TEST(CatchUp, AFailedReadDeliversWhatIsHeldAndIsTriedAgain) {
  Fixture f;
  f.c.lost(now_ms());
  f.c.subscribed();
  f.c.begin();
  std::string b2 = off("otherB", 2);
  f.c.live(bc("m2"), b2);
  f.c.failed();
  EXPECT_EQ(f.got, std::vector<std::string>{"m2"});
  ASSERT_TRUE(f.c.due());
  f.c.begin();
  f.c.read({f.entry(off("otherB", 1), "m1"), f.entry(b2, "m2")});
  EXPECT_EQ(f.got, (std::vector<std::string>{"m2", "m1"}));
  EXPECT_FALSE(f.c.due());
}

TEST(CatchUp, LostAgainDuringTheReadReadsOnFromWhereItStopped) {
  Fixture f;
  f.c.lost(now_ms());
  f.c.subscribed();
  f.c.begin();
  f.c.lost(now_ms());
  std::string b1 = off("otherB", 1);
  f.c.read({f.entry(b1, "m1")});
  EXPECT_FALSE(f.c.due());  // not subscribed yet
  f.c.subscribed();
  ASSERT_TRUE(f.c.due());
  EXPECT_EQ(f.c.begin().anchor, b1);
}

TEST(CatchUp, ReadWindow) {
  Fixture f;
  int64_t t = now_ms();
  f.c.live(bc("m"), off("otherA", 0, t - 500));
  f.c.lost(t);
  f.c.subscribed();
  CatchUp::Read rd = f.c.begin();
  EXPECT_EQ(rd.start, std::to_string(t - 500 - CatchUp::kClockMarginMs) + "-0");
  EXPECT_EQ(rd.cutoff, std::to_string(t - CatchUp::kSkewMs) + "-0");
}

TEST(CatchUp, OffsetClock) {
  int64_t now = now_ms();
  EXPECT_EQ(offset_ms(off("abcdef", 3, now)), now);
  EXPECT_EQ(offset_ms("hello.world"), -1);  // a last string argument, not an offset
  EXPECT_EQ(offset_ms("nodot"), -1);
  EXPECT_EQ(offset_ms(base64_number(uint64_t(now)) + "."), -1);
}

// Redis Cluster: the stream's order is not the live order. An entry after
// the anchor that was delivered live before it, and a late live copy of an
// entry read after newer ones, are not delivered again.
TEST(CatchUp, UnorderedStreamDeliversEachOnce) {
  for (bool unordered : {false, true}) {
    Fixture f;
    f.c.set_unordered(unordered);
    std::string y = off("otherB", 0), x = off("otherA", 0), z = off("otherA", 1);
    f.c.live(bc("y"), y);  // live first, but after x in the stream
    f.c.live(bc("x"), x);  // the anchor
    f.c.lost(now_ms());
    f.c.subscribed();
    ASSERT_TRUE(f.c.due());
    EXPECT_EQ(f.c.begin().anchor, x);
    f.c.read({f.entry(y, "y"), f.entry(z, "z")});  // the stream: x, y, z
    f.c.live(bc("w"), off("otherB", 1));            // newer than anything read
    f.c.live(bc("z"), z);                           // a late live copy of z
    if (unordered) EXPECT_EQ(f.got, (std::vector<std::string>{"y", "x", "z", "w"}));
    else EXPECT_EQ(f.got, (std::vector<std::string>{"y", "x", "y", "z", "w", "z"}));  // what ordered mode assumes away
  }
}
