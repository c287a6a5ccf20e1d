// flags_usage.h — how every wallet binary sets up Abseil's --help.
//
// Abseil's --help lists the flags of files named after the binary, and finds none
// for ours ("No flags matched"). SetUpFlagsUsage makes --help and --helpshort list
// the flags defined in the binary's main file and sets the usage text.
//
// Example (first thing in main):
//   wallet::SetUpFlagsUsage("shard/main.cc", "balance shard speaking RESP2.\nUsage: ...");
//   absl::ParseCommandLine(argc, argv);
#pragma once

#include <string_view>

namespace wallet {

// `main_file_suffix`: the end of the main file's path ("shard/main.cc"); must be a
// string literal or otherwise outlive the program's flag parsing.
void SetUpFlagsUsage(std::string_view main_file_suffix, std::string_view usage);

}  // namespace wallet
