#include "core/timers.h"

#include <algorithm>
#include <exception>

#include "core/log.h"
#include "core/module_timeout.h"

namespace dr {

namespace {
void run_guarded(const std::function<void()>& fn, const char* what) {
  try {
    fn();
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "%s: %s", what, e.what());
  } catch (...) {
    logf(LogLevel::Error, "%s: unknown exception", what);
  }
}
}  // namespace

void CallbackTimer::fire(void* p) {
  auto* self = static_cast<CallbackTimer*>(p);
  bool gone = false;
  self->gone_ = &gone;
  auto fn = std::move(self->fn_);  // kept alive even if the callback destroys its owner
  run_guarded(fn, "timer callback");
  if (gone) return;
  self->gone_ = nullptr;
  self->fn_ = std::move(fn);
}

void ModuleFnTimeout::fire(void* p) {
  auto* self = static_cast<ModuleFnTimeout*>(p);
  void (*fn)(void*) = self->fn_;
  void* arg = self->arg_;
  // `self` may be gone once fn runs (a module destroys its timeout there).
  run_guarded([fn, arg] { fn(arg); }, "timer callback");
}

void Timers::OneShot::fire(void* p) {
  auto* self = static_cast<OneShot*>(p);
  Timers& owner = self->timer.timers();
  auto fn = std::move(self->fn);
  owner.one_shots_.erase(self->self);
  run_guarded(fn, "timer callback");
}

void Timers::post(std::function<void()> fn) {
  posted_.push_back(std::move(fn));
  if (!posted_timer_.armed()) posted_timer_.arm_at(now());
}

void Timers::run_posted() {
  auto todo = std::move(posted_);
  posted_.clear();
  for (auto& fn : todo) run_guarded(fn, "posted callback");
}

void Timers::after(int64_t ms, std::function<void()> fn) {
  auto& o = one_shots_.emplace_back(*this, std::move(fn));
  o.self = std::prev(one_shots_.end());
  o.timer.arm_in(ms);
}

void Timer::arm_at(int64_t deadline) {
  deadline_ = deadline;
  order_ = timers_.next_order_++;
  if (armed()) timers_.update(*this);
  else timers_.insert(*this);
}

void Timer::arm_in(int64_t ms) { arm_at(timers_.now() + ms); }

void Timer::cancel() {
  if (armed()) timers_.remove(*this);
}

Timers::Timers(Clock clock) : clock_(std::move(clock)) {}

Timers::Timers(uv_loop_t* loop) : loop_(loop) {
  clock_ = [loop] { return int64_t(uv_now(loop)); };
  uv_timer_init(loop, uv_timer_.get());
  uv_timer_.initialized = true;
  uv_timer_.get()->data = this;
}

void Timers::sift_up(size_t i) {
  Timer* t = heap_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(t, heap_[parent])) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, t);
}

void Timers::sift_down(size_t i) {
  Timer* t = heap_[i];
  size_t n = heap_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && before(heap_[child + 1], heap_[child])) child++;
    if (!before(heap_[child], t)) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, t);
}

void Timers::insert(Timer& t) {
  heap_.push_back(&t);
  t.index_ = heap_.size() - 1;
  sift_up(t.index_);
  rearm_loop_timer();
}

void Timers::update(Timer& t) {
  sift_up(t.index_);
  sift_down(t.index_);
  rearm_loop_timer();
}

void Timers::remove(Timer& t) {
  size_t i = t.index_;
  t.index_ = Timer::kNotArmed;
  Timer* last = heap_.back();
  heap_.pop_back();
  if (i < heap_.size()) {
    place(i, last);
    sift_up(i);
    sift_down(last->index_);
  }
  rearm_loop_timer();
}

size_t Timers::run_due() {
  running_ = true;
  size_t ran = 0;
  int64_t now = clock_();
  // A callback may arm, move or cancel any timer (its own included): the
  // heap is read afresh for each one.
  while (!heap_.empty() && heap_.front()->deadline_ <= now) {
    Timer* t = heap_.front();
    remove(*t);
    ran++;
    t->cb_(t->arg_);  // last use of t: the callback may destroy its owner
  }
  running_ = false;
  rearm_loop_timer();
  return ran;
}

// The uv_timer follows the heap's earliest deadline; moved only when that changes.
void Timers::rearm_loop_timer() {
  if (!loop_ || running_) return;
  int64_t next = next_deadline();
  if (next == loop_timer_at_) return;
  loop_timer_at_ = next;
  if (next == 0) {
    uv_timer_stop(uv_timer_.get());
    return;
  }
  uint64_t in = uint64_t(std::max<int64_t>(0, next - int64_t(uv_now(loop_))));
  uv_timer_start(
      uv_timer_.get(),
      [](uv_timer_t* h) {
        auto* self = static_cast<Timers*>(h->data);
        self->loop_timer_at_ = 0;
        self->run_due();
      },
      in, 0);
}

}  // namespace dr
