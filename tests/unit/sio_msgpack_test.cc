// socket.io-msgpack-parser packets (worker/sio/msgpack_packet.h).
//
// The hex strings are what socket.io-msgpack-parser 3.0.2 (notepack.io 2.2.0)
// writes: each comes from
//   node -e 'const {Encoder} = require("socket.io-msgpack-parser");
//            console.log(new Encoder().encode(PACKET)[0].toString("hex"))'
// run in tests/ with PACKET the object in the comment above it, shaped as
// socket.io 4.8 (s_*) or socket.io-client 4.8 (c_*) builds it.
#include "sio/msgpack_packet.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dr::sio {
namespace {

// Hex digits to bytes; spaces are for reading.
std::string unhex(std::string_view h) {
  std::string digits, out;
  for (char c : h)
    if (c != ' ') digits.push_back(c);
  for (size_t i = 0; i + 1 < digits.size(); i += 2) out.push_back(char(std::stoi(digits.substr(i, 2), nullptr, 16)));
  return out;
}

std::string hex(std::string_view b) {
  static const char d[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

Packet make(PacketType type, std::string nsp, std::optional<uint64_t> id, std::string_view json,
            std::vector<std::string> attachments = {}) {
  Packet p;
  p.type = type;
  p.nsp = std::move(nsp);
  p.id = id;
  if (!json.empty()) p.data = json_parse(json);
  EXPECT_TRUE(json.empty() || p.data) << json;
  p.attachments = std::move(attachments);
  return p;
}

std::string data_text(const Packet& p) { return p.data ? json_text(p.data.get()) : "<none>"; }

Packet decode_ok(std::string_view h) {
  Packet p;
  std::string err;
  EXPECT_TRUE(decode_msgpack(unhex(h), p, err)) << h << ": " << err;
  return p;
}

std::string decode_err(std::string_view bytes) {
  Packet p;
  std::string err;
  EXPECT_FALSE(decode_msgpack(bytes, p, err)) << hex(bytes);
  return err;
}

// ------------------------------------------------------------- encoder

TEST(SioMsgpackEncode, SameBytesAsANodeServer) {
  struct Case {
    Packet p;
    const char* hex;
  };
  const Case cases[] = {
      // {type: 0, data: {sid: "abc"}, nsp: "/"}
      {make(PacketType::Connect, "/", {}, R"({"sid":"abc"})"),
       "83a47479706500a46461746181a3736964a3616263a36e7370a12f"},
      // {type: 2, data: ["ev", 1, 2.5, -40, "x", true, null, {k: "v"}], nsp: "/chat"}
      {make(PacketType::Event, "/chat", {}, R"(["ev",1,2.5,-40,"x",true,null,{"k":"v"}])"),
       "83a47479706502a46461746198a2657601cb4004000000000000d0d8a178c3c081a16ba176a36e7370a52f63686174"},
      // {type: 2, data: ["q"], id: 7, nsp: "/"}
      {make(PacketType::Event, "/", 7, R"(["q"])"), "84a47479706502a46461746191a171a2696407a36e7370a12f"},
      // {id: 3, type: 3, data: [Buffer.from([0xde, 0xad])], nsp: "/"}
      {make(PacketType::Ack, "/", 3, R"([{"_placeholder":true,"num":0}])", {"\xde\xad"}),
       "84a2696403a47479706503a46461746191c402deada36e7370a12f"},
      // {type: 4, data: {message: "Authentication failed", data: {code: "AUTH_FAILED"}}, nsp: "/"}
      {make(PacketType::ConnectError, "/", {},
            R"({"message":"Authentication failed","data":{"code":"AUTH_FAILED"}})"),
       "83a47479706504a46461746182a76d657373616765b541757468656e7469636174696f6e206661696c6564a46461746181a4636f6465ab"
       "415554485f4641494c4544a36e7370a12f"},
      // {type: 1, nsp: "/"}
      {make(PacketType::Disconnect, "/", {}, ""), "82a47479706501a36e7370a12f"},
  };
  for (auto& c : cases) EXPECT_EQ(hex(encode_msgpack(c.p)), c.hex);
}

TEST(SioMsgpackEncode, BinaryTypesAreWrittenAsPlainOnes) {
  // The text decoder's BinaryEvent never reaches here, but a 5 on the wire
  // would make socket.io-msgpack-parser's client refuse the packet.
  Packet p = make(PacketType::BinaryEvent, "/", {}, R"(["b",{"_placeholder":true,"num":0}])", {"x"});
  Packet back;
  std::string err;
  ASSERT_TRUE(decode_msgpack(encode_msgpack(p), back, err)) << err;
  EXPECT_EQ(back.type, PacketType::Event);
  ASSERT_EQ(back.attachments.size(), 1u);
  EXPECT_EQ(back.attachments[0], "x");
}

TEST(SioMsgpackEncode, DanglingPlaceholderIsNil) {
  Packet p = make(PacketType::Event, "/", {}, R"(["b",{"_placeholder":true,"num":4}])");
  // ... 92 a162 c0 (nil where the binary would be)
  EXPECT_NE(hex(encode_msgpack(p)).find("92a162c0"), std::string::npos);
}

// ------------------------------------------------------------- decoder

TEST(SioMsgpackDecode, ConnectWithoutAuthSendsUndefinedData) {
  // {type: 0, data: undefined, nsp: "/"}: notepack writes undefined as fixext 1.
  Packet p = decode_ok("83a47479706500a464617461d40000a36e7370a12f");
  EXPECT_EQ(p.type, PacketType::Connect);
  EXPECT_EQ(p.nsp, "/");
  EXPECT_FALSE(p.data);
  EXPECT_FALSE(p.id);
}

TEST(SioMsgpackDecode, ConnectWithAuth) {
  // {type: 0, data: {token: "t"}, nsp: "/admin"}
  Packet p = decode_ok("83a47479706500a46461746181a5746f6b656ea174a36e7370a62f61646d696e");
  EXPECT_EQ(p.nsp, "/admin");
  EXPECT_EQ(data_text(p), R"({"token":"t"})");
}

TEST(SioMsgpackDecode, EventWithAckIgnoresOptions) {
  // {type: 2, data: ["hello", "world"], options: {compress: true}, id: 0, nsp: "/"}
  Packet p = decode_ok("85a47479706502a46461746192a568656c6c6fa5776f726c64a76f7074696f6e7381a8636f6d7072657373c3a2"
                       "696400a36e7370a12f");
  EXPECT_EQ(p.type, PacketType::Event);
  ASSERT_TRUE(p.id);
  EXPECT_EQ(*p.id, 0u);
  EXPECT_EQ(data_text(p), R"(["hello","world"])");
}

TEST(SioMsgpackDecode, NestedBuffersBecomeAttachments) {
  // {type: 2, data: ["bin", {a: Buffer.from([1, 2, 3]), list: [Buffer.alloc(0)]}], options: {...}, nsp: "/"}
  Packet p = decode_ok("84a47479706502a46461746192a362696e82a161c403010203a46c69737491c400a76f7074696f6e7381a8636f6d"
                       "7072657373c3a36e7370a12f");
  EXPECT_EQ(data_text(p), R"(["bin",{"a":{"_placeholder":true,"num":0},"list":[{"_placeholder":true,"num":1}]}])");
  ASSERT_EQ(p.attachments.size(), 2u);
  EXPECT_EQ(p.attachments[0], std::string("\x01\x02\x03"));
  EXPECT_EQ(p.attachments[1], "");
}

TEST(SioMsgpackDecode, AckWithUndefinedArgument) {
  // {type: 3, id: 5, data: ["ok", undefined], nsp: "/"}: undefined in an array is null, as in JSON.
  Packet p = decode_ok("84a47479706503a2696405a46461746192a26f6bd40000a36e7370a12f");
  EXPECT_EQ(p.type, PacketType::Ack);
  EXPECT_EQ(*p.id, 5u);
  EXPECT_EQ(data_text(p), R"(["ok",null])");
}

TEST(SioMsgpackDecode, DateArrayBufferAndUndefinedMember) {
  // {type: 2, data: ["misc", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)),
  //  new Uint8Array([9, 8]).buffer, {u: undefined, n: 1}], nsp: "/"}
  Packet p = decode_ok("83a47479706502a46461746194a46d697363d7000000018cc820db2ec70200090882a175d40000a16e01a36e7370a1"
                       "2f");
  EXPECT_EQ(data_text(p), R"(["misc","2024-01-02T03:04:05.678Z",{"_placeholder":true,"num":0},{"n":1}])");
  ASSERT_EQ(p.attachments.size(), 1u);
  EXPECT_EQ(p.attachments[0], std::string("\x09\x08"));
}

TEST(SioMsgpackDecode, ExtTypeZeroOfOneAndEightBytesIsABinary) {
  // ext 8 (not fixext) of type 0 is an ArrayBuffer whatever its size.
  // {type: 2, nsp: "/", data: ["x", <c7 01 00 aa>, <c7 08 00 ...>]}
  std::string m = unhex("83a474797065 02 a36e7370 a12f a464617461 93 a178 c70100aa c70800 0102030405060708");
  Packet p;
  std::string err;
  ASSERT_TRUE(decode_msgpack(m, p, err)) << err;
  EXPECT_EQ(data_text(p), R"(["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}])");
  ASSERT_EQ(p.attachments.size(), 2u);
  EXPECT_EQ(p.attachments[0], "\xaa");
  EXPECT_EQ(p.attachments[1], std::string("\x01\x02\x03\x04\x05\x06\x07\x08"));
}

TEST(SioMsgpackDecode, OtherExtIsTypeAndBinary) {
  // [5, Buffer] as notepack.io reads ext type 5: d5 05 0102
  Packet p;
  std::string err;
  ASSERT_TRUE(decode_msgpack(unhex("83a47479706502a36e7370a12fa46461746192a178d5050102"), p, err)) << err;
  EXPECT_EQ(data_text(p), R"(["x",[5,{"_placeholder":true,"num":0}]])");
}

TEST(SioMsgpackDecode, RoundTripKeepsWhatModulesSee) {
  Packet p = make(PacketType::Event, "/n", 9, R"(["e",{"b":{"_placeholder":true,"num":1}},{"_placeholder":true,"num":0},"é",1.5])",
                  {"zero", std::string("\0one", 4)});
  Packet back;
  std::string err;
  ASSERT_TRUE(decode_msgpack(encode_msgpack(p), back, err)) << err;
  // Binaries are numbered in the order they appear in the data.
  EXPECT_EQ(data_text(back),
            R"(["e",{"b":{"_placeholder":true,"num":0}},{"_placeholder":true,"num":1},"é",1.5])");
  ASSERT_EQ(back.attachments.size(), 2u);
  EXPECT_EQ(back.attachments[0], std::string("\0one", 4));
  EXPECT_EQ(back.attachments[1], "zero");
  EXPECT_EQ(back.nsp, "/n");
  EXPECT_EQ(*back.id, 9u);
}

TEST(SioMsgpackDecode, RefusesWhatTheJsDecoderRefuses) {
  // type 5 (no binary types in this parser), a string type, no type
  EXPECT_EQ(decode_err(unhex("82a47479706505a36e7370a12f")), "invalid packet type");
  EXPECT_EQ(decode_err(unhex("82a474797065a132a36e7370a12f")), "invalid packet type");
  EXPECT_EQ(decode_err(unhex("81a36e7370a12f")), "invalid packet type");
  // no nsp, a numeric nsp
  EXPECT_EQ(decode_err(unhex("82a47479706502a46461746191a161")), "invalid namespace");
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e737001a46461746191a161")), "invalid namespace");
  // event data not an array; CONNECT data an array; DISCONNECT with data
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e7370a12fa464617461a161")), "invalid payload");
  EXPECT_EQ(decode_err(unhex("83a47479706500a36e7370a12fa46461746190")), "invalid payload");
  EXPECT_EQ(decode_err(unhex("83a47479706501a36e7370a12fa46461746180")), "invalid payload");
  // and the text decoder's rules: an empty event, a reserved name
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e7370a12fa46461746190")), "invalid payload");
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e7370a12fa46461746191aa646973636f6e6e656374")), "invalid payload");
  // id: a string, a fraction, negative
  EXPECT_EQ(decode_err(unhex("84a47479706502a36e7370a12fa46461746191a161a26964a131")), "invalid packet id");
  EXPECT_EQ(decode_err(unhex("84a47479706502a36e7370a12fa46461746191a161a26964cb3ff8000000000000")),
            "invalid packet id");
  EXPECT_EQ(decode_err(unhex("84a47479706502a36e7370a12fa46461746191a161a26964ff")), "invalid packet id");
}

TEST(SioMsgpackDecode, RefusesMalformedInput) {
  EXPECT_EQ(decode_err(""), "not one msgpack value");
  EXPECT_EQ(decode_err(unhex("83a474797065")), "not one msgpack value");               // cut short
  EXPECT_EQ(decode_err(unhex("82a47479706501a36e7370a12fc0")), "not one msgpack value");  // trailing byte
  EXPECT_EQ(decode_err(unhex("dd7fffffff")), "not one msgpack value");  // a huge array declared, never sent
  EXPECT_EQ(decode_err(unhex("c1")), "not one msgpack value");
  EXPECT_EQ(decode_err(unhex("92a47479706502")), "not a msgpack map");
  EXPECT_EQ(decode_err("42[\"text\"]"), "not one msgpack value");
  // a string that is not UTF-8, a key that is neither string nor integer
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e7370a12fa46461746192a178a1ff")), "a string is not UTF-8");
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e7370a12fa46461746192a17881c0a131")),
            "a map key is neither a string nor an integer");
  // {_placeholder: true, num: 0} would read as a binary of the packet
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e7370a12fa46461746192a17882ac5f706c616365686f6c646572c3a36e756d00")),
            "a map shaped like a binary placeholder");
}

