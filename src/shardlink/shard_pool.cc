#include "shardlink/shard_pool.h"

#include <tuple>
#include <utility>

namespace wallet::shardlink {

absl::StatusOr<std::unique_ptr<ShardPool>> ShardPool::Create(EventLoop& loop, const ShardPoolOptions& options) {
  if (options.connections_per_shard < 1 || options.connections_per_shard > kMaxConnectionsPerShard) {
    return absl::InvalidArgumentError(
        StrCat("connections_per_shard must be 1 to ", kMaxConnectionsPerShard));
  }
  absl::Status valid = ShardConnection::ValidateOptions(options.connection);
  if (!valid.ok()) return valid;
  return std::unique_ptr<ShardPool>(new ShardPool(loop, options));
}

ShardPool::~ShardPool() {
  closing_ = true;
  loop_.CancelTimer(reap_timer_);
  for (auto& [id, shard] : shards_) {
    for (auto& connection : shard.connections) connection->Close();
  }
  shards_.clear();
  retired_.clear();
}

absl::Status ShardPool::SetShards(const std::map<std::string, std::string>& addresses) {
  if (closing_) return absl::FailedPreconditionError("the shard pool is being destroyed");
  for (const auto& [id, address] : addresses) {
    if (id.empty()) return absl::InvalidArgumentError("empty shard id");
    auto parsed = ParseShardAddress(address);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(StrCat("shard ", id, ": ", FromAbsl(parsed.status().message())));
    }
  }
  // New and re-pointed shards get their connections first (nothing changes if one
  // cannot be made); then removed and re-pointed shards leave, and their old
  // connections close last, once the pool is consistent again: closing runs callbacks.
  std::vector<std::pair<std::string, Shard>> arriving;
  for (const auto& [id, address] : addresses) {
    auto current = shards_.find(id);
    if (current != shards_.end() && current->second.address == address) continue;
    Shard shard;
    shard.address = address;
    for (size_t i = 0; i < options_.connections_per_shard; ++i) {
      auto connection = ShardConnection::Create(loop_, address, options_.connection);
      if (!connection.ok()) return connection.status();
      shard.connections.push_back(*std::move(connection));
    }
    arriving.emplace_back(id, std::move(shard));
  }
  std::vector<std::string> gone;
  for (const auto& [id, shard] : shards_) {
    auto wanted = addresses.find(id);
    if (wanted == addresses.end() || wanted->second != shard.address) gone.push_back(id);
  }
  std::vector<std::unique_ptr<ShardConnection>> leaving;
  for (const std::string& id : gone) {
    auto it = shards_.find(id);
    for (auto& connection : it->second.connections) leaving.push_back(std::move(connection));
    shards_.erase(it);
  }
  for (auto& [id, shard] : arriving) {
    for (auto& connection : shard.connections) connection->Start();
    shards_.insert_or_assign(id, std::move(shard));
  }
  Retire(std::move(leaving));
  return absl::OkStatus();
}

void ShardPool::Retire(std::vector<std::unique_ptr<ShardConnection>> connections) {
  for (auto& connection : connections) {
    connection->Close();
    retired_stats_.Add(connection->stats());
    retired_.push_back(std::move(connection));
  }
  if (!retired_.empty() && reap_timer_ == 0) {
    reap_timer_ = loop_.RunAfter(0, [this] {
      reap_timer_ = 0;
      retired_.clear();  // timers never run inside a connection's callback
    });
  }
}

// The connected connection with the fewest commands in flight, else a connecting
// one; one that is full only when all usable ones are (its Send then reports the
// overload); null when none is usable.
ShardConnection* ShardPool::Choose(Shard& shard) {
  ShardConnection* best = nullptr;
  auto rank = [](ShardConnection* connection) {
    bool full = connection->in_flight() >= connection->max_in_flight();
    bool ready = connection->state() == LinkState::kConnected;
    return std::make_tuple(full, !ready, connection->in_flight());
  };
  size_t count = shard.connections.size();
  for (size_t i = 0; i < count; ++i) {
    ShardConnection* candidate = shard.connections[(shard.next_first + i) % count].get();
    LinkState state = candidate->state();
    if (state != LinkState::kConnected && state != LinkState::kConnecting) continue;
    if (best == nullptr || rank(candidate) < rank(best)) best = candidate;
  }
  shard.next_first = (shard.next_first + 1) % count;
  return best;
}

absl::Status ShardPool::Send(std::string_view shard_id, absl::Span<const std::string_view> args,
                             ReplyCallback callback, uint64_t order_key) {
  if (closing_) {
    ++pool_stats_.refused_unavailable;
    return absl::UnavailableError("the shard pool is being destroyed; the command was not sent");
  }
  auto it = shards_.find(shard_id);
  if (it == shards_.end()) {
    ++pool_stats_.refused_unavailable;
    return absl::NotFoundError(StrCat("no shard '", shard_id, "' in the pool; the command was not sent"));
  }
  ShardConnection* connection = nullptr;
  if (order_key != 0) {
    ShardConnection* pinned = it->second.connections[order_key % it->second.connections.size()].get();
    const LinkState state = pinned->state();
    if (state == LinkState::kConnected || state == LinkState::kConnecting) connection = pinned;
  }
  if (connection == nullptr) connection = Choose(it->second);
  // With no usable connection, the first one refuses and says why (its last error).
  if (connection == nullptr) connection = it->second.connections.front().get();
  return connection->Send(args, std::move(callback));
}

ShardLinkStats ShardPool::stats() const {
  ShardLinkStats total = retired_stats_;
  total.Add(pool_stats_);
  for (const auto& [id, shard] : shards_) {
    for (const auto& connection : shard.connections) total.Add(connection->stats());
  }
  return total;
}

std::vector<ShardLinkInfo> ShardPool::Links() const {
  std::map<std::string_view, const Shard*> sorted;
  for (const auto& [id, shard] : shards_) sorted.emplace(id, &shard);
  std::vector<ShardLinkInfo> links;
  for (const auto& [id, shard] : sorted) {
    for (const auto& connection : shard->connections) {
      links.push_back(ShardLinkInfo{std::string(id), connection->address(), connection->state(),
                                    connection->in_flight(), connection->last_error()});
    }
  }
  return links;
}

}  // namespace wallet::shardlink
