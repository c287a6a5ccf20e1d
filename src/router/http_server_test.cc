// Unit test of HttpServer: the real server on a free loopback port, a real EventLoop
// thread, and a fake Router (the one class under test here is the HTTP front end;
// tests/ drive real routers and shards end to end). Requests go through
// cpp-httplib's client, as a caller would send them.
#include "router/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/result_code.h"

namespace wallet::router {
namespace {

using Json = nlohmann::json;
using shardlink::ShardReply;

ShardReply OkReply() {
  ShardReply reply;
  reply.type = ShardReply::Type::kStatus;
  reply.text = "OK";
  return reply;
}

ShardReply ErrorReplyOf(std::string line) {
  ShardReply reply;
  reply.type = ShardReply::Type::kError;
  reply.text = std::move(line);
  return reply;
}

ShardReply BalanceReply(int64_t available, int64_t held, std::string currency) {
  ShardReply reply;
  reply.type = ShardReply::Type::kArray;
  reply.elements.resize(3);
  reply.elements[0].type = ShardReply::Type::kInteger;
  reply.elements[0].integer = available;
  reply.elements[1].type = ShardReply::Type::kInteger;
  reply.elements[1].integer = held;
  reply.elements[2].type = ShardReply::Type::kBulk;
  reply.elements[2].text = std::move(currency);
  return reply;
}

// A fake router core. By default it behaves like a small ledger's front: TRANSFER
// is idempotent by transaction id (same arguments: +OK again; other arguments:
// -TXID_REUSED), BALANCE answers [12345, 50, USD]. A test can script the reply to
// the next calls, or make them never answer. Called on the loop thread only, read
// by the test thread: everything under one mutex.
class FakeRouter : public Router {
 public:
  using Router::Execute;
  void Execute(std::vector<std::string> args, RouterCallback done, uint64_t /*order_key*/) override {
    std::optional<ShardReply> reply;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      calls_.push_back(args);
      if (silent_) {
        parked_.push_back(std::move(done));  // never answered
        return;
      }
      if (scripted_.has_value()) {
        reply = scripted_;
      } else if (args[0] == "TRANSFER") {
        std::vector<std::string> rest(args.begin() + 1, args.end());
        auto [it, inserted] = transfers_.emplace(args[5], rest);
        reply = inserted || it->second == rest
                    ? OkReply()
                    : ErrorReplyOf("TXID_REUSED transaction id " + args[5] +
                                   " was used with other arguments");
      } else if (args[0] == "BALANCE") {
        reply = BalanceReply(12345, 50, "USD");
      } else {
        reply = ErrorReplyOf("UNKNOWN_COMMAND " + args[0]);
      }
    }
    done(std::move(*reply));
  }

  RouterStats stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void Script(std::optional<ShardReply> reply) {
    std::lock_guard<std::mutex> lock(mutex_);
    scripted_ = std::move(reply);
  }
  void SetSilent(bool silent) {
    std::lock_guard<std::mutex> lock(mutex_);
    silent_ = silent;
  }
  void SetStats(const RouterStats& stats) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_ = stats;
  }
  std::vector<std::vector<std::string>> calls() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::vector<std::string>> calls_;
  std::optional<ShardReply> scripted_;
  bool silent_ = false;
  std::vector<RouterCallback> parked_;
  std::map<std::string, std::vector<std::string>> transfers_;
  RouterStats stats_;
};

// What a caller sees of one response.
struct HttpResult {
  int status = 0;
  std::string text;
  Json body;  // discarded when the text is not JSON
  httplib::Headers headers;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RouterStats stats;
    stats.map_version_now = 3;
    stats.live_shards_now = 2;
    router_.SetStats(stats);
  }

  void TearDown() override {
    server_.reset();
    if (loop_thread_.joinable()) {
      loop_->Stop();
      loop_thread_.join();
    }
  }

  // Starts the loop (running on its own thread unless `run_loop` is false) and the
  // server on a free loopback port.
  void Start(HttpServerOptions options = {}, EventLoopOptions loop_options = {},
             bool run_loop = true) {
    auto loop = EventLoop::Create(loop_options);
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    if (run_loop) {
      loop_thread_ = std::thread([this] { ASSERT_TRUE(loop_->Run().ok()); });
    }
    options.port = 0;
    auto server = HttpServer::Start(loop_.get(), &router_, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->port(), 0);
  }

  // A fresh client per call: no state carried between requests.
  HttpResult Send(const std::string& method, const std::string& path, const std::string& body = "",
                  const httplib::Headers& headers = {}) {
    httplib::Client client("127.0.0.1", server_->port());
    client.set_read_timeout(std::chrono::seconds(10));
    httplib::Result result = [&] {
      if (method == "POST") return client.Post(path, headers, body, "application/json");
      if (method == "PUT") return client.Put(path, headers, body, "application/json");
      if (method == "DELETE") return client.Delete(path, headers);
      return client.Get(path, headers);
    }();
    HttpResult out;
    if (!result) {
      ADD_FAILURE() << method << " " << path << ": " << httplib::to_string(result.error());
      return out;
    }
    out.status = result->status;
    out.text = result->body;
    out.headers = result->headers;
    out.body = Json::parse(out.text, nullptr, /*allow_exceptions=*/false);
    return out;
  }

  HttpResult PostTransfer(const Json& body, const httplib::Headers& headers = {}) {
    return Send("POST", "/v1/wallet/balance_transfer", body.dump(), headers);
  }

  // A good transfer body; tests change one field at a time.
  static Json GoodTransfer() {
    return Json{{"from_account", "7"},
                {"to_account", "8"},
                {"amount", "1.00"},
                {"currency", "USD"},
                {"transaction_id", "tx-1"}};
  }

  static std::string ErrorCode(const HttpResult& result) {
    if (!result.body.is_object() || !result.body.contains("error"))
      return "<no error object: " + result.text + ">";
    return result.body["error"].value("code", "<no code>");
  }

  // Expects a JSON error reply with this status and code, with a message.
  static void ExpectError(const HttpResult& result, int status, const std::string& code) {
    EXPECT_EQ(result.status, status) << result.text;
    EXPECT_EQ(ErrorCode(result), code) << result.text;
    if (result.body.is_object() && result.body.contains("error")) {
      EXPECT_TRUE(result.body["error"]["message"].is_string()) << result.text;
      EXPECT_FALSE(result.body["error"]["message"].get<std::string>().empty()) << result.text;
    }
    auto type = result.headers.find("Content-Type");
    ASSERT_NE(type, result.headers.end());
    EXPECT_EQ(type->second, "application/json");
  }

  // The server counts a request after its response is written, so a client may
  // see the response first: waits (at most 5 s) for the count to reach `expected`.
  uint64_t WaitForRequestCount(HttpEndpoint endpoint, int status, uint64_t expected) {
    for (int waited_ms = 0; waited_ms < 5000; ++waited_ms) {
      if (server_->metrics().requests(endpoint, status) >= expected) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return server_->metrics().requests(endpoint, status);
  }

  FakeRouter router_;
  std::unique_ptr<EventLoop> loop_;
  std::thread loop_thread_;
  std::unique_ptr<HttpServer> server_;
};

