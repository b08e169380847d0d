// Engine.IO v4 packets: the encoding of one packet, and the polling payload
// (packets joined by the record separator 0x1e, binary as "b" + base64).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dr::eio {

enum class PacketType : uint8_t { Open = 0, Close, Ping, Pong, Message, Upgrade, Noop };

struct Packet {
  PacketType type = PacketType::Message;
  std::string data;     // text after the type digit, or the raw bytes when binary
  bool binary = false;  // only for Message
};

inline constexpr char kRecordSeparator = '\x1e';

// One text packet ("4hello", "2probe", "6", ...), as received in a WebSocket
// text frame or as one polling record; a record starting with 'b' is a binary
// message in base64. False on an empty string, an unknown type digit or bad base64.
bool decode_text(std::string_view s, Packet& out);

// A polling POST body: records split on 0x1e, each decoded with decode_text.
// False at the first bad record (`out` then holds the good ones before it).
bool decode_payload(std::string_view body, std::vector<Packet>& out);

// Appends the text form of `p` to `out`: type digit + data, or for a binary
// message "b" + base64(data). This is the polling record, and the WebSocket
// text frame content for non-binary packets.
void encode_text(const Packet& p, std::string& out);

// Standard base64 with padding (RFC 4648 section 4).
std::string base64_encode(std::string_view bytes);
bool base64_decode(std::string_view text, std::string& out);  // false on bad input

}  // namespace dr::eio
