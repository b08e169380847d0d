// The master's reading of a new connection's first bytes (worker/os/router):
// which worker's session a request line is for. Any input: no crash, a
// worker id in range, and completeness that only grows with more bytes.
// Besides, a session id made from the input's bytes (eio/sid) is found again
// in a request line, whatever the worker.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "eio/sid.h"
#include "fuzz_check.h"
#include "os/router.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (std::string_view path : {"/socket.io/", "/", "/a/b/"}) {
    int w = dr::Router::session_worker(path, in);
    FUZZ_CHECK(w >= -1 && w <= 255, "worker id out of range");
  }
  for (size_t cut = 0; cut <= size; cut += 1 + size / 8)
    if (dr::Router::line_complete(in.substr(0, cut)))
      FUZZ_CHECK(dr::Router::line_complete(in), "a complete line became incomplete with more bytes");

  if (size >= 15) {
    uint8_t random[10];
    memcpy(random, data + 1, 10);
    uint32_t counter;
    memcpy(&counter, data + 11, 4);
    int worker = data[0];
    std::string sid = dr::eio::make_sid(worker, random, counter);
    FUZZ_CHECK(sid.size() == 20, "sid length");
    FUZZ_CHECK(dr::eio::sid_worker(sid) == worker, "sid does not give back its worker");
    std::string line = "POST /socket.io/?EIO=4&transport=polling&sid=" + sid + "&t=x HTTP/1.1\r\n";
    FUZZ_CHECK(dr::Router::session_worker("/socket.io/", line) == worker, "request line does not give its sid's worker");
  }
  return 0;
}
