// stop_signals.h — SIGTERM and SIGINT as readable events instead of asynchronous
// handlers, for servers that stop cleanly (wallet-shard, wallet-router).
//
// Block the two signals first thing in main, before any thread starts (threads
// inherit the mask: the ZooKeeper client's threads must never take them), then read
// them from a signalfd on the event loop.
//
// Example:
//   if (absl::Status s = BlockStopSignals(); !s.ok()) return 1;   // first in main
//   ... start threads ...
//   absl::StatusOr<int> fd = OpenStopSignalFd();   // readable when one arrives
//   loop->WatchFd(*fd, FdInterest::kRead, [&](FdReadiness) { ReadStopSignal(*fd); loop->Stop(); });
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace wallet {

// Blocks SIGTERM and SIGINT in the calling thread (and every thread it starts later).
absl::Status BlockStopSignals();
// A non-blocking, close-on-exec signalfd for SIGTERM and SIGINT (block them first).
// The caller owns the fd.
absl::StatusOr<int> OpenStopSignalFd();
// Reads one pending signal from the fd; its number, or 0 when none was pending.
int ReadStopSignal(int signal_fd);

}  // namespace wallet
