// hiredis_adapter.h — drives a hiredis asynchronous context (redisAsyncContext) from
// wallet::EventLoop, the way hiredis's own adapters (adapters/libevent.h, ae.h,
// libuv.h) drive it from other loops.
//
// hiredis asks for read and write readiness through five hooks (addRead, delRead,
// addWrite, delWrite, cleanup); this adapter turns them into one EventLoop fd watcher
// and calls redisAsyncHandleRead / redisAsyncHandleWrite when the socket is ready.
// hiredis 1.x adds a sixth hook, scheduleTimer, used only for the timeouts set with
// redisAsyncSetTimeout; Debian 12 ships hiredis 0.14.1, which has neither, and
// ShardConnection keeps its own connect and command timeouts on the loop's timers,
// so the hook is not needed (a context with no timeout set never calls it in 1.x).
//
// Example:
//   redisAsyncContext* context = redisAsyncConnect("127.0.0.1", 7001);
//   if (context == nullptr || context->err) { ... redisAsyncFree(context) ... }
//   absl::Status attached = AttachToEventLoop(loop, context);
//   if (!attached.ok()) { redisAsyncFree(context); return attached; }
//   redisAsyncSetConnectCallback(context, OnConnect);   // after attaching
//   redisAsyncCommand(context, OnReply, nullptr, "PING");
//
// Ownership and lifetime: the adapter's state belongs to the fd watcher it creates.
// hiredis calls the cleanup hook while it frees the context (redisAsyncFree, or on
// its own after a connection error); cleanup removes the watcher, so the state goes
// with it. The loop must outlive every context attached to it. Loop thread only.
#pragma once

#include <hiredis/async.h>

#include "absl/status/status.h"
#include "common/event_loop.h"

namespace wallet::shardlink {

// Attaches `context` (connected or connecting, not yet attached) to `loop`: from now
// on the loop performs its reads and writes. InvalidArgument when the context has no
// socket or is already attached to an event library; Internal when the kernel
// refuses the watcher. On failure nothing is attached and the caller still owns the
// context (free it with redisAsyncFree).
absl::Status AttachToEventLoop(EventLoop& loop, redisAsyncContext* context);

}  // namespace wallet::shardlink
