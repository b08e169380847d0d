// Entry point of a worker process (after fork): runs one libuv loop until the
// worker is told to stop. Returns the process exit code; kExitFatal tells the
// master that respawning would not help.
#pragma once

#include "core/config.h"

namespace dr {

inline constexpr int kExitFatal = 2;

int worker_main(const Config& cfg, int slot, int channel_fd);

}  // namespace dr
