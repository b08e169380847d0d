#include "core/event_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <random>

#include "core/uv_util.h"
#include "depth-realtime/json.h"
#include "depth-realtime/module.h"

namespace dr::event_log {
namespace {

struct State {
  std::string path;
  int fd = -1;
  double sample = 1.0;
  std::string pending;
  std::minstd_rand rng;  // seeded by open()
};
State g;

void append_json_string(std::string& out, std::string_view s) {
  json_t* j = json_stringn(s.data(), s.size());
  if (!j) {  // not valid UTF-8: keep the line valid JSON
    out += "null";
    return;
  }
  out += json_text(j);
  json_decref(j);
}

}  // namespace

bool open(const std::string& path, double sample, std::string& err) {
  if (g.fd >= 0) ::close(g.fd);
  g.fd = -1;
  g.path.clear();
  if (path.empty() || path == "off") return true;
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    err = "cannot open event log \"" + path + "\": " + strerror(errno);
    return false;
  }
  g.fd = fd;
  g.path = path;
  g.sample = sample;
  // Seeded here, in the worker: a seed drawn before fork() gave every worker
  // (and every respawn) the same sampling choices.
  g.rng.seed(std::random_device{}());
  return true;
}

void reopen() {
  if (g.fd < 0) return;
  flush();
  int fd = ::open(g.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return;  // keep writing to the old file rather than lose lines
  dup2(fd, g.fd);
  ::close(fd);
}

bool enabled() { return g.fd >= 0; }

void record(std::string_view nsp, std::string_view event, const std::string* user_id, std::string_view ip,
            std::string_view socket_id) {
  if (g.fd < 0) return;
  if (g.sample < 1.0 && std::uniform_real_distribution<double>(0, 1)(g.rng) >= g.sample) return;
  std::string& o = g.pending;
  o += "{\"time\":\"" + dr::iso_time(now_ms()) + "\",\"userId\":";
  if (user_id) append_json_string(o, *user_id);
  else o += "null";
  o += ",\"event\":";
  append_json_string(o, event);
  o += ",\"namespace\":";
  append_json_string(o, nsp);
  o += ",\"ip\":";
  append_json_string(o, ip);
  o += ",\"socket\":";
  append_json_string(o, socket_id);
  o += "}\n";
  if (o.size() > 256 * 1024) flush();
}

void flush() {
  if (g.fd < 0 || g.pending.empty()) return;
  ssize_t n = ::write(g.fd, g.pending.data(), g.pending.size());
  (void)n;  // a full disk must not stop the service; the error log says nothing per line
  g.pending.clear();
}

}  // namespace dr::event_log
