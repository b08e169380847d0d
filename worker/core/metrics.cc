#include "core/metrics.h"

#include <unistd.h>

#include <cstring>
#include <map>
#include <unordered_map>

#include "core/shared_zones.h"

namespace dr::metrics {
namespace {

constexpr size_t kEntries = 2048;

struct Table {
  Entry entries[kEntries];
};

Table* g_table = nullptr;

struct Decl {
  MetricType type;
  std::string help;
};
std::map<std::string, Decl, std::less<>>& decls() {
  static std::map<std::string, Decl, std::less<>> d;
  return d;
}
// Found by a view of the key: a lookup (every metrics::add of a module's
// series by name) allocates nothing.
struct KeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view key) const noexcept { return std::hash<std::string_view>{}(key); }
};
using Cache = std::unordered_map<std::string, Entry*, KeyHash, std::equal_to<>>;
Cache& cache() {
  static Cache c;
  return c;
}

uint64_t hash(std::string_view a, std::string_view b) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : a) h = (h ^ uint8_t(c)) * 1099511628211ull;
  h = (h ^ 0xff) * 1099511628211ull;
  for (char c : b) h = (h ^ uint8_t(c)) * 1099511628211ull;
  return h;
}

bool same(const Entry& e, std::string_view metric, std::string_view label, int32_t owner) {
  return metric == e.metric && label == e.label && e.owner.load(std::memory_order_relaxed) == owner;
}

// A gauge is kept per process, so that the share of a process that dies can be
// dropped; counters are shared, and keep counting across restarts.
int32_t owner_for(std::string_view metric) {
  auto d = decls().find(metric);
  return d != decls().end() && d->second.type == MetricType::Gauge ? int32_t(getpid()) : 0;
}

Core g_core;

}  // namespace

size_t zone_size() { return sizeof(Table); }

bool attach() {
  auto zone = zones::find(kZone);
  if (zone.size() != sizeof(Table)) return false;
  g_table = reinterpret_cast<Table*>(zone.data());  // zero-filled when made: every entry free
  return true;
}

Entry* get(std::string_view metric, std::string_view label) {
  if (!g_table || metric.size() >= sizeof(Entry::metric) || label.size() >= sizeof(Entry::label)) return nullptr;
  char key_bytes[sizeof(Entry::metric) + sizeof(Entry::label) + 1];  // both fit (checked above)
  metric.copy(key_bytes, metric.size());  // copy(), not memcpy: an empty view may have no data
  key_bytes[metric.size()] = '\0';
  label.copy(key_bytes + metric.size() + 1, label.size());
  const std::string_view key(key_bytes, metric.size() + 1 + label.size());
  if (auto it = cache().find(key); it != cache().end()) return it->second;
  int32_t owner = owner_for(metric);
  // Open addressing; a free slot is claimed with a compare-and-swap, so two
  // processes adding the same series at once end up in one entry.
  size_t start = (hash(metric, label) + uint32_t(owner) * 2654435761u) % kEntries;
  for (size_t i = 0; i < kEntries; i++) {
    Entry& e = g_table->entries[(start + i) % kEntries];
    uint32_t st = e.state.load(std::memory_order_acquire);
    if (st == 0 || st == 3) {
      uint32_t expected = st;
      if (e.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        e.value.store(0, std::memory_order_relaxed);
        e.owner.store(owner, std::memory_order_relaxed);
        metric.copy(e.metric, metric.size());  // (memcpy would be handed a null pointer for "")
        e.metric[metric.size()] = 0;
        label.copy(e.label, label.size());
        e.label[label.size()] = 0;
        e.state.store(2, std::memory_order_release);
        cache().emplace(std::string(key), &e);
        return &e;
      }
      st = e.state.load(std::memory_order_acquire);
    }
    while (st == 1) st = e.state.load(std::memory_order_acquire);  // another process is writing the name
    if (st == 2 && same(e, metric, label, owner)) {
      cache().emplace(std::string(key), &e);
      return &e;
    }
  }
  return nullptr;  // full
}

void after_fork() {
  cache().clear();
  declare_core();
}

void release(int pid) {
  if (!g_table || pid <= 0) return;
  for (auto& e : g_table->entries)
    if (e.state.load(std::memory_order_acquire) == 2 && e.owner.load(std::memory_order_relaxed) == pid) {
      e.value.store(0, std::memory_order_relaxed);
      e.state.store(3, std::memory_order_release);
    }
}

void declare(std::string_view metric, MetricType type, std::string_view help) {
  decls().insert_or_assign(std::string(metric), Decl{type, std::string(help)});
}

