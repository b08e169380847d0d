// Socket.IO v5 packet encoder and decoder (socket.io-parser 4.2.x text form).
#include "sio/sio_packet.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "eio/eio_packet.h"

namespace dr::sio {
namespace {

using namespace std::string_literals;
using Result = Decoder::Result;

Json parse(std::string_view text) {
  Json j = json_parse(text);
  EXPECT_TRUE(j) << text;
  return j;
}

std::string data_text(const Packet& p) { return p.data ? json_text(p.data.get()) : "<none>"; }

// Decodes one non-binary packet with a fresh decoder.
Result decode_one(std::string_view text, Packet& out, size_t max_attachments = 10) {
  Decoder d(max_attachments);
  std::string err;
  const Result r = d.add_text(text, out, err);
  if (r == Result::Error) {
    EXPECT_FALSE(err.empty()) << text;
  }
  return r;
}

bool rejects(std::string_view text, size_t max_attachments = 10) {
  Packet p;
  return decode_one(text, p, max_attachments) == Result::Error;
}

Packet make(PacketType type, std::string nsp, std::optional<uint64_t> id, std::string_view json,
            std::vector<std::string> attachments = {}) {
  Packet p;
  p.type = type;
  p.nsp = std::move(nsp);
  p.id = id;
  if (!json.empty()) p.data = parse(json);
  p.attachments = std::move(attachments);
  return p;
}

// The spec's table of section 2, without Engine.IO's leading '4'.
struct Vector {
  const char* wire;
  PacketType type;  // as the decoder reports it
  const char* nsp;
  std::optional<uint64_t> id;
  const char* data;  // compact JSON, "" for none
  size_t attachments;
};
const Vector kVectors[] = {
    {"0", PacketType::Connect, "/", {}, "", 0},
    {R"(0{"token":"abc"})", PacketType::Connect, "/", {}, R"({"token":"abc"})", 0},
    {"0/admin2,", PacketType::Connect, "/admin2", {}, "", 0},
    {R"(0/admin,{"username":"admin","password":"changeit"})", PacketType::Connect, "/admin", {},
     R"({"username":"admin","password":"changeit"})", 0},
    {R"(0{"sid":"1P-qosb00wFyviPUAAAA"})", PacketType::Connect, "/", {},
     R"({"sid":"1P-qosb00wFyviPUAAAA"})", 0},
    {R"(0/admin2,{"sid":"HyrWrPzPgsTElNe9AAAB"})", PacketType::Connect, "/admin2", {},
     R"({"sid":"HyrWrPzPgsTElNe9AAAB"})", 0},
    {R"(0{"sid":"udadnnJXZN8GwjICAAAA","pid":"Obg8aRAOEDYd2-OFAAAB"})", PacketType::Connect, "/",
     {}, R"({"sid":"udadnnJXZN8GwjICAAAA","pid":"Obg8aRAOEDYd2-OFAAAB"})", 0},
    {R"(0{"pid":"vbKNwreS8FpjtwlvAAAF","offset":"Q8KNOA4","token":"abc"})", PacketType::Connect,
     "/", {}, R"({"pid":"vbKNwreS8FpjtwlvAAAF","offset":"Q8KNOA4","token":"abc"})", 0},
    {R"(4{"message":"not authorized","data":{"content":"Please retry later"}})",
     PacketType::ConnectError, "/", {},
     R"({"message":"not authorized","data":{"content":"Please retry later"}})", 0},
    {R"(4/nonexistent,{"message":"Invalid namespace"})", PacketType::ConnectError, "/nonexistent",
     {}, R"({"message":"Invalid namespace"})", 0},
    {R"(2["welcome","hi",{"a":1}])", PacketType::Event, "/", {}, R"(["welcome","hi",{"a":1}])", 0},
    {R"(2/admin2,["nspmsg","x"])", PacketType::Event, "/admin2", {}, R"(["nspmsg","x"])", 0},
    {R"(20["hello","world"])", PacketType::Event, "/", 0, R"(["hello","world"])", 0},
    {R"(2/chat,12["foo"])", PacketType::Event, "/chat", 12, R"(["foo"])", 0},
    {R"(23["withack",1])", PacketType::Event, "/", 3, R"(["withack",1])", 0},
    {R"(2["welcome","hi","Q8KNIE3"])", PacketType::Event, "/", {}, R"(["welcome","hi","Q8KNIE3"])",
     0},
    {R"(30["ack-response",42])", PacketType::Ack, "/", 0, R"(["ack-response",42])", 0},
    {R"(30["got it"])", PacketType::Ack, "/", 0, R"(["got it"])", 0},
    {R"(52-["binwelcome",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])",
     PacketType::Event, "/", {},
     R"(["binwelcome",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])", 2},
    {R"(51-3["bin",{"_placeholder":true,"num":0}])", PacketType::Event, "/", 3,
     R"(["bin",{"_placeholder":true,"num":0}])", 1},
    {R"(51-1["bin",{"_placeholder":true,"num":0}])", PacketType::Event, "/", 1,
     R"(["bin",{"_placeholder":true,"num":0}])", 1},
    {R"(61-3[{"_placeholder":true,"num":0}])", PacketType::Ack, "/", 3,
     R"([{"_placeholder":true,"num":0}])", 1},
    {R"(61-1[{"_placeholder":true,"num":0}])", PacketType::Ack, "/", 1,
     R"([{"_placeholder":true,"num":0}])", 1},
    {"1", PacketType::Disconnect, "/", {}, "", 0},
    {"1/admin2,", PacketType::Disconnect, "/admin2", {}, "", 0},
};

// Feeds a header and `n` attachments ("att0", "att1", ...).
Result feed(Decoder& d, std::string_view text, size_t n, Packet& out, std::string& err) {
  Result r = d.add_text(text, out, err);
  for (size_t i = 0; i < n && r == Result::NeedMore; ++i) {
    r = d.add_binary("att" + std::to_string(i), out, err);
  }
  return r;
}

// ---- decoding the captured vectors ------------------------------------------

TEST(SioDecode, CapturedVectors) {
  for (const auto& v : kVectors) {
    SCOPED_TRACE(v.wire);
    Decoder d;
    Packet p;
    std::string err;
    ASSERT_EQ(feed(d, v.wire, v.attachments, p, err), Result::Packet) << err;
    EXPECT_FALSE(d.awaiting_binary());
    EXPECT_EQ(p.type, v.type);
    EXPECT_EQ(p.nsp, v.nsp);
    EXPECT_EQ(p.id, v.id);
    EXPECT_EQ(data_text(p), *v.data ? v.data : "<none>");
    ASSERT_EQ(p.attachments.size(), v.attachments);
    for (size_t i = 0; i < v.attachments; ++i) EXPECT_EQ(p.attachments[i], "att" + std::to_string(i));
  }
}

TEST(SioDecode, DisconnectWithoutComma) {
  Packet p;
  ASSERT_EQ(decode_one("1/admin2", p), Result::Packet);
  EXPECT_EQ(p.type, PacketType::Disconnect);
  EXPECT_EQ(p.nsp, "/admin2");
  ASSERT_EQ(decode_one("0/admin2", p), Result::Packet);
  EXPECT_EQ(p.nsp, "/admin2");
}

TEST(SioDecode, AcceptedEdgeCases) {
  Packet p;
  // Event names may be numbers; case matters for reserved names; server-only
  // reserved names are not reserved for clients.
  for (const char* ok : {R"(2[1])", R"(2[1.5,"x"])", R"(2[-3])", R"(2["Connect"])",
                         R"(2["connection"])", R"(2["new_namespace"])", R"(2[""])",
                         R"(2["connect "])"}) {
    EXPECT_EQ(decode_one(ok, p), Result::Packet) << ok;
  }
  // ACK may be empty; CONNECT_ERROR may be a string; CONNECT may be {}.
  for (const char* ok : {"3[]", "30[]", R"(4"oops")", "4{}", "0{}", "0/a,{}"}) {
    EXPECT_EQ(decode_one(ok, p), Result::Packet) << ok;
  }
  // JSON.parse tolerates surrounding whitespace, and so does the decoder.
  ASSERT_EQ(decode_one("2 [\"a\"] ", p), Result::Packet);
  EXPECT_EQ(data_text(p), R"(["a"])");
  // An ack id on any type is accepted (as in JS); the server ignores it.
  ASSERT_EQ(decode_one("05", p), Result::Packet);
  EXPECT_EQ(p.id, 5u);
  EXPECT_FALSE(p.data);
  // Leading zeros in ids and counts, as Number() allows.
  ASSERT_EQ(decode_one(R"(2007["a"])", p), Result::Packet);
  EXPECT_EQ(p.id, 7u);
  // Largest ack id.
  ASSERT_EQ(decode_one(R"(218446744073709551615["a"])", p), Result::Packet);
  EXPECT_EQ(p.id, UINT64_MAX);
  // JSON escapes, NUL included, survive.
  ASSERT_EQ(decode_one(R"(2["a\u0000b\u001e"])", p), Result::Packet);
  EXPECT_EQ(json_string_length(json_array_get(p.data.get(), 0)), 4u);
  // The namespace is anything up to the first comma.
  ASSERT_EQ(decode_one(R"(2/a b?x=1,["e"])", p), Result::Packet);
  EXPECT_EQ(p.nsp, "/a b?x=1");
  ASSERT_EQ(decode_one("0/,", p), Result::Packet);
  EXPECT_EQ(p.nsp, "/");
}

TEST(SioDecode, RejectsBadTypeAndEmpty) {
  for (const auto& s : {""s, "7"s, "8[]"s, "9"s, "a"s, "-"s, " 2[\"a\"]"s, "\0"s, "\x1e"s}) {
    EXPECT_TRUE(rejects(s)) << s;
  }
}

TEST(SioDecode, RejectsBadConnect) {
  for (const char* s : {R"(0"str")", "0[]", "0null", "0true", "0[1]", R"(0/admin,"x")",
                        "0/admin,[]", "0{", "0{}x"}) {
    EXPECT_TRUE(rejects(s)) << s;
  }
}

TEST(SioDecode, RejectsDisconnectWithData) {
  for (const char* s : {"1{}", "1[]", R"(1"x")", "1/admin2,{}", "1null", "11{}"}) {
    EXPECT_TRUE(rejects(s)) << s;
  }
}

TEST(SioDecode, RejectsBadEvent) {
  for (const char* s : {"2", "20", "2/chat,", "2/chat", R"(2/chat["x"])", "2[]", "2{}",
                        R"(2"x")", "2null", "21", "2[null]", "2[true]", "2[{}]", R"(2[["a"]])",
                        R"(2,["a"])", R"(2["a"],)", R"(2["a"]["b"])", R"(2["a"]x)", R"(2["a")",
                        R"(2[1,])", "2 ", R"(2['a'])", R"(2["a"]\u0000)"}) {
    EXPECT_TRUE(rejects(s)) << s;
  }
}

TEST(SioDecode, RejectsReservedEventNames) {
  for (const char* name :
       {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}) {
    EXPECT_TRUE(is_reserved_event(name));
    const std::string quoted = "[\""s + name + "\",1]";
    EXPECT_TRUE(rejects("2" + quoted)) << name;
    EXPECT_TRUE(rejects("2/chat,5" + quoted)) << name;
    EXPECT_TRUE(rejects("51-" + quoted)) << name;
    // ACK arguments are not event names.
    Packet p;
    EXPECT_EQ(decode_one("3" + quoted, p), Result::Packet);
  }
  EXPECT_FALSE(is_reserved_event("connection"));
  EXPECT_FALSE(is_reserved_event("Connect"));
  EXPECT_FALSE(is_reserved_event(""));
  EXPECT_FALSE(is_reserved_event("connect_"));
  // Captured: 42["disconnect"] closes the session.
  EXPECT_TRUE(rejects(R"(2["disconnect"])"));
}

TEST(SioDecode, RejectsBadAck) {
  for (const char* s : {"3", "30", "3/a,1", "3{}", R"(3"x")", "31", "3null", "3[", "3[]]"}) {
    EXPECT_TRUE(rejects(s)) << s;
  }
}

TEST(SioDecode, RejectsBadConnectError) {
  for (const char* s : {"4", "4/x,", "4[]", "41", "4null", "4true", "4[\"x\"]"}) {
    EXPECT_TRUE(rejects(s)) << s;
  }
}

TEST(SioDecode, RejectsBadAttachmentCount) {
  for (const char* s : {R"(5-["a"])", R"(50-["a"])", R"(500-["a"])", R"(51["a"])", "5", "51",
                        "6", "61-", "51-", R"(5a-["a"])", R"(5 1-["a"])", R"(5-1-["a"])",
                        R"(5+1-["a"])", R"(51.0-["a"])", R"(511-["a"])",
                        R"(599999999999999999999999999999-["a"])", R"(6-[])", R"(60-[])",
                        R"(611-[])"}) {
    EXPECT_TRUE(rejects(s)) << s;
  }
  // The limit is configurable; exactly the limit is fine.
  EXPECT_TRUE(rejects(R"(53-["a"])", 2));
  Decoder d(2);
  Packet p;
  std::string err;
  EXPECT_EQ(d.add_text(R"(52-["a"])", p, err), Result::NeedMore);
}

TEST(SioDecode, RejectsBadAckId) {
  EXPECT_TRUE(rejects(R"(218446744073709551616["a"])"));          // UINT64_MAX + 1
  EXPECT_TRUE(rejects(R"(299999999999999999999["a"])"));          // 20 digits, too big
  EXPECT_TRUE(rejects(R"(2000000000000000000000001["a"])"));      // 25 digits
  EXPECT_TRUE(rejects("2" + std::string(10000, '1') + "[\"a\"]"));  // absurd
}

TEST(SioDecode, AcceptsJsonJavaScriptSendsThatJanssonRefusesAsIs) {
  // Node accepts these: integers beyond int64 (read as doubles, as in
  // JavaScript) and lone surrogates (read as U+FFFD).
  Decoder d;
  Packet p;
  std::string err;
  ASSERT_EQ(d.add_text(R"(2["a",18446744073709551616])", p, err), Decoder::Result::Packet) << err;
  EXPECT_DOUBLE_EQ(json_number_value(json_array_get(p.data.get(), 1)), 18446744073709551616.0);
  ASSERT_EQ(d.add_text(R"(2["a","x\ud800y","\ud83d\ude00"])", p, err), Decoder::Result::Packet) << err;
  EXPECT_STREQ(json_string_value(json_array_get(p.data.get(), 1)), "x\xEF\xBF\xBDy");
  EXPECT_STREQ(json_string_value(json_array_get(p.data.get(), 2)), "\xF0\x9F\x98\x80");  // a valid pair stays
  EXPECT_TRUE(rejects(R"(2["a","\ud800)"));  // still JSON, or an error
  // The other numbers of such a packet stay integers (a placeholder's num must).
  ASSERT_EQ(d.add_text(R"(2["a","\ud800",{"n":7,"r":1.5},18446744073709551616])", p, err), Decoder::Result::Packet) << err;
  EXPECT_TRUE(json_is_integer(json_object_get(json_array_get(p.data.get(), 2), "n")));
  EXPECT_DOUBLE_EQ(json_real_value(json_object_get(json_array_get(p.data.get(), 2), "r")), 1.5);
  ASSERT_EQ(d.add_text(R"(51-["a",{"_placeholder":true,"num":0},18446744073709551616])", p, err), Decoder::Result::NeedMore);
  ASSERT_EQ(d.add_binary("xy", p, err), Decoder::Result::Packet) << err;
}

// ---- binary reassembly ---------------------------------------------------------

TEST(SioBinary, ReassemblesCapturedBinwelcome) {
  Decoder d;
  Packet p;
  std::string err;
  ASSERT_EQ(d.add_text(
                R"(52-["binwelcome",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])",
                p, err),
            Result::NeedMore);
  EXPECT_TRUE(d.awaiting_binary());
  ASSERT_EQ(d.add_binary("\xde\xad\xbe\xef", p, err), Result::NeedMore);
  EXPECT_TRUE(d.awaiting_binary());
  ASSERT_EQ(d.add_binary("xy", p, err), Result::Packet);
  EXPECT_FALSE(d.awaiting_binary());
  EXPECT_EQ(p.type, PacketType::Event);
  EXPECT_EQ(p.nsp, "/");
  EXPECT_FALSE(p.id);
  ASSERT_EQ(p.attachments.size(), 2u);
  EXPECT_EQ(p.attachments[0], "\xde\xad\xbe\xef");
  EXPECT_EQ(p.attachments[1], "xy");
  EXPECT_EQ(data_text(p),
            R"(["binwelcome",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])");

  // The decoder is ready for the next packet.
  ASSERT_EQ(d.add_text(R"(23["withack",1])", p, err), Result::Packet);
  EXPECT_EQ(p.type, PacketType::Event);
  EXPECT_TRUE(p.attachments.empty());
  EXPECT_EQ(p.id, 3u);
}

TEST(SioBinary, BinaryAckInNamespace) {
  Decoder d;
  Packet p;
  std::string err;
  ASSERT_EQ(d.add_text(R"(61-/chat,7[{"_placeholder":true,"num":0}])", p, err), Result::NeedMore);
  ASSERT_EQ(d.add_binary("\x01\x02\x03", p, err), Result::Packet);
  EXPECT_EQ(p.type, PacketType::Ack);
  EXPECT_EQ(p.nsp, "/chat");
  EXPECT_EQ(p.id, 7u);
  ASSERT_EQ(p.attachments.size(), 1u);
  EXPECT_EQ(p.attachments[0], "\x01\x02\x03");
}

TEST(SioBinary, EmptyAndLargeAttachments) {
  Decoder d;
  Packet p;
  std::string err;
  ASSERT_EQ(d.add_text(R"(52-["e",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}])",
                       p, err),
            Result::NeedMore);
  ASSERT_EQ(d.add_binary("", p, err), Result::NeedMore);
  const std::string big(100000, '\xab');
  ASSERT_EQ(d.add_binary(big, p, err), Result::Packet);
  EXPECT_EQ(p.attachments[0], "");
  EXPECT_EQ(p.attachments[1], big);
}

TEST(SioBinary, MaxAttachments) {
  std::string header = R"(510-["many")";
  for (int i = 0; i < 10; ++i) header += R"(,{"_placeholder":true,"num":)" + std::to_string(i) + "}";
  header += "]";
  Decoder d;
  Packet p;
  std::string err;
  ASSERT_EQ(feed(d, header, 10, p, err), Result::Packet) << err;
  EXPECT_EQ(p.attachments.size(), 10u);
  EXPECT_EQ(p.attachments[9], "att9");
}

TEST(SioBinary, TextWhileAwaitingIsErrorAndResets) {
  Decoder d;
  Packet p;
  std::string err;
  ASSERT_EQ(d.add_text(R"(52-["a",{"_placeholder":true,"num":0}])", p, err), Result::NeedMore);
  ASSERT_EQ(d.add_binary("one", p, err), Result::NeedMore);
  EXPECT_EQ(d.add_text(R"(2["x"])", p, err), Result::Error);
  EXPECT_FALSE(err.empty());
  EXPECT_FALSE(d.awaiting_binary());
  // Clean state: a binary now is out of place, a text packet decodes.
  err.clear();
  EXPECT_EQ(d.add_binary("two", p, err), Result::Error);
  EXPECT_FALSE(err.empty());
  ASSERT_EQ(d.add_text(R"(2["x"])", p, err), Result::Packet);
  EXPECT_EQ(data_text(p), R"(["x"])");
  EXPECT_TRUE(p.attachments.empty());
}

TEST(SioBinary, BinaryWhenNotAwaitingIsError) {
  Decoder d;
  Packet p;
  std::string err;
  EXPECT_EQ(d.add_binary("\x01", p, err), Result::Error);
  EXPECT_FALSE(err.empty());
  EXPECT_FALSE(d.awaiting_binary());
  ASSERT_EQ(d.add_text(R"(2["x"])", p, err), Result::Packet);
  EXPECT_EQ(d.add_binary("\x01", p, err), Result::Error);
}

TEST(SioBinary, BadPlaceholders) {
  const char* bad[] = {
      R"(51-["a",{"_placeholder":true,"num":1}])",             // out of range
      R"(52-["a",{"_placeholder":true,"num":2}])",             // out of range
      R"(51-["a",{"_placeholder":true,"num":-1}])",            // negative
      R"(51-["a",{"_placeholder":true,"num":"0"}])",           // string
      R"(51-["a",{"_placeholder":true,"num":0.5}])",           // not an integer
      R"(51-["a",{"_placeholder":true,"num":null}])",          // null
      R"(51-["a",{"_placeholder":true}])",                     // missing num
      R"(51-["a",{"x":[1,{"y":{"_placeholder":true,"num":9}}]}])",  // deep
      R"(61-[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}])",
      R"(51-["a",{"_placeholder":true,"num":9223372036854775807}])",
  };
  for (const char* s : bad) {
    SCOPED_TRACE(s);
    Decoder d;
    Packet p;
    std::string err;
    ASSERT_EQ(d.add_text(s, p, err), Result::NeedMore);
    const size_t n = s[1] - '0';
    Result r = Result::NeedMore;
    for (size_t i = 0; i < n; ++i) r = d.add_binary("b", p, err);
    EXPECT_EQ(r, Result::Error);
    EXPECT_FALSE(err.empty());
    EXPECT_FALSE(d.awaiting_binary());
    EXPECT_EQ(d.add_text(R"(2["ok"])", p, err), Result::Packet);  // reset
  }
}

TEST(SioBinary, NonPlaceholderObjectsAreData) {
  // Only `"_placeholder": true` marks a placeholder; unreferenced attachments
  // and placeholder-looking values elsewhere are fine (JS does the same).
  const char* ok[] = {
      R"(51-["a",{"_placeholder":false,"num":7}])",
      R"(51-["a",{"_placeholder":"true","num":7}])",
      R"(51-["a",{"_placeholder":1,"num":7}])",
      R"(52-["a",{"_placeholder":true,"num":1}])",
      R"(51-["a",{"_placeholder":true,"num":0,"x":{"_placeholder":true,"num":5}}])",
  };
  for (const char* s : ok) {
    Decoder d;
    Packet p;
    std::string err;
    EXPECT_EQ(feed(d, s, static_cast<size_t>(s[1] - '0'), p, err), Result::Packet) << s << err;
  }
  // A placeholder in a plain EVENT is left alone.
  Packet p;
  EXPECT_EQ(decode_one(R"(2["a",{"_placeholder":true,"num":3}])", p), Result::Packet);
  EXPECT_TRUE(p.attachments.empty());
}

// ---- encoding ------------------------------------------------------------------

TEST(SioEncode, CapturedVectors) {
  EXPECT_EQ(encode(make(PacketType::Connect, "/", {}, "")), "0");
  EXPECT_EQ(encode(make(PacketType::Connect, "/admin2", {}, "")), "0/admin2,");
  EXPECT_EQ(encode(make(PacketType::Connect, "/", {}, R"({"sid":"1P-qosb00wFyviPUAAAA"})")),
            R"(0{"sid":"1P-qosb00wFyviPUAAAA"})");
  EXPECT_EQ(encode(make(PacketType::Connect, "/admin2", {}, R"({"sid":"HyrWrPzPgsTElNe9AAAB"})")),
            R"(0/admin2,{"sid":"HyrWrPzPgsTElNe9AAAB"})");
  EXPECT_EQ(encode(make(PacketType::Connect, "/", {},
                        R"({"sid":"udadnnJXZN8GwjICAAAA","pid":"Obg8aRAOEDYd2-OFAAAB"})")),
            R"(0{"sid":"udadnnJXZN8GwjICAAAA","pid":"Obg8aRAOEDYd2-OFAAAB"})");
  EXPECT_EQ(encode(make(PacketType::ConnectError, "/nonexistent", {},
                        R"({"message":"Invalid namespace"})")),
            R"(4/nonexistent,{"message":"Invalid namespace"})");
  EXPECT_EQ(encode(make(PacketType::ConnectError, "/", {},
                        R"({"message":"not authorized","data":{"content":"Please retry later"}})")),
            R"(4{"message":"not authorized","data":{"content":"Please retry later"}})");
  EXPECT_EQ(encode(make(PacketType::Event, "/", {}, R"(["welcome","hi",{"a":1}])")),
            R"(2["welcome","hi",{"a":1}])");
  EXPECT_EQ(encode(make(PacketType::Event, "/admin2", {}, R"(["nspmsg","x"])")),
            R"(2/admin2,["nspmsg","x"])");
  EXPECT_EQ(encode(make(PacketType::Event, "/", 0, R"(["hello","world"])")),
            R"(20["hello","world"])");
  EXPECT_EQ(encode(make(PacketType::Event, "/chat", 12, R"(["foo"])")), R"(2/chat,12["foo"])");
  EXPECT_EQ(encode(make(PacketType::Ack, "/", 0, R"(["ack-response",42])")),
            R"(30["ack-response",42])");
  EXPECT_EQ(encode(make(PacketType::Disconnect, "/", {}, "")), "1");
  EXPECT_EQ(encode(make(PacketType::Disconnect, "/admin2", {}, "")), "1/admin2,");
  EXPECT_EQ(encode(make(PacketType::Event, "/", UINT64_MAX, R"(["a"])")),
            R"(218446744073709551615["a"])");
}

TEST(SioEncode, AttachmentsMakeBinaryTypes) {
  EXPECT_EQ(encode(make(
                PacketType::Event, "/", {},
                R"(["binwelcome",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])",
                {"\xde\xad\xbe\xef", "xy"})),
            R"(52-["binwelcome",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])");
  EXPECT_EQ(encode(make(PacketType::Event, "/", 3, R"(["bin",{"_placeholder":true,"num":0}])",
                        {"\x01\x02\x03"})),
            R"(51-3["bin",{"_placeholder":true,"num":0}])");
  EXPECT_EQ(encode(make(PacketType::Ack, "/", 3, R"([{"_placeholder":true,"num":0}])",
                        {"\x01\x02\x03"})),
            R"(61-3[{"_placeholder":true,"num":0}])");
  EXPECT_EQ(encode(make(PacketType::Ack, "/chat", 1, R"([{"_placeholder":true,"num":0}])",
                        std::vector<std::string>(12, "z"))),
            R"(612-/chat,1[{"_placeholder":true,"num":0}])");
  // Explicit binary types follow the attachments too: never a zero count.
  EXPECT_EQ(encode(make(PacketType::BinaryEvent, "/", {}, R"(["a"])")), R"(2["a"])");
  EXPECT_EQ(encode(make(PacketType::BinaryAck, "/", 4, "[]")), "34[]");
  EXPECT_EQ(encode(make(PacketType::BinaryEvent, "/", {}, R"(["a"])", {"x"})), R"(51-["a"])");
}

TEST(SioEncode, DataEdgeCases) {
  // JS skips null data (`null != obj.data`).
  Packet p = make(PacketType::Connect, "/", {}, "");
  p.data.reset(json_null());
  EXPECT_EQ(encode(p), "0");
  // An empty namespace is written like "/".
  EXPECT_EQ(encode(make(PacketType::Event, "", {}, R"(["a"])")), R"(2["a"])");
  // String data (CONNECT_ERROR v2 style) is encoded as a JSON string.
  EXPECT_EQ(encode(make(PacketType::ConnectError, "/", {}, R"("bad")")), R"(4"bad")");
  // Control characters are escaped, so a payload never holds a raw 0x1e.
  p = make(PacketType::Event, "/", {}, "");
  p.data.reset(json_pack("[ss]", "e", "a\x1e" "b\n\"\\"));
  const std::string text = encode(p);
  EXPECT_EQ(text.find('\x1e'), std::string::npos);
  Packet back;
  ASSERT_EQ(decode_one(text, back), Result::Packet);
  EXPECT_STREQ(json_string_value(json_array_get(back.data.get(), 1)), "a\x1e" "b\n\"\\");
  // Reals keep full precision.
  p.data.reset(json_pack("[sf]", "r", 0.1));
  ASSERT_EQ(decode_one(encode(p), back), Result::Packet);
  EXPECT_EQ(json_real_value(json_array_get(back.data.get(), 1)), 0.1);
}

TEST(SioEncode, EncodeToAppends) {
  std::string out = "4";
  encode_to(make(PacketType::Event, "/", {}, R"(["welcome","hi",{"a":1}])"), out);
  EXPECT_EQ(out, R"(42["welcome","hi",{"a":1}])");
  encode_to(make(PacketType::Disconnect, "/admin2", {}, ""), out);
  EXPECT_EQ(out, R"(42["welcome","hi",{"a":1}]1/admin2,)");
}

TEST(SioEncode, RoundTripOfVectors) {
  for (const auto& v : kVectors) {
    SCOPED_TRACE(v.wire);
    Decoder d;
    Packet p;
    std::string err;
    ASSERT_EQ(feed(d, v.wire, v.attachments, p, err), Result::Packet);
    EXPECT_EQ(encode(p), v.wire);
  }
}

// ---- Engine.IO + Socket.IO together -----------------------------------------------

// Decodes a polling body and feeds the Engine.IO messages to one decoder.
std::vector<Packet> decode_polling(std::string_view body) {
  std::vector<eio::Packet> records;
  EXPECT_TRUE(eio::decode_payload(body, records));
  Decoder d;
  std::vector<Packet> packets;
  for (const auto& rec : records) {
    EXPECT_EQ(rec.type, eio::PacketType::Message);
    Packet p;
    std::string err;
    const Result r = rec.binary ? d.add_binary(rec.data, p, err) : d.add_text(rec.data, p, err);
    EXPECT_NE(r, Result::Error) << err;
    if (r == Result::Packet) packets.push_back(std::move(p));
  }
  EXPECT_FALSE(d.awaiting_binary());
  return packets;
}

// An event's header built around its args' text is encode()'s, byte for
// byte: every name, namespace, offset, binary count and args tried.
TEST(SioEncode, EventAroundArgsTextIsTheSameBytes) {
  const std::vector<std::string> names = {"chat:message", "message:new", "a\"b\\c", "caf\u00e9", "tab\there", ""};
  const std::vector<std::string> args = {
      "[]", "[1]", "[{\"id\":\"1-0\",\"content\":\"h\\u00e9llo \\\"x\\\"\",\"n\":1.5,\"m\":{}}]",
      "[\"s\",null,true,[1,2]]", "[{\"_placeholder\":true,\"num\":0}]"};
  for (const std::string& nsp : {"/"s, "/chat"s})
    for (const std::string& name : names)
      for (const std::string& a : args)
        for (const char* offset : {(const char*)nullptr, "1700000000000-0"})
          for (size_t bin : {0, 2}) {
            Packet p;
            p.type = PacketType::Event;
            p.nsp = nsp;
            p.attachments.assign(bin, "xy");
            Json arr = parse(a);
            Json name_json(json_stringn(name.data(), name.size()));
            ASSERT_TRUE(name_json);
            json_array_insert(arr.get(), 0, name_json.get());
            json_t* off = nullptr;
            if (offset) {
              off = json_string(offset);
              json_array_append_new(arr.get(), off);
            }
            p.data = std::move(arr);
            // The text as a module writes it: json_text of the args array.
            const std::string text = json_text(parse(a).get());
            EXPECT_EQ(encode_event(p, name_json.get(), text, off, "4"), encode(p, "4")) << name << " " << a;
            EXPECT_EQ(encode_event(p, name_json.get(), text, off), encode(p)) << name << " " << a;
          }
}

TEST(SioEncode, EventAroundTextThatIsNoArrayIsEncoded) {
  Packet p;
  p.data = parse(R"(["e",{"a":1}])");
  json_t* name = json_array_get(p.data.get(), 0);
  EXPECT_EQ(encode_event(p, name, "", nullptr), "2[\"e\",{\"a\":1}]");
  EXPECT_EQ(encode_event(p, name, "{\"a\":1}", nullptr), "2[\"e\",{\"a\":1}]");
}

// An ack with its data's text: the same bytes as encoding the data.
TEST(SioEncode, AckWithDataTextIsTheSameBytes) {
  for (size_t bin : {0, 1}) {
    Packet p;
    p.type = PacketType::Ack;
    p.nsp = "/chat";
    p.id = 42;
    p.attachments.assign(bin, "b");
    p.data = parse(R"([{"data":{"id":"1-0","metadata":{"f":{"_placeholder":true,"num":0}}}}])");
    EXPECT_EQ(encode_with_data(p, json_text(p.data.get()), "4"), encode(p, "4"));
  }
}

// json_append writes most values itself: byte for byte what jansson's dump
// (with the encoder's flags) gives, for every kind of value.
std::string jansson_text(const json_t* v) {
  char* text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
  std::string out = text ? text : "<refused>";
  free(text);
  return out;
}

TEST(SioEncode, JsonAppendIsJanssonsText) {
  const char* texts[] = {
      "null", "true", "false", "0", "-1", "9223372036854775807", "-9223372036854775808", "1.5", "1e300", "-0.0",
      "0.1", "\"\"", "\"plain ascii\"", "\"quote \\\" and backslash \\\\ \\/ slash\"", "\"tab\\t nl\\n cr\\r\"",
      "\"ctl \\u0001 \\u001f del \\u007f\"", "\"caf\\u00e9 \\ud83d\\ude00 \\u2028\"", "\"nul \\u0000 inside\"", "[]",
      "{}", "[[],{},[[]]]", "{\"a\":1,\"b\":[true,null,\"x\"],\"c\":{\"d\":{}}}", "{\"z\":1,\"a\":2,\"m\":3}",
      "{\"k\\u00e9y\":1,\"plain\":2}", "{\"ctl\\nkey\":\"v\"}", "[1,2.25,-3,\"4\",[5]]",
      "{\"content\":\"hello\",\"metadata\":{},\"createdAt\":\"2024-05-01T12:31:30.123Z\",\"n\":12345678901}",
  };
  for (const char* text : texts) {
    Json v = parse(text);
    std::string out = "<";
    ASSERT_TRUE(json_append(v.get(), out)) << text;
    EXPECT_EQ(out, "<" + jansson_text(v.get())) << text;
    EXPECT_EQ(json_text(v.get(), "[", "]"), "[" + jansson_text(v.get()) + "]") << text;
  }
  // Deeper than the fast writer goes: jansson writes it, the same bytes.
  Json deep = parse(std::string(100, '[') + "1" + std::string(100, ']'));
  std::string out;
  ASSERT_TRUE(json_append(deep.get(), out));
  EXPECT_EQ(out, jansson_text(deep.get()));
}

TEST(SioEncode, JsonAppendRefusesWhatJanssonRefuses) {
  // Invalid UTF-8 (a string built without checks), a NaN, a loop: nothing written.
  Json bad(json_array());
  json_array_append_new(bad.get(), json_string("ok"));
  json_array_append_new(bad.get(), json_stringn_nocheck("\xff\xfe", 2));
  std::string out = "kept";
  EXPECT_FALSE(json_append(bad.get(), out));
  EXPECT_EQ(out, "kept");
  EXPECT_EQ(json_text(bad.get(), "[", "]"), "");
  // A key that is not UTF-8 is jansson's to write, as it would.
  Json odd_key(json_object());
  json_object_setn_new_nocheck(odd_key.get(), "\xc3", 1, json_true());
  std::string odd;
  EXPECT_EQ(json_append(odd_key.get(), odd), jansson_text(odd_key.get()) != "<refused>");
  if (!odd.empty()) {
    EXPECT_EQ(odd, jansson_text(odd_key.get()));
  }
  Json loop(json_array());
  json_t* inner = json_array();
  json_array_append_new(loop.get(), inner);
  json_array_append(inner, loop.get());  // a cycle: jansson's loop check refuses it
  EXPECT_FALSE(json_append(loop.get(), out));
  EXPECT_EQ(out, "kept");
  json_array_clear(inner);  // breaks the cycle so that both are freed
}

// A recorded broadcast's offset, read back from its header (a recovered
// socket is not sent again what its recovery sent).
TEST(TrailingOffset, TheLastStringArgumentOfAnEvent) {
  EXPECT_EQ(trailing_offset(R"(2["chat","hi","1764780000123-ab-0"])"), "1764780000123-ab-0");
  EXPECT_EQ(trailing_offset(R"(2/chat,["m",{"a":1},"o"])"), "o");
  EXPECT_EQ(trailing_offset(R"(2["m",""])"), "");
  EXPECT_EQ(trailing_offset(R"(2["m",1,"2"])"), "2");
}

TEST(TrailingOffset, NoneWhenTheEventEndsOtherwise) {
  EXPECT_EQ(trailing_offset(""), "");
  EXPECT_EQ(trailing_offset(R"("]")"), "");
  EXPECT_EQ(trailing_offset(R"(2["m"])"), "") << "the name alone is no offset";
  EXPECT_EQ(trailing_offset(R"(2["m",1])"), "");
  EXPECT_EQ(trailing_offset(R"(2["m",{"k":"v"}])"), "");
  EXPECT_EQ(trailing_offset(R"(2["m",["x","y"]])"), "");
  EXPECT_EQ(trailing_offset(R"(2["m","o"] )"), "");
  EXPECT_EQ(trailing_offset(R"(2["m" "o"])"), "") << "no comma before it";
  EXPECT_EQ(trailing_offset(R"(2["m","a\"b"])"), "") << "offsets need no escapes: one with them is none";
}

TEST(SioOverEio, CapturedSixPacketPayload) {
  const auto packets = decode_polling(
      "40{\"sid\":\"K5w0g9XNE6dCaLcBAAAC\"}\x1e"
      "42[\"welcome\",\"hi\",{\"a\":1}]\x1e"
      "452-[\"binwelcome\",{\"_placeholder\":true,\"num\":0},{\"nested\":{\"_placeholder\":true,\"num\":1}}]\x1e"
      "b3q2+7w==\x1e"
      "beHk=\x1e"
      "421[\"withack\",1]");
  ASSERT_EQ(packets.size(), 4u);
  EXPECT_EQ(packets[0].type, PacketType::Connect);
  EXPECT_STREQ(json_str(packets[0].data.get(), "sid"), "K5w0g9XNE6dCaLcBAAAC");
  EXPECT_EQ(data_text(packets[1]), R"(["welcome","hi",{"a":1}])");
  EXPECT_EQ(packets[2].type, PacketType::Event);
  ASSERT_EQ(packets[2].attachments.size(), 2u);
  EXPECT_EQ(packets[2].attachments[0], "\xde\xad\xbe\xef");
  EXPECT_EQ(packets[2].attachments[1], "xy");
  EXPECT_EQ(packets[3].id, 1u);

  // Re-encoding each packet plus its attachments gives the captured body.
  std::string body;
  for (const auto& p : packets) {
    if (!body.empty()) body.push_back(eio::kRecordSeparator);
    eio::Packet msg;
    msg.data = encode(p);
    eio::encode_text(msg, body);
    for (const auto& a : p.attachments) {
      body.push_back(eio::kRecordSeparator);
      msg.data = a;
      msg.binary = true;
      eio::encode_text(msg, body);
    }
  }
  EXPECT_EQ(body,
            "40{\"sid\":\"K5w0g9XNE6dCaLcBAAAC\"}\x1e"
            "42[\"welcome\",\"hi\",{\"a\":1}]\x1e"
            "452-[\"binwelcome\",{\"_placeholder\":true,\"num\":0},{\"nested\":{\"_placeholder\":true,\"num\":1}}]\x1e"
            "b3q2+7w==\x1e"
            "beHk=\x1e"
            "421[\"withack\",1]");
}

TEST(SioOverEio, CapturedClientPost) {
  const auto packets = decode_polling(
      "430[\"got it\"]\x1e" "451-1[\"bin\",{\"_placeholder\":true,\"num\":0}]\x1e" "bAQID");
  ASSERT_EQ(packets.size(), 2u);
  EXPECT_EQ(packets[0].type, PacketType::Ack);
  EXPECT_EQ(packets[0].id, 0u);
  EXPECT_EQ(packets[1].type, PacketType::Event);
  EXPECT_EQ(packets[1].id, 1u);
  ASSERT_EQ(packets[1].attachments.size(), 1u);
  EXPECT_EQ(packets[1].attachments[0], "\x01\x02\x03");
}

// ---- robustness -------------------------------------------------------------------

TEST(SioRobustness, EveryPrefixDecodesOrFails) {
  for (const auto& v : kVectors) {
    const std::string_view wire = v.wire;
    for (size_t n = 0; n <= wire.size(); ++n) {
      Decoder d;
      Packet p;
      std::string err;
      const Result r = feed(d, wire.substr(0, n), v.attachments, p, err);
      if (r == Result::Error) {
        EXPECT_FALSE(err.empty());
        EXPECT_FALSE(d.awaiting_binary());
      } else if (r == Result::Packet) {
        // Whatever was accepted re-encodes to something that decodes again.
        Decoder d2;
        Packet again;
        ASSERT_EQ(feed(d2, encode(p), p.attachments.size(), again, err), Result::Packet)
            << wire.substr(0, n);
        EXPECT_EQ(encode(again), encode(p));
      }
    }
  }
}

TEST(SioRobustness, RandomMutationsNeverCrash) {
  // Mutations of valid packets reach deep into the grammar; pure random bytes
  // cover the rest. Each decoder sees a stream of mixed text/binary messages.
  std::mt19937 rng(20240601);
  const std::string alphabet = "0123456789-/,[]{}\":_placeholdertruenum \\";
  int packets = 0, need_more = 0;
  Decoder d;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s;
    if (rng() % 4 == 0) {
      const size_t len = rng() % 48;
      for (size_t i = 0; i < len; ++i) s.push_back(static_cast<char>(rng() & 0xFF));
    } else {
      s = kVectors[rng() % std::size(kVectors)].wire;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
        const char c = rng() % 2 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng() & 0xFF);
        switch (rng() % 3) {
          case 0: s.insert(pos, 1, c); break;
          case 1: if (pos < s.size()) s.erase(pos, 1); break;
          default: if (pos < s.size()) s[pos] = c; break;
        }
      }
    }
    Packet p;
    std::string err;
    const Result r = (rng() % 5 == 0) ? d.add_binary(s, p, err) : d.add_text(s, p, err);
    if (r == Result::Error) {
      EXPECT_FALSE(d.awaiting_binary());
      EXPECT_FALSE(err.empty());
    } else if (r == Result::Packet) {
      ++packets;
      EXPECT_NE(p.type, PacketType::BinaryEvent);
      EXPECT_NE(p.type, PacketType::BinaryAck);
    } else {
      ++need_more;
      EXPECT_TRUE(d.awaiting_binary());
    }
  }
  EXPECT_GT(packets, 100);
  EXPECT_GT(need_more, 100);
}

}  // namespace
}  // namespace dr::sio
