// The configuration language (worker/core/conf_parser.h): the text as one
// file, with a fixed fake environment, and the size/time units on every
// argument the parse produced.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/conf_parser.h"
#include "fuzz_check.h"

using namespace dr::conf;

namespace {

void walk(const std::vector<Node>& nodes) {
  for (const Node& n : nodes) {
    FUZZ_CHECK(n.line >= 1, "a node without a line");
    for (const std::string& a : n.args) {
      (void)parse_size(a);
      (void)parse_msec(a);
    }
    walk(n.children);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // Includes stop at depth 0, before any file is read ("include /dev/zero;"
  // reads nothing). A glob is still expanded first: one directory listing is
  // cheap, a pattern over several levels ("/*/*/*") walks the disk, so those
  // inputs are skipped: any glob character with a '/' after it (escapes and
  // quotes can put anything between them). Relative includes resolve under a
  // directory that does not exist.
  size_t glob = in.find_first_of("*?[");
  if (glob != std::string_view::npos && in.find('/', glob) != std::string_view::npos) return 0;
  static const std::map<std::string, std::string> env = {
      {"HOME", "h"}, {"EMPTY", ""}, {"PORT", "3000"}, {"WORDS", "a b; c { d }"}, {"Q", "\"'$"}};
  ParseOptions opts;
  opts.max_include_depth = 0;
  opts.getenv = [](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  std::vector<Node> out;
  std::string err;
  if (parse_string(in, "/nonexistent-fuzz-dir/fuzz.conf", out, err, opts)) {
    walk(out);
  } else {
    FUZZ_CHECK(err.rfind("/nonexistent-fuzz-dir/fuzz.conf:", 0) == 0, "an error without file:line");
  }
  (void)parse_size(in);
  (void)parse_msec(in);
  return 0;
}
