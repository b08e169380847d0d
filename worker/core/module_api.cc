// Definitions of the small helpers the public module API declares.
#include "depth-realtime/module.h"

#include <cstdio>
#include <ctime>

namespace dr {
namespace {

const std::string* find(const std::vector<std::pair<std::string, std::string>>& list, std::string_view name) {
  for (auto& [k, v] : list)
    if (k == name) return &v;
  return nullptr;
}

}  // namespace

void ack_data(Socket& s, const Event& ev, Json data) {
  if (!ev.ack_id) return;
  Json reply(json_object());
  json_object_set_new(reply.get(), "data", data.release());
  s.ack(*ev.ack_id, Payload::of(std::move(reply)));
}

void send_error(Socket& s, const Event& ev, std::string_view code, std::string_view message,
                std::string_view details) {
  Json err(json_object());
  json_object_set_new(err.get(), "code", json_stringn(code.data(), code.size()));
  json_object_set_new(err.get(), "message", json_stringn(message.data(), message.size()));
  if (!details.empty()) json_object_set_new(err.get(), "details", json_stringn(details.data(), details.size()));
  send_error_object(s, ev, std::move(err));
}

void send_error_object(Socket& s, const Event& ev, Json err) {
  if (ev.ack_id) {
    Json wrap(json_object());
    json_object_set_new(wrap.get(), "error", err.release());
    s.ack(*ev.ack_id, Payload::of(std::move(wrap)));
  } else {
    s.emit("error", Payload::of(std::move(err)));
  }
}

Json copy_with_binary(const json_t* v, const std::vector<std::string>& in, std::vector<std::string>& out) {
  if (json_is_array(v)) {
    Json arr(json_array());
    size_t i;
    json_t* item;
    json_array_foreach(v, i, item) json_array_append_new(arr.get(), copy_with_binary(item, in, out).release());
    return arr;
  }
  if (!json_is_object(v)) return json_share(const_cast<json_t*>(v));
  const json_t* num = json_object_get(v, "num");
  if (json_is_true(json_object_get(v, "_placeholder")) && json_is_integer(num)) {
    json_int_t n = json_integer_value(num);
    if (n < 0 || size_t(n) >= in.size()) return Json(json_null());
    out.push_back(in[size_t(n)]);
    return Json(json_pack("{s:b, s:I}", "_placeholder", 1, "num", json_int_t(out.size() - 1)));
  }
  Json obj(json_object());
  const char* key;
  json_t* item;
  json_object_foreach(const_cast<json_t*>(v), key, item) {
    json_object_set_new(obj.get(), key, copy_with_binary(item, in, out).release());
  }
  return obj;
}

Payload payload_of(const json_t* value, const std::vector<std::string>& attachments) {
  Payload p;
  json_array_append_new(p.args.get(), value ? copy_with_binary(value, attachments, p.attachments).release()
                                            : json_null());
  return p;
}

std::string iso_time(int64_t ms) {
  int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);  // floor: before 1970 too
  time_t t = time_t(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms - secs * 1000));
  return buf;
}

std::string js_date(int64_t ms) {
  static const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t t = time_t(ms / 1000);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[96];
  snprintf(buf, sizeof buf, "%s %s %02d %04d %02d:%02d:%02d GMT+0000 (Coordinated Universal Time)", days[tm.tm_wday],
           months[tm.tm_mon], tm.tm_mday, tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

Json handshake_json(const Handshake& h) {
  auto pairs = [](const Handshake::Pairs& list) {
    Json o(json_object());
    for (auto& [k, v] : list) json_object_set_new(o.get(), std::string(k).c_str(), json_stringn(v.data(), v.size()));
    return o.release();
  };
  std::string_view url = h.url();
  Json hs(json_object());
  json_object_set_new(hs.get(), "headers", pairs(h.headers()));
  json_object_set_new(hs.get(), "time", json_string(js_date(h.issued_ms).c_str()));
  json_object_set_new(hs.get(), "address", json_stringn(h.address.data(), h.address.size()));
  json_object_set_new(hs.get(), "xdomain", json_boolean(h.header("origin").has_value()));
  json_object_set_new(hs.get(), "secure", json_boolean(h.secure));
  json_object_set_new(hs.get(), "issued", json_integer(json_int_t(h.issued_ms)));
  json_object_set_new(hs.get(), "url", json_stringn(url.data(), url.size()));
  json_object_set_new(hs.get(), "query", pairs(h.query()));
  return hs;
}

namespace {

void put_length(std::string& out, size_t n) {
  do {
    uint8_t b = n & 0x7f;
    n >>= 7;
    out.push_back(char(n ? b | 0x80 : b));
  } while (n);
}

// The string at `at` (after its length); `at` moves past it.
std::string_view take(std::string_view text, size_t& at) {
  size_t n = 0;
  for (int shift = 0; at < text.size(); shift += 7) {
    uint8_t b = uint8_t(text[at++]);
    n |= size_t(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
  }
  std::string_view s = text.substr(at, n);
  at += s.size();
  return s;
}

}  // namespace

void Handshake::add(char kind, std::string_view name, std::string_view value) {
  text_.push_back(kind);
  put_length(text_, name.size());
  text_.append(name);
  put_length(text_, value.size());
  text_.append(value);
}

void Handshake::set_url(std::string_view url) { add('u', {}, url); }
void Handshake::add_header(std::string_view name, std::string_view value) { add('h', name, value); }
void Handshake::add_query(std::string_view name, std::string_view value) { add('q', name, value); }

std::optional<std::string_view> Handshake::find(char kind, std::string_view name) const {
  size_t at = 0;
  while (at < text_.size()) {
    char k = text_[at++];
    std::string_view n = take(text_, at), v = take(text_, at);
    if (k == kind && n == name) return v;
  }
  return std::nullopt;
}

Handshake::Pairs Handshake::all(char kind) const {
  Pairs out;
  size_t at = 0;
  while (at < text_.size()) {
    char k = text_[at++];
    std::string_view n = take(text_, at), v = take(text_, at);
    if (k == kind) out.emplace_back(n, v);
  }
  return out;
}

std::string_view Handshake::url() const { return find('u', {}).value_or(std::string_view()); }
std::optional<std::string_view> Handshake::header(std::string_view name) const { return find('h', name); }
std::optional<std::string_view> Handshake::query_param(std::string_view name) const { return find('q', name); }
Handshake::Pairs Handshake::headers() const { return all('h'); }
Handshake::Pairs Handshake::query() const { return all('q'); }

const std::string* HttpRequest::header(std::string_view name) const { return find(headers, name); }
const std::string* HttpRequest::query_param(std::string_view name) const { return find(query, name); }

}  // namespace dr
