// router_http_integration_test.cc — the router's HTTP/JSON API end to end, as a
// client sees it: a real ZooKeeper, two wallet-shard processes joined to cluster "c"
// with --zk (16 partitions: shard-0 owns 0-7, shard-1 8-15), wallet-router processes
// started with --http_port=0 --http_ready_file, and cpp-httplib's client (one
// kept-alive connection, TCP_NODELAY, as docs/api.md advises). Accounts are opened
// and funded over RESP; every balance an HTTP call changes is read back over HTTP
// and over RESP.
//
// Covered (docs/api.md, section HTTP): a same-shard transfer and its replay, a
// transaction id reused with another amount, the ledger's refusals (409), a
// cross-shard transfer (422, nothing changed), malformed bodies (400, nothing sent
// to a shard), Bearer authentication (401), /healthz, /metrics, and a transfer while
// the owning shard is frozen and then stopped (503/504, outcome unknown), retried
// with the same transaction_id after the shard restarts on its data: applied once.
//
// Nothing asserts on timing: conditions are polled until they hold; the deadlines
// only bound how long a broken build can make a test wait.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "harness/cluster.h"

namespace wallet::test {
namespace {

using Json = nlohmann::json;

constexpr uint32_t kPartitions = 16;
constexpr int kShardCount = 2;
constexpr char kTransferPath[] = "/v1/wallet/balance_transfer";

std::string S(uint64_t value) { return absl::StrCat(value); }

// One HTTP response as a client sees it. status 0: no response at all (`text` says why).
struct Response {
  int status = 0;
  std::string text;
  Json json;  // null when `text` is not JSON
  httplib::Headers headers;

  std::string Header(const std::string& name) const {
    auto found = headers.find(name);
    return found == headers.end() ? "" : found->second;
  }
  // error.code and error.message of a JSON error ("" when absent).
  std::string Code() const { return ErrorField("code"); }
  std::string Message() const { return ErrorField("message"); }
  std::string ErrorField(const char* name) const {
    if (!json.is_object() || !json.contains("error") || !json["error"].is_object()) return "";
    const Json& value = json["error"].value(name, Json());
    return value.is_string() ? value.get<std::string>() : "";
  }
};

std::ostream& operator<<(std::ostream& out, const Response& response) {
  return out << "HTTP " << response.status << " " << response.text;
}

// A client of one router's HTTP API over one kept-alive connection (reopened by
// cpp-httplib when the server closed it).
class HttpClient {
 public:
  explicit HttpClient(int port, const std::string& token = "") : client_("127.0.0.1", port) {
    client_.set_keep_alive(true);
    client_.set_tcp_nodelay(true);  // else Nagle and delayed ACKs add ~40 ms per request
    client_.set_connection_timeout(std::chrono::seconds(5));
    client_.set_read_timeout(std::chrono::seconds(15));  // longer than the server's 5 s request timeout
    if (!token.empty()) client_.set_bearer_token_auth(token);
  }

  Response Get(const std::string& path) { return Read(client_.Get(path)); }
  Response Post(const std::string& path, const std::string& body) {
    return Read(client_.Post(path, body, "application/json"));
  }
  Response Transfer(const std::string& body) { return Post(kTransferPath, body); }
  Response Balance(const std::string& account) { return Get("/v1/wallet/balance/" + account); }

 private:
  static Response Read(const httplib::Result& result) {
    Response response;
    if (!result) {
      response.text = "no response: " + httplib::to_string(result.error());
      return response;
    }
    response.status = result->status;
    response.text = result->body;
    response.headers = result->headers;
    response.json = Json::parse(response.text, nullptr, /*allow_exceptions=*/false);
    if (response.json.is_discarded()) response.json = Json();
    return response;
  }

