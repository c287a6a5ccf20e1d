#include "shardlink/hiredis_adapter.h"

#include <memory>
#include <utility>

#include "common/log.h"
#include "common/strings.h"

namespace wallet::shardlink {

namespace {

// One attached context. Owned by the watcher's callback; hiredis holds a raw pointer
// to it in context->ev.data.
struct Attachment {
  EventLoop* loop = nullptr;
  redisAsyncContext* context = nullptr;  // null once hiredis has called cleanup
  EventLoop::WatchId watch_id = 0;
  bool reading = false;
  bool writing = false;
};

// Tells the loop what the context now waits for. hiredis calls the hooks on every
// command; EventLoop::SetFdInterest makes the unchanged case a no-op.
void ApplyInterest(Attachment* attachment) {
  FdInterest interest = FdInterest::kNone;
  if (attachment->reading && attachment->writing) {
    interest = FdInterest::kReadWrite;
  } else if (attachment->reading) {
    interest = FdInterest::kRead;
  } else if (attachment->writing) {
    interest = FdInterest::kWrite;
  }
  absl::Status status = attachment->loop->SetFdInterest(attachment->watch_id, interest);
  if (!status.ok()) {
    // Only a kernel out of memory gets here; the command timeout then resets the link.
    LogWarning("hiredis adapter: %s", std::string(FromAbsl(status.message())).c_str());
  }
}

// The four readiness hooks: each records what hiredis now waits for.
void SetInterest(void* data, bool Attachment::*flag, bool on) {
  auto* attachment = static_cast<Attachment*>(data);
  attachment->*flag = on;
  ApplyInterest(attachment);
}
void AddRead(void* data) { SetInterest(data, &Attachment::reading, true); }
void DelRead(void* data) { SetInterest(data, &Attachment::reading, false); }
void AddWrite(void* data) { SetInterest(data, &Attachment::writing, true); }
void DelWrite(void* data) { SetInterest(data, &Attachment::writing, false); }

// Called by hiredis while it frees the context, before it closes the socket. Removing
// the watcher destroys the Attachment once the loop's current turn is over (the
// watcher's callback may be the one that led hiredis here).
void Cleanup(void* data) {
  auto* attachment = static_cast<Attachment*>(data);
  attachment->context = nullptr;
  attachment->loop->UnwatchFd(attachment->watch_id);
}

}  // namespace

absl::Status AttachToEventLoop(EventLoop& loop, redisAsyncContext* context) {
  if (context == nullptr || context->c.fd < 0) {
    return absl::InvalidArgumentError("hiredis context has no socket to watch");
  }
  if (context->ev.data != nullptr) {
    return absl::InvalidArgumentError("hiredis context is already attached to an event library");
  }
  auto owned = std::make_unique<Attachment>();
  Attachment* attachment = owned.get();
  attachment->loop = &loop;
  attachment->context = context;
  auto watch = loop.WatchFd(context->c.fd, FdInterest::kNone,
                            [attachment = std::move(owned)](FdReadiness ready) {
                              // Reading may end in hiredis freeing the context (an
                              // error, or redisAsyncFree from a reply callback):
                              // cleanup then clears `context`, so check before writing.
                              if (ready.readable && attachment->context != nullptr) {
                                redisAsyncHandleRead(attachment->context);
                              }
                              if (ready.writable && attachment->context != nullptr) {
                                redisAsyncHandleWrite(attachment->context);
                              }
                            });
  if (!watch.ok()) return watch.status();
  attachment->watch_id = *watch;
  context->ev.data = attachment;
  context->ev.addRead = AddRead;
  context->ev.delRead = DelRead;
  context->ev.addWrite = AddWrite;
  context->ev.delWrite = DelWrite;
  context->ev.cleanup = Cleanup;
  return absl::OkStatus();
}

}  // namespace wallet::shardlink