TEST(SioMsgpackDecode, DeepNestingIsRefusedNotOverflowed) {
  std::string m = unhex("83a47479706502a36e7370a12fa46461746192a178");
  m += std::string(10000, '\x91');
  m += '\xc0';
  EXPECT_FALSE(decode_err(m).empty());
}

TEST(SioMsgpackDecode, RepeatedKeyCountsLastAndLeavesNoOrphanBinary) {
  // data ["x", {a: bin "1", a: bin "2"}] (found by the fuzz target: tests/fuzz/corpus/sio_msgpack)
  Packet p = decode_ok("83a47479706502a36e7370a12fa46461746192a17882a161c40131a161c40132");
  EXPECT_EQ(data_text(p), R"(["x",{"a":{"_placeholder":true,"num":0}}])");
  ASSERT_EQ(p.attachments.size(), 1u);
  EXPECT_EQ(p.attachments[0], "2");
}

TEST(SioMsgpackDecode, AThousandBinariesAtMost) {
  auto with = [](size_t n) {
    std::string m = unhex("83a47479706502a36e7370a12fa464617461dc") + char(n >> 8) + char(n & 0xff);
    m += unhex("a178");  // the event name
    for (size_t i = 1; i < n; i++) m += unhex("c400");
    return m;
  };
  Packet p;
  std::string err;
  EXPECT_TRUE(decode_msgpack(with(1001), p, err)) << err;
  EXPECT_EQ(p.attachments.size(), 1000u);
  EXPECT_EQ(decode_err(with(1002)), "too many binaries");
}

