// commands.h — wallet-shard's command table and the code that runs one command.
//
// The table (commands.cc, kCommands) is plain data: name, arity, flags, usage and a
// handler, Redis-style. Arity n > 0 means exactly n arguments including the name;
// n < 0 means at least -n. ExecuteCommand() looks the name up case-insensitively,
// checks arity and authentication, and calls the handler, which parses and checks
// its arguments before touching the engine (a malformed argument never reaches it).
// The wire form of every command is in docs/shard-protocol.md.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/resp.h"

namespace wallet::shard {

class Engine;
class ShardServer;

// Per-connection state that commands may read or change.
struct Session {
  bool authenticated = false;
  bool close_after_reply = false;  // QUIT
};

struct CommandContext {
  ShardServer& server;
  Engine& engine;
  resp::ReplyWriter& reply;
  Session& session;
  int64_t now_ms;
};

// Runs one command (args[0] is its name; args is never empty) and appends exactly
// one reply.
void ExecuteCommand(CommandContext& context, const std::vector<std::string_view>& args);

}  // namespace wallet::shard
