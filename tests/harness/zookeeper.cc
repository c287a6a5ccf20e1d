#include "harness/zookeeper.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace wallet::test {

namespace {

using Clock = std::chrono::steady_clock;

// Where Debian's packages put the server and its Java dependencies (zkEnv.sh and
// /etc/zookeeper/conf/environment use the same: CLASSPATH=<conf>:zookeeper.jar).
constexpr char kZooKeeperJar[] = "/usr/share/java/zookeeper.jar";
// The slf4j → log4j 1.2 binding (libslf4j-java, liblog4j1.2-java, both pulled in by
// libzookeeper-java). Without it slf4j falls back to "NOP" and the server logs nothing.
constexpr const char* kLoggingJars[] = {"/usr/share/java/slf4j-log4j12.jar",
                                        "/usr/share/java/log4j-1.2.jar"};
constexpr char kMainClass[] = "org.apache.zookeeper.server.ZooKeeperServerMain";
constexpr int kStartAttempts = 3;
constexpr std::chrono::milliseconds kReadyPollInterval{20};

std::string ErrnoText() { return std::strerror(errno); }

// A loopback port that was free a moment ago: bind port 0, read it, close. Another
// process may take it before ZooKeeper binds it; Start() retries then.
absl::StatusOr<uint16_t> PickFreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", ErrnoText()));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::string error = ErrnoText();
    close(fd);
    return absl::InternalError(absl::StrCat("bind 127.0.0.1:0: ", error));
  }
  close(fd);
  return ntohs(address.sin_port);
}

// Milliseconds left until `deadline` (0 when passed), for poll().
int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Connects to 127.0.0.1:port within the deadline; returns the socket or -1.
int ConnectLoopback(uint16_t port, Clock::time_point deadline) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    if (errno != EINPROGRESS) {
      close(fd);
      return -1;
    }
    pollfd waiting{fd, POLLOUT, 0};
    int error = 0;
    socklen_t length = sizeof(error);
    if (poll(&waiting, 1, RemainingMs(deadline)) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

}  // namespace

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ZooKeeperServer>> ZooKeeperServer::Start(const ZooKeeperOptions& options) {
  if (access(kZooKeeperJar, R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(kZooKeeperJar,
                                            " is missing: install Debian's zookeeper package (deploy/setup.sh)"));
  }
  absl::Status last_error;
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    absl::StatusOr<TempDir> dir = TempDir::Create("zookeeper");
    if (!dir.ok()) return dir.status();
    std::unique_ptr<ZooKeeperServer> server(new ZooKeeperServer(std::move(*dir), options));
    absl::StatusOr<uint16_t> port = PickFreeLoopbackPort();
    if (!port.ok()) return port.status();
    server->port_ = *port;
    if (absl::Status status = server->WriteConfig(); !status.ok()) return status;
    last_error = server->Launch();
    if (last_error.ok()) return server;
    // Only a lost race for the port is worth another try.
    if (!absl::StrContains(server->ReadLog(), "Address already in use")) return last_error;
  }
  return last_error;
}

ZooKeeperServer::~ZooKeeperServer() {
  if (process_ == nullptr) return;
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "[harness] ZooKeeper on %s, directory %s\n", connect_string().c_str(),
                 dir_.path().c_str());
  }
  process_.reset();  // ChildProcess's destructor prints the log on failure and stops it
}

std::string ZooKeeperServer::connect_string() const { return absl::StrCat("127.0.0.1:", port_); }

absl::Status ZooKeeperServer::WriteConfig() {
  // The data directory is created by ZooKeeper itself; forceSync=no because a test
  // server's durability is the page cache (a restart of the process keeps it).
  std::string config = absl::StrCat(
      "# Written by the test harness (tests/harness/zookeeper.cc).\n",
      "tickTime=", options_.tick_time_ms, "\n",
      "dataDir=", dir_.File("data"), "\n",
      "clientPort=", port_, "\n",
      "clientPortAddress=127.0.0.1\n",
      "maxClientCnxns=0\n",
      "admin.enableServer=false\n",
      "4lw.commands.whitelist=ruok,srvr,stat\n",
      "forceSync=no\n",
      "preAllocSize=1024\n",
      "autopurge.purgeInterval=0\n");
  if (absl::Status status = dir_.WriteFile("zoo.cfg", config); !status.ok()) return status;
  // Console output goes to the child's log file (zookeeper.log); WARN keeps it short.
  std::string log4j =
      "log4j.rootLogger=WARN, CONSOLE\n"
      "log4j.logger.org.apache.zookeeper.server.ZooKeeperServer=INFO\n"
      "log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n"
      "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n"
      "log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1}: %m%n\n";
  return dir_.WriteFile("log4j.properties", log4j);
}

