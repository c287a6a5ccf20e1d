// wallet_client.h — the C++ client of a wallet cluster: what an application links
// to move money through the routers (docs/api.md), with retries that never
// double-spend.
//
//   auto client = wallet::client::Client::Create({.endpoints = {"127.0.0.1:7100", "127.0.0.1:7101"}});
//   if (!client.ok()) ...;
//   wallet::client::TransferRequest transfer;
//   transfer.from = 42, transfer.to = 43, transfer.amount = 2500, transfer.currency = "USD";
//   wallet::client::Reply r = (*client)->Transfer(transfer);
//   if (r.ok()) ...                       // moved, exactly once
//   else if (r.rejected()) ...            // a business rule said no: do not retry (r.code, r.message)
//   else ...                              // r.retryable(): nothing known yet; retry later with r.txid
//
// What it does for the caller:
//   - Transaction ids: a mutation without one gets a new id from NewTxid() (26
//     characters, time-ordered and unique: 48-bit milliseconds + 80 random bits, in
//     Crockford base32, ULID style). Reply::txid says which id was used.
//   - Retries: a call that gets no answer (timeout, lost connection) or a transient
//     error (UNAVAILABLE, BUSY, MOVED, LOG_UNAVAILABLE) is sent again with the SAME
//     txid, to the next router, up to max_attempts sends, with a growing pause. The
//     shards' idempotency by txid makes that safe: a transfer applies once however
//     often it is sent. A rejection (INSUFFICIENT_FUNDS, UNKNOWN_ACCOUNT, ...) is never
//     retried.
//   - Failover: one pipelined connection (or more) per router endpoint; a router that
//     fails is skipped until its connection comes back (reconnects with backoff).
//   - Three forms: synchronous calls (any thread; they block), asynchronous calls (the
//     callback runs on the client's I/O thread; many thousands may be in flight), and
//     batches (TRANSFER.BATCH: one command carries many transfers, one reply each).
//
// Errors: Reply::code is a wallet::ResultCode-style word ("INSUFFICIENT_FUNDS"); its
// class is in Reply::kind: kOk, kRejected (do not retry), kRetry (retry later with the
// same txid; `retries_exhausted` says the client already did, max_attempts times),
// kProtocol (the call is malformed: fix the caller).
//
// Threading: a Client is thread-safe. It owns one I/O thread (an event loop). Async
// callbacks run on that thread: keep them short, and they may start new async calls
// (which then skip the hand-over to the thread). One exception: a call refused at
// once because max_in_flight calls are outstanding (kRetry "BUSY") is answered on the
// calling thread, before the async call returns. Destroying the Client stops the
// thread; calls still in flight are answered kRetry ("client closing") first.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace wallet::client {

struct ClientOptions {
  std::vector<std::string> endpoints;   // routers, "host:port" (numeric hosts); at least one
  std::string password;                 // the routers' client password ("" = none)
  int connections_per_endpoint = 1;     // pipelined connections to each router (1-64)
  int64_t connect_timeout_ms = 1'000;   // TCP connect and AUTH
  int64_t call_timeout_ms = 5'000;      // one send's wait for its reply; then it is retried
  int max_attempts = 4;                 // sends of one call (first + retries), 1-100
  int64_t retry_backoff_ms = 20;        // pause before the 2nd send; doubled each time, capped at 1 s
  size_t max_in_flight = 100'000;       // async calls outstanding; past it: kRetry "BUSY" at once
};

enum class TransferMode : uint8_t { kDefault, kTcc, kSaga };  // kDefault: the router's default

// One call's answer.
struct Reply {
  enum class Kind : uint8_t { kOk, kRejected, kRetry, kProtocol };
  Kind kind = Kind::kOk;
  std::string code;           // "" when ok; else the error word, e.g. "INSUFFICIENT_FUNDS"
  std::string message;        // the error's text after the word
  std::string txid;           // mutations: the transaction id used (given or generated)
  int attempts = 0;           // sends made
  bool retries_exhausted = false;  // kRetry after max_attempts sends (or the client closing)

  bool ok() const { return kind == Kind::kOk; }
  bool rejected() const { return kind == Kind::kRejected; }
  bool retryable() const { return kind == Kind::kRetry; }
  std::string ToString() const;  // "OK", "INSUFFICIENT_FUNDS: account 7 has ..."
};

struct Balance {
  int64_t available = 0;
  int64_t held = 0;
  std::string currency;
};

struct TransferRequest {
  uint64_t from = 0;
  uint64_t to = 0;
  int64_t amount = 0;          // minor units, > 0
  std::string currency;        // three letters
  std::string txid;            // "" = a new one (NewTxid)
  TransferMode mode = TransferMode::kDefault;
};

// Field/value pairs of TX (docs/api.md); empty when the transaction is unknown.
using TxFields = std::vector<std::pair<std::string, std::string>>;

// A new transaction id: 26 characters of Crockford base32, lexically ordered by the
// millisecond it was made, then 80 random bits (unique across processes).
std::string NewTxid();

class Client {
 public:
  using Callback = std::function<void(const Reply&)>;
  using BatchCallback = std::function<void(std::vector<Reply>)>;

  // Checks the options, starts the I/O thread and the connections (it does not wait
  // for them: the first calls wait for a connection, within call_timeout_ms).
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // ---- Synchronous (block the calling thread; not from an async callback) ----
  Reply Open(uint64_t account, std::string_view currency);
  Reply Deposit(uint64_t account, int64_t amount, std::string txid = "");
  Reply Withdraw(uint64_t account, int64_t amount, std::string txid = "");
  Reply Transfer(TransferRequest request);
  Reply GetBalance(uint64_t account, Balance* out);
  Reply GetTx(std::string_view txid, TxFields* out);
  Reply Ping();
  // One router command for all of them (TRANSFER.BATCH); one Reply per request, in
  // order. Requests without a txid get one. Batches larger than 1 600 go as several
  // router commands (and requests of different modes as one command per mode).
  std::vector<Reply> TransferBatch(std::vector<TransferRequest> requests);

  // ---- Asynchronous (callback on the I/O thread, exactly once) ----
  void OpenAsync(uint64_t account, std::string_view currency, Callback done);
  void DepositAsync(uint64_t account, int64_t amount, std::string txid, Callback done);
  void WithdrawAsync(uint64_t account, int64_t amount, std::string txid, Callback done);
  void TransferAsync(TransferRequest request, Callback done);
  // `out` (if not null) is filled before `done` runs.
  void GetBalanceAsync(uint64_t account, std::function<void(const Reply&, const Balance&)> done);
  void TransferBatchAsync(std::vector<TransferRequest> requests, BatchCallback done);

  // Counters: sends, retries, failovers, replies by kind.
  struct Stats {
    uint64_t calls = 0;
    uint64_t sends = 0;
    uint64_t retries = 0;          // sends after the first
    uint64_t failovers = 0;        // retries that went to another endpoint
    uint64_t ok = 0, rejected = 0, retry = 0, protocol = 0;  // final replies by kind
    uint64_t in_flight = 0;
  };
  Stats stats() const;

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  // One TRANSFER.BATCH for `items` (indexes into *requests, one mode); items answered
  // with a retryable error go again, alone, until max_attempts sends.
  void SendBatch(std::shared_ptr<std::vector<TransferRequest>> requests, std::vector<size_t> items,
                 int attempts_before, std::function<void(std::vector<std::pair<size_t, Reply>>)> done);
  std::unique_ptr<Impl> impl_;
};

}  // namespace wallet::client
