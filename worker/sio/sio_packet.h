// Socket.IO v5 packets (the text encoding of socket.io-parser 4.x) and the
// reassembly of binary packets (a header followed by N binary attachments).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/json.h"

namespace dr::sio {

enum class PacketType : uint8_t {
  Connect = 0, Disconnect, Event, Ack, ConnectError, BinaryEvent, BinaryAck
};

struct Packet {
  PacketType type = PacketType::Event;
  std::string nsp = "/";
  std::optional<uint64_t> id;            // ack id
  Json data;                              // null when the packet has none
  std::vector<std::string> attachments;  // binary values; placeholders stay in `data`
};

// JSON text with lone UTF-16 surrogate escapes replaced by \uFFFD; false if
// there were none.
bool replace_lone_surrogates(std::string_view in, std::string& out);

// Reserved event names a client may not send (section 9 of the spec).
bool is_reserved_event(std::string_view name);

// The checks every decoder (text or msgpack) makes on a client packet's data:
// socket.io-parser's isPayloadValid(), and an event needs a name that is a
// number or a string other than a reserved one.
bool payload_valid(PacketType type, const json_t* data);

// The text header of `p` (without Engine.IO's leading '4'). When `p` has
// attachments, Event/Ack are written as BinaryEvent/BinaryAck with the count
// ("52-..."); the caller sends each attachment after it as a binary message.
// `prefix` goes before it (the Engine.IO packet type, for a message that is
// then sent as it is): the text is allocated once, at its size.
std::string encode(const Packet& p, std::string_view prefix = {});
// Same, appending to `out` (avoids a copy on hot paths).
void encode_to(const Packet& p, std::string& out);
// The header of `p` with `data_text` as its data (p.data is not read): for a
// reply whose JSON text the sender already has. The text must be what
// encoding the data gives.
std::string encode_with_data(const Packet& p, std::string_view data_text, std::string_view prefix = {});
// The header of the event `p` whose data is [name, ...args] (and `offset`
// last when not null), written around `args_text`, the args array's JSON
// text, instead of encoding them again: an event sent under several names
// encodes its args once. Text that is not an array: encode(p, prefix).
std::string encode_event(const Packet& p, const json_t* name, std::string_view args_text, const json_t* offset,
                         std::string_view prefix = {});

// Stateful decoder for one client: a text message may be a whole packet or the
// header of a binary packet that waits for its attachments.
class Decoder {
 public:
  enum class Result { Packet, NeedMore, Error };

  // `max_attachments`: more is an error (Node's default is 10).
  // `check_payload` false: a header this server encoded, which may carry
  // what a client may not send (a reserved event name, a CONNECT reply).
  explicit Decoder(size_t max_attachments = 10, bool check_payload = true)
      : max_attachments_(max_attachments), check_payload_(check_payload) {}

  // A text message. A text message while attachments are awaited is an error.
  Result add_text(std::string_view text, Packet& out, std::string& err);
  // A binary message; one outside a binary packet is an error.
  Result add_binary(std::string_view bytes, Packet& out, std::string& err);
  bool awaiting_binary() const { return pending_ != nullptr; }

 private:
  size_t max_attachments_;
  bool check_payload_;
  size_t expected_ = 0;
  std::unique_ptr<Packet> pending_;  // a binary packet awaiting attachments (made only then)
};

// A recorded broadcast's offset: the last argument of its encoded event
// header (`...,"<offset>"]`; offsets need no escapes). Empty when it ends
// otherwise.
std::string_view trailing_offset(std::string_view header);

// A header and attachments this server encoded (encode()), back to a Packet,
// without the checks made on client input. False when it does not parse.
bool decode_encoded(std::string_view header, const std::vector<std::string>& attachments, Packet& out);

}  // namespace dr::sio
