// wallet-shard: a Redis-protocol balance server holding a set of partitions.
//
//   wallet-shard --port=7001 --partitions=all
//   redis-cli -p 7001 OPEN 42 USD
//
// See docs/shard-protocol.md for the commands, and --help for every flag.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/flags_usage.h"
#include "common/log.h"
#include "common/partition.h"
#include "common/process_files.h"
#include "common/stop_signals.h"
#include "shard/engine.h"
#include "shard/membership.h"
#include "shard/server.h"
#include "shard/storage.h"

ABSL_FLAG(std::string, bind, "127.0.0.1",
          "Address to listen on. Loopback by default; set a routable address only behind "
          "a firewall and with --password.");
ABSL_FLAG(int32_t, port, 7001, "TCP port (0 picks a free one; see --ready_file).");
ABSL_FLAG(std::string, password, "",
          "Password clients must send with AUTH before any other command. Prefer "
          "--password_file: flags are visible in the process list.");
ABSL_FLAG(std::string, password_file, "",
          "File whose first line is the AUTH password (overrides --password).");
ABSL_FLAG(uint32_t, partition_count, 0,
          "Partitions in the cluster (fixed for the cluster's life; every shard and "
          "router must agree). 0: the cluster's count with --zk, else 1024.");
ABSL_FLAG(std::string, partitions, "all",
          "Partitions this shard owns without --zk: 'all', or a list such as "
          "'0-255,512'. Commands for accounts in other partitions get a MOVED error. "
          "With --zk the cluster's partition map decides.");
ABSL_FLAG(std::string, zk, "",
          "ZooKeeper connect string (host:port[,host:port...]). With it the shard joins "
          "--cluster as --shard_id: it owns what the partition map gives it, follows "
          "the map, and announces --advertise_address. ZooKeeper is off the data path.");