  httplib::Client client_;
};

// A plain TCP connection to 127.0.0.1:port, for requests cpp-httplib's client would
// not send in that order. Every call fails (false, "") once the connection is gone.
class RawConnection {
 public:
  explicit RawConnection(int port) : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval timeout = {10, 0};
    if (fd_ >= 0 && (setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0 ||
                     connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0)) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool Send(const std::string& bytes) {
    return fd_ >= 0 && send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  // One response (headers and a Content-Length body), or "" at end of stream.
  std::string ReadResponse() {
    for (;;) {
      const size_t end = buffer_.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t length = 0;
        const size_t at = buffer_.find("Content-Length: ");
        if (at != std::string::npos && at < end) length = std::strtoul(buffer_.c_str() + at + 16, nullptr, 10);
        if (buffer_.size() >= end + 4 + length) {
          std::string response = buffer_.substr(0, end + 4 + length);
          buffer_.erase(0, end + 4 + length);
          return response;
        }
      }
      char chunk[4096];
      const ssize_t n = fd_ >= 0 ? recv(fd_, chunk, sizeof(chunk), 0) : -1;
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  std::string buffer_;
};

Json TransferJson(const std::string& from, const std::string& to, const std::string& amount,
                  const std::string& currency, const std::string& txid) {
  return Json{{"from_account", from}, {"to_account", to}, {"amount", amount}, {"currency", currency},
              {"transaction_id", txid}};
}

std::string TransferBody(const std::string& from, const std::string& to, const std::string& amount,
                         const std::string& currency, const std::string& txid) {
  return TransferJson(from, to, amount, currency, txid).dump();
}

// The value of the sample `name` (labels included, e.g.
// `wallet_router_calls_total{command="TRANSFER"}`) in Prometheus text; -1 when absent.
double Sample(const std::string& metrics, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (!absl::ConsumePrefix(&line, name + " ")) continue;
    double value = 0;
    return absl::SimpleAtod(line, &value) ? value : -1;
  }
  return -1;
}

class RouterHttpTest : public ClusterTest {
 protected:
  RouterHttpTest() : ClusterTest(kShardCount, kPartitions) {}

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ClusterTest::SetUp());
    ASSERT_NO_FATAL_FAILURE(StartAllShards());
    http_port_ = StartHttpRouter("router-a");
    ASSERT_NE(http_port_, 0);
    resp_port_ = routers_.at("router-a")->port();
  }

  // Starts router `id` with the HTTP API on a free port and returns that port once
  // /healthz reports every shard live (0 with a test failure otherwise).
  int StartHttpRouter(const std::string& id, const Args& extra = {}) {
    const std::string ready = dir_->File(id + ".http");
    Args flags = {"--http_port=0", "--http_ready_file=" + ready, "--http_worker_threads=4"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    if (StartRouterProcess(id, flags) == nullptr) return 0;
    // The router writes the HTTP port before the RESP port the harness waited for.
    absl::StatusOr<std::string> text = ReadFile(ready);
    int port = 0;
    if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port) || port <= 0) {
      ADD_FAILURE() << "no HTTP port in " << ready;
      return 0;
    }
    HttpClient client(port);
    Response health;
    EXPECT_TRUE(Eventually([&] {
      health = client.Get("/healthz");
      return health.status == 200 && health.json.value("live_shards", Json()) == kShardCount;
    })) << health;
    return port;
  }

  // An account id on `shard` that this test has not used yet.
  std::string FreshAccount(const std::string& shard) {
    const std::vector<uint64_t> found = AccountsOn(shard, 1, next_account_);
    if (found.empty()) return "0";  // AccountsOn failed the test
    next_account_ = found[0] + 1;
    return S(found[0]);
  }

  // A fresh account on `shard`, opened over RESP in `currency` and funded with
  // `minor` units (0: not funded).
  std::string OpenAccount(const std::string& shard, const std::string& currency, int64_t minor) {
    const std::string account = FreshAccount(shard);
    RespClient client(resp_port_);
    EXPECT_EQ(client.Call({"OPEN", account, currency}), "+OK") << account;
    if (minor > 0) {
      EXPECT_EQ(client.Call({"DEPOSIT", account, S(minor), "fund-" + account}), "+OK") << account;
    }
    return account;
  }

  // The available minor units of `account` by HTTP GET, checked against RESP
  // BALANCE through the same router (held is 0 throughout these tests).
  int64_t Available(const std::string& account) {
    const Response response = HttpClient(http_port_).Balance(account);
    EXPECT_EQ(response.status, 200) << response;
    if (response.status != 200) return -1;
    const int64_t available = response.json.value("available_minor", int64_t{-1});
    const std::string currency = response.json.value("currency", "");
    EXPECT_EQ(response.json.value("held_minor", int64_t{-1}), 0) << response;
    EXPECT_EQ(CallOnce(resp_port_, {"BALANCE", account}), absl::StrCat("[:", available, ", :0, ", currency, "]"))
        << response;
    return available;
  }

