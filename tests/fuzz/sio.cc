// The Socket.IO v5 decoder (worker/sio/sio_packet.h) of one client: a series
// of WebSocket messages, one per line of the input; a line starting with 'B'
// is a binary message (the rest of the line), any other a text message.
// Property: every packet delivered encodes to messages that decode to the
// same packet (type, namespace, ack id, data, attachments).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "sio/sio_packet.h"

using namespace dr::sio;

namespace {

void check_round_trip(const Packet& p) {
  std::string header = encode(p);
  Decoder d(p.attachments.size() > 10 ? p.attachments.size() : 10);
  Packet q;
  std::string err;
  Decoder::Result r = d.add_text(header, q, err);
  for (const std::string& a : p.attachments) {
    FUZZ_CHECK(r == Decoder::Result::NeedMore, "re-encoded packet: attachment count lost");
    r = d.add_binary(a, q, err);
  }
  if (r != Decoder::Result::Packet) {
    std::fprintf(stderr, "re-encoded: %s\nerror: %s\n", header.c_str(), err.c_str());
    FUZZ_CHECK(false, "a delivered packet does not survive encode/decode");
  }
  FUZZ_CHECK(q.type == p.type, "type changed");
  FUZZ_CHECK(q.nsp == p.nsp, "namespace changed");
  FUZZ_CHECK(q.id == p.id, "ack id changed");
  FUZZ_CHECK(q.attachments == p.attachments, "attachments changed");
  bool same = (!q.data && !p.data) || (q.data && p.data && json_equal(q.data.get(), p.data.get()));
  FUZZ_CHECK(same, "data changed");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Decoder decoder;
  std::string scratch;
  (void)replace_lone_surrogates(in, scratch);
  while (!in.empty()) {
    size_t nl = in.find('\n');
    std::string_view msg = in.substr(0, nl);
    in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
    Packet p;
    std::string err;
    Decoder::Result r = !msg.empty() && msg[0] == 'B' ? decoder.add_binary(msg.substr(1), p, err)
                                                      : decoder.add_text(msg, p, err);
    if (r == Decoder::Result::Error) FUZZ_CHECK(!err.empty(), "an error without a reason");
    if (r == Decoder::Result::Packet) check_round_trip(p);
  }
  return 0;
}
