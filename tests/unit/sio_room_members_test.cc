// A room's local members (sio::RoomMembers): kept inline while there are one
// or two, in a set past that, the same members whichever way they are kept;
// a namespace's rooms by name (RoomIndex) and a socket's list of them
// (RoomList); and the refcounted text a socket keeps of its CONNECT's auth (SharedText).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
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

TEST(RoomIndex, FindsEachRoomByNameUntilItsLastRefGoes) {
  RoomIndex index;
  std::vector<Room*> made;
  for (int i = 0; i < 100; i++) made.push_back(index.acquire("user:u" + std::to_string(i)));
  for (int i = 0; i < 100; i++) {
    EXPECT_EQ(index.find("user:u" + std::to_string(i)), made[i]) << "past a rehash too";
    EXPECT_EQ(made[i]->name(), "user:u" + std::to_string(i));
  }
  EXPECT_EQ(index.acquire("user:u7"), made[7]) << "one room a name";
  index.release(made[7]);
  EXPECT_EQ(index.find("user:u7"), made[7]) << "still listed once";
  for (int i = 0; i < 100; i += 2) index.release(made[i]);
  for (int i = 0; i < 100; i++) EXPECT_EQ(index.find("user:u" + std::to_string(i)) != nullptr, i % 2 == 1);
  size_t walked = 0;
  index.for_each([&](const Room&) { walked++; });
  EXPECT_EQ(walked, 50u);
  EXPECT_EQ(index.find(""), nullptr);
  // The rest stay referenced: the index's end frees none of them (sockets would, see ~SocketImpl).
  for (int i = 1; i < 100; i += 2) index.release(made[i]);
}

TEST(RoomList, KeepsJoiningOrderOneInlineOrMany) {
  RoomIndex index;
  Room* a = index.acquire("a");
  Room* b = index.acquire("b");
  Room* c = index.acquire("c");
  RoomList list;
  EXPECT_EQ(list.size(), 0u);
  list.push_back(a);
  EXPECT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0], a);
  list.push_back(b);
  list.push_back(c);
  EXPECT_EQ(list.copy(), (std::vector<Room*>{a, b, c}));
  list.erase_at(0);
  EXPECT_EQ(list.copy(), (std::vector<Room*>{b, c}));
  list.erase_at(1);
  list.erase_at(0);
  EXPECT_EQ(list.size(), 0u);
  RoomList one;
  one.push_back(c);
  one.erase_at(0);
  EXPECT_EQ(one.copy(), std::vector<Room*>{});
  for (Room* r : {a, b, c}) index.release(r);
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
