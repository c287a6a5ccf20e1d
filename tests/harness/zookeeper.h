// zookeeper.h — a real, standalone ZooKeeper server (Debian's `zookeeper` package)
// for integration tests, run as a child process of the test.
//
// ZooKeeperServer::Start() picks a free loopback port, writes a private config
// (clientPortAddress=127.0.0.1, admin server off, four-letter words limited to
// ruok/srvr/stat, no fsync) and data directory into its own TempDir, starts
// `java ... org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg` directly (the
// classpath built the way Debian's zkEnv.sh does: config dir + zookeeper.jar, whose
// manifest names its dependencies, plus the slf4j → log4j 1.2 binding so the server
// log lands in <dir>/zookeeper.log), and returns once the server answers `srvr`
// with "Mode: standalone". A start takes about half a second (JVM flags kept lean:
// -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData).
//
// Restart() stops the server and starts it again on the same port and data
// directory, so sessions, znodes and ephemeral nodes survive (ZooKeeper persists
// sessions) and clients reconnect to the same address. Freeze()/Thaw() SIGSTOP and
// SIGCONT it (clients time out instead of seeing a refused connection).
//
// The server is stopped by its pid (SIGTERM, then SIGKILL) in the destructor, so a
// failing test never leaves it running; the child also dies with the test process
// (PR_SET_PDEATHSIG, see process.h). Nothing here touches a system-wide ZooKeeper.
//
// Example:
//   auto zookeeper = ZooKeeperServer::Start();
//   ASSERT_TRUE(zookeeper.ok()) << zookeeper.status();
//   ... connect clients to (*zookeeper)->connect_string() ...
//   ASSERT_TRUE((*zookeeper)->Restart().ok());
//
// Not thread-safe: use one object from one thread (the test's main thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "harness/process.h"

namespace wallet::test {

struct ZooKeeperOptions {
  // The server's tick. Sessions may last between 2 and 20 ticks, so a 1 s tick
  // allows session timeouts of 2-20 s.
  int tick_time_ms = 1000;
  // How long one start may take before it is reported as failed (bounds a failure).
  std::chrono::milliseconds start_timeout{30'000};
};

class ZooKeeperServer {
 public:
  // Starts a server on a free loopback port in a new temporary directory. Retries
  // with another port (up to 3 times) when the chosen one was taken meanwhile.
  static absl::StatusOr<std::unique_ptr<ZooKeeperServer>> Start(const ZooKeeperOptions& options = {});

  ZooKeeperServer(const ZooKeeperServer&) = delete;
  ZooKeeperServer& operator=(const ZooKeeperServer&) = delete;
  // Stops the server if it runs (printing its log first when the test has failed)
  // and removes its directory.
  ~ZooKeeperServer();

  // "127.0.0.1:<port>", for zookeeper_init and the --zk flags.
  std::string connect_string() const;
  uint16_t port() const { return port_; }
  const std::string& directory() const { return dir_.path(); }
  // How long the last (re)start took, from fork to the first "Mode: standalone".
  std::chrono::milliseconds last_start_duration() const { return last_start_duration_; }

  bool Running() const { return process_ != nullptr && process_->Running(); }
  // Stops the server (SIGTERM, then SIGKILL after `grace`). Idempotent.
  ExitStatus Stop(std::chrono::milliseconds grace = kDefaultStopGrace);
  // Stops the server if it runs, then starts it again on the same port and data
  // directory and waits until it answers.
  absl::Status Restart();
  // SIGSTOP / SIGCONT the server process (see ChildProcess::Freeze).
  absl::Status Freeze();
  absl::Status Thaw();

  // Sends a four-letter word (one of ruok, srvr, stat) and returns the whole reply.
  absl::StatusOr<std::string> FourLetterWord(const std::string& word,
                                             std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) const;

  // The server's log so far.
  std::string ReadLog() const;

 private:
  ZooKeeperServer(TempDir dir, ZooKeeperOptions options) : dir_(std::move(dir)), options_(options) {}
  // Writes zoo.cfg and log4j.properties for port_, then launches and waits.
  absl::Status WriteConfig();
  absl::Status Launch();

  TempDir dir_;
  ZooKeeperOptions options_;
  uint16_t port_ = 0;
  std::unique_ptr<ChildProcess> process_;
  std::chrono::milliseconds last_start_duration_{0};
};

// Expires the session `session_id` on the server at `connect_string` with the
// classic trick: a second client joins the same session (id and password, as
// returned by zoo_client_id) and closes it, which ends the session for everyone.
// Repeated until a join is answered "session expired" (the original client can win
// the session back before the close lands), so on return the session is gone on
// the server: its ephemeral nodes are deleted and its watches will never fire. The
// original client learns it on its next contact (ZOO_EXPIRED_SESSION_STATE).
absl::Status ExpireSession(const std::string& connect_string, int64_t session_id,
                           const std::string& password,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000));

}  // namespace wallet::test
