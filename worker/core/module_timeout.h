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

// Worker::timeout_fn's: the module's function and argument, no std::function.
class ModuleFnTimeout final : public Timeout {
 public:
  ModuleFnTimeout(Timers& timers, void (*fn)(void*), void* arg) : fn_(fn), arg_(arg), timer_(timers, fire, this) {}
  void arm_in(uint64_t ms) override { timer_.arm_in(int64_t(ms)); }
  void cancel() override { timer_.cancel(); }
  bool armed() const override { return timer_.armed(); }

 private:
  static void fire(void* self);  // the call guarded: a module's exception stays here
  void (*fn_)(void*);
  void* arg_;
  Timer timer_;
};

}  // namespace dr
