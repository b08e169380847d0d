// The adapter's requests to the other nodes and its answers to theirs (the
// request types of adapter_wire.h: fetchSockets, allRooms, socketsJoin and
// socketsLeave, disconnectSockets, serverSideEmit with and without acks,
// broadcasts with acks): a request waits in pending_ for as many answers as
// NUMSUB counts subscribers, or for its timeout.
#include <algorithm>

#include "cluster/adapter_wire.h"
#include "sio/msgpack_json.h"
#include "cluster/pubsub_codec.h"
#include "cluster/redis_adapter.h"
#include "core/uv_util.h"

namespace dr::cluster {

using namespace wire;

void RedisAdapter::respond(const Nsp& n, const json_t* request, Json response) {
  // To the requester's own channel: the other nodes need not read it.
  const char* uid = json_str(request, "uid");
  publish_json(uid ? n.response + uid + "#" : n.response, response.get());
}

void RedisAdapter::on_request(Nsp& n, std::string_view body) {
  std::vector<std::string> attachments;
  Json req = decode_body(body, attachments);
  if (!json_is_object(req.get())) return;
  const char* uid = json_str(req.get(), "uid");
  if (uid && uid_ == uid) return;  // ours: applied locally already
  json_t* rid = json_object_get(req.get(), "requestId");
  const json_t* opts = json_object_get(req.get(), "opts");
  BroadcastOptions o;
  o.nsp = n.name;
  o.rooms = str_list(json_object_get(opts, "rooms"));
  o.except = str_list(json_object_get(opts, "except"));
  auto answer = [&](const char* key, Json value) {
    Json res(json_object());
    json_object_set(res.get(), "requestId", rid);
    if (key) json_object_set_new(res.get(), key, value.release());
    respond(n, req.get(), std::move(res));
  };

  switch (json_integer_value(json_object_get(req.get(), "type"))) {
    case kSockets: {
      BroadcastOptions sel;
      sel.nsp = n.name;
      sel.rooms = str_list(json_object_get(req.get(), "rooms"));
      std::vector<std::string> ids;
      for (auto* s : local_.select(sel)) ids.push_back(s->id());
      answer("sockets", json_strings(ids));
      return;
    }
    case kAllRooms:
      answer("rooms", json_strings(local_.room_names(n.name)));
      return;
    case kRemoteJoin:
    case kRemoteLeave:
    case kRemoteDisconnect: {
      int type = int(json_integer_value(json_object_get(req.get(), "type")));
      if (!opts) {
        // Legacy single-socket form: only the node that has the socket acts and answers.
        const char* sid = json_str(req.get(), "sid");
        sio::SocketImpl* s = sid ? n.ns->socket(sid) : nullptr;
        if (!s) return;
        const char* room = json_str(req.get(), "room");
        if (type == kRemoteJoin && room) s->join(room);
        else if (type == kRemoteLeave && room) s->leave(room);
        answer(nullptr, nullptr);
        if (type == kRemoteDisconnect) s->disconnect(json_is_true(json_object_get(req.get(), "close")));
        return;
      }
      if (type == kRemoteDisconnect) local_.disconnect_sockets(o, json_is_true(json_object_get(req.get(), "close")));
      else if (type == kRemoteJoin) local_.sockets_join(o, str_list(json_object_get(req.get(), "rooms")));
      else local_.sockets_leave(o, str_list(json_object_get(req.get(), "rooms")));
      return;
    }
    case kRemoteFetch: {
      Json list(json_array());
      for (auto& r : local_.fetch_local(o)) json_array_append_new(list.get(), describe_json(r).release());
      answer("sockets", std::move(list));
      return;
    }
    case kServerSideEmit: {
      json_t* data = json_object_get(req.get(), "data");
      if (!json_is_array(data)) return;
      ServerAck ack;
      if (json_is_string(rid)) {
        // Acks of server-side events always go to the common channel (as Node does).
        ack = [this, channel = n.response, id = std::string(json_string_value(rid))](Json reply) {
          Json res(json_object());
          json_object_set_new(res.get(), "type", json_integer(kServerSideEmit));
          json_object_set_new(res.get(), "requestId", json_string(id.c_str()));
          json_object_set_new(res.get(), "data", reply ? reply.release() : json_null());
          publish_json(channel, res.get());
        };
      }
      local_.dispatch_server_event(n.name, json_share(data), std::move(attachments), std::move(ack));
      return;
    }
    case kBroadcast: {
      const json_t* packet = json_object_get(req.get(), "packet");
      const json_t* data = json_object_get(packet, "data");
      if (!json_is_array(data) || !json_is_string(rid)) return;
      const json_t* timeout = json_object_get(json_object_get(opts, "flags"), "timeout");
      uint64_t ms = json_is_integer(timeout) && json_integer_value(timeout) > 0 ? uint64_t(json_integer_value(timeout))
                                                                                 : conf_.requests_timeout;
      std::string request_id = json_string_value(rid);
      std::string requester = uid ? uid : "";
      std::string channel = requester.empty() ? n.response : n.response + requester + "#";
      size_t count = local_.deliver_with_ack(o, data, attachments, ms, [this, channel, request_id](Payload reply) {
        publish(channel, encode_broadcast_ack(request_id, reply));
      });
      Json res(json_object());
      json_object_set_new(res.get(), "type", json_integer(kBroadcastClientCount));
      json_object_set(res.get(), "requestId", rid);
      json_object_set_new(res.get(), "clientCount", json_integer(json_int_t(count)));
      publish_json(channel, res.get());
      return;
    }
    default:
      return;  // unknown types are ignored
  }
}

void RedisAdapter::on_response(std::string_view body) {
  std::vector<std::string> attachments;
  Json res = decode_body(body, attachments);
  const char* rid = json_str(res.get(), "requestId");
  if (!rid) return;
  auto it = pending_.find(rid);
  if (it == pending_.end()) return;  // someone else's, or too late
  Pending& p = *it->second;
  json_int_t type = json_integer_value(json_object_get(res.get(), "type"));
  switch (p.type) {
    case kRemoteFetch:
    case kSockets: {
      size_t i;
      json_t* s;
      json_array_foreach(json_object_get(res.get(), "sockets"), i, s) p.sockets.push_back(remote_socket(s));
      p.got++;
      break;
    }
    case kAllRooms:
      for (auto& r : str_list(json_object_get(res.get(), "rooms"))) p.rooms.insert(r);
      p.got++;
      break;
    case kServerSideEmit: {
      json_t* data = json_object_get(res.get(), "data");
      p.replies.push_back(Json(data ? json_incref(data) : json_null()));
      p.got++;
      break;
    }
    case kBroadcast:
      if (type == kBroadcastClientCount) {
        p.clients += size_t(std::max<json_int_t>(0, json_integer_value(json_object_get(res.get(), "clientCount"))));
        p.got++;
      } else if (type == kBroadcastAck) {
        const json_t* packet = json_object_get(res.get(), "packet");
        p.acks.push_back(payload_of(packet ? packet : json_null(), attachments));
      }
      break;
    default:
      return;
  }
  check(rid);
}

RedisAdapter::Pending* RedisAdapter::add_pending(const std::string& id, std::unique_ptr<Pending> p) {
  p->timeout = std::make_unique<CallbackTimer>(server_.timers(), [this, id] { finish(id, "timeout"); });
  p->timeout->arm_in(std::max<int64_t>(0, p->deadline - now_ms()));
  return pending_.emplace(id, std::move(p)).first->second.get();
}

void RedisAdapter::check(const std::string& id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending& p = *it->second;
  if (p.expected == SIZE_MAX || p.got < p.expected) return;
  if (p.type == kBroadcast && p.acks.size() < p.clients) return;
  finish(id, {});
}

void RedisAdapter::finish(const std::string& id, std::string error) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  std::unique_ptr<Pending> p = std::move(it->second);
  pending_.erase(it);
  try {
    p->done(*p, std::move(error));
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "cluster request callback: %s", e.what());
  }
}

