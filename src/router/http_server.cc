// http_server.cc — see http_server.h. The only file of the router that includes
// cpp-httplib and nlohmann-json (both system headers, from Debian's packages).
#include "router/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/money.h"
#include "common/result_code.h"
#include "common/strings.h"
#include "router/currency_units.h"
#include "shardlink/shard_reply.h"

namespace wallet::router {

namespace {

using Json = nlohmann::json;
using shardlink::ShardReply;

constexpr char kTransferPath[] = "/v1/wallet/balance_transfer";
constexpr char kBalancePattern[] = "/v1/wallet/balance/([^/]+)";
constexpr std::string_view kBalancePrefix = "/v1/wallet/balance/";
constexpr char kMetricsPath[] = "/metrics";
constexpr char kHealthzPath[] = "/healthz";

constexpr char kJsonContentType[] = "application/json";
constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Upper bounds on options, so that a typo cannot ask for a million threads.
constexpr size_t kMaxWorkerThreads = 1024;
constexpr size_t kMaxQueuedConnectionsLimit = 1u << 20;

// The fields of a transfer body; anything else is UNKNOWN_FIELD.
constexpr std::string_view kTransferFields[] = {"from_account", "to_account",     "amount",
                                                "currency",     "transaction_id", "mode"};
// The required ones, in the order MISSING_FIELD reports them.
constexpr std::string_view kRequiredTransferFields[] = {"from_account", "to_account", "amount",
                                                        "currency", "transaction_id"};

// --- Replies ---------------------------------------------------------------------

// One response: HTTP status and JSON body. error_code is the body's error.code
// (empty for a success), counted on /metrics when the reply is written.
struct Reply {
  int status = 200;
  Json body;
  std::string error_code;
};

// A JSON error reply: {"error": {"code": code, "message": message}}.
Reply ErrorReply(int status, std::string_view code, std::string message) {
  Reply reply;
  reply.status = status;
  reply.error_code = std::string(code);
  reply.body = Json{{"error", Json{{"code", reply.error_code}, {"message", std::move(message)}}}};
  return reply;
}

// JSON text; invalid UTF-8 (from a peer's message) is replaced, never thrown on.
std::string DumpJson(const Json& json) {
  return json.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

// The code for an HTTP status that cpp-httplib set itself (no handler ran).
std::string_view CodeForLibraryStatus(int status) {
  switch (status) {
    case 400:
      return "BAD_REQUEST";
    case 401:
      return "UNAUTHORIZED";
    case 404:
      return "NOT_FOUND";
    case 405:
      return "METHOD_NOT_ALLOWED";
    case 413:
      return "PAYLOAD_TOO_LARGE";
    case 414:
      return "URI_TOO_LONG";
    default:
      return status < 500 ? "BAD_REQUEST" : "INTERNAL";
  }
}

// The message for an HTTP status that cpp-httplib set itself.
std::string MessageForLibraryStatus(int status, const httplib::Request& request,
                                    size_t max_body_bytes) {
  switch (status) {
    case 400:
      return "the request could not be parsed as HTTP/1.1";
    case 404:
      return StrCat("no endpoint ", request.method, " ", request.path, " (see docs/api.md)");
    case 413:
      return StrCat("the body exceeds ", max_body_bytes, " bytes");
    case 414:
      return "the request URI is too long";
    default:
      return StrCat("HTTP status ", status);
  }
}

// Caller-supplied text quoted in an error message, cut to 40 bytes (no reply
// echoes a whole 64 KiB body back).
std::string Excerpt(std::string text) {
  constexpr size_t kMaxExcerptBytes = 40;
  if (text.size() > kMaxExcerptBytes) {
    text.resize(kMaxExcerptBytes);
    text += "...";
  }
  return text;
}

// True when `word` can be passed through as an error code: 1..64 of [A-Z0-9_].
bool IsCodeWord(std::string_view word) {
  if (word.empty() || word.size() > 64) return false;
  for (char c : word) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// The JSON error reply for an error reply of the router (its own, or a shard's it
// passed through): the first word is the code, the rest the message. Status by
// the code's class (result_code.h): rejected 409, retry 503, protocol 400; with
// UNKNOWN_ACCOUNT on a balance read 404, CROSS_SHARD_UNSUPPORTED 422, a refused
// router->shard AUTH 502, and any word this server does not know 503 (the router
// core uses its own words for transient conditions such as an unreachable shard).
Reply RouterErrorReply(const ShardReply& reply, HttpEndpoint endpoint) {
  std::string_view word = reply.error_word();
  std::string message(reply.error_message());
  if (message.empty()) message = std::string(word);  // never an empty message
  if (!IsCodeWord(word)) {
    return ErrorReply(502, "UPSTREAM_ERROR", StrCat("unexpected router reply: ", reply.text));
  }
  if (word == "CROSS_SHARD_UNSUPPORTED") return ErrorReply(422, word, std::move(message));
  std::optional<ResultCode> code = reply.error_code();
  if (!code.has_value()) return ErrorReply(503, word, std::move(message));
  int status = 500;
  switch (*code) {
    case ResultCode::kUnknownAccount:
      status = endpoint == HttpEndpoint::kBalance ? 404 : 409;
      break;
    case ResultCode::kNotAuthenticated:
    case ResultCode::kAuthFailed:
      status = 502;
      break;
    default:
      switch (ResultCodeClass(*code)) {
        case ResultClass::kRejected:
          status = 409;
          break;
        case ResultClass::kRetry:
          status = 503;
          break;
        case ResultClass::kProtocol:
          status = 400;
          break;
        case ResultClass::kOk:  // an error reply that says OK: a bug somewhere
          status = 500;
          break;
      }
  }
  return ErrorReply(status, word, std::move(message));
}

// --- Transfer request parsing ------------------------------------------------------

struct TransferRequest {
  AccountId from_account = 0;
  AccountId to_account = 0;
  Amount amount_minor = 0;
  std::string amount_text;  // as given, e.g. "1.00"
  std::string currency;
  int exponent = 0;
  std::string transaction_id;
  std::string mode;  // "" (the router's default), "tcc" or "saga"
};

// Reads an account id from a JSON string of decimal digits or a non-negative JSON
// integer below 2^64. Floats (1.0, 1e2, integers past 2^64), negatives, booleans and
// strings with signs, spaces or leading zeros are refused.
bool AccountFromJson(const Json& value, AccountId* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer()) {  // signed: nlohmann keeps non-negative as unsigned
    auto number = value.get<int64_t>();
    if (number < 0) return false;
    *out = static_cast<uint64_t>(number);
    return true;
  }
  if (value.is_string()) return ParseAccountId(value.get_ref<const std::string&>(), out);
  return false;
}

// Parses and checks a transfer body (every rule in docs/api.md, in this order:
// JSON syntax, shape, unknown fields, missing fields, then each field). Returns the
// error reply, or nullopt with *out filled.
std::optional<Reply> ParseTransferRequest(const std::string& body, TransferRequest* out) {
  // Top-level keys seen (to catch duplicates, which nlohmann would silently
  // collapse) and whether any value nests (the body is a flat object of scalars).
  size_t top_level_keys = 0;
  bool nested = false;
  auto watch = [&](int depth, Json::parse_event_t event, Json& /*parsed*/) {
    if (event == Json::parse_event_t::key && depth == 1) ++top_level_keys;
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= 1) {
      nested = true;
    }
    return true;
  };
  Json json = Json::parse(body, watch, /*allow_exceptions=*/false);
  if (json.is_discarded()) return ErrorReply(400, "BAD_JSON", "the body is not valid JSON");
  if (!json.is_object()) return ErrorReply(400, "BAD_JSON", "the body must be a JSON object");
  if (top_level_keys != json.size()) {
    return ErrorReply(400, "BAD_JSON", "the body names a field more than once");
  }
  if (nested) {
    return ErrorReply(400, "BAD_JSON",
                      "field values must be strings or integers, not objects or arrays");
  }
  for (const auto& [key, value] : json.items()) {
    bool known = false;
    for (std::string_view field : kTransferFields) known = known || key == field;
    if (!known) {
      return ErrorReply(400, "UNKNOWN_FIELD",
                        StrCat("unknown field ", Excerpt(DumpJson(Json(key)))));
    }
  }
  for (std::string_view field : kRequiredTransferFields) {
    auto it = json.find(std::string(field));
    if (it == json.end() || it->is_null()) {
      return ErrorReply(400, "MISSING_FIELD", StrCat("missing field \"", field, "\""));
    }
  }

  const char* const account_rule = " must be a decimal string or a non-negative integer below 2^64";
  if (!AccountFromJson(json["from_account"], &out->from_account)) {
    return ErrorReply(400, "BAD_ACCOUNT", StrCat("from_account", account_rule));
  }
  if (!AccountFromJson(json["to_account"], &out->to_account)) {
    return ErrorReply(400, "BAD_ACCOUNT", StrCat("to_account", account_rule));
  }

  const Json& currency = json["currency"];
  std::optional<int> exponent;
  if (currency.is_string()) exponent = MinorUnitExponent(currency.get_ref<const std::string&>());
  if (!exponent.has_value()) {
    return ErrorReply(400, "UNKNOWN_CURRENCY",
                      StrCat("currency must be an upper-case ISO 4217 code with a minor unit, such "
                             "as \"USD\"; got ",
                             Excerpt(DumpJson(currency))));
  }
  out->currency = currency.get<std::string>();
  out->exponent = *exponent;

  const Json& amount = json["amount"];
  if (!amount.is_string()) {
    return ErrorReply(400, "BAD_AMOUNT",
                      "amount must be a JSON string such as \"1.00\", not a number");
  }
  out->amount_text = amount.get<std::string>();
  switch (ParseDecimalAmount(out->amount_text, out->exponent, &out->amount_minor)) {
    case DecimalAmountError::kOk:
      break;
    case DecimalAmountError::kMalformed:
      return ErrorReply(400, "BAD_AMOUNT",
                        "amount must be a positive decimal such as \"1.00\": digits, at most one "
                        "'.', no sign, spaces, exponent or leading zeros");
    case DecimalAmountError::kNotPositive:
      return ErrorReply(400, "BAD_AMOUNT", "amount must be greater than zero");
    case DecimalAmountError::kTooManyFractionDigits:
      return ErrorReply(
          400, "TOO_MANY_FRACTION_DIGITS",
          StrCat(out->currency, " has ", out->exponent, " fraction digits; the amount has more"));
    case DecimalAmountError::kOverflow:
      return ErrorReply(400, "BAD_AMOUNT",
                        StrCat("amount exceeds ", kMaxAmount, " minor units of ", out->currency));
  }

  const Json& txid = json["transaction_id"];
  if (!txid.is_string() || !IsValidTxid(txid.get_ref<const std::string&>())) {
    return ErrorReply(400, "BAD_TRANSACTION_ID",
                      StrCat("transaction_id must be a string of 1 to ", kMaxTxidBytes,
                             " visible ASCII characters"));
  }
  out->transaction_id = txid.get<std::string>();

  auto mode = json.find("mode");
  if (mode != json.end() && !mode->is_null()) {
    if (!mode->is_string() || (*mode != "tcc" && *mode != "saga")) {
      return ErrorReply(400, "BAD_MODE", "mode must be \"tcc\" or \"saga\"");
    }
    out->mode = mode->get<std::string>();
  }
  return std::nullopt;
}

// --- Handing calls to the loop thread --------------------------------------------

// One value handed from the loop thread to a waiting HTTP worker. Shared by both:
// a worker that gave up waiting leaves the late value to the last owner.
template <typename T>
class OneShot {
 public:
  // Stores the value (the first one only) and wakes the waiter.
  void Set(T value) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (value_.has_value()) return;
      value_ = std::move(value);
    }
    ready_.notify_all();
  }
  // Waits at most timeout_ms for the value; nullopt when it did not come in time.
  std::optional<T> WaitFor(int64_t timeout_ms) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                    [&] { return value_.has_value(); });
    return std::move(value_);
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::optional<T> value_;  // guarded by mutex_
};

