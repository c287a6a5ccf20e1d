// resp_parser.cc — the incremental RESP2 request parser (see resp.h for the grammar).
//
// Modelled on the behaviour of Redis's processMultibulkBuffer / processInlineBuffer
// (src/networking.c): a multibulk command keeps its place across calls, an empty
// multibulk (`*0`, `*-1`) and a blank inline line are skipped, and every count and
// length a peer sends is checked against Limits before anything depends on it.
//
// Positions. While a multibulk command is partly parsed, *pos stays at the command's
// first byte (its arguments must stay in the buffer until it is complete) and all
// remembered progress — scan_offset_ and spans_ — is relative to *pos. A caller may
// therefore drop the bytes before *pos between calls without the parser noticing.
//
// Cost. Each byte is examined a bounded number of times: a bulk header already
// validated is never read again; a header not yet complete is re-read at most
// kMaxHeaderBytes at a time; an inline line's newline search resumes where the last
// call stopped (scan_offset_, see ParseInline).
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/money.h"
#include "common/resp.h"

namespace wallet::resp {

namespace {

// The longest header line that can be valid is "*-9223372036854775808\r\n" (23 bytes).
// A header with no LF within this many bytes is garbage: fail instead of waiting.
constexpr size_t kMaxHeaderBytes = 32;

// Reserve no more than this many argument slots up front, whatever count the peer
// claims; a real command with more arguments grows the vector as its bulks arrive.
constexpr size_t kMaxReservedArgs = 1024;

enum class HeaderResult { kOk, kNeedMore, kTooLong, kBadNumber };

// Reads a header line "<prefix><decimal>\r\n" at the start of `text` (the prefix byte
// has already been checked by the caller). On kOk sets *value and *line_bytes (the
// length including CRLF). The number must be a strict decimal (ParseInt64: optional
// '-', no '+', no spaces, no leading zeros) and the LF must be preceded by CR.
HeaderResult ReadHeader(std::string_view text, int64_t* value, size_t* line_bytes) {
  const size_t window = std::min(text.size(), kMaxHeaderBytes);
  const void* found = std::memchr(text.data(), '\n', window);
  if (found == nullptr) {
    return text.size() >= kMaxHeaderBytes ? HeaderResult::kTooLong : HeaderResult::kNeedMore;
  }
  const size_t lf = static_cast<size_t>(static_cast<const char*>(found) - text.data());
  // Need at least prefix, CR, LF: "$\r\n" then fails the number check below.
  if (lf < 2 || text[lf - 1] != '\r') return HeaderResult::kBadNumber;
  if (!ParseInt64(text.substr(1, lf - 2), value)) return HeaderResult::kBadNumber;
  *line_bytes = lf + 1;
  return HeaderResult::kOk;
}

// A byte as it may appear in an error message: itself when visible ASCII or space,
// otherwise "\xHH" (so a CR or LF from the peer never reaches the reply line).
std::string PrintableByte(char c) {
  if (c >= 0x20 && c <= 0x7e) return std::string(1, c);
  return absl::StrFormat("\\x%02x", static_cast<unsigned char>(c));
}

bool IsInlineSeparator(char c) { return c == ' ' || c == '\t'; }

std::string InlineTooLong(size_t max_inline_bytes) {
  return absl::StrCat("inline request too long (> ", max_inline_bytes, " bytes)");
}

}  // namespace

RequestParser::Status RequestParser::Fail(ResultCode code, std::string message) {
  error_code_ = code;
  error_ = std::move(message);
  state_ = State::kIdle;
  args_expected_ = 0;
  scan_offset_ = 0;
  spans_.clear();
  return Status::kError;
}

// Next() dispatches on the first byte of each command: '*' starts a multibulk, any
// other byte an inline line. The two helpers report "an empty command was consumed"
// as kCommand with an empty *args; Next() then keeps going, so its callers only ever
// see kCommand with at least one argument.
RequestParser::Status RequestParser::Next(std::string_view buffer, size_t* pos,
                                          std::vector<std::string_view>* args) {
  // The contract says "do not call again" after kError; stay failed if someone does.
  if (!error_.empty()) return Status::kError;
  if (*pos > buffer.size()) {
    return Fail(ResultCode::kProtocolError, "parser position past the end of the buffer");
  }
  for (;;) {
    if (state_ == State::kIdle && *pos == buffer.size()) return Status::kNeedMore;
    const bool multibulk = state_ == State::kMultibulk || buffer[*pos] == '*';
    const Status status =
        multibulk ? ParseMultibulk(buffer, pos, args) : ParseInline(buffer, pos, args);
    if (status != Status::kCommand || !args->empty()) return status;
    // An empty command was skipped; *pos has moved past it.
  }
}

// Parses an inline command: one line ended by LF (an optional CR before it is
// dropped), split into words on spaces and tabs. Unlike Redis, quotes and escapes
// have no meaning here: `SET "a b"` is the three words `SET`, `"a` and `b"`.
// Arguments with spaces or binary bytes need the multibulk form.
//
// While the line's LF has not arrived, scan_offset_ remembers how many bytes after
// *pos are known to hold no LF, so feeding a long line in small pieces stays linear.
// Nothing is consumed meanwhile, so in_progress() stays false.
RequestParser::Status RequestParser::ParseInline(std::string_view buffer, size_t* pos,
                                                 std::vector<std::string_view>* args) {
  const std::string_view rest = buffer.substr(*pos);
  // A line of max_inline_bytes plus CR LF is the longest acceptable.
  const size_t window_bytes = std::min(rest.size(), limits_.max_inline_bytes + 2);
  if (scan_offset_ > window_bytes) scan_offset_ = 0;  // not our bytes: start over
  const void* found = std::memchr(rest.data() + scan_offset_, '\n', window_bytes - scan_offset_);
  if (found == nullptr) {
    if (window_bytes == limits_.max_inline_bytes + 2) {
      return Fail(ResultCode::kLimitExceeded, InlineTooLong(limits_.max_inline_bytes));
    }
    scan_offset_ = window_bytes;
    return Status::kNeedMore;
  }
  const size_t lf = static_cast<size_t>(static_cast<const char*>(found) - rest.data());
  scan_offset_ = 0;
  std::string_view line = rest.substr(0, lf);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > limits_.max_inline_bytes) {
    return Fail(ResultCode::kLimitExceeded, InlineTooLong(limits_.max_inline_bytes));
  }

