#include "harness/process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace wallet::test {

namespace {

constexpr std::chrono::milliseconds kPollInterval{5};

std::string ErrnoText() { return std::strerror(errno); }

// Parses a decimal port 1..65535; the whole string must be digits.
bool ParsePort(const std::string& text, uint16_t* out) {
  if (text.empty() || text.size() > 5) return false;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return false;
  *out = static_cast<uint16_t>(value);
  return true;
}

std::string DescribeArgv(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& arg : argv) absl::StrAppend(&out, out.empty() ? "" : " ", arg);
  return out;
}

}  // namespace

std::string WalletShardBinary() {
#ifdef WALLET_SHARD_BINARY
  return WALLET_SHARD_BINARY;
#else
  return "";
#endif
}

#ifndef WALLET_HISTORY_BINARY
#define WALLET_HISTORY_BINARY ""
#endif
std::string WalletHistoryBinary() { return WALLET_HISTORY_BINARY; }

#ifndef WALLET_ROUTER_BINARY
#define WALLET_ROUTER_BINARY ""
#endif
std::string WalletRouterBinary() { return WALLET_ROUTER_BINARY; }

std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string directories = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream stream(directories);
  std::string directory;
  while (std::getline(stream, directory, ':')) {
    if (directory.empty()) continue;
    std::string candidate = absl::StrCat(directory, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// ---------------------------------------------------------------------------
// Files and directories.

absl::StatusOr<TempDir> TempDir::Create(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && base[0] != '\0' ? base : "/tmp", "/wallet-", prefix, "-XXXXXX");
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", ErrnoText()));
  }
  return TempDir(std::string(buffer.data()));
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, std::string())) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    if (!path_.empty()) (void)RemoveRecursively(path_);
    path_ = std::exchange(other.path_, std::string());
  }
  return *this;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  const char* keep = std::getenv("WALLET_TEST_KEEP_TMP");
  if (keep != nullptr && std::string(keep) == "1") {
    std::fprintf(stderr, "[harness] keeping %s (WALLET_TEST_KEEP_TMP=1)\n", path_.c_str());
    return;
  }
  if (absl::Status status = RemoveRecursively(path_); !status.ok()) {
    std::fprintf(stderr, "[harness] %s\n", std::string(status.message()).c_str());
  }
}

std::string TempDir::File(const std::string& name) const { return absl::StrCat(path_, "/", name); }

absl::Status TempDir::WriteFile(const std::string& name, const std::string& content,
                                mode_t mode) const {
  std::string path = File(name);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", ErrnoText()));
  size_t written = 0;
  while (written < content.size()) {
    ssize_t n = write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string error = ErrnoText();
      close(fd);
      return absl::InternalError(absl::StrCat("write ", path, ": ", error));
    }
    written += static_cast<size_t>(n);
  }
  // open() applies the umask; make the mode exactly what was asked for.
  fchmod(fd, mode);
  close(fd);
  return absl::OkStatus();
}

absl::Status RemoveRecursively(const std::string& path) {
  std::error_code error;
  std::filesystem::remove_all(path, error);  // does not follow symbolic links
  if (error) return absl::InternalError(absl::StrCat("remove ", path, ": ", error.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// ---------------------------------------------------------------------------
// Exit status.

ExitStatus ExitStatus::FromWaitStatus(int wait_status) {
  ExitStatus status;
  if (WIFEXITED(wait_status)) {
    status.exited = true;
    status.code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    status.signaled = true;
    status.signal = WTERMSIG(wait_status);
  }
  return status;
}

std::string ExitStatus::ToString() const {
  if (exited) return absl::StrCat("exit status ", code);
  if (signaled) return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
  return "unknown wait status";
}

// ---------------------------------------------------------------------------
// Child processes.

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty() || argv[0].empty()) return absl::InvalidArgumentError("empty argv");
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls (the test process may have other threads).
  std::vector<char*> pointers;
  pointers.reserve(argv.size() + 1);
  for (const std::string& arg : argv) pointers.push_back(const_cast<char*>(arg.c_str()));
  pointers.push_back(nullptr);
  const std::string exec_failed = absl::StrCat("[harness] cannot execute ", argv[0], "\n");

  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log_path, ": ", ErrnoText()));
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    std::string error = ErrnoText();
    close(log_fd);
    return absl::InternalError(absl::StrCat("open /dev/null: ", error));
  }
  struct rlimit files;
  int max_fd = getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY &&
                       files.rlim_cur < 65536
                   ? static_cast<int>(files.rlim_cur)
                   : 65536;
  const pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    std::string error = ErrnoText();
    close(log_fd);
    close(null_fd);
    return absl::InternalError(absl::StrCat("fork: ", error));
  }
  if (pid == 0) {
    // Child. Die with the test process (a crashed test leaves nothing running).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    // Default signal handling and an empty mask, whatever the test process set.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
      _exit(126);
    }
    for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd) fcntl(fd, F_SETFD, 0);
    // Close every other inherited descriptor (e.g. the test's client sockets, which
    // would otherwise stay open in the child and hide the test's closes).
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) close(fd);
    }
    execv(pointers[0], pointers.data());
    ssize_t ignored = write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    (void)ignored;
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, argv, log_path));
}

ChildProcess::~ChildProcess() {
  if (::testing::Test::HasFailure()) DumpLog();
  // Stop() says so on stderr when SIGTERM was not enough; whether a clean exit was
  // expected is for the test to check (Stop() returns the status).
  if (!exit_status_.has_value()) Stop();
}

