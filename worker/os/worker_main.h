// Entry point of a worker process (after fork): runs one libuv loop until the
// worker is told to stop. Returns the process exit code; kExitFatal tells the
// master that respawning would not help.
#pragma once

#include "core/config.h"

namespace dr {

inline constexpr int kExitFatal = 2;

// `conf_path` and `load` let the worker re-read the configuration when the
// master asks it to apply a reload in place.
// `slot`: 0..worker_processes-1; `id`: unique among live workers (session ids carry it).
int worker_main(const Config& cfg, int slot, int id, int channel_fd, const std::string& conf_path,
                const LoadOptions& load);

}  // namespace dr
