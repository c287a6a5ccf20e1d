// wallet-router: the public API of a wallet cluster over RESP2 (usable with
// redis-cli): checks each call, routes it to the shard that owns its account by the
// partition map it follows in ZooKeeper, and answers in order.
//
//   wallet-router --zk=127.0.0.1:2181 --cluster=prod --router_id=router-0 --port=7100
//   redis-cli -p 7100 TRANSFER 42 43 250 USD tx-1
//
// docs/api.md lists the commands, replies, errors and limits; --help every flag.
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/event_loop.h"
#include "common/flags_usage.h"
#include "common/log.h"
#include "common/process_files.h"
#include "common/stop_signals.h"
#include "common/strings.h"
#include "router/cluster_view.h"
#include "router/http_server.h"
#include "router/resp_server.h"
#include "router/router_core.h"
#include "shardlink/shard_pool.h"

ABSL_FLAG(std::string, bind, "127.0.0.1",
          "Address to listen on. Loopback by default; set a routable address only behind a "
          "firewall and with --password.");
ABSL_FLAG(int32_t, port, 7100, "TCP port for RESP clients (0 picks a free one; see --ready_file).");
ABSL_FLAG(std::string, ready_file, "",
          "Once listening and registered, write the bound port to this file (atomically), for "
          "scripts and tests that start the router with --port=0.");
ABSL_FLAG(std::string, zk, "", "ZooKeeper connect string (host:port[,host:port...]). Required.");
ABSL_FLAG(std::string, cluster, "", "Cluster name under /wallet in ZooKeeper. Required.");
ABSL_FLAG(std::string, router_id, "",
          "This router's id (1-64 of [A-Za-z0-9_-]), announced as /wallet/<cluster>/routers/<id>. "
          "Required; unique per live router.");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port announced in ZooKeeper for clients and tools (default: --bind and the bound port).");
ABSL_FLAG(std::string, password, "",
          "Password clients must send with AUTH before any other command. Prefer --password_file: "
          "flags are visible in the process list.");
ABSL_FLAG(std::string, password_file, "", "File whose first line is the client AUTH password (overrides --password).");
ABSL_FLAG(std::string, shard_password, "", "Password the router sends with AUTH to every shard (prefer --shard_password_file).");
ABSL_FLAG(std::string, shard_password_file, "",
          "File whose first line is the shards' AUTH password (overrides --shard_password).");
ABSL_FLAG(uint32_t, connections_per_shard, 2, "Pipelined connections to each shard (1-64).");
ABSL_FLAG(uint64_t, max_in_flight_per_shard, 20'000,
          "Commands sent to one shard and not yet answered, over all its connections (split evenly "
          "between them); past it calls for that shard get -BUSY.");
ABSL_FLAG(uint64_t, max_in_flight, 100'000,
          "Calls being answered at once over all clients; past it calls get -BUSY at once.");
ABSL_FLAG(uint64_t, max_pending_per_client, 1'024,
          "Calls awaiting their answer on one client connection; at it the router stops reading that "
          "connection until some are answered (a pipelining client is slowed, not refused).");
ABSL_FLAG(uint64_t, max_queued_replies_per_client, 16'384,
          "Replies owed to one client connection (answered or not, kept in command order); at it "
          "the router stops reading that connection until the client reads its replies.");
