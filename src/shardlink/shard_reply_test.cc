// shard_reply_test.cc — ShardReply copied out of real hiredis replies: raw RESP bytes
// go through hiredis's own reader, as they do on a live link.
#include "shardlink/shard_reply.h"

#include <hiredis/hiredis.h>

#include <string>

#include "gtest/gtest.h"

namespace wallet::shardlink {
namespace {

// Parses one reply from `resp` with hiredis's reader and copies it.
ShardReply Parse(const std::string& resp) {
  redisReader* reader = redisReaderCreate();
  EXPECT_EQ(redisReaderFeed(reader, resp.data(), resp.size()), REDIS_OK);
  void* raw = nullptr;
  EXPECT_EQ(redisReaderGetReply(reader, &raw), REDIS_OK);
  EXPECT_NE(raw, nullptr) << "incomplete reply: " << resp;
  ShardReply reply;
  if (raw != nullptr) {
    reply = ShardReply::FromHiredis(*static_cast<redisReply*>(raw));
    freeReplyObject(raw);
  }
  redisReaderFree(reader);
  return reply;
}

TEST(ShardReplyTest, StatusOk) {
  ShardReply reply = Parse("+OK\r\n");
  EXPECT_EQ(reply.type, ShardReply::Type::kStatus);
  EXPECT_TRUE(reply.is_ok());
  EXPECT_FALSE(reply.is_error());
  EXPECT_EQ(reply.error_code(), std::nullopt);
  EXPECT_EQ(reply.ToString(), "+OK");
  EXPECT_FALSE(Parse("+PONG\r\n").is_ok());
}

TEST(ShardReplyTest, ErrorWithAKnownCode) {
  ShardReply reply = Parse("-INSUFFICIENT_FUNDS account 7 has 100 available, needs 250\r\n");
  EXPECT_TRUE(reply.is_error());
  EXPECT_EQ(reply.error_word(), "INSUFFICIENT_FUNDS");
  EXPECT_EQ(reply.error_message(), "account 7 has 100 available, needs 250");
  EXPECT_EQ(reply.error_code(), ResultCode::kInsufficientFunds);
}

TEST(ShardReplyTest, MovedIsWrongPartition) {
  ShardReply reply = Parse("-MOVED 17 unknown partition 17 is not owned here\r\n");
  EXPECT_EQ(reply.error_code(), ResultCode::kWrongPartition);
  EXPECT_EQ(reply.error_message(), "17 unknown partition 17 is not owned here");
}

TEST(ShardReplyTest, ErrorWithAnUnknownWordOrNoMessage) {
  ShardReply foreign = Parse("-ERR unknown command 'FOO'\r\n");
  EXPECT_TRUE(foreign.is_error());
  EXPECT_EQ(foreign.error_word(), "ERR");
  EXPECT_EQ(foreign.error_code(), std::nullopt);
  ShardReply bare = Parse("-BUSY\r\n");
  EXPECT_EQ(bare.error_code(), ResultCode::kBusy);
  EXPECT_EQ(bare.error_message(), "");
}

TEST(ShardReplyTest, IntegerBulkAndNil) {
  ShardReply integer = Parse(":-42\r\n");
  EXPECT_EQ(integer.type, ShardReply::Type::kInteger);
  EXPECT_EQ(integer.integer, -42);
  ShardReply bulk = Parse(std::string("$5\r\na\0b\r\n\r\n", 11));
  EXPECT_EQ(bulk.type, ShardReply::Type::kBulk);
  EXPECT_EQ(bulk.text, std::string("a\0b\r\n", 5));  // binary-safe
  EXPECT_EQ(Parse("$-1\r\n").type, ShardReply::Type::kNil);
  EXPECT_EQ(Parse("*-1\r\n").type, ShardReply::Type::kNil);
  EXPECT_EQ(bulk.error_word(), "");
}

TEST(ShardReplyTest, NestedArrayIsCopiedDeeply) {
  ShardReply reply = Parse("*3\r\n:100\r\n*2\r\n$3\r\nEUR\r\n$-1\r\n-NO_ROW x\r\n");
  ASSERT_EQ(reply.type, ShardReply::Type::kArray);
  ASSERT_EQ(reply.elements.size(), 3u);
  EXPECT_EQ(reply.elements[0].integer, 100);
  ASSERT_EQ(reply.elements[1].elements.size(), 2u);
  EXPECT_EQ(reply.elements[1].elements[0].text, "EUR");
  EXPECT_EQ(reply.elements[1].elements[1].type, ShardReply::Type::kNil);
  EXPECT_EQ(reply.elements[2].error_code(), ResultCode::kNoRow);
  EXPECT_EQ(reply.ToString(), "[:100, [\"EUR\", (nil)], -NO_ROW x]");
  EXPECT_EQ(Parse("*0\r\n").elements.size(), 0u);
}

}  // namespace
}  // namespace wallet::shardlink
