// A room's local members (sio::RoomMembers): kept inline while there are one
// or two, in a set past that, the same members whichever way they are kept;
// and the refcounted text a socket keeps of its CONNECT's auth (SharedText).
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "sio/server.h"
#include "sio/shared_text.h"

namespace dr::sio {
namespace {

// Members are only compared and handed back, never used: any distinct addresses do.
struct Fakes {
  alignas(SocketImpl) unsigned char bytes[8][sizeof(SocketImpl)];
  SocketImpl* at(int i) { return reinterpret_cast<SocketImpl*>(bytes[i]); }
};

std::vector<SocketImpl*> listed(const RoomMembers& m) {
  std::vector<SocketImpl*> out;
  m.for_each([&](SocketImpl* s) { out.push_back(s); });
  std::sort(out.begin(), out.end());
  return out;
}

TEST(RoomMembers, EachMemberOnceWhetherFewOrMany) {
  Fakes f;
  RoomMembers m;
  EXPECT_TRUE(m.empty());
  for (int i = 0; i < 6; i++) {
    EXPECT_TRUE(m.insert(f.at(i)));
    EXPECT_FALSE(m.insert(f.at(i))) << "a member already";
    EXPECT_EQ(m.size(), size_t(i + 1));
  }
  std::vector<SocketImpl*> all;
  for (int i = 0; i < 6; i++) all.push_back(f.at(i));
  std::sort(all.begin(), all.end());
  EXPECT_EQ(listed(m), all);
  for (int i = 0; i < 6; i++) {
    EXPECT_TRUE(m.erase(f.at(i)));
    EXPECT_FALSE(m.erase(f.at(i)));
  }
  EXPECT_TRUE(m.empty());
}

TEST(RoomMembers, LeavingAFewKeepsTheOthers) {
  Fakes f;
  RoomMembers m;
  m.insert(f.at(0));
  m.insert(f.at(1));
  EXPECT_FALSE(m.erase(f.at(2)));
  EXPECT_TRUE(m.erase(f.at(0)));
  EXPECT_EQ(listed(m), std::vector<SocketImpl*>{f.at(1)});
  EXPECT_TRUE(m.insert(f.at(2)));
  EXPECT_EQ(m.size(), 2u);
}

TEST(SharedText, CopiesShareOneTextThatOutlivesTheFirst) {
  SharedText empty;
  EXPECT_FALSE(empty);
  EXPECT_EQ(empty.view(), "");
  SharedText copy;
  {
    SharedText first(R"({"token":"abc"})");
    copy = first;
    EXPECT_EQ(first.view().data(), copy.view().data());
  }
  EXPECT_EQ(copy.view(), R"({"token":"abc"})");
  EXPECT_EQ(copy.view().data()[copy.view().size()], '\0');
  SharedText moved(std::move(copy));
  EXPECT_EQ(moved.view(), R"({"token":"abc"})");
}

}  // namespace
}  // namespace dr::sio