ABSL_FLAG(uint64_t, max_clients, 10'000, "Simultaneous client connections; past it: -BUSY and closed.");
ABSL_FLAG(uint64_t, max_query_bytes, 4u << 20,
          "Bytes of one unfinished request buffered per connection; past it: -LIMIT and closed "
          "(the default fits a TRANSFER.BATCH of 10000 transfers).");
ABSL_FLAG(uint64_t, max_output_bytes, 64u << 20,
          "Unsent reply bytes per connection before the router stops reading from it.");
ABSL_FLAG(int64_t, command_timeout_ms, 5'000,
          "A shard command unanswered this long resets its link; the call gets -UNAVAILABLE "
          "(outcome unknown: retry with the same txid).");
ABSL_FLAG(int64_t, connect_timeout_ms, 2'000, "TCP connect plus AUTH to a shard.");
ABSL_FLAG(int32_t, max_moved_retries, 3,
          "Times a call is sent again after a -MOVED reply (stale map); then the client gets MOVED.");
ABSL_FLAG(int64_t, moved_retry_wait_ms, 20,
          "Wait before the first retry after -MOVED (doubled each time; cut short by a newer map).");
ABSL_FLAG(int32_t, zk_session_timeout_ms, 10'000, "ZooKeeper session timeout.");
ABSL_FLAG(int64_t, router_id_wait_ms, -1,
          "At start, how long to wait for --router_id to be released by an older session (a router "
          "killed without a clean stop) before giving up. -1: the session timeout plus 5 s.");
ABSL_FLAG(int32_t, http_port, -1,
          "TCP port of the HTTP/JSON API (docs/api.md, section HTTP); -1: no HTTP, 0: any free "
          "port (see --http_ready_file). Clients send the --password as 'Authorization: Bearer'.");
ABSL_FLAG(std::string, http_bind, "", "Address of the HTTP API (default: --bind).");
ABSL_FLAG(std::string, http_ready_file, "",
          "Once the HTTP API listens, write its bound port to this file (atomically).");
ABSL_FLAG(uint32_t, http_worker_threads, 8,
          "HTTP worker threads; each serves one connection at a time.");
ABSL_FLAG(int64_t, drain_timeout_ms, 5'000,
          "On SIGTERM/SIGINT, how long to wait for the calls in flight to be answered.");
ABSL_FLAG(std::string, default_transfer_mode, "tcc",
          "Mode of a cross-shard TRANSFER without MODE: tcc (funds held until confirm) or saga (debited at "
          "once, refunded on failure). Give every router of a cluster the same value.");
ABSL_FLAG(int64_t, tx_answer_within_ms, 2'000,
          "A cross-shard transfer's client waits at most this long; then -UNAVAILABLE (outcome not known yet) "
          "while the transfer goes on.");
ABSL_FLAG(int32_t, tx_first_phase_attempts, 3,
          "Sends of a try / forward step without an answer before TC/C cancels (1-100).");
ABSL_FLAG(int64_t, tx_lease_ms, 10'000, "A router's claim on a transaction it drives (1-600000).");
ABSL_FLAG(bool, resolver, true, "Run the resolver, which finishes transactions other routers left in doubt.");
ABSL_FLAG(int64_t, resolver_interval_ms, 1'000, "How often the resolver scans every shard's phase rows.");
ABSL_FLAG(int64_t, resolver_min_age_ms, 5'000,
          "A row not updated for this long is in doubt and is taken over by a resolver.");
ABSL_FLAG(uint64_t, resolver_max_per_scan, 100,
          "Rows the resolver takes per shard per scan (1-10000): with --resolver_interval_ms, how fast "
          "a dead router's backlog is cleared.");

namespace {

// The password from --<name>_file (preferred) or --<name>; "" when neither is set.
// False after logging when the file is unusable.
bool LoadPassword(const std::string& flag_name, const std::string& value, const std::string& file,
                  std::string* password) {
  *password = value;
  if (file.empty()) return true;
  absl::StatusOr<std::string> read = wallet::ReadPasswordFile(file);
  if (!read.ok()) {
    wallet::LogError("cannot read a password (a non-empty first line) from --%s_file=%s", flag_name.c_str(),
                     file.c_str());
    return false;
  }
  *password = *std::move(read);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  wallet::SetUpFlagsUsage(
      "router/main.cc",
      "the public API of a wallet cluster over RESP2 (usable with redis-cli).\n"
      "Usage: wallet-router --zk=HOST:PORT --cluster=NAME --router_id=ID [--port=7100] ...\n"
      "Commands, replies and limits: docs/api.md. Stops cleanly on SIGTERM/SIGINT.");
  absl::ParseCommandLine(argc, argv);
  wallet::SetLogProgramName("wallet-router");

  const std::string zk = absl::GetFlag(FLAGS_zk);
  const std::string cluster = absl::GetFlag(FLAGS_cluster);
  const std::string router_id = absl::GetFlag(FLAGS_router_id);
  if (zk.empty() || cluster.empty() || router_id.empty()) {
    wallet::LogError("--zk, --cluster and --router_id are required");
    return 2;
  }
  const int32_t port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535) {
    wallet::LogError("--port must be 0-65535");
    return 2;
  }

  wallet::router::RespServerOptions server_options;
  server_options.bind_address = absl::GetFlag(FLAGS_bind);
  server_options.port = static_cast<uint16_t>(port);
  if (!LoadPassword("password", absl::GetFlag(FLAGS_password), absl::GetFlag(FLAGS_password_file),
                    &server_options.password)) {
    return 2;
  }
  server_options.max_clients = absl::GetFlag(FLAGS_max_clients);
  server_options.max_query_bytes = absl::GetFlag(FLAGS_max_query_bytes);
  server_options.max_output_bytes = absl::GetFlag(FLAGS_max_output_bytes);
  server_options.max_pending_per_client = absl::GetFlag(FLAGS_max_pending_per_client);
  server_options.max_queued_replies_per_client = absl::GetFlag(FLAGS_max_queued_replies_per_client);
  if (server_options.max_pending_per_client < 1 ||
      server_options.max_queued_replies_per_client < server_options.max_pending_per_client ||
      server_options.max_clients < 1) {
    wallet::LogError("--max_pending_per_client and --max_clients must be >= 1, and "
                     "--max_queued_replies_per_client >= --max_pending_per_client");
    return 2;
  }

  wallet::shardlink::ShardPoolOptions pool_options;
  pool_options.connections_per_shard = absl::GetFlag(FLAGS_connections_per_shard);
  if (!LoadPassword("shard_password", absl::GetFlag(FLAGS_shard_password), absl::GetFlag(FLAGS_shard_password_file),
                    &pool_options.connection.password)) {
    return 2;
  }
  const uint64_t per_shard = absl::GetFlag(FLAGS_max_in_flight_per_shard);
  if (pool_options.connections_per_shard < 1 || per_shard < pool_options.connections_per_shard) {
    wallet::LogError("--connections_per_shard must be >= 1 and --max_in_flight_per_shard at least as large");
    return 2;
  }
  pool_options.connection.max_in_flight = per_shard / pool_options.connections_per_shard;
  pool_options.connection.command_timeout_ms = absl::GetFlag(FLAGS_command_timeout_ms);
  pool_options.connection.connect_timeout_ms = absl::GetFlag(FLAGS_connect_timeout_ms);

  wallet::router::RouterCoreOptions core_options;
  core_options.router_id = router_id;
  core_options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  core_options.max_moved_retries = absl::GetFlag(FLAGS_max_moved_retries);
  core_options.moved_retry_wait_ms = absl::GetFlag(FLAGS_moved_retry_wait_ms);
  if (core_options.max_in_flight < 1 || core_options.max_moved_retries < 0 || core_options.max_moved_retries > 10 ||
      core_options.moved_retry_wait_ms < 1) {
    wallet::LogError("--max_in_flight must be >= 1, --max_moved_retries 0-10, --moved_retry_wait_ms >= 1");
    return 2;
  }
  if (!wallet::xshard::ParseTransferMode(absl::GetFlag(FLAGS_default_transfer_mode), &core_options.default_mode)) {
    wallet::LogError("--default_transfer_mode must be tcc or saga");
    return 2;
  }
  core_options.executor.answer_within_ms = absl::GetFlag(FLAGS_tx_answer_within_ms);
  core_options.executor.first_phase_attempts = absl::GetFlag(FLAGS_tx_first_phase_attempts);
  core_options.executor.lease_ms = absl::GetFlag(FLAGS_tx_lease_ms);
  core_options.run_resolver = absl::GetFlag(FLAGS_resolver);
  core_options.resolver.interval_ms = absl::GetFlag(FLAGS_resolver_interval_ms);
  core_options.resolver.min_age_ms = absl::GetFlag(FLAGS_resolver_min_age_ms);
  core_options.resolver.max_per_scan = absl::GetFlag(FLAGS_resolver_max_per_scan);
  if (core_options.executor.answer_within_ms < 1 || core_options.executor.first_phase_attempts < 1 ||
      core_options.executor.first_phase_attempts > 100 || core_options.executor.lease_ms < 1 ||
      core_options.executor.lease_ms > 600'000 || core_options.resolver.interval_ms < 1 ||
      core_options.resolver.min_age_ms < 0 || core_options.resolver.max_per_scan < 1 ||
      core_options.resolver.max_per_scan > 10'000) {
    wallet::LogError(
        "--tx_answer_within_ms >= 1, --tx_first_phase_attempts 1-100, --tx_lease_ms 1-600000, "
        "--resolver_interval_ms >= 1, --resolver_min_age_ms >= 0 and --resolver_max_per_scan 1-10000 are required");
    return 2;
  }

  // Stop signals are blocked before any thread starts (the ZooKeeper client's
  // threads inherit the mask) and read by the event loop from a signalfd.
  if (absl::Status status = wallet::BlockStopSignals(); !status.ok()) {
    wallet::LogError("cannot block signals: %s", std::string(status.message()).c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<wallet::EventLoop>> loop = wallet::EventLoop::Create();
  if (!loop.ok()) {
    wallet::LogError("cannot create the event loop: %s", std::string(loop.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<wallet::shardlink::ShardPool>> pool =
      wallet::shardlink::ShardPool::Create(**loop, pool_options);
  if (!pool.ok()) {
    wallet::LogError("bad shard connection settings: %s", std::string(pool.status().message()).c_str());
    return 2;
  }
  auto core = std::make_unique<wallet::router::RouterCore>(**loop, **pool, core_options);

  wallet::router::ClusterViewOptions view_options;
  view_options.zk = zk;
  view_options.cluster = cluster;
  view_options.router_id = router_id;
  view_options.session_timeout_ms = absl::GetFlag(FLAGS_zk_session_timeout_ms);
  wallet::router::ClusterViewHandlers handlers;
  wallet::router::RouterCore* router = core.get();
  handlers.on_map = [router](std::shared_ptr<const wallet::cluster::VersionedPartitionMap> map) {
    router->SetPartitionMap(std::move(map));
  };
  handlers.on_live_shards = [router](const std::map<std::string, std::string>& live) { router->SetLiveShards(live); };
  absl::StatusOr<std::unique_ptr<wallet::router::ClusterView>> view =
      wallet::router::ClusterView::Start(view_options, **loop, std::move(handlers));
  if (!view.ok()) {
    wallet::LogError("cannot follow cluster '%s' through ZooKeeper %s: %s", cluster.c_str(), zk.c_str(),
                     std::string(view.status().message()).c_str());
    return 1;
  }
  wallet::router::ClusterView* cluster_view = view->get();
  core->SetMapRefresher([cluster_view] { cluster_view->RequestMapRefresh(); });
  cluster_view->DeliverNow();

  server_options.info = [router, cluster_view](std::string_view section, std::string* out) {
    router->AppendInfo(section, out);
    cluster_view->AppendInfo(section, out);
  };
  auto server = std::make_unique<wallet::router::RespServer>(**loop, *core, server_options);
  if (absl::Status status = server->Listen(); !status.ok()) {
    wallet::LogError("cannot listen: %s", std::string(status.message()).c_str());
    return 1;
  }

  std::unique_ptr<wallet::router::HttpServer> http;
  if (const int32_t http_port = absl::GetFlag(FLAGS_http_port); http_port >= 0) {
    if (http_port > 65535 || absl::GetFlag(FLAGS_http_worker_threads) < 1) {
      wallet::LogError("--http_port must be -1 to 65535 and --http_worker_threads >= 1");
      return 2;
    }
    wallet::router::HttpServerOptions http_options;
    http_options.bind_address = absl::GetFlag(FLAGS_http_bind).empty() ? server_options.bind_address
                                                                        : absl::GetFlag(FLAGS_http_bind);
    http_options.port = http_port;
    http_options.password = server_options.password;
    http_options.worker_threads = absl::GetFlag(FLAGS_http_worker_threads);
    absl::StatusOr<std::unique_ptr<wallet::router::HttpServer>> started =
        wallet::router::HttpServer::Start(loop->get(), core.get(), http_options);
    if (!started.ok()) {
      wallet::LogError("cannot start the HTTP API: %s", std::string(started.status().message()).c_str());
      return 1;
    }
    http = *std::move(started);
    wallet::LogInfo("HTTP API on %s:%d", http_options.bind_address.c_str(), http->port());
    if (std::string ready = absl::GetFlag(FLAGS_http_ready_file); !ready.empty()) {
      if (!wallet::WriteFileAtomically(ready, wallet::StrCat(http->port(), "\n"))) {
        wallet::LogError("cannot write --http_ready_file=%s", ready.c_str());
        return 1;
      }
    }
  }

  absl::StatusOr<int> signal_fd = wallet::OpenStopSignalFd();
  if (!signal_fd.ok()) {
    wallet::LogError("cannot handle signals: %s", std::string(signal_fd.status().message()).c_str());
    return 1;
  }
  wallet::EventLoop* event_loop = loop->get();
  const int stop_fd = *signal_fd;
  absl::StatusOr<wallet::EventLoop::WatchId> signal_watch =
      event_loop->WatchFd(stop_fd, wallet::FdInterest::kRead, [event_loop, stop_fd](wallet::FdReadiness) {
        if (int signal_number = wallet::ReadStopSignal(stop_fd); signal_number != 0) {
          wallet::LogInfo("received %s, stopping", strsignal(signal_number));
        }
        event_loop->Stop();
      });
  if (!signal_watch.ok()) {
    wallet::LogError("cannot watch the signal fd: %s", std::string(signal_watch.status().message()).c_str());
    return 1;
  }

  std::string address = absl::GetFlag(FLAGS_advertise_address);
  if (address.empty()) address = wallet::StrCat(server_options.bind_address, ":", server->port());
  int64_t wait_ms = absl::GetFlag(FLAGS_router_id_wait_ms);
  if (wait_ms < 0) wait_ms = view_options.session_timeout_ms + 5'000;
  if (absl::Status status = cluster_view->Register(address, wait_ms); !status.ok()) {
    if (absl::IsAlreadyExists(status)) {
      wallet::LogError("router id %s is taken by another live router: %s", router_id.c_str(),
                       std::string(status.message()).c_str());
      return 1;
    }
    wallet::LogWarning("registration in ZooKeeper pending: %s", std::string(status.message()).c_str());
  }
  if (std::string ready = absl::GetFlag(FLAGS_ready_file); !ready.empty()) {
    if (!wallet::WriteFileAtomically(ready, wallet::StrCat(server->port(), "\n"))) {
      wallet::LogError("cannot write --ready_file=%s", ready.c_str());
      return 1;
    }
  }
  wallet::LogInfo("router %s of cluster %s listening on %s:%u (announced as %s); map version %d, %zu live shards%s",
                  router_id.c_str(), cluster.c_str(), server_options.bind_address.c_str(), server->port(),
                  address.c_str(), core->stats().map_version_now, core->pooled_shards().size(),
                  server_options.password.empty() ? "; no client password set" : "");

  absl::Status run_status = event_loop->Run();
  if (!run_status.ok()) wallet::LogError("event loop failed: %s", std::string(run_status.message()).c_str());

  // Clean stop: no new calls; the ones in flight are answered (within the drain
  // timeout; the shard links' own timeouts bound them anyway), then everything goes.
  // The HTTP server stops on a thread of its own: its requests in progress need the
  // loop running to be answered.
  server->BeginDrain();
  std::atomic<bool> http_stopped{http == nullptr};
  std::thread http_stopper;
  if (http != nullptr) {
    http_stopper = std::thread([&] {
      http->Stop();
      http_stopped = true;
    });
  }
  absl::Status drained = event_loop->RunUntil(
      [&] { return server->Drained() && core->in_flight() == 0 && http_stopped.load(); },
      absl::GetFlag(FLAGS_drain_timeout_ms));
  if (http_stopper.joinable()) http_stopper.join();
  http.reset();
  if (!drained.ok()) {
    wallet::LogWarning("stopping with %zu calls unanswered (drain timeout)", core->in_flight());
  }
  view->reset();  // leaves the cluster: /routers/<id> goes at once
  pool->reset();  // fails what is still in flight (callbacks reach the core and the server)
  core.reset();
  server.reset();
  event_loop->UnwatchFd(*signal_watch);
  close(stop_fd);
  wallet::LogInfo("stopped");
  return run_status.ok() ? 0 : 1;
}
