#include "cluster/layout.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/money.h"
#include "common/strings.h"

namespace wallet::cluster {

namespace {

constexpr uint32_t kUnassigned = std::numeric_limits<uint32_t>::max();
constexpr char kCountPrefix[] = "partition_count ";
// Read-modify-write rounds AssignPartitions tries when other writers keep winning.
constexpr int kAssignAttempts = 5;

// At most the first 80 characters of `text`, for error messages about bad input.
std::string Clip(std::string_view text) {
  return text.size() <= 80 ? std::string(text) : StrCat(text.substr(0, 80), "...");
}

// A partition count as written in /partition_count and the map's second line.
bool ParsePartitionCount(std::string_view text, uint32_t* out) {
  uint64_t value;
  if (!ParseUint64(text, &value) || value == 0 || value > kMaxPartitionCount) return false;
  *out = static_cast<uint32_t>(value);
  return true;
}

// One "A" or "A-B" item of a ranges list, inside [0, partition_count).
bool ParseRangeItem(std::string_view item, uint32_t partition_count, uint32_t* first, uint32_t* last) {
  std::string_view first_text = item, last_text = item;
  if (size_t dash = item.find('-'); dash != std::string_view::npos) {
    first_text = item.substr(0, dash);
    last_text = item.substr(dash + 1);
  }
  uint64_t a, b;
  if (!ParseUint64(first_text, &a) || !ParseUint64(last_text, &b) || a > b || b >= partition_count) {
    return false;
  }
  *first = static_cast<uint32_t>(a);
  *last = static_cast<uint32_t>(b);
  return true;
}

// "shard-0, shard-1, shard-2" for messages.
std::string JoinIds(const std::vector<std::string>& ids) { return absl::StrJoin(ids, ", "); }

// The live members under shards/ or routers/: (id, address) pairs, sorted. A
// member that leaves between the listing and the read is skipped.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadMembers(ZkClient& client,
                                                                            const std::string& parent) {
  absl::StatusOr<std::vector<std::string>> children = client.GetChildren(parent, Watch::kNone);
  if (absl::IsNotFound(children.status())) return std::vector<std::pair<std::string, std::string>>();
  if (!children.ok()) return children.status();
  std::vector<std::pair<std::string, std::string>> members;
  for (const std::string& child : *children) {
    absl::StatusOr<NodeData> node = client.Get(StrCat(parent, "/", child), Watch::kNone);
    if (absl::IsNotFound(node.status())) continue;
    if (!node.ok()) return node.status();
    members.emplace_back(child, node->data);
  }
  return members;
}

}  // namespace