  args->clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && IsInlineSeparator(line[i])) ++i;
    if (i == line.size()) break;
    const size_t start = i;
    while (i < line.size() && !IsInlineSeparator(line[i])) ++i;
    if (args->size() == limits_.max_args) {
      return Fail(ResultCode::kLimitExceeded,
                  absl::StrCat("too many arguments (> ", limits_.max_args, ")"));
    }
    if (i - start > limits_.max_arg_bytes) {
      return Fail(ResultCode::kLimitExceeded,
          absl::StrCat("argument too long (", i - start, " > ", limits_.max_arg_bytes, ")"));
    }
    args->push_back(line.substr(start, i - start));
  }
  *pos += lf + 1;
  return Status::kCommand;  // with no arguments for a blank line: Next() skips it
}

// Parses a multibulk command, resuming where the previous call stopped:
//   state_ == kIdle      read "*N\r\n"; N <= 0 is an empty command, consumed at once;
//   state_ == kMultibulk spans_ holds the arguments validated so far and scan_offset_
//                        the offset (from *pos) of the next "$len\r\n" header.
// Only when all N arguments are in the buffer are *args filled and *pos moved.
RequestParser::Status RequestParser::ParseMultibulk(std::string_view buffer, size_t* pos,
                                                    std::vector<std::string_view>* args) {
  const std::string_view command = buffer.substr(*pos);

  if (state_ == State::kIdle) {
    int64_t count = 0;
    size_t header_bytes = 0;
    switch (ReadHeader(command, &count, &header_bytes)) {
      case HeaderResult::kNeedMore:
        return Status::kNeedMore;
      case HeaderResult::kTooLong:
        return Fail(ResultCode::kProtocolError, "Protocol error: too big mbulk count string");
      case HeaderResult::kBadNumber:
        return Fail(ResultCode::kProtocolError, "Protocol error: invalid multibulk length");
      case HeaderResult::kOk:
        break;
    }
    if (count <= 0) {  // "*0" or "*-1": nothing to run, skip it as Redis does
      *pos += header_bytes;
      args->clear();
      return Status::kCommand;
    }
    if (static_cast<uint64_t>(count) > limits_.max_args) {
      return Fail(ResultCode::kLimitExceeded,
                  absl::StrCat("too many arguments (", count, " > ", limits_.max_args, ")"));
    }
    state_ = State::kMultibulk;
    args_expected_ = static_cast<size_t>(count);
    scan_offset_ = header_bytes;
    spans_.clear();
    spans_.reserve(std::min(args_expected_, kMaxReservedArgs));
  }

  // The caller must keep the command's bytes; with fewer, just wait for more.
  if (scan_offset_ > command.size()) return Status::kNeedMore;

  while (spans_.size() < args_expected_) {
    const std::string_view rest = command.substr(scan_offset_);
    if (rest.empty()) return Status::kNeedMore;
    if (rest[0] != '$') {
      return Fail(ResultCode::kProtocolError,
                  absl::StrCat("Protocol error: expected '$', got '", PrintableByte(rest[0]), "'"));
    }
    int64_t length = 0;
    size_t header_bytes = 0;
    switch (ReadHeader(rest, &length, &header_bytes)) {
      case HeaderResult::kNeedMore:
        return Status::kNeedMore;  // the header is re-read next time: at most 32 bytes
      case HeaderResult::kTooLong:
        return Fail(ResultCode::kProtocolError, "Protocol error: too big bulk count string");
      case HeaderResult::kBadNumber:
        return Fail(ResultCode::kProtocolError, "Protocol error: invalid bulk length");
      case HeaderResult::kOk:
        break;
    }
    if (length < 0) return Fail(ResultCode::kProtocolError, "Protocol error: invalid bulk length");
    const size_t data_bytes = static_cast<size_t>(length);
    if (data_bytes > limits_.max_arg_bytes) {
      return Fail(ResultCode::kLimitExceeded,
          absl::StrCat("argument too long (", data_bytes, " > ", limits_.max_arg_bytes, ")"));
    }
    // Wait for the whole argument and its CRLF (data_bytes is capped, so no overflow).
    if (rest.size() < header_bytes + data_bytes + 2) return Status::kNeedMore;
    if (rest[header_bytes + data_bytes] != '\r' || rest[header_bytes + data_bytes + 1] != '\n') {
      return Fail(ResultCode::kProtocolError, "Protocol error: expected CRLF after bulk data");
    }
    spans_.push_back(Span{scan_offset_ + header_bytes, data_bytes});
    scan_offset_ += header_bytes + data_bytes + 2;
  }

  // Complete: hand out views into the buffer and move past the command.
  args->clear();
  args->reserve(spans_.size());
  for (const Span& span : spans_) args->push_back(command.substr(span.offset, span.length));
  *pos += scan_offset_;
  state_ = State::kIdle;
  args_expected_ = 0;
  scan_offset_ = 0;
  spans_.clear();
  return Status::kCommand;
}

}  // namespace wallet::resp