void RedisAdapter::numsub(const std::string& channel, std::function<void(size_t)> cb) {
  // A cluster: the subscribers of the channel's shard (its master; the Node
  // adapter sums every master's count, the same with no replicas subscribed).
  bool sent = link_.command({"PUBSUB", sharded_ ? "SHARDNUMSUB" : "NUMSUB", channel}, [cb](redisReply* r) {
    size_t n = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->type == REDIS_REPLY_INTEGER)
      n = size_t(std::max<long long>(0, r->element[1]->integer));
    cb(n);
  });
  if (!sent) server_.timers().post([cb] { cb(0); });
}

void RedisAdapter::fetch_sockets(const BroadcastOptions& opts, FetchCallback cb) {
  Nsp* n = find(opts.nsp);
  if (!n || opts.local || !ready()) return local_.fetch_sockets(opts, std::move(cb));
  numsub(n->request, [this, opts, cb = std::move(cb), request = n->request](size_t count) {
    auto p = std::make_unique<Pending>();
    p->type = kRemoteFetch;
    p->sockets = local_.fetch_local(opts);
    p->got = 1;  // ourselves
    p->expected = std::max<size_t>(count, 1);
    p->deadline = now_ms() + int64_t(conf_.requests_timeout);
    p->done = [cb](Pending& p, std::string error) {
      cb(error.empty() ? error : "timeout reached while waiting for fetchSockets response", std::move(p.sockets));
    };
    std::string id = new_id();
    add_pending(id, std::move(p));
    if (count > 1 && sharded_) {
      Json fields(json_object());
      json_object_set_new(fields.get(), "opts", opts_json(opts).release());
      if (Nsp* n = find(opts.nsp)) request_sharded(*n, kRemoteFetch, &id, std::move(fields));
    } else if (count > 1) {
      Json req(json_object());
      json_object_set_new(req.get(), "uid", json_string(uid_.c_str()));
      json_object_set_new(req.get(), "requestId", json_string(id.c_str()));
      json_object_set_new(req.get(), "type", json_integer(kRemoteFetch));
      json_object_set_new(req.get(), "opts", opts_json(opts).release());
      publish_json(request, req.get());
    }
    check(id);
  });
}

