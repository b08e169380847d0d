// The adapter's shared membership: a heartbeat per node (the others purge a
// node silent for redis_node_ttl, with its entries), each room's members in a
// hash with their node and user, and this node's entries indexed so that they
// can be purged whole. Read by room_members() on every node.
#include <algorithm>

#include "cluster/lua_scripts.h"
#include "cluster/presence_lua.h"
#include "cluster/redis_adapter.h"

namespace dr::cluster {
namespace {

constexpr size_t kResyncChunk = 500;

}  // namespace

void RedisAdapter::heartbeat(bool reset) {
  heartbeat_timer_.arm_in(int64_t(std::max<uint64_t>(conf_.node_ttl / 3, 100)));
  std::string ttl = std::to_string(conf_.node_ttl);
  link_.command({"EVALSHA", lua::sha(lua::kHeartbeatScript), "1", nodes_key(), members_prefix_, uid_, ttl, reset ? "reset" : "beat"},
                [this, reset](redisReply* r) {
                  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) return;
                  long long added = r->element[0]->integer, purged = r->element[1]->integer;
                  if (purged > 0)
                    logf(LogLevel::Notice, "cluster: removed the membership of %lld node(s) silent for %llums", purged,
                         (unsigned long long)conf_.node_ttl);
                  // Purged by the others (we were cut off too long): write it all again.
                  if (added && !reset && synced_) {
                    logf(LogLevel::Warn, "cluster: node %s had been declared dead; restoring its membership",
                         uid_.c_str());
                    resync();
                  }
                });
}

// Writes this node's whole membership again (after a reconnect: Redis may
// have restarted, or the others may have purged us).
void RedisAdapter::resync() {
  heartbeat(true);  // drops our stale entries first (same connection: in order)
  std::string idx = node_key(uid_);
  std::vector<std::string> index;
  for (auto& n : nsps_) {
    std::vector<std::string> names = n.ns->room_names();
    for (auto& room : names) {
      if (n.ns->socket(room)) continue;  // a socket's own room: not shared
      std::string key = presence_key(n.name, room);
      std::vector<std::string> args{"HSET", key};
      for (auto* s : n.ns->members(room)) {
        const std::string* user = s->get("userId");
        args.push_back(s->id());
        args.push_back(uid_ + "\t" + (user ? *user : ""));
        index.push_back(s->id() + "\n" + key);
        if (args.size() >= 2 + 2 * kResyncChunk) {
          link_.command(std::vector<std::string_view>(args.begin(), args.end()));
          args.resize(2);
        }
      }
      if (args.size() > 2) link_.command(std::vector<std::string_view>(args.begin(), args.end()));
    }
  }
  for (size_t i = 0; i < index.size(); i += kResyncChunk) {
    std::vector<std::string_view> args{"SADD", idx};
    for (size_t j = i; j < std::min(index.size(), i + kResyncChunk); j++) args.push_back(index[j]);
    link_.command(args);
  }
  synced_ = true;
}

void RedisAdapter::presence_add(sio::SocketImpl& s, const std::string& room) {
  if (!link_.ready()) return;  // written again when the link is back
  const std::string* user = s.get("userId");
  std::string key = presence_key(s.nsp(), room);
  link_.command({"HSET", key, s.id(), uid_ + "\t" + (user ? *user : "")});
  link_.command({"SADD", node_key(uid_), s.id() + "\n" + key});
}

void RedisAdapter::presence_remove(sio::SocketImpl& s, const std::string& room) {
  if (!link_.ready()) return;
  std::string key = presence_key(s.nsp(), room);
  // EVAL, not EVALSHA: a NOSCRIPT answer sent again would run after a
  // rejoin's HSET pipelined behind it.
  link_.command({"EVAL", lua::kPresenceLeaveScript, "2", key, node_key(uid_), s.id(), uid_});
}

void RedisAdapter::room_members(const std::string& nsp, const std::string& room, PresenceCallback cb) {
  if (!ready()) {
    auto members = local_.members_local(nsp, room, uid_);
    server_.timers().post([cb = std::move(cb), members]() mutable {
      cb("redis is not connected: this worker's members only", std::move(members));
    });
    return;
  }
  bool sent = link_.command({"HGETALL", presence_key(nsp, room)}, [cb](redisReply* r) {
    std::vector<Member> out;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
      cb("redis did not answer", std::move(out));
      return;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      std::string_view v(r->element[i + 1]->str, r->element[i + 1]->len);
      size_t tab = v.find('\t');
      Member m;
      m.socket_id.assign(r->element[i]->str, r->element[i]->len);
      m.node = std::string(v.substr(0, tab));
      if (tab != std::string_view::npos) m.user_id = std::string(v.substr(tab + 1));
      out.push_back(std::move(m));
    }
    cb({}, std::move(out));
  });
  if (!sent) {
    auto members = local_.members_local(nsp, room, uid_);
    server_.timers().post([cb, members]() mutable { cb("redis is too slow: this worker's members only", members); });
  }
}

}  // namespace dr::cluster