// --- The worker pool -------------------------------------------------------------

// cpp-httplib's ThreadPool queues accepted connections without a bound. This one
// keeps at most max_queued waiting: enqueue() (called by the accept thread) blocks
// while the queue is full, so further connections wait in the kernel's listen
// backlog instead of in memory. During shutdown it queues regardless (the accept
// thread enqueues at most one more) and the workers drain what is queued.
class BoundedThreadPool : public httplib::TaskQueue {
 public:
  BoundedThreadPool(size_t threads, size_t max_queued) : max_queued_(max_queued) {
    threads_.reserve(threads);
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~BoundedThreadPool() override = default;

  // Queues one connection's work; blocks while max_queued are waiting.
  void enqueue(std::function<void()> fn) override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      not_full_.wait(lock, [&] { return jobs_.size() < max_queued_ || shutdown_; });
      jobs_.push_back(std::move(fn));
    }
    not_empty_.notify_one();
  }

  // Lets the workers finish what is queued, then joins them.
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      shutdown_ = true;
    }
    not_empty_.notify_all();
    not_full_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }

 private:
  // A worker: runs queued jobs until shutdown and an empty queue.
  void Work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        not_empty_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shutdown and drained
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      not_full_.notify_one();
      job();
    }
  }

  const size_t max_queued_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::list<std::function<void()>> jobs_;  // guarded by mutex_
  bool shutdown_ = false;                  // guarded by mutex_
};