bool ChildProcess::TryReap() {
  if (exit_status_.has_value()) return true;
  int wait_status = 0;
  pid_t result;
  do {
    result = waitpid(pid_, &wait_status, WNOHANG);
  } while (result < 0 && errno == EINTR);
  if (result == pid_) {
    exit_status_ = ExitStatus::FromWaitStatus(wait_status);
    return true;
  }
  if (result < 0) {
    // ECHILD: someone else reaped it (should not happen); treat it as gone.
    exit_status_ = ExitStatus{};
    return true;
  }
  return false;
}

bool ChildProcess::Running() { return !TryReap(); }

absl::StatusOr<ExitStatus> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!TryReap()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("pid ", pid_, " (", argv_[0], ") still running after ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  return *exit_status_;
}

absl::Status ChildProcess::Signal(int signal_number) {
  if (exit_status_.has_value() || pid_ <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("pid ", pid_, " was already reaped"));
  }
  if (kill(pid_, signal_number) != 0) {
    return absl::InternalError(absl::StrCat("kill ", pid_, ": ", ErrnoText()));
  }
  return absl::OkStatus();
}

absl::Status ChildProcess::WaitForJobControl(int option) {
  for (;;) {
    int wait_status = 0;
    pid_t result = waitpid(pid_, &wait_status, option);
    if (result < 0 && errno == EINTR) continue;
    if (result != pid_) return absl::InternalError(absl::StrCat("waitpid ", pid_, ": ", ErrnoText()));
    if ((option == WUNTRACED && WIFSTOPPED(wait_status)) ||
        (option == WCONTINUED && WIFCONTINUED(wait_status))) {
      return absl::OkStatus();
    }
    if (WIFEXITED(wait_status) || WIFSIGNALED(wait_status)) {
      exit_status_ = ExitStatus::FromWaitStatus(wait_status);
      return absl::FailedPreconditionError(
          absl::StrCat("pid ", pid_, " ended with ", exit_status_->ToString()));
    }
  }
}

absl::Status ChildProcess::Freeze() {
  if (absl::Status status = Signal(SIGSTOP); !status.ok()) return status;
  frozen_ = true;
  return WaitForJobControl(WUNTRACED);
}

absl::Status ChildProcess::Thaw() {
  if (absl::Status status = Signal(SIGCONT); !status.ok()) return status;
  frozen_ = false;
  return WaitForJobControl(WCONTINUED);
}

ExitStatus ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (TryReap()) return *exit_status_;
  // pid_ > 0 always holds here (Start never builds a ChildProcess otherwise); kill()
  // with 0 or -1 would signal a whole group, which this harness must never do.
  if (pid_ <= 0) return ExitStatus{};
  // SIGCONT only for a child this harness froze, and before SIGTERM: a SIGCONT that
  // lands while the child is exiting would cancel the SIGSTOP with which
  // LeakSanitizer's exit-time check stops it (seen: a sanitizer-built shard hung at
  // exit when this process was preempted between the two kill() calls).
  if (frozen_) {
    kill(pid_, SIGCONT);
    frozen_ = false;
  }
  kill(pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (!TryReap()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr, "[harness] pid %d (%s) ignored SIGTERM for %lld ms; sending SIGKILL\n",
                   static_cast<int>(pid_), argv_[0].c_str(), static_cast<long long>(grace.count()));
      kill(pid_, SIGKILL);
      int wait_status = 0;
      pid_t result;
      do {
        result = waitpid(pid_, &wait_status, 0);
      } while (result < 0 && errno == EINTR);
      exit_status_ = result == pid_ ? ExitStatus::FromWaitStatus(wait_status) : ExitStatus{};
      break;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  return *exit_status_;
}

absl::StatusOr<std::string> ChildProcess::WaitForReadyFile(const std::string& path,
                                                           std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    absl::StatusOr<std::string> content = ReadFile(path);
    if (content.ok() && !content->empty() && content->back() == '\n') {
      content->pop_back();
      return content;
    }
    if (!Running()) {
      return absl::FailedPreconditionError(
          absl::StrCat("pid ", pid_, " (", DescribeArgv(argv_), ") ended with ",
                       exit_status_->ToString(), " before writing ", path, "; its log:\n", ReadLog()));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("pid ", pid_, " (", DescribeArgv(argv_), ") did not write ", path,
                       " within ", timeout.count(), " ms; its log:\n", ReadLog()));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::string ChildProcess::ReadLog() const {
  absl::StatusOr<std::string> content = ReadFile(log_path_);
  return content.ok() ? *content : std::string();
}

void ChildProcess::DumpLog() const {
  std::string log = ReadLog();
  std::fprintf(stderr, "----- log of pid %d (%s), %s -----\n%s%s----- end of log -----\n",
               static_cast<int>(pid_), DescribeArgv(argv_).c_str(), log_path_.c_str(), log.c_str(),
               !log.empty() && log.back() != '\n' ? "\n" : "");
}

// ---------------------------------------------------------------------------
// Servers.

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const TempDir& dir, const std::string& name, const std::string& binary,
    const std::vector<std::string>& flags, std::chrono::milliseconds ready_timeout) {
  if (binary.empty() || access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("server binary '", binary, "' is not executable"));
  }
  std::string ready_file = dir.File(name + ".port");
  std::vector<std::string> argv = {binary, "--port=0", "--ready_file=" + ready_file};
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start(argv, dir.File(name + ".log"));
  if (!process.ok()) return process.status();
  absl::StatusOr<std::string> content = (*process)->WaitForReadyFile(ready_file, ready_timeout);
  if (!content.ok()) return content.status();  // the child is stopped by its destructor
  uint16_t port = 0;
  if (!ParsePort(*content, &port)) {
    return absl::InternalError(absl::StrCat(ready_file, " holds '", *content, "', not a port"));
  }
  return std::unique_ptr<ServerProcess>(new ServerProcess(std::move(*process), port));
}

}  // namespace wallet::test
