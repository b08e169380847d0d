// zlib for permessage-deflate (raw deflate, no context takeover: every
// message stands alone, so one compressed frame serves every recipient and no
// connection keeps a compressor) and for gzip/deflate polling responses.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dr::compress {

enum class Format { Raw, Gzip, Zlib };

// Compresses `in`; for Raw, the 00 00 ff ff tail of the final flush is removed
// as RFC 7692 wants.
std::string deflate(std::string_view in, int level, Format f);
// Inflates one permessage-deflate message; false when it is corrupt or would
// exceed `max_out` bytes.
bool inflate_message(std::string_view in, uint64_t max_out, std::string& out);

}  // namespace dr::compress
