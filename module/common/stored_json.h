// JSON the app modules store in Redis (chat metadata, comment attachments)
// may hold binary values, which JSON text cannot: each one is stored as
// {"$binary":"<base64>"} (standard alphabet, padded), so that a backend can
// read it and write it too. A client's own object keys spelled "$binary",
// "$$binary", ... get one more '$' when stored and lose it when read, so only
// real binary reads back as binary.
#pragma once

#include <depth-realtime/module.h>

#include <string>
#include <vector>

namespace dr::app {

// `v` as stored: binary placeholders (numbered into `bin`) become markers.
Json to_stored(const json_t* v, const std::vector<std::string>& bin);
// Stored JSON back as clients get it: markers become placeholders for binary
// appended to `bin`.
Json from_stored(const json_t* v, std::vector<std::string>& bin);

}  // namespace dr::app
