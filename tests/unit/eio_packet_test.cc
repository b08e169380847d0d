// Engine.IO v4 packet and payload codec, and the strict base64 under it.
#include "eio/eio_packet.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace dr::eio {
namespace {

using namespace std::string_literals;

// Captured GET response body (engine-io-v4.md section 2.2): six packets.
const std::string kSixPackets =
    "40{\"sid\":\"K5w0g9XNE6dCaLcBAAAC\"}\x1e"
    "42[\"welcome\",\"hi\",{\"a\":1}]\x1e"
    "452-[\"binwelcome\",{\"_placeholder\":true,\"num\":0},{\"nested\":{\"_placeholder\":true,\"num\":1}}]\x1e"
    "b3q2+7w==\x1e"
    "beHk=\x1e"
    "421[\"withack\",1]";

Packet text_packet(PacketType type, std::string data = {}) {
  Packet p;
  p.type = type;
  p.data = std::move(data);
  return p;
}

Packet binary_packet(std::string bytes) {
  Packet p;
  p.type = PacketType::Message;
  p.data = std::move(bytes);
  p.binary = true;
  return p;
}

std::string encoded(const Packet& p) {
  std::string out;
  encode_text(p, out);
  return out;
}

// ---- base64 ---------------------------------------------------------------

TEST(Base64, Rfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},     {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, b64] : vectors) {
    EXPECT_EQ(base64_encode(plain), b64);
    std::string out = "junk";
    ASSERT_TRUE(base64_decode(b64, out)) << b64;
    EXPECT_EQ(out, plain);
  }
}

TEST(Base64, CapturedVectors) {
  EXPECT_EQ(base64_encode("\xde\xad\xbe\xef"), "3q2+7w==");
  EXPECT_EQ(base64_encode("xy"), "eHk=");
  EXPECT_EQ(base64_encode("\x01\x02\x03"), "AQID");
  std::string out;
  ASSERT_TRUE(base64_decode("3q2+7w==", out));
  EXPECT_EQ(out, "\xde\xad\xbe\xef");
  ASSERT_TRUE(base64_decode("eHk=", out));
  EXPECT_EQ(out, "xy");
}

TEST(Base64, AllByteValuesAndSlashPlus) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  const std::string b64 = base64_encode(all);
  EXPECT_EQ(b64.size(), 344u);
  EXPECT_NE(b64.find('+'), std::string::npos);
  EXPECT_NE(b64.find('/'), std::string::npos);
  std::string back;
  ASSERT_TRUE(base64_decode(b64, back));
  EXPECT_EQ(back, all);
  EXPECT_EQ(base64_encode("\xff\xff\xff"), "////");
  EXPECT_EQ(base64_encode("\xfb\xef\xbe"), "++++");
  EXPECT_EQ(base64_encode("\0\0\0"s), "AAAA");
}

TEST(Base64, RoundTripEveryLength) {
  std::mt19937 rng(1234);
  for (size_t len = 0; len < 200; ++len) {
    std::string bytes(len, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng() & 0xFF);
    const std::string b64 = base64_encode(bytes);
    EXPECT_EQ(b64.size(), (len + 2) / 3 * 4);
    std::string back;
    ASSERT_TRUE(base64_decode(b64, back));
    EXPECT_EQ(back, bytes);
  }
}

TEST(Base64, RejectsBadInput) {
  const std::string bad[] = {
      "Zg",          // unpadded
      "Zg=",         // wrong length
      "Zm9vY",       // wrong length
      "Z===",        // three '='
      "====",        // padding only
      "=Zg=",        // '=' first
      "Z=g=",        // '=' inside
      "Zg==Zg==",    // padding before the end
      "Zg==\n",      // trailing newline
      "Zm9v\nYmFy",  // embedded newline
      " Zm9v",       // whitespace
      "Zm9-",        // base64url alphabet
      "Zm9_",        // base64url alphabet
      "Zm9*",        // not base64
      "Zm9\0"s,      // NUL
      "Zm9\xc3\xa9"s.substr(0, 4),  // non-ASCII
      "Zh==",        // non-canonical: unused bits set
      "Zm9=",        // non-canonical: unused bits set
      "3q2+7x==",    // non-canonical variant of deadbeef
  };
  for (const auto& s : bad) {
    std::string out;
    EXPECT_FALSE(base64_decode(s, out)) << '"' << s << '"';
  }
}

TEST(Base64, RandomStringsNeverCrashAndAcceptedOnesAreCanonical) {
  // Strings over the alphabet plus '=' (and a little noise) hit the valid and
  // the nearly valid cases; an accepted string must re-encode to itself.
  const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
  std::mt19937 rng(42);
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    const size_t len = rng() % 13;
    std::string s;
    for (size_t i = 0; i < len; ++i) {
      if (rng() % 50 == 0) {
        s.push_back(static_cast<char>(rng() & 0xFF));
      } else if (i + 2 >= len && rng() % 2) {
        s.push_back('=');
      } else {
        s.push_back(chars[rng() % 64]);
      }
    }
    std::string out;
    if (base64_decode(s, out)) {
      ++accepted;
      EXPECT_EQ(base64_encode(out), s);
    }
  }
  EXPECT_GT(accepted, 1000);
}

