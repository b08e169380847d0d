// Metrics shared by the master and every worker: a fixed table of counters
// and gauges in a shared zone the master makes before the workers fork (as
// nginx keeps its stub_status counters), kept across reloads. Any process
// adds with an atomic operation; whichever worker serves /metrics reads the
// sums for all.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/module.h"

namespace dr::metrics {

struct Entry {
  std::atomic<uint32_t> state;  // 0 free, 1 being claimed, 2 in use, 3 released (reusable)
  std::atomic<int32_t> owner;   // gauges: the pid whose share this is; counters: 0
  char metric[64];
  char label[120];              // e.g. namespace="/chat"; empty: no label
  std::atomic<int64_t> value;
};

// The table's shared zone (core/shared_zones.h), which the master declares
// with every configuration; attach() then finds it (false: not declared).
inline constexpr std::string_view kZone = "core:metrics";
size_t zone_size();
bool attach();
// In a new worker: forget the master's resolved series (gauges are per process).
void after_fork();
// A process died: its gauge shares go (a killed worker's clients are gone).
void release(int pid);

// The entry for (metric, label), created on first use. Null when the table is
// full (labels must stay bounded) or metrics are not initialised.
Entry* get(std::string_view metric, std::string_view label = {});

inline void add(Entry* e, int64_t delta = 1) {
  if (e) e->value.fetch_add(delta, std::memory_order_relaxed);
}
inline void set(Entry* e, int64_t v) {
  if (e) e->value.store(v, std::memory_order_relaxed);
}

// Type and help text of a metric (per process; the same code declares the same).
void declare(std::string_view metric, MetricType type, std::string_view help);

// Every live series of a metric: gauges one per process share, counters one per label.
std::vector<MetricSample> read(std::string_view metric);

// Prometheus text exposition format 0.0.4.
std::string render();

// A label with its value escaped: name="value".
std::string label(std::string_view name, std::string_view value);

// The core's own, resolved once per process.
struct Core {
  Entry* bytes_received = nullptr;
  Entry* bytes_sent = nullptr;
  Entry* messages_sent = nullptr;
  Entry* broadcasts = nullptr;
  Entry* acks_timed_out = nullptr;
  Entry* sessions_polling = nullptr;
  Entry* sessions_websocket = nullptr;
  Entry* connected_clients = nullptr;  // every Engine.IO session, unlabelled
  Entry* http_connections = nullptr;
  Entry* sessions_opened = nullptr;
  Entry* messages_received = nullptr;
  Entry* worker_restarts = nullptr;
  Entry* reloads_ok = nullptr;
  Entry* reloads_failed = nullptr;
  Entry* last_reload_success = nullptr;
  Entry* last_reload_time = nullptr;
  Entry* events_other = nullptr;
  // Clients closed for holding more than their bound of unsent data, by queue.
  Entry* slow_closed_output = nullptr;   // a connection's output (WebSocket, HTTP)
  Entry* slow_closed_polling = nullptr;  // a long-polling session's packet queue
  Entry* slow_closed_events = nullptr;   // events waiting for a held handler
};
Core& core();
void declare_core();  // declares and resolves core(); once per process

}  // namespace dr::metrics