// --- Request timing ----------------------------------------------------------------

// When the request this worker thread is serving was routed (steady clock, us);
// -1 when none is (cpp-httplib answers unparsable requests without routing them).
// Set by the pre-routing handler and read by the logger, which cpp-httplib calls on
// the same worker thread once the response is written.
thread_local int64_t t_request_start_us = -1;

// The steady (monotonic) clock in microseconds, for request latencies.
int64_t SteadyNowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The endpoint a request path is counted under.
HttpEndpoint EndpointOf(const std::string& path) {
  if (path == kTransferPath) return HttpEndpoint::kBalanceTransfer;
  if (path.size() > kBalancePrefix.size() &&
      path.compare(0, kBalancePrefix.size(), kBalancePrefix) == 0) {
    return HttpEndpoint::kBalance;
  }
  if (path == kMetricsPath) return HttpEndpoint::kMetrics;
  if (path == kHealthzPath) return HttpEndpoint::kHealthz;
  return HttpEndpoint::kOther;
}

// Compares without an early exit, so the time taken does not tell how many leading
// bytes of a guessed password were right.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return difference == 0;
}

// Checks the options Start() is given; the first problem found.
absl::Status ValidateOptions(const HttpServerOptions& options) {
  if (options.port < 0 || options.port > 65535)
    return absl::InvalidArgumentError("port must be 0..65535");
  if (options.worker_threads < 1 || options.worker_threads > kMaxWorkerThreads) {
    return absl::InvalidArgumentError(StrCat("worker_threads must be 1..", kMaxWorkerThreads));
  }
  if (options.max_queued_connections < 1 ||
      options.max_queued_connections > kMaxQueuedConnectionsLimit) {
    return absl::InvalidArgumentError(
        StrCat("max_queued_connections must be 1..", kMaxQueuedConnectionsLimit));
  }
  if (options.max_body_bytes < 1) return absl::InvalidArgumentError("max_body_bytes must be >= 1");
  if (options.request_timeout_ms < 1 || options.stats_timeout_ms < 1 ||
      options.socket_read_timeout_ms < 1 || options.socket_write_timeout_ms < 1 ||
      options.keep_alive_timeout_s < 1) {
    return absl::InvalidArgumentError("every timeout must be >= 1");
  }
  if (options.keep_alive_max_requests < 1) {
    return absl::InvalidArgumentError("keep_alive_max_requests must be >= 1");
  }
  return absl::OkStatus();
}

}  // namespace

