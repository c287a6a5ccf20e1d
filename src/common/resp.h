// resp.h — RESP2 request parsing and reply writing, shared by the shard server and
// the router (clients speak RESP to both).
//
// RequestParser is incremental: feed it the connection's query buffer, it returns
// one command at a time as string_views into that buffer (no copy per command), or
// "need more bytes" while it keeps its place, or an error that names the problem.
// Both forms of request are accepted:
//
//   multibulk := '*' count CRLF { '$' length CRLF bytes CRLF }   (count times)
//   inline    := word { (' ' | '\t') word } ( CRLF | LF )       (telnet, redis-cli --pipe)
//
// Hard limits (Limits) cap the argument count, one argument's length and an inline
// line's length; nothing is allocated from a peer's claim before it is checked
// against them. A `*0` / `*-1` multibulk and an empty inline line are skipped.
//
// Example (one connection):
//   RequestParser parser(limits);
//   size_t pos = 0;
//   std::vector<std::string_view> args;
//   for (;;) {
//     auto status = parser.Next(buffer, &pos, &args);
//     if (status == RequestParser::Status::kCommand) { Execute(args); continue; }
//     if (status == RequestParser::Status::kNeedMore) break;   // read more
//     ReplyError(parser.error()); CloseAfterWrite(); break;    // kError
//   }
//   buffer.erase(0, pos);  // compaction keeps the parser's place: it is relative to pos
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result_code.h"

namespace wallet::resp {

struct Limits {
  size_t max_args = 8192;               // arguments in one command
  size_t max_arg_bytes = 512 * 1024;    // bytes in one bulk argument
  size_t max_inline_bytes = 64 * 1024;  // bytes in one inline command line
};

class RequestParser {
 public:
  enum class Status {
    kCommand,   // *args holds one command (at least one argument); *pos moved past it
    kNeedMore,  // no complete command at *pos yet; call again with more bytes
    kError,     // the stream is broken or over a limit; see error(); do not call again
  };

  explicit RequestParser(const Limits& limits) : limits_(limits) {}

  // Parses the next command starting at buffer[*pos]. The string_views written to
  // *args point into `buffer` and stay valid until the buffer is changed. Progress on
  // a partial command is remembered relative to *pos, so the caller may move the
  // unconsumed bytes (buffer.substr(*pos)) to the front of its buffer and pass
  // pos = 0 next time.
  Status Next(std::string_view buffer, size_t* pos, std::vector<std::string_view>* args);

  // After kError: a message naming the problem, without CR or LF, e.g.
  // "Protocol error: invalid bulk length" or "too many arguments (9000 > 8192)".
  const std::string& error() const { return error_; }
  // After kError: kLimitExceeded for a request over a Limits bound, kProtocolError for
  // a stream that is not RESP.
  ResultCode error_code() const { return error_code_; }

  // True while a command has been partly parsed (bytes of it consumed from view).
  bool in_progress() const { return state_ != State::kIdle; }

 private:
  enum class State { kIdle, kMultibulk };

  Status Fail(ResultCode code, std::string message);
  Status ParseInline(std::string_view buffer, size_t* pos, std::vector<std::string_view>* args);
  Status ParseMultibulk(std::string_view buffer, size_t* pos, std::vector<std::string_view>* args);

  Limits limits_;
  State state_ = State::kIdle;
  // Multibulk progress, as offsets relative to the command's start (*pos).
  size_t args_expected_ = 0;
  size_t scan_offset_ = 0;  // where the next header ('$' line) starts
  struct Span {
    size_t offset;
    size_t length;
  };
  std::vector<Span> spans_;
  std::string error_;
  ResultCode error_code_ = ResultCode::kOk;
};

// Appends RESP2 replies to a string (a connection's output buffer). An array's
// elements are whatever replies follow its header, errors included (RESP2 allows
// error elements: TRANSFER.BATCH answers one +OK or -CODE per transfer).
class ReplyWriter {
 public:
  explicit ReplyWriter(std::string* out) : out_(out) {}

  void SimpleString(std::string_view text);  // +text   (CR/LF replaced by spaces)
  void Ok() { out_->append("+OK\r\n"); }
  // -CODE message   e.g. Error("INSUFFICIENT_FUNDS", "account 7 has 100 available")
  void Error(std::string_view code, std::string_view message);
  void Integer(int64_t value);               // :value
  void Bulk(std::string_view bytes);         // $len bytes
  void Null();                               // $-1
  void ArrayHeader(size_t count);            // *count
  void NullArray();                          // *-1

  std::string* out() { return out_; }

 private:
  std::string* out_;
};

}  // namespace wallet::resp