void RedisAdapter::all_rooms(const std::string& nsp, std::function<void(std::string, std::vector<std::string>)> cb) {
  Nsp* n = find(nsp);
  // The sharded adapter's protocol has no allRooms request: this node's rooms.
  if (!n || !ready() || sharded_) return local_.all_rooms(nsp, std::move(cb));
  numsub(n->request, [this, nsp, cb = std::move(cb), request = n->request](size_t count) {
    auto p = std::make_unique<Pending>();
    p->type = kAllRooms;
    for (auto& r : local_.room_names(nsp)) p->rooms.insert(r);
    p->got = 1;
    p->expected = std::max<size_t>(count, 1);
    p->deadline = now_ms() + int64_t(conf_.requests_timeout);
    p->done = [cb](Pending& p, std::string error) {
      cb(error.empty() ? error : "timeout reached while waiting for allRooms response",
         std::vector<std::string>(p.rooms.begin(), p.rooms.end()));
    };
    std::string id = new_id();
    add_pending(id, std::move(p));
    if (count > 1) {
      Json req(json_object());
      json_object_set_new(req.get(), "uid", json_string(uid_.c_str()));
      json_object_set_new(req.get(), "requestId", json_string(id.c_str()));
      json_object_set_new(req.get(), "type", json_integer(kAllRooms));
      publish_json(request, req.get());
    }
    check(id);
  });
}

void RedisAdapter::server_count(const std::string& nsp, std::function<void(size_t)> cb) {
  Nsp* n = find(nsp);
  if (!n || !ready()) return local_.server_count(nsp, std::move(cb));
  numsub(n->request, [cb = std::move(cb)](size_t count) { cb(std::max<size_t>(count, 1)); });
}

// socketsJoin / socketsLeave / disconnectSockets: applied here at once, then
// published for the other nodes (which ignore our uid when it comes back).
void RedisAdapter::remote_op(const BroadcastOptions& opts, int type, const char* key, Json value) {
  Nsp* n = find(opts.nsp);
  if (!n || opts.local || !ready()) return;
  if (sharded_) {
    Json fields(json_object());
    json_object_set_new(fields.get(), "opts", opts_json(opts).release());
    json_object_set_new(fields.get(), key, value.release());
    return request_sharded(*n, type, nullptr, std::move(fields));
  }
  Json req(json_object());
  json_object_set_new(req.get(), "uid", json_string(uid_.c_str()));
  json_object_set_new(req.get(), "type", json_integer(type));
  json_object_set_new(req.get(), "opts", opts_json(opts).release());
  json_object_set_new(req.get(), key, value.release());
  publish_json(n->request, req.get());
}

void RedisAdapter::sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  local_.sockets_join(opts, rooms);
  remote_op(opts, kRemoteJoin, "rooms", json_strings(rooms));
}

void RedisAdapter::sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  local_.sockets_leave(opts, rooms);
  remote_op(opts, kRemoteLeave, "rooms", json_strings(rooms));
}

void RedisAdapter::disconnect_sockets(const BroadcastOptions& opts, bool close) {
  local_.disconnect_sockets(opts, close);
  remote_op(opts, kRemoteDisconnect, "close", Json(json_boolean(close)));
}

