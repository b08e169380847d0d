#include "cluster/catch_up.h"

#include <algorithm>

#include "core/uv_util.h"
#include "depth-realtime/module.h"

namespace dr::cluster {
namespace {

constexpr int64_t kForgetAfterMs = 30000;  // live copies of what a read delivered come within a round trip
std::string stream_id(int64_t ms) { return std::to_string(std::max<int64_t>(0, ms)) + "-0"; }

}  // namespace

void CatchUp::live(sio::EncodedBroadcast b, std::string offset) {
  if (holding()) {
    if (held_.size() < kMaxHeld) {
      held_.push_back({std::move(b), std::move(offset)});
      return;
    }
    if (!overflow_logged_) {
      overflow_logged_ = true;
      logf(LogLevel::Warn, "cluster: more than %zu broadcasts arrived during a catch-up on %s; delivering them now",
           kMaxHeld, b.opts.nsp.c_str());
    }
    release();  // order is given up, nothing is lost
  }
  if (!offset.empty()) {
    if (seen(offset)) return;  // the read delivered it already
    note_recent(offset);
    if (lost_at_) {
      remember(offset);  // delivered before the read: the read skips it
    } else {
      delivered_.clear();  // newer than anything read: no more copies to come
      anchor_ = std::move(offset);
    }
  }
  deliver_(b);
}

void CatchUp::lost(int64_t now) {
  if (!lost_at_) lost_at_ = now;
  subscribed_ = false;
  hold_ = true;
  wait_since_ = 0;
}

void CatchUp::wait(int64_t now) {
  if (!hold_) return;
  if (!wait_since_) wait_since_ = now;
  if (now - wait_since_ < kWaitMs) return;
  hold_ = false;
  release();
}

CatchUp::Read CatchUp::begin() {
  reading_ = true;
  hold_ = true;
  Read r;
  int64_t from = lost_at_;
  if (!anchor_.empty()) {
    r.anchor = anchor_;
    if (int64_t ms = offset_ms(anchor_); ms >= 0) from = std::min(from, ms);
  }
  r.start = stream_id(from - kClockMarginMs);
  r.cutoff = stream_id(lost_at_ - kSkewMs);
  return r;
}

size_t CatchUp::read(const std::vector<Entry>& entries) {
  reading_ = false;
  size_t n = 0;
  for (auto& e : entries) {
    anchor_ = e.offset;
    if (!foreign_(e.offset) || seen(e.offset)) continue;
    remember(e.offset);
    note_recent(e.offset);
    sio::EncodedBroadcast b;
    if (!b.parse(e.payload)) continue;
    deliver_(b);
    n++;
  }
  release();
  if (subscribed_) done();
  return n;
}

void CatchUp::failed() {
  reading_ = false;
  hold_ = false;
  wait_since_ = 0;
  release();
}

void CatchUp::skip() {
  reading_ = false;
  release();
  done();
}

void CatchUp::tick(int64_t now) {
  if (!lost_at_ && !delivered_.empty() && now >= forget_at_) delivered_.clear();
}

void CatchUp::remember(const std::string& offset) {
  if (delivered_.size() >= kMaxEntries + kMaxHeld) return;  // bounded: a late copy may then come twice
  delivered_.insert(offset);
}

void CatchUp::note_recent(const std::string& offset) {
  if (!unordered_ || !recent_.insert(offset).second) return;
  if (recent_ring_.size() < kRecent) return recent_ring_.push_back(offset);
  recent_.erase(recent_ring_[recent_next_]);  // the oldest
  recent_ring_[recent_next_] = offset;
  recent_next_ = (recent_next_ + 1) % kRecent;
}

void CatchUp::release() {
  std::vector<Held> held = std::move(held_);
  held_.clear();
  for (auto& h : held) {
    if (!h.offset.empty()) {
      if (seen(h.offset)) continue;  // read from the stream already, in its place
      remember(h.offset);
      note_recent(h.offset);
    }
    deliver_(h.b);
  }
}

void CatchUp::done() {
  lost_at_ = 0;
  forget_at_ = now_ms() + kForgetAfterMs;
  overflow_logged_ = false;
}

}  // namespace dr::cluster
