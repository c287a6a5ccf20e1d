// wallet-cluster: creates and inspects a wallet cluster's layout in ZooKeeper and
// moves partitions between shards in its map (docs/zookeeper-layout.md).
//
//   wallet-cluster bootstrap --zk=127.0.0.1:2181 --cluster=prod --shards=4 --partitions=1024
//   wallet-cluster show      --zk=127.0.0.1:2181 --cluster=prod
//   wallet-cluster assign    --zk=127.0.0.1:2181 --cluster=prod --partitions=0-99 --shard=shard-3
//
// Exit status: 0 done (including "nothing to do"), 1 refused or failed (the reason
// on stderr), 2 bad usage.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "cluster/layout.h"
#include "cluster/zk_client.h"
#include "common/log.h"
#include "common/money.h"
#include "common/strings.h"

ABSL_FLAG(std::string, zk, "127.0.0.1:2181", "ZooKeeper connect string: host:port[,host:port...].");
ABSL_FLAG(std::string, cluster, "", "Cluster name (1-64 of [A-Za-z0-9_-]); its root is /wallet/<cluster>.");
ABSL_FLAG(uint32_t, shards, 0, "bootstrap: number of shards (named shard-0 ... shard-<N-1>).");
ABSL_FLAG(std::string, partitions, "",
          "bootstrap: the partition count P (fixed for the cluster's life; the shards and "
          "routers use 1024 unless told otherwise). assign: the partitions to move, e.g. "
          "'0-99,512'.");
ABSL_FLAG(bool, reassign, false,
          "bootstrap: when the existing map assigns partitions to other shards than "
          "--shards asks for, replace it with an even assignment (moves partitions) "
          "instead of refusing.");
ABSL_FLAG(std::string, shard, "", "assign: the shard id that gets the partitions (may be new).");
ABSL_FLAG(int32_t, expect_version, -1,
          "assign: write only if the map is at this version (from `show`); -1 re-reads and "
          "retries when another writer got in first.");
ABSL_FLAG(int32_t, timeout_ms, 10'000, "How long to wait for ZooKeeper: connection and each request.");

namespace {

using wallet::StrCat;
namespace cluster = wallet::cluster;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "wallet-cluster: %s\n", std::string(status.message()).c_str());
  return kExitFailed;
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "wallet-cluster: %s (see --help)\n", message.c_str());
  return kExitUsage;
}

// Connects with the --zk and --timeout_ms flags.
absl::StatusOr<std::unique_ptr<cluster::ZkClient>> ConnectFromFlags() {
  cluster::ZkClientOptions options;
  options.connect_string = absl::GetFlag(FLAGS_zk);
  options.connect_timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  options.operation_timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  return cluster::ZkClient::Connect(options);
}

int RunBootstrap(cluster::ZkClient& client, const std::string& name) {
  uint64_t partition_count = 0;
  if (!wallet::ParseUint64(absl::GetFlag(FLAGS_partitions), &partition_count) || partition_count == 0 ||
      partition_count > wallet::kMaxPartitionCount) {
    return Usage(StrCat("bootstrap needs --partitions=P, a partition count in 1-", wallet::kMaxPartitionCount));
  }
  uint32_t shard_count = absl::GetFlag(FLAGS_shards);
  if (shard_count == 0 || shard_count > partition_count) {
    return Usage(StrCat("bootstrap needs --shards=N with 1 <= N <= --partitions"));
  }
  absl::StatusOr<cluster::BootstrapResult> result =
      cluster::Bootstrap(client, name, shard_count, static_cast<uint32_t>(partition_count),
                         absl::GetFlag(FLAGS_reassign) ? cluster::ShardCountChange::kReassignEvenly
                                                       : cluster::ShardCountChange::kRefuse);
  if (!result.ok()) return Fail(result.status());
  std::printf("%s\n", result->summary.c_str());
  return 0;
}

int RunShow(cluster::ZkClient& client, const std::string& name) {
  absl::StatusOr<cluster::LayoutSnapshot> layout = cluster::ReadLayout(client, name);
  if (!layout.ok()) return Fail(layout.status());
  std::printf("%s", cluster::FormatLayout(*layout).c_str());
  return 0;
}

int RunAssign(cluster::ZkClient& client, const std::string& name) {
  std::string ranges = absl::GetFlag(FLAGS_partitions);
  std::string shard_id = absl::GetFlag(FLAGS_shard);
  if (ranges.empty() || shard_id.empty()) return Usage("assign needs --partitions=RANGES and --shard=ID");
  int32_t expected_version = absl::GetFlag(FLAGS_expect_version);
  if (expected_version < cluster::kAnyVersion) return Usage("--expect_version must be -1 or a map version");
  absl::StatusOr<cluster::AssignResult> result =
      cluster::AssignPartitions(client, name, ranges, shard_id, expected_version);
  if (!result.ok()) return Fail(result.status());
  if (result->moved == 0) {
    std::printf("partitions %s already belong to %s: nothing to do (map version %d)\n", ranges.c_str(),
                shard_id.c_str(), result->new_version);
  } else {
    std::printf("moved %u partitions (%s) to %s: map version %d -> %d; %s now owns %s\n", result->moved,
                ranges.c_str(), shard_id.c_str(), result->old_version, result->new_version, shard_id.c_str(),
                result->map.PartitionsOf(shard_id).ToString().c_str());
  }
  absl::StatusOr<std::optional<cluster::NodeStat>> live =
      client.Exists(cluster::ClusterPaths(name).shard(shard_id), cluster::Watch::kNone);
  if (live.ok() && !live->has_value()) {
    std::printf("note: %s is not live (no ephemeral node); requests for its partitions fail until it registers\n",
                shard_id.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists the flags defined in this file (Abseil looks for a file named
  // after the binary otherwise, and finds none).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "cluster/main.cc");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "a wallet cluster's layout in ZooKeeper (docs/zookeeper-layout.md).\n"
      "Usage:\n"
      "  wallet-cluster bootstrap --zk=HOST:PORT --cluster=NAME --shards=N --partitions=P [--reassign]\n"
      "  wallet-cluster show      --zk=HOST:PORT --cluster=NAME\n"
      "  wallet-cluster assign    --zk=HOST:PORT --cluster=NAME --partitions=A-B[,..] --shard=ID "
      "[--expect_version=V]\n"
      "Exit status: 0 done, 1 refused or failed, 2 bad usage.");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  wallet::SetLogProgramName("wallet-cluster");

  if (positional.size() != 2) return Usage("expected one command: bootstrap, show or assign");
  std::string command = positional[1];
  std::string name = absl::GetFlag(FLAGS_cluster);
  if (absl::Status status = cluster::ValidateName("cluster name", name); !status.ok()) {
    return Usage(StrCat("--cluster: ", status.message()));
  }
  if (absl::GetFlag(FLAGS_timeout_ms) <= 0) return Usage("--timeout_ms must be positive");
  if (command != "bootstrap" && command != "show" && command != "assign") {
    return Usage(StrCat("unknown command '", command, "'"));
  }

  absl::StatusOr<std::unique_ptr<cluster::ZkClient>> client = ConnectFromFlags();
  if (!client.ok()) return Fail(client.status());
  if (command == "bootstrap") return RunBootstrap(**client, name);
  if (command == "show") return RunShow(**client, name);
  return RunAssign(**client, name);
}