// ---- single packets ---------------------------------------------------------

TEST(EioDecode, TextPackets) {
  Packet p;
  ASSERT_TRUE(decode_text("4hello", p));
  EXPECT_EQ(p.type, PacketType::Message);
  EXPECT_EQ(p.data, "hello");
  EXPECT_FALSE(p.binary);

  ASSERT_TRUE(decode_text("2probe", p));
  EXPECT_EQ(p.type, PacketType::Ping);
  EXPECT_EQ(p.data, "probe");

  ASSERT_TRUE(decode_text("3probe", p));
  EXPECT_EQ(p.type, PacketType::Pong);
  EXPECT_EQ(p.data, "probe");

  const char* bare[] = {"0", "1", "2", "3", "4", "5", "6"};
  for (int i = 0; i < 7; ++i) {
    p.data = "stale";
    ASSERT_TRUE(decode_text(bare[i], p));
    EXPECT_EQ(p.type, static_cast<PacketType>(i));
    EXPECT_EQ(p.data, "");
    EXPECT_FALSE(p.binary);
  }

  const std::string open =
      R"(0{"sid":"eK_ttJmg7hsba6V_AAAL","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000})";
  ASSERT_TRUE(decode_text(open, p));
  EXPECT_EQ(p.type, PacketType::Open);
  EXPECT_EQ(p.data, open.substr(1));
}

TEST(EioDecode, MessageDataIsOpaque) {
  // Whatever follows the digit is the data, NULs and UTF-8 included.
  Packet p;
  const std::string data = "\0a\xc3\xa9\x1f"s;
  ASSERT_TRUE(decode_text("4" + data, p));
  EXPECT_EQ(p.data, data);
  ASSERT_TRUE(decode_text("4b", p));  // 'b' only matters as the first char
  EXPECT_EQ(p.type, PacketType::Message);
  EXPECT_EQ(p.data, "b");
}

TEST(EioDecode, BinaryRecords) {
  Packet p;
  ASSERT_TRUE(decode_text("b3q2+7w==", p));
  EXPECT_EQ(p.type, PacketType::Message);
  EXPECT_TRUE(p.binary);
  EXPECT_EQ(p.data, "\xde\xad\xbe\xef");

  ASSERT_TRUE(decode_text("bAQID", p));
  EXPECT_EQ(p.data, "\x01\x02\x03");

  ASSERT_TRUE(decode_text("b", p));  // empty ArrayBuffer
  EXPECT_TRUE(p.binary);
  EXPECT_EQ(p.data, "");

  // A text packet after a binary one must clear the flag.
  ASSERT_TRUE(decode_text("4x", p));
  EXPECT_FALSE(p.binary);
}

TEST(EioDecode, Rejects) {
  Packet p;
  const std::string bad[] = {"", "7", "8hello", "9", "a", "B3q2+7w==", "-1", " 4",
                             "\x1e", "\0"s, "\xff", "b3q2+7w=", "b3q2+7x==", "bAQI", "b====",
                             "b3q2-7w=="};
  for (const auto& s : bad) EXPECT_FALSE(decode_text(s, p)) << '"' << s << '"';
}

TEST(EioEncode, TextAndBinary) {
  EXPECT_EQ(encoded(text_packet(PacketType::Message, "hello")), "4hello");
  EXPECT_EQ(encoded(text_packet(PacketType::Ping)), "2");
  EXPECT_EQ(encoded(text_packet(PacketType::Pong, "probe")), "3probe");
  EXPECT_EQ(encoded(text_packet(PacketType::Noop)), "6");
  EXPECT_EQ(encoded(text_packet(PacketType::Close)), "1");
  EXPECT_EQ(encoded(text_packet(PacketType::Open, R"({"sid":"x"})")), R"(0{"sid":"x"})");
  EXPECT_EQ(encoded(binary_packet("\xde\xad\xbe\xef")), "b3q2+7w==");
  EXPECT_EQ(encoded(binary_packet("xy")), "beHk=");
  EXPECT_EQ(encoded(binary_packet("")), "b");

  // encode_text appends.
  std::string out = "6";
  out.push_back(kRecordSeparator);
  encode_text(text_packet(PacketType::Close), out);
  EXPECT_EQ(out, "6\x1e" "1");

  // The binary flag is only meaningful on messages.
  Packet odd = text_packet(PacketType::Ping, "probe");
  odd.binary = true;
  EXPECT_EQ(encoded(odd), "2probe");
}

