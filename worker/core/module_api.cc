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
  auto pairs = [](const std::vector<std::pair<std::string, std::string>>& list) {
    Json o(json_object());
    for (auto& [k, v] : list) json_object_set_new(o.get(), k.c_str(), json_stringn(v.data(), v.size()));
    return o.release();
  };
  Json hs(json_object());
  json_object_set_new(hs.get(), "headers", pairs(h.headers));
  json_object_set_new(hs.get(), "time", json_string(js_date(h.issued_ms).c_str()));
  json_object_set_new(hs.get(), "address", json_stringn(h.address.data(), h.address.size()));
  json_object_set_new(hs.get(), "xdomain", json_boolean(h.header("origin") != nullptr));
  json_object_set_new(hs.get(), "secure", json_boolean(h.secure));
  json_object_set_new(hs.get(), "issued", json_integer(json_int_t(h.issued_ms)));
  json_object_set_new(hs.get(), "url", json_stringn(h.url.data(), h.url.size()));
  json_object_set_new(hs.get(), "query", pairs(h.query));
  return hs;
}

const std::string* Handshake::header(std::string_view name) const { return find(headers, name); }
const std::string* Handshake::query_param(std::string_view name) const { return find(query, name); }
const std::string* HttpRequest::header(std::string_view name) const { return find(headers, name); }
const std::string* HttpRequest::query_param(std::string_view name) const { return find(query, name); }

}  // namespace dr