// --- The server ---------------------------------------------------------------------

class HttpServer::Impl {
 public:
  Impl(EventLoop* loop, Router* router, const HttpServerOptions& options)
      : loop_(loop), router_(router), options_(options) {}

  // Configures cpp-httplib, binds and starts the accept thread.
  absl::Status Start();
  // See HttpServer::Stop().
  void Stop();

  int port() const { return port_; }
  const HttpMetrics& metrics() const { return metrics_; }

 private:
  enum class CallOutcome : uint8_t { kReplied, kOverloaded, kTimedOut };

  // Registers the four endpoints, and 405 replies for the other methods on them.
  void RegisterRoutes();
  // Registers a 405 METHOD_NOT_ALLOWED handler for every method but `allowed` on
  // `pattern`.
  void RegisterMethodNotAllowed(const std::string& pattern, std::string_view allowed);

  // Handlers: each turns one request into a Reply.
  Reply HandleTransfer(const httplib::Request& request);
  Reply HandleBalance(const httplib::Request& request);
  Reply HandleHealthz();
  // /metrics is text, not JSON: it writes the response itself.
  void HandleMetrics(httplib::Response& response);

  // Runs router_->Execute(args) on the loop thread and waits for its reply at most
  // request_timeout_ms. kOverloaded when the loop's task queue is full.
  CallOutcome CallRouter(std::vector<std::string> args, ShardReply* reply);
  // Reads router_->stats() on the loop thread, waiting at most stats_timeout_ms.
  std::optional<RouterStats> FetchStats();