  // Expects a JSON error with this status and code and a message.
  static void ExpectError(const Response& response, int status, const std::string& code) {
    EXPECT_EQ(response.status, status) << response;
    EXPECT_EQ(response.Code(), code) << response;
    EXPECT_FALSE(response.Message().empty()) << response;
    EXPECT_EQ(response.Header("Content-Type"), "application/json") << response;
  }

  std::string Metrics(const std::string& token = "") {
    const Response response = HttpClient(http_port_, token).Get("/metrics");
    EXPECT_EQ(response.status, 200) << response;
    return response.text;
  }

  int http_port_ = 0;
  uint16_t resp_port_ = 0;
  uint64_t next_account_ = 1;
};

// A same-shard transfer of "1.00" USD moves 100 minor units; the same request again
// is a replay (200, nothing moves), also with the amount written as "1"; the same
// transaction_id with another amount is 409 TXID_REUSED.
TEST_F(RouterHttpTest, SameShardTransferMovesMoneyOnceAndReplaysAndRefusesAReusedId) {
  const std::string x = OpenAccount("shard-0", "USD", 1000), y = OpenAccount("shard-0", "USD", 0);
  HttpClient client(http_port_);

  const Json committed = {{"transaction_id", "http-tx-1"}, {"status", "committed"}, {"from_account", x},
                          {"to_account", y},               {"amount", "1.00"},      {"amount_minor", 100},
                          {"currency", "USD"}};
  const Response first = client.Transfer(TransferBody(x, y, "1.00", "USD", "http-tx-1"));
  EXPECT_EQ(first.status, 200) << first;
  EXPECT_EQ(first.json, committed) << first;
  EXPECT_EQ(first.Header("Content-Type"), "application/json");
  EXPECT_EQ(Available(x), 900);
  EXPECT_EQ(Available(y), 100);
  EXPECT_EQ(CallOnce(ShardPort("shard-0"), {"BALANCE", x}), "[:900, :0, USD]");  // the shard itself
  const Response balance = client.Balance(x);
  EXPECT_EQ(balance.json, (Json{{"account", x},
                                {"currency", "USD"},
                                {"available", "9.00"},
                                {"held", "0.00"},
                                {"available_minor", 900},
                                {"held_minor", 0},
                                {"minor_unit_exponent", 2}}))
      << balance;

  // Replays: the first outcome again, nothing moves.
  for (const std::string amount : {"1.00", "1"}) {
    const Response again = client.Transfer(TransferBody(x, y, amount, "USD", "http-tx-1"));
    EXPECT_EQ(again.status, 200) << again;
    EXPECT_EQ(again.json, committed) << again;
  }
  EXPECT_EQ(Available(x), 900);
  EXPECT_EQ(Available(y), 100);

  // The same id for another transfer.
  const Response reused = client.Transfer(TransferBody(x, y, "2.00", "USD", "http-tx-1"));
  ExpectError(reused, 409, "TXID_REUSED");
  EXPECT_EQ(Available(x), 900);
  EXPECT_EQ(Available(y), 100);
  const std::string tx = CallOnce(resp_port_, {"TX", "http-tx-1"});
  EXPECT_TRUE(absl::StrContains(tx, "state, committed")) << tx;
  EXPECT_TRUE(absl::StrContains(tx, "amount, :100")) << tx;
}

// Valid requests the ledger refuses are 409 (GET of an unknown account 404). None of
// them changes a balance. A cross-shard transfer goes through the executors: 200.
TEST_F(RouterHttpTest, LedgerRefusalsAre409WithNothingChangedAndCrossShardMoves) {
  const std::string x = OpenAccount("shard-0", "USD", 1000), y = OpenAccount("shard-0", "USD", 0);
  const std::string euro = OpenAccount("shard-0", "EUR", 0), never_opened = FreshAccount("shard-0");
  const std::string far = OpenAccount("shard-1", "USD", 1000);
  HttpClient client(http_port_);

  ExpectError(client.Transfer(TransferBody(x, y, "10.01", "USD", "short-1")), 409, "INSUFFICIENT_FUNDS");
  ExpectError(client.Transfer(TransferBody(x, never_opened, "1.00", "USD", "unknown-1")), 409, "UNKNOWN_ACCOUNT");
  ExpectError(client.Balance(never_opened), 404, "UNKNOWN_ACCOUNT");
  ExpectError(client.Transfer(TransferBody(x, euro, "1.00", "USD", "mismatch-1")), 409, "CURRENCY_MISMATCH");
  ExpectError(client.Transfer(TransferBody(x, x, "1.00", "USD", "same-1")), 409, "SAME_ACCOUNT");
  // A refusal replayed is the same refusal.
  ExpectError(client.Transfer(TransferBody(x, y, "10.01", "USD", "short-1")), 409, "INSUFFICIENT_FUNDS");
  EXPECT_EQ(Available(x), 1000);
  EXPECT_EQ(Available(y), 0);
  EXPECT_EQ(Available(euro), 0);

  const Response cross = client.Transfer(TransferBody(x, far, "1.00", "USD", "cross-1"));
  EXPECT_EQ(cross.status, 200) << cross;
  EXPECT_EQ(Available(x), 900);
  EXPECT_TRUE(Eventually([&] { return Available(far) == 1100; }));
  ExpectError(client.Transfer(TransferBody(far, euro, "1.00", "USD", "cross-2")), 409, "CURRENCY_MISMATCH");
  EXPECT_EQ(Available(far), 1100);
  EXPECT_EQ(Sample(Metrics(), "wallet_router_cross_shard_refused_total"), 0);
}

