// The WebSocket reader (dr::ws::Reader, worker/http/websocket.h) fed one byte
// stream twice: whole, and cut into chunks whose sizes come from the input.
// A TCP stream may be cut anywhere, so what is delivered (messages, their
// flags, the close code, the control frames answered) must not depend on the
// cuts: any difference aborts.
//
// Inputs that once showed a difference are in the corpus (fixed_*): messages
// before a bad header, one close frame per error, pongs before a close.
//
// Input: byte 0 = flags (bit 0: permessage-deflate negotiated; bits 1-2: the
// message size limit), byte 1 = number N of chunk sizes (mod 16), then N
// bytes of chunk sizes (1 + value; used in turn, cycling), then the stream.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "http/websocket.h"
#include "ws_log.h"

namespace {

WsLog run(std::string_view stream, uint64_t max_message, bool deflate, const std::vector<size_t>& chunks) {
  WsLog log;
  dr::ws::FunctionSink sink{
      [&](bool binary, bool compressed, std::string_view data) {
        FUZZ_CHECK(data.size() <= max_message, "a message over the limit was delivered");
        FUZZ_CHECK(deflate || !compressed, "a compressed message without deflate");
        log.message(binary, compressed, data);
      },
      [&](std::string_view bytes) { log.sent.append(bytes); },
      [&](uint16_t code) { log.close(code); },
  };
  dr::ws::Reader reader(max_message, deflate, sink);
  size_t pos = 0, turn = 0;
  while (pos < stream.size()) {
    size_t n = chunks.empty() ? stream.size() : std::min(chunks[turn++ % chunks.size()], stream.size() - pos);
    if (!reader.feed(stream.substr(pos, n))) break;
    pos += n;
  }
  return log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool deflate = data[0] & 1;
  static const uint64_t kLimits[] = {125, 1000, 70000, 1000000};
  const uint64_t max_message = kLimits[(data[0] >> 1) & 3];
  size_t n = data[1] % 16;
  if (size < 2 + n) return 0;
  std::vector<size_t> chunks;
  for (size_t i = 0; i < n; i++) chunks.push_back(size_t(data[2 + i]) + 1);
  if (chunks.empty()) chunks.push_back(1);  // byte by byte
  std::string_view stream(reinterpret_cast<const char*>(data + 2 + n), size - 2 - n);

  WsLog whole = run(stream, max_message, deflate, {});
  WsLog split = run(stream, max_message, deflate, chunks);
  if (!(whole == split)) {
    whole.print("whole stream");
    split.print("in chunks");
    FUZZ_CHECK(false, "the reader's output depends on how the stream was cut");
  }
  return 0;
}