  // The reply for a call that got no reply (overload or timeout).
  Reply NoReply(CallOutcome outcome, std::string_view retry_hint) const;

  // Writes a JSON reply (and counts its error code).
  void WriteReply(const Reply& reply, httplib::Response& response);
  // Writes a JSON error reply straight away (for the library's hooks).
  void WriteError(int status, std::string_view code, std::string message,
                  httplib::Response& response);

  // Pre-routing hook: notes the start time.
  httplib::Server::HandlerResponse PreRoute(const httplib::Request& request,
                                            httplib::Response& response);
  // Wraps a route's handler with the password check. The check runs in the handler,
  // after cpp-httplib has read the request's body: a 401 sent from the pre-routing
  // hook (before the body) left a late body on the kept-alive connection, where it
  // was parsed as the next request.
  httplib::Server::Handler Authenticated(httplib::Server::Handler handler);
  // True when the request may proceed; else writes the 401 reply.
  bool CheckAuthorization(const httplib::Request& request, httplib::Response& response);

  EventLoop* const loop_;
  Router* const router_;
  const HttpServerOptions options_;
  httplib::Server server_;
  HttpMetrics metrics_;
  int port_ = 0;
  std::thread listen_thread_;
  std::mutex stop_mutex_;
  bool stopped_ = false;  // guarded by stop_mutex_
};

