// notifications: the /notifications namespace (contract §2, §5, §8).
//
//   notifications:subscribe {userId}    own id only (admins: any); joins user:<userId>,
//                                       sends every unread stored notification as
//                                       notification:new, oldest first, then acks {data:{userId}}
//   notifications:unsubscribe {userId}  leaves user:<userId> (no more live pushes);
//                                       acks {data:{userId}}
//   notification:read {notificationId}  marks it read in the user's inbox (NOT_FOUND if
//                                       the inbox does not hold it); notification:read
//                                       {notificationId} to the user's other sockets here;
//                                       acks {data:{notificationId}}
//
// New notifications are stored and pushed by the api module (POST
// /api/v1/notifications) or pushed by a backend's redis-emitter; the inbox
// layout is in module/common/inbox.h.

#include <depth-realtime/module.h>
#include <depth-realtime/validate.h>

#include <memory>

#include "app.h"
#include "inbox.h"

namespace {

using dr::schema::Kind;

constexpr const char* kNamespace = "/notifications";

const dr::schema::Table kEvents = {
    {"notifications:subscribe", {{"userId", Kind::Id, true}}},
    {"notifications:unsubscribe", {{"userId", Kind::Id, true}}},
    {"notification:read", {{"notificationId", Kind::Id, true}}},
};

std::string user_room(const std::string& user) {
  return "user:" + user;
}

// What an answer given later needs of the event: its name and ack id
// (events themselves are move-only, callbacks must be copyable).
std::shared_ptr<const dr::Event> reply_to(const dr::Event& ev) {
  auto r = std::make_shared<dr::Event>();
  r->name = ev.name;
  r->ack_id = ev.ack_id;
  return r;
}

dr::Json id_object(const char* field, const std::string& id) {
  return dr::Json(json_pack("{s:s%}", field, id.data(), id.size()));
}

// A socket may act on its own user id only, unless its role is admin.
bool may_use(dr::Socket& s, const dr::Event& ev, const std::string& user) {
  if (user == dr::app::user_id(s) || dr::app::is_admin(s)) return true;
  dr::app::forbidden(s, ev, "userId: not your own user id");
  return false;
}

void on_subscribe(dr::Socket& s, dr::Event& ev) {
  std::string user = dr::app::id_field(ev, "userId");
  if (!may_use(s, ev, user)) return;
  // Joined before reading the inbox, so that nothing stored meanwhile is
  // missed (it may come twice: once live, once from the inbox).
  s.join(user_room(user));
  dr::app::inbox::unread(user, [weak = s.weak(), hold = s.delay_next_events(), ev = reply_to(ev), user](
                                   std::string error, std::vector<dr::Json> items) {
    auto sock = weak.lock();
    if (!sock || !sock->connected()) return;
    if (!error.empty()) return dr::app::internal_error(*sock, *ev, "cannot read the inbox: " + error);
    for (dr::Json& n : items) sock->emit("notification:new", dr::Payload::of(std::move(n)));
    dr::ack_data(*sock, *ev, id_object("userId", user));
  });
}

void on_unsubscribe(dr::Socket& s, dr::Event& ev) {
  std::string user = dr::app::id_field(ev, "userId");
  if (!may_use(s, ev, user)) return;
  s.leave(user_room(user));
  dr::ack_data(s, ev, id_object("userId", user));
}

void on_read(dr::Worker& w, dr::Socket& s, dr::Event& ev) {
  std::string id = dr::app::id_field(ev, "notificationId");
  const std::string& user = dr::app::user_id(s);
  if (user.empty()) return dr::app::forbidden(s, ev, "the socket has no user id");
  dr::app::inbox::mark_read(
      user, id, [&w, weak = s.weak(), hold = s.delay_next_events(), ev = reply_to(ev), user, id](std::string error, bool found) {
        auto sock = weak.lock();
        if (!sock || !sock->connected()) return;
        if (!error.empty()) return dr::app::internal_error(*sock, *ev, "cannot mark the notification read: " + error);
        if (!found) return dr::app::not_found(*sock, *ev, "notificationId: not in your inbox");
        // The user's other devices: every socket of the user here but this one.
        dr::BroadcastOptions others;
        others.nsp = sock->nsp();
        others.rooms = {user_room(user)};
        others.except = {sock->id()};
        w.broadcast(others, "notification:read", dr::Payload::of(id_object("notificationId", id)));
        dr::ack_data(*sock, *ev, id_object("notificationId", id));
      });
}

bool init_worker(dr::Worker& w, const dr::Module&) {
  bool declared = false;
  for (const std::string& nsp : w.namespaces()) declared |= nsp == kNamespace;
  if (!declared) {
    dr::log(dr::LogLevel::Warn, "notifications: namespace /notifications is not declared; the module does nothing");
    return true;
  }
  w.use_event(kNamespace, dr::schema::middleware(kEvents));
  // A recovered session gets back only the user rooms the fresh token may
  // subscribe to: its own, or any for an admin.
  w.on_room_check(kNamespace, [](dr::Socket& s, const std::string& room, dr::RoomVerdict done) {
    const std::string prefix = user_room("");
    if (room.rfind(prefix, 0) != 0) return done(true);
    done(room.substr(prefix.size()) == dr::app::user_id(s) || dr::app::is_admin(s));
  });
  w.on(kNamespace, "notifications:subscribe", on_subscribe);
  w.on(kNamespace, "notifications:unsubscribe", on_unsubscribe);
  w.on(kNamespace, "notification:read", [&w](dr::Socket& s, dr::Event& ev) { on_read(w, s, ev); });
  return true;
}

const dr::Module kModule = {
    dr::kModuleAbi,  DR_MODULE_SIGNATURE,
    "notifications",
    nullptr,  // no directives: the inbox bound is the api module's (api_inbox_max)
    nullptr,         nullptr,
    init_worker,     nullptr,
};

}  // namespace

DR_MODULE_EXPORT(kModule);
