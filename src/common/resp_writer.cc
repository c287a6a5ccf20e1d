#include "absl/strings/numbers.h"
#include "common/resp.h"

namespace wallet::resp {

namespace {
// Appends text with CR and LF replaced by spaces: a simple string or error line
// must never break the framing.
void AppendLine(std::string* out, std::string_view text) {
  size_t start = out->size();
  out->append(text);
  for (size_t i = start; i < out->size(); ++i) {
    if ((*out)[i] == '\r' || (*out)[i] == '\n') (*out)[i] = ' ';
  }
}

void AppendNumberLine(std::string* out, char prefix, int64_t value) {
  char buffer[32];
  buffer[0] = prefix;
  char* end = absl::numbers_internal::FastIntToBuffer(value, buffer + 1);
  end[0] = '\r';
  end[1] = '\n';
  out->append(buffer, static_cast<size_t>(end + 2 - buffer));
}
}  // namespace

void ReplyWriter::SimpleString(std::string_view text) {
  out_->push_back('+');
  AppendLine(out_, text);
  out_->append("\r\n");
}

void ReplyWriter::Error(std::string_view code, std::string_view message) {
  out_->push_back('-');
  AppendLine(out_, code);
  if (!message.empty()) {
    out_->push_back(' ');
    AppendLine(out_, message);
  }
  out_->append("\r\n");
}

void ReplyWriter::Integer(int64_t value) { AppendNumberLine(out_, ':', value); }

void ReplyWriter::Bulk(std::string_view bytes) {
  AppendNumberLine(out_, '$', static_cast<int64_t>(bytes.size()));
  out_->append(bytes);
  out_->append("\r\n");
}

void ReplyWriter::Null() { out_->append("$-1\r\n"); }

void ReplyWriter::ArrayHeader(size_t count) {
  AppendNumberLine(out_, '*', static_cast<int64_t>(count));
}

void ReplyWriter::NullArray() { out_->append("*-1\r\n"); }

}  // namespace wallet::resp
