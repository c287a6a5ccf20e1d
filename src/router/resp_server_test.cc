// resp_server_test.cc — RespServer on a real EventLoop and real sockets, in front of
// a fake Router whose calls each test completes by hand, in any order. Checks reply
// order, the per-connection bounds (BUSY, paused reading), AUTH, QUIT, INFO, broken
// and oversized requests, max_clients and draining.
//
// The test thread runs the loop; the client's socket is read without blocking
// between turns. Nothing asserts on timing: the loop runs until what is awaited has
// arrived, and the deadline only bounds how long a broken server can hang a test.
#include "router/resp_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/strings.h"
#include "gtest/gtest.h"

namespace wallet::router {
namespace {

constexpr int64_t kHangLimitMs = 20'000;  // bounds a hang, never a success

// Keeps every call; a test answers them with Complete().
class FakeRouter : public Router {
 public:
  struct Call {
    std::vector<std::string> args;
    RouterCallback done;
  };
  using Router::Execute;
  void Execute(std::vector<std::string> args, RouterCallback done, uint64_t /*order_key*/) override {
    calls.push_back(Call{std::move(args), std::move(done)});
  }
  RouterStats stats() const override { return {}; }
  // Answers call `index` with a bulk string.
  void Complete(size_t index, const std::string& text) {
    shardlink::ShardReply reply;
    reply.type = shardlink::ShardReply::Type::kBulk;
    reply.text = text;
    calls.at(index).done(reply);
  }
  std::vector<Call> calls;
};

// A loopback client: blocking connect and send, non-blocking reads.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    EXPECT_EQ(connect(fd_, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)), 0) << std::strerror(errno);
  }
  ~RawClient() { close(fd_); }

  void Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << std::strerror(errno);
      sent += static_cast<size_t>(n);
    }
  }
  // Takes what has arrived; notes the end of the stream.
  void Poll() {
    char chunk[4096];
    for (;;) {
      ssize_t n = recv(fd_, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n > 0) {
        received.append(chunk, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) closed = true;
      return;
    }
  }

  std::string received;
  bool closed = false;

 private:
  int fd_ = -1;
};

std::string Bulk(const std::string& text) { return StrCat("$", text.size(), "\r\n", text, "\r\n"); }

class RespServerTest : public ::testing::Test {
 protected:
  void SetUp() override { loop_ = *EventLoop::Create(); }
  void TearDown() override {
    server_.reset();
    loop_.reset();
  }

  void Start(RespServerOptions options = {}) {
    options.port = 0;
    server_ = std::make_unique<RespServer>(*loop_, router_, options);
    ASSERT_TRUE(server_->Listen().ok());
  }

  // Runs the loop until `done` holds (polling `client` before each check).
  bool Await(RawClient& client, const std::function<bool()>& done) {
    return loop_->RunUntil([&] {
                   client.Poll();
                   return done();
                 },
                 kHangLimitMs)
        .ok();
  }
  // Runs a few loop turns: for checks that something did NOT happen.
  void Settle(RawClient& client) {
    for (int i = 0; i < 5; ++i) (void)loop_->RunOnce(10);
    client.Poll();
  }

  std::unique_ptr<EventLoop> loop_;
  FakeRouter router_;
  std::unique_ptr<RespServer> server_;
};

TEST_F(RespServerTest, RepliesLeaveInCommandOrderWhenCallsFinishOutOfOrder) {
  Start();
  RawClient client(server_->port());
  client.Send("CMD 1\r\n*2\r\n$3\r\nCMD\r\n$1\r\n2\r\nCMD 3\r\n");
  ASSERT_TRUE(Await(client, [&] { return router_.calls.size() == 3; }));
  EXPECT_EQ(router_.calls[1].args, (std::vector<std::string>{"CMD", "2"}));
  router_.Complete(2, "c");
  Settle(client);
  EXPECT_EQ(client.received, "");  // the first reply is still owed
  router_.Complete(0, "a");
  ASSERT_TRUE(Await(client, [&] { return client.received == Bulk("a"); }));
  router_.Complete(1, "b");
  ASSERT_TRUE(Await(client, [&] { return client.received == Bulk("a") + Bulk("b") + Bulk("c"); }));
}

// Regression test. At 91c87d2 a call beyond max_pending_per_client was answered
// -BUSY at once, so `redis-cli --pipe` through a router lost most of its commands.
// Now the connection is simply not read until a pending call is answered.
TEST_F(RespServerTest, CallsBeyondMaxPendingPerClientWaitTheirTurn) {
  RespServerOptions options;
  options.max_pending_per_client = 2;
  Start(options);
  RawClient client(server_->port());
  client.Send("CMD 1\r\nCMD 2\r\nCMD 3\r\n");
  ASSERT_TRUE(Await(client, [&] { return router_.calls.size() == 2; }));
  Settle(client);
  EXPECT_EQ(router_.calls.size(), 2u) << "the third call was taken beyond the bound";
  EXPECT_EQ(client.received, "");
  router_.Complete(1, "b");
  Settle(client);
  EXPECT_EQ(router_.calls.size(), 3u) << "a freed place lets the next call in";
  router_.Complete(0, "a");
  router_.Complete(2, "c");
  ASSERT_TRUE(Await(client, [&] { return client.received == Bulk("a") + Bulk("b") + Bulk("c"); }));
  EXPECT_EQ(server_->stats().client_busy, 0u);
  EXPECT_GE(server_->stats().read_pauses, 1u);
}