absl::Status HttpServer::Impl::Start() {
  const size_t threads = options_.worker_threads;
  const size_t max_queued = options_.max_queued_connections;
  server_.new_task_queue = [threads, max_queued] {
    return new BoundedThreadPool(threads, max_queued);
  };
  server_.set_payload_max_length(options_.max_body_bytes);
  server_.set_read_timeout(std::chrono::milliseconds(options_.socket_read_timeout_ms));
  server_.set_write_timeout(std::chrono::milliseconds(options_.socket_write_timeout_ms));
  server_.set_keep_alive_timeout(static_cast<time_t>(options_.keep_alive_timeout_s));
  server_.set_keep_alive_max_count(options_.keep_alive_max_requests);
  server_.set_tcp_nodelay(true);
  // cpp-httplib's default also sets SO_REUSEPORT, which lets a second process bind
  // the same port and silently take half of the connections. Only SO_REUSEADDR (a
  // restart need not wait for TIME_WAIT).
  server_.set_socket_options([](int socket_fd) {
    int on = 1;
    setsockopt(socket_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  });

  server_.set_pre_routing_handler(
      [this](const httplib::Request& request, httplib::Response& response) {
        return PreRoute(request, response);
      });
  // Called for every response with status >= 400 before it is written: fills in the
  // JSON body of the ones cpp-httplib made itself (404, 413, 400...).
  server_.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& request, httplib::Response& response) {
        if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        WriteError(response.status, CodeForLibraryStatus(response.status),
                   MessageForLibraryStatus(response.status, request, options_.max_body_bytes),
                   response);
        return httplib::Server::HandlerResponse::Handled;
      }));
  server_.set_exception_handler([this](const httplib::Request& request, httplib::Response& response,
                                       std::exception_ptr error) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    LogError("http: %s %s failed: %s", request.method.c_str(), request.path.c_str(), what.c_str());
    WriteError(500, "INTERNAL", "internal error", response);
  });
  // Called once per response after it is written, on the worker thread.
  server_.set_logger([this](const httplib::Request& request, const httplib::Response& response) {
    int64_t latency_us = t_request_start_us < 0 ? 0 : SteadyNowUs() - t_request_start_us;
    t_request_start_us = -1;
    metrics_.RecordRequest(EndpointOf(request.path), response.status, latency_us);
  });
  RegisterRoutes();

  if (options_.port == 0) {
    port_ = server_.bind_to_any_port(options_.bind_address);
    if (port_ <= 0) {
      return absl::UnavailableError(StrCat("cannot bind HTTP on ", options_.bind_address, ":0"));
    }
  } else {
    if (!server_.bind_to_port(options_.bind_address, options_.port)) {
      return absl::UnavailableError(
          StrCat("cannot bind HTTP on ", options_.bind_address, ":", options_.port));
    }
    port_ = options_.port;
  }
  listen_thread_ = std::thread([this] { server_.listen_after_bind(); });
  // Stop() only works once the accept loop runs: wait for it (bounded).
  for (int waited_ms = 0; !server_.is_running(); ++waited_ms) {
    if (waited_ms >= 10000) {
      return absl::InternalError("the HTTP accept thread did not start within 10 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::OkStatus();
}

void HttpServer::Impl::Stop() {
  std::lock_guard<std::mutex> lock(stop_mutex_);
  if (stopped_) return;
  stopped_ = true;
  server_.stop();
  if (listen_thread_.joinable()) listen_thread_.join();
}

void HttpServer::Impl::RegisterRoutes() {
  server_.Post(kTransferPath,
               Authenticated([this](const httplib::Request& request, httplib::Response& response) {
                 WriteReply(HandleTransfer(request), response);
               }));
  server_.Get(kBalancePattern,
              Authenticated([this](const httplib::Request& request, httplib::Response& response) {
                WriteReply(HandleBalance(request), response);
              }));
  server_.Get(kMetricsPath,
              Authenticated([this](const httplib::Request& /*request*/, httplib::Response& response) {
                HandleMetrics(response);
              }));
  // Health is open to probes without the password.
  server_.Get(kHealthzPath,
              [this](const httplib::Request& /*request*/, httplib::Response& response) {
                WriteReply(HandleHealthz(), response);
              });
  RegisterMethodNotAllowed(kTransferPath, "POST");
  RegisterMethodNotAllowed(kBalancePattern, "GET");
  RegisterMethodNotAllowed(kMetricsPath, "GET");
  RegisterMethodNotAllowed(kHealthzPath, "GET");
}

void HttpServer::Impl::RegisterMethodNotAllowed(const std::string& pattern,
                                                std::string_view allowed) {
  std::string allow_header = allowed == "GET" ? "GET, HEAD" : std::string(allowed);
  httplib::Server::Handler refuse = [this, allow_header](const httplib::Request& request,
                                                         httplib::Response& response) {
    response.set_header("Allow", allow_header);
    WriteError(405, "METHOD_NOT_ALLOWED",
               StrCat(request.method, " is not allowed here; use ", allow_header), response);
  };
  if (pattern != kHealthzPath) refuse = Authenticated(std::move(refuse));
  if (allowed != "GET") server_.Get(pattern, refuse);
  if (allowed != "POST") server_.Post(pattern, refuse);
  server_.Put(pattern, refuse);
  server_.Patch(pattern, refuse);
  server_.Delete(pattern, refuse);
  server_.Options(pattern, refuse);
}

httplib::Server::Handler HttpServer::Impl::Authenticated(httplib::Server::Handler handler) {
  return [this, handler = std::move(handler)](const httplib::Request& request,
                                              httplib::Response& response) {
    if (CheckAuthorization(request, response)) handler(request, response);
  };
}

httplib::Server::HandlerResponse HttpServer::Impl::PreRoute(const httplib::Request& /*request*/,
                                                            httplib::Response& /*response*/) {
  t_request_start_us = SteadyNowUs();
  return httplib::Server::HandlerResponse::Unhandled;
}

bool HttpServer::Impl::CheckAuthorization(const httplib::Request& request,
                                          httplib::Response& response) {
  if (options_.password.empty()) return true;
  static constexpr std::string_view kBearer = "Bearer ";
  const std::string& given = request.get_header_value("Authorization");
  bool ok = given.size() > kBearer.size() && given.compare(0, kBearer.size(), kBearer) == 0 &&
            ConstantTimeEquals(std::string_view(given).substr(kBearer.size()), options_.password);
  if (ok) return true;
  response.set_header("WWW-Authenticate", "Bearer");
  WriteError(401, "UNAUTHORIZED",
             given.empty() ? "this server requires \"Authorization: Bearer <password>\""
                           : "wrong password",
             response);
  return false;
}

Reply HttpServer::Impl::HandleTransfer(const httplib::Request& request) {
  TransferRequest transfer;
  if (std::optional<Reply> error = ParseTransferRequest(request.body, &transfer)) return *error;

  std::vector<std::string> args = {"TRANSFER",
                                   std::to_string(transfer.from_account),
                                   std::to_string(transfer.to_account),
                                   std::to_string(transfer.amount_minor),
                                   transfer.currency,
                                   transfer.transaction_id};
  if (!transfer.mode.empty()) {
    args.push_back("MODE");
    args.push_back(transfer.mode);
  }
  ShardReply reply;
  CallOutcome outcome = CallRouter(std::move(args), &reply);
  if (outcome != CallOutcome::kReplied) {
    return NoReply(outcome, "the outcome is unknown: retry with the same transaction_id");
  }
  if (reply.is_error()) return RouterErrorReply(reply, HttpEndpoint::kBalanceTransfer);
  if (!reply.is_ok()) {
    LogError("http: unexpected TRANSFER reply %s", reply.ToString().c_str());
    return ErrorReply(502, "UPSTREAM_ERROR", "unexpected router reply to TRANSFER");
  }
  Reply ok;
  ok.body = Json{{"transaction_id", transfer.transaction_id},
                 {"status", "committed"},
                 {"from_account", std::to_string(transfer.from_account)},
                 {"to_account", std::to_string(transfer.to_account)},
                 {"amount", FormatMinorUnits(transfer.amount_minor, transfer.exponent)},
                 {"amount_minor", transfer.amount_minor},
                 {"currency", transfer.currency}};
  return ok;
}

Reply HttpServer::Impl::HandleBalance(const httplib::Request& request) {
  AccountId account = 0;
  std::string account_text = request.matches.size() > 1 ? request.matches[1].str() : "";
  if (!ParseAccountId(account_text, &account)) {
    return ErrorReply(
        400, "BAD_ACCOUNT",
        "the account must be a decimal number below 2^64 without sign or leading zeros");
  }
  ShardReply reply;
  CallOutcome outcome = CallRouter({"BALANCE", std::to_string(account)}, &reply);
  if (outcome != CallOutcome::kReplied) return NoReply(outcome, "retry later");
  if (reply.is_error()) return RouterErrorReply(reply, HttpEndpoint::kBalance);
  // BALANCE -> [available (integer), held (integer), currency (bulk string)].
  bool shaped = reply.type == ShardReply::Type::kArray && reply.elements.size() == 3 &&
                reply.elements[0].type == ShardReply::Type::kInteger &&
                reply.elements[1].type == ShardReply::Type::kInteger &&
                (reply.elements[2].type == ShardReply::Type::kBulk ||
                 reply.elements[2].type == ShardReply::Type::kStatus);
  if (!shaped) {
    LogError("http: unexpected BALANCE reply %s", reply.ToString().c_str());
    return ErrorReply(502, "UPSTREAM_ERROR", "unexpected router reply to BALANCE");
  }
  int64_t available = reply.elements[0].integer;
  int64_t held = reply.elements[1].integer;
  const std::string& currency = reply.elements[2].text;
  std::optional<int> exponent = MinorUnitExponent(currency);
  Reply ok;
  ok.body =
      Json{{"account", std::to_string(account)},
           {"currency", currency},
           {"available", exponent ? Json(FormatMinorUnits(available, *exponent)) : Json(nullptr)},
           {"held", exponent ? Json(FormatMinorUnits(held, *exponent)) : Json(nullptr)},
           {"available_minor", available},
           {"held_minor", held},
           {"minor_unit_exponent", exponent ? Json(*exponent) : Json(nullptr)}};
  return ok;
}

Reply HttpServer::Impl::HandleHealthz() {
  std::optional<RouterStats> stats = FetchStats();
  if (!stats.has_value()) {
    Reply reply =
        ErrorReply(503, "TIMEOUT",
                   StrCat("the router did not answer within ", options_.stats_timeout_ms, " ms"));
    reply.body["status"] = "unavailable";
    return reply;
  }
  Json body = {{"map_version", stats->map_version_now},
               {"live_shards", stats->live_shards_now},
               {"in_flight", stats->in_flight_now}};
  std::optional<Reply> problem;
  if (stats->map_version_now < 0) {
    problem = ErrorReply(503, "NO_PARTITION_MAP", "the router has no partition map yet");
  } else if (stats->live_shards_now == 0) {
    problem = ErrorReply(503, "NO_LIVE_SHARD", "no shard is registered as live");
  }
  if (problem.has_value()) {
    body["status"] = "unavailable";
    body["error"] = problem->body["error"];
    problem->body = std::move(body);
    return *problem;
  }
  body["status"] = "ok";
  Reply ok;
  ok.body = std::move(body);
  return ok;
}

void HttpServer::Impl::HandleMetrics(httplib::Response& response) {
  std::optional<RouterStats> stats = FetchStats();
  std::string page;
  metrics_.AppendPrometheus(&page);
  AppendRouterMetrics(stats.has_value() ? &*stats : nullptr, RouterMetricsOptions{}, &page);
  response.status = 200;
  response.set_content(page, kPrometheusContentType);
}

HttpServer::Impl::CallOutcome HttpServer::Impl::CallRouter(std::vector<std::string> args,
                                                           ShardReply* reply) {
  auto slot = std::make_shared<OneShot<ShardReply>>();
  absl::Status posted = loop_->Post([router = router_, slot, args = std::move(args)]() mutable {
    router->Execute(std::move(args), [slot](ShardReply value) { slot->Set(std::move(value)); });
  });
  if (!posted.ok()) return CallOutcome::kOverloaded;
  std::optional<ShardReply> value = slot->WaitFor(options_.request_timeout_ms);
  if (!value.has_value()) return CallOutcome::kTimedOut;
  *reply = std::move(*value);
  return CallOutcome::kReplied;
}

std::optional<RouterStats> HttpServer::Impl::FetchStats() {
  auto slot = std::make_shared<OneShot<RouterStats>>();
  absl::Status posted = loop_->Post([router = router_, slot] { slot->Set(router->stats()); });
  if (!posted.ok()) return std::nullopt;
  return slot->WaitFor(options_.stats_timeout_ms);
}

Reply HttpServer::Impl::NoReply(CallOutcome outcome, std::string_view retry_hint) const {
  if (outcome == CallOutcome::kOverloaded) {
    return ErrorReply(503, ResultCodeName(ResultCode::kBusy),
                      StrCat("the router's queue is full; nothing was sent; retry later"));
  }
  return ErrorReply(
      504, "TIMEOUT",
      StrCat("no reply from the router within ", options_.request_timeout_ms, " ms; ", retry_hint));
}

void HttpServer::Impl::WriteReply(const Reply& reply, httplib::Response& response) {
  if (!reply.error_code.empty()) metrics_.RecordError(reply.error_code);
  if (reply.status == 503) response.set_header("Retry-After", "1");
  response.status = reply.status;
  response.set_content(DumpJson(reply.body), kJsonContentType);
}

void HttpServer::Impl::WriteError(int status, std::string_view code, std::string message,
                                  httplib::Response& response) {
  WriteReply(ErrorReply(status, code, std::move(message)), response);
}

// --- HttpServer ------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(EventLoop* loop, Router* router,
                                                              const HttpServerOptions& options) {
  if (loop == nullptr || router == nullptr)
    return absl::InvalidArgumentError("loop and router are required");
  if (absl::Status valid = ValidateOptions(options); !valid.ok()) return valid;
  auto impl = std::make_unique<Impl>(loop, router, options);
  if (absl::Status started = impl->Start(); !started.ok()) {
    impl->Stop();
    return started;
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() { impl_->Stop(); }

int HttpServer::port() const { return impl_->port(); }

const HttpMetrics& HttpServer::metrics() const { return impl_->metrics(); }

}  // namespace wallet::router
