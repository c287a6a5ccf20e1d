#include "shardlink/shard_reply.h"

#include "common/strings.h"

namespace wallet::shardlink {

ShardReply ShardReply::FromHiredis(const redisReply& reply) {
  ShardReply out;
  switch (reply.type) {
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
    case REDIS_REPLY_STRING:
      out.type = reply.type == REDIS_REPLY_STATUS  ? Type::kStatus
                 : reply.type == REDIS_REPLY_ERROR ? Type::kError
                                                   : Type::kBulk;
      out.text.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Type::kInteger;
      out.integer = reply.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Type::kArray;
      out.elements.reserve(reply.elements);
      for (size_t i = 0; i < reply.elements; ++i) out.elements.push_back(FromHiredis(*reply.element[i]));
      break;
    default:  // REDIS_REPLY_NIL (hiredis reports a null array as nil too)
      out.type = Type::kNil;
      break;
  }
  return out;
}

std::string_view ShardReply::error_word() const {
  if (type != Type::kError) return {};
  std::string_view line = text;
  return line.substr(0, line.find(' '));
}

std::string_view ShardReply::error_message() const {
  if (type != Type::kError) return {};
  std::string_view line = text;
  size_t space = line.find(' ');
  return space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
}

std::optional<ResultCode> ShardReply::error_code() const {
  ResultCode code;
  if (type != Type::kError || !ParseResultCode(error_word(), &code)) return std::nullopt;
  return code;
}

std::string ShardReply::ToString() const {
  switch (type) {
    case Type::kStatus:
      return StrCat("+", text);
    case Type::kError:
      return StrCat("-", text);
    case Type::kInteger:
      return StrCat(":", integer);
    case Type::kBulk:
      return StrCat("\"", text, "\"");
    case Type::kNil:
      return "(nil)";
    case Type::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < elements.size(); ++i) StrAppend(&out, i == 0 ? "" : ", ", elements[i].ToString());
      out += "]";
      return out;
    }
  }
  return "(unknown)";
}

}  // namespace wallet::shardlink
