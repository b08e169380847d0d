// msgpack as @socket.io/redis-adapter writes it (bytes captured from Node, in
// shared/protocols/redis-adapter.md), and its conversion to JSON + attachments.
#include <gtest/gtest.h>

#include <limits>

#include "sio/msgpack_json.h"

using namespace dr;
using namespace dr::cluster;

namespace {

std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

std::string unhex(std::string_view h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += char(std::stoi(std::string(h.substr(i, 2)), nullptr, 16));
  return out;
}

}  // namespace

// io.emit('ev','hello',1) on server EXlxzv: 60 bytes on socket.io#/#.
TEST(ClusterMsgpack, BroadcastIsByteExact) {
  Packer pk;
  pk.array(3);
  pk.str("EXlxzv");
  pk.map(3);
  pk.str("type");
  pk.integer(2);
  pk.str("data");
  Json data = json_parse(R"(["ev","hello",1])");
  pk.json(data.get(), {});
  pk.str("nsp");
  pk.str("/");
  pk.map(3);
  pk.str("rooms");
  pk.str_array({});
  pk.str("except");
  pk.str_array({});
  pk.str("flags");
  pk.map(0);
  EXPECT_EQ(hex(pk.out()),
            "93a645586c787a7683a47479706502a46461746193a26576a568656c6c6f01a36e7370a12f83a5726f6f6d7390a6657863"
            "65707490a5666c61677380");
}

// Binary arguments: placeholders become msgpack bin 8 items.
TEST(ClusterMsgpack, PlaceholdersBecomeBin) {
  Packer pk;
  Json data = json_parse(R"(["bin",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])");
  pk.json(data.get(), {std::string("\x01\x02\x03"), std::string("\xff")});
  EXPECT_EQ(hex(pk.out()), "93a362696ec403010203" "81a66e6573746564c401ff");
}

// Numbers as notepack writes them: integral doubles as integers, others float64.
TEST(ClusterMsgpack, Numbers) {
  Packer pk;
  Json data = json_parse(R"([300, -5, 2.0, 1.5, 70000])");
  pk.json(data.get(), {});
  EXPECT_EQ(hex(pk.out()), "95cd012cfb02cb3ff8000000000000ce00011170");
}

// The emitter's message, decoded: rooms, flags, binary as placeholders.
TEST(ClusterMsgpack, DecodesTheEmitter) {
  // emitter.of('/chat').emit('em-chat', <0a 0b>)
  std::string bytes = unhex(
      "93a7656d697474657283a47479706502a46461746192a7656d2d63686174c4020a0ba36e7370a52f6368617483a5726f6f6d73"
      "90a5666c61677380a665786365707490");
  Unpacked u;
  ASSERT_TRUE(u.parse(bytes));
  const msgpack_object& root = u.root();
  ASSERT_EQ(root.type, MSGPACK_OBJECT_ARRAY);
  EXPECT_EQ(as_str(&root.via.array.ptr[0]).value(), "emitter");
  const msgpack_object& packet = root.via.array.ptr[1];
  EXPECT_EQ(as_str(map_get(packet, "nsp")).value(), "/chat");
  std::vector<std::string> att;
  Json data = to_json(*map_get(packet, "data"), att);
  EXPECT_EQ(json_text(data.get()), R"(["em-chat",{"_placeholder":true,"num":0}])");
  ASSERT_EQ(att.size(), 1u);
  EXPECT_EQ(att[0], std::string("\x0a\x0b"));
  EXPECT_TRUE(as_rooms(map_get(root.via.array.ptr[2], "rooms")).empty());
}

TEST(ClusterMsgpack, RoomsAcceptNumbersAndBodiesJsonOrMsgpack) {
  Packer pk;
  Json rooms = json_parse(R"(["a", 42])");
  pk.json(rooms.get(), {});
  Unpacked u;
  ASSERT_TRUE(u.parse(pk.out()));
  EXPECT_EQ(as_rooms(&u.root()), (std::vector<std::string>{"a", "42"}));

  std::vector<std::string> att;
  Json j = decode_body(R"({"uid":"x","type":6,"data":["sse",1]})", att);
  EXPECT_EQ(json_integer_value(json_object_get(j.get(), "type")), 6);
  Packer m;
  m.map(1);
  m.str("type");
  m.integer(9);
  Json k = decode_body(m.out(), att);
  EXPECT_EQ(json_integer_value(json_object_get(k.get(), "type")), 9);
  EXPECT_FALSE(decode_body("\xc1", att));  // never used in msgpack: refused
}