absl::Status ZooKeeperServer::Launch() {
  std::string java = FindInPath("java");
  if (java.empty()) java = "/usr/bin/java";
  std::string classpath = absl::StrCat(dir_.path(), ":", kZooKeeperJar);
  for (const char* jar : kLoggingJars) {
    if (access(jar, R_OK) == 0) absl::StrAppend(&classpath, ":", jar);
  }
  std::vector<std::string> argv = {
      java,
      "-Xms64m",
      "-Xmx256m",
      "-XX:+UseSerialGC",
      "-XX:TieredStopAtLevel=1",
      "-XX:-UsePerfData",
      "-Djava.awt.headless=true",
      "-Dzookeeper.jmx.log4j.disable=true",
      absl::StrCat("-Dzookeeper.log.dir=", dir_.path()),
      "-cp",
      classpath,
      kMainClass,
      dir_.File("zoo.cfg")};
  auto started = Clock::now();
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(argv, dir_.File("zookeeper.log"));
  if (!child.ok()) return child.status();
  process_ = std::move(*child);

  auto deadline = started + options_.start_timeout;
  for (;;) {
    absl::StatusOr<std::string> reply = FourLetterWord("srvr", std::chrono::milliseconds(1000));
    if (reply.ok() && absl::StrContains(*reply, "Mode: standalone")) break;
    if (!process_->Running()) {
      return absl::FailedPreconditionError(
          absl::StrCat("ZooKeeper (pid ", process_->pid(), ") ended with ",
                       process_->exit_status()->ToString(), " before serving on ",
                       connect_string(), "; its log:\n", ReadLog()));
    }
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("ZooKeeper (pid ", process_->pid(), ") did not serve on ", connect_string(),
                       " within ", options_.start_timeout.count(), " ms; its log:\n", ReadLog()));
    }
    std::this_thread::sleep_for(kReadyPollInterval);
  }
  last_start_duration_ = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  return absl::OkStatus();
}

ExitStatus ZooKeeperServer::Stop(std::chrono::milliseconds grace) {
  if (process_ == nullptr) return ExitStatus{};
  return process_->Stop(grace);
}

absl::Status ZooKeeperServer::Restart() {
  Stop();
  return Launch();
}

absl::Status ZooKeeperServer::Freeze() {
  if (process_ == nullptr) return absl::FailedPreconditionError("ZooKeeper was never started");
  return process_->Freeze();
}

absl::Status ZooKeeperServer::Thaw() {
  if (process_ == nullptr) return absl::FailedPreconditionError("ZooKeeper was never started");
  return process_->Thaw();
}

absl::StatusOr<std::string> ZooKeeperServer::FourLetterWord(const std::string& word,
                                                            std::chrono::milliseconds timeout) const {
  auto deadline = Clock::now() + timeout;
  int fd = ConnectLoopback(port_, deadline);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot connect to ", connect_string()));
  std::string reply;
  absl::Status status;
  if (send(fd, word.data(), word.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(word.size())) {
    status = absl::UnavailableError(absl::StrCat("send to ", connect_string(), ": ", ErrnoText()));
  }
  while (status.ok()) {
    pollfd readable{fd, POLLIN, 0};
    if (poll(&readable, 1, RemainingMs(deadline)) != 1) {
      status = absl::DeadlineExceededError(absl::StrCat("no complete '", word, "' reply from ",
                                                        connect_string(), " within ", timeout.count(), " ms"));
      break;
    }
    char buffer[4096];
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) status = absl::UnavailableError(absl::StrCat("read from ", connect_string(), ": ", ErrnoText()));
    if (n <= 0) break;  // the server closes after the reply
    reply.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  if (!status.ok()) return status;
  return reply;
}

std::string ZooKeeperServer::ReadLog() const {
  absl::StatusOr<std::string> content = ReadFile(dir_.File("zookeeper.log"));
  return content.ok() ? *content : std::string();
}

// ---------------------------------------------------------------------------

absl::Status ExpireSession(const std::string& connect_string, int64_t session_id,
                           const std::string& password, std::chrono::milliseconds timeout) {
  clientid_t client_id{};
  client_id.client_id = session_id;
  if (password.size() != sizeof(client_id.passwd)) {
    return absl::InvalidArgumentError(absl::StrCat("a session password has ", sizeof(client_id.passwd),
                                                   " bytes, not ", password.size()));
  }
  std::memcpy(client_id.passwd, password.data(), sizeof(client_id.passwd));
  zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
  // The server hands a session to the connection that joined it last and drops the
  // previous one; the original client reconnects within milliseconds and takes the
  // session back, and a close sent by a connection that has lost it does nothing.
  // So: join and close at once, then join again to check; until the server answers
  // a join with "expired", which is the proof that the session is gone.
  auto deadline = Clock::now() + timeout;
  for (int attempt = 1;; ++attempt) {
    zhandle_t* handle = zookeeper_init(connect_string.c_str(), nullptr,
                                       static_cast<int>(timeout.count()), &client_id, nullptr, 0);
    if (handle == nullptr) return absl::InternalError(absl::StrCat("zookeeper_init: ", ErrnoText()));
    int state = zoo_state(handle);
    // Spin (no sleep): the close must leave while this connection owns the session.
    while (state != ZOO_CONNECTED_STATE && state != ZOO_EXPIRED_SESSION_STATE && Clock::now() < deadline) {
      std::this_thread::yield();
      state = zoo_state(handle);
    }
    zookeeper_close(handle);  // when connected: sends closeSession
    if (state == ZOO_EXPIRED_SESSION_STATE) return absl::OkStatus();
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("session 0x", absl::Hex(session_id), " still alive after ",
                                                      attempt, " attempts in ", timeout.count(), " ms"));
    }
  }
}

}  // namespace wallet::test
