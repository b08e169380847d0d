#include "idempotent.h"

#include <depth-realtime/redis.h>

#include <memory>
#include <utility>

#include "app.h"

namespace dr::app::idem {
namespace {

namespace redis = dr::redis;

// KEYS: record, stream, edits (the record again when there is none).
// ARGV: ttl ms, maxlen (0: none), the entry's field/value pairs.
// Returns {1, id} when stored now, {0, id, fields|nil, edit|nil, deliver}
// when the record exists; deliver is 1 when this call claimed the broadcast.
constexpr const char* kStoreScript = R"lua(
local id = redis.call('HGET', KEYS[1], 'id')
if id then
  local entry = redis.call('XRANGE', KEYS[2], id, id)
  local fields = entry[1] and entry[1][2] or false
  local edit = false
  if KEYS[3] ~= KEYS[1] then edit = redis.call('HGET', KEYS[3], id) end
  local deliver = 0
  if redis.call('HGET', KEYS[1], 'delivered') == '0' then
    redis.call('HSET', KEYS[1], 'delivered', '1')
    deliver = 1
  end
  return {0, id, fields, edit, deliver}
end
local args = {}
if ARGV[2] ~= '0' then args = {'MAXLEN', '~', ARGV[2]} end
table.insert(args, '*')
for i = 3, #ARGV do table.insert(args, ARGV[i]) end
id = redis.call('XADD', KEYS[2], unpack(args))
redis.call('HSET', KEYS[1], 'id', id, 'delivered', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1, id}
)lua";

// KEYS: record. 1: the caller broadcasts (claimed now, or the record is gone);
// 0: a retry did already.
constexpr const char* kClaimScript = R"lua(
local d = redis.call('HGET', KEYS[1], 'delivered')
if d == '1' then return 0 end
if d then redis.call('HSET', KEYS[1], 'delivered', '1') end
return 1
)lua";

Result failure_of(const redis::Reply& r) {
  Result out;
  if (r.error() && r.str == redis::kUnavailable) out.outcome = r.unanswered ? Outcome::Unknown : Outcome::NotStored;
  else out.error = r.error() && !r.str.empty() ? r.str : "unexpected Redis reply";
  return out;
}

// The field/value array of a stream entry as an object of strings.
Json fields_of(const redis::Reply& kv) {
  Json o(json_object());
  for (size_t i = 0; i + 1 < kv.elements.size(); i += 2) {
    const std::string& k = kv.elements[i].str;
    const std::string& v = kv.elements[i + 1].str;
    json_object_setn_new(o.get(), k.data(), k.size(), json_stringn(v.data(), v.size()));
  }
  return o;
}

// Stored or found: done once redis_wait_replicas says whether replicas have it.
void confirm(std::shared_ptr<Result> res, std::function<void(Result)> done) {
  redis::replicated([res, done = std::move(done)](redis::Replication rep) {
    res->replication = rep;
    done(std::move(*res));
  });
}

void claim(const std::string& record, std::shared_ptr<Result> res, std::function<void(Result)> done) {
  redis::command({"EVAL", kClaimScript, "1", record}, [res, done = std::move(done)](redis::Reply r) mutable {
    // Stored, whatever the claim says; without its answer, broadcasting is
    // better than leaving a stored message unheard.
    res->deliver = r.type != redis::Reply::Type::Integer || r.integer == 1;
    confirm(res, std::move(done));
  });
}

}  // namespace

bool valid_key(std::string_view key) {
  if (key.empty() || key.size() > kMaxLength) return false;
  for (char c : key) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == ':' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string record_key(std::string_view kind, std::string_view scope, std::string_view user, std::string_view key) {
  std::string k = "idem:";
  // The scope (conversation, project) is the hash tag: the record shares the
  // slot of the stream its script writes.
  k.append(kind).append(":").append(std::to_string(scope.size())).append(":").append(redis::tag(scope));
  k.append(":").append(std::to_string(user.size())).append(":").append(user);
  k.append(":").append(key);
  return redis::key(k);
}

void append(Append a, std::function<void(Result)> done) {
  std::vector<std::string> argv{"EVAL", kStoreScript, "3", a.record, a.stream, a.edits.empty() ? a.record : a.edits,
                                std::to_string(a.ttl_ms), std::to_string(a.maxlen)};
  argv.reserve(argv.size() + a.fields.size());
  for (std::string& f : a.fields) argv.push_back(std::move(f));
  redis::command(std::move(argv), [record = a.record, done = std::move(done)](redis::Reply r) {
    const auto& e = r.elements;
    if (r.type != redis::Reply::Type::Array || e.size() < 2 || e[1].type != redis::Reply::Type::String)
      return done(failure_of(r));
    auto res = std::make_shared<Result>();
    res->id = e[1].str;
    if (e[0].integer == 1) {
      res->outcome = Outcome::Stored;
      return claim(record, res, done);
    }
    res->outcome = Outcome::Found;
    if (e.size() > 2 && e[2].type == redis::Reply::Type::Array) res->fields = fields_of(e[2]);
    if (e.size() > 3 && e[3].type == redis::Reply::Type::String) res->edit = e[3].str;
    res->deliver = e.size() > 4 && e[4].integer == 1;
    confirm(res, done);
  });
}

}  // namespace dr::app::idem