// --- Transfers ------------------------------------------------------------------------

TEST_F(HttpServerTest, GoodTransferSendsMinorUnitsAndAnswersWithTheNormalisedRequest) {
  Start();
  HttpResult result = PostTransfer(GoodTransfer());
  ASSERT_EQ(result.status, 200) << result.text;
  EXPECT_EQ(result.body, Json::parse(R"({"transaction_id": "tx-1", "status": "committed",
      "from_account": "7", "to_account": "8", "amount": "1.00", "amount_minor": 100,
      "currency": "USD"})"));
  ASSERT_EQ(router_.calls().size(), 1u);
  EXPECT_EQ(router_.calls()[0],
            (std::vector<std::string>{"TRANSFER", "7", "8", "100", "USD", "tx-1"}));
}

TEST_F(HttpServerTest, AccountsMayBeJsonIntegersAndFewerFractionDigitsAreFine) {
  Start();
  Json body = GoodTransfer();
  body["from_account"] = 7;
  body["to_account"] = 18446744073709551615u;
  body["amount"] = "2.5";
  HttpResult result = PostTransfer(body);
  ASSERT_EQ(result.status, 200) << result.text;
  EXPECT_EQ(result.body["to_account"], "18446744073709551615");
  EXPECT_EQ(result.body["amount"], "2.50");
  EXPECT_EQ(
      router_.calls().at(0),
      (std::vector<std::string>{"TRANSFER", "7", "18446744073709551615", "250", "USD", "tx-1"}));
}

TEST_F(HttpServerTest, ModeIsPassedOn) {
  Start();
  Json body = GoodTransfer();
  body["mode"] = "saga";
  ASSERT_EQ(PostTransfer(body).status, 200);
  EXPECT_EQ(router_.calls().at(0),
            (std::vector<std::string>{"TRANSFER", "7", "8", "100", "USD", "tx-1", "MODE", "saga"}));
  body["mode"] = "fast";
  ExpectError(PostTransfer(body), 400, "BAD_MODE");
}

TEST_F(HttpServerTest, MissingFieldIsRefusedBeforeTheRouter) {
  Start();
  for (const char* field : {"from_account", "to_account", "amount", "currency", "transaction_id"}) {
    SCOPED_TRACE(field);
    Json body = GoodTransfer();
    body.erase(field);
    HttpResult result = PostTransfer(body);
    ExpectError(result, 400, "MISSING_FIELD");
    EXPECT_NE(result.body["error"]["message"].get<std::string>().find(field), std::string::npos);
    body = GoodTransfer();
    body[field] = nullptr;  // null counts as missing
    ExpectError(PostTransfer(body), 400, "MISSING_FIELD");
  }
  EXPECT_TRUE(router_.calls().empty());
}

TEST_F(HttpServerTest, BadAmountsAreRefused) {
  Start();
  struct Case {
    Json amount;
    const char* currency;
    const char* code;
  };
  const Case cases[] = {
      {"1.001", "USD", "TOO_MANY_FRACTION_DIGITS"},
      {"1.000", "USD", "TOO_MANY_FRACTION_DIGITS"},
      {"1.0001", "BHD", "TOO_MANY_FRACTION_DIGITS"},
      {"1.5", "JPY", "TOO_MANY_FRACTION_DIGITS"},
      {"-1", "USD", "BAD_AMOUNT"},
      {"-1.00", "USD", "BAD_AMOUNT"},
      {"1e2", "USD", "BAD_AMOUNT"},
      {"", "USD", "BAD_AMOUNT"},
      {" 1.00", "USD", "BAD_AMOUNT"},
      {"1.00 ", "USD", "BAD_AMOUNT"},
      {"+1.00", "USD", "BAD_AMOUNT"},
      {"0", "USD", "BAD_AMOUNT"},
      {"0.00", "USD", "BAD_AMOUNT"},
      {"1.", "USD", "BAD_AMOUNT"},
      {".5", "USD", "BAD_AMOUNT"},
      {"01.00", "USD", "BAD_AMOUNT"},
      {"92233720368547758.08", "USD", "BAD_AMOUNT"},  // int64 + 1 minor units
      {"9223372036854775808", "JPY", "BAD_AMOUNT"},
      {1, "USD", "BAD_AMOUNT"},  // a JSON number, not a string
      {1.5, "USD", "BAD_AMOUNT"},
      {true, "USD", "BAD_AMOUNT"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.amount.dump() + " " + c.currency);
    Json body = GoodTransfer();
    body["amount"] = c.amount;
    body["currency"] = c.currency;
    ExpectError(PostTransfer(body), 400, c.code);
  }
  EXPECT_TRUE(router_.calls().empty());
}