TEST_F(RespServerTest, EveryCommandButAuthAndQuitNeedsAuthFirst) {
  RespServerOptions options;
  options.password = "pw";
  Start(options);
  RawClient client(server_->port());
  client.Send("PING\r\nAUTH nope\r\nAUTH admin pw\r\nAUTH default pw\r\nPING\r\n");
  ASSERT_TRUE(Await(client, [&] { return router_.calls.size() == 1; }));
  router_.Complete(0, "PONG");
  const std::string expected = "-NOAUTH authentication required\r\n-WRONGPASS invalid password\r\n"
                               "-WRONGPASS invalid username-password pair\r\n+OK\r\n" + Bulk("PONG");
  ASSERT_TRUE(Await(client, [&] { return client.received.size() >= expected.size(); }));
  EXPECT_EQ(client.received, expected);
}

TEST_F(RespServerTest, BrokenStreamIsAnsweredAfterEarlierRepliesThenClosed) {
  Start();
  RawClient client(server_->port());
  client.Send("CMD 1\r\n*1\r\n$x\r\n");
  ASSERT_TRUE(Await(client, [&] { return router_.calls.size() == 1; }));
  Settle(client);
  EXPECT_EQ(client.received, "");
  router_.Complete(0, "a");
  ASSERT_TRUE(Await(client, [&] { return client.closed; }));
  EXPECT_TRUE(absl::StartsWith(ToAbsl(client.received), ToAbsl(Bulk("a") + "-PROTOCOL "))) << client.received;
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(RespServerTest, ReadingPausesAtTheReplySlotBoundAndResumes) {
  RespServerOptions options;
  options.max_pending_per_client = 4;
  options.max_queued_replies_per_client = 4;
  Start(options);
  RawClient client(server_->port());
  std::string commands;
  for (int i = 0; i < 10; ++i) StrAppend(&commands, "CMD ", i, "\r\n");
  client.Send(commands);
  std::string expected;
  size_t answered = 0;
  while (answered < 10) {
    const size_t batch_end = std::min<size_t>(answered + 4, 10);
    ASSERT_TRUE(Await(client, [&] { return router_.calls.size() == batch_end; })) << router_.calls.size();
    Settle(client);
    EXPECT_EQ(router_.calls.size(), batch_end);  // no more calls while the slots are full
    for (; answered < batch_end; ++answered) {
      router_.Complete(answered, StrCat(answered));
      expected += Bulk(StrCat(answered));
    }
  }
  ASSERT_TRUE(Await(client, [&] { return client.received.size() >= expected.size(); }));
  EXPECT_EQ(client.received, expected);
  EXPECT_GE(server_->stats().read_pauses, 1u);
}

TEST_F(RespServerTest, QuitAnswersOkThenCloses) {
  Start();
  RawClient client(server_->port());
  client.Send("QUIT\r\nCMD never\r\n");
  ASSERT_TRUE(Await(client, [&] { return client.closed; }));
  EXPECT_EQ(client.received, "+OK\r\n");
  EXPECT_TRUE(router_.calls.empty());
}

TEST_F(RespServerTest, InfoHasTheCallbackSectionsAndTheClientsSection) {
  RespServerOptions options;
  options.info = [](std::string_view section, std::string* out) { StrAppend(out, "# Router\r\nasked:", section, "\r\n"); };
  Start(options);
  RawClient client(server_->port());
  client.Send("INFO\r\n");
  ASSERT_TRUE(Await(client, [&] { return absl::EndsWith(ToAbsl(client.received), "\r\n\r\n\r\n"); }));
  EXPECT_TRUE(absl::StrContains(ToAbsl(client.received), "asked:default\r\n")) << client.received;
  EXPECT_TRUE(absl::StrContains(ToAbsl(client.received), "connected_clients:1\r\n")) << client.received;
  EXPECT_TRUE(router_.calls.empty());
}

TEST_F(RespServerTest, UnfinishedRequestOverMaxQueryBytesIsRefusedAndClosed) {
  RespServerOptions options;
  options.max_query_bytes = 64;
  Start(options);
  RawClient client(server_->port());
  client.Send("*2\r\n$3\r\nCMD\r\n$100\r\n" + std::string(80, 'x'));
  ASSERT_TRUE(Await(client, [&] { return client.closed; }));
  EXPECT_EQ(client.received, "-LIMIT query buffer above 64 bytes\r\n");
}

TEST_F(RespServerTest, ClientsBeyondMaxClientsAreRefused) {
  RespServerOptions options;
  options.max_clients = 1;
  Start(options);
  RawClient first(server_->port());
  first.Send("CMD 1\r\n");
  ASSERT_TRUE(Await(first, [&] { return router_.calls.size() == 1; }));
  RawClient second(server_->port());
  ASSERT_TRUE(Await(second, [&] { return second.closed; }));
  EXPECT_EQ(second.received, "-BUSY max number of clients reached\r\n");
  EXPECT_EQ(server_->stats().connections_rejected, 1u);
}

TEST_F(RespServerTest, DrainAnswersWhatIsOwedThenCloses) {
  Start();
  RawClient client(server_->port());
  client.Send("CMD 1\r\n");
  ASSERT_TRUE(Await(client, [&] { return router_.calls.size() == 1; }));
  server_->BeginDrain();
  EXPECT_FALSE(server_->Drained());
  router_.Complete(0, "a");
  ASSERT_TRUE(Await(client, [&] { return client.closed; }));
  EXPECT_EQ(client.received, Bulk("a"));
  EXPECT_TRUE(server_->Drained());
}

}  // namespace
}  // namespace wallet::router