void RedisAdapter::on_server_event(const std::string& nsp, const std::string& event, ServerEventHandler h) {
  local_.on_server_event(nsp, event, std::move(h));
}

namespace {
// {"uid","requestId"?,"type":6,"data":[event, ...args]}
Json server_event_request(const std::string& uid, const std::string* id, const std::string& event, const Payload& args) {
  Json req(json_object());
  json_object_set_new(req.get(), "uid", json_string(uid.c_str()));
  if (id) json_object_set_new(req.get(), "requestId", json_string(id->c_str()));
  json_object_set_new(req.get(), "type", json_integer(kServerSideEmit));
  Json data(json_array());
  json_array_append_new(data.get(), json_stringn(event.data(), event.size()));
  json_array_extend(data.get(), args.args.get());
  json_object_set_new(req.get(), "data", data.release());
  return req;
}
}  // namespace

void RedisAdapter::server_side_emit(const std::string& nsp, const std::string& event, Payload args) {
  Nsp* n = find(nsp);
  if (!n || !ready()) return;
  Json req = server_event_request(uid_, nullptr, event, args);
  if (sharded_) return request_sharded(*n, kServerSideEmit, nullptr, std::move(req), args.attachments);
  publish_json(n->request, req.get());
}

void RedisAdapter::server_side_emit_with_ack(const std::string& nsp, const std::string& event, Payload args,
                                             uint64_t timeout_ms, ServerAcks cb) {
  Nsp* n = find(nsp);
  if (!n || !ready()) return local_.server_side_emit_with_ack(nsp, event, std::move(args), timeout_ms, std::move(cb));
  auto shared_args = std::make_shared<Payload>(std::move(args));
  numsub(n->request, [this, event, shared_args, timeout_ms, cb = std::move(cb), request = n->request,
                      request_nsp = n->name](size_t count) {
    size_t expected = count > 0 ? count - 1 : 0;  // the other nodes
    auto p = std::make_unique<Pending>();
    p->type = kServerSideEmit;
    p->expected = expected;
    p->deadline = now_ms() + int64_t(timeout_ms ? timeout_ms : conf_.requests_timeout);
    p->done = [cb, expected](Pending& p, std::string error) {
      if (!error.empty())
        error = "timeout reached: only " + std::to_string(p.replies.size()) + " responses received out of " +
                std::to_string(expected);
      cb(std::move(error), std::move(p.replies));
    };
    std::string id = new_id();
    add_pending(id, std::move(p));
    if (expected > 0 && sharded_) {
      if (Nsp* n = find(request_nsp))
        request_sharded(*n, kServerSideEmit, &id, server_event_request(uid_, &id, event, *shared_args),
                        shared_args->attachments);
    } else if (expected > 0) {
      publish_json(request, server_event_request(uid_, &id, event, *shared_args).get());
    }
    check(id);
  });
}

void RedisAdapter::broadcast_with_ack(const BroadcastOptions& opts, const std::string& event, Payload args,
                                      uint64_t timeout_ms, BroadcastAcks cb) {
  if (!timeout_ms) timeout_ms = conf_.requests_timeout;
  Json data(json_array());
  json_array_append_new(data.get(), json_stringn(event.data(), event.size()));
  json_array_extend(data.get(), args.args.get());
  std::string id = new_id();
  auto p = std::make_unique<Pending>();
  p->type = kBroadcast;
  p->got = 1;  // our own delivery is one server report
  p->deadline = now_ms() + int64_t(timeout_ms);
  p->done = [cb](Pending& p, std::string error) { cb(!error.empty(), std::move(p.acks)); };
  Pending* pp = add_pending(id, std::move(p));
  pp->clients = local_.deliver_with_ack(opts, data.get(), args.attachments, timeout_ms, [this, id](Payload reply) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    it->second->acks.push_back(std::move(reply));
    check(id);
  });
  Nsp* n = find(opts.nsp);
  if (!n || opts.local || !ready()) {
    pp->expected = 1;
    server_.timers().post([this, id] { check(id); });  // never inside the call
    return;
  }
  if (sharded_) return broadcast_with_ack_sharded(*n, opts, id, data.get(), args.attachments, timeout_ms);
  publish(n->request, encode_ack_broadcast(uid_, id, data.get(), args.attachments, opts, timeout_ms));
  numsub(n->request, [this, id](size_t count) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    it->second->expected = std::max<size_t>(count, 1);
    check(id);
  });
}

}  // namespace dr::cluster
