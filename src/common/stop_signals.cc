#include "common/stop_signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstring>

#include "common/strings.h"

namespace wallet {

namespace {

sigset_t StopSignalSet() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  return mask;
}

}  // namespace

absl::Status BlockStopSignals() {
  sigset_t mask = StopSignalSet();
  if (int error = pthread_sigmask(SIG_BLOCK, &mask, nullptr); error != 0) {
    return absl::InternalError(StrCat("pthread_sigmask: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> OpenStopSignalFd() {
  sigset_t mask = StopSignalSet();
  int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return absl::InternalError(StrCat("signalfd: ", std::strerror(errno)));
  return fd;
}

int ReadStopSignal(int signal_fd) {
  struct signalfd_siginfo info;
  if (read(signal_fd, &info, sizeof(info)) != static_cast<ssize_t>(sizeof(info))) return 0;
  return static_cast<int>(info.ssi_signo);
}

}  // namespace wallet
