// ws::Reader reads a client's byte stream the same however TCP splits it:
// inside the 2-byte header, the extended length, the mask key, the payload,
// between frames and between the fragments of one message.
#include "http/websocket.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace dr::ws {
namespace {

// A masked client frame (RFC 6455 5.2).
std::string client_frame(uint8_t opcode, std::string_view payload, bool fin = true,
                         const char mask[4] = "\x37\xfa\x21\x3d") {
  std::string f;
  f.push_back(char((fin ? 0x80 : 0) | opcode));
  size_t n = payload.size();
  if (n < 126) {
    f.push_back(char(0x80 | n));
  } else if (n < 65536) {
    f.push_back(char(0x80 | 126));
    f.push_back(char(n >> 8));
    f.push_back(char(n & 0xff));
  } else {
    f.push_back(char(0x80 | 127));
    for (int i = 7; i >= 0; i--) f.push_back(char((uint64_t(n) >> (8 * i)) & 0xff));
  }
  f.append(mask, 4);
  for (size_t i = 0; i < n; i++) f.push_back(char(payload[i] ^ mask[i % 4]));
  return f;
}

// What the reader reported: messages and closes in order ("T:<size>:<text start>",
// "B:<size>", "C:<code>"), and the bytes it answered with (pongs, close frames),
// whose timing relative to the messages depends on the chunks and does not matter.
struct Outcome {
  std::vector<std::string> events;
  std::string sent;
  bool alive = true;
  bool operator==(const Outcome& o) const { return events == o.events && sent == o.sent && alive == o.alive; }
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  for (auto& e : o.events) os << e << " ";
  return os << "| sent " << o.sent.size() << " bytes | " << (o.alive ? "open" : "closed");
}

Outcome read_in_chunks(const std::string& stream, const std::vector<size_t>& cuts) {
  Outcome run;
  FunctionSink sink{
      [&](bool binary, bool, std::string_view data) {
        run.events.push_back(binary ? "B:" + std::to_string(data.size())
                                    : "T:" + std::to_string(data.size()) + ":" + std::string(data.substr(0, 16)));
      },
      [&](std::string_view bytes) { run.sent.append(bytes); },
      [&](uint16_t code) { run.events.push_back("C:" + std::to_string(code)); },
  };
  Reader r(1000000, false, sink);
  size_t pos = 0;
  for (size_t cut : cuts) {
    if (cut <= pos || cut > stream.size()) continue;
    if (run.alive) run.alive = r.feed(std::string_view(stream).substr(pos, cut - pos));
    pos = cut;
  }
  if (pos < stream.size() && run.alive) run.alive = r.feed(std::string_view(stream).substr(pos));
  return run;
}

Outcome read_whole(const std::string& stream) { return read_in_chunks(stream, {}); }

// Every kind of frame header and the boundaries between them.
std::string mixed_stream() {
  std::string s;
  s += client_frame(1, "42[\"hi\"]");                      // 7-bit length
  s += client_frame(1, std::string(300, 'a'));             // 16-bit length
  s += client_frame(2, std::string(200, '\x01'));          // binary
  s += client_frame(1, "42[\"frag", false);                // a fragmented message ...
  s += client_frame(9, "ping!");                           // ... a ping between its fragments ...
  s += client_frame(0, "mented\"]", true);                 // ... and its last fragment
  s += client_frame(1, "3");
  return s;
}

TEST(WebSocketReader, WholeStreamReference) {
  Outcome run = read_whole(mixed_stream());
  EXPECT_TRUE(run.alive);
  std::vector<std::string> want = {"T:8:42[\"hi\"]", "T:300:" + std::string(16, 'a'), "B:200", "T:16:42[\"fragmented\"]",
                                   "T:1:3"};
  EXPECT_EQ(run.events, want);
  EXPECT_EQ(run.sent, "\x8a\x05ping!");  // the pong
}

TEST(WebSocketReader, EverySplitPointReadsTheSame) {
  const std::string s = mixed_stream();
  Outcome whole = read_whole(s);
  for (size_t i = 1; i < s.size(); i++) {
    ASSERT_EQ(read_in_chunks(s, {i}), whole) << "split at byte " << i;
  }
}

TEST(WebSocketReader, EveryPairOfSplitPointsInTheHeadersReadsTheSame) {
  // Two cuts inside the first frames' headers and mask keys, where a
  // miscount of the header's size shows.
  const std::string s = client_frame(1, std::string(300, 'b')) + client_frame(1, "x");
  Outcome whole = read_whole(s);
  for (size_t i = 1; i < 12; i++)
    for (size_t j = i + 1; j < 12; j++) {
      ASSERT_EQ(read_in_chunks(s, {i, j}), whole) << "cuts at " << i << " and " << j;
    }
  for (size_t i = 300 + 8 - 2; i < s.size(); i++)
    for (size_t j = i + 1; j < s.size(); j++) ASSERT_EQ(read_in_chunks(s, {i, j}), whole) << i << ", " << j;
}

TEST(WebSocketReader, OneByteSegmentsReadTheSame) {
  std::string s = mixed_stream() + client_frame(1, std::string(70000, 'z'));  // and a 64-bit length
  Outcome whole = read_whole(s);
  ASSERT_EQ(whole.events.back(), "T:70000:" + std::string(16, 'z'));
  std::vector<size_t> cuts;
  for (size_t i = 1; i < s.size(); i++) cuts.push_back(i);
  EXPECT_EQ(read_in_chunks(s, cuts), whole);
}

TEST(WebSocketReader, SplitInsideTheMaskKeyOfA64BitFrame) {
  std::string s = client_frame(1, std::string(70000, 'q'));
  Outcome whole = read_whole(s);
  for (size_t i = 1; i <= 14; i++) ASSERT_EQ(read_in_chunks(s, {i}), whole) << "split at " << i;
}

TEST(WebSocketReader, ProtocolErrorsAreTheSameSplitOrNot) {
  // An unmasked frame, and a frame over the message limit, however split.
  std::string unmasked = "\x81\x02hi";
  std::string big = client_frame(2, std::string(10, 'x'));
  big[1] = char(0x80 | 127);
  big.replace(2, 0, std::string("\x00\x00\x00\x00\x7f\x00\x00\x00", 8));  // a 2 GB length
  for (const std::string& s : {unmasked, big}) {
    Outcome whole = read_whole(s);
    ASSERT_FALSE(whole.alive);
    for (size_t i = 1; i < s.size(); i++) {
      EXPECT_EQ(read_in_chunks(s, {i}), whole) << "split at " << i;
    }
  }
}

TEST(WebSocketReader, MessagesBeforeABadHeaderAreDeliveredInTheSameRead) {
  // A whole message, a close-worthy header: the message is read as if TCP had
  // cut between them, then the reader closes with one close frame of its own.
  std::string s = client_frame(1, "hello") + std::string("\x83\x80\x00\x00\x00\x00", 6);  // opcode 3
  Outcome whole = read_whole(s);
  EXPECT_EQ(whole.events, (std::vector<std::string>{"T:5:hello", "C:1002"}));
  EXPECT_EQ(whole.sent, std::string("\x88\x02\x03\xea", 4));  // one close frame, 1002
  EXPECT_FALSE(whole.alive);
  for (size_t i = 1; i < s.size(); i++) EXPECT_EQ(read_in_chunks(s, {i}), whole) << "split at " << i;
}

TEST(WebSocketReader, AnErrorWslayFindsSendsOneCloseFrame) {
  // A continuation frame with no message to continue: wslay's protocol error.
  Outcome o = read_whole(client_frame(0, "orphan"));
  EXPECT_FALSE(o.alive);
  ASSERT_EQ(o.events.size(), 1u);
  EXPECT_EQ(o.sent.size(), 4u) << "exactly one close frame with a status";
  EXPECT_EQ(uint8_t(o.sent[0]), 0x88);
}

TEST(WebSocketReader, AReaderThatFailedInsideAFrameLeavesTheNextReaderUnharmed) {
  // The frame layer is shared by the process: an error in the first chunk of
  // a large frame must not leave the rest of that frame for another reader.
  std::string bad = client_frame(1, "\xff" + std::string(6000, 'x'));  // not UTF-8
  Outcome failed = read_whole(bad);
  EXPECT_EQ(failed.events, (std::vector<std::string>{"C:1002"}));
  EXPECT_EQ(failed.sent, std::string("\x88\x02\x03\xef", 4));  // 1007: invalid payload
  Outcome next = read_whole(client_frame(1, "42[\"ok\"]"));
  EXPECT_EQ(next.events, (std::vector<std::string>{"T:8:42[\"ok\"]"}));
  EXPECT_TRUE(next.alive);
}

TEST(WebSocketReader, AMessageReadInsideAnotherReadersCallbackIsReadWhole) {
  // A message handed up can lead to another connection's bytes being read
  // (a pipelined upgrade after a long-polling answer) while the first
  // message is still being looked at.
  std::vector<std::string> got;
  FunctionSink inner_sink{[&](bool, bool, std::string_view d) { got.emplace_back(d); }, [](std::string_view) {},
                          [](uint16_t) {}};
  Reader inner(1000, false, inner_sink);
  FunctionSink outer_sink{[&](bool, bool, std::string_view d) {
                            std::string before(d);
                            inner.feed(client_frame(1, "inner message"));
                            got.push_back(before == d ? std::string(d) : "clobbered");
                          },
                          [](std::string_view) {}, [](uint16_t) {}};
  Reader outer(1000, false, outer_sink);
  EXPECT_TRUE(outer.feed(client_frame(1, "outer message")));
  EXPECT_EQ(got, (std::vector<std::string>{"inner message", "outer message"}));
}

TEST(WebSocketReader, CloseIsAnsweredWithItsCodeAndReason) {
  Outcome o = read_whole(client_frame(1, "hi") + client_frame(8, "\x0f\xa0" "bye") + client_frame(1, "after"));
  EXPECT_EQ(o.events, (std::vector<std::string>{"T:2:hi", "C:4000"}));
  EXPECT_EQ(o.sent, "\x88\x05\x0f\xa0" "bye");
  EXPECT_FALSE(o.alive);
}

// UTF-8 is checked eight ASCII bytes at a time between characters: a
// multi-byte character or a bad byte at every offset from a word boundary,
// and a character cut between two fragments, read as byte by byte would.
TEST(WebSocketReader, TextIsValidUtf8AtEveryOffset) {
  const std::vector<std::pair<std::string, bool>> pieces = {
      {"\xc3\xa9", true},          // é
      {"\xe2\x82\xac", true},      // €
      {"\xf0\x9f\x98\x80", true},  // an emoji
      {"\xff", false},              // never in UTF-8
      {"\xc0\xaf", false},          // overlong
      {"\xed\xa0\x80", false},      // a surrogate
      {"\xe2\x82", false},          // cut short, then ASCII
      {"\xe2" "aaaaaaaa" "\x82\xac", false},  // a word of ASCII inside a character
  };
  for (auto& [piece, valid] : pieces) {
    for (size_t before = 0; before < 20; before++) {
      std::string text = std::string(before, 'a') + piece + std::string(17, 'b');
      Outcome o = read_whole(client_frame(1, text));
      EXPECT_EQ(o.alive, valid) << "piece of " << piece.size() << " bytes after " << before;
      if (!valid) {
        EXPECT_EQ(o.sent, std::string("\x88\x02\x03\xef", 4));  // 1007
      }
    }
  }
  // "€" cut after its first byte, between two fragments of one message.
  std::string split = client_frame(1, std::string(9, 'a') + "\xe2", false) +
                      client_frame(0, "\x82\xac" + std::string(9, 'b'), true);
  Outcome o = read_whole(split);
  EXPECT_TRUE(o.alive);
  EXPECT_EQ(o.events, (std::vector<std::string>{"T:21:aaaaaaaaa\xe2\x82\xac" + std::string(4, 'b')}));
}

}  // namespace
}  // namespace dr::ws