TEST(SioMsgpackDecode, NulInAKeyIsRefused) {
  EXPECT_EQ(decode_err(unhex("83a47479706502a36e7370a12fa46461746192a17881a20061c0")), "a map key holds a NUL");
}

TEST(SioMsgpackDecode, AnExtPairBeyondTheNestingTheEncoderCanWriteIsRefused) {
  // The map, the data array and 30 arrays: 32 containers, the most msgpack-c
  // reads; an unknown ext inside would need a 33rd for [type, bin].
  std::string m = unhex("83a47479706502a36e7370a12fa464617461") + std::string(31, '\x91') + unhex("d50501 02");
  EXPECT_EQ(decode_err(m), "nested too deep");
  std::string ok = unhex("83a47479706502a36e7370a12fa464617461") + std::string(30, '\x91') + unhex("d50501 02");
  Packet p;
  std::string err;
  EXPECT_FALSE(decode_msgpack(ok, p, err));  // [[...[pair]]]: the first element is not an event name
  EXPECT_EQ(err, "invalid payload");
}

TEST(SioMsgpackDecode, IntegerKeysAndWholeFloatsAsJavaScriptReadsThem) {
  // {1: "a"} keys by text; type 2.0 (float64) is the integer 2.
  Packet p;
  std::string err;
  ASSERT_TRUE(decode_msgpack(unhex("83a474797065cb4000000000000000a36e7370a12fa46461746192a17881 01a161"), p, err))
      << err;
  EXPECT_EQ(p.type, PacketType::Event);
  EXPECT_EQ(data_text(p), R"(["x",{"1":"a"}])");
}

// ---------------------------------------------------- decode_encoded

TEST(SioDecodeEncoded, ReadsBackWhatTheServerWroteReservedNamesToo) {
  Packet p = make(PacketType::Event, "/", {}, R"(["disconnect",{"_placeholder":true,"num":0}])", {"b"});
  Packet back;
  ASSERT_TRUE(decode_encoded(encode(p), p.attachments, back));
  EXPECT_EQ(back.type, PacketType::Event);
  EXPECT_EQ(data_text(back), R"(["disconnect",{"_placeholder":true,"num":0}])");
  ASSERT_EQ(back.attachments.size(), 1u);
  Packet bad;
  EXPECT_FALSE(decode_encoded("2[", {}, bad));
}

}  // namespace
}  // namespace dr::sio
