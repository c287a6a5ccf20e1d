// Tests of the integration-test harness itself (temporary directories and child
// processes), using /bin/sh as the child so they do not depend on the product.
#include "harness/process.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace wallet::test {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<ChildProcess> StartShell(const TempDir& dir, const std::string& script) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start({"/bin/sh", "-c", script}, dir.File("child.log"));
  EXPECT_TRUE(child.ok()) << child.status();
  return child.ok() ? std::move(*child) : nullptr;
}

TEST(TempDirTest, IsPrivateAndRemovedRecursively) {
  std::string path;
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("harness");
    ASSERT_TRUE(dir.ok()) << dir.status();
    path = dir->path();
    struct stat info;
    ASSERT_EQ(stat(path.c_str(), &info), 0);
    EXPECT_TRUE(S_ISDIR(info.st_mode));
    EXPECT_EQ(info.st_mode & 0777, 0700u);
    ASSERT_EQ(mkdir(dir->File("sub").c_str(), 0755), 0);
    ASSERT_TRUE(dir->WriteFile("sub/secret", "x\n", 0600).ok());
    ASSERT_EQ(stat(dir->File("sub/secret").c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u);
    absl::StatusOr<std::string> content = ReadFile(dir->File("sub/secret"));
    ASSERT_TRUE(content.ok());
    EXPECT_EQ(*content, "x\n");
    // A moved-from directory does not remove anything.
    TempDir moved = std::move(*dir);
    EXPECT_EQ(moved.path(), path);
  }
  EXPECT_NE(access(path.c_str(), F_OK), 0) << path << " still exists";
}

TEST(ChildProcessTest, ReportsExitStatusAndCapturesOutput) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::unique_ptr<ChildProcess> child = StartShell(*dir, "echo out; echo err >&2; exit 3");
  ASSERT_NE(child, nullptr);
  absl::StatusOr<ExitStatus> status = child->Wait(20s);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->exited);
  EXPECT_EQ(status->code, 3);
  EXPECT_EQ(status->ToString(), "exit status 3");
  EXPECT_EQ(child->ReadLog(), "out\nerr\n");
  EXPECT_FALSE(child->Running());
  EXPECT_EQ(child->Stop().code, 3);  // idempotent once reaped
}

TEST(ChildProcessTest, StopSendsSigtermFirst) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::unique_ptr<ChildProcess> child = StartShell(*dir, "exec sleep 30");
  ASSERT_NE(child, nullptr);
  EXPECT_TRUE(child->Running());
  ExitStatus status = child->Stop();
  EXPECT_TRUE(status.signaled) << status.ToString();
  EXPECT_EQ(status.signal, SIGTERM) << status.ToString();
}

TEST(ChildProcessTest, StopEscalatesToSigkillWhenSigtermIsIgnored) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::string ready = dir->File("ready");
  std::unique_ptr<ChildProcess> child =
      StartShell(*dir, "trap '' TERM; echo ok > " + ready + "; exec sleep 30");
  ASSERT_NE(child, nullptr);
  ASSERT_TRUE(child->WaitForReadyFile(ready).ok());  // the trap is in place
  ExitStatus status = child->Stop(200ms);
  EXPECT_TRUE(status.signaled) << status.ToString();
  EXPECT_EQ(status.signal, SIGKILL) << status.ToString();
}

// The state letter of /proc/<pid>/stat ('S' sleeping, 'T' stopped, ...).
char ProcessState(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return '?';
  size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() ? (*stat)[paren + 2] : '?';
}

TEST(ChildProcessTest, FreezeAndThaw) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::unique_ptr<ChildProcess> child = StartShell(*dir, "exec sleep 30");
  ASSERT_NE(child, nullptr);
  ASSERT_TRUE(child->Freeze().ok());
  EXPECT_EQ(ProcessState(child->pid()), 'T');
  ASSERT_TRUE(child->Thaw().ok());
  EXPECT_NE(ProcessState(child->pid()), 'T');
  ASSERT_TRUE(child->Freeze().ok());
  // Stopping a frozen child still ends it with SIGTERM, not SIGKILL.
  ExitStatus status = child->Stop();
  EXPECT_TRUE(status.signaled) << status.ToString();
  EXPECT_EQ(status.signal, SIGTERM) << status.ToString();
  EXPECT_FALSE(child->Freeze().ok());  // reaped: nothing to signal
}

