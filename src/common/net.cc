#include "common/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstring>

#include "common/strings.h"

namespace wallet {

namespace {

std::string ErrnoText(std::string_view what) { return StrCat(what, ": ", std::strerror(errno)); }

}  // namespace

absl::StatusOr<ListeningSocket> ListenTcp(const std::string& bind_address, uint16_t port) {
  const bool ipv6 = bind_address.find(':') != std::string::npos;
  struct sockaddr_storage address;
  std::memset(&address, 0, sizeof(address));
  socklen_t address_length;
  if (ipv6) {
    auto* v6 = reinterpret_cast<struct sockaddr_in6*>(&address);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    if (inet_pton(AF_INET6, bind_address.c_str(), &v6->sin6_addr) != 1) {
      return absl::InvalidArgumentError(StrCat("bad bind address '", bind_address, "'"));
    }
    address_length = sizeof(*v6);
  } else {
    auto* v4 = reinterpret_cast<struct sockaddr_in*>(&address);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    if (inet_pton(AF_INET, bind_address.c_str(), &v4->sin_addr) != 1) {
      return absl::InvalidArgumentError(StrCat("bad bind address '", bind_address, "'"));
    }
    address_length = sizeof(*v4);
  }
  int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(ErrnoText("socket"));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&address), address_length) != 0) {
    std::string error = ErrnoText(StrCat("bind ", bind_address, ":", port));
    close(fd);
    return absl::UnavailableError(error);
  }
  if (listen(fd, 511) != 0) {
    std::string error = ErrnoText("listen");
    close(fd);
    return absl::UnavailableError(error);
  }
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&address), &length);
  ListeningSocket listening;
  listening.fd = fd;
  listening.port = ntohs(ipv6 ? reinterpret_cast<struct sockaddr_in6*>(&address)->sin6_port
                              : reinterpret_cast<struct sockaddr_in*>(&address)->sin_port);
  return listening;
}

FlushResult FlushOutput(int fd, std::string* output, size_t* sent, uint64_t* bytes_written) {
  constexpr size_t kCompactAboveBytes = 1u << 20;
  while (*sent < output->size()) {
    ssize_t n = send(fd, output->data() + *sent, output->size() - *sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return FlushResult::kFailed;
    }
    *sent += static_cast<size_t>(n);
    *bytes_written += static_cast<uint64_t>(n);
  }
  if (*sent == output->size()) {
    output->clear();
    *sent = 0;
    return FlushResult::kAllWritten;
  }
  if (*sent > kCompactAboveBytes) {
    output->erase(0, *sent);
    *sent = 0;
  }
  return FlushResult::kWouldBlock;
}

std::string PeerAddressText(const sockaddr_storage& address) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (address.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const struct sockaddr_in*>(&address);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
    port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const struct sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
    port = ntohs(v6->sin6_port);
  }
  return StrCat(host, ":", port);
}

}  // namespace wallet