TEST_F(HttpServerTest, CurrencyExponentDecidesTheMinorUnits) {
  Start();
  struct Case {
    const char* amount;
    const char* currency;
    const char* minor;
  };
  const Case cases[] = {{"100", "JPY", "100"},
                        {"1.234", "KWD", "1234"},
                        {"12.5", "EUR", "1250"},
                        {"7", "KRW", "7"},
                        {"0.001", "TND", "1"}};
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.amount) + " " + c.currency);
    Json body = GoodTransfer();
    body["amount"] = c.amount;
    body["currency"] = c.currency;
    body["transaction_id"] = "tx-" + std::to_string(n++);
    HttpResult result = PostTransfer(body);
    ASSERT_EQ(result.status, 200) << result.text;
    EXPECT_EQ(router_.calls().back().at(3), c.minor);
    EXPECT_EQ(result.body["amount_minor"].get<int64_t>(), std::atoll(c.minor));
  }
}

TEST_F(HttpServerTest, UnknownCurrencyIsRefused) {
  Start();
  for (Json currency : {Json("XYZ"), Json("usd"), Json("XAU"), Json("US"), Json(840), Json("")}) {
    SCOPED_TRACE(currency.dump());
    Json body = GoodTransfer();
    body["currency"] = currency;
    ExpectError(PostTransfer(body), 400, "UNKNOWN_CURRENCY");
  }
  EXPECT_TRUE(router_.calls().empty());
}

TEST_F(HttpServerTest, BadAccountsAreRefused) {
  Start();
  // Floats, negatives, overflow, signs, leading zeros, spaces, other types.
  for (const char* account :
       {"-1", "1.5", "1e2", "1.0", "18446744073709551616", "\"-1\"", "\"+1\"", "\"01\"", "\" 7\"",
        "\"abc\"", "\"\"", "\"18446744073709551616\"", "true", "\"7.0\""}) {
    SCOPED_TRACE(account);
    for (const char* field : {"from_account", "to_account"}) {
      Json body = GoodTransfer();
      body[field] = Json::parse(account);
      ExpectError(PostTransfer(body), 400, "BAD_ACCOUNT");
    }
  }
  EXPECT_TRUE(router_.calls().empty());
}

TEST_F(HttpServerTest, MalformedBodiesAreRefused) {
  Start();
  struct Case {
    std::string body;
    const char* code;
  };
  const std::string good = GoodTransfer().dump();
  const Case cases[] = {
      {"", "BAD_JSON"},
      {"not json", "BAD_JSON"},
      {good + "x", "BAD_JSON"},
      {"[1, 2]", "BAD_JSON"},
      {"\"text\"", "BAD_JSON"},
      {R"({"from_account": "7", "to_account": "8", "amount": "1.00", "currency": "USD",
           "transaction_id": "tx-1", "amount": "1000.00"})",
       "BAD_JSON"},  // a field twice
      {R"({"from_account": {"id": 7}, "to_account": "8", "amount": "1.00", "currency": "USD",
           "transaction_id": "tx-1"})",
       "BAD_JSON"},  // nested
      {R"({"from_account": "7", "to_account": "8", "amount": "1.00", "currency": "USD",
           "transaction_id": "tx-1", "memo": "hi"})",
       "UNKNOWN_FIELD"},
      {R"({"from_account": "7", "to_account": "8", "amount": "1.00", "currency": "USD",
           "transaction_id": ""})",
       "BAD_TRANSACTION_ID"},
      {R"({"from_account": "7", "to_account": "8", "amount": "1.00", "currency": "USD",
           "transaction_id": "tx 1"})",
       "BAD_TRANSACTION_ID"},
      {R"({"from_account": "7", "to_account": "8", "amount": "1.00", "currency": "USD",
           "transaction_id": 12})",
       "BAD_TRANSACTION_ID"},
      {R"({"from_account": "7", "to_account": "8", "amount": "1.00", "currency": "USD",
           "transaction_id": ")" +
           std::string(65, 'a') + "\"}",
       "BAD_TRANSACTION_ID"},
      {"{\"from_account\": \"7\xff\"}", "BAD_JSON"},  // invalid UTF-8
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    ExpectError(Send("POST", "/v1/wallet/balance_transfer", c.body), 400, c.code);
  }
  EXPECT_TRUE(router_.calls().empty());
}

TEST_F(HttpServerTest, ReplayIsIdempotentAndReusedTransactionIdIsAConflict) {
  Start();
  ASSERT_EQ(PostTransfer(GoodTransfer()).status, 200);
  HttpResult replay = PostTransfer(GoodTransfer());
  EXPECT_EQ(replay.status, 200) << replay.text;
  EXPECT_EQ(replay.body["status"], "committed");

  Json other = GoodTransfer();
  other["amount"] = "2.00";
  HttpResult reused = PostTransfer(other);
  ExpectError(reused, 409, "TXID_REUSED");
  EXPECT_NE(reused.body["error"]["message"].get<std::string>().find("tx-1"), std::string::npos);
  EXPECT_EQ(router_.calls().size(), 3u);
}

