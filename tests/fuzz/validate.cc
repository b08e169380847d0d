// The payload schema validator (include/depth-realtime/validate.h): both the
// schema and the value come from the input. The first line is the schema, a
// space-separated list of fields written KIND REQ NAME [:MIN:MAX] [=A,B,...]:
//   KIND  S string, D id, N number, I integer, B boolean, O object, A array, Y any
//   REQ   ! required, ? optional
// ("*" alone: any payload). The rest of the input is the JSON value.
// Properties: a refusal names its field; lengths agree with an independent
// UTF-16 count; an accepted id is what id_string says.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/validate.h"
#include "fuzz_check.h"

using namespace dr::schema;

namespace dr {
// validate.cc's middleware answers through the daemon's send_error; the
// middleware is not run here, only linked.
void send_error(Socket&, const Event&, std::string_view, std::string_view, std::string_view) { std::abort(); }
}  // namespace dr

namespace {

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  while (true) {
    size_t p = s.find(sep);
    out.emplace_back(s.substr(0, p));
    if (p == std::string_view::npos) return out;
    s.remove_prefix(p + 1);
  }
}

Kind kind_of(char c) {
  switch (c) {
    case 'S': return Kind::String;
    case 'D': return Kind::Id;
    case 'N': return Kind::Number;
    case 'I': return Kind::Integer;
    case 'B': return Kind::Boolean;
    case 'O': return Kind::Object;
    case 'A': return Kind::Array;
    default: return Kind::Any;
  }
}

EventShape parse_schema(std::string_view line) {
  EventShape e{"ev", {}, line == "*"};
  if (e.any_payload) return e;
  for (const std::string& spec : split(line, ' ')) {
    if (spec.size() < 2) continue;
    std::string rest = spec.substr(2);
    std::vector<std::string> one_of;
    if (size_t eq = rest.find('='); eq != std::string::npos) {
      one_of = split(std::string_view(rest).substr(eq + 1), ',');
      rest.resize(eq);
    }
    double lo = 0, hi = 0;
    if (size_t colon = rest.find(':'); colon != std::string::npos) {
      std::vector<std::string> bounds = split(std::string_view(rest).substr(colon + 1), ':');
      lo = strtod(bounds[0].c_str(), nullptr);
      if (bounds.size() > 1) hi = strtod(bounds[1].c_str(), nullptr);
      rest.resize(colon);
    }
    e.fields.emplace_back(rest, kind_of(spec[0]), spec[1] == '!', lo, hi, std::move(one_of));
  }
  return e;
}

// UTF-16 code units of valid UTF-8 (jansson strings are valid UTF-8).
size_t utf16_units(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i++) {
    auto c = static_cast<unsigned char>(s[i]);
    if ((c & 0xc0) == 0x80) continue;  // continuation byte
    n += c >= 0xf0 ? 2 : 1;
  }
  return n;
}

void walk(const json_t* v) {
  if (json_is_string(v)) {
    std::string_view s(json_string_value(v), json_string_length(v));
    FUZZ_CHECK(js_length(s) == utf16_units(s), "js_length disagrees with a UTF-16 count");
    auto id = id_string(v);
    size_t len = utf16_units(s);
    FUZZ_CHECK(id.has_value() == (len >= 1 && len <= 128), "id_string: wrong length rule");
    if (id) FUZZ_CHECK(*id == s, "id_string changed a string id");
  } else if (json_is_integer(v)) {
    auto id = id_string(v);
    FUZZ_CHECK(id.has_value() == (json_integer_value(v) >= 0), "id_string: wrong integer rule");
  } else if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) walk(json_array_get(v, i));
  } else if (json_is_object(v)) {
    const char* key;
    json_t* child;
    json_object_foreach(const_cast<json_t*>(v), key, child) walk(child);
  } else {
    (void)id_string(v);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t nl = in.find('\n');
  if (nl == std::string_view::npos) return 0;
  EventShape shape = parse_schema(in.substr(0, nl));
  std::string_view text = in.substr(nl + 1);
  dr::Json value = dr::json_parse(text);
  if (!value) return 0;
  walk(value.get());
  std::string details;
  if (!validate(value.get(), shape, details)) {
    bool named = details.rfind("payload: ", 0) == 0;
    for (const Field& f : shape.fields) named = named || details.rfind(f.name + ": ", 0) == 0;
    FUZZ_CHECK(named, "a refusal that names no field");
  } else {
    FUZZ_CHECK(details.empty(), "an accepted payload with details");
  }
  return 0;
}