// Bodies the HTTP layer refuses: 400 with their code, and nothing reaches the core
// or a shard.
TEST_F(RouterHttpTest, MalformedBodiesAre400WithTheirCodesAndReachNoShard) {
  const std::string x = OpenAccount("shard-0", "USD", 1000), y = OpenAccount("shard-0", "USD", 0);
  const std::string transfers = R"(wallet_router_calls_total{command="TRANSFER"})";
  const double calls_before = Sample(Metrics(), transfers);
  const uint64_t sent_before = InfoNumber(CallOnce(resp_port_, {"INFO", "shards"}), "shard_commands_sent");

  Json missing = TransferJson(x, y, "1.00", "USD", "bad-1");
  missing.erase("amount");
  Json extra = TransferJson(x, y, "1.00", "USD", "bad-1");
  extra["memo"] = "hello";
  Json number = TransferJson(x, y, "1.00", "USD", "bad-1");
  number["amount"] = 1.0;
  struct Case {
    std::string body;
    std::string code;
  };
  const std::vector<Case> cases = {
      {missing.dump(), "MISSING_FIELD"},
      {extra.dump(), "UNKNOWN_FIELD"},
      {"not json", "BAD_JSON"},
      {R"({"from_account": ")" + x + "\"", "BAD_JSON"},
      {"[1, 2]", "BAD_JSON"},
      {TransferBody(x, y, "1.001", "USD", "bad-1"), "TOO_MANY_FRACTION_DIGITS"},
      {TransferBody(x, y, "1.000", "USD", "bad-1"), "TOO_MANY_FRACTION_DIGITS"},
      {TransferBody(x, y, "1.5", "JPY", "bad-1"), "TOO_MANY_FRACTION_DIGITS"},
      {TransferBody(x, y, "-1", "USD", "bad-1"), "BAD_AMOUNT"},
      {TransferBody(x, y, "1e2", "USD", "bad-1"), "BAD_AMOUNT"},
      {TransferBody(x, y, "", "USD", "bad-1"), "BAD_AMOUNT"},
      {TransferBody(x, y, "0", "USD", "bad-1"), "BAD_AMOUNT"},
      {TransferBody(x, y, " 1.00", "USD", "bad-1"), "BAD_AMOUNT"},
      {number.dump(), "BAD_AMOUNT"},
      {TransferBody(x, y, "1.00", "XYZ", "bad-1"), "UNKNOWN_CURRENCY"},
      {TransferBody(x, y, "1.00", "usd", "bad-1"), "UNKNOWN_CURRENCY"},
      {TransferBody("0" + x, y, "1.00", "USD", "bad-1"), "BAD_ACCOUNT"},
      {TransferBody(x, y, "1.00", "USD", std::string(65, 't')), "BAD_TRANSACTION_ID"},
  };
  HttpClient client(http_port_);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    ExpectError(client.Transfer(c.body), 400, c.code);
  }
  Json bad_mode = TransferJson(x, y, "1.00", "USD", "bad-1");
  bad_mode["mode"] = "2pc";
  ExpectError(client.Transfer(bad_mode.dump()), 400, "BAD_MODE");
  ExpectError(client.Balance("07"), 400, "BAD_ACCOUNT");

  EXPECT_EQ(Sample(Metrics(), transfers), calls_before);
  EXPECT_EQ(InfoNumber(CallOnce(resp_port_, {"INFO", "shards"}), "shard_commands_sent"), sent_before);
  EXPECT_EQ(Available(x), 1000);
  EXPECT_EQ(Available(y), 0);
  EXPECT_EQ(CallOnce(resp_port_, {"TX", "bad-1"}), "(nil)");
}

