// Redis Cluster on hiredis (Debian ships no cluster client): the slot map,
// one RedisLink per master, commands routed by their key's slot, MOVED and
// ASK followed, and channels subscribed with SSUBSCRIBE on the shard that
// owns their slot (sharded Pub/Sub: a message crosses only its shard).
//
// The slot map comes from CLUSTER SLOTS, asked of any node we know (the
// seeds first): at start, after a MOVED, when a node's connection is lost,
// when a shard unsubscribes us from a channel (its slot moved), and every
// kRefreshMs. A command whose slot moved is sent again where it now lives
// (MOVED: it had not run); a transaction or script caught by a migration
// (EXECABORT, TRYAGAIN, CLUSTERDOWN) is retried, after a refresh, until
// redis_command_timeout.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/redis_link.h"

namespace dr::cluster {

inline constexpr uint16_t kClusterSlots = 16384;

// CRC16 (XMODEM) of the key's hash tag (the text between the first '{' and
// the next '}', when not empty) or of the whole key, modulo 16384.
uint16_t key_slot(std::string_view key);

// The argument that routes a command: the first key (EVAL/EVALSHA/FCALL:
// KEYS[1], none when numkeys is 0; XREAD/XREADGROUP: the first stream;
// SPUBLISH and PUBSUB SHARDNUMSUB: the channel), nullopt for keyless ones.
std::optional<std::string_view> routing_key(const std::vector<std::string_view>& argv);

class RedisCluster {
 public:
  // `changed`: ready() or subscribed() may have changed.
  RedisCluster(uv_loop_t* loop, Timers& timers, const CoreConf::Redis& conf, RedisLink::Message on_message,
               std::function<void()> changed);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  void start();
  // The slot map is known and every master's connections are up.
  bool ready() const;
  bool commands_up() const;
  // Every channel is subscribed on its shard (SSUBSCRIBE confirmed).
  bool subscribed() const;

  bool command(const std::vector<std::string_view>& argv, RedisLink::Reply reply);
  // MULTI ... EXEC (or any sequence) on the master of the first key's slot.
  bool commands(const std::vector<std::vector<std::string_view>>& cmds, RedisLink::Reply reply);
  void subscribe(const std::string& channel);
  void unsubscribe(const std::string& channel);
  void flush();

  uint64_t dropped() const;
  size_t pending_bytes() const;
  size_t masters() const { return masters_.size(); }

 private:
  struct Node {
    std::string addr;  // host:port
    std::unique_ptr<RedisLink> link;
    bool subscribed = false;  // its SSUBSCRIBEs are confirmed
  };
  struct Sent;  // a command kept for a redirect (redis_cluster.cc)

  Node& node(const std::string& host, int port);
  Node* owner(std::string_view key);
  Node* any_up();
  void refresh(Node* ask = nullptr);  // of `ask` when it is up, else of any node
  void refreshed(Node& asked, redisReply* r);
  void place_channels();
  void node_state(Node& n);
  void dispatch(std::shared_ptr<Sent> s);
  void redirected(std::shared_ptr<Sent> s, redisReply* r);
  void retry(std::shared_ptr<Sent> s, int64_t delay_ms);
  void lost_channel(Node& from, std::string_view channel);

  static constexpr int64_t kRefreshMs = 10000;
  static constexpr int64_t kRetryMs = 50;

  uv_loop_t* loop_;
  Timers& timers_;
  CoreConf::Redis conf_;
  RedisLink::Message on_message_;
  std::function<void()> changed_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;  // by addr: seeds, masters, redirect targets
  std::array<Node*, kClusterSlots> slots_{};
  std::set<Node*> masters_;
  bool mapped_ = false;  // a CLUSTER SLOTS reply covered every slot
  bool refreshing_ = false;
  int64_t refreshed_at_ = 0;
  std::map<std::string, Node*> channels_;  // wanted channel -> the node it is subscribed on (null: not placed)
  // Channels whose slot moved, until their shard confirms the SSUBSCRIBE: what
  // was published meanwhile is read back from the recovery stream then (the
  // link's subscriber event, as after a reconnect).
  std::set<std::string> moving_;
  uint64_t dropped_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for retries the facility owns
  CallbackTimer refresh_timer_;
};

}  // namespace dr::cluster
