// Socket.IO packets as socket.io-msgpack-parser writes them (`parser msgpack;`):
// each packet is one msgpack map {type, nsp, data, id} sent as one binary
// Engine.IO message. Binary values are msgpack `bin` items inside `data`, not
// attachments after a header; here they become the placeholders and
// attachments of Packet, so modules see one form whichever parser is used.
#pragma once

#include <string>
#include <string_view>

#include "sio/sio_packet.h"

namespace dr::sio {

// The map of `p`; placeholders in `data` become `bin` items (a dangling one
// becomes nil). Event/Ack types are written as such whatever the attachments.
std::string encode_msgpack(const Packet& p);

// One binary message from a client. Checks what socket.io-msgpack-parser's
// decoder checks (type 0 to 4, nsp a string, data by type, id an integer)
// and the text decoder's payload rules (payload_valid). What notepack.io
// writes is read as it reads it: `bin` and ext type 0 (ArrayBuffer) are
// binaries, fixext 1 of type 0 is `undefined` (a missing member; null in an
// array, as JSON.stringify writes it), fixext 8 of type 0 is a Date (its ISO
// 8601 string, as JSON.stringify writes it), any other ext is [type, bin].
// A map shaped like a placeholder ({"_placeholder": true, ...}) is refused:
// it would read as a binary of the packet. At most 1000 binaries a packet.
bool decode_msgpack(std::string_view bytes, Packet& out, std::string& err);

}  // namespace dr::sio