// /healthz answers 200 with the shards up; /metrics counts TRANSFER calls from both
// front ends; a router with a password wants "Authorization: Bearer" everywhere but
// /healthz.
TEST_F(RouterHttpTest, HealthMetricsAndBearerAuthentication) {
  const std::string x = OpenAccount("shard-1", "EUR", 1000), y = OpenAccount("shard-1", "EUR", 0);
  HttpClient client(http_port_);

  const Response health = client.Get("/healthz");
  EXPECT_EQ(health.status, 200) << health;
  EXPECT_EQ(health.json.value("status", ""), "ok") << health;
  EXPECT_EQ(health.json.value("map_version", -2), 0) << health;
  EXPECT_EQ(health.json.value("live_shards", -1), kShardCount) << health;

  const std::string transfers = R"(wallet_router_calls_total{command="TRANSFER"})";
  const double before = Sample(Metrics(), transfers);
  EXPECT_GE(before, 0) << Metrics();
  EXPECT_EQ(client.Transfer(TransferBody(x, y, "2.50", "EUR", "metrics-1")).status, 200);
  ExpectError(client.Transfer(TransferBody(x, y, "100.00", "EUR", "metrics-2")), 409, "INSUFFICIENT_FUNDS");
  EXPECT_EQ(CallOnce(resp_port_, {"TRANSFER", x, y, "50", "EUR", "metrics-3"}), "+OK");
  std::string metrics;
  EXPECT_TRUE(Eventually([&] {
    metrics = Metrics();
    return Sample(metrics, transfers) == before + 3;
  })) << metrics;
  EXPECT_EQ(Sample(metrics, "wallet_router_up"), 1) << metrics;
  EXPECT_GE(Sample(metrics, R"(wallet_http_requests_total{endpoint="balance_transfer",status="200"})"), 1)
      << metrics;
  EXPECT_GE(Sample(metrics, R"(wallet_router_errors_total{code="INSUFFICIENT_FUNDS"})"), 1) << metrics;
  EXPECT_EQ(Available(x), 700);
  EXPECT_EQ(Available(y), 300);

  // A second router, with a password.
  ASSERT_TRUE(dir_->WriteFile("client-secret", "s3cret\n", 0600).ok());
  const int secured = StartHttpRouter("router-b", {"--password_file=" + dir_->File("client-secret")});
  ASSERT_NE(secured, 0);
  const std::string body = TransferBody(x, y, "1.00", "EUR", "auth-1");
  for (const std::string token : {"", "wrong"}) {
    SCOPED_TRACE("token '" + token + "'");
    HttpClient refused(secured, token);
    ExpectError(refused.Balance(x), 401, "UNAUTHORIZED");
    ExpectError(refused.Get("/metrics"), 401, "UNAUTHORIZED");
    EXPECT_EQ(refused.Get("/healthz").status, 200);
    const Response transfer = refused.Transfer(body);
    ExpectError(transfer, 401, "UNAUTHORIZED");
    EXPECT_EQ(transfer.Header("WWW-Authenticate"), "Bearer");
    // The same kept-alive connection still works after a refused body.
    ExpectError(refused.Balance(x), 401, "UNAUTHORIZED");
  }
  EXPECT_EQ(Available(x), 700);  // nothing moved
  HttpClient authorized(secured, "s3cret");
  const Response done = authorized.Transfer(body);
  EXPECT_EQ(done.status, 200) << done;
  EXPECT_EQ(done.json.value("amount_minor", 0), 100) << done;
  EXPECT_EQ(authorized.Balance(x).json.value("available", ""), "6.00");
  EXPECT_EQ(Word(CallOnce(routers_.at("router-b")->port(), {"BALANCE", x})), "NOAUTH");
}