TEST_F(HttpServerTest, RouterAndShardErrorsPassThroughWithTheirCodes) {
  Start();
  struct Case {
    const char* line;
    int status;
    const char* code;
    const char* message;
  };
  const Case cases[] = {
      {"INSUFFICIENT_FUNDS account 7 has 100 available, needs 250", 409, "INSUFFICIENT_FUNDS",
       "account 7 has 100 available, needs 250"},
      {"UNKNOWN_ACCOUNT account 8 is not open", 409, "UNKNOWN_ACCOUNT", "account 8 is not open"},
      {"CURRENCY_MISMATCH account 8 is in EUR", 409, "CURRENCY_MISMATCH", "account 8 is in EUR"},
      {"SAME_ACCOUNT from and to are the same", 409, "SAME_ACCOUNT", "from and to are the same"},
      {"OVERFLOW balance would overflow", 409, "OVERFLOW", "balance would overflow"},
      {"MOVED 17 partition 17 moved", 503, "MOVED", "17 partition 17 moved"},
      {"BUSY too many requests in flight", 503, "BUSY", "too many requests in flight"},
      {"LOG_UNAVAILABLE disk full", 503, "LOG_UNAVAILABLE", "disk full"},
      {"MALFORMED bad txid", 400, "MALFORMED", "bad txid"},
      {"NOAUTH shard wants AUTH", 502, "NOAUTH", "shard wants AUTH"},
      {"CROSS_SHARD_UNSUPPORTED accounts 7 and 8 are on different shards", 422,
       "CROSS_SHARD_UNSUPPORTED", "accounts 7 and 8 are on different shards"},
      {"SHARD_UNAVAILABLE shard 2 is not connected", 503, "SHARD_UNAVAILABLE",
       "shard 2 is not connected"},
      {"not a code at all", 502, "UPSTREAM_ERROR", nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    router_.Script(ErrorReplyOf(c.line));
    HttpResult result = PostTransfer(GoodTransfer());
    ExpectError(result, c.status, c.code);
    if (c.message != nullptr) {
      EXPECT_EQ(result.body["error"]["message"], c.message);
    }
    if (c.status == 503) {
      EXPECT_EQ(result.headers.find("Retry-After")->second, "1");
    }
  }
}

TEST_F(HttpServerTest, NoReplyInTimeIsA504ThatSaysRetryWithTheSameId) {
  HttpServerOptions options;
  options.request_timeout_ms = 200;
  Start(options);
  router_.SetSilent(true);
  HttpResult result = PostTransfer(GoodTransfer());
  ExpectError(result, 504, "TIMEOUT");
  EXPECT_NE(result.body["error"]["message"].get<std::string>().find(
                "outcome is unknown: retry with the same transaction_id"),
            std::string::npos)
      << result.text;
  ExpectError(Send("GET", "/v1/wallet/balance/7"), 504, "TIMEOUT");
}

TEST_F(HttpServerTest, FullLoopQueueIsBusyAndNothingIsSent) {
  HttpServerOptions options;
  options.request_timeout_ms = 100;
  EventLoopOptions loop_options;
  loop_options.max_posted_tasks = 1;
  Start(options, loop_options, /*run_loop=*/false);           // posted tasks are never run
  ExpectError(PostTransfer(GoodTransfer()), 504, "TIMEOUT");  // fills the queue
  HttpResult busy = PostTransfer(GoodTransfer());
  ExpectError(busy, 503, "BUSY");
  EXPECT_EQ(busy.headers.find("Retry-After")->second, "1");
  EXPECT_TRUE(router_.calls().empty());
}

// --- Balance ------------------------------------------------------------------------------

TEST_F(HttpServerTest, BalanceAnswersDecimalAndMinorUnits) {
  Start();
  HttpResult result = Send("GET", "/v1/wallet/balance/7");
  ASSERT_EQ(result.status, 200) << result.text;
  EXPECT_EQ(result.body, Json::parse(R"({"account": "7", "currency": "USD", "available": "123.45",
      "held": "0.50", "available_minor": 12345, "held_minor": 50, "minor_unit_exponent": 2})"));
  EXPECT_EQ(router_.calls().at(0), (std::vector<std::string>{"BALANCE", "7"}));

  router_.Script(BalanceReply(1500, 0, "KWD"));
  EXPECT_EQ(Send("GET", "/v1/wallet/balance/18446744073709551615").body["available"], "1.500");

  // An account opened over RESP in a code outside the ISO table: minor units only.
  router_.Script(BalanceReply(42, 0, "ZZZ"));
  result = Send("GET", "/v1/wallet/balance/9");
  ASSERT_EQ(result.status, 200) << result.text;
  EXPECT_TRUE(result.body["available"].is_null());
  EXPECT_TRUE(result.body["minor_unit_exponent"].is_null());
  EXPECT_EQ(result.body["available_minor"], 42);
}

TEST_F(HttpServerTest, BalanceErrors) {
  Start();
  for (const char* account : {"abc", "-1", "01", "1.5", "18446744073709551616", "%207"}) {
    SCOPED_TRACE(account);
    ExpectError(Send("GET", std::string("/v1/wallet/balance/") + account), 400, "BAD_ACCOUNT");
  }
  EXPECT_TRUE(router_.calls().empty());
  router_.Script(ErrorReplyOf("UNKNOWN_ACCOUNT account 7 is not open"));
  ExpectError(Send("GET", "/v1/wallet/balance/7"), 404, "UNKNOWN_ACCOUNT");
  router_.Script(OkReply());  // not the BALANCE shape
  ExpectError(Send("GET", "/v1/wallet/balance/7"), 502, "UPSTREAM_ERROR");
}

// --- HTTP-level errors and limits -------------------------------------------------------

TEST_F(HttpServerTest, UnknownPathsAndMethodsAreJsonErrors) {
  Start();
  ExpectError(Send("GET", "/nope"), 404, "NOT_FOUND");
  ExpectError(Send("GET", "/v1/wallet/balance/"), 404, "NOT_FOUND");
  ExpectError(Send("POST", "/v1/wallet/balance/7/extra", "{}"), 404, "NOT_FOUND");

  HttpResult get = Send("GET", "/v1/wallet/balance_transfer");
  ExpectError(get, 405, "METHOD_NOT_ALLOWED");
  EXPECT_EQ(get.headers.find("Allow")->second, "POST");
  HttpResult del = Send("DELETE", "/v1/wallet/balance/7");
  ExpectError(del, 405, "METHOD_NOT_ALLOWED");
  EXPECT_EQ(del.headers.find("Allow")->second, "GET, HEAD");
  ExpectError(Send("POST", "/metrics", "{}"), 405, "METHOD_NOT_ALLOWED");
  ExpectError(Send("PUT", "/healthz", "{}"), 405, "METHOD_NOT_ALLOWED");
  EXPECT_TRUE(router_.calls().empty());
}

// True when `received` holds a whole response: headers and Content-Length bytes.
bool IsWholeResponse(const std::string& received) {
  size_t end = received.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  size_t length_at = received.find("Content-Length: ");
  if (length_at == std::string::npos || length_at > end) return true;
  size_t length = std::strtoul(received.c_str() + length_at + 16, nullptr, 10);
  return received.size() >= end + 4 + length;
}

// Sends raw bytes on a new connection and returns the response (read until it is
// whole, the server closes, or 5 s pass).
std::string SendRaw(int port, const std::string& bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string received;
  char buffer[4096];
  while (!IsWholeResponse(received)) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    received.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return received;
}

TEST_F(HttpServerTest, UnparsableRequestsGetAJsonError) {
  Start();
  std::string reply = SendRaw(server_->port(), "GARBAGE\r\n\r\n");
  EXPECT_EQ(reply.rfind("HTTP/1.1 400 ", 0), 0u) << reply;
  EXPECT_NE(reply.find("\"code\":\"BAD_REQUEST\""), std::string::npos) << reply;
  reply =
      SendRaw(server_->port(), "GET /" + std::string(10000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(reply.rfind("HTTP/1.1 414 ", 0), 0u) << reply;
  EXPECT_NE(reply.find("\"code\":\"URI_TOO_LONG\""), std::string::npos) << reply;
  EXPECT_TRUE(router_.calls().empty());
}

TEST_F(HttpServerTest, BodyAboveTheLimitIs413) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  Start(options);
  Json body = GoodTransfer();
  body["transaction_id"] = std::string(2000, 'x');
  ExpectError(PostTransfer(body), 413, "PAYLOAD_TOO_LARGE");
  EXPECT_TRUE(router_.calls().empty());
  EXPECT_EQ(WaitForRequestCount(HttpEndpoint::kBalanceTransfer, 413, 1), 1u);
  EXPECT_EQ(server_->metrics().errors("PAYLOAD_TOO_LARGE"), 1u);
  EXPECT_EQ(PostTransfer(GoodTransfer()).status, 200);  // the server goes on
}

TEST_F(HttpServerTest, PasswordGuardsEverythingButHealthz) {
  HttpServerOptions options;
  options.password = "s3cret";
  Start(options);
  HttpResult none = PostTransfer(GoodTransfer());
  ExpectError(none, 401, "UNAUTHORIZED");
  EXPECT_EQ(none.headers.find("WWW-Authenticate")->second, "Bearer");
  ExpectError(PostTransfer(GoodTransfer(), {{"Authorization", "Bearer wrong"}}), 401,
              "UNAUTHORIZED");
  ExpectError(PostTransfer(GoodTransfer(), {{"Authorization", "Bearer s3cret2"}}), 401,
              "UNAUTHORIZED");
  ExpectError(PostTransfer(GoodTransfer(), {{"Authorization", "Basic s3cret"}}), 401,
              "UNAUTHORIZED");
  ExpectError(Send("GET", "/v1/wallet/balance/7"), 401, "UNAUTHORIZED");
  ExpectError(Send("GET", "/metrics"), 401, "UNAUTHORIZED");
  EXPECT_TRUE(router_.calls().empty());
  EXPECT_EQ(WaitForRequestCount(HttpEndpoint::kBalanceTransfer, 401, 4), 4u);
  EXPECT_EQ(server_->metrics().errors("UNAUTHORIZED"), 6u);

  const httplib::Headers auth = {{"Authorization", "Bearer s3cret"}};
  EXPECT_EQ(PostTransfer(GoodTransfer(), auth).status, 200);
  EXPECT_EQ(Send("GET", "/v1/wallet/balance/7", "", auth).status, 200);
  EXPECT_EQ(Send("GET", "/metrics", "", auth).status, 200);
  EXPECT_EQ(Send("GET", "/healthz").status, 200);
}

TEST_F(HttpServerTest, BadOptionsAreRefused) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  HttpServerOptions options;
  options.worker_threads = 0;
  EXPECT_EQ(HttpServer::Start(loop->get(), &router_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = {};
  options.request_timeout_ms = 0;
  EXPECT_EQ(HttpServer::Start(loop->get(), &router_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A port in use.
  Start();
  options = {};
  options.port = server_->port();
  EXPECT_EQ(HttpServer::Start(loop->get(), &router_, options).status().code(),
            absl::StatusCode::kUnavailable);
}

// --- Threads, connections and shutdown ------------------------------------------------------

TEST_F(HttpServerTest, OneKeepAliveConnectionServesManyRequests) {
  Start();
  httplib::Client client("127.0.0.1", server_->port());
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);  // else Nagle and delayed ACKs add ~40 ms per request
  for (int i = 0; i < 20; ++i) {
    Json body = GoodTransfer();
    body["transaction_id"] = "keep-" + std::to_string(i);
    auto result = client.Post("/v1/wallet/balance_transfer", body.dump(), "application/json");
    ASSERT_TRUE(result) << httplib::to_string(result.error());
    EXPECT_EQ(result->status, 200) << result->body;
  }
  EXPECT_EQ(router_.calls().size(), 20u);
}

// More clients than workers and queue slots: the accept thread waits for a free
// slot instead of queueing without bound, and every request is still answered.
TEST_F(HttpServerTest, MoreClientsThanWorkersAreAllServed) {
  HttpServerOptions options;
  options.worker_threads = 2;
  options.max_queued_connections = 1;
  Start(options);
  constexpr int kClients = 12;
  constexpr int kRequestsEach = 10;
  std::vector<std::thread> clients;
  std::mutex mutex;
  std::map<int, int> statuses;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kRequestsEach; ++i) {
        httplib::Client client("127.0.0.1", server_->port());
        client.set_read_timeout(std::chrono::seconds(30));
        Json body = GoodTransfer();
        body["transaction_id"] = "c" + std::to_string(c) + "-" + std::to_string(i);
        auto result = client.Post("/v1/wallet/balance_transfer", body.dump(), "application/json");
        std::lock_guard<std::mutex> lock(mutex);
        ++statuses[result ? result->status : -1];
      }
    });
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(statuses, (std::map<int, int>{{200, kClients * kRequestsEach}}));
  EXPECT_EQ(router_.calls().size(), static_cast<size_t>(kClients * kRequestsEach));
}

// Stop() while a worker waits for a router that never answers: it returns once
// that request has timed out, and the late reply (never) is harmless.
TEST_F(HttpServerTest, StopWaitsForRequestsInProgressWithinTheirTimeout) {
  HttpServerOptions options;
  options.request_timeout_ms = 300;
  Start(options);
  router_.SetSilent(true);
  HttpResult result;
  std::thread caller([&] { result = PostTransfer(GoodTransfer()); });
  while (router_.calls().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_->Stop();
  caller.join();
  ExpectError(result, 504, "TIMEOUT");
  server_->Stop();  // idempotent
}

// --- Health ------------------------------------------------------------------------------------

TEST_F(HttpServerTest, HealthzNeedsAMapAndALiveShard) {
  Start();
  HttpResult ok = Send("GET", "/healthz");
  ASSERT_EQ(ok.status, 200) << ok.text;
  EXPECT_EQ(ok.body,
            Json::parse(R"({"status": "ok", "map_version": 3, "live_shards": 2, "in_flight": 0})"));

  RouterStats stats;
  stats.map_version_now = -1;
  stats.live_shards_now = 2;
  router_.SetStats(stats);
  HttpResult no_map = Send("GET", "/healthz");
  ExpectError(no_map, 503, "NO_PARTITION_MAP");
  EXPECT_EQ(no_map.body["status"], "unavailable");
  EXPECT_EQ(no_map.body["map_version"], -1);

  stats.map_version_now = 4;
  stats.live_shards_now = 0;
  router_.SetStats(stats);
  ExpectError(Send("GET", "/healthz"), 503, "NO_LIVE_SHARD");
}

TEST_F(HttpServerTest, HealthzIs503WhenTheLoopDoesNotAnswer) {
  HttpServerOptions options;
  options.stats_timeout_ms = 100;
  Start(options, {}, /*run_loop=*/false);
  HttpResult result = Send("GET", "/healthz");
  ExpectError(result, 503, "TIMEOUT");
  EXPECT_EQ(result.body["status"], "unavailable");
}

// --- Metrics ---------------------------------------------------------------------------------

// One parsed sample line of the text format.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses a whole /metrics page line by line, checking the grammar: every line is
// "# HELP name text", "# TYPE name counter|gauge|histogram" or a sample
// `name{label="value",...} number`, and every sample's family had HELP and TYPE
// first (histogram samples: name_bucket/_sum/_count of a histogram family).
std::vector<Sample> ParseExposition(const std::string& page) {
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*)");
  static const std::regex kType(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  static const std::regex kSample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+))");
  static const std::regex kLabel(R"(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)\"(,|$))");
  std::set<std::string> helped;
  std::map<std::string, std::string> types;
  std::vector<Sample> samples;
  std::istringstream lines(page);
  std::string line;
  EXPECT_FALSE(page.empty());
  EXPECT_EQ(page.back(), '\n');
  while (std::getline(lines, line)) {
    SCOPED_TRACE(line);
    std::smatch match;
    if (std::regex_match(line, match, kHelp)) {
      EXPECT_TRUE(helped.insert(match[1]).second) << "HELP twice";
      continue;
    }
    if (std::regex_match(line, match, kType)) {
      EXPECT_TRUE(helped.count(match[1])) << "TYPE before HELP";
      EXPECT_TRUE(types.emplace(match[1], match[2]).second) << "TYPE twice";
      continue;
    }
    if (!std::regex_match(line, match, kSample)) {
      ADD_FAILURE() << "not HELP, TYPE or a sample";
      continue;
    }
    Sample sample;
    sample.name = match[1];
    std::string family = sample.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s = suffix;
      if (!types.count(family) && family.size() > s.size() &&
          family.compare(family.size() - s.size(), s.size(), s) == 0 &&
          types.count(family.substr(0, family.size() - s.size())) &&
          types[family.substr(0, family.size() - s.size())] == "histogram") {
        family = family.substr(0, family.size() - s.size());
      }
    }
    EXPECT_TRUE(types.count(family)) << "sample before its TYPE";
    std::string labels = match[3];
    auto begin = std::sregex_iterator(labels.begin(), labels.end(), kLabel);
    size_t consumed = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      EXPECT_EQ(static_cast<size_t>(it->position()), consumed) << "junk between labels";
      consumed = static_cast<size_t>(it->position() + it->length());
      sample.labels[(*it)[1]] = (*it)[2];
    }
    EXPECT_EQ(consumed, labels.size()) << "unparsed labels";
    std::string number = match[4];
    char* end = nullptr;
    sample.value = std::strtod(number.c_str(), &end);
    EXPECT_TRUE(end != nullptr && *end == '\0') << "bad number " << number;
    samples.push_back(std::move(sample));
  }
  return samples;
}

