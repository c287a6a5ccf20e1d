// process.h — a small harness for integration tests that run the real binaries
// (wallet-shard today; routers and ZooKeeper later) as child processes.
//
//   TempDir       a private temporary directory (mkdtemp), removed recursively when
//                 it goes out of scope.
//   ChildProcess  one child started with fork + execv (no shell, no PATH search),
//                 stdout and stderr appended to a log file; stopped by its own pid
//                 (SIGTERM, then SIGKILL after a grace period) and always reaped with
//                 waitpid. Its destructor stops it, so a test that fails or throws
//                 never leaves a process behind; when the current GoogleTest test has
//                 failed, the destructor also prints the child's log.
//   ServerProcess a ChildProcess that was started with --port=0 --ready_file=F and
//                 has written its bound port to F.
//
// Nothing here ever signals a process by name or by process group: only the pid this
// harness forked, and only while it has not been reaped (so the pid cannot have been
// reused by another process).
//
// Example:
//   auto dir = TempDir::Create("shard");
//   ASSERT_TRUE(dir.ok()) << dir.status();
//   auto shard = ServerProcess::Start(*dir, "shard", WalletShardBinary(), {"--partitions=all"});
//   ASSERT_TRUE(shard.ok()) << shard.status();
//   ... connect to (*shard)->port() ...
//   ExitStatus status = (*shard)->Stop();
//   EXPECT_TRUE(status.success()) << status.ToString();
//
// Not thread-safe: use each object from one thread. Start children from the thread
// that will outlive them (the child asks to be killed when that thread exits, see
// PR_SET_PDEATHSIG, so a crashed test binary leaves nothing running).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace wallet::test {