TEST(ChildProcessTest, ReadyFileWaitEndsWhenTheChildExits) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::unique_ptr<ChildProcess> child = StartShell(*dir, "echo giving up; exit 4");
  ASSERT_NE(child, nullptr);
  absl::StatusOr<std::string> ready = child->WaitForReadyFile(dir->File("never"), 60s);
  ASSERT_FALSE(ready.ok());
  EXPECT_EQ(ready.status().code(), absl::StatusCode::kFailedPrecondition);
  std::string message(ready.status().message());
  EXPECT_NE(message.find("exit status 4"), std::string::npos) << message;
  EXPECT_NE(message.find("giving up"), std::string::npos) << message;  // the log
}

TEST(ChildProcessTest, ReadyFileWaitTimesOut) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::unique_ptr<ChildProcess> child = StartShell(*dir, "exec sleep 30");
  ASSERT_NE(child, nullptr);
  absl::StatusOr<std::string> ready = child->WaitForReadyFile(dir->File("never"), 50ms);
  EXPECT_EQ(ready.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(child->Running());
}

TEST(ChildProcessTest, ReadyFileContentIsReturnedWithoutNewline) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::string ready = dir->File("ready");
  std::unique_ptr<ChildProcess> child =
      StartShell(*dir, "echo 4242 > " + ready + ".tmp; mv " + ready + ".tmp " + ready + "; exec sleep 30");
  ASSERT_NE(child, nullptr);
  absl::StatusOr<std::string> content = child->WaitForReadyFile(ready);
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_EQ(*content, "4242");
}

TEST(ChildProcessTest, BinaryThatCannotRunExitsWith127) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start({dir->File("no-such-binary")}, dir->File("child.log"));
  ASSERT_TRUE(child.ok()) << child.status();
  absl::StatusOr<ExitStatus> status = (*child)->Wait(20s);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->ToString(), "exit status 127");
  EXPECT_NE((*child)->ReadLog().find("cannot execute"), std::string::npos);
}

TEST(ChildProcessTest, DestructorStopsAndReapsTheChild) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  std::unique_ptr<ChildProcess> child = StartShell(*dir, "exec sleep 30");
  ASSERT_NE(child, nullptr);
  pid_t pid = child->pid();
  ASSERT_GT(pid, 0);
  child.reset();
  // Reaped: the pid no longer names a process (or a zombie) of ours.
  EXPECT_NE(kill(pid, 0), 0);
  EXPECT_EQ(errno, ESRCH);
}

// The child must not keep the test's descriptors open (a client socket held by a
// server child would hide the test's close from the server it talks to).
TEST(ChildProcessTest, ChildInheritsNoOtherDescriptors) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);  // deliberately without O_CLOEXEC
  std::unique_ptr<ChildProcess> child = StartShell(*dir, "exec sleep 30");
  ASSERT_NE(child, nullptr);
  close(fds[1]);
  // With the write end closed here and not held by the child, the read end is at EOF.
  struct pollfd readable = {fds[0], POLLIN, 0};
  int ready = poll(&readable, 1, 20'000);
  EXPECT_EQ(ready, 1) << "the child still holds the pipe's write end";
  char byte;
  EXPECT_EQ(read(fds[0], &byte, 1), 0);
  close(fds[0]);
}

TEST(ServerProcessTest, StartsWalletShardOnAFreePort) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  ASSERT_FALSE(WalletShardBinary().empty());
  absl::StatusOr<std::unique_ptr<ServerProcess>> shard =
      ServerProcess::Start(*dir, "shard", WalletShardBinary(), {"--partitions=all", "--in_memory"});
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_GT((*shard)->port(), 0);
  EXPECT_NE((*shard)->ReadLog().find(absl::StrCat("listening on 127.0.0.1:", (*shard)->port())),
            std::string::npos)
      << (*shard)->ReadLog();
  // It answers on the announced port.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons((*shard)->port());
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(send(fd, "PING\r\n", 6, MSG_NOSIGNAL), 6);
  char reply[8] = {};
  size_t got = 0;
  while (got < 7) {
    ssize_t n = recv(fd, reply + got, 7 - got, 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  EXPECT_EQ(std::string(reply, got), "+PONG\r\n");
  ExitStatus status = (*shard)->Stop();
  EXPECT_TRUE(status.success()) << status.ToString();
}

TEST(ServerProcessTest, ReportsABinaryThatFailsToStart) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness");
  ASSERT_TRUE(dir.ok());
  absl::StatusOr<std::unique_ptr<ServerProcess>> shard =
      ServerProcess::Start(*dir, "shard", WalletShardBinary(), {"--partitions=nonsense", "--in_memory"});
  ASSERT_FALSE(shard.ok());
  std::string message(shard.status().message());
  EXPECT_NE(message.find("exit status 2"), std::string::npos) << message;
  EXPECT_NE(message.find("--partitions"), std::string::npos) << message;
}

}  // namespace
}  // namespace wallet::test
