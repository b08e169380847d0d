#include "stats.h"

#include "app.h"

#include <depth-realtime/redis.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>

namespace dr::app {
namespace {

struct Sampler {
  std::unique_ptr<Timeout> timer;
  std::deque<std::pair<int64_t, int64_t>> samples;  // (loop ms, events total), last 11
};
std::unique_ptr<Sampler> g_sampler;

int64_t sum(Worker& w, std::string_view metric) {
  int64_t total = 0;
  for (auto& s : w.metric_read(metric)) total += s.value;
  return total;
}


// Seconds since `pid` started, from /proc (field 22 of stat, in clock ticks since boot).
double uptime_of(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  std::unique_ptr<FILE, int (*)(FILE*)> f(fopen(path, "r"), fclose);
  if (!f) return 0;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f.get());
  buf[n] = '\0';
  const char* p = strrchr(buf, ')');  // the command name may hold spaces
  if (!p) return 0;
  unsigned long long start = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &start) != 1)
    return 0;
  std::unique_ptr<FILE, int (*)(FILE*)> u(fopen("/proc/uptime", "r"), fclose);
  double up = 0;
  if (!u || fscanf(u.get(), "%lf", &up) != 1) return 0;
  double s = up - double(start) / double(sysconf(_SC_CLK_TCK));
  return s > 0 ? s : 0;
}

}  // namespace

void stats_start(Worker& w) {
  if (g_sampler) return;
  g_sampler = std::make_unique<Sampler>();
  g_sampler->timer = every(
      w, 1000,
      [&w] {
        auto& s = g_sampler->samples;
        s.emplace_back(w.now_ms(), sum(w, "websocket_events_total"));
        while (s.size() > 11) s.pop_front();
      },
      0);
}

void stats_stop() { g_sampler.reset(); }

Json node_stats(Worker& w) {
  Json out(json_object());
  int64_t connections = sum(w, "depth_realtime_engine_sessions");
  json_object_set_new(out.get(), "connections", json_integer(connections));

  Json nsps(json_object());
  for (const std::string& nsp : w.namespaces()) {
    json_t* o = json_pack("{s:I,s:I}", "sockets", json_int_t(0), "rooms", json_int_t(0));
    json_object_set_new(nsps.get(), nsp.c_str(), o);
  }
  std::map<int, std::pair<int64_t, int64_t>> workers;  // pid -> (connections, sockets)
  for (auto& s : w.metric_read("websocket_namespace_sockets")) {
    json_t* o = json_object_get(nsps.get(), label_value(s.label, "namespace").c_str());
    if (o) json_integer_set(json_object_get(o, "sockets"), json_integer_value(json_object_get(o, "sockets")) + s.value);
    workers[s.pid].second += s.value;
  }
  for (auto& s : w.metric_read("depth_realtime_rooms")) {
    json_t* o = json_object_get(nsps.get(), label_value(s.label, "namespace").c_str());
    if (o) json_integer_set(json_object_get(o, "rooms"), json_integer_value(json_object_get(o, "rooms")) + s.value);
  }
  for (auto& s : w.metric_read("depth_realtime_engine_sessions")) workers[s.pid].first += s.value;
  json_object_set_new(out.get(), "namespaces", nsps.release());

  double eps = 0;
  if (g_sampler && g_sampler->samples.size() >= 2) {
    auto& f = g_sampler->samples.front();
    auto& b = g_sampler->samples.back();
    if (b.first > f.first) eps = double(b.second - f.second) * 1000.0 / double(b.first - f.first);
  }
  json_object_set_new(out.get(), "eventsPerSecond", json_real(double(int64_t(eps * 100 + 0.5)) / 100));

  int master = int(getppid());
  const char* status = !redis::configured() ? "off" : redis::ready() ? "ready" : "down";
  json_object_set_new(out.get(), "redis", json_pack("{s:s}", "status", status));
  json_object_set_new(out.get(), "node",
                      json_pack("{s:i,s:I}", "pid", master, "uptimeSeconds", json_int_t(uptime_of(master))));
  Json list(json_array());
  for (auto& [pid, figures] : workers) {
    if (pid <= 0 || pid == master) continue;  // the master serves no clients (its zero shares)
    json_array_append_new(list.get(), json_pack("{s:i,s:I,s:I}", "pid", pid, "connections", json_int_t(figures.first),
                                                "sockets", json_int_t(figures.second)));
  }
  json_object_set_new(out.get(), "workers", list.release());
  return out;
}

}  // namespace dr::app