std::string label(std::string_view name, std::string_view value) {
  std::string out(name);
  out += "=\"";
  for (char c : value) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::vector<MetricSample> read(std::string_view metric) {
  std::vector<MetricSample> out;
  if (!g_table) return out;
  for (auto& e : g_table->entries)
    if (e.state.load(std::memory_order_acquire) == 2 && metric == e.metric)
      out.push_back({e.label, e.owner.load(std::memory_order_relaxed), e.value.load(std::memory_order_relaxed)});
  return out;
}

std::string render() {
  if (!g_table) return {};
  // Group the series by metric name, then print them under their HELP/TYPE.
  // Series by name, then by label, summing the per-process shares of gauges.
  std::map<std::string, std::map<std::string, int64_t>> by_name;
  for (auto& e : g_table->entries)
    if (e.state.load(std::memory_order_acquire) == 2)
      by_name[e.metric][e.label] += e.value.load(std::memory_order_relaxed);
  std::string out;
  for (auto& [name, series] : by_name) {
    auto d = decls().find(name);
    out += "# HELP " + name + " " + (d != decls().end() ? d->second.help : name) + "\n";
    out += "# TYPE " + name + " " + (d != decls().end() && d->second.type == MetricType::Gauge ? "gauge" : "counter") + "\n";
    for (auto& [label, value] : series) {
      out += name;
      if (!label.empty()) out += "{" + label + "}";
      out += " " + std::to_string(value) + "\n";
    }
  }
  return out;
}

Core& core() { return g_core; }

}  // namespace dr::metrics

namespace dr {
std::string metric_label(std::string_view name, std::string_view value) { return metrics::label(name, value); }
}  // namespace dr

namespace dr::metrics {

void declare_core() {
  struct M {
    const char* name;
    MetricType type;
    const char* help;
  };
  static const M ms[] = {
      {"websocket_connections_total", MetricType::Counter, "Socket.IO namespace connections accepted"},
      {"websocket_connected_clients", MetricType::Gauge,
       "Engine.IO clients connected to the node now (Socket.IO's io.engine.clientsCount)"},
      {"websocket_namespace_sockets", MetricType::Gauge, "Socket.IO namespace connections open now, by namespace"},
      {"websocket_events_total", MetricType::Counter, "Client events received, by event name"},
      {"depth_realtime_rooms", MetricType::Gauge, "Named rooms with members, summed over the workers (a room on two workers counts twice)"},
      {"depth_realtime_bytes_received_total", MetricType::Counter, "Bytes read from clients"},
      {"depth_realtime_bytes_sent_total", MetricType::Counter, "Bytes written to clients"},
      {"depth_realtime_messages_sent_total", MetricType::Counter, "Socket.IO packets sent to clients"},
      {"depth_realtime_broadcasts_total", MetricType::Counter, "Broadcasts started on this node"},
      {"depth_realtime_acks_timed_out_total", MetricType::Counter, "Server to client acks that timed out"},
      {"depth_realtime_engine_sessions", MetricType::Gauge, "Engine.IO sessions open now, by transport"},
      {"depth_realtime_engine_sessions_opened_total", MetricType::Counter, "Engine.IO sessions opened"},
      {"depth_realtime_engine_sessions_closed_total", MetricType::Counter, "Engine.IO sessions closed, by reason"},
      {"depth_realtime_messages_received_total", MetricType::Counter, "Engine.IO messages received from clients"},
      {"depth_realtime_http_connections", MetricType::Gauge, "Client TCP connections open now"},
      {"depth_realtime_worker_restarts_total", MetricType::Counter, "Workers respawned after dying"},
      {"depth_realtime_reloads_total", MetricType::Counter, "Configuration reloads, by result"},
      {"depth_realtime_last_reload_success", MetricType::Gauge, "1 if the last reload applied, 0 if it was refused"},
      {"depth_realtime_last_reload_timestamp_seconds", MetricType::Gauge, "When the last reload was tried"},
      {"depth_realtime_slow_clients_closed_total", MetricType::Counter,
       "Clients closed for holding more unsent data than max_output_buffer, by queue"},
  };
  for (auto& m : ms) declare(m.name, m.type, m.help);
  Core& c = g_core;
  c.bytes_received = get("depth_realtime_bytes_received_total");
  c.bytes_sent = get("depth_realtime_bytes_sent_total");
  c.messages_sent = get("depth_realtime_messages_sent_total");
  c.broadcasts = get("depth_realtime_broadcasts_total");
  c.acks_timed_out = get("depth_realtime_acks_timed_out_total");
  c.sessions_polling = get("depth_realtime_engine_sessions", "transport=\"polling\"");
  c.sessions_websocket = get("depth_realtime_engine_sessions", "transport=\"websocket\"");
  c.http_connections = get("depth_realtime_http_connections");
  c.connected_clients = get("websocket_connected_clients");
  c.sessions_opened = get("depth_realtime_engine_sessions_opened_total");
  c.messages_received = get("depth_realtime_messages_received_total");
  c.worker_restarts = get("depth_realtime_worker_restarts_total");
  c.reloads_ok = get("depth_realtime_reloads_total", "result=\"ok\"");
  c.reloads_failed = get("depth_realtime_reloads_total", "result=\"failed\"");
  c.last_reload_success = get("depth_realtime_last_reload_success");
  c.last_reload_time = get("depth_realtime_last_reload_timestamp_seconds");
  c.events_other = get("websocket_events_total", "event=\"_other\"");
  c.slow_closed_output = get("depth_realtime_slow_clients_closed_total", "queue=\"output\"");
  c.slow_closed_polling = get("depth_realtime_slow_clients_closed_total", "queue=\"polling\"");
  c.slow_closed_events = get("depth_realtime_slow_clients_closed_total", "queue=\"events\"");
}

}  // namespace dr::metrics
