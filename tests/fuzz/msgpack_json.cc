// msgpack -> JSON (worker/sio/msgpack_json.h): whatever any process on the
// Redis publishes. Runs the adapter's decoders and helpers on the input, then
// writes what came out back as msgpack and JSON text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sio/msgpack_json.h"
#include "fuzz_check.h"

using namespace dr::cluster;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  {
    std::vector<std::string> attachments;
    dr::Json j = decode_body(in, attachments);
    if (j) {
      std::string text = dr::json_text(j.get());
      FUZZ_CHECK(!text.empty(), "a decoded value does not serialise");
      Packer pk;
      pk.json(j.get(), attachments);
      Unpacked again;
      FUZZ_CHECK(again.parse(pk.out()), "what the packer wrote does not parse");
    }
  }
  Unpacked u;
  if (!u.parse(in)) return 0;
  const msgpack_object& root = u.root();
  // The fields the adapter reads from its messages.
  for (const char* key : {"uid", "type", "data", "opts", "rooms", "except", "nsp", "requestId"}) {
    const msgpack_object* v = map_get(root, key);
    (void)as_str(v);
    (void)as_int(v);
    (void)as_true(v);
    (void)as_rooms(v);
  }
  (void)as_rooms(&root);
  std::vector<std::string> attachments;
  dr::Json j = to_json(root, attachments);
  FUZZ_CHECK(j != nullptr, "to_json returned nothing");
  (void)dr::json_text(j.get());
  return 0;
}