// The value of the one sample with this name and these labels (all of them).
std::optional<double> Find(const std::vector<Sample>& samples, const std::string& name,
                           const std::map<std::string, std::string>& labels = {}) {
  for (const Sample& sample : samples) {
    if (sample.name == name && sample.labels == labels) return sample.value;
  }
  return std::nullopt;
}

// Checks every histogram series on a page (series: a _bucket name and its labels
// but le): buckets in increasing `le` order, cumulative (non-decreasing), the last
// one +Inf and equal to the series' _count, and a _sum >= 0.
void ExpectHistogramsAreWellFormed(const std::vector<Sample>& samples, size_t expected_series) {
  struct Series {
    double last_le = -1;
    double last_count = 0;
    bool saw_inf = false;
  };
  std::map<std::pair<std::string, std::map<std::string, std::string>>, Series> series;
  const std::string kBucket = "_bucket";
  for (const Sample& sample : samples) {
    if (sample.name.size() <= kBucket.size() ||
        sample.name.compare(sample.name.size() - kBucket.size(), kBucket.size(), kBucket) != 0) {
      continue;
    }
    std::string base = sample.name.substr(0, sample.name.size() - kBucket.size());
    std::map<std::string, std::string> labels = sample.labels;
    ASSERT_TRUE(labels.count("le")) << sample.name;
    std::string le_text = labels["le"];
    labels.erase("le");
    SCOPED_TRACE(base + " le=" + le_text);
    Series& s = series[{base, labels}];
    ASSERT_FALSE(s.saw_inf) << "bucket after +Inf";
    double le = le_text == "+Inf" ? HUGE_VAL : std::strtod(le_text.c_str(), nullptr);
    EXPECT_GT(le, s.last_le);
    EXPECT_GE(sample.value, s.last_count);
    s.last_le = le;
    s.last_count = sample.value;
    s.saw_inf = le_text == "+Inf";
  }
  EXPECT_EQ(series.size(), expected_series);
  for (const auto& [key, s] : series) {
    SCOPED_TRACE(key.first);
    EXPECT_TRUE(s.saw_inf);
    EXPECT_EQ(s.last_count, Find(samples, key.first + "_count", key.second));
    std::optional<double> sum = Find(samples, key.first + "_sum", key.second);
    ASSERT_TRUE(sum.has_value());
    EXPECT_GE(*sum, 0);
  }
}

