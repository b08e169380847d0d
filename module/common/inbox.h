// The notification inbox of each user, kept in Redis and shared by the
// `notifications` module (delivers unread ones on subscribe, marks them read)
// and the `api` module (stores new ones).
//
// Layout, per user, under the app prefix (redis_app_prefix, default "depth:"),
// <id> being the user id as text (numeric ids as their decimal string):
//
//   <prefix>notifications:<id>:items   hash   notification id -> JSON text
//                                             {id, type, title, body, data, createdAt}
//   <prefix>notifications:<id>:order   list   notification ids, oldest first
//   <prefix>notifications:<id>:unread  set    ids not read yet
//
// A notification is in the inbox when its id is in `items` (and `order`); it is
// read when its id is not in `unread`. The JSON text has no `read` field: the
// `unread` set is the only truth about that (clients get `read: false` added).
// An inbox holds at most `max_items` notifications: storing one more drops the
// oldest from all three keys in the same step.
//
// Every write is atomic. Storing runs one Lua script (EVAL) for all the
// recipients of a notification, so a notification is stored for every
// recipient or for none, and the trimming happens with the insert; marking
// read is a MULTI/EXEC. A backend writing this layout itself must keep the
// three keys consistent the same way (see kAddScript in inbox.cc).
#pragma once

#include <depth-realtime/json.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dr::app::inbox {

// Default bound of an inbox (directive api_inbox_max).
inline constexpr uint64_t kDefaultMaxItems = 100;

std::string items_key(const std::string& user);
std::string order_key(const std::string& user);
std::string unread_key(const std::string& user);

// `error` is empty on success, else a short reason ("Redis unavailable", ...).
using Done = std::function<void(std::string error)>;

// Stores `notification` (an object with a string `id`) as unread in the inbox of
// each of `users` (distinct ids), keeping at most `max_items` per inbox.
void add(const std::vector<std::string>& users, const json_t* notification, uint64_t max_items, Done done);

// The unread notifications of `user`, oldest first, each with `read: false`.
void unread(const std::string& user, std::function<void(std::string error, std::vector<Json> items)> done);

// Marks notification `id` of `user` read. `found` is false when the inbox of
// `user` does not hold it (then nothing changes).
void mark_read(const std::string& user, const std::string& id, std::function<void(std::string error, bool found)> done);

}  // namespace dr::app::inbox
