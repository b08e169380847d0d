// The socket.io-msgpack-parser decoder (worker/sio/msgpack_packet.h): the
// input is one binary message from a client. Property: a packet it accepts
// encodes to a message that decodes to the same packet (type, namespace, ack
// id, data, attachments), and the text encoding of it reads back the same
// too, as a broadcast's header does on its way to msgpack clients.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "sio/msgpack_packet.h"

using namespace dr::sio;

namespace {

bool same(const Packet& p, const Packet& q) {
  const bool data = (!q.data && !p.data) || (q.data && p.data && json_equal(q.data.get(), p.data.get()));
  return q.type == p.type && q.nsp == p.nsp && q.id == p.id && q.attachments == p.attachments && data;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Packet p;
  std::string err;
  if (!decode_msgpack(in, p, err)) {
    FUZZ_CHECK(!err.empty(), "a refusal without a reason");
    return 0;
  }
  Packet q;
  std::string again = encode_msgpack(p);
  if (!decode_msgpack(again, q, err)) {
    std::fprintf(stderr, "re-encoded refused: %s\n", err.c_str());
    FUZZ_CHECK(false, "an accepted packet does not survive encode/decode");
  }
  FUZZ_CHECK(same(p, q), "the packet changed through encode/decode");
  // Through the text header, as broadcasts and emits travel: events and acks
  // (the only packets the text form gives attachments), in a namespace the
  // text form can name ("/..." without ','), as every configured one is (a
  // client's packet to another gets its CONNECT_ERROR encoded directly).
  if (p.type != PacketType::Event && p.type != PacketType::Ack) return 0;
  if (p.nsp.empty() || p.nsp[0] != '/' || p.nsp.find(',') != std::string::npos) return 0;
  Packet r;
  FUZZ_CHECK(decode_encoded(encode(p), p.attachments, r), "the text header of an accepted packet does not parse");
  FUZZ_CHECK(encode_msgpack(r) == again, "the text header's packet encodes differently");
  return 0;
}