TEST_F(HttpServerTest, MetricsPageParsesAndCounts) {
  Start();
  RouterStats stats;
  stats.calls = 9;
  stats.calls_by_command[static_cast<size_t>(RouterCommand::kTransfer)] = 7;
  stats.calls_by_command[static_cast<size_t>(RouterCommand::kBalance)] = 2;
  stats.call_latency_buckets_by_command[static_cast<size_t>(RouterCommand::kTransfer)][0] = 6;
  stats.call_latency_buckets_by_command[static_cast<size_t>(RouterCommand::kTransfer)]
                                       [kCallLatencyBucketCount - 1] = 1;
  stats.call_latency_sum_us_by_command[static_cast<size_t>(RouterCommand::kTransfer)] = 6000500;
  stats.errors_by_code[static_cast<size_t>(ResultCode::kInsufficientFunds)] = 1;
  stats.moved_retries = 4;
  stats.in_flight_now = 5;
  stats.map_version_now = 12;
  stats.live_shards_now = 3;
  router_.SetStats(stats);

  ASSERT_EQ(PostTransfer(GoodTransfer()).status, 200);
  ASSERT_EQ(PostTransfer(GoodTransfer()).status, 200);
  Json bad = GoodTransfer();
  bad["amount"] = "1.001";
  ASSERT_EQ(PostTransfer(bad).status, 400);
  ASSERT_EQ(Send("GET", "/v1/wallet/balance/7").status, 200);
  ASSERT_EQ(Send("GET", "/nope").status, 404);
  // Each is counted once its response is written: wait until all are.
  ASSERT_EQ(WaitForRequestCount(HttpEndpoint::kBalanceTransfer, 200, 2), 2u);
  ASSERT_EQ(WaitForRequestCount(HttpEndpoint::kBalanceTransfer, 400, 1), 1u);
  ASSERT_EQ(WaitForRequestCount(HttpEndpoint::kBalance, 200, 1), 1u);
  ASSERT_EQ(WaitForRequestCount(HttpEndpoint::kOther, 404, 1), 1u);

  HttpResult result = Send("GET", "/metrics");
  ASSERT_EQ(result.status, 200);
  EXPECT_EQ(result.headers.find("Content-Type")->second,
            "text/plain; version=0.0.4; charset=utf-8");
  std::vector<Sample> samples = ParseExposition(result.text);

  EXPECT_EQ(Find(samples, "wallet_http_requests_total",
                 {{"endpoint", "balance_transfer"}, {"status", "200"}}),
            2);
  EXPECT_EQ(Find(samples, "wallet_http_requests_total",
                 {{"endpoint", "balance_transfer"}, {"status", "400"}}),
            1);
  EXPECT_EQ(
      Find(samples, "wallet_http_requests_total", {{"endpoint", "balance"}, {"status", "200"}}), 1);
  EXPECT_EQ(Find(samples, "wallet_http_requests_total", {{"endpoint", "other"}, {"status", "404"}}),
            1);
  EXPECT_EQ(Find(samples, "wallet_http_errors_total", {{"code", "TOO_MANY_FRACTION_DIGITS"}}), 1);
  EXPECT_EQ(Find(samples, "wallet_http_errors_total", {{"code", "NOT_FOUND"}}), 1);
  EXPECT_EQ(Find(samples, "wallet_http_request_duration_seconds_count",
                 {{"endpoint", "balance_transfer"}}),
            3);
  EXPECT_EQ(Find(samples, "wallet_router_up"), 1);
  EXPECT_EQ(Find(samples, "wallet_router_requests_total"), 9);
  EXPECT_EQ(Find(samples, "wallet_router_calls_total", {{"command", "TRANSFER"}}), 7);
  EXPECT_EQ(Find(samples, "wallet_router_calls_total", {{"command", "OPEN"}}), 0);
  EXPECT_EQ(Find(samples, "wallet_router_errors_total", {{"code", "INSUFFICIENT_FUNDS"}}), 1);
  EXPECT_EQ(Find(samples, "wallet_router_moved_retries_total"), 4);
  EXPECT_EQ(Find(samples, "wallet_router_in_flight"), 5);
  EXPECT_EQ(Find(samples, "wallet_router_map_version"), 12);
  EXPECT_EQ(Find(samples, "wallet_router_live_shards"), 3);
  EXPECT_EQ(Find(samples, "wallet_in_doubt_transactions"), 0);

  EXPECT_EQ(Find(samples, "wallet_router_call_duration_seconds_bucket",
                 {{"command", "TRANSFER"}, {"le", "0.0001"}}),
            6);
  EXPECT_EQ(Find(samples, "wallet_router_call_duration_seconds_bucket",
                 {{"command", "TRANSFER"}, {"le", "5"}}),
            6);
  EXPECT_EQ(Find(samples, "wallet_router_call_duration_seconds_bucket",
                 {{"command", "TRANSFER"}, {"le", "+Inf"}}),
            7);
  EXPECT_EQ(Find(samples, "wallet_router_call_duration_seconds_sum", {{"command", "TRANSFER"}}),
            6.0005);
  ExpectHistogramsAreWellFormed(
      samples, /*expected_series=*/5 + static_cast<size_t>(RouterCommand::kCount_));
}