TEST(EioEncode, RoundTrip) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 500; ++iter) {
    Packet p;
    p.type = static_cast<PacketType>(rng() % 7);
    const size_t len = rng() % 40;
    for (size_t i = 0; i < len; ++i) p.data.push_back(static_cast<char>(rng() & 0xFF));
    p.binary = p.type == PacketType::Message && rng() % 2;
    Packet back;
    ASSERT_TRUE(decode_text(encoded(p), back));
    EXPECT_EQ(back.type, p.type);
    EXPECT_EQ(back.binary, p.binary);
    EXPECT_EQ(back.data, p.data);
  }
}

// ---- payloads ---------------------------------------------------------------

TEST(EioPayload, CapturedSixPackets) {
  std::vector<Packet> out;
  ASSERT_TRUE(decode_payload(kSixPackets, out));
  ASSERT_EQ(out.size(), 6u);
  for (const auto& p : out) EXPECT_EQ(p.type, PacketType::Message);
  EXPECT_EQ(out[0].data, R"(0{"sid":"K5w0g9XNE6dCaLcBAAAC"})");
  EXPECT_EQ(out[1].data, R"(2["welcome","hi",{"a":1}])");
  EXPECT_EQ(out[2].data,
            R"(52-["binwelcome",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}])");
  EXPECT_TRUE(out[3].binary);
  EXPECT_EQ(out[3].data, "\xde\xad\xbe\xef");
  EXPECT_TRUE(out[4].binary);
  EXPECT_EQ(out[4].data, "xy");
  EXPECT_FALSE(out[5].binary);
  EXPECT_EQ(out[5].data, R"(21["withack",1])");

  // Encoding the packets back, joined by 0x1e, gives the captured bytes.
  std::string body;
  for (size_t i = 0; i < out.size(); ++i) {
    if (i) body.push_back(kRecordSeparator);
    encode_text(out[i], body);
  }
  EXPECT_EQ(body, kSixPackets);
}

TEST(EioPayload, CapturedPostBodies) {
  std::vector<Packet> out;
  ASSERT_TRUE(decode_payload("420[\"hello\",\"world\"]\x1e" "40/admin2,", out));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, R"(20["hello","world"])");
  EXPECT_EQ(out[1].data, "0/admin2,");

  ASSERT_TRUE(decode_payload(
      "430[\"got it\"]\x1e" "451-1[\"bin\",{\"_placeholder\":true,\"num\":0}]\x1e" "bAQID", out));
  ASSERT_EQ(out.size(), 3u);  // previous contents replaced
  EXPECT_EQ(out[2].data, "\x01\x02\x03");
  EXPECT_TRUE(out[2].binary);

  ASSERT_TRUE(decode_payload("1", out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].type, PacketType::Close);

  ASSERT_TRUE(decode_payload("6\x1e" "1", out));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].type, PacketType::Noop);
  EXPECT_EQ(out[1].type, PacketType::Close);
}

TEST(EioPayload, StopsAtFirstBadRecord) {
  std::vector<Packet> out;
  EXPECT_FALSE(decode_payload("4a\x1e" "4b\x1e" "9c\x1e" "4d", out));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].data, "b");

  EXPECT_FALSE(decode_payload("4a\x1e" "b3q2+7w=\x1e" "4d", out));  // bad base64
  EXPECT_EQ(out.size(), 1u);

  EXPECT_FALSE(decode_payload("", out));  // one empty record
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(decode_payload("4a\x1e", out));  // trailing separator
  EXPECT_EQ(out.size(), 1u);
  EXPECT_FALSE(decode_payload("\x1e" "4a", out));  // leading separator
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(decode_payload("4a\x1e\x1e" "4b", out));  // empty record
  EXPECT_EQ(out.size(), 1u);
}

TEST(EioPayload, EveryPrefixDecodesOrFails) {
  // Cutting the body anywhere must give a clean yes/no; where it is a yes, the
  // prefix re-encodes to itself.
  for (size_t n = 0; n <= kSixPackets.size(); ++n) {
    const std::string prefix = kSixPackets.substr(0, n);
    std::vector<Packet> out;
    if (decode_payload(prefix, out)) {
      std::string body;
      for (size_t i = 0; i < out.size(); ++i) {
        if (i) body.push_back(kRecordSeparator);
        encode_text(out[i], body);
      }
      EXPECT_EQ(body, prefix);
    }
  }
}

TEST(EioPayload, RandomBytesNeverCrash) {
  std::mt19937 rng(99);
  const std::string interesting = "0123456b=+/\x1e" "AZaz";
  for (int iter = 0; iter < 10000; ++iter) {
    const size_t len = rng() % 64;
    std::string s;
    for (size_t i = 0; i < len; ++i) {
      s.push_back(rng() % 2 ? static_cast<char>(rng() & 0xFF)
                            : interesting[rng() % interesting.size()]);
    }
    std::vector<Packet> out;
    const bool ok = decode_payload(s, out);
    if (ok) {
      std::string body;
      for (size_t i = 0; i < out.size(); ++i) {
        if (i) body.push_back(kRecordSeparator);
        encode_text(out[i], body);
      }
      EXPECT_EQ(body, s);
    }
    Packet p;
    (void)decode_text(s, p);
  }
}

}  // namespace
}  // namespace dr::eio
