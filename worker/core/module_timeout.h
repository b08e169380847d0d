// A module's Timeout (module.h) on a loop's timer facility: what
// Worker::timeout() hands out, and what unit tests of modules hand out too.
#pragma once

#include <functional>

#include "core/timers.h"
#include "depth-realtime/module.h"

namespace dr {

class ModuleTimeout final : public Timeout {
 public:
  ModuleTimeout(Timers& timers, std::function<void()> fn) : timer_(timers, std::move(fn)) {}
  void arm_in(uint64_t ms) override { timer_.arm_in(int64_t(ms)); }
  void cancel() override { timer_.cancel(); }
  bool armed() const override { return timer_.armed(); }

 private:
  CallbackTimer timer_;
};

}  // namespace dr
