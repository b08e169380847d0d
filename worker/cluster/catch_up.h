// Catch-up of one namespace after this node's subscriber connection was away:
// what other processes published meanwhile did not come through pub/sub, but
// every recordable broadcast is in the namespace's recovery stream (XADDed
// atomically with its PUBLISH, so the stream's order is the order subscribers
// see). Once every SUBSCRIBE is confirmed again, the adapter reads the stream
// after the last broadcast this node got live (the anchor) and hands the
// entries here; this class decides what to deliver, so that each broadcast
// reaches the local members once and in the stream's order:
//
//  - from the loss until the read is answered, broadcasts arriving live are
//    held (bounded, and for at most kWaitMs while the commands connection is
//    not back), then delivered after the entries read, minus those the read
//    delivered already;
//  - the offsets delivered since the loss are remembered (bounded) so that a
//    live copy of an entry read (published between the SUBSCRIBE and the
//    read, still on its way) is dropped; the first live broadcast not in that
//    set is newer than anything read, so the set is forgotten then.
//
// Broadcasts without an offset (volatile ones, recovery off, emitters and Node
// servers) are not in the stream and cannot be caught up.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "cluster/offset.h"  // offset_ms()
#include "sio/adapter.h"

namespace dr::cluster {

class CatchUp {
 public:
  static constexpr size_t kMaxEntries = 10000;  // read at most; past it, recovery and history
  static constexpr size_t kMaxHeld = 10000;     // live broadcasts held during the read
  static constexpr int64_t kClockMarginMs = 10000;  // stream ids (Redis' clock) vs offsets (a node's)
  static constexpr int64_t kSkewMs = 1000;           // with no anchor: from this long before the loss
  static constexpr int64_t kWaitMs = 1000;           // live broadcasts held for the commands connection

  using Deliver = std::function<void(const sio::EncodedBroadcast& b)>;
  // True for an offset published by another process (not this node, not a sibling).
  using Foreign = std::function<bool(std::string_view offset)>;

  CatchUp(Deliver deliver, Foreign foreign) : deliver_(std::move(deliver)), foreign_(std::move(foreign)) {}

  // With Redis Cluster a broadcast's stream entry and its SPUBLISH are two
  // commands on two shards: the stream's order is not quite the live order
  // (an entry after the anchor may have been delivered live before it, a
  // live copy of an entry read may come after newer ones). The offsets of
  // the last kRecent broadcasts delivered are then remembered too, and
  // neither a read nor a live copy delivers them again.
  static constexpr size_t kRecent = 1024;
  void set_unordered(bool unordered) { unordered_ = unordered; }

  // A broadcast from another process, arrived live; `offset` "" when it has none.
  void live(sio::EncodedBroadcast b, std::string offset);

  // The subscriber connection: lost at `now` (wall ms), or subscribed again.
  void lost(int64_t now);
  void subscribed() { subscribed_ = true; }

  // A read is due: subscribed again after a loss, no read under way.
  bool due() const { return lost_at_ && subscribed_ && !reading_; }
  struct Read {
    std::string start;   // first stream id to scan for the anchor
    std::string anchor;  // "" = none
    std::string cutoff;  // anchor not found: the entries from this stream id on
  };
  Read begin();
  struct Entry {
    std::string offset;
    std::string payload;  // EncodedBroadcast::serialize()
  };
  // The entries after the anchor (or from the cutoff), oldest first, at most
  // kMaxEntries. Returns how many were delivered.
  size_t read(const std::vector<Entry>& entries);
  // No answer (the commands connection was lost, or too much is pending):
  // live broadcasts are delivered, the read is tried again.
  void failed();
  // Cannot be read (an error, or the namespace has no local sockets): live
  // delivery only, the gap is left to recovery and history.
  void skip();
  // No read possible yet (commands connection away): past kWaitMs, live
  // broadcasts are delivered meanwhile.
  void wait(int64_t now);

  // Forgets the remembered offsets some time after a read.
  void tick(int64_t now);

  bool holding() const { return lost_at_ && hold_; }
  // Something is left to do over time: a read, a wait, offsets to forget.
  bool busy() const { return lost_at_ || !delivered_.empty(); }
  size_t remembered() const { return delivered_.size(); }
  const std::string& anchor() const { return anchor_; }

 private:
  struct Held {
    sio::EncodedBroadcast b;
    std::string offset;
  };
  void remember(const std::string& offset);
  void release();  // delivers what is held, remembering it
  void done();

  Deliver deliver_;
  Foreign foreign_;
  std::string anchor_;     // the last broadcast handled, in the stream's order
  int64_t lost_at_ = 0;    // wall ms; 0 = nothing to catch up
  bool subscribed_ = false;
  bool reading_ = false;
  bool hold_ = false;
  int64_t wait_since_ = 0;
  std::vector<Held> held_;
  std::unordered_set<std::string> delivered_;  // offsets delivered since the loss
  int64_t forget_at_ = 0;
  bool overflow_logged_ = false;
  bool unordered_ = false;
  bool seen(const std::string& offset) const { return delivered_.count(offset) || recent_.count(offset); }
  void note_recent(const std::string& offset);
  std::unordered_set<std::string> recent_;  // set_unordered: the last kRecent offsets delivered
  std::vector<std::string> recent_ring_;  // in delivery order, from recent_next_ (a vector: CatchUp moves noexcept)
  size_t recent_next_ = 0;
};

}  // namespace dr::cluster