// Found by HealthMetricsAndBearerAuthentication (about 1 run in 6 with a kept-alive
// connection): the router used to answer 401 before reading the request's body, so a
// body that arrived after the headers stayed on the connection and the next request
// was parsed from it (400 instead of that request's answer). Here the body is sent
// late on purpose: the 401 must come after it, and the next request on the same
// connection must get its own answer.
TEST_F(RouterHttpTest, AConnectionSurvivesA401WhoseBodyCameLate) {
  ASSERT_TRUE(dir_->WriteFile("client-secret", "s3cret\n", 0600).ok());
  const int secured = StartHttpRouter("router-b", {"--password_file=" + dir_->File("client-secret")});
  ASSERT_NE(secured, 0);
  const std::string body = TransferBody("1", "2", "1.00", "USD", "late-body");
  RawConnection connection(secured);
  ASSERT_TRUE(connection.Send(absl::StrCat("POST ", kTransferPath, " HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                           "Authorization: Bearer wrong\r\nContent-Length: ", body.size(),
                                           "\r\n\r\n")));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the server has the headers alone
  ASSERT_TRUE(connection.Send(body));
  const std::string first = connection.ReadResponse();
  EXPECT_TRUE(absl::StartsWith(first, "HTTP/1.1 401 ")) << first;
  // cpp-httplib does not serve pipelined requests (it waits for the socket to turn
  // readable again), so the next request goes once the answer is in, as clients do.
  ASSERT_TRUE(connection.Send("GET /v1/wallet/balance/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Authorization: Bearer wrong\r\n\r\n"));
  const std::string next = connection.ReadResponse();
  EXPECT_TRUE(absl::StartsWith(next, "HTTP/1.1 401 ")) << next;
}

// The owning shard frozen: the transfer's outcome is unknown (503/504, "retry with
// the same transaction_id"). Stopped: still 503, the other shard serves on. Restarted
// on its data: the same request retried is 200, and the money moved exactly once
// whether or not the first attempt ran.
TEST_F(RouterHttpTest, TransferWhileItsShardIsDownIsAppliedOnceByRetryingAfterTheRestart) {
  const std::string x = OpenAccount("shard-0", "USD", 1000), y = OpenAccount("shard-0", "USD", 0);
  const std::string other = OpenAccount("shard-1", "USD", 1000);
  HttpClient client(http_port_);
  const std::string body = TransferBody(x, y, "1.00", "USD", "during-outage");

  // Frozen: the router sends the call, gets no reply within --command_timeout_ms.
  ServerProcess* shard = shards_.at("shard-0").get();
  ASSERT_TRUE(shard->process().Freeze().ok());
  const Response unknown = client.Transfer(body);
  EXPECT_TRUE(unknown.status == 503 || unknown.status == 504) << unknown;
  EXPECT_TRUE(unknown.Code() == "UNAVAILABLE" || unknown.Code() == "TIMEOUT") << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.Message(), "outcome unknown") ||
              absl::StrContains(unknown.Message(), "outcome is unknown"))
      << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.Message(), "retry")) << unknown;
  if (unknown.status == 503) {
    EXPECT_EQ(unknown.Header("Retry-After"), "1") << unknown;
  }

  // Stopped (thawed first, so the call may still run before the shard exits).
  ExitStatus stopped = shard->Stop();
  EXPECT_TRUE(stopped.success()) << stopped.ToString();
  const Response down = client.Transfer(body);
  EXPECT_EQ(down.status, 503) << down;
  EXPECT_EQ(down.Code(), "UNAVAILABLE") << down;
  EXPECT_TRUE(absl::StrContains(down.Message(), "retry")) << down;
  ExpectError(client.Balance(x), 503, "UNAVAILABLE");
  EXPECT_EQ(client.Balance(other).status, 200);  // the other shard serves on
  EXPECT_TRUE(Eventually([&] { return client.Get("/healthz").json.value("live_shards", -1) == 1; }));

  // Restarted on the same data folder: retried with the same transaction_id until
  // a final answer, as a client must.
  ASSERT_NE(StartShard("shard-0"), nullptr);
  Response retried;
  EXPECT_TRUE(Eventually([&] {
    retried = client.Transfer(body);
    return retried.status != 503 && retried.status != 504;
  })) << retried;
  EXPECT_EQ(retried.status, 200) << retried;
  EXPECT_EQ(retried.json.value("status", ""), "committed") << retried;
  EXPECT_EQ(Available(x), 900);
  EXPECT_EQ(Available(y), 100);
  EXPECT_EQ(Available(other), 1000);
  const std::string audit = CallOnce(ShardPort("shard-0"), {"AUDIT"});
  EXPECT_TRUE(absl::StrContains(audit, "conserved, :1")) << audit;
}

}  // namespace
}  // namespace wallet::test