TEST_F(HttpServerTest, MetricsWithoutTheRouterSayRouterDown) {
  HttpServerOptions options;
  options.stats_timeout_ms = 100;
  Start(options, {}, /*run_loop=*/false);
  HttpResult result = Send("GET", "/metrics");
  ASSERT_EQ(result.status, 200);
  std::vector<Sample> samples = ParseExposition(result.text);
  EXPECT_EQ(Find(samples, "wallet_router_up"), 0);
  EXPECT_FALSE(Find(samples, "wallet_router_map_version").has_value());
}

TEST(HttpMetricsTest, ErrorCodesAreBounded) {
  HttpMetrics metrics;
  for (size_t i = 0; i < kMaxCountedErrorCodes + 50; ++i)
    metrics.RecordError("CODE_" + std::to_string(i));
  EXPECT_EQ(metrics.errors("CODE_0"), 1u);
  EXPECT_EQ(metrics.errors("OTHER"), 50u);
  std::string page;
  metrics.AppendPrometheus(&page);
  EXPECT_EQ(std::count(page.begin(), page.end(), '\n'),
            static_cast<long>(kMaxCountedErrorCodes + 1 + 6 + 5 * (kCallLatencyBucketCount + 2)));
}

TEST(HttpMetricsTest, LatencyLandsInTheRightBucket) {
  HttpMetrics metrics;
  metrics.RecordRequest(HttpEndpoint::kHealthz, 200, 500);       // le 0.0005 (inclusive)
  metrics.RecordRequest(HttpEndpoint::kHealthz, 200, 501);       // le 0.001
  metrics.RecordRequest(HttpEndpoint::kHealthz, 200, 20000000);  // +Inf only
  std::string page;
  metrics.AppendPrometheus(&page);
  EXPECT_NE(
      page.find(
          "wallet_http_request_duration_seconds_bucket{endpoint=\"healthz\",le=\"0.0005\"} 1\n"),
      std::string::npos);
  EXPECT_NE(
      page.find(
          "wallet_http_request_duration_seconds_bucket{endpoint=\"healthz\",le=\"0.001\"} 2\n"),
      std::string::npos);
  EXPECT_NE(
      page.find("wallet_http_request_duration_seconds_bucket{endpoint=\"healthz\",le=\"5\"} 2\n"),
      std::string::npos);
  EXPECT_NE(
      page.find(
          "wallet_http_request_duration_seconds_bucket{endpoint=\"healthz\",le=\"+Inf\"} 3\n"),
      std::string::npos);
  EXPECT_NE(page.find("wallet_http_request_duration_seconds_sum{endpoint=\"healthz\"} 20.001001\n"),
            std::string::npos);
  EXPECT_EQ(metrics.requests(HttpEndpoint::kHealthz, 200), 3u);
}

}  // namespace
}  // namespace wallet::router
