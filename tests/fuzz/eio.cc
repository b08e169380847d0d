// Engine.IO v4 payloads (worker/eio/eio_packet.h): the polling POST body, one
// text record, and base64. Properties: what decodes re-encodes to text that
// decodes to the same packet; base64 is strict, so an accepted text is the
// one and only encoding of what it decodes to.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "eio/eio_packet.h"
#include "fuzz_check.h"

using namespace dr::eio;

namespace {

void check_round_trip(const Packet& p) {
  std::string text;
  encode_text(p, text);
  Packet q;
  FUZZ_CHECK(decode_text(text, q), "an encoded packet does not decode");
  FUZZ_CHECK(q.type == p.type && q.binary == p.binary && q.data == p.data, "encode/decode changed the packet");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  std::vector<Packet> packets;
  bool ok = decode_payload(in, packets);
  for (const Packet& p : packets) check_round_trip(p);
  if (ok) {
    // Joined again, the records are the body itself (encoding is canonical).
    std::string body;
    for (size_t i = 0; i < packets.size(); i++) {
      if (i) body.push_back(kRecordSeparator);
      encode_text(packets[i], body);
    }
    FUZZ_CHECK(body == in, "a decoded payload does not re-encode to itself");
  }

  Packet one;
  if (decode_text(in, one)) check_round_trip(one);

  std::string bytes;
  if (base64_decode(in, bytes)) FUZZ_CHECK(base64_encode(bytes) == in, "base64 accepted a non-canonical text");
  std::string back;
  FUZZ_CHECK(base64_decode(base64_encode(in), back) && back == in, "base64 does not round-trip");
  return 0;
}
