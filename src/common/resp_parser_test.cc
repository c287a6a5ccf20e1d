// Tests for RequestParser (resp.h): both request forms, binary safety, skipped empty
// commands, input split at every byte, long pipelines, every limit at and one past
// its value, and one test per malformed form.
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/resp.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Counts the bytes allocated through global operator new, so a test can show that a
// peer's claimed argument count is not turned into an allocation.
namespace {
std::atomic<size_t> g_allocated_bytes{0};
}  // namespace

// (Replacing operator new with malloc and delete with free is the standard's own
// recipe; GCC's -Wmismatched-new-delete cannot tell and is silenced around it.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t size) {
  g_allocated_bytes.fetch_add(size, std::memory_order_relaxed);
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) std::abort();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace wallet::resp {
namespace {

using Status = RequestParser::Status;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Command = std::vector<std::string>;

std::vector<std::string> Copy(const std::vector<std::string_view>& args) {
  return std::vector<std::string>(args.begin(), args.end());
}

// Runs the parser over a complete buffer, collecting commands until it needs more
// bytes or fails. Returns the final status; *end_pos is where the parser stopped.
Status ParseAll(RequestParser* parser, std::string_view buffer, std::vector<Command>* commands,
                size_t* end_pos = nullptr) {
  size_t pos = 0;
  std::vector<std::string_view> args;
  Status status;
  while ((status = parser->Next(buffer, &pos, &args)) == Status::kCommand) {
    commands->push_back(Copy(args));
  }
  if (end_pos != nullptr) *end_pos = pos;
  return status;
}

std::vector<Command> ParseComplete(std::string_view buffer, const Limits& limits = Limits()) {
  RequestParser parser(limits);
  std::vector<Command> commands;
  size_t pos = 0;
  EXPECT_EQ(ParseAll(&parser, buffer, &commands, &pos), Status::kNeedMore) << parser.error();
  EXPECT_EQ(pos, buffer.size());
  EXPECT_FALSE(parser.in_progress());
  return commands;
}

// Feeds `input` to a fresh parser and expects kError with a message containing
// `expected_substring` and no CR or LF.
void ExpectError(std::string_view input, std::string_view expected_substring,
                 const Limits& limits = Limits()) {
  RequestParser parser(limits);
  std::vector<Command> commands;
  ASSERT_EQ(ParseAll(&parser, input, &commands), Status::kError)
      << "input: " << testing::PrintToString(std::string(input));
  EXPECT_THAT(parser.error(), HasSubstr(std::string(expected_substring)));
  EXPECT_EQ(parser.error().find_first_of("\r\n"), std::string::npos) << parser.error();
  // A broken stream is PROTOCOL; a request over a limit is LIMIT.
  const bool broken_stream = parser.error().rfind("Protocol error", 0) == 0 ||
                             parser.error().find("position past the end") != std::string::npos;
  EXPECT_EQ(parser.error_code(),
            broken_stream ? ResultCode::kProtocolError : ResultCode::kLimitExceeded)
      << parser.error();
}

// A caller in the style of resp.h's example: appends `chunk` to its buffer, runs the
// parser, then erases the consumed bytes (compaction) so the next call has pos = 0.
class CompactingCaller {
 public:
  explicit CompactingCaller(const Limits& limits = Limits()) : parser_(limits) {}

  Status Feed(std::string_view chunk) {
    buffer_.append(chunk);
    size_t pos = 0;
    std::vector<std::string_view> args;
    Status status;
    while ((status = parser_.Next(buffer_, &pos, &args)) == Status::kCommand) {
      commands_.push_back(Copy(args));
    }
    buffer_.erase(0, pos);
    return status;
  }

  const std::vector<Command>& commands() const { return commands_; }
  const RequestParser& parser() const { return parser_; }
  const std::string& buffer() const { return buffer_; }

 private:
  RequestParser parser_;
  std::string buffer_;
  std::vector<Command> commands_;
};

std::string Multibulk(const std::vector<std::string>& args) {
  std::string out = absl::StrCat("*", args.size(), "\r\n");
  for (const std::string& arg : args) absl::StrAppend(&out, "$", arg.size(), "\r\n", arg, "\r\n");
  return out;
}

// A pipeline mixing every accepted form, and the commands it must produce.
const std::string& MixedPipeline() {
  static const std::string* pipeline = new std::string(
      absl::StrCat(Multibulk({"SET", "key", "value"}),                   //
                   "PING\r\n",                                           // inline, CRLF
                   "*0\r\n",                                             // skipped
                   Multibulk({"BIN", std::string("a\r\nb\0c", 7), ""}),  // binary-safe, empty arg
                   "GET  key\tother\n",  // inline, LF, spaces and tab
                   "\r\n",               // blank line, skipped
                   "*-1\r\n",            // skipped
                   Multibulk({"TRANSFER", "1", "2", "1250", "USD", "tx-1"})));
  return *pipeline;
}

std::vector<Command> MixedPipelineCommands() {
  return {{"SET", "key", "value"},
          {"PING"},
          {"BIN", std::string("a\r\nb\0c", 7), ""},
          {"GET", "key", "other"},
          {"TRANSFER", "1", "2", "1250", "USD", "tx-1"}};
}

// --- Single commands ---------------------------------------------------------------

TEST(RespParserTest, MultibulkCommand) {
  EXPECT_THAT(ParseComplete("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"),
              ElementsAre(Command{"SET", "k", "value"}));
}

TEST(RespParserTest, InlineCommandWithCrlf) {
  EXPECT_THAT(ParseComplete("SET k value\r\n"), ElementsAre(Command{"SET", "k", "value"}));
}

TEST(RespParserTest, InlineCommandWithLf) {
  EXPECT_THAT(ParseComplete("SET k value\n"), ElementsAre(Command{"SET", "k", "value"}));
}

TEST(RespParserTest, InlineSplitsOnRunsOfSpacesAndTabs) {
  EXPECT_THAT(ParseComplete("  SET\t\tk  \t value \r\n"),
              ElementsAre(Command{"SET", "k", "value"}));
}

TEST(RespParserTest, InlineHasNoQuoteHandling) {
  EXPECT_THAT(ParseComplete("SET \"a b\"\r\n"), ElementsAre(Command{"SET", "\"a", "b\""}));
}

TEST(RespParserTest, InlineKeepsCarriageReturnInsideTheLine) {
  // Only a CR right before the LF belongs to the terminator.
  EXPECT_THAT(ParseComplete("A\rB\r\n"), ElementsAre(Command{"A\rB"}));
}

TEST(RespParserTest, BulkIsBinarySafe) {
  const std::string data("x\r\ny\0z\r\n", 8);
  EXPECT_THAT(ParseComplete(Multibulk({"SET", data})), ElementsAre(Command{"SET", data}));
}

TEST(RespParserTest, EmptyBulkArgument) {
  EXPECT_THAT(ParseComplete("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"), ElementsAre(Command{"ECHO", ""}));
}

TEST(RespParserTest, ArgsPointIntoTheBuffer) {
  const std::string buffer = "*1\r\n$4\r\nPING\r\n";
  RequestParser parser{Limits()};
  size_t pos = 0;
  std::vector<std::string_view> args;
  ASSERT_EQ(parser.Next(buffer, &pos, &args), Status::kCommand);
  ASSERT_EQ(args.size(), 1u);
  EXPECT_EQ(args[0].data(), buffer.data() + 8);
  EXPECT_EQ(pos, buffer.size());
}

TEST(RespParserTest, ArgsAreClearedAndRefilled) {
  const std::string buffer = "PING\r\n";
  RequestParser parser{Limits()};
  size_t pos = 0;
  std::vector<std::string_view> args = {"stale", "values", "here"};
  ASSERT_EQ(parser.Next(buffer, &pos, &args), Status::kCommand);
  EXPECT_THAT(args, ElementsAre("PING"));
}

TEST(RespParserTest, PositionStartsWhereTheCallerSays) {
  const std::string buffer = "garbage-already-consumed*1\r\n$4\r\nPING\r\n";
  RequestParser parser{Limits()};
  size_t pos = 24;
  std::vector<std::string_view> args;
  ASSERT_EQ(parser.Next(buffer, &pos, &args), Status::kCommand);
  EXPECT_THAT(args, ElementsAre("PING"));
  EXPECT_EQ(pos, buffer.size());
}

TEST(RespParserTest, EmptyBufferNeedsMore) {
  RequestParser parser{Limits()};
  size_t pos = 0;
  std::vector<std::string_view> args;
  EXPECT_EQ(parser.Next("", &pos, &args), Status::kNeedMore);
  EXPECT_EQ(pos, 0u);
  EXPECT_FALSE(parser.in_progress());
}

// --- Empty commands ----------------------------------------------------------------

TEST(RespParserTest, EmptyMultibulksAreSkipped) {
  EXPECT_THAT(ParseComplete("*0\r\n*-1\r\n*-7\r\n*1\r\n$4\r\nPING\r\n*0\r\n"),
              ElementsAre(Command{"PING"}));
}

TEST(RespParserTest, BlankInlineLinesAreSkipped) {
  EXPECT_THAT(ParseComplete("\r\n\n   \r\n\t \n\r\nPING\r\n\n"), ElementsAre(Command{"PING"}));
}

TEST(RespParserTest, OnlyEmptyCommandsConsumeEverything) {
  EXPECT_THAT(ParseComplete("*0\r\n\r\n*-1\r\n  \n"), ElementsAre());
}

// --- Incremental input -------------------------------------------------------------

TEST(RespParserTest, PartialMultibulkKeepsPositionAtCommandStart) {
  const std::string full = "*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
  const std::string partial = full.substr(0, full.size() - 4);
  RequestParser parser{Limits()};
  size_t pos = 0;
  std::vector<std::string_view> args;
  ASSERT_EQ(parser.Next(partial, &pos, &args), Status::kNeedMore);
  EXPECT_EQ(pos, 0u);
  EXPECT_TRUE(parser.in_progress());
  ASSERT_EQ(parser.Next(full, &pos, &args), Status::kCommand);
  EXPECT_THAT(args, ElementsAre("ECHO", "hello"));
  EXPECT_EQ(pos, full.size());
  EXPECT_FALSE(parser.in_progress());
}

TEST(RespParserTest, PipelineFedOneByteAtATimeWithCompaction) {
  CompactingCaller caller;
  for (char c : MixedPipeline()) {
    ASSERT_EQ(caller.Feed(std::string_view(&c, 1)), Status::kNeedMore) << caller.parser().error();
  }
  EXPECT_EQ(caller.commands(), MixedPipelineCommands());
  EXPECT_TRUE(caller.buffer().empty());
  EXPECT_FALSE(caller.parser().in_progress());
}

TEST(RespParserTest, PipelineFedOneByteAtATimeWithoutCompaction) {
  // The caller keeps every byte and passes its position back unchanged.
  const std::string& pipeline = MixedPipeline();
  RequestParser parser{Limits()};
  std::vector<Command> commands;
  std::vector<std::string_view> args;
  size_t pos = 0;
  for (size_t end = 1; end <= pipeline.size(); ++end) {
    const std::string_view visible(pipeline.data(), end);
    Status status;
    while ((status = parser.Next(visible, &pos, &args)) == Status::kCommand) {
      commands.push_back(Copy(args));
    }
    ASSERT_EQ(status, Status::kNeedMore) << parser.error();
  }
  EXPECT_EQ(commands, MixedPipelineCommands());
  EXPECT_EQ(pos, pipeline.size());
}

TEST(RespParserTest, PipelineSplitIntoTwoChunksAtEveryPosition) {
  const std::string& pipeline = MixedPipeline();
  for (size_t split = 0; split <= pipeline.size(); ++split) {
    CompactingCaller caller;
    ASSERT_EQ(caller.Feed(std::string_view(pipeline).substr(0, split)), Status::kNeedMore)
        << "split " << split << ": " << caller.parser().error();
    ASSERT_EQ(caller.Feed(std::string_view(pipeline).substr(split)), Status::kNeedMore)
        << "split " << split << ": " << caller.parser().error();
    EXPECT_EQ(caller.commands(), MixedPipelineCommands()) << "split " << split;
    EXPECT_TRUE(caller.buffer().empty()) << "split " << split;
  }
}

TEST(RespParserTest, LargeMultibulkFedOneByteAtATime) {
  // 8192 arguments fed byte by byte: finishes quickly only if validated bulk headers
  // are not rescanned on every call.
  std::vector<std::string> args(Limits().max_args, "v");
  args[0] = "MSET";
  const std::string input = Multibulk(args);
  CompactingCaller caller;
  for (char c : input) ASSERT_EQ(caller.Feed(std::string_view(&c, 1)), Status::kNeedMore);
  ASSERT_EQ(caller.commands().size(), 1u);
  EXPECT_EQ(caller.commands()[0], args);
}

TEST(RespParserTest, LongInlineLineFedOneByteAtATime) {
  const std::string word(Limits().max_inline_bytes - 5, 'x');
  const std::string input = "ECHO " + word + "\r\n";
  CompactingCaller caller;
  for (char c : input) ASSERT_EQ(caller.Feed(std::string_view(&c, 1)), Status::kNeedMore);
  EXPECT_THAT(caller.commands(), ElementsAre(Command{"ECHO", word}));
}

TEST(RespParserTest, LongPipelineInOneBuffer) {
  constexpr int kCommands = 100000;
  std::string input;
  for (int i = 0; i < kCommands; ++i) {
    if (i % 2 == 0) {
      absl::StrAppend(&input, Multibulk({"INCR", absl::StrCat("k", i)}));
    } else {
      absl::StrAppend(&input, "INCR k", i, "\r\n");
    }
  }
  RequestParser parser{Limits()};
  size_t pos = 0;
  std::vector<std::string_view> args;
  int count = 0;
  Status status;
  while ((status = parser.Next(input, &pos, &args)) == Status::kCommand) {
    ASSERT_EQ(args.size(), 2u);
    ASSERT_EQ(args[1], absl::StrCat("k", count));
    ++count;
  }
  EXPECT_EQ(status, Status::kNeedMore);
  EXPECT_EQ(count, kCommands);
  EXPECT_EQ(pos, input.size());
}

// --- Limits, each exactly at and one past its value -------------------------------

Limits SmallLimits() {
  Limits limits;
  limits.max_args = 4;
  limits.max_arg_bytes = 10;
  limits.max_inline_bytes = 20;
  return limits;
}

TEST(RespParserLimitsTest, MaxArgsMultibulkAtLimit) {
  EXPECT_THAT(ParseComplete(Multibulk({"a", "b", "c", "d"}), SmallLimits()),
              ElementsAre(Command{"a", "b", "c", "d"}));
}

TEST(RespParserLimitsTest, MaxArgsMultibulkOverLimit) {
  ExpectError(Multibulk({"a", "b", "c", "d", "e"}), "too many arguments (5 > 4)", SmallLimits());
}

TEST(RespParserLimitsTest, MaxArgsMultibulkOverLimitFailsOnTheHeaderAlone) {
  ExpectError("*5\r\n", "too many arguments (5 > 4)", SmallLimits());
}

TEST(RespParserLimitsTest, MaxArgsInlineAtLimit) {
  EXPECT_THAT(ParseComplete("a b c d\r\n", SmallLimits()),
              ElementsAre(Command{"a", "b", "c", "d"}));
}

TEST(RespParserLimitsTest, MaxArgsInlineOverLimit) {
  ExpectError("a b c d e\r\n", "too many arguments", SmallLimits());
}

TEST(RespParserLimitsTest, MaxArgBytesAtLimit) {
  EXPECT_THAT(ParseComplete(Multibulk({"SET", std::string(10, 'x')}), SmallLimits()),
              ElementsAre(Command{"SET", std::string(10, 'x')}));
}

TEST(RespParserLimitsTest, MaxArgBytesOverLimit) {
  ExpectError(Multibulk({"SET", std::string(11, 'x')}), "argument too long (11 > 10)",
              SmallLimits());
}

TEST(RespParserLimitsTest, MaxArgBytesOverLimitFailsOnTheHeaderAlone) {
  ExpectError("*2\r\n$3\r\nSET\r\n$11\r\n", "argument too long (11 > 10)", SmallLimits());
}

TEST(RespParserLimitsTest, MaxArgBytesInlineOverLimit) {
  ExpectError("SET xxxxxxxxxxx\r\n", "argument too long (11 > 10)", SmallLimits());
}

Limits InlineLimits() {
  Limits limits;
  limits.max_inline_bytes = 20;
  return limits;
}

const std::string kLineAtLimit = "ECHO " + std::string(15, 'x');  // 20 bytes
const std::string kLineOverLimit = kLineAtLimit + "y";            // 21 bytes

TEST(RespParserLimitsTest, MaxInlineBytesAtLimitWithCrlf) {
  ASSERT_EQ(kLineAtLimit.size(), 20u);
  EXPECT_THAT(ParseComplete(kLineAtLimit + "\r\n", InlineLimits()),
              ElementsAre(Command{"ECHO", std::string(15, 'x')}));
}

TEST(RespParserLimitsTest, MaxInlineBytesAtLimitWithLf) {
  EXPECT_THAT(ParseComplete(kLineAtLimit + "\n", InlineLimits()),
              ElementsAre(Command{"ECHO", std::string(15, 'x')}));
}

TEST(RespParserLimitsTest, MaxInlineBytesAtLimitWaitsForTheLf) {
  // 20 bytes and a CR: the LF may still come, so this is not an error yet.
  CompactingCaller caller(InlineLimits());
  ASSERT_EQ(caller.Feed(kLineAtLimit + "\r"), Status::kNeedMore) << caller.parser().error();
  ASSERT_EQ(caller.Feed("\n"), Status::kNeedMore) << caller.parser().error();
  EXPECT_THAT(caller.commands(), ElementsAre(Command{"ECHO", std::string(15, 'x')}));
}

TEST(RespParserLimitsTest, MaxInlineBytesOverLimitWithCrlf) {
  ExpectError(kLineOverLimit + "\r\n", "inline request too long (> 20 bytes)", InlineLimits());
}

TEST(RespParserLimitsTest, MaxInlineBytesOverLimitWithLf) {
  ExpectError(kLineOverLimit + "\n", "inline request too long (> 20 bytes)", InlineLimits());
}

TEST(RespParserLimitsTest, MaxInlineBytesNoNewlineInTime) {
  // 22 bytes and no LF: whatever comes next, the line is over 20 bytes.
  ExpectError(kLineOverLimit + "z", "inline request too long (> 20 bytes)", InlineLimits());
}

TEST(RespParserLimitsTest, MaxInlineBytesNoNewlineFedByteByByte) {
  CompactingCaller caller(InlineLimits());
  Status status = Status::kNeedMore;
  size_t fed = 0;
  for (char c : std::string(100, 'x')) {
    ++fed;
    status = caller.Feed(std::string_view(&c, 1));
    if (status != Status::kNeedMore) break;
  }
  EXPECT_EQ(status, Status::kError);
  EXPECT_EQ(fed, 22u);
  EXPECT_THAT(caller.parser().error(), HasSubstr("inline request too long"));
}

TEST(RespParserLimitsTest, AllocationCounterSeesAllocations) {
  // Guards the two tests below: they mean something only if the counter works.
  const size_t before = g_allocated_bytes.load();
  auto block = std::make_unique<std::vector<char>>(100000);
  EXPECT_GE(g_allocated_bytes.load() - before, 100000u);
}

TEST(RespParserLimitsTest, HugeClaimedCountOverLimitFailsWithoutAllocating) {
  Limits limits;
  limits.max_args = 16;
  RequestParser parser(limits);
  size_t pos = 0;
  std::vector<std::string_view> args;
  const size_t before = g_allocated_bytes.load();
  ASSERT_EQ(parser.Next("*2147483647\r\n", &pos, &args), Status::kError);
  const size_t allocated = g_allocated_bytes.load() - before;
  EXPECT_EQ(parser.error(), "too many arguments (2147483647 > 16)");
  EXPECT_LT(allocated, 1024u);  // the error message, nothing sized by the claim
}

TEST(RespParserLimitsTest, HugeClaimedCountUnderLimitReservesLittle) {
  // Even when the limit allows the count, nothing is reserved beyond a small cap
  // until the arguments actually arrive.
  Limits limits;
  limits.max_args = size_t{1} << 40;
  RequestParser parser(limits);
  size_t pos = 0;
  std::vector<std::string_view> args;
  const size_t before = g_allocated_bytes.load();
  ASSERT_EQ(parser.Next("*2147483647\r\n$1\r\na\r\n", &pos, &args), Status::kNeedMore);
  const size_t allocated = g_allocated_bytes.load() - before;
  EXPECT_TRUE(parser.in_progress());
  EXPECT_LT(allocated, 64u * 1024u);
}

// --- Malformed input, one test per error path -------------------------------------

TEST(RespParserErrorTest, ExpectedDollarGotOtherByte) {
  ExpectError("*1\r\n:5\r\n", "Protocol error: expected '$', got ':'");
}

TEST(RespParserErrorTest, ExpectedDollarGotControlByteIsPrintable) {
  ExpectError("*1\r\n\r\n", "Protocol error: expected '$', got '\\x0d'");
}

TEST(RespParserErrorTest, ExpectedDollarForSecondArgument) {
  ExpectError("*2\r\n$3\r\nGET\r\n*1\r\n", "Protocol error: expected '$', got '*'");
}

struct BadHeaderCase {
  const char* name;
  const char* input;
};

std::string BadHeaderCaseName(const ::testing::TestParamInfo<BadHeaderCase>& case_info) {
  return case_info.param.name;
}

class InvalidMultibulkLengthTest : public ::testing::TestWithParam<BadHeaderCase> {};

TEST_P(InvalidMultibulkLengthTest, Fails) {
  ExpectError(GetParam().input, "Protocol error: invalid multibulk length");
}

INSTANTIATE_TEST_SUITE_P(RespParserErrorTest, InvalidMultibulkLengthTest,
                         ::testing::Values(BadHeaderCase{"Letters", "*x\r\n"},          //
                                           BadHeaderCase{"TrailingLetter", "*1x\r\n"},  //
                                           BadHeaderCase{"Empty", "*\r\n"},             //
                                           BadHeaderCase{"PlusSign", "*+1\r\n"},        //
                                           BadHeaderCase{"LeadingSpace", "* 1\r\n"},    //
                                           BadHeaderCase{"TrailingSpace", "*1 \r\n"},   //
                                           BadHeaderCase{"LeadingZero", "*01\r\n"},     //
                                           BadHeaderCase{"MinusZero", "*-0\r\n"},       //
                                           BadHeaderCase{"MissingCr", "*1\n$4\r\nPING\r\n"},
                                           BadHeaderCase{"LoneLf", "*\n"},             //
                                           BadHeaderCase{"CrNotBeforeLf", "*1\rx\n"},  //
                                           BadHeaderCase{"Overflow", "*99999999999999999999\r\n"}),
                         BadHeaderCaseName);

class InvalidBulkLengthTest : public ::testing::TestWithParam<BadHeaderCase> {};

TEST_P(InvalidBulkLengthTest, Fails) {
  ExpectError(absl::StrCat("*1\r\n", GetParam().input), "Protocol error: invalid bulk length");
}

INSTANTIATE_TEST_SUITE_P(RespParserErrorTest, InvalidBulkLengthTest,
                         ::testing::Values(BadHeaderCase{"Negative", "$-1\r\n"},  //
                                           BadHeaderCase{"Letters", "$x\r\n"},    //
                                           BadHeaderCase{"TrailingLetter", "$4x\r\nPING\r\n"},
                                           BadHeaderCase{"Empty", "$\r\n"},                  //
                                           BadHeaderCase{"PlusSign", "$+4\r\nPING\r\n"},     //
                                           BadHeaderCase{"LeadingZero", "$04\r\nPING\r\n"},  //
                                           BadHeaderCase{"MissingCr", "$4\nPING\r\n"},       //
                                           BadHeaderCase{"Overflow", "$99999999999999999999\r\n"}),
                         BadHeaderCaseName);

TEST(RespParserErrorTest, BulkDataLongerThanClaimed) {
  ExpectError("*1\r\n$3\r\nPING\r\n", "Protocol error: expected CRLF after bulk data");
}

TEST(RespParserErrorTest, BulkDataFollowedByCrWithoutLf) {
  ExpectError("*1\r\n$4\r\nPING\rX", "Protocol error: expected CRLF after bulk data");
}

TEST(RespParserErrorTest, MultibulkCountLineTooLong) {
  ExpectError("*" + std::string(40, '1'), "Protocol error: too big mbulk count string");
}

TEST(RespParserErrorTest, BulkLengthLineTooLong) {
  ExpectError("*1\r\n$" + std::string(40, '1'), "Protocol error: too big bulk count string");
}

TEST(RespParserErrorTest, ShortHeaderWithoutCrlfWaits) {
  // Below the header cap a missing CRLF only means the rest has not arrived.
  for (const char* input : {"*12345678", "*1\r\n$1234567890", "*1\r\n$12\r"}) {
    RequestParser parser{Limits()};
    std::vector<Command> commands;
    EXPECT_EQ(ParseAll(&parser, input, &commands), Status::kNeedMore) << parser.error();
  }
}

TEST(RespParserErrorTest, ErrorAfterGoodCommandsKeepsThem) {
  RequestParser parser{Limits()};
  std::vector<Command> commands;
  size_t pos = 0;
  EXPECT_EQ(ParseAll(&parser, "PING\r\n*1\r\n$4\r\nPING\r\n*x\r\n", &commands, &pos),
            Status::kError);
  EXPECT_THAT(commands, ElementsAre(Command{"PING"}, Command{"PING"}));
  EXPECT_EQ(pos, 20u);
}

TEST(RespParserErrorTest, CallsAfterAnErrorKeepFailing) {
  RequestParser parser{Limits()};
  size_t pos = 0;
  std::vector<std::string_view> args;
  ASSERT_EQ(parser.Next("*x\r\n", &pos, &args), Status::kError);
  EXPECT_EQ(parser.Next("*1\r\n$4\r\nPING\r\n", &pos, &args), Status::kError);
  pos = 0;
  EXPECT_EQ(parser.Next("", &pos, &args), Status::kError);
}

}  // namespace
}  // namespace wallet::resp