ABSL_FLAG(std::string, cluster, "", "Cluster name under /wallet in ZooKeeper (with --zk).");
ABSL_FLAG(std::string, shard_id, "", "This shard's id in the partition map, e.g. shard-0 (with --zk).");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port routers use to reach this shard (default: --bind and the bound port).");
ABSL_FLAG(int32_t, zk_session_timeout_ms, 10'000, "ZooKeeper session timeout.");
ABSL_FLAG(int64_t, shard_id_wait_ms, -1,
          "At start, how long to wait for --shard_id to be released by an older session (a shard "
          "killed without a clean stop) before giving up. -1: the session timeout plus 5 s.");
ABSL_FLAG(int64_t, idempotency_window_ms, 10 * 60 * 1000,
          "How long finished transactions and fences are remembered so that a retry "
          "with the same transaction id is recognised. Memory grows with "
          "window x transaction rate; see max_txn_records.");
ABSL_FLAG(uint64_t, max_accounts, 100'000'000, "Accounts this shard accepts (OPEN beyond: BUSY).");
ABSL_FLAG(uint64_t, max_txn_records, 50'000'000,
          "Transaction records held within the idempotency window; past it new "
          "mutations get BUSY (ids are never forgotten early).");
ABSL_FLAG(uint64_t, collect_batch, 256,
          "Expired records collected per 10 ms tick in addition to as many as were "
          "created since the previous tick (so collection keeps pace with traffic and "
          "each pause is proportional to the last 10 ms of work).");
ABSL_FLAG(uint64_t, max_clients, 10'000, "Simultaneous client connections.");
ABSL_FLAG(uint64_t, max_args, 50'002,
          "Arguments in one command (50002: the largest TRANSFER.BATCH, 10000 transfers).");
ABSL_FLAG(uint64_t, max_arg_bytes, 512 * 1024, "Bytes in one argument.");
ABSL_FLAG(uint64_t, max_inline_bytes, 64 * 1024, "Bytes in one inline (telnet-style) command.");
ABSL_FLAG(uint64_t, max_query_bytes, 64u << 20,
          "Unparsed bytes buffered per connection before it is closed.");
ABSL_FLAG(uint64_t, max_output_bytes, 64u << 20,
          "Unsent reply bytes per connection before the shard stops reading from it.");
ABSL_FLAG(std::string, data_dir, "",
          "Folder of this shard's event log and snapshots (created if missing; locked "
          "while the shard runs). Required unless --in_memory.");
ABSL_FLAG(bool, in_memory, false,
          "Run without a data folder: nothing survives a stop or crash. For tests and "
          "measurements only; never for money.");
ABSL_FLAG(std::string, fsync, "always",
          "When the event log reaches stable storage. 'always' (default): one "
          "fdatasync per event-loop turn before its replies leave (group commit); no "
          "acknowledged change is lost even if the machine loses power. 'everysec': "
          "fdatasync once a second; a machine crash or power loss can lose the last "
          "second of acknowledged changes. 'no': the OS flushes when it likes; a "
          "machine crash can lose any acknowledged change not yet flushed (typically "
          "up to 30 s). A crash of the shard process alone loses nothing under any "
          "policy.");
ABSL_FLAG(uint64_t, log_segment_bytes, 64ull << 20,
          "Size at which the event log starts a new segment file.");
ABSL_FLAG(std::string, log_damage, "refuse",
          "What to do when the event log is damaged before its tail (a bad checksum, a "
          "gap): 'refuse' (default) stops with the file and offset; 'keep_prefix' "
          "keeps the events before the damage, sets the rest aside (*.damaged) and "
          "starts. A torn tail (a crash mid-write) is always cut and reported.");
ABSL_FLAG(uint64_t, snapshot_log_bytes, 1ull << 30,
          "Start a background snapshot after this many bytes of log (0: never by size).");
ABSL_FLAG(int64_t, snapshot_interval_s, 3600,
          "Start a background snapshot after this many seconds with new events "
          "(0: never by time). SNAPSHOT starts one on demand.");
ABSL_FLAG(int32_t, snapshots_kept, 2,
          "Snapshots kept; log segments wholly covered by the oldest one kept are "
          "deleted (so history and verification reach back to it).");
ABSL_FLAG(bool, keep_log_segments, false,
          "Never delete log segments (the full history from the first event stays "
          "replayable, at the cost of disk space).");
ABSL_FLAG(bool, enable_debug_commands, false,
          "Accept DEBUG LOGFAULT (makes log writes fail, to test disk-full handling). "
          "Tests only.");
ABSL_FLAG(std::string, ready_file, "",
          "Once listening, write the bound port to this file (atomically), for scripts "
          "and tests that start the shard with --port=0.");

int main(int argc, char** argv) {
  wallet::SetUpFlagsUsage(
      "shard/main.cc",
      "in-memory balance shard speaking RESP2 (usable with redis-cli).\n"
      "Usage: wallet-shard [--port=7001] [--partitions=all] [--password_file=F] ...\n"
      "Commands are listed in docs/shard-protocol.md. Stops cleanly on SIGTERM/SIGINT.\n"
      "Durability: every change is in the event log (--data_dir) before its reply\n"
      "leaves; see --fsync for what each policy risks.");
  absl::ParseCommandLine(argc, argv);
  wallet::SetLogProgramName("wallet-shard");

  wallet::shard::ServerOptions options;
  options.bind_address = absl::GetFlag(FLAGS_bind);
  int32_t port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535) {
    wallet::LogError("--port must be 0-65535");
    return 2;
  }
  options.port = static_cast<uint16_t>(port);
  options.password = absl::GetFlag(FLAGS_password);
  if (std::string file = absl::GetFlag(FLAGS_password_file); !file.empty()) {
    absl::StatusOr<std::string> password = wallet::ReadPasswordFile(file);
    if (!password.ok()) {
      wallet::LogError("cannot read a password (a non-empty first line) from --password_file=%s",
                       file.c_str());
      return 2;
    }
    options.password = *std::move(password);
  }
  options.limits.max_args = absl::GetFlag(FLAGS_max_args);
  options.limits.max_arg_bytes = absl::GetFlag(FLAGS_max_arg_bytes);
  options.limits.max_inline_bytes = absl::GetFlag(FLAGS_max_inline_bytes);
  options.max_query_bytes = absl::GetFlag(FLAGS_max_query_bytes);
  options.max_output_bytes = absl::GetFlag(FLAGS_max_output_bytes);
  options.max_clients = absl::GetFlag(FLAGS_max_clients);
  options.collect_batch = absl::GetFlag(FLAGS_collect_batch);
  options.enable_debug_commands = absl::GetFlag(FLAGS_enable_debug_commands);
  if (options.limits.max_args < 1 || options.limits.max_arg_bytes < 64 ||
      options.collect_batch < 1) {
    wallet::LogError("--max_args must be >= 1, --max_arg_bytes >= 64, --collect_batch >= 1");
    return 2;
  }

  // Stop signals are blocked before any thread starts (the ZooKeeper client's
  // threads inherit the mask), and read by the event loop from a signalfd.
  if (absl::Status status = wallet::BlockStopSignals(); !status.ok()) {
    wallet::LogError("cannot block signals: %s", std::string(status.message()).c_str());
    return 1;
  }

  wallet::shard::EngineOptions engine_options;
  const uint32_t partition_count_flag = absl::GetFlag(FLAGS_partition_count);
  if (partition_count_flag > wallet::kMaxPartitionCount) {
    wallet::LogError("--partition_count must be 1-%u", wallet::kMaxPartitionCount);
    return 2;
  }
  // Cluster membership: the partition count and the owned partitions come from
  // ZooKeeper's map.
  std::unique_ptr<wallet::shard::ShardMembership> membership;
  if (const std::string zk = absl::GetFlag(FLAGS_zk); !zk.empty()) {
    if (absl::GetFlag(FLAGS_partitions) != "all") {
      wallet::LogError("--partitions cannot be given with --zk: the cluster's partition map decides");
      return 2;
    }
    wallet::shard::MembershipOptions membership_options;
    membership_options.zk = zk;
    membership_options.cluster = absl::GetFlag(FLAGS_cluster);
    membership_options.shard_id = absl::GetFlag(FLAGS_shard_id);
    membership_options.partition_count = partition_count_flag;
    membership_options.session_timeout_ms = absl::GetFlag(FLAGS_zk_session_timeout_ms);
    auto joined = wallet::shard::ShardMembership::Join(membership_options);
    if (!joined.ok()) {
      wallet::LogError("cannot join cluster '%s' through ZooKeeper %s: %s", membership_options.cluster.c_str(),
                       zk.c_str(), std::string(joined.status().message()).c_str());
      return 1;
    }
    membership = std::move(*joined);
    engine_options.partition_count = membership->partition_count();
  } else {
    if (!absl::GetFlag(FLAGS_cluster).empty() || !absl::GetFlag(FLAGS_shard_id).empty()) {
      wallet::LogError("--cluster and --shard_id need --zk");
      return 2;
    }
    engine_options.partition_count = partition_count_flag == 0 ? wallet::kDefaultPartitionCount : partition_count_flag;
  }
  engine_options.idempotency_window_ms = absl::GetFlag(FLAGS_idempotency_window_ms);
  if (engine_options.idempotency_window_ms < 0) {
    wallet::LogError("--idempotency_window_ms must be >= 0");
    return 2;
  }
  engine_options.max_accounts = absl::GetFlag(FLAGS_max_accounts);
  engine_options.max_txn_records = absl::GetFlag(FLAGS_max_txn_records);
  wallet::PartitionSet owned(engine_options.partition_count);
  std::string error;
  if (membership) {
    owned = membership->owned();
  } else if (!owned.ParseRanges(absl::GetFlag(FLAGS_partitions), &error)) {
    wallet::LogError("--partitions: %s", error.c_str());
    return 2;
  }

  // Durable state: recovery from the data folder, or an explicit in-memory shard.
  std::unique_ptr<wallet::shard::ShardStorage> storage;
  std::unique_ptr<wallet::shard::Engine> memory_engine;
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty() == !absl::GetFlag(FLAGS_in_memory)) {
    wallet::LogError("give exactly one of --data_dir=FOLDER (durable) and --in_memory");
    return 2;
  }
  if (!data_dir.empty()) {
    wallet::shard::StorageOptions storage_options;
    storage_options.data_dir = data_dir;
    if (!wallet::shard::ParseFsyncPolicy(absl::GetFlag(FLAGS_fsync), &storage_options.fsync)) {
      wallet::LogError("--fsync must be always, everysec or no");
      return 2;
    }
    const std::string damage = absl::GetFlag(FLAGS_log_damage);
    if (damage != "refuse" && damage != "keep_prefix") {
      wallet::LogError("--log_damage must be refuse or keep_prefix");
      return 2;
    }
    storage_options.damage = damage == "refuse" ? wallet::shard::DamagePolicy::kRefuse
                                                : wallet::shard::DamagePolicy::kKeepPrefix;
    storage_options.segment_bytes = absl::GetFlag(FLAGS_log_segment_bytes);
    storage_options.snapshot_log_bytes = absl::GetFlag(FLAGS_snapshot_log_bytes);
    storage_options.snapshot_interval_ms = absl::GetFlag(FLAGS_snapshot_interval_s) * 1000;
    storage_options.snapshots_kept = absl::GetFlag(FLAGS_snapshots_kept);
    storage_options.keep_log_segments = absl::GetFlag(FLAGS_keep_log_segments);
    if (storage_options.snapshot_interval_ms < 0 || storage_options.snapshots_kept < 1) {
      wallet::LogError("--snapshot_interval_s must be >= 0 and --snapshots_kept >= 1");
      return 2;
    }
    wallet::shard::RecoveryReport report;
    auto opened = wallet::shard::ShardStorage::Open(storage_options, engine_options, owned, &report);
    if (!opened.ok()) {
      wallet::LogError("cannot recover from %s: %s", data_dir.c_str(),
                       std::string(opened.status().message()).c_str());
      return 1;
    }
    storage = std::move(*opened);
    wallet::LogInfo("recovered from %s: %s", data_dir.c_str(), report.Describe().c_str());
  } else {
    memory_engine = std::make_unique<wallet::shard::Engine>(engine_options, owned);
    wallet::LogWarning("--in_memory: nothing this shard holds survives a stop or crash");
  }
  wallet::shard::Engine& engine = storage ? storage->engine() : *memory_engine;
  wallet::shard::ShardServer server(options, &engine, storage.get());
  if (absl::Status status = server.Listen(); !status.ok()) {
    wallet::LogError("cannot listen: %s", std::string(status.message()).c_str());
    return 1;
  }
  wallet::LogInfo("listening on %s:%u; %zu of %u partitions owned (%s)%s",
                  options.bind_address.c_str(), server.port(), owned.size(),
                  engine_options.partition_count, owned.ToString().c_str(),
                  options.password.empty() ? "; no password set" : "");
  if (absl::Status status = server.HandleStopSignals(); !status.ok()) {
    wallet::LogError("cannot handle signals: %s", std::string(status.message()).c_str());
    return 1;
  }
  if (membership) {
    membership->Attach(&server);
    std::string address = absl::GetFlag(FLAGS_advertise_address);
    if (address.empty()) address = options.bind_address + ":" + std::to_string(server.port());
    int64_t wait_ms = absl::GetFlag(FLAGS_shard_id_wait_ms);
    if (wait_ms < 0) wait_ms = absl::GetFlag(FLAGS_zk_session_timeout_ms) + 5'000;
    if (absl::Status status = membership->Register(address, wait_ms); !status.ok()) {
      // Unavailable is retried by the node itself; another live owner is fatal.
      if (absl::IsAlreadyExists(status)) {
        wallet::LogError("shard id %s is taken by another live shard: %s", absl::GetFlag(FLAGS_shard_id).c_str(),
                         std::string(status.message()).c_str());
        return 1;
      }
      wallet::LogWarning("registration in ZooKeeper pending: %s", std::string(status.message()).c_str());
    }
    wallet::LogInfo("joined cluster %s as %s at %s (map version %d)", absl::GetFlag(FLAGS_cluster).c_str(),
                    absl::GetFlag(FLAGS_shard_id).c_str(), address.c_str(), static_cast<int>(membership->map_version()));
  }
  if (std::string ready = absl::GetFlag(FLAGS_ready_file); !ready.empty()) {
    if (!wallet::WriteFileAtomically(ready, std::to_string(server.port()) + "\n")) {
      wallet::LogError("cannot write --ready_file=%s", ready.c_str());
      return 1;
    }
  }
  absl::Status run_status = server.Run();
  if (!run_status.ok()) {
    wallet::LogError("event loop failed: %s", std::string(run_status.message()).c_str());
  }
  if (membership) membership->Attach(nullptr);  // no more posts to the server
  membership.reset();                          // leaves the cluster: the node goes at once
  if (storage) {
    if (absl::Status status = storage->Close(); !status.ok()) {
      wallet::LogError("event log not fully saved at stop: %s", std::string(status.message()).c_str());
      return 1;
    }
  }
  return run_status.ok() ? 0 : 1;
}