TEST(ClusterMsgpack, TimestampsBecomeIsoStrings) {
  // 1.5 s after the epoch in the 64-bit form: nanoseconds << 34 | seconds.
  std::string bytes = unhex("d7ff7735940000000001");
  Unpacked u;
  ASSERT_TRUE(u.parse(bytes));
  std::vector<std::string> att;
  EXPECT_EQ(json_text(to_json(u.root(), att).get()), R"("1970-01-01T00:00:01.500Z")");
}

// A timestamp no calendar holds (the 96-bit form, seconds near 2^63): the
// epoch's date, not a date made of whatever was on the stack.
TEST(ClusterMsgpack, TimestampsBeyondAnyYearBecomeTheEpoch) {
  std::string bytes = unhex("c70cff000000007fffffffffffffff");
  Unpacked u;
  ASSERT_TRUE(u.parse(bytes));
  std::vector<std::string> att;
  EXPECT_EQ(json_text(to_json(u.root(), att).get()), R"("1970-01-01T00:00:00.000Z")");
}

// Found by tests/fuzz/msgpack_json.cc: 8 bytes declaring an array of
// 0xdcdcdcdc elements made msgpack-c allocate ~100 GB for them before reading
// any (any process on the Redis can publish such a message).
TEST(ClusterMsgpack, DeclaredCountsLargerThanTheInputAreRefusedUnread) {
  std::vector<std::string> att;
  EXPECT_FALSE(decode_body(std::string("\xdd\xdc\xdc\xdc\xdc\xdc\xc5\xf5", 8), att));
  EXPECT_FALSE(decode_body(unhex("dfffffffff"), att));  // map32 with 2^32-1 pairs, no data
  EXPECT_FALSE(decode_body(unhex("c6ffffffff00"), att));  // bin32 longer than the input
  EXPECT_FALSE(decode_body(unhex("9201"), att));  // an array of 2 with one element
  EXPECT_FALSE(decode_body(unhex("9101c0"), att));  // a trailing byte after the value
}

// Every msgpack type, in each width msgpack-c writes, still parses.
TEST(ClusterMsgpack, EveryTypeAndWidthParses) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  std::string s300(300, 'x'), s70000(70000, 'y');
  msgpack_pack_array(&pk, 29);
  msgpack_pack_nil(&pk);
  msgpack_pack_true(&pk);
  msgpack_pack_false(&pk);
  for (int64_t v : {int64_t(5), int64_t(-5), int64_t(200), int64_t(-100), int64_t(60000), int64_t(-30000),
                    int64_t(4000000000), int64_t(-2000000000), int64_t(1) << 40, -(int64_t(1) << 40)})
    msgpack_pack_int64(&pk, v);
  msgpack_pack_float(&pk, 1.5f);
  msgpack_pack_double(&pk, 2.25);
  for (const std::string* s : {&s300, &s70000}) {
    msgpack_pack_str(&pk, s->size());
    msgpack_pack_str_body(&pk, s->data(), s->size());
  }
  msgpack_pack_str(&pk, 40);  // str8
  msgpack_pack_str_body(&pk, s300.data(), 40);
  for (size_t n : {size_t(3), size_t(300), size_t(70000)}) {
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, s70000.data(), n);
  }
  for (size_t n : {size_t(1), size_t(2), size_t(4), size_t(8), size_t(16), size_t(5), size_t(300), size_t(70000)}) {
    msgpack_pack_ext(&pk, n, 7);
    msgpack_pack_ext_body(&pk, s70000.data(), n);
  }
  std::string bytes(sb.data, sb.size);
  std::string big;  // array16 and map16 around the rest
  big += unhex("dc0002") + bytes + unhex("de0001a16b") + bytes;
  msgpack_sbuffer_destroy(&sb);
  Unpacked u;
  EXPECT_TRUE(u.parse(bytes));
  Unpacked v;
  EXPECT_TRUE(v.parse(big));
  Unpacked w;  // array32 and map32 forms
  EXPECT_TRUE(w.parse(unhex("dd00000002df0000000101029100")));
}

// Found by tests/fuzz/msgpack_json.cc: a float room name or map key beyond
// int64 (1e300, inf) was converted to an integer (undefined behaviour).
TEST(ClusterMsgpack, FloatsBeyondInt64AreNoIntegers) {
  const double inf = std::numeric_limits<double>::infinity();
  for (double d : {1e300, -1e300, 9223372036854775808.0, inf, -inf}) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, d);
    msgpack_pack_double(&pk, -9223372036854775808.0);  // -2^63 itself fits
    std::string bytes(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    Unpacked u;
    ASSERT_TRUE(u.parse(bytes));
    EXPECT_FALSE(as_int(&u.root().via.array.ptr[0])) << d;
    EXPECT_EQ(as_int(&u.root().via.array.ptr[1]), INT64_MIN);
    EXPECT_EQ(as_rooms(&u.root()), std::vector<std::string>{"-9223372036854775808"});
  }
}
