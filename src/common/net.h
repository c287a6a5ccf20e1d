// net.h — the TCP listening socket and peer names that wallet-shard and
// wallet-router share.
//
// Example:
//   absl::StatusOr<ListeningSocket> listening = ListenTcp("127.0.0.1", 0);
//   if (!listening.ok()) return listening.status();
//   ... accept4(listening->fd, ...) ... listening->port is the bound port ...
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace wallet {

struct ListeningSocket {
  int fd = -1;         // non-blocking, close-on-exec; the caller owns and closes it
  uint16_t port = 0;   // the bound port (the one the kernel chose for port 0)
};

// Binds a TCP socket to `bind_address` (numeric IPv4 or IPv6) and `port` (0: any
// free one) with SO_REUSEADDR and listens with a backlog of 511. InvalidArgument
// for a bad address, Unavailable when bind or listen fail (port in use), Internal
// when no socket can be made. Nothing is left open on failure.
absl::StatusOr<ListeningSocket> ListenTcp(const std::string& bind_address, uint16_t port);

// What FlushOutput did.
enum class FlushResult : uint8_t {
  kAllWritten,  // the buffer is empty (and was cleared)
  kWouldBlock,  // the socket is full: wait for writability, call again
  kFailed,      // the peer is gone or the socket failed: close it
};

// Writes `*output` from `*sent` on to a non-blocking socket until everything is
// written or the socket is full (never raising SIGPIPE). Adds the bytes written to
// *bytes_written. Clears the buffer once it is all written; while bytes remain,
// drops the written prefix once it is above 1 MiB, so a slow reader's buffer does
// not keep what was already sent. The per-connection output of wallet-shard and
// wallet-router.
FlushResult FlushOutput(int fd, std::string* output, size_t* sent, uint64_t* bytes_written);

// "host:port" of an accepted peer (IPv4 or IPv6 address as accept4 filled it in),
// "?:0" for other families. For logs.
std::string PeerAddressText(const sockaddr_storage& address);

}  // namespace wallet
