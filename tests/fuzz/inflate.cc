// permessage-deflate (worker/http/compress.h inflate_message): a client's
// compressed WebSocket message. The first input byte picks the size limit,
// the rest is the message. Properties: an accepted message never exceeds the
// limit, and what our deflate writes inflates back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/compress.h"

using namespace dr::compress;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // 0xff: the daemon's default 1 MB; other values: small limits, to reach the edge.
  uint64_t max_out = data[0] == 0xff ? 1000000 : uint64_t(data[0]) * 97;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);

  std::string out;
  if (inflate_message(in, max_out, out)) {
    FUZZ_CHECK(out.size() <= max_out, "inflated past the limit");
    std::string again;
    FUZZ_CHECK(inflate_message(deflate(out, 6, Format::Raw), max_out, again) && again == out,
               "deflate/inflate does not round-trip an inflated message");
  }
  std::string round;
  std::string packed = deflate(in, data[0] % 10, Format::Raw);
  FUZZ_CHECK(inflate_message(packed, in.size(), round) && round == in, "deflate/inflate does not round-trip");
  return 0;
}
