// projects: live collaboration on projects in the /projects namespace
// (contract §2 "/projects", §4, §5, §8).
//
//   project:join {projectId}           member only; joins the room project:<id>;
//                                      project:joined to the socket, user:joined and
//                                      activity to the others (first join only); ack {projectId}
//   project:leave {projectId}          leaves; user:left and activity to the others when the
//                                      socket was in the room; ack {projectId}
//   project:statusUpdate {projectId, status}
//   project:progress {projectId, progress, milestone?}
//                                      member only; project:update to the whole room,
//                                      activity to the others; ack = the update
//   project:comment {projectId, comment, attachments?, clientMessageId?}
//                                      member only; XADD to the comment stream first, then
//                                      project:comment to the whole room, activity to the
//                                      others; ack = the comment. With a clientMessageId a
//                                      retry returns the stored comment (idempotent.h)
//
// Members are those the Redis set projects_members_key holds, those whose
// token's `projects` claim names the project, and admins (dr::app::check_access).
// Receiving a room's traffic needs a join; acting in a project needs only
// membership. Project ids are handled as their string form (42 -> "42").
//
// Comment stream (projects_comments_key, default <prefix>project:<id>:comments):
// fields projectId, userId, comment, attachments (JSON text), createdAt,
// clientMessageId (when given); the entry id is the comment id. A comment's
// key record: <prefix>idem:comment:<n>:<projectId>:<n>:<userId>:<clientMessageId>,
// kept projects_idempotency_ttl. JSON has no bytes, so a binary value anywhere
// inside `attachments` is stored as {"$binary":"<base64>"} (standard base64,
// padded); clients get it as binary.

#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>
#include <depth-realtime/validate.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "app.h"
#include "idempotent.h"
#include "stored_json.h"