// How long the harness waits by default: for a ready file, and for a process to exit
// after SIGTERM before it is killed. Generous: these bound a failure, not a success.
inline constexpr std::chrono::milliseconds kDefaultReadyTimeout{20'000};
inline constexpr std::chrono::milliseconds kDefaultStopGrace{10'000};

// The wallet-shard binary built by this CMake tree (a compile definition set by
// tests/CMakeLists.txt), e.g. "/work/main/build/src/shard/wallet-shard".
std::string WalletShardBinary();

// The wallet-history binary built by this CMake tree (compile definition
// WALLET_HISTORY_BINARY), e.g. "/work/main/build/src/shard/wallet-history".
std::string WalletHistoryBinary();

// The wallet-router binary built by this CMake tree (compile definition
// WALLET_ROUTER_BINARY), e.g. "/work/main/build/src/router/wallet-router"; "" when
// the tree does not build it.
std::string WalletRouterBinary();

// The first executable named `name` in $PATH, or "" when there is none.
std::string FindInPath(const std::string& name);

// ---------------------------------------------------------------------------

class TempDir {
 public:
  // Creates "<$TMPDIR or /tmp>/wallet-<prefix>-XXXXXX" with mode 0700. When the
  // environment variable WALLET_TEST_KEEP_TMP is set to 1, the directory is kept on
  // destruction (its path is printed) for post-mortem inspection.
  static absl::StatusOr<TempDir> Create(const std::string& prefix);

  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();  // removes the directory and everything below it

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(const std::string& name) const;
  // Writes `content` to File(name) with the given mode (e.g. 0600 for secrets).
  absl::Status WriteFile(const std::string& name, const std::string& content,
                         mode_t mode = 0644) const;

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;  // empty when moved from
};

// Removes `path` and, when it is a directory, everything below it (never following
// symbolic links). A missing path is not an error.
absl::Status RemoveRecursively(const std::string& path);

// Reads a whole file; NotFound when it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// ---------------------------------------------------------------------------

// How a child ended, from waitpid's status.
struct ExitStatus {
  bool exited = false;    // ended through exit(); `code` is valid
  int code = 0;
  bool signaled = false;  // killed by a signal; `signal` is valid
  int signal = 0;

  static ExitStatus FromWaitStatus(int wait_status);
  bool success() const { return exited && code == 0; }
  // "exit status 0", "exit status 3", "killed by signal 9 (Killed)".
  std::string ToString() const;
};

class ChildProcess {
 public:
  // Starts argv[0] (a path; execv does not search $PATH) with the given arguments.
  // stdin is /dev/null; stdout and stderr are appended to `log_path` (created with
  // mode 0644). Every other descriptor of the test process is closed in the child.
  // Fails without side effects when the log cannot be opened or fork fails; a
  // binary that cannot be executed shows as exit status 127 with the reason in the
  // log.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                             const std::string& log_path);

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Stops the child (Stop(kDefaultStopGrace)) if it is still running, printing its
  // log first when the current test has failed.
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  const std::vector<std::string>& argv() const { return argv_; }

  // True while the child has not exited (reaps it if it has, without blocking).
  bool Running();
  // The exit status once the child has been reaped, else nullopt.
  const std::optional<ExitStatus>& exit_status() const { return exit_status_; }

  // Waits up to `timeout` for the child to exit on its own. DeadlineExceeded when
  // it is still running then (it is left running).
  absl::StatusOr<ExitStatus> Wait(std::chrono::milliseconds timeout);

  // Sends SIGTERM (after SIGCONT if Freeze() stopped it), waits up to `grace` for the
  // child to exit, then sends SIGKILL and waits for it. Always reaps. Idempotent: a child already reaped just returns its
  // status.
  ExitStatus Stop(std::chrono::milliseconds grace = kDefaultStopGrace);
  // Sends `signal` to the child (only while it has not been reaped).
  absl::Status Signal(int signal);
  // Freeze() stops the child with SIGSTOP and returns once it is stopped; Thaw()
  // resumes it with SIGCONT and returns once it runs again. While frozen, the kernel
  // still completes TCP handshakes and queues bytes for it, so a test can line up
  // events that the child will then see in one event-loop turn. Stop() thaws first.
  absl::Status Freeze();
  absl::Status Thaw();

  // Polls until `path` exists and holds a complete line (the writer renames it
  // into place, or writes a line ending in '\n'), then returns its content without
  // the trailing newline. Fails early if the child exits first, and with
  // DeadlineExceeded after `timeout`; either error carries the child's log.
  absl::StatusOr<std::string> WaitForReadyFile(const std::string& path,
                                               std::chrono::milliseconds timeout = kDefaultReadyTimeout);

  // The log written so far ("" when unreadable).
  std::string ReadLog() const;
  // Prints the log to stderr between banner lines naming the child.
  void DumpLog() const;

 private:
  ChildProcess(pid_t pid, std::vector<std::string> argv, std::string log_path)
      : pid_(pid), argv_(std::move(argv)), log_path_(std::move(log_path)) {}
  // waitpid(WNOHANG) once; true when the child has been reaped (now or before).
  bool TryReap();
  // Waits (blocking) for a stop (WUNTRACED) or continue (WCONTINUED) report.
  absl::Status WaitForJobControl(int option);

  pid_t pid_;
  std::vector<std::string> argv_;
  std::string log_path_;
  std::optional<ExitStatus> exit_status_;
  bool frozen_ = false;  // stopped by Freeze() and not yet thawed
};

// ---------------------------------------------------------------------------

// A server binary started on a free port: it is given --port=0 and
// --ready_file=<dir>/<name>.port (so it must understand both flags, as wallet-shard
// does), and Start returns once the port is in that file. Its log is
// <dir>/<name>.log.
class ServerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const TempDir& dir, const std::string& name, const std::string& binary,
      const std::vector<std::string>& flags,
      std::chrono::milliseconds ready_timeout = kDefaultReadyTimeout);

  uint16_t port() const { return port_; }
  ChildProcess& process() { return *process_; }
  pid_t pid() const { return process_->pid(); }
  bool Running() { return process_->Running(); }
  ExitStatus Stop(std::chrono::milliseconds grace = kDefaultStopGrace) {
    return process_->Stop(grace);
  }
  std::string ReadLog() const { return process_->ReadLog(); }

 private:
  ServerProcess(std::unique_ptr<ChildProcess> process, uint16_t port)
      : process_(std::move(process)), port_(port) {}
  std::unique_ptr<ChildProcess> process_;
  uint16_t port_;
};

}  // namespace wallet::test
