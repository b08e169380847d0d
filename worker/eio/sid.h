// Engine.IO session ids: 15 bytes as 20 URL-safe base64 characters. The first
// byte is the id of the worker that made it, so the master and any worker can
// tell where a request for the session must go.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dr::eio {

// `worker` in the first byte, then `random` (10 bytes) and `counter`.
std::string make_sid(int worker, const uint8_t random[10], uint32_t counter);
// The id of the worker that made `sid` (its first two characters carry it),
// -1 when it cannot be one.
int sid_worker(std::string_view sid);

}  // namespace dr::eio
