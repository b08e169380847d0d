#include "stored_json.h"

#include <openssl/evp.h>

#include <string_view>

namespace dr::app {
namespace {

std::string base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), int(in.size()));
  out.resize(size_t(n > 0 ? n : 0));
  return out;
}

// Strict: padded standard base64, nothing else (EVP_DecodeBlock also skips
// blanks and counts the padding as zero bytes).
bool unbase64(std::string_view in, std::string& out) {
  if (in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i++) {
    char c = in[i];
    bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    bool pad = c == '=' && i + 2 >= in.size() && (i + 1 == in.size() || in[i + 1] == '=');
    if (!alnum && !pad) return false;
  }
  out.assign(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), int(in.size()));
  if (n < 0) return false;
  size_t padding = in.empty() ? 0 : (in.back() == '=') + (in.size() > 1 && in[in.size() - 2] == '=');
  out.resize(size_t(n) - padding);
  return true;
}

bool is_placeholder(const json_t* v) {
  return json_is_true(json_object_get(v, "_placeholder")) && json_is_integer(json_object_get(v, "num"));
}

// "$binary", "$$binary", ...: the number of leading '$', 0 for other keys.
size_t binary_key_dollars(std::string_view key) {
  size_t n = 0;
  while (n < key.size() && key[n] == '$') n++;
  return n > 0 && key.substr(n) == "binary" ? n : 0;
}

}  // namespace

Json to_stored(const json_t* v, const std::vector<std::string>& bin) {
  if (json_is_array(v)) {
    Json arr(json_array());
    size_t i;
    json_t* item;
    json_array_foreach(v, i, item) json_array_append_new(arr.get(), to_stored(item, bin).release());
    return arr;
  }
  if (!json_is_object(v)) return json_share(const_cast<json_t*>(v));
  if (is_placeholder(v)) {
    json_int_t n = json_integer_value(json_object_get(v, "num"));
    if (n < 0 || size_t(n) >= bin.size()) return Json(json_null());  // as copy_with_binary
    std::string text = base64(bin[size_t(n)]);
    return Json(json_pack("{s:s%}", "$binary", text.data(), text.size()));
  }
  Json obj(json_object());
  const char* key;
  json_t* item;
  json_object_foreach(const_cast<json_t*>(v), key, item) {
    std::string name = binary_key_dollars(key) ? std::string("$") + key : key;
    json_object_set_new(obj.get(), name.c_str(), to_stored(item, bin).release());
  }
  return obj;
}

Json from_stored(const json_t* v, std::vector<std::string>& bin) {
  if (json_is_array(v)) {
    Json arr(json_array());
    size_t i;
    json_t* item;
    json_array_foreach(v, i, item) json_array_append_new(arr.get(), from_stored(item, bin).release());
    return arr;
  }
  if (!json_is_object(v)) return json_share(const_cast<json_t*>(v));
  const json_t* b64 = json_object_get(v, "$binary");
  std::string bytes;
  if (json_object_size(v) == 1 && json_is_string(b64) &&
      unbase64(std::string_view(json_string_value(b64), json_string_length(b64)), bytes)) {
    bin.push_back(std::move(bytes));
    return Json(json_pack("{s:b, s:I}", "_placeholder", 1, "num", json_int_t(bin.size() - 1)));
  }
  // A placeholder written by a backend refers to no attachment of ours.
  if (is_placeholder(v)) return Json(json_null());
  Json obj(json_object());
  const char* key;
  json_t* item;
  json_object_foreach(const_cast<json_t*>(v), key, item) {
    const char* name = binary_key_dollars(key) >= 2 ? key + 1 : key;
    json_object_set_new(obj.get(), name, from_stored(item, bin).release());
  }
  return obj;
}

}  // namespace dr::app
