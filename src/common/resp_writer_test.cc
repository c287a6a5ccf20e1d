// Tests for ReplyWriter (resp.h): the exact bytes of every reply kind.
#include <cstdint>
#include <limits>
#include <string>

#include "common/resp.h"
#include "gtest/gtest.h"

namespace wallet::resp {
namespace {

// Runs `write` on a fresh writer and returns what it appended.
template <typename WriteFn>
std::string Written(WriteFn write) {
  std::string out;
  ReplyWriter writer(&out);
  write(writer);
  return out;
}

TEST(RespWriterTest, SimpleString) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.SimpleString("PONG"); }), "+PONG\r\n");
}

TEST(RespWriterTest, SimpleStringEmpty) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.SimpleString(""); }), "+\r\n");
}

TEST(RespWriterTest, SimpleStringReplacesCrAndLfWithSpaces) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.SimpleString("a\r\nb\rc\nd"); }), "+a  b c d\r\n");
}

TEST(RespWriterTest, Ok) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Ok(); }), "+OK\r\n");
}

TEST(RespWriterTest, ErrorWithMessage) {
  EXPECT_EQ(
      Written([](ReplyWriter& w) { w.Error("INSUFFICIENT_FUNDS", "account 7 has 100 available"); }),
      "-INSUFFICIENT_FUNDS account 7 has 100 available\r\n");
}

TEST(RespWriterTest, ErrorWithoutMessage) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Error("BUSY", ""); }), "-BUSY\r\n");
}

TEST(RespWriterTest, ErrorReplacesCrAndLfWithSpaces) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Error("ERR\r\n", "bad\r\n+OK"); }),
            "-ERR   bad  +OK\r\n");
}

TEST(RespWriterTest, IntegerZero) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Integer(0); }), ":0\r\n");
}

TEST(RespWriterTest, IntegerPositive) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Integer(1250); }), ":1250\r\n");
}

TEST(RespWriterTest, IntegerNegative) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Integer(-42); }), ":-42\r\n");
}

TEST(RespWriterTest, IntegerMax) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Integer(std::numeric_limits<int64_t>::max()); }),
            ":9223372036854775807\r\n");
}

TEST(RespWriterTest, IntegerMin) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Integer(std::numeric_limits<int64_t>::min()); }),
            ":-9223372036854775808\r\n");
}

TEST(RespWriterTest, Bulk) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Bulk("hello"); }), "$5\r\nhello\r\n");
}

TEST(RespWriterTest, BulkEmpty) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Bulk(""); }), "$0\r\n\r\n");
}

TEST(RespWriterTest, BulkIsBinarySafe) {
  // Unlike simple strings, bulk bytes are sent as they are.
  const std::string data("a\r\nb\0c", 6);
  EXPECT_EQ(Written([&](ReplyWriter& w) { w.Bulk(data); }), std::string("$6\r\na\r\nb\0c\r\n", 12));
}

TEST(RespWriterTest, Null) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.Null(); }), "$-1\r\n");
}

TEST(RespWriterTest, ArrayHeaderEmpty) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.ArrayHeader(0); }), "*0\r\n");
}

TEST(RespWriterTest, ArrayWithElements) {
  EXPECT_EQ(Written([](ReplyWriter& w) {
              w.ArrayHeader(3);
              w.Bulk("a");
              w.Integer(7);
              w.Null();
            }),
            "*3\r\n$1\r\na\r\n:7\r\n$-1\r\n");
}

TEST(RespWriterTest, NullArray) {
  EXPECT_EQ(Written([](ReplyWriter& w) { w.NullArray(); }), "*-1\r\n");
}

// RESP2 arrays may hold error elements (TRANSFER.BATCH: one +OK or -CODE per item);
// an error message cannot break the array's framing.
TEST(RespWriterTest, ArrayOfStatusAndErrorElements) {
  EXPECT_EQ(Written([](ReplyWriter& w) {
              w.ArrayHeader(3);
              w.Ok();
              w.Error("MALFORMED", "amount must be positive, got '1\r\n+OK'");
              w.Error("MOVED", "17 shard-1 partition 17 is not owned by this shard");
            }),
            "*3\r\n+OK\r\n-MALFORMED amount must be positive, got '1  +OK'\r\n"
            "-MOVED 17 shard-1 partition 17 is not owned by this shard\r\n");
}

TEST(RespWriterTest, AppendsToExistingOutput) {
  std::string out = "+EARLIER\r\n";
  ReplyWriter writer(&out);
  writer.Ok();
  writer.Integer(-1);
  EXPECT_EQ(out, "+EARLIER\r\n+OK\r\n:-1\r\n");
  EXPECT_EQ(writer.out(), &out);
}

}  // namespace
}  // namespace wallet::resp