absl::Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(StrCat(what, " '", Clip(name), "' must have 1-", kMaxNameLength, " characters"));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(StrCat(what, " '", Clip(name), "' may hold only letters, digits, '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

std::string ShardIdFor(uint32_t index) { return StrCat("shard-", index); }

ClusterPaths::ClusterPaths(std::string_view cluster)
    : cluster_(cluster), root_(StrCat(kLayoutRoot, "/", cluster)) {}

std::string ClusterPaths::shard(std::string_view shard_id) const { return StrCat(shards(), "/", shard_id); }

std::string ClusterPaths::router(std::string_view router_id) const { return StrCat(routers(), "/", router_id); }

// ---------------------------------------------------------------------------
// The partition map.

absl::StatusOr<PartitionMap> PartitionMap::Even(uint32_t partition_count, const std::vector<std::string>& shard_ids) {
  if (partition_count == 0 || partition_count > kMaxPartitionCount) {
    return absl::InvalidArgumentError(StrCat("partition count ", partition_count, " is outside 1-", kMaxPartitionCount));
  }
  if (shard_ids.empty() || shard_ids.size() > partition_count) {
    return absl::InvalidArgumentError(
        StrCat("cannot spread ", partition_count, " partitions over ", shard_ids.size(), " shards (need 1-",
               partition_count, " shards)"));
  }
  PartitionMap map;
  for (const std::string& id : shard_ids) {
    if (absl::Status status = ValidateName("shard id", id); !status.ok()) return status;
    if (std::find(map.shard_ids_.begin(), map.shard_ids_.end(), id) != map.shard_ids_.end()) {
      return absl::InvalidArgumentError(StrCat("shard id '", id, "' is given twice"));
    }
    map.shard_ids_.push_back(id);
  }
  const uint64_t count = shard_ids.size();
  map.owner_.resize(partition_count);
  for (uint64_t shard = 0; shard < count; ++shard) {
    uint64_t first = shard * partition_count / count;
    uint64_t end = (shard + 1) * partition_count / count;
    for (uint64_t p = first; p < end; ++p) map.owner_[p] = static_cast<uint32_t>(shard);
  }
  return map;
}

absl::StatusOr<PartitionMap> PartitionMap::Parse(std::string_view text) {
  if (text.size() > kMaxMapBytes) {
    return absl::InvalidArgumentError(StrCat("partition map of ", text.size(), " bytes exceeds ", kMaxMapBytes));
  }
  if (text.empty() || text.back() != '\n') {
    return absl::InvalidArgumentError("partition map is empty or its last line has no newline");
  }
  std::vector<std::string_view> lines;
  for (absl::string_view line : absl::StrSplit(ToAbsl(text.substr(0, text.size() - 1)), '\n')) {
    lines.push_back(FromAbsl(line));
  }
  auto error = [](size_t line_number, const std::string& problem) {
    return absl::InvalidArgumentError(StrCat("partition map line ", line_number, ": ", problem));
  };
  if (lines[0] != kMapHeader) {
    return error(1, StrCat("expected '", kMapHeader, "', found '", Clip(lines[0]), "'"));
  }
  std::string_view count_prefix = kCountPrefix;
  uint32_t partition_count = 0;
  if (lines.size() < 2 || lines[1].substr(0, count_prefix.size()) != count_prefix ||
      !ParsePartitionCount(lines[1].substr(count_prefix.size()), &partition_count)) {
    return error(2, StrCat("expected 'partition_count N' with N in 1-", kMaxPartitionCount, ", found '",
                           Clip(lines.size() < 2 ? "" : lines[1]), "'"));
  }
  PartitionMap map;
  map.owner_.assign(partition_count, kUnassigned);
  for (size_t i = 2; i < lines.size(); ++i) {
    const size_t line_number = i + 1;
    std::string_view line = lines[i];
    size_t space = line.find(' ');
    if (space == std::string_view::npos) {
      return error(line_number, StrCat("expected 'shard-id ranges', found '", Clip(line), "'"));
    }
    std::string_view id = line.substr(0, space);
    std::string_view ranges = line.substr(space + 1);
    if (absl::Status status = ValidateName("shard id", id); !status.ok()) {
      return error(line_number, std::string(status.message()));
    }
    if (std::find(map.shard_ids_.begin(), map.shard_ids_.end(), id) != map.shard_ids_.end()) {
      return error(line_number, StrCat("shard ", id, " has a second line"));
    }
    const uint32_t index = static_cast<uint32_t>(map.shard_ids_.size());
    map.shard_ids_.emplace_back(id);
    std::vector<std::string_view> items;
    if (ranges == "all") {
      items.push_back("");  // handled below as 0-(P-1)
    } else {
      for (absl::string_view item : absl::StrSplit(ToAbsl(ranges), ',')) items.push_back(FromAbsl(item));
    }
    int64_t previous_last = -1;
    for (std::string_view item : items) {
      uint32_t first = 0, last = partition_count - 1;
      if (ranges != "all" && !ParseRangeItem(item, partition_count, &first, &last)) {
        return error(line_number, StrCat("bad partition range '", Clip(item), "' for shard ", id,
                                         " (ranges are N or A-B within 0-", partition_count - 1, ")"));
      }
      if (static_cast<int64_t>(first) <= previous_last) {
        return error(line_number, StrCat("ranges of shard ", id, " must be ascending and disjoint ('", Clip(ranges), "')"));
      }
      previous_last = last;
      for (uint64_t p = first; p <= last; ++p) {
        if (map.owner_[p] != kUnassigned) {
          return error(line_number, StrCat("partition ", p, " is assigned twice (", map.shard_ids_[map.owner_[p]],
                                           " and ", id, ")"));
        }
        map.owner_[p] = index;
      }
    }
  }
  PartitionSet unassigned(partition_count);
  for (uint32_t p = 0; p < partition_count; ++p) {
    if (map.owner_[p] == kUnassigned) unassigned.Add(p);
  }
  if (unassigned.size() > 0) {
    return absl::InvalidArgumentError(
        StrCat("partition map leaves partitions ", Clip(unassigned.ToString()), " unassigned"));
  }
  return map;
}

std::string PartitionMap::Format() const {
  std::string out = StrCat(kMapHeader, "\n", kCountPrefix, partition_count(), "\n");
  std::vector<std::string> ranges(shard_ids_.size());
  std::vector<uint32_t> order;  // shard indexes by first partition
  const uint32_t count = partition_count();
  for (uint32_t p = 0; p < count;) {
    uint32_t owner = owner_[p];
    uint32_t last = p;
    while (last + 1 < count && owner_[last + 1] == owner) ++last;
    std::string& text = ranges[owner];
    if (text.empty()) order.push_back(owner);
    StrAppend(&text, text.empty() ? "" : ",", p);
    if (last != p) StrAppend(&text, "-", last);
    p = last + 1;
  }
  for (uint32_t owner : order) {
    // PartitionSet::ToString's form: a shard that owns everything says "all".
    StrAppend(&out, shard_ids_[owner], " ", order.size() == 1 ? "all" : ranges[owner], "\n");
  }
  return out;
}

PartitionSet PartitionMap::PartitionsOf(std::string_view shard_id) const {
  PartitionSet set(partition_count());
  for (uint32_t p = 0; p < partition_count(); ++p) {
    if (shard_ids_[owner_[p]] == shard_id) set.Add(p);
  }
  return set;
}

std::vector<std::string> PartitionMap::ShardIds() const {
  std::vector<bool> seen(shard_ids_.size(), false);
  std::vector<std::string> ids;
  for (uint32_t owner : owner_) {
    if (!seen[owner]) {
      seen[owner] = true;
      ids.push_back(shard_ids_[owner]);
    }
  }
  return ids;
}

uint32_t PartitionMap::ShardIndex(std::string_view shard_id) {
  auto it = std::find(shard_ids_.begin(), shard_ids_.end(), shard_id);
  if (it != shard_ids_.end()) return static_cast<uint32_t>(it - shard_ids_.begin());
  shard_ids_.emplace_back(shard_id);
  return static_cast<uint32_t>(shard_ids_.size() - 1);
}

absl::StatusOr<uint32_t> PartitionMap::Assign(const PartitionSet& partitions, std::string_view shard_id) {
  if (absl::Status status = ValidateName("shard id", shard_id); !status.ok()) return status;
  if (partitions.partition_count() != partition_count()) {
    return absl::InvalidArgumentError(StrCat("partition set is out of ", partitions.partition_count(),
                                             " partitions, the map of ", partition_count()));
  }
  const uint32_t index = ShardIndex(shard_id);
  uint32_t moved = 0;
  for (uint32_t p = 0; p < partition_count(); ++p) {
    if (partitions.Contains(p) && owner_[p] != index) {
      owner_[p] = index;
      ++moved;
    }
  }
  return moved;
}

bool PartitionMap::operator==(const PartitionMap& other) const {
  if (partition_count() != other.partition_count()) return false;
  for (uint32_t p = 0; p < partition_count(); ++p) {
    if (OwnerOf(p) != other.OwnerOf(p)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Reading and writing the layout.

absl::StatusOr<VersionedPartitionMap> ReadPartitionMap(ZkClient& client, const ClusterPaths& paths, Watch watch) {
  absl::StatusOr<NodeData> node = client.Get(paths.map(), watch);
  if (!node.ok()) return node.status();
  absl::StatusOr<PartitionMap> map = PartitionMap::Parse(node->data);
  if (!map.ok()) return absl::DataLossError(StrCat(paths.map(), ": ", map.status().message()));
  return VersionedPartitionMap{std::move(*map), node->stat.version, node->stat.created_zxid};
}

absl::StatusOr<uint32_t> ReadPartitionCount(ZkClient& client, const ClusterPaths& paths) {
  absl::StatusOr<NodeData> node = client.Get(paths.partition_count(), Watch::kNone);
  if (!node.ok()) return node.status();
  uint32_t count = 0;
  if (!ParsePartitionCount(node->data, &count)) {
    return absl::DataLossError(StrCat(paths.partition_count(), " holds '", Clip(node->data),
                                      "', not a partition count in 1-", kMaxPartitionCount));
  }
  return count;
}

absl::StatusOr<BootstrapResult> Bootstrap(ZkClient& client, std::string_view cluster, uint32_t shard_count,
                                          uint32_t partition_count, ShardCountChange on_change) {
  if (absl::Status status = ValidateName("cluster name", cluster); !status.ok()) return status;
  std::vector<std::string> shard_ids;
  for (uint32_t i = 0; i < shard_count; ++i) shard_ids.push_back(ShardIdFor(i));
  absl::StatusOr<PartitionMap> even = PartitionMap::Even(partition_count, shard_ids);
  if (!even.ok()) return even.status();
  const ClusterPaths paths(cluster);
  const std::string count_text = StrCat(partition_count);

  if (absl::Status status = client.EnsurePath(kLayoutRoot); !status.ok()) return status;
  // A new cluster: every node in one transaction.
  absl::Status created = client.CreateAll({{paths.root(), ""},
                                           {paths.partition_count(), count_text},
                                           {paths.map(), even->Format()},
                                           {paths.shards(), ""},
                                           {paths.routers(), ""}});
  if (created.ok()) {
    return BootstrapResult{BootstrapResult::Outcome::kCreated, 0,
                           StrCat("created cluster '", cluster, "' (", paths.root(), "): ", partition_count,
                                  " partitions evenly over ", shard_count, " shards, map version 0")};
  }
  if (!absl::IsAlreadyExists(created)) return created;

  // The cluster exists (or part of it, if made by hand): compare, add what is missing.
  bool repaired = false;
  absl::StatusOr<uint32_t> existing_count = ReadPartitionCount(client, paths);
  if (absl::IsNotFound(existing_count.status())) {
    absl::Status status = client.Create(paths.partition_count(), count_text, CreateMode::kPersistent);
    if (!status.ok() && !absl::IsAlreadyExists(status)) return status;
    repaired = status.ok();
    existing_count = ReadPartitionCount(client, paths);
  }
  if (!existing_count.ok()) return existing_count.status();
  if (*existing_count != partition_count) {
    return absl::FailedPreconditionError(
        StrCat("cluster '", cluster, "' has ", *existing_count, " partitions; bootstrap asked for ", partition_count,
               ": the partition count is fixed for a cluster's life (nothing was changed)"));
  }
  for (const std::string& path : {paths.shards(), paths.routers()}) {
    absl::Status status = client.Create(path, "", CreateMode::kPersistent);
    if (!status.ok() && !absl::IsAlreadyExists(status)) return status;
    repaired = repaired || status.ok();
  }
  absl::StatusOr<VersionedPartitionMap> current = ReadPartitionMap(client, paths, Watch::kNone);
  if (absl::IsNotFound(current.status())) {
    absl::Status status = client.Create(paths.map(), even->Format(), CreateMode::kPersistent);
    if (status.ok()) {
      return BootstrapResult{BootstrapResult::Outcome::kCreated, 0,
                             StrCat("completed cluster '", cluster, "': created its map (", partition_count,
                                    " partitions evenly over ", shard_count, " shards), map version 0")};
    }
    if (!absl::IsAlreadyExists(status)) return status;
    current = ReadPartitionMap(client, paths, Watch::kNone);  // another bootstrap won the race
  }
  if (!current.ok()) return current.status();
  if (current->map.partition_count() != partition_count) {
    return absl::DataLossError(StrCat(paths.map(), " covers ", current->map.partition_count(),
                                      " partitions but the cluster has ", partition_count));
  }
  std::vector<std::string> existing_ids = current->map.ShardIds();
  std::vector<std::string> sorted_existing = existing_ids, sorted_wanted = shard_ids;
  std::sort(sorted_existing.begin(), sorted_existing.end());
  std::sort(sorted_wanted.begin(), sorted_wanted.end());
  if (sorted_existing == sorted_wanted) {
    return BootstrapResult{BootstrapResult::Outcome::kUnchanged, current->version,
                           StrCat("cluster '", cluster, "' already has ", partition_count, " partitions over ",
                                  shard_count, " shards (map version ", current->version, ")",
                                  repaired ? "; added its missing nodes" : ": nothing to do")};
  }
  std::string difference =
      StrCat("the map of cluster '", cluster, "' (version ", current->version, ") assigns partitions to ",
             existing_ids.size(), " shards (", JoinIds(existing_ids), "), not the ", shard_count, " asked for (",
             JoinIds(shard_ids), ")");
  if (on_change == ShardCountChange::kRefuse) {
    return absl::FailedPreconditionError(
        StrCat(difference, "; nothing was changed. To replace the map with an even assignment over ", shard_count,
               " shards pass --reassign, or move partitions with `wallet-cluster assign`"));
  }
  absl::StatusOr<NodeStat> written = client.Set(paths.map(), even->Format(), current->version);
  if (absl::IsFailedPrecondition(written.status())) {
    return absl::AbortedError(StrCat("the map of cluster '", cluster, "' changed while bootstrap replaced it; run it again"));
  }
  if (!written.ok()) return written.status();
  return BootstrapResult{BootstrapResult::Outcome::kReassigned, written->version,
                         StrCat(difference, "; replaced it with an even assignment over ", shard_count,
                                " shards: map version ", current->version, " -> ", written->version)};
}

absl::StatusOr<AssignResult> AssignPartitions(ZkClient& client, std::string_view cluster, std::string_view ranges,
                                              std::string_view shard_id, int32_t expected_version) {
  if (absl::Status status = ValidateName("cluster name", cluster); !status.ok()) return status;
  if (absl::Status status = ValidateName("shard id", shard_id); !status.ok()) return status;
  const ClusterPaths paths(cluster);
  for (int attempt = 1;; ++attempt) {
    absl::StatusOr<VersionedPartitionMap> current = ReadPartitionMap(client, paths, Watch::kNone);
    if (!current.ok()) return current.status();
    if (expected_version != kAnyVersion && current->version != expected_version) {
      return absl::FailedPreconditionError(StrCat("the map of cluster '", cluster, "' is at version ",
                                                  current->version, ", not the expected ", expected_version));
    }
    PartitionSet partitions(current->map.partition_count());
    std::string error;
    if (ranges.empty() || !partitions.ParseRanges(ranges, &error)) {
      return absl::InvalidArgumentError(
          StrCat("--partitions='", Clip(ranges), "': ", ranges.empty() ? "no partitions given" : error));
    }
    AssignResult result{current->version, current->version, 0, current->map};
    absl::StatusOr<uint32_t> moved = result.map.Assign(partitions, shard_id);
    if (!moved.ok()) return moved.status();
    result.moved = *moved;
    if (result.moved == 0) return result;  // already so: write nothing
    absl::StatusOr<NodeStat> written = client.Set(paths.map(), result.map.Format(), current->version);
    if (written.ok()) {
      result.new_version = written->version;
      return result;
    }
    if (!absl::IsFailedPrecondition(written.status()) || expected_version != kAnyVersion) return written.status();
    if (attempt == kAssignAttempts) {
      return absl::AbortedError(StrCat("the map of cluster '", cluster, "' kept changing (", kAssignAttempts,
                                       " attempts); try again"));
    }
  }
}

absl::StatusOr<LayoutSnapshot> ReadLayout(ZkClient& client, std::string_view cluster) {
  if (absl::Status status = ValidateName("cluster name", cluster); !status.ok()) return status;
  const ClusterPaths paths(cluster);
  LayoutSnapshot layout;
  layout.cluster = std::string(cluster);
  absl::StatusOr<uint32_t> count = ReadPartitionCount(client, paths);
  if (absl::IsNotFound(count.status())) {
    return absl::NotFoundError(StrCat("cluster '", cluster, "' does not exist (no ", paths.partition_count(), ")"));
  }
  if (!count.ok()) return count.status();
  layout.partition_count = *count;
  absl::StatusOr<VersionedPartitionMap> map = ReadPartitionMap(client, paths, Watch::kNone);
  if (!map.ok()) return map.status();
  if (map->map.partition_count() != *count) {
    return absl::DataLossError(StrCat(paths.map(), " covers ", map->map.partition_count(), " partitions but ",
                                      paths.partition_count(), " says ", *count));
  }
  layout.map = std::move(*map);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> shards = ReadMembers(client, paths.shards());
  if (!shards.ok()) return shards.status();
  layout.shards = std::move(*shards);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> routers = ReadMembers(client, paths.routers());
  if (!routers.ok()) return routers.status();
  layout.routers = std::move(*routers);
  return layout;
}

std::string FormatLayout(const LayoutSnapshot& layout) {
  const ClusterPaths paths(layout.cluster);
  std::string out = StrCat("cluster ", layout.cluster, " (", paths.root(), ")\n",
                           "partition_count ", layout.partition_count, "\n",
                           "map_version ", layout.map.version, "\n");
  std::vector<std::string> ids = layout.map.map.ShardIds();
  StrAppend(&out, "assignment (", ids.size(), " shards)\n");
  for (const std::string& id : ids) {
    PartitionSet owned = layout.map.map.PartitionsOf(id);
    auto live = std::find_if(layout.shards.begin(), layout.shards.end(),
                             [&](const auto& member) { return member.first == id; });
    StrAppend(&out, "  ", id, " ", owned.ToString(), " (", owned.size(), " partitions) ",
              live == layout.shards.end() ? "NOT LIVE" : StrCat("live at ", live->second), "\n");
  }
  StrAppend(&out, "live shards (", layout.shards.size(), ")\n");
  for (const auto& [id, address] : layout.shards) {
    bool in_map = std::find(ids.begin(), ids.end(), id) != ids.end();
    StrAppend(&out, "  ", id, " ", address, in_map ? "" : " (owns no partition)", "\n");
  }
  StrAppend(&out, "live routers (", layout.routers.size(), ")\n");
  for (const auto& [id, address] : layout.routers) StrAppend(&out, "  ", id, " ", address, "\n");
  return out;
}

}  // namespace wallet::cluster
