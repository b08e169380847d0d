// The master process: binds the listeners, forks the workers, hands each
// accepted connection to one of them (round robin, so long-lived WebSockets
// spread evenly), relays messages between workers, respawns workers that
// die, and acts on signals. It serves no traffic itself.
#pragma once

#include <memory>
#include <string>

#include "core/config.h"

namespace dr {

struct MasterOptions {
  std::string conf_path;
  LoadOptions load;
};

int run_master(std::unique_ptr<Config> cfg, const MasterOptions& opts);

// A random tag of this daemon, made before the first fork: its workers share
// it, so each can tell a sibling's broadcasts (which the relay brings) from
// other nodes' in Redis.
const std::string& daemon_tag();

}  // namespace dr
