#include "inbox.h"

#include <depth-realtime/redis.h>

#include <memory>

namespace dr::app::inbox {
namespace {

// KEYS: items, order, unread of each recipient in turn; ARGV: id, JSON, bound.
// Scripts are not rolled back when a command fails, so the key types are
// checked before anything is written: every inbox gets it, or none.
// HSETNX makes a replayed call harmless (the id is one per API call).
constexpr const char* kAddScript = R"lua(
local id, text, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local want = {'hash', 'list', 'set'}
for i = 1, #KEYS do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= want[(i - 1) % 3 + 1] then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. t .. ', not an inbox ' .. want[(i - 1) % 3 + 1])
  end
end
for i = 1, #KEYS, 3 do
  local items, order, unread = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  if redis.call('HSETNX', items, id, text) == 1 then
    redis.call('RPUSH', order, id)
    redis.call('SADD', unread, id)
    while redis.call('LLEN', order) > max do
      local old = redis.call('LPOP', order)
      redis.call('HDEL', items, old)
      redis.call('SREM', unread, old)
    end
  end
end
return #KEYS / 3
)lua";

// KEYS: items, order, unread of one user. The unread JSON texts, oldest first.
constexpr const char* kUnreadScript = R"lua(
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if redis.call('SISMEMBER', KEYS[3], id) == 1 then
    local text = redis.call('HGET', KEYS[1], id)
    if text then out[#out + 1] = text end
  end
end
return out
)lua";

std::string key_of(const std::string& user, const char* what) {
  return redis::key("notifications:" + redis::tag(user) + ":" + what);  // a user's inbox: one slot
}

}  // namespace

std::string items_key(const std::string& user) {
  return key_of(user, "items");
}
std::string order_key(const std::string& user) {
  return key_of(user, "order");
}
std::string unread_key(const std::string& user) {
  return key_of(user, "unread");
}

void add(const std::vector<std::string>& users, const json_t* notification, uint64_t max_items, Done done) {
  // A cluster: the users' inboxes are on different slots. One script per
  // user (each inbox gets it or not); `done` once all have answered, with
  // the first error.
  if (redis::cluster() && users.size() > 1) {
    auto left = std::make_shared<size_t>(users.size());
    auto error = std::make_shared<std::string>();
    auto shared_done = std::make_shared<Done>(std::move(done));
    for (const std::string& u : users)
      add({u}, notification, max_items, [left, error, shared_done](std::string e) {
        if (!e.empty() && error->empty()) *error = std::move(e);
        if (--*left == 0 && *shared_done) (*shared_done)(*error);
      });
    return;
  }
  std::vector<std::string> argv{"EVAL", kAddScript, std::to_string(users.size() * 3)};
  for (const std::string& u : users) {
    argv.push_back(items_key(u));
    argv.push_back(order_key(u));
    argv.push_back(unread_key(u));
  }
  argv.push_back(json_str(notification, "id") ? json_str(notification, "id") : "");
  argv.push_back(json_text(notification));
  argv.push_back(std::to_string(max_items ? max_items : 1));
  redis::command(std::move(argv),
                 [done = std::move(done)](redis::Reply r) { done(r.error() ? r.str : std::string()); });
}

void unread(const std::string& user, std::function<void(std::string error, std::vector<Json> items)> done) {
  redis::command({"EVAL", kUnreadScript, "3", items_key(user), order_key(user), unread_key(user)},
                 [done = std::move(done)](redis::Reply r) {
                   std::vector<Json> items;
                   if (r.error()) return done(r.str, std::move(items));
                   if (r.type != redis::Reply::Type::Array)
                     return done("unexpected reply from Redis", std::move(items));
                   for (const redis::Reply& e : r.elements) {
                     Json n = json_parse(e.str);
                     if (!json_is_object(n.get())) continue;  // not ours: skip rather than fail the whole inbox
                     json_object_set_new(n.get(), "read", json_false());
                     items.push_back(std::move(n));
                   }
                   done({}, std::move(items));
                 });
}

void mark_read(const std::string& user, const std::string& id,
               std::function<void(std::string error, bool found)> done) {
  redis::transaction({{"HEXISTS", items_key(user), id}, {"SREM", unread_key(user), id}},
                     [done = std::move(done)](redis::Reply r) {
                       if (r.error()) return done(r.str, false);
                       if (r.type != redis::Reply::Type::Array || r.elements.size() != 2)
                         return done("unexpected reply from Redis", false);
                       for (const redis::Reply& e : r.elements)
                         if (e.error()) return done(e.str, false);
                       done({}, r.elements[0].as_int() == 1);
                     });
}

}  // namespace dr::app::inbox
