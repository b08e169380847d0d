// The classic adapter's pub/sub messages (worker/cluster/pubsub_codec.h): what
// one node encodes, another decodes to the same event; a node's own messages
// and other namespaces' are refused before their data is read.
#include <gtest/gtest.h>

#include "cluster/adapter_wire.h"
#include "sio/msgpack_json.h"
#include "cluster/offset.h"
#include "cluster/pubsub_codec.h"

using namespace dr;
using namespace dr::cluster;
using namespace dr::cluster::wire;

namespace {

sio::EncodedBroadcast typing_in_chat() {
  sio::EncodedBroadcast b;
  b.opts.nsp = "/chat";
  b.opts.rooms = {"conversation:1"};
  b.opts.except = {"alice", "alice"};
  b.opts.is_volatile = true;
  b.data = json_parse(R"(["user:typing",{"userId":"bob","isTyping":true}])");
  return b;
}

}  // namespace

TEST(ClusterPubsubCodec, ABroadcastDecodesOnAnotherNodeAsTheSameEvent) {
  std::string bytes = encode_broadcast("NODEA1", typing_in_chat());
  ReceivedBroadcast r;
  ASSERT_TRUE(decode_broadcast(bytes, "NODEB2", "/chat", r));
  EXPECT_EQ(r.packet.type, sio::PacketType::Event);
  EXPECT_EQ(r.packet.nsp, "/chat");
  EXPECT_FALSE(r.packet.id);
  EXPECT_EQ(json_text(r.packet.data.get()), R"(["user:typing",{"userId":"bob","isTyping":true}])");
  EXPECT_TRUE(r.is_volatile);
  EXPECT_EQ(r.rooms, std::vector<std::string>{"conversation:1"});
  EXPECT_EQ(r.except, std::vector<std::string>{"alice"});  // sent once
}

TEST(ClusterPubsubCodec, OwnMessagesOtherNamespacesAndJunkAreRefused) {
  std::string bytes = encode_broadcast("NODEA1", typing_in_chat());
  ReceivedBroadcast r;
  EXPECT_FALSE(decode_broadcast(bytes, "NODEA1", "/chat", r));  // ours, come back
  EXPECT_FALSE(decode_broadcast(bytes, "NODEB2", "/", r));
  EXPECT_FALSE(decode_broadcast("not msgpack", "NODEB2", "/chat", r));
  EXPECT_FALSE(r.packet.data);
}

TEST(ClusterPubsubCodec, TheSenderIsReadOnTheBytes) {
  EXPECT_EQ(raw_uid(encode_broadcast("TAGnode", typing_in_chat())), "TAGnode");
  std::string long_uid(40, 'u');  // a str 8, not a fixstr
  EXPECT_EQ(raw_uid(encode_broadcast(long_uid, typing_in_chat())), long_uid);
  EXPECT_EQ(raw_uid(""), "");
  EXPECT_EQ(raw_uid("not msgpack"), "");
  EXPECT_EQ(raw_uid("\x93\xa5" "abc"), "");   // cut short
  EXPECT_EQ(raw_uid("\x93\x01\xa1x"), "");   // not a string first
}

TEST(ClusterPubsubCodec, ABroadcastWithAcksAndItsAnswer) {
  Json data = json_parse(R"(["ping",1])");
  BroadcastOptions opts;
  opts.nsp = "/";
  opts.rooms = {"r"};
  // Decoded strings point into the bytes: they are kept.
  std::string req_bytes = encode_ack_broadcast("NODEA1", "REQ1", data.get(), {}, opts, 5000);
  Unpacked req;
  ASSERT_TRUE(req.parse(req_bytes));
  EXPECT_EQ(as_int(map_get(req.root(), "type")), kBroadcast);
  EXPECT_EQ(as_str(map_get(req.root(), "uid")), "NODEA1");
  EXPECT_EQ(as_str(map_get(req.root(), "requestId")), "REQ1");
  const msgpack_object* flags = map_get(*map_get(req.root(), "opts"), "flags");
  ASSERT_TRUE(flags);
  EXPECT_EQ(as_int(map_get(*flags, "timeout")), 5000);

  std::string ack_bytes = encode_broadcast_ack("REQ1", Payload::of(Json(json_string("pong"))));
  Unpacked ack;
  ASSERT_TRUE(ack.parse(ack_bytes));
  EXPECT_EQ(as_int(map_get(ack.root(), "type")), kBroadcastAck);
  EXPECT_EQ(as_str(map_get(ack.root(), "packet")), "pong");
  std::string none_bytes = encode_broadcast_ack("REQ1", Payload(Json(json_array())));
  Unpacked none;
  ASSERT_TRUE(none.parse(none_bytes));
  EXPECT_EQ(map_get(none.root(), "packet")->type, MSGPACK_OBJECT_NIL);
}

TEST(ClusterOffset, NumbersInBase64DigitsReadBack) {
  for (uint64_t v : {uint64_t(0), uint64_t(63), uint64_t(64), uint64_t(1764748800123)})
    EXPECT_EQ(parse_base64_number(base64_number(v)), int64_t(v));
  EXPECT_EQ(base64_number(64), "10");
  EXPECT_EQ(parse_base64_number(""), 0);
  EXPECT_EQ(parse_base64_number("a.b"), -1);
  EXPECT_EQ(make_offset(64, "uid", 3), "10.uid3");
}
