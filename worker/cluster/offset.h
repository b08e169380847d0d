// Connection state recovery offsets, "<ms>.<uid><seq>": Socket.IO's offsets
// are the time in ms written in base-64 digits; ours add the publishing
// node's uid and a counter, so that they are unique in the cluster.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dr::cluster {

// The digits of offsets (and of node uids), 0 to 63.
inline constexpr char kBase64Digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

std::string base64_number(uint64_t v);
// -1 when `s` has a character that is not a digit ("" is 0).
int64_t parse_base64_number(std::string_view s);

std::string make_offset(int64_t ms, std::string_view uid, uint64_t seq);

// The publisher's clock in an offset, -1 when it is not one (or its clock is
// more than a day from ours: a last string argument that looks like one).
int64_t offset_ms(std::string_view offset);

}  // namespace dr::cluster
