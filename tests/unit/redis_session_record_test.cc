// The session record the Redis adapter stores is written as text directly:
// it must be, byte for byte, what the jansson tree it replaces dumped (that
// is what Redis holds from older workers, and what a recovery parses).
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "cluster/adapter_wire.h"
#include "cluster/redis_adapter.h"

namespace dr::cluster {
namespace {

using Data = std::vector<std::pair<std::string, std::string>>;

struct Session {
  std::string nsp = "/", sid = "aB3_-x9QkLmNoPqRsTuV", pid = "Zy8_-w7PjKlMnOpQrStU";
  uint64_t gen = 0;
  std::vector<std::string> rooms;
  Data data;
  std::vector<std::string> connect_keys;
  std::optional<int64_t> disconnected_at;
};

// The record as RedisAdapter::write_session built it before.
std::string jansson_record(const Session& s) {
  Json session(json_object());
  json_object_set_new(session.get(), "nsp", json_string(s.nsp.c_str()));
  json_object_set_new(session.get(), "sid", json_string(s.sid.c_str()));
  json_object_set_new(session.get(), "pid", json_string(s.pid.c_str()));
  json_object_set_new(session.get(), "gen", json_integer(json_int_t(s.gen)));
  json_object_set_new(session.get(), "rooms", wire::json_strings(s.rooms).release());
  Json data(json_object());
  for (auto& [k, v] : s.data) json_object_set_new(data.get(), k.c_str(), json_stringn(v.data(), v.size()));
  json_object_set_new(session.get(), "data", data.release());
  json_object_set_new(session.get(), "connectKeys", wire::json_strings(s.connect_keys).release());
  if (s.disconnected_at) json_object_set_new(session.get(), "disconnectedAt", json_integer(*s.disconnected_at));
  return json_text(session.get());
}

std::string direct_record(const Session& s) {
  return session_record(s.nsp, s.sid, s.pid, s.gen, s.rooms, s.data, s.connect_keys, s.disconnected_at);
}

void expect_same(const Session& s) {
  std::string want = jansson_record(s);
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(direct_record(s), want);
}

TEST(SessionRecord, PlainSessionsAsJanssonWroteThem) {
  Session s;
  expect_same(s);
  s.rooms = {s.sid, "general", "user:42"};
  s.data = {{"userId", "42"}, {"role", "admin"}, {"theme", "dark"}};
  s.connect_keys = {"userId", "role"};
  s.gen = 7;
  expect_same(s);
  s.disconnected_at = 1764780000123;
  expect_same(s);
  s.nsp = "/chat";
  s.gen = UINT64_MAX;  // written as jansson's (signed) integer
  expect_same(s);
}

TEST(SessionRecord, EscapesAsJansson) {
  Session s;
  std::string controls;
  for (int c = 0; c < 0x20; c++) controls += char(c);
  controls += "\x7f";
  s.rooms = {"quote\"d", "back\\slash", "sl/ash", controls, "tab\tnew\nline\rcr\bbs\fff", "", " "};
  s.data = {{"k\"ey", "va\"lue\\"}, {"ctl\x01", std::string("nul\0inside", 10)}, {"", "empty key"}};
  s.connect_keys = {"k\"ey", controls};
  expect_same(s);
}

TEST(SessionRecord, UnicodeAsJansson) {
  Session s;
  s.rooms = {"caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "emoji \xf0\x9f\x98\x80", "\xe2\x80\xa8\xe2\x80\xa9",
             "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf"};
  s.data = {{"n\xc3\xa4me", "J\xc3\xbcrgen \xf0\x9f\x8e\x89"}, {"\xe2\x80\xa8", "\xc2\x80"}};
  s.connect_keys = {"n\xc3\xa4me"};
  expect_same(s);
}

TEST(SessionRecord, LeavesOutWhatJanssonRefused) {
  Session s;
  // Not UTF-8: a lone continuation byte, overlong forms, a surrogate, past
  // U+10FFFF, a cut sequence, 0xff.
  std::vector<std::string> bad = {"\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                  "\xe6\x97", "x\xff", "\xf0\x80\x80\xaf", "\xf5\x80\x80\x80"};
  for (auto& b : bad) {
    s.rooms = {"before", b, "after"};
    s.data = {{"good", "1"}, {"badvalue", b}, {b, "badkey"}, {"later", "2"}};
    s.connect_keys = {b, "good"};
    expect_same(s);
  }
  // Keys cut at a NUL, and keys set again: first place, last value; a
  // refused value leaves the earlier one.
  s.rooms = {};
  s.data = {{"a", "1"}, {std::string("a\0b", 3), "2"}, {"b", "3"}, {"a", "4"}, {"a", "\xff"}, {std::string("\0x", 2), "5"}};
  s.connect_keys = {};
  expect_same(s);
  // A session id or pid with a NUL (jansson took C strings) or not UTF-8.
  s.pid = std::string("pi\0d", 4);
  expect_same(s);
  s.pid = "p\xff";
  expect_same(s);
  s.nsp = "\xff";
  s.sid = "\xff";
  expect_same(s);
}

TEST(SessionRecord, ParsesBack) {
  Session s;
  s.rooms = {s.sid, "r\"1"};
  s.data = {{"userId", "u\n1"}};
  s.connect_keys = {"userId"};
  Json j = json_parse(direct_record(s));
  ASSERT_TRUE(j);
  EXPECT_STREQ(json_str(j.get(), "sid"), s.sid.c_str());
  EXPECT_EQ(wire::str_list(json_object_get(j.get(), "rooms")), s.rooms);
  EXPECT_STREQ(json_str(json_object_get(j.get(), "data"), "userId"), "u\n1");
}

TEST(SessionRecord, ClosedStub) {
  for (uint64_t gen : {uint64_t(0), uint64_t(12), UINT64_MAX}) {
    Json stub(json_object());
    json_object_set_new(stub.get(), "gen", json_integer(json_int_t(gen)));
    json_object_set_new(stub.get(), "closed", json_true());
    EXPECT_EQ(closed_session_record(gen), json_text(stub.get()));
  }
}

}  // namespace
}  // namespace dr::cluster
