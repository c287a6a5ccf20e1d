#include "common/partition.h"

#include "absl/strings/str_split.h"
#include "common/strings.h"

namespace wallet {

PartitionSet PartitionSet::All(uint32_t partition_count) {
  PartitionSet set(partition_count);
  set.AddRange(0, partition_count - 1);
  return set;
}

size_t PartitionSet::size() const {
  size_t n = 0;
  for (bool b : owned_) n += b ? 1 : 0;
  return n;
}

void PartitionSet::AddRange(uint32_t first, uint32_t last) {
  for (uint64_t p = first; p <= last; ++p) owned_.at(p) = true;
}

bool PartitionSet::ParseRanges(std::string_view text, std::string* error) {
  PartitionSet parsed(partition_count_);
  if (text == "all") {
    *this = All(partition_count_);
    return true;
  }
  if (text.empty()) {
    *this = parsed;
    return true;
  }
  for (absl::string_view piece : absl::StrSplit(ToAbsl(text), ',')) {
    std::string_view item = FromAbsl(piece);
    std::string_view first_text = item, last_text = item;
    if (size_t dash = item.find('-'); dash != std::string_view::npos) {
      first_text = item.substr(0, dash);
      last_text = item.substr(dash + 1);
    }
    uint64_t first, last;
    if (!ParseUint64(first_text, &first) || !ParseUint64(last_text, &last)) {
      *error = StrCat("bad partition range '", item, "'");
      return false;
    }
    if (first > last || last >= partition_count_) {
      *error = StrCat("partition range '", item, "' outside 0-", partition_count_ - 1);
      return false;
    }
    parsed.AddRange(static_cast<uint32_t>(first), static_cast<uint32_t>(last));
  }
  *this = std::move(parsed);
  return true;
}

std::string PartitionSet::ToString() const {
  if (size() == partition_count_) return "all";
  std::string out;
  uint32_t p = 0;
  while (p < partition_count_) {
    if (!owned_[p]) {
      ++p;
      continue;
    }
    uint32_t last = p;
    while (last + 1 < partition_count_ && owned_[last + 1]) ++last;
    if (!out.empty()) out += ',';
    StrAppend(&out, p);
    if (last != p) StrAppend(&out, "-", last);
    p = last + 1;
  }
  return out;
}

}  // namespace wallet