namespace {

constexpr const char* kNsp = "/projects";
namespace idem = dr::app::idem;

// ---------------------------------------------------------- configuration

struct ProjectsConf : dr::ModuleConfBase<ProjectsConf> {
  std::string members_key = "project:{id}:members";
  std::string comments_key = "project:{id}:comments";
  uint64_t comments_maxlen = 10000;  // 0: not trimmed
  std::string access_claim = "projects";
  uint64_t idempotency_ttl = idem::kDefaultTtlMs;
};

constexpr unsigned S = dr::kConfServer;
constexpr unsigned N = dr::kConfNamespace;

const dr::Directive kDirectives[] = {
    {"projects_members_key", S | N, 1, 1, dr::app::set_key_pattern<&ProjectsConf::members_key>, "project:{id}:members", true,
     "Redis set of a project's members (redis_app_prefix added, {id} = the project id); a user id in it grants access."},
    {"projects_access_claim", S | N, 1, 1, dr::app::set_claim<&ProjectsConf::access_claim>, "projects", true,
     "Token claim (an array of project ids, kept by auth_jwt_access_claims) that grants access; off: none."},
    {"projects_comments_key", S | N, 1, 1, dr::app::set_key_pattern<&ProjectsConf::comments_key>, "project:{id}:comments", true,
     "Redis Stream the comments of a project are appended to (redis_app_prefix added, {id} = the project id)."},
    {"projects_comments_maxlen", S | N, 1, 1, dr::set_uint<&ProjectsConf::comments_maxlen>, "10000", true,
     "Approximate length a comment stream is trimmed to on each comment (XADD MAXLEN ~); 0: never trimmed."},
    {"projects_idempotency_ttl", S | N, 1, 1, dr::set_msec<&ProjectsConf::idempotency_ttl>, "24h", true,
     "How long a comment's clientMessageId is remembered: a retry with it within this time returns the stored comment."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

// A copy: a reload may replace the conf while a handler waits on Redis.
ProjectsConf settings(dr::Worker& w, const dr::Module& self) {
  const auto* c = static_cast<const ProjectsConf*>(w.conf(self, kNsp));
  return c ? *c : ProjectsConf();
}

// --------------------------------------------------------------- payloads

using dr::schema::Kind;

// Contract §8 limits.
const dr::schema::Table kEvents = {
    {"project:join", {{"projectId", Kind::Id, true}}},
    {"project:leave", {{"projectId", Kind::Id, true}}},
    {"project:statusUpdate", {{"projectId", Kind::Id, true}, {"status", Kind::String, true, 1, 64}}},
    {"project:progress",
     {{"projectId", Kind::Id, true}, {"progress", Kind::Number, true, 0, 100}, {"milestone", Kind::String, false, 1, 256}}},
    {"project:comment",
     {{"projectId", Kind::Id, true},
      {"comment", Kind::String, true, 1, 10000},
      {"attachments", Kind::Array, false, 0, 10},
      {idem::kField, Kind::String, false, 1, idem::kMaxLength}}},
};

std::string room_of(const std::string& project) { return "project:" + project; }

json_t* str(const std::string& s) { return json_stringn(s.data(), s.size()); }

dr::Json project_object(const std::string& project) {
  dr::Json o(json_object());
  json_object_set_new(o.get(), "projectId", str(project));
  return o;
}

// To the project's room; `except_sid` (a socket id) leaves that one socket out.
void to_room(dr::Worker& w, const std::string& project, const char* event, dr::Payload args,
             const std::string& except_sid = {}) {
  dr::BroadcastOptions o;
  o.nsp = kNsp;
  o.rooms = {room_of(project)};
  if (!except_sid.empty()) o.except = {except_sid};  // every socket is in the room of its id
  w.broadcast(o, event, std::move(args));
}

// activity {projectId, userId, kind, at} to the others in the room.
void activity(dr::Worker& w, const std::string& sid, const std::string& project, const std::string& user,
              const char* kind, const std::string& at) {
  dr::Json a = project_object(project);
  json_object_set_new(a.get(), "userId", str(user));
  json_object_set_new(a.get(), "kind", json_string(kind));
  json_object_set_new(a.get(), "at", str(at));
  to_room(w, project, "activity", dr::Payload::of(std::move(a)), sid);
}

// user:joined / user:left {userId, projectId} to the others in the room.
void presence(dr::Worker& w, dr::Socket& s, const std::string& project, const char* event) {
  dr::Json p(json_object());
  json_object_set_new(p.get(), "userId", str(dr::app::user_id(s)));
  json_object_set_new(p.get(), "projectId", str(project));
  to_room(w, project, event, dr::Payload::of(std::move(p)), s.id());
}

// ----------------------------------------------------------------- access

// What an answer given later needs of the event: its name and ack id.
using Request = std::shared_ptr<const dr::Event>;
Request request_of(const dr::Event& ev) { return std::make_shared<const dr::Event>(dr::Event{ev.name, dr::Payload(), ev.ack_id}); }

using Hold = std::shared_ptr<void>;
using Allowed = std::function<void(dr::Socket& s, const dr::Event& ev, Hold hold)>;

// Runs `then` once the socket's user is known to be a member of `project`,
// else answers FORBIDDEN (SOCKET_ERROR when Redis cannot tell). The socket's
// next events wait meanwhile; `then` gets the hold to keep while it waits more.
void with_access(dr::Worker& w, const dr::Module& self, dr::Socket& s, const dr::Event& ev, const std::string& project,
                 Allowed then) {
  ProjectsConf conf = settings(w, self);
  dr::app::check_access(s, conf.access_claim, conf.members_key, project,
                        [hold = s.delay_next_events(), req = request_of(ev), project, then = std::move(then)](dr::Socket& s,
                                                                                                dr::app::Access a) {
                          if (a != dr::app::Access::Allowed) return dr::app::refuse(s, *req, a, "project " + project);
                          then(s, *req, hold);
                        });
}

// ---------------------------------------------------------------- events

void on_join(dr::Worker& w, const dr::Module& self, dr::Socket& s, dr::Event& ev) {
  std::string project = dr::app::id_field(ev, "projectId");
  with_access(w, self, s, ev, project, [&w, project](dr::Socket& s, const dr::Event& ev, Hold) {
    std::string room = room_of(project);
    bool first = !s.in_room(room);  // a re-join tells only the socket itself
    s.join(room);
    s.emit("project:joined", dr::Payload::of(project_object(project)));
    if (first) {
      presence(w, s, project, "user:joined");
      activity(w, s.id(), project, dr::app::user_id(s), "join", dr::app::iso_now());
    }
    dr::ack_data(s, ev, project_object(project));
  });
}

void on_leave(dr::Worker& w, dr::Socket& s, dr::Event& ev) {
  std::string project = dr::app::id_field(ev, "projectId");
  std::string room = room_of(project);
  if (s.in_room(room)) {
    s.leave(room);
    presence(w, s, project, "user:left");
    activity(w, s.id(), project, dr::app::user_id(s), "leave", dr::app::iso_now());
  }
  dr::ack_data(s, ev, project_object(project));
}

// project:update {projectId, kind, <fields>, updatedBy, at} to the whole room,
// activity to the others, the update to the ack.
void publish_update(dr::Worker& w, dr::Socket& s, const dr::Event& ev, const std::string& project, const char* kind,
                    const json_t* fields) {
  std::string at = dr::app::iso_now();
  const std::string& user = dr::app::user_id(s);
  dr::Json update = project_object(project);
  json_object_set_new(update.get(), "kind", json_string(kind));
  json_object_update(update.get(), const_cast<json_t*>(fields));
  json_object_set_new(update.get(), "updatedBy", str(user));
  json_object_set_new(update.get(), "at", str(at));
  to_room(w, project, "project:update", dr::Payload::of(dr::Json(json_deep_copy(update.get()))));
  activity(w, s.id(), project, user, kind, at);
  dr::ack_data(s, ev, std::move(update));
}

// The update's own fields, kept until access is known.
using Fields = std::shared_ptr<json_t>;
Fields fields_of(json_t* obj) { return Fields(obj, [](json_t* j) { json_decref(j); }); }

void on_status(dr::Worker& w, const dr::Module& self, dr::Socket& s, dr::Event& ev) {
  std::string project = dr::app::id_field(ev, "projectId");
  Fields fields = fields_of(json_object());
  json_object_set(fields.get(), "status", json_object_get(dr::app::payload(ev), "status"));
  with_access(w, self, s, ev, project, [&w, project, fields](dr::Socket& s, const dr::Event& ev, Hold) {
    publish_update(w, s, ev, project, "status", fields.get());
  });
}

void on_progress(dr::Worker& w, const dr::Module& self, dr::Socket& s, dr::Event& ev) {
  std::string project = dr::app::id_field(ev, "projectId");
  const json_t* in = dr::app::payload(ev);
  const json_t* milestone = json_object_get(in, "milestone");
  Fields fields = fields_of(json_object());
  json_object_set(fields.get(), "progress", json_object_get(in, "progress"));
  json_object_set_new(fields.get(), "milestone", json_is_string(milestone) ? json_deep_copy(milestone) : json_null());
  with_access(w, self, s, ev, project, [&w, project, fields](dr::Socket& s, const dr::Event& ev, Hold) {
    publish_update(w, s, ev, project, "progress", fields.get());
  });
}

// A comment as clients see it, with `list` (its attachments, placeholders
// numbered into `bin`).
dr::Payload comment_payload(const std::string& id, const std::string& project, const std::string& user,
                            const std::string& comment, const json_t* list, std::vector<std::string> bin,
                            const std::string& created, const std::string& key) {
  dr::Json c(json_object());
  json_object_set_new(c.get(), "id", str(id));
  json_object_set_new(c.get(), "projectId", str(project));
  json_object_set_new(c.get(), "userId", str(user));
  json_object_set_new(c.get(), "comment", str(comment));
  json_object_set_new(c.get(), "attachments", json_deep_copy(list));
  json_object_set_new(c.get(), "createdAt", str(created));
  if (!key.empty()) json_object_set_new(c.get(), idem::kField, str(key));
  dr::Payload p = dr::Payload::of(std::move(c));
  p.attachments = std::move(bin);
  return p;
}

// The stored comment of a stream entry's `fields` (a retry found it).
dr::Payload stored_comment(const std::string& id, const std::string& project, const json_t* fields) {
  auto field = [fields](const char* name) {
    const char* v = dr::json_str(fields, name);
    return std::string(v ? v : "");
  };
  std::vector<std::string> bin;
  dr::Json stored = dr::app::json_field(fields, "attachments", dr::Json(json_array()));
  dr::Json list = dr::app::from_stored(stored.get(), bin);
  std::string created = field("createdAt");
  if (created.empty() && dr::app::stream_id_ms(id) >= 0) created = dr::app::iso_time(dr::app::stream_id_ms(id));
  return comment_payload(id, project, field("userId"), field("comment"), list.get(), std::move(bin), created,
                         field(idem::kField));
}

// What the comment's Redis answer is told to.
struct CommentCall {
  dr::Worker* w;
  std::weak_ptr<dr::Socket> socket;
  std::string sid;
  Request req;
  Hold hold;
  std::string project, user, comment, created, key;
  std::shared_ptr<const dr::Payload> attachments;

  std::shared_ptr<dr::Socket> live() const {
    auto s = socket.lock();
    return s && s->connected() ? s : nullptr;
  }
  // To the room and activity to the others (when `deliver`), then the ack.
  // Not `rep.confirmed` (redis_wait_replicas): stored, and broadcast, but the
  // ack says the replicas have not confirmed it.
  void finish(const dr::Payload& p, bool deliver, const dr::redis::Replication& rep = {}) const {
    if (deliver) {
      // Stored: the room hears of it even if the sender has gone meanwhile.
      to_room(*w, project, "project:comment", p.copy());
      activity(*w, sid, project, user, "comment", dr::json_str(json_array_get(p.args.get(), 0), "createdAt"));
    }
    auto s = live();
    if (!s) return;
    if (!rep.confirmed)
      return dr::app::outcome_unknown(*s, *req,
                                      "comment " + rep.details() +
                                          (key.empty() ? ": a failover now may lose it"
                                                       : "; send it again with the same clientMessageId"),
                                      key);
    dr::app::ack_with(*s, *req, json_array_get(p.args.get(), 0), p.attachments);
  }
  // This attempt's comment under `id`; `at` overrides createdAt.
  dr::Payload as_sent(const std::string& id, const std::string& at = {}) const {
    return comment_payload(id, project, user, comment, json_array_get(attachments->args.get(), 0),
                           attachments->attachments, at.empty() ? created : at, key);
  }
};

void comment_unknown(const CommentCall& c) {
  auto s = c.live();
  if (!s) return;
  if (c.key.empty())
    dr::app::outcome_unknown(*s, *c.req,
                             "comment may have been stored: Redis did not answer (a clientMessageId makes a retry safe)");
  else
    dr::app::outcome_unknown(
        *s, *c.req, "comment may have been stored: Redis did not answer; send it again with the same clientMessageId",
        c.key);
}

void comment_not_stored(const CommentCall& c, const std::string& why) {
  if (auto s = c.live()) dr::app::internal_error(*s, *c.req, "comment not stored: " + why);
}

// The comment is stored before anyone hears of it: no ack, no broadcast when
// the XADD fails (contract §5); "not stored" only when it surely was not.
void on_comment(dr::Worker& w, const dr::Module& self, dr::Socket& s, dr::Event& ev) {
  std::string project = dr::app::id_field(ev, "projectId");
  const json_t* in = dr::app::payload(ev);
  const char* given_key = dr::json_str(in, idem::kField);
  if (given_key && !idem::valid_key(given_key)) return dr::app::invalid(s, ev, idem::kInvalidDetails);
  std::string key = given_key ? given_key : "";
  const json_t* text = json_object_get(in, "comment");
  std::string comment(json_string_value(text), json_string_length(text));
  const json_t* given = json_object_get(in, "attachments");
  dr::Json none(json_array());
  // The attachments with their binary (renumbered from 0), for the broadcast.
  auto attachments = std::make_shared<const dr::Payload>(
      dr::payload_of(json_is_array(given) ? given : none.get(), ev.args.attachments));

  with_access(w, self, s, ev, project, [&w, &self, project, comment, key, attachments](dr::Socket& s,
                                                                                       const dr::Event& ev, Hold hold) {
    ProjectsConf conf = settings(w, self);
    auto c = std::make_shared<CommentCall>(CommentCall{&w, s.weak(), s.id(), request_of(ev), hold, project,
                                                       dr::app::user_id(s), comment, dr::app::iso_now(), key,
                                                       attachments});
    const json_t* list = json_array_get(attachments->args.get(), 0);
    std::vector<std::string> fields{"projectId", project, "userId", c->user, "comment", comment, "attachments",
                                    dr::json_text(dr::app::to_stored(list, attachments->attachments).get()),
                                    "createdAt", c->created};
    if (!key.empty()) fields.insert(fields.end(), {idem::kField, key});
    std::string stream = dr::redis::key(dr::app::expand(conf.comments_key, project));

    if (key.empty()) {
      std::vector<std::string> argv{"XADD", stream};
      if (conf.comments_maxlen > 0) argv.insert(argv.end(), {"MAXLEN", "~", std::to_string(conf.comments_maxlen)});
      argv.push_back("*");
      argv.insert(argv.end(), fields.begin(), fields.end());
      dr::redis::command(std::move(argv), [c](dr::redis::Reply r) {
        if (r.type == dr::redis::Reply::Type::String)
          return dr::redis::replicated([c, id = r.str](dr::redis::Replication rep) {
            c->finish(c->as_sent(id), true, rep);
          });
        if (r.unanswered) return comment_unknown(*c);
        comment_not_stored(*c, r.error() ? r.str : std::string("unexpected reply"));
      });
      return;
    }

    idem::Append a;
    a.record = idem::record_key("comment", project, c->user, key);
    a.stream = std::move(stream);
    a.maxlen = conf.comments_maxlen;
    a.ttl_ms = conf.idempotency_ttl;
    a.fields = std::move(fields);
    idem::append(std::move(a), [c](idem::Result r) {
      switch (r.outcome) {
        case idem::Outcome::Unknown:
          return comment_unknown(*c);
        case idem::Outcome::NotStored:
          return comment_not_stored(*c, std::string(dr::redis::kUnavailable));
        case idem::Outcome::Failed:
          return comment_not_stored(*c, r.error);
        case idem::Outcome::Stored:
          return c->finish(c->as_sent(r.id), r.deliver, r.replication);
        case idem::Outcome::Found:
          if (r.fields) return c->finish(stored_comment(r.id, c->project, r.fields.get()), r.deliver, r.replication);
          // Trimmed from the stream since: as sent, timed by its id.
          return c->finish(c->as_sent(r.id, dr::app::iso_time(std::max<int64_t>(0, dr::app::stream_id_ms(r.id)))),
                           r.deliver, r.replication);
      }
    });
  });
}

// ------------------------------------------------------------- lifecycle

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<ProjectsConf>(); }
bool check_conf(dr::ModuleConf* conf, std::string& err) {
  if (static_cast<ProjectsConf*>(conf)->idempotency_ttl < 1000) err = "projects_idempotency_ttl must be at least 1s";
  return err.empty();
}

bool init_worker(dr::Worker& w, const dr::Module& self) {
  std::vector<std::string> names = w.namespaces();
  if (std::find(names.begin(), names.end(), kNsp) == names.end()) {
    dr::log(dr::LogLevel::Warn, "projects: the server block declares no \"namespace /projects\": project events are off");
    return true;
  }
  w.use_event(kNsp, dr::schema::middleware(kEvents));
  w.on(kNsp, "project:join", [&w, &self](dr::Socket& s, dr::Event& e) { on_join(w, self, s, e); });
  w.on(kNsp, "project:leave", [&w](dr::Socket& s, dr::Event& e) { on_leave(w, s, e); });
  w.on(kNsp, "project:statusUpdate", [&w, &self](dr::Socket& s, dr::Event& e) { on_status(w, self, s, e); });
  w.on(kNsp, "project:progress", [&w, &self](dr::Socket& s, dr::Event& e) { on_progress(w, self, s, e); });
  w.on(kNsp, "project:comment", [&w, &self](dr::Socket& s, dr::Event& e) { on_comment(w, self, s, e); });
  // A recovered session rejoins a project's room only if still a member.
  w.on_room_check(kNsp, [&w, &self](dr::Socket& s, const std::string& room, dr::RoomVerdict done) {
    ProjectsConf conf = settings(w, self);
    dr::app::check_room(s, room, room_of(""), conf.access_claim, conf.members_key, std::move(done));
  });
  return true;
}

void exit_worker(dr::Worker&, const dr::Module&) {}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "projects", kDirectives, create_conf, check_conf, init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
